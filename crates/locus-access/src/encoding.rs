//! Byte encodings shared by the signed records: fixed-size byte arrays as
//! hex in human-readable formats (JSON) and as raw bytes in postcard, hex
//! parsing, and the bounded postcard decoding of records from outside.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    locus_core::hex(bytes)
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Decode a record of at most `max` bytes with postcard, refusing trailing
/// bytes. The error says what is wrong, never panics.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, String> {
    if bytes.len() > max {
        return Err(format!(
            "{} bytes, more than the {max} allowed",
            bytes.len()
        ));
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    Ok(value)
}

/// Encode a record with postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data (strings, integers, byte arrays, sets) into a
    // growable buffer has no failure case.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Serde for `[u8; N]`: hex in human-readable formats, bytes otherwise.
pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            from_hex(&s).ok_or_else(|| D::Error::custom(format!("expected {} hex digits", 2 * N)))
        } else {
            let v: Vec<u8> = Deserialize::deserialize(d)?;
            v.as_slice()
                .try_into()
                .map_err(|_| D::Error::custom(format!("expected {N} bytes, got {}", v.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_bad_digits() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex::<4>(&hex(&b)), Some(b));
        assert_eq!(from_hex::<4>("0001ABFF"), None);
        assert_eq!(from_hex::<4>("0001abf"), None);
        assert_eq!(from_hex::<2>("zz00"), None);
        assert_eq!(from_hex::<1>("é"), None);
    }

    #[test]
    fn decode_refuses_oversized_and_trailing_bytes() {
        let bytes = encode(&7u32);
        assert_eq!(decode::<u32>(&bytes, 16), Ok(7));
        assert!(decode::<u32>(&bytes, 0).unwrap_err().contains("allowed"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<u32>(&longer, 16).unwrap_err().contains("trailing"));
    }
}

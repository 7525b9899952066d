//! A reading — one value a thing produced — and its canonical bytes, which
//! are the input of its Merkle leaf (`leaf_hash(reading.leaf_bytes())`).
//!
//! A [`Reading`] is valid by construction ([`Reading::new`], or
//! deserialization, which runs the same checks): non-empty names without
//! control characters and within [`MAX_NAME`] bytes, a finite number, a
//! string or data value within [`MAX_VALUE`] bytes.
//!
//! # Canonical bytes (format 1)
//!
//! So that anyone can recompute a leaf from an exported reading, offline
//! and in any language, the encoding is fixed and has one form per reading.
//! Integers are big-endian; a string is a `u32` byte length then its UTF-8.
//!
//! ```text
//! 0x01                          format version
//! string  thing
//! string  resource
//! 0x00 | 0x01 string            unit: absent | present
//! i64     time, unix milliseconds
//! value:  0x01 f64              number (IEEE 754 binary64 bits)
//!       | 0x02 string           string
//!       | 0x03 0x00|0x01        boolean
//!       | 0x04 u32 bytes        data (length, then the octets)
//! ```
//!
//! Nothing follows the value. [`Reading::from_leaf_bytes`] is the inverse
//! and refuses anything else, including trailing bytes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::merkle::{self, Hash};

/// The format version byte that starts [`Reading::leaf_bytes`].
pub const LEAF_FORMAT: u8 = 1;
/// Longest thing, resource or unit name, in bytes.
pub const MAX_NAME: usize = 256;
/// Longest string or data value, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;

/// The value of a reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Number(f64),
    String(String),
    Bool(bool),
    /// Octets; base64 (standard alphabet, padded) in JSON.
    Data(#[serde(with = "b64")] Vec<u8>),
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Why a reading is not valid, or its bytes cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadingError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes long, at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} contains a control character at byte {at}")]
    Control { field: &'static str, at: usize },
    #[error("the number is not finite")]
    NotFinite,
    #[error("leaf bytes end at offset {offset}, {need} more bytes are needed for the {field}")]
    Truncated {
        offset: usize,
        need: usize,
        field: &'static str,
    },
    #[error("leaf format {got} is not known (this is format {LEAF_FORMAT})")]
    Format { got: u8 },
    #[error("byte {value:#04x} at offset {offset} is not a valid {field} tag")]
    Tag {
        offset: usize,
        value: u8,
        field: &'static str,
    },
    #[error("the {field} at offset {offset} is not UTF-8")]
    Utf8 { offset: usize, field: &'static str },
    #[error("{extra} bytes follow the value at offset {offset}")]
    Trailing { offset: usize, extra: usize },
}

/// One value a thing produced, valid by construction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawReading", into = "RawReading")]
pub struct Reading {
    thing: String,
    resource: String,
    value: Value,
    unit: Option<String>,
    time_ms: i64,
}

/// The serialized shape of a [`Reading`], checked on the way in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReading {
    thing: String,
    resource: String,
    value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    time_ms: i64,
}

impl TryFrom<RawReading> for Reading {
    type Error = ReadingError;
    fn try_from(r: RawReading) -> Result<Self, ReadingError> {
        Reading::new(r.thing, r.resource, r.value, r.unit, r.time_ms)
    }
}

impl From<Reading> for RawReading {
    fn from(r: Reading) -> Self {
        RawReading {
            thing: r.thing,
            resource: r.resource,
            value: r.value,
            unit: r.unit,
            time_ms: r.time_ms,
        }
    }
}

fn check_name(field: &'static str, s: &str) -> Result<(), ReadingError> {
    if s.is_empty() {
        return Err(ReadingError::Empty { field });
    }
    if s.len() > MAX_NAME {
        return Err(ReadingError::TooLong {
            field,
            len: s.len(),
            max: MAX_NAME,
        });
    }
    check_control(field, s)
}

fn check_control(field: &'static str, s: &str) -> Result<(), ReadingError> {
    match s.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(ReadingError::Control { field, at }),
        None => Ok(()),
    }
}

fn check_value(v: &Value) -> Result<(), ReadingError> {
    let len = match v {
        Value::Number(x) if !x.is_finite() => return Err(ReadingError::NotFinite),
        Value::Number(_) | Value::Bool(_) => 0,
        Value::String(s) => s.len(),
        Value::Data(d) => d.len(),
    };
    if len > MAX_VALUE {
        return Err(ReadingError::TooLong {
            field: "value",
            len,
            max: MAX_VALUE,
        });
    }
    Ok(())
}

impl Reading {
    /// A reading of `resource` on `thing` at `time_ms` (unix milliseconds).
    pub fn new(
        thing: impl Into<String>,
        resource: impl Into<String>,
        value: Value,
        unit: Option<String>,
        time_ms: i64,
    ) -> Result<Self, ReadingError> {
        let (thing, resource) = (thing.into(), resource.into());
        check_name("thing", &thing)?;
        check_name("resource", &resource)?;
        if let Some(u) = &unit {
            check_name("unit", u)?;
        }
        check_value(&value)?;
        Ok(Self {
            thing,
            resource,
            value,
            unit,
            time_ms,
        })
    }

    pub fn thing(&self) -> &str {
        &self.thing
    }
    pub fn resource(&self) -> &str {
        &self.resource
    }
    pub fn value(&self) -> &Value {
        &self.value
    }
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }
    /// Unix milliseconds.
    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }

    /// The canonical bytes (see the module documentation).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        fn put_str(out: &mut Vec<u8>, s: &[u8]) {
            // Names and values are bounded far below u32::MAX at construction.
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s);
        }
        let mut out = Vec::with_capacity(32 + self.thing.len() + self.resource.len());
        out.push(LEAF_FORMAT);
        put_str(&mut out, self.thing.as_bytes());
        put_str(&mut out, self.resource.as_bytes());
        match &self.unit {
            None => out.push(0),
            Some(u) => {
                out.push(1);
                put_str(&mut out, u.as_bytes());
            }
        }
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        match &self.value {
            Value::Number(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_bits().to_be_bytes());
            }
            Value::String(s) => {
                out.push(2);
                put_str(&mut out, s.as_bytes());
            }
            Value::Bool(b) => {
                out.push(3);
                out.push(u8::from(*b));
            }
            Value::Data(d) => {
                out.push(4);
                put_str(&mut out, d);
            }
        }
        out
    }

    /// `merkle::leaf_hash(self.leaf_bytes())`.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.leaf_bytes())
    }

    /// Read a reading back from its canonical bytes.
    pub fn from_leaf_bytes(bytes: &[u8]) -> Result<Self, ReadingError> {
        let mut r = Cursor { bytes, at: 0 };
        let format = r.take(1, "format")?[0];
        if format != LEAF_FORMAT {
            return Err(ReadingError::Format { got: format });
        }
        let thing = r.string("thing")?;
        let resource = r.string("resource")?;
        let at = r.at;
        let unit = match r.take(1, "unit tag")?[0] {
            0 => None,
            1 => Some(r.string("unit")?),
            value => {
                return Err(ReadingError::Tag {
                    offset: at,
                    value,
                    field: "unit",
                });
            }
        };
        let time_ms = i64::from_be_bytes(r.array::<8>("time")?);
        let at = r.at;
        let value = match r.take(1, "value tag")?[0] {
            1 => Value::Number(f64::from_bits(u64::from_be_bytes(r.array::<8>("number")?))),
            2 => Value::String(r.string("string value")?),
            3 => {
                let at = r.at;
                match r.take(1, "boolean")?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    value => {
                        return Err(ReadingError::Tag {
                            offset: at,
                            value,
                            field: "boolean",
                        });
                    }
                }
            }
            4 => Value::Data(r.bytes("data value")?.to_vec()),
            value => {
                return Err(ReadingError::Tag {
                    offset: at,
                    value,
                    field: "value",
                });
            }
        };
        if r.at != bytes.len() {
            return Err(ReadingError::Trailing {
                offset: r.at,
                extra: bytes.len() - r.at,
            });
        }
        Self::new(thing, resource, value, unit, time_ms)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ReadingError> {
        let rest = self.bytes.len() - self.at;
        if rest < n {
            return Err(ReadingError::Truncated {
                offset: self.bytes.len(),
                need: n - rest,
                field,
            });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ReadingError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], ReadingError> {
        let len = u32::from_be_bytes(self.array::<4>(field)?) as usize;
        self.take(len, field)
    }

    fn string(&mut self, field: &'static str) -> Result<String, ReadingError> {
        let offset = self.at + 4;
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| ReadingError::Utf8 { offset, field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(value: Value, unit: Option<&str>) -> Reading {
        Reading::new(
            "thing-1",
            "temp",
            value,
            unit.map(str::to_owned),
            1_700_000_000_123,
        )
        .unwrap()
    }

    #[test]
    fn leaf_bytes_are_as_documented() {
        let got = r(Value::Number(21.5), Some("Cel")).leaf_bytes();
        let mut want = vec![1u8];
        want.extend_from_slice(&[0, 0, 0, 7]);
        want.extend_from_slice(b"thing-1");
        want.extend_from_slice(&[0, 0, 0, 4]);
        want.extend_from_slice(b"temp");
        want.extend_from_slice(&[1, 0, 0, 0, 3]);
        want.extend_from_slice(b"Cel");
        want.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
        want.push(1);
        want.extend_from_slice(&[0x40, 0x35, 0x80, 0, 0, 0, 0, 0]);
        assert_eq!(got, want);

        let got = r(Value::Bool(true), None).leaf_bytes();
        assert_eq!(got[1 + 4 + 7 + 4 + 4], 0, "no unit");
        assert_eq!(&got[got.len() - 2..], &[3, 1]);
        assert_eq!(got.len(), 1 + 11 + 8 + 1 + 8 + 2);
    }

    #[test]
    fn invalid_readings_are_refused() {
        let new = |t: &str, res: &str, v: Value, u: Option<&str>| {
            Reading::new(t, res, v, u.map(str::to_owned), 0)
        };
        assert_eq!(
            new("", "x", Value::Bool(true), None),
            Err(ReadingError::Empty { field: "thing" })
        );
        assert_eq!(
            new("t", "", Value::Bool(true), None),
            Err(ReadingError::Empty { field: "resource" })
        );
        assert_eq!(
            new("t", "x", Value::Bool(true), Some("")),
            Err(ReadingError::Empty { field: "unit" })
        );
        assert_eq!(
            new("t", "a\nb", Value::Bool(true), None),
            Err(ReadingError::Control {
                field: "resource",
                at: 1
            })
        );
        assert_eq!(
            new("t", "x", Value::Number(f64::NAN), None),
            Err(ReadingError::NotFinite)
        );
        assert_eq!(
            new("t", "x", Value::Number(f64::INFINITY), None),
            Err(ReadingError::NotFinite)
        );
        assert!(matches!(
            new(&"t".repeat(MAX_NAME + 1), "x", Value::Bool(true), None),
            Err(ReadingError::TooLong { field: "thing", .. })
        ));
        assert!(matches!(
            new("t", "x", Value::Data(vec![0; MAX_VALUE + 1]), None),
            Err(ReadingError::TooLong { field: "value", .. })
        ));
    }

    #[test]
    fn json_is_checked_on_the_way_in() {
        let ok = r(Value::Data(vec![1, 2, 3]), None);
        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(
            json,
            r#"{"thing":"thing-1","resource":"temp","value":{"data":"AQID"},"time_ms":1700000000123}"#
        );
        assert_eq!(serde_json::from_str::<Reading>(&json).unwrap(), ok);
        let bad = r#"{"thing":"","resource":"temp","value":{"bool":true},"time_ms":0}"#;
        let e = serde_json::from_str::<Reading>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("thing is empty"), "{e}");
    }

    #[test]
    fn bad_leaf_bytes_name_the_offset() {
        let good = r(Value::String("hi".into()), Some("x")).leaf_bytes();
        assert_eq!(
            Reading::from_leaf_bytes(&good[..good.len() - 1]),
            Err(ReadingError::Truncated {
                offset: good.len() - 1,
                need: 1,
                field: "string value"
            })
        );
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            Reading::from_leaf_bytes(&extra),
            Err(ReadingError::Trailing {
                offset: good.len(),
                extra: 1
            })
        );
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(
            Reading::from_leaf_bytes(&v2),
            Err(ReadingError::Format { got: 2 })
        );
        assert_eq!(
            Reading::from_leaf_bytes(&[]),
            Err(ReadingError::Truncated {
                offset: 0,
                need: 1,
                field: "format"
            })
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::Number),
            ".{0,40}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Data),
        ]
    }

    fn arb_reading() -> impl Strategy<Value = Reading> {
        (
            "[a-z0-9:/._-]{1,40}",
            "[^\\p{Cc}]{1,40}",
            arb_value(),
            proptest::option::of("[^\\p{Cc}]{1,10}"),
            any::<i64>(),
        )
            .prop_map(|(t, res, v, u, time)| Reading::new(t, res, v, u, time).unwrap())
    }

    proptest! {
        #[test]
        fn leaf_bytes_round_trip(reading in arb_reading()) {
            let bytes = reading.leaf_bytes();
            prop_assert_eq!(Reading::from_leaf_bytes(&bytes).unwrap(), reading.clone());
            let json = serde_json::to_string(&reading).unwrap();
            prop_assert_eq!(serde_json::from_str::<Reading>(&json).unwrap().leaf_hash(), reading.leaf_hash());
        }

        #[test]
        fn distinct_readings_have_distinct_leaves(a in arb_reading(), b in arb_reading()) {
            if a != b {
                prop_assert_ne!(a.leaf_bytes(), b.leaf_bytes());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Reading::from_leaf_bytes(&bytes);
        }

        #[test]
        fn mutated_leaf_bytes_never_panic(reading in arb_reading(), at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = reading.leaf_bytes();
            let i = at % bytes.len();
            bytes[i] = byte;
            if let Ok(back) = Reading::from_leaf_bytes(&bytes) {
                prop_assert_eq!(back.leaf_bytes(), bytes);
            }
        }
    }
}

//! What travels in one UDP datagram, and how it is sealed.
//!
//! ```text
//! datagram  = magic "LF" | mode (0 open, 1 sealed) | body
//! sealed    = nonce (24) | XChaCha20-Poly1305(cluster key, frame) (+16 tag)
//! frame     = postcard(Frame)
//! ```
//!
//! Every frame carries timestamps (`sent_us`, and the peer's last `sent_us`
//! echoed with how long it was held) so that the round-trip time of every
//! exchange gossip already makes feeds the network coordinates, with no
//! extra packets and no clock synchronisation.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::records::{Summary, Update};

const MAGIC: &[u8; 2] = b"LF";
const MODE_OPEN: u8 = 0;
const MODE_SEALED: u8 = 1;
const NONCE_LEN: usize = 24;
/// Bytes a sealed datagram adds around a frame.
pub const SEAL_OVERHEAD: usize = 3 + NONCE_LEN + 16;
/// Largest datagram the fabric sends or accepts.
pub const MAX_DATAGRAM: usize = 1400;

/// Timestamps for round-trip measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stamp {
    /// Sender's monotonic clock, µs.
    pub sent_us: u64,
    /// The receiver's own `sent_us` last seen by the sender, 0 if none.
    pub echo_us: u64,
    /// How long the sender held that echo before sending, µs.
    pub hold_us: u64,
}

/// The sender's network coordinate, compact (f32 is plenty for RTTs).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct WireCoordinate {
    pub vec: [f32; locus_core::cluster::COORD_DIMENSIONS],
    pub error: f32,
    pub height: f32,
    pub adjustment: f32,
}

impl From<&locus_core::cluster::Coordinate> for WireCoordinate {
    fn from(c: &locus_core::cluster::Coordinate) -> Self {
        let mut vec = [0f32; locus_core::cluster::COORD_DIMENSIONS];
        for (v, x) in vec.iter_mut().zip(&c.vec) {
            *v = *x as f32;
        }
        WireCoordinate {
            vec,
            error: c.error as f32,
            height: c.height as f32,
            adjustment: c.adjustment as f32,
        }
    }
}

impl From<WireCoordinate> for locus_core::cluster::Coordinate {
    fn from(w: WireCoordinate) -> Self {
        locus_core::cluster::Coordinate {
            vec: w.vec.iter().map(|v| f64::from(*v)).collect(),
            error: f64::from(w.error),
            height: f64::from(w.height),
            adjustment: f64::from(w.adjustment),
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A foca (SWIM) packet.
    Swim(Vec<u8>),
    /// "Send me `owner`'s records newer than `since`."
    SyncRequest {
        owner: NodeId,
        generation: u64,
        since: u64,
    },
    /// Records answering a sync request: every record of the owner with a
    /// version in `(after, highest version in updates]`, so the receiver
    /// knows it misses nothing below.
    SyncResponse {
        after: u64,
        /// The sender holds every record of the owner up to this version.
        complete_to: u64,
        updates: Vec<Update>,
    },
    /// Heads of owners the sender holds (a bounded sample), so the
    /// receiver can tell what it misses.
    Digest(Vec<Summary>),
}

/// A frame, its stamp, and the sender's coordinate (as Serf piggybacks
/// coordinates on its pings: no broadcast needed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub stamp: Stamp,
    pub coordinate: Option<WireCoordinate>,
    pub frame: Frame,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram of {0} bytes is not a locus fabric datagram")]
    NotFabric(usize),
    #[error("datagram failed authentication (wrong or missing cluster key)")]
    Unauthenticated,
    #[error("open datagram refused: this cluster requires a key")]
    KeyRequired,
    #[error("sealed datagram but this node has no cluster key")]
    NoKey,
    #[error("datagram of {0} bytes is larger than {MAX_DATAGRAM}")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Malformed(String),
}

/// A 256-bit cluster key.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// A fresh random key.
    pub fn generate() -> Result<ClusterKey, getrandom::Error> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)?;
        Ok(ClusterKey(k))
    }

    /// Parse the text form: 64 hex digits (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<ClusterKey, String> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "expected 64 hex digits, found {} characters",
                t.len()
            ));
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(ClusterKey(k))
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// The key's 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Text form.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(…)")
    }
}

/// Seals and opens datagrams; with no key, datagrams travel open.
pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl Sealer {
    pub fn new(key: Option<&ClusterKey>) -> Sealer {
        Sealer {
            cipher: key.map(|k| XChaCha20Poly1305::new(&k.0.into())),
        }
    }

    /// Encode and (if keyed) seal an envelope.
    pub fn seal(&self, envelope: &Envelope, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let plain = postcard::to_allocvec(envelope).unwrap_or_default();
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(MAGIC);
        match &self.cipher {
            None => {
                out.push(MODE_OPEN);
                out.extend_from_slice(&plain);
            }
            Some(cipher) => {
                out.push(MODE_SEALED);
                out.extend_from_slice(&nonce);
                let nonce = XNonce::from(nonce);
                match cipher.encrypt(&nonce, plain.as_slice()) {
                    Ok(ct) => out.extend_from_slice(&ct),
                    // Encryption of an in-memory buffer cannot fail; send nothing if it did.
                    Err(_) => out.clear(),
                }
            }
        }
        out
    }

    /// Authenticate, decrypt and decode a datagram.
    pub fn open(&self, datagram: &[u8]) -> Result<Envelope, WireError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(WireError::TooLarge(datagram.len()));
        }
        if datagram.len() < 3 || &datagram[..2] != MAGIC {
            return Err(WireError::NotFabric(datagram.len()));
        }
        let body = &datagram[3..];
        let plain;
        let bytes = match (datagram[2], &self.cipher) {
            (MODE_OPEN, None) => body,
            (MODE_OPEN, Some(_)) => return Err(WireError::KeyRequired),
            (MODE_SEALED, None) => return Err(WireError::NoKey),
            (MODE_SEALED, Some(cipher)) => {
                if body.len() < NONCE_LEN + 16 {
                    return Err(WireError::Unauthenticated);
                }
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(&body[..NONCE_LEN]);
                plain = cipher
                    .decrypt(&XNonce::from(nonce), &body[NONCE_LEN..])
                    .map_err(|_| WireError::Unauthenticated)?;
                &plain[..]
            }
            _ => return Err(WireError::NotFabric(datagram.len())),
        };
        postcard::from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env() -> Envelope {
        Envelope {
            stamp: Stamp {
                sent_us: 5,
                echo_us: 3,
                hold_us: 1,
            },
            coordinate: Some(WireCoordinate::default()),
            frame: Frame::Swim(vec![1, 2, 3]),
        }
    }

    #[test]
    fn sealed_round_trip_and_wrong_key() {
        let k1 = ClusterKey::generate().unwrap();
        let k2 = ClusterKey::generate().unwrap();
        let a = Sealer::new(Some(&k1));
        let b = Sealer::new(Some(&k2));
        let open = Sealer::new(None);
        let d = a.seal(&env(), [7; NONCE_LEN]);
        assert_eq!(a.open(&d), Ok(env()));
        assert_eq!(b.open(&d), Err(WireError::Unauthenticated));
        assert_eq!(open.open(&d), Err(WireError::NoKey));
        let plain = open.seal(&env(), [0; NONCE_LEN]);
        assert_eq!(open.open(&plain), Ok(env()));
        assert_eq!(a.open(&plain), Err(WireError::KeyRequired));
        // The sealed datagram does not contain the frame in clear.
        assert!(!d.windows(3).any(|w| w == [1, 2, 3]));
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let k = ClusterKey::generate().unwrap();
        let s = Sealer::new(Some(&k));
        let d = s.seal(&env(), [9; NONCE_LEN]);
        for i in 3..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x01;
            assert_eq!(s.open(&bad), Err(WireError::Unauthenticated), "byte {i}");
        }
    }

    #[test]
    fn keys_parse_from_text() {
        let k = ClusterKey::generate().unwrap();
        let back = ClusterKey::parse(&format!("  {}\n", k.to_hex())).unwrap();
        assert_eq!(back.0, k.0);
        assert!(ClusterKey::parse("abc").is_err());
        assert!(ClusterKey::parse(&"zz".repeat(32)).is_err());
    }

    proptest! {
        #[test]
        fn garbage_and_truncation_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600), cut in 0usize..200) {
            let k = ClusterKey::parse(&"ab".repeat(32)).unwrap();
            let sealed = Sealer::new(Some(&k));
            let open = Sealer::new(None);
            let _ = sealed.open(&bytes);
            let _ = open.open(&bytes);
            let good = sealed.seal(&env(), [1; NONCE_LEN]);
            let truncated = &good[..good.len().saturating_sub(cut + 1)];
            prop_assert!(sealed.open(truncated).is_err());
            let mut framed = b"LF\0".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = open.open(&framed);
        }
    }
}

//! Node identity: a node *is* its ed25519 public key; the [`NodeId`] is a
//! short, stable name derived from it.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of bytes of the BLAKE3 digest of the public key kept in a node id.
const ID_BYTES: usize = 10;

/// The stable identifier of a node: the first 80 bits of the BLAKE3 hash of
/// its ed25519 public key, written as 20 lowercase hex digits.
///
/// The id is derived, never chosen: two nodes with the same id hold the same
/// key (up to a 2^-40 birthday bound at a million nodes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; ID_BYTES]);

impl NodeId {
    /// Derive the id of the node that holds `key`.
    pub fn from_public_key(key: &VerifyingKey) -> Self {
        let digest = blake3::hash(key.as_bytes());
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&digest.as_bytes()[..ID_BYTES]);
        NodeId(id)
    }

    /// An id from its raw bytes (for ids read from the wire or made in tests).
    pub const fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        NodeId(bytes)
    }

    /// The raw bytes of the id.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a node id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid node id {input:?}: expected {} lowercase hex digits", ID_BYTES * 2)]
pub struct ParseNodeIdError {
    input: String,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNodeIdError {
            input: s.to_owned(),
        };
        if s.len() != ID_BYTES * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err());
        }
        let mut id = [0u8; ID_BYTES];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(NodeId(id))
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for NodeId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(format!("^[0-9a-f]{{{}}}$", ID_BYTES * 2)))
            .description(Some(
                "Node id: the first 80 bits of BLAKE3(ed25519 public key), in hex.",
            ))
            .examples([serde_json::json!("3f9a0c1d2e4b5a6978f0")])
            .into()
    }
}

impl utoipa::ToSchema for NodeId {}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    #[test]
    fn id_is_derived_from_the_public_key() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let a = NodeId::from_public_key(&key.verifying_key());
        let b = NodeId::from_public_key(&key.verifying_key());
        assert_eq!(a, b);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_ne!(a, NodeId::from_public_key(&other.verifying_key()));
        assert_eq!(a.to_string().len(), 20);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "xyz",
            "3F9A0C1D2E4B5A6978F0",
            "3f9a0c1d2e4b5a6978f",
            "3f9a0c1d2e4b5a6978f0a",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad} accepted");
        }
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(bytes in proptest::array::uniform10(any::<u8>())) {
            let id = NodeId(bytes);
            prop_assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<NodeId>();
        }
    }
}

//! Orgs: an org *is* its ed25519 public key, as a node is; the [`OrgId`]
//! is a short, stable name derived from it the same way a
//! [`NodeId`](locus_core::NodeId) is.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::from_hex;

/// Number of bytes of the BLAKE3 digest of the public key kept in an org id.
const ID_BYTES: usize = 10;

/// The stable identifier of an org: the first 80 bits of the BLAKE3 hash
/// of its ed25519 public key, written as 20 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId([u8; ID_BYTES]);

impl OrgId {
    /// Derive the id of the org that holds `key`.
    pub fn from_public_key(key: &VerifyingKey) -> Self {
        let digest = blake3::hash(key.as_bytes());
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&digest.as_bytes()[..ID_BYTES]);
        OrgId(id)
    }

    /// An id from its raw bytes (for ids read from the wire or made in tests).
    pub const fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        OrgId(bytes)
    }

    /// The raw bytes of the id.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({self})")
    }
}

/// Why a string is not an org id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid org id {input:?}: expected {} lowercase hex digits", ID_BYTES * 2)]
pub struct ParseOrgIdError {
    input: String,
}

impl FromStr for OrgId {
    type Err = ParseOrgIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_hex(s).map(OrgId).ok_or_else(|| ParseOrgIdError {
            input: s.to_owned(),
        })
    }
}

impl Serialize for OrgId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OrgId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An ed25519 public key from 32 bytes, or why not.
pub fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, String> {
    VerifyingKey::from_bytes(bytes).map_err(|_| "not a valid ed25519 public key".to_owned())
}

/// Sign `domain ‖ body` with `key`.
pub fn sign(key: &SigningKey, domain: &[u8], body: &[u8]) -> [u8; 64] {
    key.sign(&[domain, body].concat()).to_bytes()
}

/// Whether `signature` is `key`'s over `domain ‖ body` (strict: no
/// malleable or small-order signatures).
pub fn verify(key: &VerifyingKey, domain: &[u8], body: &[u8], signature: &[u8; 64]) -> bool {
    let signature = Signature::from_bytes(signature);
    let message = [domain, body].concat();
    key.verify_strict(&message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use locus_core::NodeId;
    use proptest::prelude::*;

    #[test]
    fn id_is_derived_from_the_key_like_a_node_id() {
        let key = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let org = OrgId::from_public_key(&key);
        assert_eq!(org.as_bytes(), NodeId::from_public_key(&key).as_bytes());
        assert_eq!(org.to_string().len(), 20);
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert_ne!(org, OrgId::from_public_key(&other));
    }

    #[test]
    fn signatures_are_domain_separated() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let sig = sign(&key, b"a/", b"body");
        assert!(verify(&key.verifying_key(), b"a/", b"body", &sig));
        assert!(!verify(&key.verifying_key(), b"b/", b"body", &sig));
        assert!(!verify(&key.verifying_key(), b"a/", b"bodz", &sig));
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(bytes in proptest::array::uniform10(any::<u8>())) {
            let id = OrgId(bytes);
            prop_assert_eq!(id.to_string().parse::<OrgId>(), Ok(id));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<OrgId>();
        }
    }
}

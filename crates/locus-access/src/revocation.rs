//! Revocations: a signed record that withdraws a token, a user or a node
//! certificate, spread by the fabric and checked by every node.
//!
//! The signed bytes are `b"locus/revocation/v1\0" ‖ postcard(revocation)`.
//! A revocation is signed by the org or node it names as `by`; who may
//! revoke what (an org its nodes' certificates, an issuer its tokens, a
//! tenant admin's node its users) is the caller's policy, checked with the
//! verified record.

use std::collections::BTreeSet;

use ed25519_dalek::{SigningKey, VerifyingKey};
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::encoding::{self, decode, encode};
use crate::org::{self, OrgId};
use crate::tenant::{TenantRef, UserName};

/// Domain separation of the bytes a revoker signs.
pub const REVOCATION_DOMAIN: &[u8] = b"locus/revocation/v1\0";

/// Largest encoded revocation accepted from outside.
pub const MAX_REVOCATION_BYTES: usize = 512;

/// Longest token revocation id, in bytes (a Biscuit block signature is 64).
pub const MAX_REVOCATION_ID_BYTES: usize = 64;

/// Most revocations a node keeps in force.
pub const MAX_REVOCATIONS: usize = 65_536;

/// What is revoked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// A token block by its Biscuit revocation id: the token and every
    /// token attenuated from it.
    Token { id: Vec<u8> },
    /// Every token of a user.
    User { tenant: TenantRef, user: UserName },
    /// One certificate of a node.
    NodeCert { node: NodeId, serial: u64 },
}

/// Who signs a revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoker {
    Org(OrgId),
    Node(NodeId),
}

impl Revoker {
    /// Whether `key` is this revoker's key.
    pub fn is_key(&self, key: &VerifyingKey) -> bool {
        match self {
            Revoker::Org(org) => OrgId::from_public_key(key) == *org,
            Revoker::Node(node) => NodeId::from_public_key(key) == *node,
        }
    }
}

/// A revocation as its revoker states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub by: Revoker,
    /// When it was made (unix seconds).
    pub at: u64,
    /// When it may be forgotten (unix seconds): the expiry of what it
    /// revokes, past which it is refused anyway. `None`: never.
    pub until: Option<u64>,
}

/// A revocation with its revoker's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    pub revocation: Revocation,
    #[serde(with = "encoding::bytes")]
    pub signature: [u8; 64],
}

/// Why a revocation record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("not a revocation: {0}")]
    Malformed(String),
    #[error("revocation names {by:?} as its signer, but the key given is not theirs")]
    OtherSigner { by: Revoker },
    #[error("revocation by {by:?}: the signature is not theirs")]
    BadSignature { by: Revoker },
    #[error("revocation of a token id of {len} bytes: 1 to {MAX_REVOCATION_ID_BYTES} allowed")]
    BadTokenId { len: usize },
    #[error("{MAX_REVOCATIONS} revocations are in force already; this one is refused")]
    Full,
}

impl Revocation {
    /// Sign with the revoker's key (which must be `by`'s: `verify` refuses
    /// a record signed by another key).
    pub fn sign(self, key: &SigningKey) -> SignedRevocation {
        let signature = org::sign(key, REVOCATION_DOMAIN, &encode(&self));
        SignedRevocation {
            revocation: self,
            signature,
        }
    }
}

impl SignedRevocation {
    /// The wire form: postcard of the signed revocation.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode the wire form (at most [`MAX_REVOCATION_BYTES`]); not checked
    /// yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RevocationError> {
        decode(bytes, MAX_REVOCATION_BYTES).map_err(RevocationError::Malformed)
    }

    /// Check the record against the key of the revoker it names.
    pub fn verify(&self, key: &VerifyingKey) -> Result<&Revocation, RevocationError> {
        let r = &self.revocation;
        if !r.by.is_key(key) {
            return Err(RevocationError::OtherSigner { by: r.by });
        }
        if let RevocationKind::Token { id } = &r.kind
            && (id.is_empty() || id.len() > MAX_REVOCATION_ID_BYTES)
        {
            return Err(RevocationError::BadTokenId { len: id.len() });
        }
        if !org::verify(key, REVOCATION_DOMAIN, &encode(r), &self.signature) {
            return Err(RevocationError::BadSignature { by: r.by });
        }
        Ok(r)
    }
}

/// The revocations in force on a node: at most [`MAX_REVOCATIONS`].
///
/// Only verified revocations belong here (the set does not check
/// signatures). When it is full a new revocation is refused rather than
/// an old one dropped, so nothing revoked ever becomes valid again by
/// crowding; [`RevocationSet::forget_expired`] makes room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationSet {
    kinds: BTreeSet<RevocationKind>,
    /// (until, kind) of those that may be forgotten.
    expiring: BTreeSet<(u64, RevocationKind)>,
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a verified revocation. Answers whether it was new.
    pub fn insert(&mut self, revocation: &Revocation) -> Result<bool, RevocationError> {
        if self.kinds.contains(&revocation.kind) {
            return Ok(false);
        }
        if self.kinds.len() >= MAX_REVOCATIONS {
            return Err(RevocationError::Full);
        }
        self.kinds.insert(revocation.kind.clone());
        if let Some(until) = revocation.until {
            self.expiring.insert((until, revocation.kind.clone()));
        }
        Ok(true)
    }

    /// Forget revocations whose `until` is at or before `now`. Answers how
    /// many were forgotten.
    pub fn forget_expired(&mut self, now: u64) -> usize {
        let keep = self.expiring.split_off(&(
            now.saturating_add(1),
            RevocationKind::Token { id: Vec::new() },
        ));
        let gone = std::mem::replace(&mut self.expiring, keep);
        for (_, kind) in &gone {
            self.kinds.remove(kind);
        }
        gone.len()
    }

    /// Whether `kind` is revoked.
    pub fn is_revoked(&self, kind: &RevocationKind) -> bool {
        self.kinds.contains(kind)
    }

    /// Whether any of a token's revocation ids (one per block) is revoked.
    pub fn is_token_revoked(&self, ids: &[Vec<u8>]) -> bool {
        ids.iter()
            .any(|id| self.is_revoked(&RevocationKind::Token { id: id.clone() }))
    }

    /// Whether a user's tokens are revoked.
    pub fn is_user_revoked(&self, tenant: &TenantRef, user: &UserName) -> bool {
        self.is_revoked(&RevocationKind::User {
            tenant: tenant.clone(),
            user: user.clone(),
        })
    }

    /// Whether a node certificate is revoked.
    pub fn is_cert_revoked(&self, node: NodeId, serial: u64) -> bool {
        self.is_revoked(&RevocationKind::NodeCert { node, serial })
    }

    /// How many revocations are in force.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantName;
    use proptest::prelude::*;

    fn org_key() -> SigningKey {
        SigningKey::from_bytes(&[4u8; 32])
    }

    fn by_org() -> Revoker {
        Revoker::Org(OrgId::from_public_key(&org_key().verifying_key()))
    }

    fn user_kind() -> RevocationKind {
        RevocationKind::User {
            tenant: TenantRef::new(
                OrgId::from_bytes([1; 10]),
                TenantName::try_from("acme".to_owned()).unwrap(),
            ),
            user: UserName::try_from("alice".to_owned()).unwrap(),
        }
    }

    #[test]
    fn a_signed_revocation_verifies_with_its_signers_key_only() {
        let r = Revocation {
            kind: user_kind(),
            by: by_org(),
            at: 10,
            until: None,
        };
        let signed = r.clone().sign(&org_key());
        let back = SignedRevocation::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(back.verify(&org_key().verifying_key()), Ok(&r));
        let other = SigningKey::from_bytes(&[5u8; 32]);
        assert!(matches!(
            back.verify(&other.verifying_key()),
            Err(RevocationError::OtherSigner { .. })
        ));
        // Signed by another key while naming the org.
        let forged = r.sign(&other);
        assert!(matches!(
            forged.verify(&org_key().verifying_key()),
            Err(RevocationError::BadSignature { .. })
        ));
        // A changed field breaks it.
        let mut changed = signed.clone();
        changed.revocation.at = 11;
        assert!(changed.verify(&org_key().verifying_key()).is_err());
        // Node revokers too.
        let node_key = SigningKey::from_bytes(&[6u8; 32]);
        let by_node = Revocation {
            kind: RevocationKind::Token { id: vec![1; 64] },
            by: Revoker::Node(NodeId::from_public_key(&node_key.verifying_key())),
            at: 1,
            until: Some(100),
        }
        .sign(&node_key);
        assert!(by_node.verify(&node_key.verifying_key()).is_ok());
        let empty_id = Revocation {
            kind: RevocationKind::Token { id: vec![] },
            ..by_node.revocation.clone()
        }
        .sign(&node_key);
        assert!(matches!(
            empty_id.verify(&node_key.verifying_key()),
            Err(RevocationError::BadTokenId { len: 0 })
        ));
    }

    #[test]
    fn the_set_answers_and_forgets_what_expired() {
        let mut set = RevocationSet::new();
        let token = Revocation {
            kind: RevocationKind::Token { id: vec![9; 64] },
            by: by_org(),
            at: 1,
            until: Some(100),
        };
        let cert = Revocation {
            kind: RevocationKind::NodeCert {
                node: NodeId::from_bytes([2; 10]),
                serial: 7,
            },
            by: by_org(),
            at: 1,
            until: None,
        };
        assert_eq!(set.insert(&token), Ok(true));
        assert_eq!(set.insert(&token), Ok(false));
        assert_eq!(set.insert(&cert), Ok(true));
        assert!(set.is_token_revoked(&[vec![0; 64], vec![9; 64]]));
        assert!(!set.is_token_revoked(&[vec![0; 64]]));
        assert!(set.is_cert_revoked(NodeId::from_bytes([2; 10]), 7));
        assert!(!set.is_cert_revoked(NodeId::from_bytes([2; 10]), 8));
        assert_eq!(set.forget_expired(99), 0);
        assert_eq!(set.forget_expired(100), 1);
        assert!(!set.is_token_revoked(&[vec![9; 64]]));
        assert_eq!(set.len(), 1, "what never expires stays");
    }

    #[test]
    fn a_full_set_refuses_rather_than_forgets() {
        let mut set = RevocationSet::new();
        for i in 0..MAX_REVOCATIONS as u64 {
            let r = Revocation {
                kind: RevocationKind::NodeCert {
                    node: NodeId::from_bytes([0; 10]),
                    serial: i,
                },
                by: by_org(),
                at: 0,
                until: None,
            };
            assert_eq!(set.insert(&r), Ok(true));
        }
        let one_more = Revocation {
            kind: user_kind(),
            by: by_org(),
            at: 0,
            until: None,
        };
        assert_eq!(set.insert(&one_more), Err(RevocationError::Full));
        assert!(set.is_cert_revoked(NodeId::from_bytes([0; 10]), 0));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(r) = SignedRevocation::from_bytes(&bytes) {
                prop_assert!(r.verify(&org_key().verifying_key()).is_err());
            }
        }
    }

    proptest! {
        // Signing and verifying are slow in unoptimised builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn sign_then_verify_round_trips(id in proptest::collection::vec(any::<u8>(), 1..=64), at in any::<u64>(), until in any::<Option<u64>>()) {
            let r = Revocation { kind: RevocationKind::Token { id }, by: by_org(), at, until };
            let signed = SignedRevocation::from_bytes(&r.clone().sign(&org_key()).to_bytes()).unwrap();
            prop_assert_eq!(signed.verify(&org_key().verifying_key()), Ok(&r));
        }
    }
}

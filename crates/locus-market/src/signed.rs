//! Records signed by a node on behalf of its org, checkable offline by
//! anyone: each carries the org's public key and the node certificate the
//! org signed, so a third party needs nothing but the record itself.
//!
//! The signed bytes are `domain ‖ postcard(body)`; the certificate must be
//! valid at the time the body says it was signed.

use ed25519_dalek::{SigningKey, VerifyingKey};
use locus_access::encoding::{self, encode};
use locus_access::{CertError, OrgId, SignedNodeCertificate, org};
use locus_core::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Who signs: a node, the org key that certified it, and the certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// The org's ed25519 public key; its hash is the org id.
    #[serde(with = "encoding::bytes")]
    pub org_key: [u8; 32],
    /// The org's certificate of the signing node.
    pub cert: SignedNodeCertificate,
}

impl Party {
    pub fn new(org_key: &VerifyingKey, cert: SignedNodeCertificate) -> Self {
        Party {
            org_key: org_key.to_bytes(),
            cert,
        }
    }

    /// The org the certificate names.
    pub fn org(&self) -> OrgId {
        self.cert.cert.org
    }

    /// The node the certificate names.
    pub fn node(&self) -> NodeId {
        self.cert.cert.node
    }

    /// Check the chain org key → certificate at `at`; answers the node's key.
    pub fn check(&self, at: u64) -> Result<VerifyingKey, SignatureError> {
        let org_key =
            org::verifying_key(&self.org_key).map_err(|reason| SignatureError::BadOrgKey {
                org: self.org(),
                reason,
            })?;
        Ok(self.cert.verify(&org_key, at)?)
    }
}

/// Why a signature of a market record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("org {org}: {reason}")]
    BadOrgKey { org: OrgId, reason: String },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(
        "signed by node {signer} of org {signer_org}, but the record names node {claimed} of org {claimed_org}"
    )]
    WrongSigner {
        signer: NodeId,
        signer_org: OrgId,
        claimed: NodeId,
        claimed_org: OrgId,
    },
    #[error("the signature of node {0} does not match the record")]
    BadSignature(NodeId),
}

/// Signs as one node of one org without handing out the node key: what a
/// service holds to sign market records.
pub trait PartySigner: Send + Sync {
    /// The node and org it signs as, with the org's certificate of the
    /// node; `None` while the node has no certificate.
    fn party(&self) -> Option<Party>;
    /// The node key's signature over `domain ‖ body`.
    fn sign(&self, domain: &[u8], body: &[u8]) -> [u8; 64];
}

/// A [`PartySigner`] over a key held in memory (tools, tests, benches).
pub struct KeyParty {
    pub party: Party,
    pub key: SigningKey,
}

impl PartySigner for KeyParty {
    fn party(&self) -> Option<Party> {
        Some(self.party.clone())
    }
    fn sign(&self, domain: &[u8], body: &[u8]) -> [u8; 64] {
        org::sign(&self.key, domain, body)
    }
}

/// A signature of one party over some body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartySignature {
    pub party: Party,
    #[serde(with = "encoding::bytes")]
    pub signature: [u8; 64],
}

impl PartySignature {
    /// Sign `domain ‖ postcard(body)` with the node key of `party`.
    pub fn sign<T: Serialize>(
        party: Party,
        node_key: &SigningKey,
        domain: &[u8],
        body: &T,
    ) -> Self {
        let signature = org::sign(node_key, domain, &encode(body));
        PartySignature { party, signature }
    }

    /// Sign `domain ‖ postcard(body)` through `signer`; `None` while it
    /// has no certificate.
    pub fn sign_with<T: Serialize>(
        signer: &dyn PartySigner,
        domain: &[u8],
        body: &T,
    ) -> Option<Self> {
        let party = signer.party()?;
        let signature = signer.sign(domain, &encode(body));
        Some(PartySignature { party, signature })
    }

    /// Check that the signer is `node` of `org`, certified at `at`, and
    /// that the signature covers `body`.
    pub fn verify<T: Serialize>(
        &self,
        domain: &[u8],
        body: &T,
        node: NodeId,
        org: OrgId,
        at: u64,
    ) -> Result<(), SignatureError> {
        self.verify_bytes(domain, &encode(body), node, org, at)
    }

    /// As [`verify`](Self::verify), over bytes already encoded.
    pub fn verify_bytes(
        &self,
        domain: &[u8],
        body: &[u8],
        node: NodeId,
        org: OrgId,
        at: u64,
    ) -> Result<(), SignatureError> {
        self.verify_bytes_key(domain, body, node, org, at)
            .map(|_| ())
    }

    /// As [`verify_bytes`](Self::verify_bytes), answering the node key
    /// the certificate vouches for.
    pub fn verify_bytes_key(
        &self,
        domain: &[u8],
        body: &[u8],
        node: NodeId,
        org: OrgId,
        at: u64,
    ) -> Result<VerifyingKey, SignatureError> {
        if self.party.node() != node || self.party.org() != org {
            return Err(SignatureError::WrongSigner {
                signer: self.party.node(),
                signer_org: self.party.org(),
                claimed: node,
                claimed_org: org,
            });
        }
        let node_key = self.party.check(at)?;
        if org::verify(&node_key, domain, body, &self.signature) {
            Ok(node_key)
        } else {
            Err(SignatureError::BadSignature(node))
        }
    }
}

/// A body signed by the node it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub by: PartySignature,
}

/// What a body must say about its signer for [`Signed`] to check it.
pub trait Authored {
    /// Domain separation of its signature.
    const DOMAIN: &'static [u8];
    /// The node that must sign it.
    fn author(&self) -> NodeId;
    /// The org of that node.
    fn author_org(&self) -> OrgId;
    /// When it was signed (the certificate must be valid then).
    fn signed_at(&self) -> u64;
}

impl<T: Authored + Serialize + DeserializeOwned> Signed<T> {
    pub fn sign(body: T, party: Party, node_key: &SigningKey) -> Self {
        let by = PartySignature::sign(party, node_key, T::DOMAIN, &body);
        Signed { body, by }
    }

    /// Sign through `signer`; `None` while it has no certificate.
    pub fn sign_with(body: T, signer: &dyn PartySigner) -> Option<Self> {
        let by = PartySignature::sign_with(signer, T::DOMAIN, &body)?;
        Some(Signed { body, by })
    }

    /// Check signer, certificate and signature.
    pub fn verify(&self) -> Result<(), SignatureError> {
        self.by.verify(
            T::DOMAIN,
            &self.body,
            self.body.author(),
            self.body.author_org(),
            self.body.signed_at(),
        )
    }

    /// The wire form (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode at most `max` bytes; the result is not checked yet.
    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Self, String> {
        encoding::decode(bytes, max)
    }

    /// The record's id: BLAKE3 of its wire form.
    pub fn id(&self) -> RecordId {
        RecordId(*blake3::hash(&self.to_bytes()).as_bytes())
    }
}

/// The id of a signed record: the BLAKE3 hash of its wire form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(#[serde(with = "encoding::bytes")] pub [u8; 32]);

impl RecordId {
    /// The first 16 hex digits, as shown to people.
    pub fn short(&self) -> String {
        encoding::hex(&self.0[..8])
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&encoding::hex(&self.0))
    }
}

impl std::fmt::Debug for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordId({})", self.short())
    }
}

impl std::str::FromStr for RecordId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        encoding::from_hex(s)
            .map(RecordId)
            .ok_or_else(|| format!("invalid record id {s:?}: expected 64 lowercase hex digits"))
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Orgs and nodes for tests: keys from seeds, certificates valid for
    //! all of time.
    use super::*;
    use locus_access::{NodeCertificate, NodeRole};

    pub struct TestNode {
        pub key: SigningKey,
        pub party: Party,
    }

    impl TestNode {
        pub fn node(&self) -> NodeId {
            self.party.node()
        }
        pub fn org(&self) -> OrgId {
            self.party.org()
        }
    }

    /// Node `n` of org `o`.
    pub fn node(o: u8, n: u8) -> TestNode {
        let org_key = SigningKey::from_bytes(&[o; 32]);
        let key =
            SigningKey::from_bytes(&[o.wrapping_mul(31).wrapping_add(n).wrapping_add(100); 32]);
        let cert = NodeCertificate::new(
            &key.verifying_key(),
            OrgId::from_public_key(&org_key.verifying_key()),
            [NodeRole::Worker].into(),
            1,
            0,
            u64::MAX,
        )
        .sign(&org_key);
        TestNode {
            party: Party::new(&org_key.verifying_key(), cert),
            key,
        }
    }
}

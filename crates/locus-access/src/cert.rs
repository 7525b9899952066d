//! Node certificates: an org enrolls a node by signing what the node is
//! (its id and key), whose it is (the org), what it may do (its roles) and
//! until when.
//!
//! The signed bytes are `b"locus/node-cert/v1\0" ‖ postcard(certificate)`.
//! A certificate travels as postcard of [`SignedNodeCertificate`]; a peer
//! decodes it with [`SignedNodeCertificate::from_bytes`] and checks it with
//! [`SignedNodeCertificate::verify`] against the key of the org it names.

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::encoding::{self, decode, encode};
use crate::org::{self, OrgId, verifying_key};

/// Domain separation of the bytes an org signs for a node certificate.
pub const CERT_DOMAIN: &[u8] = b"locus/node-cert/v1\0";

/// Largest encoded certificate accepted from outside.
pub const MAX_CERT_BYTES: usize = 1024;

/// What an org lets one of its nodes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Runs workloads and manages things for the org's tenants and the
    /// tenants granted use of it.
    Worker,
    /// Mints user tokens that other nodes accept on the org's behalf.
    Issuer,
    /// Holds artifact replicas and readings for others.
    Storage,
}

impl NodeRole {
    /// Every role, in a stable order.
    pub const ALL: [NodeRole; 3] = [NodeRole::Worker, NodeRole::Issuer, NodeRole::Storage];

    /// The name used in records and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Issuer => "issuer",
            NodeRole::Storage => "storage",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an org states about one of its nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCertificate {
    /// The node, derived from `node_key`.
    pub node: NodeId,
    /// The node's ed25519 public key.
    #[serde(with = "encoding::bytes")]
    pub node_key: [u8; 32],
    /// The org that enrolls the node (and signs the certificate).
    pub org: OrgId,
    /// What the node may do for the org.
    pub roles: BTreeSet<NodeRole>,
    /// The org's number for this certificate, so one of several
    /// certificates of a node can be revoked alone.
    pub serial: u64,
    /// Valid from this time (unix seconds, included).
    pub not_before: u64,
    /// Valid until this time (unix seconds, excluded).
    pub not_after: u64,
}

/// A certificate with its org's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNodeCertificate {
    /// What the org states.
    pub cert: NodeCertificate,
    /// The org key's ed25519 signature of `CERT_DOMAIN ‖ postcard(cert)`.
    #[serde(with = "encoding::bytes")]
    pub signature: [u8; 64],
}

/// Why a node certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The bytes are not a certificate.
    #[error("not a node certificate: {0}")]
    Malformed(String),
    /// The key given to check it is not the key of the org it names.
    #[error("certificate of node {node} names org {claimed}, but the key given is org {actual}'s")]
    OtherOrg {
        node: NodeId,
        claimed: OrgId,
        actual: OrgId,
    },
    /// The signature is not the org key's.
    #[error("certificate of node {node}: the signature is not org {org}'s")]
    BadSignature { node: NodeId, org: OrgId },
    /// The node id is not the one derived from the node key.
    #[error("certificate names node {claimed}, but its key is node {actual}'s")]
    KeyMismatch { claimed: NodeId, actual: NodeId },
    /// The node key is not an ed25519 point.
    #[error("certificate of node {node}: {reason}")]
    BadNodeKey { node: NodeId, reason: String },
    /// Not valid yet.
    #[error("certificate of node {node} is valid from {not_before}, it is {now}")]
    NotYetValid {
        node: NodeId,
        not_before: u64,
        now: u64,
    },
    /// Past its end.
    #[error("certificate of node {node} expired at {not_after}, it is {now}")]
    Expired {
        node: NodeId,
        not_after: u64,
        now: u64,
    },
    /// The validity window is empty.
    #[error("certificate of node {node} ends at {not_after}, before it starts at {not_before}")]
    EmptyWindow {
        node: NodeId,
        not_before: u64,
        not_after: u64,
    },
}

impl NodeCertificate {
    /// A certificate for the node holding `node_key`, enrolled by `org`.
    pub fn new(
        node_key: &VerifyingKey,
        org: OrgId,
        roles: BTreeSet<NodeRole>,
        serial: u64,
        not_before: u64,
        not_after: u64,
    ) -> Self {
        NodeCertificate {
            node: NodeId::from_public_key(node_key),
            node_key: node_key.to_bytes(),
            org,
            roles,
            serial,
            not_before,
            not_after,
        }
    }

    /// The bytes the org signs (after [`CERT_DOMAIN`]).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Sign with the org's key. A certificate naming another org is signed
    /// as it is (not corrected), and `verify` refuses it.
    pub fn sign(self, org_key: &SigningKey) -> SignedNodeCertificate {
        let signature = org::sign(org_key, CERT_DOMAIN, &self.canonical_bytes());
        SignedNodeCertificate {
            cert: self,
            signature,
        }
    }

    /// Whether the certificate gives the node `role`.
    pub fn has_role(&self, role: NodeRole) -> bool {
        self.roles.contains(&role)
    }
}

impl SignedNodeCertificate {
    /// The wire form: postcard of the signed certificate.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode the wire form (at most [`MAX_CERT_BYTES`]); the result is not
    /// checked yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        decode(bytes, MAX_CERT_BYTES).map_err(CertError::Malformed)
    }

    /// Check the certificate at time `now` against the key of the org it
    /// names: the org, the signature, the node key and the validity window.
    /// Answers the node's verified public key.
    pub fn verify(&self, org_key: &VerifyingKey, now: u64) -> Result<VerifyingKey, CertError> {
        let cert = &self.cert;
        let node = cert.node;
        let actual = OrgId::from_public_key(org_key);
        if actual != cert.org {
            return Err(CertError::OtherOrg {
                node,
                claimed: cert.org,
                actual,
            });
        }
        if !org::verify(
            org_key,
            CERT_DOMAIN,
            &cert.canonical_bytes(),
            &self.signature,
        ) {
            return Err(CertError::BadSignature {
                node,
                org: cert.org,
            });
        }
        let key = verifying_key(&cert.node_key)
            .map_err(|reason| CertError::BadNodeKey { node, reason })?;
        let derived = NodeId::from_public_key(&key);
        if derived != node {
            return Err(CertError::KeyMismatch {
                claimed: node,
                actual: derived,
            });
        }
        if cert.not_after <= cert.not_before {
            return Err(CertError::EmptyWindow {
                node,
                not_before: cert.not_before,
                not_after: cert.not_after,
            });
        }
        if now < cert.not_before {
            return Err(CertError::NotYetValid {
                node,
                not_before: cert.not_before,
                now,
            });
        }
        if now >= cert.not_after {
            return Err(CertError::Expired {
                node,
                not_after: cert.not_after,
                now,
            });
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn org_key() -> SigningKey {
        SigningKey::from_bytes(&[1u8; 32])
    }

    fn node_key() -> SigningKey {
        SigningKey::from_bytes(&[2u8; 32])
    }

    fn cert() -> NodeCertificate {
        NodeCertificate::new(
            &node_key().verifying_key(),
            OrgId::from_public_key(&org_key().verifying_key()),
            [NodeRole::Worker, NodeRole::Issuer].into(),
            1,
            100,
            1000,
        )
    }

    #[test]
    fn a_signed_certificate_verifies_within_its_window() {
        let signed = cert().sign(&org_key());
        let key = signed.verify(&org_key().verifying_key(), 500).unwrap();
        assert_eq!(key, node_key().verifying_key());
        let back = SignedNodeCertificate::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(back, signed);
        assert!(back.cert.has_role(NodeRole::Issuer));
        assert!(!back.cert.has_role(NodeRole::Storage));
    }

    #[test]
    fn expiry_and_start_are_named() {
        let signed = cert().sign(&org_key());
        let org = org_key().verifying_key();
        let err = signed.verify(&org, 1000).unwrap_err();
        assert!(matches!(
            err,
            CertError::Expired {
                not_after: 1000,
                now: 1000,
                ..
            }
        ));
        assert!(err.to_string().contains("expired at 1000"), "{err}");
        assert!(matches!(
            signed.verify(&org, 99),
            Err(CertError::NotYetValid {
                not_before: 100,
                ..
            })
        ));
        let mut empty = cert();
        empty.not_after = empty.not_before;
        assert!(matches!(
            empty.sign(&org_key()).verify(&org, 100),
            Err(CertError::EmptyWindow { .. })
        ));
    }

    #[test]
    fn another_org_key_is_refused() {
        let other = SigningKey::from_bytes(&[3u8; 32]);
        // Checked with another org's key: it names the wrong org.
        let signed = cert().sign(&org_key());
        let err = signed.verify(&other.verifying_key(), 500).unwrap_err();
        assert!(matches!(err, CertError::OtherOrg { .. }), "{err}");
        // Signed by another org while naming this one: a bad signature.
        let forged = cert().sign(&other);
        let err = forged.verify(&org_key().verifying_key(), 500).unwrap_err();
        assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn a_node_id_that_is_not_the_key_is_refused() {
        let mut c = cert();
        c.node = NodeId::from_public_key(&org_key().verifying_key());
        let err = c
            .sign(&org_key())
            .verify(&org_key().verifying_key(), 500)
            .unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn a_changed_field_breaks_the_signature() {
        let mut signed = cert().sign(&org_key());
        signed.cert.not_after += 1;
        assert!(matches!(
            signed.verify(&org_key().verifying_key(), 500),
            Err(CertError::BadSignature { .. })
        ));
        let mut signed = cert().sign(&org_key());
        signed.cert.roles.insert(NodeRole::Storage);
        assert!(signed.verify(&org_key().verifying_key(), 500).is_err());
    }

    #[test]
    fn json_shows_keys_and_signature_in_hex() {
        let signed = cert().sign(&org_key());
        let json = serde_json::to_string(&signed).unwrap();
        assert!(
            json.contains(&crate::encoding::hex(&signed.cert.node_key)),
            "{json}"
        );
        assert!(json.contains("\"issuer\""), "{json}");
        let back: SignedNodeCertificate = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(c) = SignedNodeCertificate::from_bytes(&bytes) {
                // Whatever decodes must still be checked, and is refused
                // unless it really is the org's.
                prop_assert!(c.verify(&org_key().verifying_key(), 500).is_err());
            }
        }
    }

    proptest! {
        // Signing and verifying are slow in unoptimised builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn sign_then_verify_round_trips(
            seed in proptest::array::uniform32(any::<u8>()),
            serial in any::<u64>(),
            start in 0u64..1 << 40,
            len in 1u64..1 << 30,
            roles in proptest::collection::btree_set(proptest::sample::select(NodeRole::ALL.to_vec()), 0..3),
        ) {
            let node = SigningKey::from_bytes(&seed);
            let org = org_key();
            let c = NodeCertificate::new(
                &node.verifying_key(),
                OrgId::from_public_key(&org.verifying_key()),
                roles,
                serial,
                start,
                start + len,
            );
            let signed = SignedNodeCertificate::from_bytes(&c.sign(&org).to_bytes()).unwrap();
            prop_assert_eq!(signed.verify(&org.verifying_key(), start).unwrap(), node.verifying_key());
            prop_assert!(signed.verify(&org.verifying_key(), start + len).is_err());
        }
    }
}

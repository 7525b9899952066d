//! Grants: an org lets a tenant of another org use its nodes (the hook
//! the marketplace's contracts use). A grant is signed by the granting
//! org's key and names one node or all of the org's nodes; a node takes
//! only grants of its own org that name it or all.

use ed25519_dalek::{SigningKey, VerifyingKey};
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::encoding::{self, decode, encode};
use crate::org::{self, OrgId};
use crate::tenant::TenantRef;

/// Domain of the org key's signature over a grant.
pub const GRANT_DOMAIN: &[u8] = b"locus/grant/v1\0";
/// Largest grant record accepted, in bytes.
pub const MAX_GRANT_BYTES: usize = 512;
/// Most grants a node keeps in force.
pub const MAX_GRANTS: usize = 4096;

/// What an org grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGrant {
    /// The granting org (whose nodes are used).
    pub org: OrgId,
    /// The tenant (of another org) that may use them.
    pub tenant: TenantRef,
    /// One node of the org, or every node of it.
    pub node: Option<NodeId>,
    /// When it was made (unix seconds).
    pub at: u64,
    /// Until when (unix seconds, excluded); `None`: until withdrawn.
    pub until: Option<u64>,
}

/// A grant with the granting org's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNodeGrant {
    pub grant: NodeGrant,
    #[serde(with = "encoding::bytes")]
    pub signature: [u8; 64],
}

/// Why a grant record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRecordError {
    #[error("not a grant: {0}")]
    Malformed(String),
    #[error("grant of org {0}: the signature is not its key's")]
    BadSignature(OrgId),
    #[error("grant signed for org {claimed} with the key of org {actual}")]
    OtherOrg { claimed: OrgId, actual: OrgId },
}

impl NodeGrant {
    /// Sign with the granting org's key.
    pub fn sign(self, org_key: &SigningKey) -> SignedNodeGrant {
        let signature = org::sign(org_key, GRANT_DOMAIN, &encode(&self));
        SignedNodeGrant {
            grant: self,
            signature,
        }
    }
}

impl SignedNodeGrant {
    /// The wire form: postcard of the signed grant.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode the wire form (at most [`MAX_GRANT_BYTES`]); not checked yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GrantRecordError> {
        decode(bytes, MAX_GRANT_BYTES).map_err(GrantRecordError::Malformed)
    }

    /// Check against the key of the org it names.
    pub fn verify(&self, org_key: &VerifyingKey) -> Result<&NodeGrant, GrantRecordError> {
        let actual = OrgId::from_public_key(org_key);
        if actual != self.grant.org {
            return Err(GrantRecordError::OtherOrg {
                claimed: self.grant.org,
                actual,
            });
        }
        if !org::verify(org_key, GRANT_DOMAIN, &encode(&self.grant), &self.signature) {
            return Err(GrantRecordError::BadSignature(actual));
        }
        Ok(&self.grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantName;

    #[test]
    fn a_grant_verifies_only_with_its_org_key_and_unaltered() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let grant = NodeGrant {
            org: OrgId::from_public_key(&key.verifying_key()),
            tenant: TenantRef::new(
                OrgId::from_public_key(&other.verifying_key()),
                TenantName::try_from("acme".to_owned()).unwrap(),
            ),
            node: None,
            at: 1,
            until: None,
        };
        let signed = grant.clone().sign(&key);
        let back = SignedNodeGrant::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(back.verify(&key.verifying_key()), Ok(&grant));
        assert!(matches!(
            back.verify(&other.verifying_key()),
            Err(GrantRecordError::OtherOrg { .. })
        ));
        let mut altered = back;
        altered.grant.node = Some(NodeId::from_public_key(&other.verifying_key()));
        assert!(matches!(
            altered.verify(&key.verifying_key()),
            Err(GrantRecordError::BadSignature(_))
        ));
        assert!(SignedNodeGrant::from_bytes(&[0xff; 600]).is_err());
    }
}

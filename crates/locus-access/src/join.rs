//! Join tokens: how a new machine enters an org with one string.
//!
//! An org admin's node makes a [`JoinToken`]: a [`JoinGrant`] (which org,
//! which node roles, until when, how many machines, where to enroll and
//! gossip, the cluster key) signed by the org key. The new machine sends
//! it back to the enrolling node with its own public key and a proof that
//! it holds the matching secret key ([`EnrollRequest`]); the enrolling
//! node checks both with [`check_enrollment`] and answers a node
//! certificate signed by the org key.
//!
//! The token is a secret: it carries the cluster key and lets its holder
//! enroll `uses` machines until `not_after`. The enrolling node counts the
//! uses of each grant id; the token itself cannot be altered (signed) nor
//! used past its expiry.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::cert::NodeRole;
use crate::encoding::{self, decode, encode};
use crate::org::{self, OrgId};

/// Domain of the org key's signature over a grant.
pub const JOIN_DOMAIN: &[u8] = b"locus/join/v1\0";
/// Domain of the new node's proof of its key.
pub const ENROLL_DOMAIN: &[u8] = b"locus/enroll/v1\0";
/// Prefix of the text form, so a join token is recognisable.
pub const JOIN_PREFIX: &str = "locusjoin1.";
/// Largest grant accepted, in bytes.
pub const MAX_JOIN_BYTES: usize = 512;
/// Most machines one token may enroll.
pub const MAX_JOIN_USES: u32 = 1000;
/// Longest address carried, in bytes.
const MAX_ADDR_BYTES: usize = 255;

/// What an org grants the holder of a join token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrant {
    /// Random id; the enrolling node counts uses by it.
    #[serde(with = "encoding::bytes")]
    pub id: [u8; 16],
    /// The org the new node joins.
    pub org: OrgId,
    /// Roles of the certificate the new node gets.
    pub roles: BTreeSet<NodeRole>,
    /// Unix seconds, excluded.
    pub not_after: u64,
    /// How many machines may enroll with it (1 = single-use).
    pub uses: u32,
    /// API address (`host:port`) of the node that enrolls.
    pub enroll_api: String,
    /// Gossip address (`host:port`) to join the fabric through.
    pub seed: String,
    /// The cluster key, when the cluster's gossip has one.
    pub cluster_key: Option<[u8; 32]>,
}

/// A grant with the org key's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub grant: JoinGrant,
    #[serde(with = "encoding::bytes")]
    pub signature: [u8; 64],
}

/// What a new machine sends to enroll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The join token, as printed.
    pub token: String,
    /// The new node's ed25519 public key, 64 hex digits.
    pub node_key: String,
    /// The new node's signature of `ENROLL_DOMAIN ‖ grant id ‖ node key`,
    /// 128 hex digits: it holds the secret key.
    pub proof: String,
}

/// Why a join token or an enrollment is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("not a join token: {0}")]
    Malformed(String),
    #[error("join token of org {token_org}, but this node enrolls for org {org}")]
    OtherOrg { token_org: OrgId, org: OrgId },
    #[error("join token signature is not org {0}'s: forged or altered")]
    BadSignature(OrgId),
    #[error("join token expired at {not_after}, it is {now}")]
    Expired { not_after: u64, now: u64 },
    #[error("join token already used {used} times of {uses}")]
    UsedUp { used: u32, uses: u32 },
    #[error("node key: {0}")]
    BadNodeKey(String),
    #[error("the proof is not the node key's signature")]
    BadProof,
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
}

impl JoinGrant {
    /// Refuse a grant nobody should sign or accept.
    fn check(&self) -> Result<(), JoinError> {
        let bad = |m: String| Err(JoinError::InvalidGrant(m));
        if self.uses == 0 || self.uses > MAX_JOIN_USES {
            return bad(format!(
                "uses {} must be between 1 and {MAX_JOIN_USES}",
                self.uses
            ));
        }
        for (what, addr) in [("enroll_api", &self.enroll_api), ("seed", &self.seed)] {
            if addr.is_empty() || addr.len() > MAX_ADDR_BYTES {
                return bad(format!(
                    "{what} {addr:?} must be 1 to {MAX_ADDR_BYTES} bytes"
                ));
            }
        }
        if self.roles.is_empty() {
            return bad("no roles".into());
        }
        Ok(())
    }

    /// Sign with the org key.
    pub fn sign(self, org_key: &SigningKey) -> Result<JoinToken, JoinError> {
        self.check()?;
        let signature = org::sign(org_key, JOIN_DOMAIN, &encode(&self));
        Ok(JoinToken {
            grant: self,
            signature,
        })
    }
}

impl JoinToken {
    /// The text form: `locusjoin1.` and base64url of the signed grant.
    pub fn encode(&self) -> String {
        format!("{JOIN_PREFIX}{}", URL_SAFE_NO_PAD.encode(encode(self)))
    }

    /// Read the text form; the result is not checked yet.
    pub fn parse(text: &str) -> Result<JoinToken, JoinError> {
        let bad = |m: String| JoinError::Malformed(m);
        let body = text
            .trim()
            .strip_prefix(JOIN_PREFIX)
            .ok_or_else(|| bad(format!("it does not start with {JOIN_PREFIX:?}")))?;
        if body.len() > MAX_JOIN_BYTES * 2 {
            return Err(bad(format!("{} characters is too long", body.len())));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| bad(format!("not base64url: {e}")))?;
        let token: JoinToken = decode(&bytes, MAX_JOIN_BYTES).map_err(bad)?;
        token.grant.check()?;
        Ok(token)
    }

    /// Check the signature with the key of the org that enrolls, and the
    /// expiry at `now`.
    pub fn verify(&self, org_key: &VerifyingKey, now: u64) -> Result<&JoinGrant, JoinError> {
        let org = OrgId::from_public_key(org_key);
        if self.grant.org != org {
            return Err(JoinError::OtherOrg {
                token_org: self.grant.org,
                org,
            });
        }
        if !org::verify(org_key, JOIN_DOMAIN, &encode(&self.grant), &self.signature) {
            return Err(JoinError::BadSignature(org));
        }
        if now >= self.grant.not_after {
            return Err(JoinError::Expired {
                not_after: self.grant.not_after,
                now,
            });
        }
        Ok(&self.grant)
    }
}

fn proof_message(grant_id: &[u8; 16], node_key: &[u8; 32]) -> Vec<u8> {
    [&grant_id[..], &node_key[..]].concat()
}

/// The enrollment a new node sends for `token` (its text form).
pub fn enroll_request(token: &str, grant_id: &[u8; 16], node_key: &SigningKey) -> EnrollRequest {
    let public = node_key.verifying_key().to_bytes();
    let proof = org::sign(node_key, ENROLL_DOMAIN, &proof_message(grant_id, &public));
    EnrollRequest {
        token: token.to_owned(),
        node_key: encoding::hex(&public),
        proof: encoding::hex(&proof),
    }
}

/// What an accepted enrollment yields: the grant and the new node's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub grant: JoinGrant,
    pub node_key: VerifyingKey,
}

/// Check an enrollment at an enrolling node of the org holding `org_key`:
/// the token (org, signature, expiry), the uses left (`used` so far by
/// this grant id), the node key and its proof.
pub fn check_enrollment(
    request: &EnrollRequest,
    org_key: &VerifyingKey,
    now: u64,
    used: impl FnOnce(&[u8; 16]) -> u32,
) -> Result<Admission, JoinError> {
    let token = JoinToken::parse(&request.token)?;
    let grant = token.verify(org_key, now)?;
    let used = used(&grant.id);
    if used >= grant.uses {
        return Err(JoinError::UsedUp {
            used,
            uses: grant.uses,
        });
    }
    let key_bytes: [u8; 32] = encoding::from_hex(&request.node_key)
        .ok_or_else(|| JoinError::BadNodeKey("expected 64 hex digits".into()))?;
    let node_key = org::verifying_key(&key_bytes).map_err(JoinError::BadNodeKey)?;
    let proof: [u8; 64] = encoding::from_hex(&request.proof).ok_or(JoinError::BadProof)?;
    if !org::verify(
        &node_key,
        ENROLL_DOMAIN,
        &proof_message(&grant.id, &key_bytes),
        &proof,
    ) {
        return Err(JoinError::BadProof);
    }
    Ok(Admission {
        grant: grant.clone(),
        node_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn org_key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn grant(uses: u32) -> JoinGrant {
        JoinGrant {
            id: [9; 16],
            org: OrgId::from_public_key(&org_key().verifying_key()),
            roles: [NodeRole::Worker].into(),
            not_after: 1_000,
            uses,
            enroll_api: "127.0.0.1:7400".into(),
            seed: "127.0.0.1:7946".into(),
            cluster_key: Some([1; 32]),
        }
    }

    #[test]
    fn a_token_round_trips_and_enrolls_a_node_that_proves_its_key() {
        let token = grant(1).sign(&org_key()).unwrap().encode();
        assert!(token.starts_with(JOIN_PREFIX));
        let node = SigningKey::from_bytes(&[5u8; 32]);
        let req = enroll_request(&token, &[9; 16], &node);
        let admitted = check_enrollment(&req, &org_key().verifying_key(), 10, |_| 0).unwrap();
        assert_eq!(admitted.node_key, node.verifying_key());
        assert_eq!(admitted.grant, grant(1));
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let key = org_key().verifying_key();
        let token = grant(2).sign(&org_key()).unwrap().encode();
        let node = SigningKey::from_bytes(&[5u8; 32]);
        let req = enroll_request(&token, &[9; 16], &node);
        assert!(matches!(
            check_enrollment(&req, &key, 1_000, |_| 0),
            Err(JoinError::Expired { .. })
        ));
        assert_eq!(
            check_enrollment(&req, &key, 10, |_| 2),
            Err(JoinError::UsedUp { used: 2, uses: 2 })
        );
        let other = SigningKey::from_bytes(&[4u8; 32]).verifying_key();
        assert!(matches!(
            check_enrollment(&req, &other, 10, |_| 0),
            Err(JoinError::OtherOrg { .. })
        ));
        // A proof made for another grant id.
        let stolen = enroll_request(&token, &[8; 16], &node);
        assert_eq!(
            check_enrollment(&stolen, &key, 10, |_| 0),
            Err(JoinError::BadProof)
        );
        // Another key claimed with this node's proof.
        let mut swapped = req.clone();
        swapped.node_key = encoding::hex(
            &SigningKey::from_bytes(&[6u8; 32])
                .verifying_key()
                .to_bytes(),
        );
        assert_eq!(
            check_enrollment(&swapped, &key, 10, |_| 0),
            Err(JoinError::BadProof)
        );
        // A grant altered after signing: more uses.
        let mut t = JoinToken::parse(&token).unwrap();
        t.grant.uses = 100;
        let altered = enroll_request(&t.encode(), &[9; 16], &node);
        assert!(matches!(
            check_enrollment(&altered, &key, 10, |_| 0),
            Err(JoinError::BadSignature(_))
        ));
        assert!(matches!(
            grant(0).sign(&org_key()),
            Err(JoinError::InvalidGrant(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = JoinToken::parse(&s);
            let _ = JoinToken::parse(&format!("{JOIN_PREFIX}{s}"));
        }

        #[test]
        fn any_flipped_byte_is_refused(i in 0usize..400, bit in 0u8..8) {
            let token = grant(1).sign(&org_key()).unwrap();
            let mut bytes = encode(&token);
            let i = i % bytes.len();
            bytes[i] ^= 1 << bit;
            let text = format!("{JOIN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            let accepted = JoinToken::parse(&text)
                .and_then(|t| t.verify(&org_key().verifying_key(), 10).map(|_| ()));
            prop_assert!(accepted.is_err());
        }
    }
}

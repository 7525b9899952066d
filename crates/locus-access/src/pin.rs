//! Pins: how a client trusts a node's TLS certificate without a
//! certificate authority.
//!
//! A node's TLS certificate is self-signed by its node key and carries,
//! in the extension [`NODE_CERT_OID`], its locus node certificate (the org
//! key's signature over the node key). A client pins either the node key
//! (`node:<64 hex>`: the TLS key must be that key) or the org key
//! (`org:<64 hex>`: the TLS key must be a node key the org certified,
//! valid now). TLS itself proves the server holds the private half of
//! the TLS key.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use crate::cert::SignedNodeCertificate;
use crate::encoding::{from_hex, hex};
use crate::org::OrgId;

/// The arcs of the X.509 extension holding the node certificate (as the
/// hex text `trust::cert_to_hex` writes). Non-critical: a client that
/// does not know it still completes the handshake.
pub const NODE_CERT_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 99999, 7400, 1];

/// What a client trusts a node's TLS key by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// This node key and no other.
    Node([u8; 32]),
    /// Any node key this org key certified.
    Org([u8; 32]),
}

/// A pin that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pin {0:?}: expected node:<64 hex digits> (a node key) or org:<64 hex digits> (an org key)"
)]
pub struct ParsePinError(pub String);

impl FromStr for Pin {
    type Err = ParsePinError;

    fn from_str(s: &str) -> Result<Pin, ParsePinError> {
        let bad = || ParsePinError(s.to_owned());
        let (kind, key) = s.split_once(':').ok_or_else(bad)?;
        let key: [u8; 32] = from_hex(&key.to_ascii_lowercase()).ok_or_else(bad)?;
        match kind {
            "node" => Ok(Pin::Node(key)),
            "org" => Ok(Pin::Org(key)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Node(k) => write!(f, "node:{}", hex(k)),
            Pin::Org(k) => write!(f, "org:{}", hex(k)),
        }
    }
}

/// Why a server's TLS key does not match the pin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("the server's key {found} is not the pinned node key {pinned}")]
    OtherNode { found: String, pinned: String },
    #[error(
        "the server's certificate carries no locus node certificate to check against the pinned org key"
    )]
    NoNodeCertificate,
    #[error("the server's node certificate: {0}")]
    BadNodeCertificate(String),
    #[error("the server's node certificate certifies key {certified}, not its TLS key {found}")]
    KeyMismatch { certified: String, found: String },
    #[error("the pinned org key is not an ed25519 point")]
    BadOrgKey,
}

/// Whether a server whose TLS key is `server_key` and whose certificate
/// carries `node_cert` (the extension's text, if any) matches `pin` at
/// `now` (unix seconds).
pub fn check_pin(
    pin: &Pin,
    server_key: &[u8; 32],
    node_cert: Option<&str>,
    now: u64,
) -> Result<(), PinError> {
    match pin {
        Pin::Node(key) if key == server_key => Ok(()),
        Pin::Node(key) => Err(PinError::OtherNode {
            found: hex(server_key),
            pinned: hex(key),
        }),
        Pin::Org(org_key) => {
            let org_key = VerifyingKey::from_bytes(org_key).map_err(|_| PinError::BadOrgKey)?;
            let text = node_cert.ok_or(PinError::NoNodeCertificate)?;
            let cert = crate::trust::cert_from_hex(text)
                .map_err(|e| PinError::BadNodeCertificate(e.to_string()))?;
            let certified = check_node_cert(&cert, &org_key, now)?;
            if certified.as_bytes() != server_key {
                return Err(PinError::KeyMismatch {
                    certified: hex(certified.as_bytes()),
                    found: hex(server_key),
                });
            }
            Ok(())
        }
    }
}

fn check_node_cert(
    cert: &SignedNodeCertificate,
    org_key: &VerifyingKey,
    now: u64,
) -> Result<VerifyingKey, PinError> {
    if cert.cert.org != OrgId::from_public_key(org_key) {
        return Err(PinError::BadNodeCertificate(format!(
            "it is of org {}, not of the pinned org {}",
            cert.cert.org,
            OrgId::from_public_key(org_key)
        )));
    }
    cert.verify(org_key, now)
        .map_err(|e| PinError::BadNodeCertificate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{NodeCertificate, NodeRole};
    use ed25519_dalek::SigningKey;
    use locus_core::NodeId;

    fn cert_of(node: &SigningKey, org: &SigningKey, not_after: u64) -> String {
        let cert = NodeCertificate {
            node: NodeId::from_public_key(&node.verifying_key()),
            node_key: node.verifying_key().to_bytes(),
            org: OrgId::from_public_key(&org.verifying_key()),
            roles: [NodeRole::Worker].into(),
            serial: 1,
            not_before: 0,
            not_after,
        }
        .sign(org);
        crate::trust::cert_to_hex(&cert)
    }

    #[test]
    fn pins_parse_and_print() {
        let p: Pin = format!("node:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(p, Pin::Node([0xab; 32]));
        assert_eq!(p.to_string(), format!("node:{}", "ab".repeat(32)));
        assert!(matches!(
            format!("org:{}", "AB".repeat(32)).parse(),
            Ok(Pin::Org(_))
        ));
        for bad in [
            "",
            "node",
            "node:12",
            "ca:00",
            &format!("host:{}", "00".repeat(32)),
        ] {
            assert!(bad.parse::<Pin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_pin_takes_that_key_only() {
        let k = [7u8; 32];
        assert_eq!(check_pin(&Pin::Node(k), &k, None, 0), Ok(()));
        assert!(matches!(
            check_pin(&Pin::Node(k), &[8; 32], None, 0),
            Err(PinError::OtherNode { .. })
        ));
    }

    #[test]
    fn an_org_pin_takes_a_node_the_org_certified_now() {
        let org = SigningKey::from_bytes(&[1; 32]);
        let other_org = SigningKey::from_bytes(&[2; 32]);
        let node = SigningKey::from_bytes(&[3; 32]);
        let pin = Pin::Org(org.verifying_key().to_bytes());
        let key = node.verifying_key().to_bytes();
        let good = cert_of(&node, &org, 1_000);
        assert_eq!(check_pin(&pin, &key, Some(&good), 10), Ok(()));
        // Expired, of another org, of another key, absent, garbled.
        assert!(matches!(
            check_pin(&pin, &key, Some(&good), 2_000),
            Err(PinError::BadNodeCertificate(_))
        ));
        let foreign = cert_of(&node, &other_org, 1_000);
        assert!(matches!(
            check_pin(&pin, &key, Some(&foreign), 10),
            Err(PinError::BadNodeCertificate(m)) if m.contains("not of the pinned org")
        ));
        assert!(matches!(
            check_pin(&pin, &[9; 32], Some(&good), 10),
            Err(PinError::KeyMismatch { .. })
        ));
        assert_eq!(
            check_pin(&pin, &key, None, 10),
            Err(PinError::NoNodeCertificate)
        );
        assert!(matches!(
            check_pin(&pin, &key, Some("zz"), 10),
            Err(PinError::BadNodeCertificate(_))
        ));
    }
}

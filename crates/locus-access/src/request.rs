//! Signed node-to-node requests: the calling node signs what the request
//! is (method, path and query, date, nonce, body digest) with its node key;
//! the called node checks the signature, the date against its clock and
//! the nonce against those it saw.
//!
//! The signed text is, one field a line:
//!
//! ```text
//! locus/request/v1
//! <node id>
//! <METHOD>
//! <path and query>
//! <date: unix seconds>
//! <nonce: 32 hex digits>
//! <BLAKE3 of the body: 64 hex digits>
//! ```
//!
//! The digest is of the body as sent. A body the receiver streams rather
//! than holds, the bytes of a content-addressed artifact, is signed by the
//! BLAKE3 digest its CID names ([`sign_request_digest`],
//! [`verify_request_digest`]): the same digest, known without a second
//! pass over the bytes, and the receiver refuses bytes that do not hash
//! to the CID.
//!
//! It travels as five headers ([`RequestSignature`]). A request is
//! accepted only once: a nonce is remembered while its date is within
//! [`CLOCK_SKEW_SECS`] of "now", and a date outside that window is refused.

use std::collections::{BTreeSet, HashSet};

use ed25519_dalek::{SigningKey, VerifyingKey};
use locus_core::NodeId;

use crate::encoding::{from_hex, hex};
use crate::org;

/// How far a request's date may be from the receiver's clock, each way.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Most nonces a [`ReplayGuard`] remembers (about two skew windows of
/// requests at 500 per second).
pub const MAX_REMEMBERED_NONCES: usize = 65_536;

/// Longest path and query signed, in bytes.
pub const MAX_SIGNED_PATH_BYTES: usize = 4096;

/// Header of the calling node's id.
pub const HEADER_NODE: &str = "locus-node";
/// Header of the date (unix seconds).
pub const HEADER_DATE: &str = "locus-date";
/// Header of the nonce (32 hex digits).
pub const HEADER_NONCE: &str = "locus-nonce";
/// Header of the BLAKE3 digest of the body (64 hex digits).
pub const HEADER_DIGEST: &str = "locus-digest";
/// Header of the ed25519 signature (128 hex digits).
pub const HEADER_SIGNATURE: &str = "locus-signature";
/// Header of the signer's node certificate (hex): not signed, it proves
/// itself (signed by the org key) to a node that has not heard of the
/// signer through the fabric yet.
pub const HEADER_CERT: &str = "locus-cert";

const DOMAIN: &str = "locus/request/v1";

/// The header values of a signed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSignature {
    pub node: String,
    pub date: String,
    pub nonce: String,
    pub digest: String,
    pub signature: String,
}

impl RequestSignature {
    /// The headers as (name, value) pairs.
    pub fn headers(&self) -> [(&'static str, &str); 5] {
        [
            (HEADER_NODE, &self.node),
            (HEADER_DATE, &self.date),
            (HEADER_NONCE, &self.nonce),
            (HEADER_DIGEST, &self.digest),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }

    /// The headers as owned (name, value) pairs, for an HTTP client.
    pub fn into_header_pairs(self) -> Vec<(&'static str, String)> {
        self.headers()
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect()
    }

    /// The signature from headers looked up by name (case-insensitive
    /// names are the caller's business); `None` for any missing.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        Some(RequestSignature {
            node: get(HEADER_NODE)?.to_owned(),
            date: get(HEADER_DATE)?.to_owned(),
            nonce: get(HEADER_NONCE)?.to_owned(),
            digest: get(HEADER_DIGEST)?.to_owned(),
            signature: get(HEADER_SIGNATURE)?.to_owned(),
        })
    }
}

/// Why a signed request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("header {header}: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    #[error("path and query of {len} bytes: at most {MAX_SIGNED_PATH_BYTES} are signed")]
    PathTooLong { len: usize },
    #[error("node {0} is not known here")]
    UnknownNode(NodeId),
    #[error("request dated {date} is more than {CLOCK_SKEW_SECS} s from now ({now})")]
    StaleDate { date: u64, now: u64 },
    #[error("the body does not match its digest")]
    DigestMismatch,
    #[error("the signature is not node {0}'s")]
    BadSignature(NodeId),
    #[error("nonce {nonce} of node {node} was seen already: a replay")]
    Replay { node: NodeId, nonce: String },
    #[error("{MAX_REMEMBERED_NONCES} recent nonces are remembered already; retry later")]
    GuardFull,
}

fn canonical(
    node: &NodeId,
    method: &str,
    path_and_query: &str,
    date: u64,
    nonce: &str,
    digest: &str,
) -> String {
    format!(
        "{DOMAIN}\n{node}\n{}\n{path_and_query}\n{date}\n{nonce}\n{digest}\n",
        method.to_ascii_uppercase()
    )
}

/// Sign a request as the node holding `key`. `date` is the caller's clock
/// (unix seconds) and `nonce` 16 random bytes it drew.
pub fn sign_request(
    key: &SigningKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    date: u64,
    nonce: [u8; 16],
) -> RequestSignature {
    sign_request_digest(key, method, path_and_query, body_digest(body), date, nonce)
}

/// The BLAKE3 digest of a body, as [`HEADER_DIGEST`] carries it.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    *blake3::hash(body).as_bytes()
}

/// Sign a request whose body has the BLAKE3 digest `digest`, known
/// without reading the body again: the body of a content-addressed
/// upload (an artifact copy) is the content its CID names, and the CID
/// carries that BLAKE3 digest, so a streamed body of any size is signed
/// without a second pass over it.
pub fn sign_request_digest(
    key: &SigningKey,
    method: &str,
    path_and_query: &str,
    digest: [u8; 32],
    date: u64,
    nonce: [u8; 16],
) -> RequestSignature {
    let node = NodeId::from_public_key(&key.verifying_key());
    let nonce = hex(&nonce);
    let digest = hex(&digest);
    let text = canonical(&node, method, path_and_query, date, &nonce, &digest);
    let signature = hex(&org::sign(key, b"", text.as_bytes()));
    RequestSignature {
        node: node.to_string(),
        date: date.to_string(),
        nonce,
        digest,
        signature,
    }
}

fn bad(header: &'static str, reason: &str) -> RequestError {
    RequestError::BadHeader {
        header,
        reason: reason.to_owned(),
    }
}

/// Check a signed request at time `now`: the headers, the date, the body
/// digest, the signature by the key `key_of` gives for the calling node
/// (`None`: not a node this one accepts), then that the nonce is new.
/// Answers the calling node.
pub fn verify_request(
    sig: &RequestSignature,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    key_of: impl FnOnce(&NodeId) -> Option<VerifyingKey>,
    now: u64,
    guard: &mut ReplayGuard,
) -> Result<NodeId, RequestError> {
    verify_request_digest(
        sig,
        method,
        path_and_query,
        &body_digest(body),
        key_of,
        now,
        guard,
    )
}

/// [`verify_request`] for a body the receiver does not hold whole: the
/// digest the signature must cover is `expected` (for an artifact copy,
/// the BLAKE3 digest its CID names). The caller must then accept the
/// body only if it hashes to `expected`, as an artifact copy whose bytes
/// do not hash to its CID is refused.
pub fn verify_request_digest(
    sig: &RequestSignature,
    method: &str,
    path_and_query: &str,
    expected: &[u8; 32],
    key_of: impl FnOnce(&NodeId) -> Option<VerifyingKey>,
    now: u64,
    guard: &mut ReplayGuard,
) -> Result<NodeId, RequestError> {
    let node: NodeId = sig
        .node
        .parse()
        .map_err(|_| bad(HEADER_NODE, "not a node id"))?;
    if sig.date.is_empty() || sig.date.len() > 20 || !sig.date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(HEADER_DATE, "not unix seconds"));
    }
    let date: u64 = sig
        .date
        .parse()
        .map_err(|_| bad(HEADER_DATE, "not unix seconds"))?;
    let nonce: [u8; 16] =
        from_hex(&sig.nonce).ok_or_else(|| bad(HEADER_NONCE, "not 32 lowercase hex digits"))?;
    let digest: [u8; 32] =
        from_hex(&sig.digest).ok_or_else(|| bad(HEADER_DIGEST, "not 64 lowercase hex digits"))?;
    let signature: [u8; 64] = from_hex(&sig.signature)
        .ok_or_else(|| bad(HEADER_SIGNATURE, "not 128 lowercase hex digits"))?;
    if path_and_query.len() > MAX_SIGNED_PATH_BYTES {
        return Err(RequestError::PathTooLong {
            len: path_and_query.len(),
        });
    }
    if date.abs_diff(now) > CLOCK_SKEW_SECS {
        return Err(RequestError::StaleDate { date, now });
    }
    if digest != *expected {
        return Err(RequestError::DigestMismatch);
    }
    let key = key_of(&node).ok_or(RequestError::UnknownNode(node))?;
    if NodeId::from_public_key(&key) != node {
        return Err(RequestError::BadSignature(node));
    }
    let text = canonical(&node, method, path_and_query, date, &sig.nonce, &sig.digest);
    if !org::verify(&key, b"", text.as_bytes(), &signature) {
        return Err(RequestError::BadSignature(node));
    }
    guard.admit(node, nonce, date, now)?;
    Ok(node)
}

/// The nonces of requests accepted within the skew window: a request is
/// accepted once. At most [`MAX_REMEMBERED_NONCES`]; when full (after
/// forgetting those whose date left the window) a new request is refused,
/// never admitted unchecked.
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard {
    by_date: BTreeSet<(u64, NodeId, [u8; 16])>,
    seen: HashSet<(NodeId, [u8; 16])>,
}

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remember `(node, nonce)` of a request dated `date`, or refuse a
    /// replay.
    pub fn admit(
        &mut self,
        node: NodeId,
        nonce: [u8; 16],
        date: u64,
        now: u64,
    ) -> Result<(), RequestError> {
        self.forget_before(now.saturating_sub(CLOCK_SKEW_SECS));
        if self.seen.contains(&(node, nonce)) {
            return Err(RequestError::Replay {
                node,
                nonce: hex(&nonce),
            });
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(RequestError::GuardFull);
        }
        self.seen.insert((node, nonce));
        self.by_date.insert((date, node, nonce));
        Ok(())
    }

    /// Forget nonces dated before `oldest`: their requests are refused as
    /// stale anyway.
    fn forget_before(&mut self, oldest: u64) {
        let keep = self
            .by_date
            .split_off(&(oldest, NodeId::from_bytes([0; 10]), [0; 16]));
        for (_, node, nonce) in std::mem::replace(&mut self.by_date, keep) {
            self.seen.remove(&(node, nonce));
        }
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn lookup(k: &SigningKey) -> impl FnOnce(&NodeId) -> Option<VerifyingKey> + '_ {
        move |n| (*n == NodeId::from_public_key(&k.verifying_key())).then(|| k.verifying_key())
    }

    const PATH: &str = "/api/v1/workloads/handover?x=1";

    #[test]
    fn a_signed_request_verifies_once() {
        let k = key();
        let sig = sign_request(&k, "post", PATH, b"{}", 1000, [1; 16]);
        let mut guard = ReplayGuard::new();
        let node = verify_request(&sig, "POST", PATH, b"{}", lookup(&k), 1010, &mut guard).unwrap();
        assert_eq!(node, NodeId::from_public_key(&k.verifying_key()));
        let err =
            verify_request(&sig, "POST", PATH, b"{}", lookup(&k), 1011, &mut guard).unwrap_err();
        assert!(matches!(err, RequestError::Replay { .. }), "{err}");
        // Another nonce is another request.
        let again = sign_request(&k, "POST", PATH, b"{}", 1000, [2; 16]);
        assert!(verify_request(&again, "POST", PATH, b"{}", lookup(&k), 1011, &mut guard).is_ok());
    }

    #[test]
    fn each_part_is_covered() {
        let k = key();
        let sig = sign_request(&k, "POST", PATH, b"{}", 1000, [1; 16]);
        let mut g = ReplayGuard::new();
        assert_eq!(
            verify_request(&sig, "POST", PATH, b"{ }", lookup(&k), 1000, &mut g),
            Err(RequestError::DigestMismatch)
        );
        assert!(matches!(
            verify_request(&sig, "PUT", PATH, b"{}", lookup(&k), 1000, &mut g),
            Err(RequestError::BadSignature(_))
        ));
        assert!(matches!(
            verify_request(
                &sig,
                "POST",
                "/api/v1/workloads/handover?x=2",
                b"{}",
                lookup(&k),
                1000,
                &mut g
            ),
            Err(RequestError::BadSignature(_))
        ));
        let mut later = sig.clone();
        later.date = "1001".into();
        assert!(matches!(
            verify_request(&later, "POST", PATH, b"{}", lookup(&k), 1000, &mut g),
            Err(RequestError::BadSignature(_))
        ));
        // Signed by another key claiming this node.
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let mut forged = sign_request(&other, "POST", PATH, b"{}", 1000, [1; 16]);
        forged.node = sig.node.clone();
        assert!(matches!(
            verify_request(&forged, "POST", PATH, b"{}", lookup(&k), 1000, &mut g),
            Err(RequestError::BadSignature(_))
        ));
        // An unknown node.
        let stranger = sign_request(&other, "POST", PATH, b"{}", 1000, [1; 16]);
        assert!(matches!(
            verify_request(&stranger, "POST", PATH, b"{}", lookup(&k), 1000, &mut g),
            Err(RequestError::UnknownNode(_))
        ));
        assert!(g.is_empty(), "refused requests leave no nonce behind");
    }

    #[test]
    fn a_content_addressed_body_is_signed_by_its_digest() {
        let k = key();
        let content = vec![9u8; 100_000];
        let digest = body_digest(&content);
        let path = "/api/v1/artifacts/bafk?replicas=2";
        let sig = sign_request_digest(&k, "PUT", path, digest, 1000, [3; 16]);
        // The same headers as signing the body itself.
        assert_eq!(sig, sign_request(&k, "PUT", path, &content, 1000, [3; 16]));
        let mut g = ReplayGuard::new();
        assert!(
            verify_request_digest(&sig, "PUT", path, &digest, lookup(&k), 1000, &mut g).is_ok()
        );
        // Another content (another CID) is not what was signed.
        let other = body_digest(b"other");
        let sig = sign_request_digest(&k, "PUT", path, digest, 1000, [4; 16]);
        assert_eq!(
            verify_request_digest(&sig, "PUT", path, &other, lookup(&k), 1000, &mut g),
            Err(RequestError::DigestMismatch)
        );
    }

    #[test]
    fn stale_and_future_dates_are_refused() {
        let k = key();
        let mut g = ReplayGuard::new();
        let sig = sign_request(&k, "GET", PATH, b"", 1000, [1; 16]);
        assert_eq!(
            verify_request(
                &sig,
                "GET",
                PATH,
                b"",
                lookup(&k),
                1000 + CLOCK_SKEW_SECS + 1,
                &mut g
            ),
            Err(RequestError::StaleDate {
                date: 1000,
                now: 1061
            })
        );
        assert!(matches!(
            verify_request(
                &sig,
                "GET",
                PATH,
                b"",
                lookup(&k),
                1000 - CLOCK_SKEW_SECS - 1,
                &mut g
            ),
            Err(RequestError::StaleDate { .. })
        ));
        assert!(
            verify_request(
                &sig,
                "GET",
                PATH,
                b"",
                lookup(&k),
                1000 + CLOCK_SKEW_SECS,
                &mut g
            )
            .is_ok()
        );
    }

    #[test]
    fn the_guard_forgets_what_left_the_window_and_is_bounded() {
        let node = NodeId::from_bytes([1; 10]);
        let mut g = ReplayGuard::new();
        g.admit(node, [1; 16], 1000, 1000).unwrap();
        assert!(g.admit(node, [1; 16], 1000, 1060).is_err());
        // At 1061 a request dated 1000 is stale: its nonce is forgotten.
        g.admit(node, [2; 16], 1061, 1061).unwrap();
        assert_eq!(g.len(), 1);
        let mut g = ReplayGuard::new();
        for i in 0..MAX_REMEMBERED_NONCES as u32 {
            let mut nonce = [0u8; 16];
            nonce[..4].copy_from_slice(&i.to_be_bytes());
            g.admit(node, nonce, 5000, 5000).unwrap();
        }
        assert_eq!(
            g.admit(node, [0xff; 16], 5000, 5000),
            Err(RequestError::GuardFull)
        );
        // Once they age out there is room again.
        g.admit(node, [0xff; 16], 5061, 5061).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn malformed_headers_are_named() {
        let k = key();
        let sig = sign_request(&k, "GET", PATH, b"", 1000, [1; 16]);
        let mut g = ReplayGuard::new();
        for (field, header) in [
            (0, HEADER_NODE),
            (1, HEADER_DATE),
            (2, HEADER_NONCE),
            (3, HEADER_DIGEST),
            (4, HEADER_SIGNATURE),
        ] {
            let mut s = sig.clone();
            let v = match field {
                0 => &mut s.node,
                1 => &mut s.date,
                2 => &mut s.nonce,
                3 => &mut s.digest,
                _ => &mut s.signature,
            };
            *v = "zz".into();
            let err = verify_request(&s, "GET", PATH, b"", lookup(&k), 1000, &mut g).unwrap_err();
            assert!(
                matches!(err, RequestError::BadHeader { header: h, .. } if h == header),
                "{err}"
            );
            assert!(
                err.to_string().starts_with(&format!("header {header}")),
                "{err}"
            );
        }
        let headers = sig.headers();
        let back = RequestSignature::from_headers(|n| {
            headers.iter().find(|(h, _)| *h == n).map(|(_, v)| *v)
        });
        assert_eq!(back.as_ref(), Some(&sig));
        assert_eq!(RequestSignature::from_headers(|_| None), None);
    }

    proptest! {
        // Signing and verifying are slow in unoptimised builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn sign_then_verify_round_trips(
            method in "(GET|POST|PUT|DELETE|PATCH)",
            path in "/[ -~]{0,100}",
            body in proptest::collection::vec(any::<u8>(), 0..256),
            date in 0u64..1 << 40,
            nonce in proptest::array::uniform16(any::<u8>()),
        ) {
            let k = key();
            let sig = sign_request(&k, &method, &path, &body, date, nonce);
            let mut g = ReplayGuard::new();
            prop_assert!(verify_request(&sig, &method, &path, &body, lookup(&k), date, &mut g).is_ok());
        }

        #[test]
        fn arbitrary_headers_never_panic(
            node in ".{0,30}", date in ".{0,30}", nonce in ".{0,40}", digest in ".{0,70}", signature in ".{0,130}",
        ) {
            let sig = RequestSignature { node, date, nonce, digest, signature };
            let mut g = ReplayGuard::new();
            let k = key();
            prop_assert!(verify_request(&sig, "GET", "/", b"", lookup(&k), 1000, &mut g).is_err());
        }
    }
}

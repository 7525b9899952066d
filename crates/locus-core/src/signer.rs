//! The handle a service signs its node-to-node requests with.
//!
//! A service that calls another node (a handover, an import, a span
//! fetch, a pushed copy) holds an `Arc<dyn RequestSigner>` the agent built
//! from the node key; it never sees the key, the clock or the randomness
//! the signature needs. The receiving node checks the headers
//! (`locus-access::request`).

use std::sync::Arc;

/// Signs requests as this node.
pub trait RequestSigner: Send + Sync {
    /// The headers (name, value) of a request `method path_and_query`
    /// whose body has the BLAKE3 digest `body_digest`. `path_and_query`
    /// is what the request line carries (`/api/v1/…?…`), exactly as sent.
    /// Empty when no signature can be made (no randomness): the call then
    /// goes unsigned and the receiver refuses it.
    fn sign_digest(
        &self,
        method: &str,
        path_and_query: &str,
        body_digest: [u8; 32],
    ) -> Vec<(&'static str, String)>;

    /// The headers of a request whose body is `body`.
    fn sign(&self, method: &str, path_and_query: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        self.sign_digest(method, path_and_query, *blake3::hash(body).as_bytes())
    }
}

/// A signer shared by the tasks of a service.
pub type Signer = Arc<dyn RequestSigner>;

/// Signs nothing: for tests and tools whose services never call another
/// node. A node-only route refuses its calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unsigned;

impl RequestSigner for Unsigned {
    fn sign_digest(&self, _: &str, _: &str, _: [u8; 32]) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// What this node makes of a peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVerdict {
    /// It chains to an org this node's org admitted, is valid now and is
    /// not revoked: work may go to it.
    Trusted,
    /// It published no certificate yet (it may arrive after its other
    /// records): no new work goes to it, but it is not refused either.
    Unknown,
    /// Its certificate is bad, revoked, or of an org never admitted.
    Refused,
}

/// What this node makes of a peer. A service that chooses where work goes
/// (placement, failover) asks it, and never sees a certificate.
pub trait PeerTrust: Send + Sync {
    fn verdict(&self, node: crate::NodeId) -> PeerVerdict;
}

/// Trusts every node: for tests and tools that run no access control.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustAll;

impl PeerTrust for TrustAll {
    fn verdict(&self, _: crate::NodeId) -> PeerVerdict {
        PeerVerdict::Trusted
    }
}

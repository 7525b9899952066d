//! # locus-core
//!
//! The vocabulary of locus as plain data: node identity, configuration,
//! host inventory, artifact names, workloads and their lifecycle, things, and the rules that make each of them valid.
//!
//! This crate owns the *meaning* of things. It must never do I/O, spawn
//! tasks or depend on a runtime: every function here is a pure function of
//! its arguments, so the rules can be tested in isolation and shared by the
//! agent, the API and the CLI without dragging the world along.

pub mod artifact;
pub mod cluster;
pub mod config;
pub mod identity;
pub mod inventory;
pub mod node;
pub mod signer;
pub mod thing;
pub mod workload;

pub use artifact::ArtifactId;
pub use config::{Config, ConfigError};
pub use identity::NodeId;
pub use node::{Health, HealthStatus, NodeStatus};
pub use signer::{PeerTrust, PeerVerdict, RequestSigner, Signer, TrustAll};
pub use thing::{Thing, ThingSpec};
pub use workload::{Kind, State, Workload, WorkloadId, WorkloadSpec};

/// The version of locus, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Lowercase hex of `bytes` (keys, hashes and roots are shown this way).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encode `s` for a URL query value or path segment: RFC 3986's
/// unreserved characters stay, every other byte becomes `%XX`.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

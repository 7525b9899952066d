//! # locus-access
//!
//! The pure core of access control: who may do what, decided by any node
//! offline from signed data.
//!
//! This crate owns:
//! - orgs and their ids ([`org`]), node certificates signed by an org key
//!   ([`cert`]), and the append-only signed log of admitted orgs
//!   ([`orglog`]).
//!
//! It must never do I/O, read a clock or draw randomness: the time "now"
//! is always an argument, and so are random bytes. Nothing here panics on
//! bytes from outside (certificates, log entries): every decoder answers an error that says what is
//! wrong, and every collection that input can grow has a named bound.

pub mod cert;
mod encoding;
pub mod org;
pub mod orglog;

pub use cert::{CertError, NodeCertificate, NodeRole, SignedNodeCertificate};
pub use org::OrgId;
pub use orglog::{OrgEntry, OrgLog, OrgLogError, OrgSet, SignedOrgEntry};

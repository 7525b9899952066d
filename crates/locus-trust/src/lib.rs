//! # locus-trust
//!
//! What a running node trusts and what it proves, with the I/O that
//! `locus-access` must not do.
//!
//! Owns: the key files in the data dir (`node.key`, `org.key`,
//! [`identity`]), the node's credentials and how they are founded or
//! enrolled (`node.cert`, `org.log`, `admin.token`, `cluster.key`, `seeds`,
//! `join-uses`; [`credentials`]), the node's [`access::Access`]: its trust
//! kept current from the fabric's certificate, revocation, grant and org
//! log records, and the acts that need its keys (minting tokens, signing
//! revocations, join tokens, enrollment, admissions and grants), and the
//! [`audit`] log of mutating calls, sealed with the readings, and the
//! node's TLS identity ([`tls`]: a certificate of the node key carrying
//! its node certificate).
//!
//! Must never: decide an authorization itself (that is
//! `locus_access::Trust`, a pure function of what it holds), serve HTTP,
//! replace a key or credential file it cannot read, or write a secret
//! with a mode other than 0600.

pub mod access;
pub mod audit;
pub mod credentials;
pub mod identity;
pub mod tls;

pub use identity::IdentityError;

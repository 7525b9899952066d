//! # locus-access
//!
//! The pure core of access control: who may do what, decided by any node
//! offline from signed data.
//!
//! This crate owns:
//! - orgs and their ids ([`org`]), node certificates signed by an org key
//!   ([`cert`]), and the append-only signed log of admitted orgs
//!   ([`orglog`]);
//! - tenants, users, roles, grants and quotas as data, with the checks of
//!   a workload's needs against its grant and of a request against its
//!   quota ([`tenant`]);
//! - the catalogue of operations, one stable dotted name per API route, and
//!   which role may perform which ([`operation`]);
//! - Biscuit tokens: minting by an issuing node, attenuation by the holder,
//!   and authorization of a request with a Datalog policy built from it
//!   ([`token`]);
//! - signed revocations of tokens, users and node certificates, and the
//!   bounded set of those in force ([`revocation`]);
//! - the directory of tenants and users, each a record signed by its
//!   org's key ([`directory`]);
//! - grants: an org lets a tenant of another org use its nodes
//!   ([`grant`]);
//! - join tokens, signed by an org key, with which a new machine enrolls
//!   ([`join`]);
//! - what one node trusts ([`trust`]): which peers chain to an admitted
//!   org, which may issue tokens, which revocations are in force;
//! - pins: a client trusts a node's TLS certificate by the node key or
//!   by the org key that certified it, with no certificate authority
//!   ([`pin`]);
//! - signatures of node-to-node requests and the replay guard that checks
//!   them ([`request`]).
//!
//! It must never do I/O, read a clock or draw randomness: the time "now"
//! is always an argument, and so are random bytes (nonces, the key of an
//! attenuation block). Nothing here panics on bytes from outside (tokens,
//! records, headers): every decoder answers an error that says what is
//! wrong, and every collection that input can grow has a named bound.

pub mod cert;
pub mod directory;
pub mod encoding;
pub mod grant;
pub mod join;
pub mod operation;
pub mod org;
pub mod orglog;
pub mod pin;
pub mod request;
pub mod revocation;
pub mod tenant;
pub mod token;
pub mod trust;

pub use cert::{CertError, NodeCertificate, NodeRole, SignedNodeCertificate};
pub use directory::{Directory, DirectoryEntry, DirectoryError, SignedDirectoryEntry, Subject};
pub use join::{
    Admission, EnrollRequest, JoinError, JoinGrant, JoinToken, check_enrollment, enroll_request,
};
pub use operation::{Access, Operation, Scope, role_allows};
pub use org::OrgId;
pub use orglog::{OrgEntry, OrgLog, OrgLogError, OrgSet, SignedOrgEntry};
pub use request::{ReplayGuard, RequestError, RequestSignature, sign_request, verify_request};
pub use revocation::{Revocation, RevocationKind, RevocationSet, Revoker, SignedRevocation};
pub use tenant::{
    Grant, Quota, QuotaError, Role, Tenant, TenantName, TenantRef, Usage, User, UserName,
    WorkloadKind, check_quota,
};
pub use token::{
    Claims, Denied, Inspection, Issuer, Narrowing, Principal, Request, attenuate, authorize,
    inspect, mint,
};
pub use trust::{PeerError, Trust, TrustError, VerifiedPeer};

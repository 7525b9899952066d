//! # locus-iot
//!
//! Things and their readings as pure data, and the integrity of what a node
//! collects:
//!
//! - [`merkle`]: the append-only Merkle log of readings (RFC 6962 hashing),
//!   its roots, inclusion and consistency proofs and their verification,
//!   held whole in memory or, as a node holds it, as block roots whose
//!   leaves are read back when a proof needs them;
//! - [`checkpoint`]: signed checkpoints (tree size + root) in the C2SP
//!   signed-note text format, ed25519;
//! - [`reading`]: a [`Reading`] and its canonical bytes;
//! - [`seal`]: the seal log (each reading numbered into its Merkle leaf),
//!   exported bundles and their offline verifier, which names every
//!   altered, dropped, duplicated or reordered reading;
//! - [`tlv`] and [`lwm2m`]: the OMA LwM2M TLV codec, the bootstrap writes of
//!   the Security and Server objects and the order of a bootstrap's
//!   requests, the CoRE Link Format of Register, the query parameters of
//!   Bootstrap-Request, Register and Update, the registration table with
//!   its expiry, and resource values of Read/Notify/Write payloads (text,
//!   opaque, TLV) as readings;
//! - [`senml`]: SenML JSON (RFC 8428) and locus's simple JSON readings,
//!   resolved into records.
//!
//! This crate owns the *formats and rules*. It must never do I/O, open
//! sockets or files, read a clock, spawn tasks or depend on a runtime: every
//! function is a pure function of its arguments (the time "now" is one of
//! them), and every decoder returns an error naming what is wrong — field,
//! offset, value — and never panics on input bytes. Transports (CoAP, MQTT,
//! HTTP), storage and the CLI live elsewhere and call in.

pub mod checkpoint;
pub mod edgex;
pub mod lwm2m;
pub mod merkle;
pub mod reading;
pub mod seal;
pub mod senml;
pub mod tlv;

pub use checkpoint::Checkpoint;
pub use merkle::{BlockLog, Hash, MerkleLog};
pub use reading::{Reading, Value};
pub use seal::{Bundle, Problem, Report, SealLog, Sealed};

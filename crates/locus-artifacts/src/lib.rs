//! # locus-artifacts
//!
//! Content-addressed artifacts: their bytes on this node's disk, the
//! verified encoding that moves them between nodes, and the service that
//! keeps the node's index, the cluster's holder records and the replicas in
//! step.
//!
//! An artifact is named by the BLAKE3 digest of its bytes
//! ([`locus_core::ArtifactId`]). BLAKE3 is a Merkle tree over 1 KiB chunks;
//! this crate keeps, next to every blob, the interior hashes of that tree
//! down to 16 KiB chunk groups (a bao "outboard", 0.4% of the size). With it
//! a holder can answer a request for any span with the bytes plus the few
//! hashes that prove them, and the receiver checks each 16 KiB group against
//! the CID *as it streams*: a flipped byte is caught at its group, and what
//! was verified before it is kept.
//!
//! What it owns:
//! - [`BlobStore`]: the on-disk layout (`blobs/`, `partial/`, `tmp/`),
//!   atomic ingest (temp file, fsync, rename), span encoding for peers,
//!   and [`Partial`] downloads that survive a crash and resume;
//! - [`range`]: HTTP `Range` parsing and span planning (pure);
//! - [`pipe`]: bounded bridges between async byte streams and the
//!   synchronous encoder and decoder, so memory stays flat whatever the size.
//!
//! - [`service`]: the [`Artifacts`] service — the `artifacts` table of the
//!   store, holder records `art/<cid>` on the fabric, verified fetches from
//!   the nearest holders, replication to K copies, pins and collection.
//!
//! What it must never do: decide *which* node fetches a missing replica
//! (that is `locus-sched`), speak HTTP to clients (that is `locus-api`), or
//! let [`blob`], [`range`] and [`pipe`] reach the network or the store: the
//! service alone moves bytes between them and the world. Every buffer here
//! has a fixed upper size.

pub mod blob;
pub mod metrics;
pub mod pipe;
pub mod range;
pub mod service;
mod table;

pub use blob::{
    ArtifactError, BlobStore, DecodeFailure, GROUP_BYTES, Ingested, Partial, SpanError,
};
pub use metrics::ArtifactMetrics;
pub use range::{RangeError, parse_range, spans};
pub use service::{Artifacts, ArtifactsError, ArtifactsSetup};

/// Bytes a peer is asked for in one request: large enough that the
/// per-request cost vanishes, small enough that a failed span wastes little.
pub const SPAN_BYTES: u64 = 4 << 20;

//! The audit trail: every mutating call, who made it, on what, allowed or
//! refused, sealed into the node's signed Merkle log of readings as a
//! reading of the reserved thing [`AUDIT_THING`] (resource: the
//! operation). The log's checkpoints and proofs cover it like any
//! reading, so an exported bundle of it is checked offline by
//! `locus verify`, and an entry altered, dropped or reordered afterwards
//! is named.
//!
//! Recording never holds up a call: entries go through a queue of at most
//! [`MAX_AUDIT_QUEUE`] to one task that seals them in batches of at most
//! [`MAX_AUDIT_BATCH`] (one fsync per batch); when the queue is full an
//! entry is dropped and counted (`locus_audit_dropped_total`), never
//! waited for.

use std::time::{SystemTime, UNIX_EPOCH};

use locus_iot::{Reading, Value};
use locus_readings::Readings;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The thing whose readings are the audit trail. Names under `locus.`
/// are reserved: no thing may be registered with one.
pub const AUDIT_THING: &str = "locus.audit";
/// The prefix of reserved thing names.
pub const RESERVED_PREFIX: &str = "locus.";
/// Entries waiting to be sealed, at most.
pub const MAX_AUDIT_QUEUE: usize = 4096;
/// Entries sealed in one batch, at most.
pub const MAX_AUDIT_BATCH: usize = 256;
/// Longest path kept in an entry, in bytes.
const MAX_PATH: usize = 512;

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The operation (`workload.create`, …).
    pub operation: String,
    /// Who: `user@tenant` of a token, `node <id>` for a node's call,
    /// `anonymous` without a credential.
    pub who: String,
    /// The caller's org, when known.
    pub org: Option<String>,
    /// The caller's role, when a token was accepted.
    pub role: Option<String>,
    pub method: String,
    /// Path and query, truncated to 512 bytes.
    pub path: String,
    /// `allowed` (the call reached its handler) or `refused` (its
    /// credential did not allow it).
    pub outcome: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// Where the API sends audit entries.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<AuditEntry>,
    dropped: prometheus::IntCounter,
}

impl Auditor {
    /// Record `entry`; drops it (counted) when the queue is full.
    pub fn record(&self, mut entry: AuditEntry) {
        if entry.path.len() > MAX_PATH {
            let mut end = MAX_PATH;
            while !entry.path.is_char_boundary(end) {
                end -= 1;
            }
            entry.path.truncate(end);
        }
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The reading that seals `entry`.
pub fn reading_of(entry: &AuditEntry, time_ms: i64) -> Option<Reading> {
    let body = serde_json::to_string(entry).ok()?;
    Reading::new(
        AUDIT_THING,
        entry.operation.as_str(),
        Value::String(body),
        None,
        time_ms,
    )
    .ok()
}

/// Start the task that seals audit entries into `readings`.
pub fn start(readings: Readings, dropped: prometheus::IntCounter) -> (Auditor, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<AuditEntry>(MAX_AUDIT_QUEUE);
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_AUDIT_BATCH);
        while rx.recv_many(&mut batch, MAX_AUDIT_BATCH).await > 0 {
            let now = now_ms();
            let readings_batch: Vec<Reading> = batch
                .drain(..)
                .filter_map(|e| reading_of(&e, now))
                .collect();
            if let Err(e) = readings.ingest(readings_batch).await {
                tracing::warn!(error = %e, "cannot seal audit entries");
            }
        }
    });
    (Auditor { tx, dropped }, task)
}

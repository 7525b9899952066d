//! # locus-runtime
//!
//! Drivers: the code that turns a [`Run`] (a workload spec, its epoch and
//! its directory on the node) into something running — a Wasm instance, a
//! child process, a container — and reports what became of it.
//!
//! Owns: the [`Driver`] trait, each driver, and the bounded log files of a
//! workload (`<dir>/log`, rotated to `<dir>/log.1`).
//!
//! Must never: decide *whether* or *where* something runs (that is the
//! agent's reconcile loop and `locus-sched`), touch the store or the
//! fabric, or let a workload's output grow the disk without bound.

pub mod container;
pub mod logs;
pub mod process;
#[cfg(feature = "wasm")]
pub mod wasm;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use locus_core::workload::{Kind, WorkloadId, WorkloadSpec};
use serde::{Deserialize, Serialize};

pub use logs::{LOG_FILE, LogFile, read_log};

/// Everything a driver needs to start a workload.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: WorkloadId,
    /// The workload's epoch (containers carry it as a label).
    pub epoch: u64,
    pub spec: WorkloadSpec,
    /// The workload's own directory on the node (created by the caller):
    /// logs go to `dir/log`, and `dir/files` is its writable data.
    pub dir: PathBuf,
    /// Most bytes of log kept on disk (current file plus one rotated).
    pub log_limit_bytes: u64,
}

impl Run {
    /// The writable directory offered to the workload.
    pub fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }
}

/// A started workload, as a driver can find it again. Serialisable so the
/// agent can store it and hand it back after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: WorkloadId,
    pub epoch: u64,
    pub kind: Kind,
    /// Driver-specific handle: `pid:starttime`, a container id, a task id.
    pub handle: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code, when the run ended with one.
    pub code: Option<i32>,
    /// Whether the end counts as a failure (non-zero exit, trap, signal,
    /// limit exceeded).
    pub failed: bool,
    /// What happened, in words: `exited with code 0`, `memory limit of 16
    /// MiB exceeded`, `killed by SIGKILL`…
    pub reason: String,
}

/// What a driver sees of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Running,
    Exited(Exit),
    /// The driver holds nothing for this instance (e.g. an in-process Wasm
    /// instance lost with a previous agent run).
    Gone,
}

/// What an instance measurably uses, as its driver reads it (see each
/// driver's [`Driver::usage`] for exactly what it counts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time (user + system) used since the instance started, in
    /// seconds: cumulative, so a rate is the difference of two readings
    /// over the time between them.
    pub cpu_seconds: f64,
    /// Memory resident now, in bytes.
    pub memory_bytes: u64,
}

/// Why a driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The runtime is not available on this node (no Docker engine…).
    #[error("the {kind} driver is not available: {reason}")]
    Unavailable { kind: Kind, reason: String },
    /// The source cannot be used (missing file, invalid module, bad image).
    #[error("invalid source {source_ref:?}: {reason}")]
    Source { source_ref: String, reason: String },
    /// The runtime refused or failed.
    #[error("{0}")]
    Runtime(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One kind of runtime. Every call is idempotent where it can be: stopping
/// a stopped instance, or removing a removed one, succeeds.
#[async_trait]
pub trait Driver: Send + Sync {
    /// The workload kind this driver runs.
    fn kind(&self) -> Kind;

    /// Whether the runtime can be used here; the reason when not.
    async fn probe(&self) -> Result<(), DriverError>;

    /// Start a run; returns once the workload is running (or fails to).
    async fn start(&self, run: &Run) -> Result<Instance, DriverError>;

    /// What became of an instance.
    async fn observe(&self, instance: &Instance) -> Observed;

    /// Graceful stop: ask the workload to end, wait up to `timeout`, then
    /// kill it. Returns how it ended.
    async fn stop(&self, instance: &Instance, timeout: Duration) -> Result<Exit, DriverError>;

    /// Kill at once.
    async fn kill(&self, instance: &Instance) -> Result<Exit, DriverError>;

    /// Release what the instance holds (container, task entry). The instance
    /// must have ended.
    async fn remove(&self, instance: &Instance) -> Result<(), DriverError>;

    /// What the instance uses now; `None` when the driver cannot tell (the
    /// instance ended or is unknown, the runtime did not answer in time,
    /// or the driver measures nothing). Bounded in time: a caller may ask
    /// for many instances in a row.
    async fn usage(&self, instance: &Instance) -> Option<Usage> {
        let _ = instance;
        None
    }

    /// Instances this driver finds on the node that a previous agent run may
    /// have left (containers carrying locus labels); drivers that cannot
    /// outlive the agent return an empty list.
    async fn leftovers(&self) -> Result<Vec<Instance>, DriverError>;
}

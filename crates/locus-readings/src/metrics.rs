//! The counters of the readings service, registered in the node's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the readings service counts.
#[derive(Clone)]
pub struct ReadingsMetrics {
    /// Readings sealed and committed.
    pub readings_sealed: IntCounter,
    /// Readings per group commit.
    pub readings_batch: Histogram,
    /// Group commits the store refused (every caller of the batch got an error).
    pub readings_commit_failures: IntCounter,
    /// Reading bodies deleted by retention.
    pub readings_pruned: IntCounter,
    /// Readings sealed but not yet acknowledged by the parent (the outbox).
    pub readings_export_backlog: IntGauge,
    /// Readings the parent acknowledged.
    pub readings_exported: IntCounter,
    /// Export attempts that failed (each is retried).
    pub readings_export_failures: IntCounter,
    /// Readings imported from child nodes, by result (stored, duplicate,
    /// conflicting).
    pub readings_imported: IntCounterVec,
}

impl ReadingsMetrics {
    /// Create the metrics and register them in `registry`. Fails only on a
    /// programming error (two metrics with one name).
    pub fn register(registry: &Registry) -> Result<ReadingsMetrics, prometheus::Error> {
        fn reg<M: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            m: M,
        ) -> Result<M, prometheus::Error> {
            registry.register(Box::new(m.clone()))?;
            Ok(m)
        }
        Ok(ReadingsMetrics {
            readings_sealed: reg(
                registry,
                IntCounter::new(
                    "locus_readings_sealed_total",
                    "Readings sealed into the log and committed to the store.",
                )?,
            )?,
            readings_batch: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "locus_readings_batch_size",
                        "Readings committed per group commit (one SQLite transaction).",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
                )?,
            )?,
            readings_commit_failures: reg(
                registry,
                IntCounter::new(
                    "locus_readings_commit_failures_total",
                    "Group commits the store refused; every caller of the batch got an error.",
                )?,
            )?,
            readings_pruned: reg(
                registry,
                IntCounter::new(
                    "locus_readings_pruned_total",
                    "Reading bodies deleted by retention (their seal leaves stay).",
                )?,
            )?,
            readings_export_backlog: reg(
                registry,
                IntGauge::new(
                    "locus_readings_export_backlog",
                    "Readings sealed but not yet acknowledged by the parent node (the outbox).",
                )?,
            )?,
            readings_exported: reg(
                registry,
                IntCounter::new(
                    "locus_readings_exported_total",
                    "Readings the parent node acknowledged.",
                )?,
            )?,
            readings_export_failures: reg(
                registry,
                IntCounter::new(
                    "locus_readings_export_failures_total",
                    "Export requests that failed; each is retried with backoff.",
                )?,
            )?,
            readings_imported: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "locus_readings_imported_total",
                        "Readings imported from child nodes, by result.",
                    ),
                    &["result"],
                )?,
            )?,
        })
    }
}

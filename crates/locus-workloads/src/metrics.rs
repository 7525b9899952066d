//! The counters of the workloads service, registered in the node's registry.

use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};

/// What the workloads service counts.
#[derive(Clone)]
pub struct WorkloadMetrics {
    /// Owned workloads by state.
    pub workloads: IntGaugeVec,
    /// Workloads adopted from gone nodes.
    pub workload_adoptions: IntCounter,
    /// Stale copies stopped because a newer epoch exists.
    pub workload_yields: IntCounter,
}

impl WorkloadMetrics {
    /// Create the metrics and register them in `registry`. Fails only on a
    /// programming error (two metrics with one name).
    pub fn register(registry: &Registry) -> Result<WorkloadMetrics, prometheus::Error> {
        let workloads = IntGaugeVec::new(
            Opts::new("locus_workloads", "Workloads this node owns, by state."),
            &["state"],
        )?;
        registry.register(Box::new(workloads.clone()))?;
        let workload_adoptions = IntCounter::new(
            "locus_workload_adoptions_total",
            "Workloads adopted from nodes that died or left.",
        )?;
        registry.register(Box::new(workload_adoptions.clone()))?;
        let workload_yields = IntCounter::new(
            "locus_workload_yields_total",
            "Copies stopped because another node holds a newer epoch.",
        )?;
        registry.register(Box::new(workload_yields.clone()))?;
        Ok(WorkloadMetrics {
            workloads,
            workload_adoptions,
            workload_yields,
        })
    }
}

//! The counters of the workloads service, registered in the node's registry.

use prometheus::{GaugeVec, IntCounter, IntGaugeVec, Opts, Registry};

/// What the workloads service counts.
#[derive(Clone)]
pub struct WorkloadMetrics {
    /// Owned workloads by state.
    pub workloads: IntGaugeVec,
    /// Workloads adopted from gone nodes.
    pub workload_adoptions: IntCounter,
    /// Stale copies stopped because a newer epoch exists.
    pub workload_yields: IntCounter,
    /// CPU seconds each running workload's instance has used, as its driver
    /// counts them (cumulative), by workload id and name.
    pub workload_cpu_seconds: GaugeVec,
    /// Memory each running workload's instance holds, by workload id and
    /// name.
    pub workload_memory_bytes: IntGaugeVec,
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
        let workload_cpu_seconds = GaugeVec::new(
            Opts::new(
                "locus_workload_cpu_seconds_total",
                "CPU seconds (user + system) the running instance of each workload has used, as \
                 its driver counts them; sampled every 5 s, starts again from 0 with a new \
                 instance.",
            ),
            &["id", "name"],
        )?;
        registry.register(Box::new(workload_cpu_seconds.clone()))?;
        let workload_memory_bytes = IntGaugeVec::new(
            Opts::new(
                "locus_workload_memory_bytes",
                "Memory the running instance of each workload holds, as its driver measures it; \
                 sampled every 5 s.",
            ),
            &["id", "name"],
        )?;
        registry.register(Box::new(workload_memory_bytes.clone()))?;
        Ok(WorkloadMetrics {
            workloads,
            workload_adoptions,
            workload_yields,
            workload_cpu_seconds,
            workload_memory_bytes,
        })
    }

    /// Set the usage gauges of one workload.
    pub(crate) fn set_usage(&self, id: &str, name: &str, usage: &locus_runtime::Usage) {
        self.workload_cpu_seconds
            .with_label_values(&[id, name])
            .set(usage.cpu_seconds);
        self.workload_memory_bytes
            .with_label_values(&[id, name])
            .set(i64::try_from(usage.memory_bytes).unwrap_or(i64::MAX));
    }

    /// Remove the usage gauges of a workload that no longer runs here.
    pub(crate) fn forget_usage(&self, id: &str, name: &str) {
        let _ = self.workload_cpu_seconds.remove_label_values(&[id, name]);
        let _ = self.workload_memory_bytes.remove_label_values(&[id, name]);
    }
}

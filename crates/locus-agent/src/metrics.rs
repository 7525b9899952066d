//! The node's Prometheus registry: build info, process metrics (CPU, RSS,
//! file descriptors, threads), and the counters other parts update.

use std::sync::Arc;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the node exports, registered once at start.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served, by method, route template and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency, by method and route template.
    pub http_duration: HistogramVec,
    /// Node-to-node calls refused, by reason (unsigned, replayed_nonce,
    /// stale_date, unknown_node, bad_signature, busy).
    pub node_calls_refused: IntCounterVec,
    /// User calls refused for their token, by code (no_token, bad_token,
    /// unknown_issuer, forged_token, expired_token, revoked_token,
    /// forbidden).
    pub api_denied: IntCounterVec,
    /// Audit entries dropped because the queue was full.
    pub audit_dropped: IntCounter,
    /// Completed host inventory refreshes.
    pub inventory_refreshes: IntCounter,
    /// Agent uptime, set at each scrape.
    pub uptime_seconds: IntGauge,
    /// Start counter of this data dir.
    pub generation: IntGauge,
    /// The workloads service's counters.
    pub workloads: Arc<locus_workloads::WorkloadMetrics>,
    /// The artifact service's counters.
    pub artifacts: Arc<locus_artifacts::ArtifactMetrics>,
    /// The device doors' counters.
    pub things: Arc<locus_things::ThingMetrics>,
    /// The readings service's counters.
    pub readings: Arc<locus_readings::ReadingsMetrics>,
    fabric_members: IntGaugeVec,
    fabric_counters: IntCounterVec,
    fabric_coordinate_error: prometheus::Gauge,
}

impl Metrics {
    /// Create and register every metric. Fails only on a programming error
    /// (two metrics with one name), which the tests catch.
    pub fn new(version: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("locus_build_info", "Build of the running agent; always 1."),
            &["version", "arch", "os"],
        )?;
        build
            .with_label_values(&[version, std::env::consts::ARCH, std::env::consts::OS])
            .set(1);
        registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let http_requests = IntCounterVec::new(
            Opts::new("locus_http_requests_total", "HTTP requests served."),
            &["method", "route", "status"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "locus_http_request_duration_seconds",
                "HTTP request latency.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
            &["method", "route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let node_calls_refused = IntCounterVec::new(
            Opts::new(
                "locus_node_calls_refused_total",
                "Calls to node-only routes refused before their handler, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(node_calls_refused.clone()))?;
        let api_denied = IntCounterVec::new(
            Opts::new(
                "locus_api_denied_total",
                "User calls refused before their handler for their token, by code.",
            ),
            &["code"],
        )?;
        registry.register(Box::new(api_denied.clone()))?;
        let audit_dropped = IntCounter::new(
            "locus_audit_dropped_total",
            "Audit entries dropped because the audit queue was full.",
        )?;
        registry.register(Box::new(audit_dropped.clone()))?;
        let inventory_refreshes = IntCounter::new(
            "locus_inventory_refreshes_total",
            "Completed host inventory refreshes.",
        )?;
        registry.register(Box::new(inventory_refreshes.clone()))?;
        let uptime_seconds =
            IntGauge::new("locus_uptime_seconds", "Seconds since the agent started.")?;
        registry.register(Box::new(uptime_seconds.clone()))?;
        let generation = IntGauge::new(
            "locus_generation",
            "Start counter of this data dir (grows at each restart).",
        )?;
        registry.register(Box::new(generation.clone()))?;

        let fabric_members = IntGaugeVec::new(
            Opts::new(
                "locus_fabric_members",
                "Known nodes by liveness, as this node sees them.",
            ),
            &["liveness"],
        )?;
        registry.register(Box::new(fabric_members.clone()))?;
        let fabric_counters = IntCounterVec::new(
            Opts::new(
                "locus_fabric_events_total",
                "Gossip traffic and failure-detector work, by event.",
            ),
            &["event"],
        )?;
        registry.register(Box::new(fabric_counters.clone()))?;
        let fabric_coordinate_error = prometheus::Gauge::new(
            "locus_fabric_coordinate_error",
            "Relative error of this node's network coordinate (0 = confident).",
        )?;
        registry.register(Box::new(fabric_coordinate_error.clone()))?;

        let workloads = Arc::new(locus_workloads::WorkloadMetrics::register(&registry)?);

        let artifacts = Arc::new(locus_artifacts::ArtifactMetrics::register(&registry)?);

        let things = Arc::new(locus_things::ThingMetrics::register(&registry)?);

        let readings = Arc::new(locus_readings::ReadingsMetrics::register(&registry)?);

        Ok(Metrics {
            registry,
            things,
            readings,
            artifacts,
            workloads,
            fabric_members,
            fabric_counters,
            fabric_coordinate_error,
            http_requests,
            http_duration,
            node_calls_refused,
            api_denied,
            audit_dropped,
            inventory_refreshes,
            uptime_seconds,
            generation,
        })
    }

    /// Copy the fabric's state into the metrics (called at scrape time).
    pub fn observe_fabric(
        &self,
        snapshot: &locus_fabric::udp::Snapshot,
        counters: &locus_fabric::udp::Counters,
    ) {
        use locus_core::cluster::Liveness;
        use std::sync::atomic::Ordering::Relaxed;
        for liveness in Liveness::ALL {
            let n = snapshot
                .nodes
                .iter()
                .filter(|n| n.liveness == liveness)
                .count();
            self.fabric_members
                .with_label_values(&[liveness.as_str()])
                .set(n as i64);
        }
        let s = &snapshot.stats;
        let values = [
            ("datagrams_in", counters.datagrams_in.load(Relaxed)),
            ("datagrams_out", counters.datagrams_out.load(Relaxed)),
            ("bytes_in", counters.bytes_in.load(Relaxed)),
            ("bytes_out", counters.bytes_out.load(Relaxed)),
            ("send_errors", counters.send_errors.load(Relaxed)),
            (
                "dropped_unauthenticated",
                counters.dropped_unauthenticated.load(Relaxed),
            ),
            (
                "dropped_malformed",
                counters.dropped_malformed.load(Relaxed),
            ),
            ("swim_errors", s.swim_errors),
            ("rtt_samples", s.rtt_samples),
            ("sync_requests_in", s.sync_requests_in),
            ("sync_requests_out", s.sync_requests_out),
            ("records_pulled", s.records_pulled),
            ("rejoins", s.rejoins),
        ];
        for (event, value) in values {
            // The sources are monotonic counters; mirror their totals.
            let c = self.fabric_counters.with_label_values(&[event]);
            c.reset();
            c.inc_by(value);
        }
        if let Some(me) = snapshot.nodes.iter().find(|n| n.is_self)
            && let Some(c) = &me.coordinate
        {
            self.fabric_coordinate_error.set(c.error);
        }
    }

    /// Render every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_build_info_and_process_metrics() {
        let m = Metrics::new("9.9.9").unwrap();
        m.http_requests
            .with_label_values(&["GET", "/healthz", "200"])
            .inc();
        let text = m.render();
        assert!(text.contains("locus_build_info{arch="), "{text}");
        assert!(text.contains("version=\"9.9.9\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(
            text.contains(
                "locus_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
            ),
            "{text}"
        );
    }
}

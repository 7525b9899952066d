//! The node's Prometheus registry: build info, process metrics (CPU, RSS,
//! file descriptors, threads), and the counters other parts update.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the node exports, registered once at start.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served, by method, route template and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency, by method and route template.
    pub http_duration: HistogramVec,
    /// Completed host inventory refreshes.
    pub inventory_refreshes: IntCounter,
    /// Agent uptime, set at each scrape.
    pub uptime_seconds: IntGauge,
    /// Start counter of this data dir.
    pub generation: IntGauge,
    /// Owned workloads by state.
    pub workloads: IntGaugeVec,
    /// Workloads adopted from gone nodes.
    pub workload_adoptions: IntCounter,
    /// Stale copies stopped because a newer epoch exists.
    pub workload_yields: IntCounter,
    /// Artifact bytes received from peers (verified).
    pub artifact_fetched_bytes: IntCounter,
    /// Artifact bytes sent to peers and clients.
    pub artifact_served_bytes: IntCounter,
    /// Chunk groups that failed verification, by the peer that sent them.
    pub artifact_corrupt_chunks: IntCounterVec,
    /// Finished fetches, by result (ok, failed).
    pub artifact_fetches: IntCounterVec,
    /// Artifacts held on this node, and their bytes.
    pub artifacts_held: IntGauge,
    pub artifacts_bytes: IntGauge,
    /// Readings accepted from things, by protocol.
    pub thing_readings: IntCounterVec,
    /// Device input refused as malformed, by protocol and what was wrong.
    pub thing_malformed: IntCounterVec,
    /// MQTT connections refused, by reason.
    pub mqtt_refused: IntCounterVec,
    /// MQTT sessions of things open now.
    pub mqtt_sessions: IntGauge,
    /// CoAP datagrams that could not be parsed or broke the protocol, by
    /// socket (server, bootstrap).
    pub coap_malformed_datagrams: IntCounterVec,
    /// LWM2M payloads (link format, resource values) that could not be
    /// read, by socket.
    pub lwm2m_malformed_payloads: IntCounterVec,
    /// Register requests refused, by reason (invalid, unknown,
    /// not_managed, full).
    pub lwm2m_rejected_registrations: IntCounterVec,
    /// Readings stored from LWM2M notifications and reads.
    pub lwm2m_readings: IntCounter,
    /// Current LWM2M registrations.
    pub lwm2m_registrations: IntGauge,
    /// Finished bootstraps, by result (ok, failed).
    pub lwm2m_bootstraps: IntCounterVec,
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

        let artifact_fetched_bytes = IntCounter::new(
            "locus_artifact_fetched_bytes_total",
            "Artifact bytes received from peers, verified.",
        )?;
        registry.register(Box::new(artifact_fetched_bytes.clone()))?;
        let artifact_served_bytes = IntCounter::new(
            "locus_artifact_served_bytes_total",
            "Artifact bytes sent to peers and clients.",
        )?;
        registry.register(Box::new(artifact_served_bytes.clone()))?;
        let artifact_corrupt_chunks = IntCounterVec::new(
            Opts::new(
                "locus_artifact_corrupt_chunks_total",
                "Chunk groups that failed verification, by sending peer.",
            ),
            &["peer"],
        )?;
        registry.register(Box::new(artifact_corrupt_chunks.clone()))?;
        let artifact_fetches = IntCounterVec::new(
            Opts::new("locus_artifact_fetches_total", "Finished artifact fetches."),
            &["result"],
        )?;
        registry.register(Box::new(artifact_fetches.clone()))?;
        let artifacts_held = IntGauge::new("locus_artifacts", "Artifacts held on this node.")?;
        registry.register(Box::new(artifacts_held.clone()))?;
        let artifacts_bytes = IntGauge::new(
            "locus_artifacts_bytes",
            "Bytes of the artifacts held on this node.",
        )?;
        registry.register(Box::new(artifacts_bytes.clone()))?;

        let thing_readings = IntCounterVec::new(
            Opts::new(
                "locus_thing_readings_total",
                "Readings accepted from things (durable and sealed), by protocol.",
            ),
            &["protocol"],
        )?;
        registry.register(Box::new(thing_readings.clone()))?;
        let thing_malformed = IntCounterVec::new(
            Opts::new(
                "locus_thing_malformed_total",
                "Device input refused as malformed, by protocol and kind.",
            ),
            &["protocol", "kind"],
        )?;
        registry.register(Box::new(thing_malformed.clone()))?;
        let mqtt_refused = IntCounterVec::new(
            Opts::new(
                "locus_mqtt_refused_total",
                "MQTT connections, publishes and subscriptions refused, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(mqtt_refused.clone()))?;
        let mqtt_sessions =
            IntGauge::new("locus_mqtt_sessions", "MQTT sessions of things open now.")?;
        registry.register(Box::new(mqtt_sessions.clone()))?;

        let coap_malformed_datagrams = IntCounterVec::new(
            Opts::new(
                "locus_coap_malformed_datagrams_total",
                "CoAP datagrams dropped as malformed, by socket.",
            ),
            &["socket"],
        )?;
        registry.register(Box::new(coap_malformed_datagrams.clone()))?;
        let lwm2m_malformed_payloads = IntCounterVec::new(
            Opts::new(
                "locus_lwm2m_malformed_payloads_total",
                "LWM2M payloads (link format, resource values) that could not be read, by socket.",
            ),
            &["socket"],
        )?;
        registry.register(Box::new(lwm2m_malformed_payloads.clone()))?;
        let lwm2m_rejected_registrations = IntCounterVec::new(
            Opts::new(
                "locus_lwm2m_rejected_registrations_total",
                "LWM2M Register requests refused, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(lwm2m_rejected_registrations.clone()))?;
        let lwm2m_readings = IntCounter::new(
            "locus_lwm2m_readings_total",
            "Readings stored from LWM2M notifications.",
        )?;
        registry.register(Box::new(lwm2m_readings.clone()))?;
        let lwm2m_registrations = IntGauge::new(
            "locus_lwm2m_registrations",
            "LWM2M clients registered at this node.",
        )?;
        registry.register(Box::new(lwm2m_registrations.clone()))?;
        let lwm2m_bootstraps = IntCounterVec::new(
            Opts::new(
                "locus_lwm2m_bootstraps_total",
                "Finished LWM2M bootstraps, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(lwm2m_bootstraps.clone()))?;

        let readings_sealed = IntCounter::new(
            "locus_readings_sealed_total",
            "Readings sealed into the log and committed to the store.",
        )?;
        registry.register(Box::new(readings_sealed.clone()))?;
        let readings_batch = Histogram::with_opts(
            HistogramOpts::new(
                "locus_readings_batch_size",
                "Readings committed per group commit (one SQLite transaction).",
            )
            .buckets(vec![1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
        )?;
        registry.register(Box::new(readings_batch.clone()))?;
        let readings_commit_failures = IntCounter::new(
            "locus_readings_commit_failures_total",
            "Group commits the store refused; every caller of the batch got an error.",
        )?;
        registry.register(Box::new(readings_commit_failures.clone()))?;
        let readings_pruned = IntCounter::new(
            "locus_readings_pruned_total",
            "Reading bodies deleted by retention (their seal leaves stay).",
        )?;
        registry.register(Box::new(readings_pruned.clone()))?;
        let readings_export_backlog = IntGauge::new(
            "locus_readings_export_backlog",
            "Readings sealed but not yet acknowledged by the parent node (the outbox).",
        )?;
        registry.register(Box::new(readings_export_backlog.clone()))?;
        let readings_exported = IntCounter::new(
            "locus_readings_exported_total",
            "Readings the parent node acknowledged.",
        )?;
        registry.register(Box::new(readings_exported.clone()))?;
        let readings_export_failures = IntCounter::new(
            "locus_readings_export_failures_total",
            "Export requests that failed; each is retried with backoff.",
        )?;
        registry.register(Box::new(readings_export_failures.clone()))?;
        let readings_imported = IntCounterVec::new(
            Opts::new(
                "locus_readings_imported_total",
                "Readings imported from child nodes, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(readings_imported.clone()))?;

        Ok(Metrics {
            registry,
            thing_readings,
            thing_malformed,
            mqtt_refused,
            mqtt_sessions,
            coap_malformed_datagrams,
            lwm2m_malformed_payloads,
            lwm2m_rejected_registrations,
            lwm2m_readings,
            lwm2m_registrations,
            lwm2m_bootstraps,
            readings_sealed,
            readings_batch,
            readings_commit_failures,
            readings_pruned,
            readings_export_backlog,
            readings_exported,
            readings_export_failures,
            readings_imported,
            artifact_fetched_bytes,
            artifact_served_bytes,
            artifact_corrupt_chunks,
            artifact_fetches,
            artifacts_held,
            artifacts_bytes,
            workloads,
            workload_adoptions,
            workload_yields,
            fabric_members,
            fabric_counters,
            fabric_coordinate_error,
            http_requests,
            http_duration,
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

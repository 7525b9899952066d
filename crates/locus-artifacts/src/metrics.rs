//! The counters of the artifact service, registered in the node's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the artifact service counts.
#[derive(Clone)]
pub struct ArtifactMetrics {
    /// Artifact bytes received from peers (verified).
    pub artifact_fetched_bytes: IntCounter,
    /// Artifact bytes sent to peers and clients.
    pub artifact_served_bytes: IntCounter,
    /// Chunk groups that failed verification, by the peer that sent them.
    pub artifact_corrupt_chunks: IntCounterVec,
    /// Finished fetches, by result (ok, failed).
    pub artifact_fetches: IntCounterVec,
    /// Durable puts that pushed copies, by result (ok: every wanted copy
    /// confirmed; short: fewer).
    pub artifact_pushes: IntCounterVec,
    /// Artifact bytes pushed to other nodes by durable puts.
    pub artifact_push_bytes: IntCounter,
    /// Artifacts held on this node, and their bytes.
    pub artifacts_held: IntGauge,
    pub artifacts_bytes: IntGauge,
}

impl ArtifactMetrics {
    /// Create the metrics and register them in `registry`. Fails only on a
    /// programming error (two metrics with one name).
    pub fn register(registry: &Registry) -> Result<ArtifactMetrics, prometheus::Error> {
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
        let artifact_pushes = IntCounterVec::new(
            Opts::new(
                "locus_artifact_pushes_total",
                "Durable puts that pushed copies, by result (ok, short).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(artifact_pushes.clone()))?;
        let artifact_push_bytes = IntCounter::new(
            "locus_artifact_push_bytes_total",
            "Artifact bytes pushed to other nodes by durable puts.",
        )?;
        registry.register(Box::new(artifact_push_bytes.clone()))?;
        let artifacts_held = IntGauge::new("locus_artifacts", "Artifacts held on this node.")?;
        registry.register(Box::new(artifacts_held.clone()))?;
        let artifacts_bytes = IntGauge::new(
            "locus_artifacts_bytes",
            "Bytes of the artifacts held on this node.",
        )?;
        registry.register(Box::new(artifacts_bytes.clone()))?;
        Ok(ArtifactMetrics {
            artifact_fetched_bytes,
            artifact_served_bytes,
            artifact_corrupt_chunks,
            artifact_fetches,
            artifact_pushes,
            artifact_push_bytes,
            artifacts_held,
            artifacts_bytes,
        })
    }
}

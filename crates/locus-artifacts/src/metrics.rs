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
            artifacts_held,
            artifacts_bytes,
        })
    }
}

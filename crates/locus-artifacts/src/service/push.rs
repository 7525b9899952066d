//! Durable puts: the uploader's node pushes a fresh upload to the nodes
//! `locus_sched::replica_fetchers` names (distinct sites first) and answers
//! once `min(K, live nodes)` copies are stored and fsynced, its own first.
//!
//! A push is a `PUT /api/v1/artifacts/{cid}` of the bytes; the receiver
//! hashes them as they arrive, refuses bytes whose CID is not the one
//! named, and answers 201 only after its blob and index row are durable.
//! A target that fails is replaced by the next one the same rule names, at
//! most [`PUSH_ROUNDS`] times; what still lacks a copy is left to the
//! replication pass, and the answer says how many copies exist.

use super::*;

/// Rounds of pushes: a round replaces the targets that failed in the one
/// before.
pub const PUSH_ROUNDS: usize = 3;
/// A push may take this long, plus [`PUSH_PER_MIB`] for each MiB.
const PUSH_BASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed per MiB pushed (a floor of 1 MiB/s).
const PUSH_PER_MIB: Duration = Duration::from_secs(1);

/// How an upload ended: the artifact, and the copies known to be durable.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PutReport {
    #[serde(flatten)]
    pub artifact: ArtifactView,
    /// Nodes that confirmed a stored, fsynced copy before the answer, this
    /// node first.
    #[schema(value_type = Vec<String>)]
    pub copies: Vec<NodeId>,
    /// Copies waited for: `min(replicas, live nodes)`, or 1 when the put
    /// did not wait.
    pub wanted: u32,
    /// Why fewer than `wanted` copies were confirmed (the replication pass
    /// goes on making them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl Artifacts {
    /// Push `id` (held here) to other nodes until `replicas` live nodes
    /// hold a durable copy, or the targets run out. Returns the nodes with a
    /// confirmed copy (this one first), the number wanted, and why targets
    /// failed.
    pub(crate) async fn push_copies(
        &self,
        id: ArtifactId,
        size: u64,
        name: Option<String>,
        replicas: u32,
        tenants: &BTreeSet<String>,
    ) -> (Vec<NodeId>, u32, Vec<String>) {
        let me = self.inner.me;
        let mut nodes = self.cluster().await;
        let live = nodes
            .iter()
            .filter(|n| n.liveness == Liveness::Alive && n.id != me)
            .count()
            + 1;
        let wanted = (replicas as usize).min(live).max(1);
        let mut copies = vec![me];
        let mut failures = Vec::new();
        for _ in 0..PUSH_ROUNDS {
            if copies.len() >= wanted {
                break;
            }
            let holding: BTreeSet<NodeId> = copies.iter().copied().collect();
            let targets = locus_sched::replica_fetchers(id.digest(), wanted, &nodes, &holding);
            if targets.is_empty() {
                break;
            }
            let pushes = targets.iter().map(|t| {
                let api = nodes
                    .iter()
                    .find(|n| n.id == *t)
                    .and_then(|n| n.info.as_ref())
                    .map(|i| i.api_addr.clone());
                let name = name.clone();
                async move {
                    let r = match api {
                        Some(api) => self.push_one(&api, id, size, name, replicas, tenants).await,
                        None => Err("it announces no API address".to_owned()),
                    };
                    (*t, r)
                }
            });
            for (target, result) in futures_util::future::join_all(pushes).await {
                match result {
                    Ok(()) => copies.push(target),
                    Err(e) => {
                        tracing::warn!(artifact = %id, node = %target, error = %e, "a copy push failed");
                        failures.push(format!("node {target}: {e}"));
                        // Not a target again in this put.
                        nodes.retain(|n| n.id != target);
                    }
                }
            }
        }
        let outcome = if copies.len() >= wanted {
            "ok"
        } else {
            "short"
        };
        self.inner
            .metrics
            .artifact_pushes
            .with_label_values(&[outcome])
            .inc();
        (copies, wanted as u32, failures)
    }

    /// Stream this node's copy of `id` to the node at `api`; Ok once it
    /// answered that its copy is durable.
    async fn push_one(
        &self,
        api: &str,
        id: ArtifactId,
        size: u64,
        name: Option<String>,
        replicas: u32,
        tenants: &BTreeSet<String>,
    ) -> Result<(), String> {
        let (file, _) = self.open(&id).await.map_err(|e| e.to_string())?;
        let pushed = self.inner.metrics.artifact_push_bytes.clone();
        let body =
            crate::pipe::file_chunks(tokio::fs::File::from_std(file), move |n| pushed.inc_by(n));
        let mut url = format!("http://{api}/api/v1/artifacts/{id}?replicas={replicas}");
        if let Some(n) = &name {
            url.push_str("&name=");
            url.push_str(&locus_core::url_escape(n));
        }
        if !tenants.is_empty() {
            url.push_str("&tenants=");
            url.push_str(
                &tenants
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let timeout = PUSH_BASE_TIMEOUT + PUSH_PER_MIB * (size >> 20).min(u32::MAX as u64) as u32;
        let req = signed(
            self.inner.signer.as_ref(),
            self.inner.http.put(&url),
            "PUT",
            &url,
            *id.digest(),
        );
        let answer = req
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .timeout(timeout)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| format!("push failed: {e}"))?;
        if answer.status().is_success() {
            return Ok(());
        }
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        Err(format!(
            "answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ))
    }

    /// Store a copy pushed by another node: its bytes must hash to `id`.
    /// Answers once the copy is fsynced and indexed.
    pub async fn receive_copy(
        &self,
        id: ArtifactId,
        input: StreamReader,
        declared: Option<u64>,
        name: Option<String>,
        replicas: u32,
        tenants: BTreeSet<String>,
    ) -> Result<ArtifactView, ArtifactsError> {
        check_name(name.as_deref())?;
        check_replicas(replicas)?;
        super::check_tenants(&tenants)?;
        let _receiving = Receiving::start(self, id);
        if self.inner.blobs.size(&id).is_some() {
            // Held already: read the body to its end, so that the pusher
            // reads the answer rather than a closed connection.
            let mut input = input;
            blocking(move || std::io::copy(&mut input, &mut std::io::sink()))
                .await?
                .map_err(|e| ArtifactsError::Invalid(format!("the pushed body broke off: {e}")))?;
        } else {
            let got = self.ingest(input, declared).await?;
            if got.id != id {
                if got.fresh {
                    let _ = self.inner.blobs.remove(&got.id);
                }
                return Err(ArtifactsError::Mismatch {
                    want: id,
                    got: got.id,
                });
            }
        }
        let now = now_ms();
        let size = self.inner.blobs.size(&id).unwrap_or(0);
        self.inner
            .store
            .put_artifact(StoredArtifact {
                cid: id.to_string(),
                size,
                name,
                pinned: false,
                replicas,
                added_at_ms: now,
                used_at_ms: now,
                tenants,
            })
            .await?;
        self.publish().await;
        tracing::info!(artifact = %id, size, replicas, "copy received");
        self.stat(&id).await
    }
}

impl Artifacts {
    /// Whether a copy of `id` is being pushed to this node.
    pub(crate) fn is_receiving(&self, id: &ArtifactId) -> bool {
        self.inner
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }
}

/// Marks a copy as being received for as long as it lives.
struct Receiving<'a> {
    artifacts: &'a Artifacts,
    id: ArtifactId,
}

impl<'a> Receiving<'a> {
    fn start(artifacts: &'a Artifacts, id: ArtifactId) -> Receiving<'a> {
        artifacts
            .inner
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        Receiving { artifacts, id }
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.artifacts
            .inner
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

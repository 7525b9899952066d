//! The artifacts a node holds, and how they move between nodes.
//!
//! Every artifact lives in three places that this module keeps in step:
//! its bytes in the blob store (`locus-artifacts`, under
//! `<data dir>/artifacts`), its index row in the node's SQLite (name, pin,
//! replica count, last use), and a holder record `art/<cid>` on the fabric,
//! so that every node knows who holds what.
//!
//! Fetching: the holders are ranked nearest first by network coordinates;
//! the missing byte ranges (all of them, or what does not verify in a
//! download that was interrupted) are cut into spans and asked for from up
//! to [`FETCH_PEERS`] holders, [`PARALLEL_SPANS`] at a time. Each span
//! arrives as a bao stream and is verified group by group as it is written;
//! a peer that sends a bad group is dropped for this fetch and the rest of
//! the span goes to another holder. Memory per span is a bounded pipe.
//!
//! Replication: once a second, every node looks at the holder records; an
//! artifact asked to have K copies that has fewer live holders is fetched
//! by the nodes `locus-sched::replica_fetchers` names (the same answer on
//! every node).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pipe::{StreamReader, stream_reader, stream_writer};
use crate::{ArtifactError, BlobStore, DecodeFailure, Partial, SPAN_BYTES, spans};
use bytes::Bytes;
use futures_util::StreamExt;
use locus_core::cluster::{ClusterNode, Liveness};
use locus_core::{ArtifactId, NodeId};
use locus_fabric::udp::FabricHandle;
use locus_store::Store;

use crate::table::{ArtifactTable, StoredArtifact};

mod collect;
mod fetch;
mod holders;
mod push;

pub use push::{PUSH_ROUNDS, PutReport};

use holders::Held;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify, mpsc, watch};
use utoipa::ToSchema;

use crate::metrics::ArtifactMetrics;

/// Period of the replication pass when nothing wakes it.
pub const REPAIR_TICK: Duration = Duration::from_secs(1);
/// Holders one fetch reads from at once.
pub const FETCH_PEERS: usize = 3;
/// Spans in flight per fetch.
pub const PARALLEL_SPANS: usize = 4;
/// Failed span requests a fetch tolerates before it gives up.
pub const MAX_SPAN_FAILURES: u32 = 16;
/// Replication fetches running at once on one node.
pub const MAX_REPAIRS: usize = 2;
/// Holder records a node publishes (the fabric bounds records per node).
pub const MAX_PUBLISHED: usize = 512;
/// Longest name of an artifact.
pub const MAX_NAME: usize = 128;
/// Most copies an artifact can ask for.
pub const MAX_REPLICAS: u32 = 64;
/// A partial download untouched this long is dropped at start.
pub const PARTIAL_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a fetch waits for a holder record to arrive.
const HOLDER_WAIT: Duration = Duration::from_secs(3);
/// A peer that sends nothing for this long is given up on for that span.
const PEER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of a holder record.
pub fn holder_key(id: &ArtifactId) -> String {
    format!("art/{id}")
}

/// What a holder publishes about an artifact it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    pub size: u64,
    /// Copies the cluster keeps (0: no replication asked).
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tenants it belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
}

/// An artifact as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    pub cid: ArtifactId,
    pub size: u64,
    pub name: Option<String>,
    /// Held on the node that answers.
    pub local: bool,
    /// Pinned on the node that answers (never collected there).
    pub pinned: bool,
    /// Copies the cluster keeps (0: none asked).
    pub replicas: u32,
    /// Live nodes that hold a complete copy.
    #[schema(value_type = Vec<String>)]
    pub holders: Vec<NodeId>,
    /// Used by a workload on the node that answers.
    pub in_use: bool,
    pub added_at_ms: Option<u64>,
    pub used_at_ms: Option<u64>,
    /// The tenants it belongs to (its uploaders'), as this node and the
    /// holder records know them.
    pub tenants: Vec<String>,
}

/// How a fetch went.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FetchReport {
    pub cid: ArtifactId,
    pub size: u64,
    /// It was already here; nothing moved.
    pub already_local: bool,
    /// Bytes received and verified in this fetch.
    pub fetched_bytes: u64,
    /// Bytes kept from an earlier, interrupted fetch.
    pub resumed_bytes: u64,
    /// Chunk groups that failed verification (their peer was dropped).
    pub corrupt_chunks: u64,
    pub elapsed_ms: u64,
    /// What each peer sent.
    pub peers: Vec<PeerReport>,
}

/// One peer's part in a fetch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PeerReport {
    #[schema(value_type = String)]
    pub node: NodeId,
    pub bytes: u64,
    /// Dropped for this fetch, and why.
    pub dropped: Option<String>,
}

/// A fetch as it goes: bytes so far, and its end once known.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FetchProgress {
    pub cid: ArtifactId,
    pub size: u64,
    /// Bytes held so far (resumed plus fetched).
    pub have: u64,
    /// Present once the fetch ended.
    pub done: Option<FetchEnd>,
}

/// How a fetch ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FetchEnd {
    Ok(FetchReport),
    Failed {
        /// `no_holder`, `over_budget` or `fetch_failed`.
        code: String,
        message: String,
    },
}

/// What a collection removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub removed: Vec<ArtifactId>,
    /// Downloads abandoned half-way (no fetch running) whose partial files
    /// were dropped; they go before any complete artifact.
    pub discarded_partials: Vec<ArtifactId>,
    pub freed_bytes: u64,
    /// Bytes the store uses after it, and the budget.
    pub used_bytes: u64,
    pub budget_bytes: u64,
}

/// Why an artifact operation failed. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error("artifact {0} is not held on this node")]
    NotHere(ArtifactId),
    #[error("no live node holds artifact {0}")]
    NoHolder(ArtifactId),
    #[error("{0}")]
    Invalid(String),
    #[error("the pushed bytes hash to {got}, not to {want}")]
    Mismatch { want: ArtifactId, got: ArtifactId },
    #[error(
        "artifact needs {need} bytes but the store has {free} of its {budget}-byte budget free even after collecting"
    )]
    Budget { need: u64, free: u64, budget: u64 },
    #[error("fetching {id} failed: {reason}")]
    Transfer { id: ArtifactId, reason: String },
    #[error(transparent)]
    Blob(#[from] ArtifactError),
    #[error(transparent)]
    Store(#[from] locus_store::StoreError),
}

/// Everything [`Artifacts::start`] needs.
pub struct ArtifactsSetup {
    pub me: NodeId,
    pub data_dir: std::path::PathBuf,
    pub store: Store,
    pub fabric: FabricHandle,
    pub metrics: Arc<ArtifactMetrics>,
    pub budget_bytes: u64,
    /// Signs the node-to-node calls (span fetches, pushed copies) as this
    /// node.
    pub signer: locus_core::Signer,
}

struct Inner {
    me: NodeId,
    blobs: BlobStore,
    store: Store,
    fabric: FabricHandle,
    metrics: Arc<ArtifactMetrics>,
    budget: u64,
    http: reqwest::Client,
    signer: locus_core::Signer,
    /// Fetches under way: later callers wait on the first.
    fetches: Mutex<HashMap<ArtifactId, watch::Receiver<FetchProgress>>>,
    /// Artifacts the workloads of this node use (never collected).
    in_use: std::sync::Mutex<BTreeSet<ArtifactId>>,
    /// Holder records published: what is there now.
    published: Mutex<BTreeMap<ArtifactId, HolderRecord>>,
    /// Copies being pushed to this node: the replication pass leaves them
    /// alone.
    receiving: std::sync::Mutex<BTreeSet<ArtifactId>>,
    wake: Notify,
}

/// The artifacts of this node. Cheap to clone.
#[derive(Clone)]
pub struct Artifacts {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ArtifactsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArtifactsError::Invalid(format!("a blocking task failed: {e}")))
}

impl Artifacts {
    /// Open the blob store, bring the index in line with the files, publish
    /// what is held and start the replication loop.
    pub async fn start(
        setup: ArtifactsSetup,
    ) -> Result<(Artifacts, tokio::task::JoinHandle<()>), ArtifactsError> {
        let root = setup.data_dir.join("artifacts");
        let blobs = blocking(move || BlobStore::open(&root)).await??;
        let inner = Arc::new(Inner {
            me: setup.me,
            blobs,
            store: setup.store,
            fabric: setup.fabric,
            metrics: setup.metrics,
            budget: setup.budget_bytes,
            signer: setup.signer,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .read_timeout(PEER_READ_TIMEOUT)
                .build()
                .unwrap_or_default(),
            fetches: Mutex::new(HashMap::new()),
            in_use: std::sync::Mutex::new(BTreeSet::new()),
            published: Mutex::new(BTreeMap::new()),
            receiving: std::sync::Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
        });
        let a = Artifacts { inner };
        a.reindex().await?;
        a.expire_partials(PARTIAL_RETENTION);
        a.publish().await;
        let task = tokio::spawn(a.clone().run());
        Ok((a, task))
    }

    /// Files are the truth: drop index rows whose blob is gone, index
    /// blobs that have no row (a crash between rename and insert).
    async fn reindex(&self) -> Result<(), ArtifactsError> {
        let blobs = self.inner.blobs.clone();
        let files: BTreeMap<ArtifactId, u64> =
            blocking(move || blobs.list()).await??.into_iter().collect();
        let rows = self.inner.store.artifacts().await?;
        let indexed: BTreeSet<String> = rows.iter().map(|r| r.cid.clone()).collect();
        for r in &rows {
            let known = r
                .cid
                .parse::<ArtifactId>()
                .ok()
                .filter(|id| files.contains_key(id));
            if known.is_none() {
                self.inner.store.delete_artifact(r.cid.clone()).await?;
            }
        }
        let now = now_ms();
        for (id, size) in &files {
            if !indexed.contains(&id.to_string()) {
                self.inner
                    .store
                    .put_artifact(StoredArtifact {
                        cid: id.to_string(),
                        size: *size,
                        name: None,
                        pinned: false,
                        replicas: 0,
                        added_at_ms: now,
                        used_at_ms: now,
                        tenants: BTreeSet::new(),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Drop partial downloads untouched for longer than `age`.
    fn expire_partials(&self, age: Duration) {
        let Ok(ids) = self.inner.blobs.partials() else {
            return;
        };
        for id in ids {
            if self.inner.blobs.partial_age(&id).is_some_and(|a| a > age) {
                tracing::info!(artifact = %id, "partial download expired");
                self.inner.blobs.discard(&id);
            }
        }
    }

    /// Tell the store which artifacts this node's workloads use.
    pub fn set_in_use(&self, ids: BTreeSet<ArtifactId>) {
        if let Ok(mut u) = self.inner.in_use.lock() {
            *u = ids;
        }
    }

    fn is_in_use(&self, id: &ArtifactId) -> bool {
        self.inner
            .in_use
            .lock()
            .map(|u| u.contains(id))
            .unwrap_or(false)
    }

    /// Path of a held artifact's bytes.
    pub fn path(&self, id: &ArtifactId) -> std::path::PathBuf {
        self.inner.blobs.path(id)
    }

    /// Bytes the store uses, and its budget.
    pub fn usage(&self) -> (u64, u64) {
        (self.inner.blobs.disk_usage(), self.inner.budget)
    }

    /// Store an upload read from `input`. The uploader's copy is pinned.
    /// With `wait`, the answer comes once `min(replicas, live nodes)`
    /// copies are durable (see `push`); without, once this node's is, and
    /// the replication pass makes the others.
    pub async fn put(
        &self,
        input: StreamReader,
        declared: Option<u64>,
        name: Option<String>,
        replicas: u32,
        wait: bool,
        tenant: Option<String>,
    ) -> Result<PutReport, ArtifactsError> {
        check_name(name.as_deref())?;
        check_replicas(replicas)?;
        let tenants: BTreeSet<String> = tenant.into_iter().collect();
        check_tenants(&tenants)?;
        let got = self.ingest(input, declared).await?;
        let pushing = wait && replicas > 1;
        let row = |replicas| {
            let now = now_ms();
            StoredArtifact {
                cid: got.id.to_string(),
                size: got.size,
                name: name.clone(),
                pinned: true,
                replicas,
                added_at_ms: now,
                used_at_ms: now,
                tenants: tenants.clone(),
            }
        };
        // While it pushes, the uploader announces no replica count, so that
        // the replication pass of the targets does not fetch what is being
        // pushed to them.
        self.inner
            .store
            .put_artifact(row(if pushing { 0 } else { replicas }))
            .await?;
        self.publish().await;
        tracing::info!(artifact = %got.id, size = got.size, replicas, "artifact stored");
        let (copies, wanted, failures) = if pushing {
            let pushed = self
                .push_copies(got.id, got.size, name.clone(), replicas, &tenants)
                .await;
            self.inner.store.put_artifact(row(replicas)).await?;
            self.publish().await;
            pushed
        } else {
            (vec![self.inner.me], 1, Vec::new())
        };
        self.inner.wake.notify_one();
        Ok(PutReport {
            artifact: self.stat(&got.id).await?,
            copies,
            wanted,
            failures,
        })
    }

    /// Make room for and store bytes read from `input`, fsynced.
    async fn ingest(
        &self,
        input: StreamReader,
        declared: Option<u64>,
    ) -> Result<crate::Ingested, ArtifactsError> {
        if let Some(n) = declared {
            self.make_room(n).await?;
        }
        let blobs = self.inner.blobs.clone();
        let got = blocking(move || blobs.ingest(input, declared, &mut |_| {})).await??;
        if declared.is_none() {
            // Now that the size is known, it must fit too.
            if let Err(e) = self.make_room(0).await {
                if got.fresh {
                    let _ = self.inner.blobs.remove(&got.id);
                }
                return Err(e);
            }
        }
        Ok(got)
    }

    /// Every artifact held here, least recently used first.
    pub async fn list(&self) -> Result<Vec<ArtifactView>, ArtifactsError> {
        let holders = self.holders().await;
        let rows = self.inner.store.artifacts().await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id: ArtifactId = r.cid.parse().ok()?;
                Some(self.view_of(id, Some(&r), &holders))
            })
            .collect())
    }

    /// Every artifact this node holds or a live node announces.
    pub async fn known(&self) -> Result<Vec<ArtifactView>, ArtifactsError> {
        let holders = self.holders().await;
        let rows = self.inner.store.artifacts().await?;
        let mut out: Vec<ArtifactView> = rows
            .iter()
            .filter_map(|r| {
                let id: ArtifactId = r.cid.parse().ok()?;
                Some(self.view_of(id, Some(r), &holders))
            })
            .collect();
        let here: BTreeSet<ArtifactId> = out.iter().map(|v| v.cid).collect();
        for id in holders.keys().filter(|id| !here.contains(id)) {
            out.push(self.view_of(*id, None, &holders));
        }
        Ok(out)
    }

    /// One artifact: from the index if held here, else from the holder
    /// records of the cluster.
    pub async fn stat(&self, id: &ArtifactId) -> Result<ArtifactView, ArtifactsError> {
        let holders = self.holders().await;
        let rows = self.inner.store.artifacts().await?;
        let row = rows.iter().find(|r| r.cid == id.to_string());
        if row.is_none() && !holders.contains_key(id) {
            return Err(ArtifactsError::NoHolder(*id));
        }
        Ok(self.view_of(*id, row, &holders))
    }

    fn view_of(
        &self,
        id: ArtifactId,
        row: Option<&StoredArtifact>,
        holders: &BTreeMap<ArtifactId, Held>,
    ) -> ArtifactView {
        let held = holders.get(&id);
        let mut list: Vec<NodeId> = held
            .map(|h| h.nodes.keys().copied().collect())
            .unwrap_or_default();
        if row.is_some() && !list.contains(&self.inner.me) {
            list.push(self.inner.me);
            list.sort();
        }
        ArtifactView {
            cid: id,
            size: row.map(|r| r.size).or(held.map(|h| h.size)).unwrap_or(0),
            name: row
                .and_then(|r| r.name.clone())
                .or_else(|| held.and_then(|h| h.name.clone())),
            local: row.is_some(),
            pinned: row.is_some_and(|r| r.pinned),
            replicas: row
                .map(|r| r.replicas)
                .unwrap_or(0)
                .max(held.map(|h| h.replicas).unwrap_or(0)),
            holders: list,
            in_use: self.is_in_use(&id),
            added_at_ms: row.map(|r| r.added_at_ms),
            used_at_ms: row.map(|r| r.used_at_ms),
            tenants: row
                .map(|r| r.tenants.clone())
                .unwrap_or_default()
                .into_iter()
                .chain(held.map(|h| h.tenants.clone()).unwrap_or_default())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }

    /// Pin or unpin a held artifact.
    pub async fn set_pinned(
        &self,
        id: &ArtifactId,
        pinned: bool,
    ) -> Result<ArtifactView, ArtifactsError> {
        if !self
            .inner
            .store
            .set_artifact_pinned(id.to_string(), pinned)
            .await?
        {
            return Err(ArtifactsError::NotHere(*id));
        }
        self.stat(id).await
    }

    /// Open a held artifact for reading; counts as a use.
    pub async fn open(&self, id: &ArtifactId) -> Result<(std::fs::File, u64), ArtifactsError> {
        let blobs = self.inner.blobs.clone();
        let id2 = *id;
        let opened = blocking(move || blobs.open_blob(&id2)).await?;
        let (f, size) = opened.map_err(|e| match e {
            ArtifactError::NotFound(id) => ArtifactsError::NotHere(id),
            e => e.into(),
        })?;
        let _ = self
            .inner
            .store
            .touch_artifact(id.to_string(), now_ms())
            .await;
        Ok((f, size))
    }

    /// Stream `range` of a held artifact's bytes.
    pub async fn read(
        &self,
        id: &ArtifactId,
        range: Range<u64>,
    ) -> Result<mpsc::Receiver<io::Result<Bytes>>, ArtifactsError> {
        let (file, _) = self.open(id).await?;
        let (mut w, rx) = stream_writer();
        let metrics = self.inner.metrics.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; 64 * 1024];
            let mut at = range.start;
            while at < range.end {
                let n = ((range.end - at) as usize).min(buf.len());
                if let Err(e) = file.read_exact_at(&mut buf[..n], at) {
                    w.fail(e);
                    return;
                }
                if w.write_all(&buf[..n]).is_err() {
                    return;
                }
                metrics.artifact_served_bytes.inc_by(n as u64);
                at += n as u64;
            }
            let _ = w.finish();
        });
        Ok(rx)
    }

    /// Stream the verified (bao) encoding of `span` of a held artifact, as
    /// peers ask for it.
    pub async fn encode(
        &self,
        id: &ArtifactId,
        span: Range<u64>,
    ) -> Result<mpsc::Receiver<io::Result<Bytes>>, ArtifactsError> {
        // A fetch asks for many spans: look at the file's size only, and
        // count the use once, on the span that starts the artifact.
        let size = self
            .inner
            .blobs
            .size(id)
            .ok_or(ArtifactsError::NotHere(*id))?;
        if span.start == 0 {
            let _ = self
                .inner
                .store
                .touch_artifact(id.to_string(), now_ms())
                .await;
        }
        if span.start >= span.end || span.end > size {
            return Err(ArtifactsError::Invalid(format!(
                "span {}..{} is not inside the {size}-byte artifact",
                span.start, span.end
            )));
        }
        if !span.start.is_multiple_of(crate::GROUP_BYTES) {
            return Err(ArtifactsError::Invalid(format!(
                "span start {} is not a multiple of {}",
                span.start,
                crate::GROUP_BYTES
            )));
        }
        let (w, rx) = stream_writer();
        let blobs = self.inner.blobs.clone();
        let metrics = self.inner.metrics.clone();
        let id = *id;
        let len = span.end - span.start;
        tokio::task::spawn_blocking(move || {
            let mut w = w;
            match blobs.encode(&id, span, &mut w) {
                Ok(()) => {
                    metrics.artifact_served_bytes.inc_by(len);
                    let _ = w.finish();
                }
                Err(e) => w.fail(io::Error::other(e.to_string())),
            }
        });
        Ok(rx)
    }
}

fn check_name(name: Option<&str>) -> Result<(), ArtifactsError> {
    if let Some(n) = name
        && (n.is_empty() || n.chars().count() > MAX_NAME || n.chars().any(char::is_control))
    {
        return Err(ArtifactsError::Invalid(format!(
            "name {n:?} must be 1 to {MAX_NAME} characters without control characters"
        )));
    }
    Ok(())
}

/// Most tenants one artifact records.
pub const MAX_TENANTS: usize = 16;

/// Tenants as artifacts carry them: `name@org` (a tenant in full, since
/// copies travel between nodes of different orgs), of letters, digits,
/// `.`, `_`, `-`, `@`, at most 128 bytes.
pub(crate) fn check_tenants(tenants: &BTreeSet<String>) -> Result<(), ArtifactsError> {
    if tenants.len() > MAX_TENANTS {
        return Err(ArtifactsError::Invalid(format!(
            "{} tenants, more than the {MAX_TENANTS} an artifact records",
            tenants.len()
        )));
    }
    for t in tenants {
        if t.is_empty()
            || t.len() > 128
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        {
            return Err(ArtifactsError::Invalid(format!(
                "tenant {t:?}: 1 to 128 letters, digits, `.`, `_`, `-` or `@`"
            )));
        }
    }
    Ok(())
}

fn check_replicas(replicas: u32) -> Result<(), ArtifactsError> {
    if replicas > MAX_REPLICAS {
        return Err(ArtifactsError::Invalid(format!(
            "replicas {replicas} is out of range 0..={MAX_REPLICAS}"
        )));
    }
    Ok(())
}

/// `req` (a request `method url`) with this node's signature, its body
/// having the BLAKE3 digest `body_digest`: an empty body for a span
/// fetch, the artifact itself (the digest its CID names) for a pushed
/// copy.
pub(crate) fn signed(
    signer: &dyn locus_core::RequestSigner,
    mut req: reqwest::RequestBuilder,
    method: &str,
    url: &str,
    body_digest: [u8; 32],
) -> reqwest::RequestBuilder {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return req;
    };
    let mut path = parsed.path().to_owned();
    if let Some(q) = parsed.query() {
        path.push('?');
        path.push_str(q);
    }
    for (name, value) in signer.sign_digest(method, &path, body_digest) {
        req = req.header(name, value);
    }
    req
}

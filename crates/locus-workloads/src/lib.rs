//! # locus-workloads
//!
//! The workloads a node owns, and the reconcile loop that keeps them as
//! asked: placement of new workloads, adoption of a dead owner's workloads,
//! yielding to a newer epoch, handover calls, and the capacity the node
//! publishes.
//!
//! Owns: the `workloads` table of the store, the `wl/<id>` records and spec
//! chunks on the fabric, the node's `capacity` record, the instances the
//! drivers run for it.
//! Must never: decide placement or adoption itself (those are pure
//! functions of `locus-sched`), run a workload it does not own, or wait on
//! a driver while holding its lock.
//!
//! Every owned workload lives in three places that this module keeps in
//! step: the store (written before any answer, so nothing is lost on a
//! crash), the fabric (a summary record `wl/<id>` and the spec in chunks
//! `wl/<id>/spec/<i>`, so every node sees it and a successor can adopt it),
//! and the drivers (what actually runs).
//!
//! The loop, every [`TICK`] or when woken: read the cluster; ask
//! `locus-sched` which workloads to adopt (owner dead) and which copies to
//! yield (a newer epoch exists); place pending workloads; then, for each
//! owned workload not already being acted on, compare the desired state with
//! the state and start one driver operation as its own task. Operations
//! report back under the lock; the loop never waits on a driver.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_core::NodeId;
use locus_core::cluster::{Allocation, ClusterNode, Liveness};
use locus_core::workload::{
    Desired, Failover, Kind, RestartPolicy, State, Workload, WorkloadId, WorkloadSpec,
    WorkloadSummary,
};
use locus_fabric::udp::FabricHandle;
use locus_runtime::{Driver, Exit, Instance, Observed, Run};
use locus_sched::{Action, Decision};
use locus_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};
use utoipa::ToSchema;

pub mod capacity;
mod drive;
mod handover;
pub mod metrics;
mod reconcile;
mod records;
mod requests;
mod table;
mod usage;

pub use capacity::CapacityPublisher;
use drive::adopt_instance;
pub use metrics::WorkloadMetrics;
use table::WorkloadTable;
pub use usage::{MeasuredUsage, USAGE_PERIOD, USAGE_WINDOW};

/// Period of the reconcile loop when nothing wakes it.
pub const TICK: Duration = Duration::from_millis(250);
/// Bytes of spec per fabric record (a record must fit in one datagram).
pub const SPEC_CHUNK: usize = 768;
/// Most spec chunks: a spec is at most 24 KiB of JSON.
pub const MAX_SPEC_CHUNKS: usize = 32;
/// Most workloads a node owns.
pub const MAX_OWNED: usize = 256;
/// Log bytes kept per workload (current file plus one rotated).
pub const LOG_LIMIT_BYTES: u64 = 1 << 20;
/// Longest wait between two automatic restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a destroyed workload's marker stays (see
/// [`Workload::destroyed_unix_ms`]).
pub const DESTROYED_RETENTION_MS: u64 = 24 * 3600 * 1000;
/// Timeout of a handover call to another node.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of a workload's summary record.
pub fn summary_key(id: WorkloadId) -> String {
    format!("wl/{id}")
}

/// The key of one chunk of a workload's spec.
pub fn chunk_key(id: WorkloadId, i: usize) -> String {
    format!("wl/{id}/spec/{i}")
}

/// Why a workload operation failed. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("no workload matches {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the node {node} that owns it did not answer: {reason}")]
    Unreachable { node: String, reason: String },
    #[error(transparent)]
    Store(#[from] locus_store::StoreError),
}

/// A workload as `locus ps` lists it: the winning copy's summary and where
/// it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkloadView {
    #[serde(flatten)]
    pub summary: WorkloadSummary,
    /// Name of the owning node.
    pub node_name: String,
    /// Site of the owning node.
    pub site: String,
    /// Liveness of the owning node.
    pub node_liveness: Liveness,
    /// Whether the node answering holds the whole spec: until some node
    /// other than the owner does, the workload cannot fail over.
    pub spec_replicated: bool,
    /// Whether it can fail over now: its spec is replicated and each `cid:`
    /// source it starts from has a live copy on a node other than its
    /// owner.
    pub failover_ready: bool,
}

/// Where a workload is owned.
pub enum Located {
    /// Here, with its full state.
    Local(Box<Workload>),
    /// On another node, reachable at `api_addr`.
    Remote {
        id: WorkloadId,
        owner: NodeId,
        api_addr: String,
        /// Its tenant, as its owner's record names it.
        tenant: locus_core::config::Tenant,
    },
}

/// What a submission did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    /// The workload as its owner stored it (absent on a dry run).
    pub workload: Option<Workload>,
    /// Placement: every node's verdict and score.
    pub placement: Decision,
    /// Whether this was only a dry run.
    pub dry_run: bool,
}

/// A user's change to a workload (Epfiot's "update").
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadUpdate {
    /// New CPU and memory.
    #[serde(default)]
    pub resources: Option<locus_core::workload::Resources>,
    /// Environment variables to set.
    #[serde(default)]
    pub env: Option<BTreeMap<locus_core::workload::EnvName, locus_core::workload::Text>>,
}

/// Largest epoch a handover may carry (2^53 - 1: exact in every JSON
/// implementation).
pub const MAX_EPOCH: u64 = (1 << 53) - 1;

/// What one node sends another to make it the owner of a workload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Handover {
    pub id: WorkloadId,
    /// The node that is to own it.
    #[schema(value_type = String, pattern = "^[0-9a-f]{20}$")]
    pub owner: NodeId,
    #[schema(minimum = 1, maximum = 9007199254740991_f64)]
    pub epoch: u64,
    pub spec: WorkloadSpec,
    /// Why (kept when it says where the workload was placed from).
    #[schema(max_length = 200)]
    pub reason: String,
}

impl Handover {
    /// The handover of `w` to `w.owner`.
    pub fn of(w: &Workload) -> Handover {
        Handover {
            id: w.id,
            owner: w.owner,
            epoch: w.epoch,
            spec: w.spec.clone(),
            reason: w.reason.clone(),
        }
    }
}

/// What the workloads need of the artifact service, and nothing more: a
/// `cid:` source made local (fetched and verified when missing), and which
/// artifacts the owned workloads start from (never collected).
#[async_trait::async_trait]
pub trait ArtifactSource: Send + Sync + 'static {
    /// Fetch and verify `id` when this node lacks it; the path of its bytes.
    async fn local_path(&self, id: locus_core::ArtifactId) -> Result<PathBuf, SourceError>;
    /// For each of `ids`, the live nodes that hold a complete copy (this
    /// one included when it does).
    async fn live_holders(
        &self,
        ids: &BTreeSet<locus_core::ArtifactId>,
    ) -> BTreeMap<locus_core::ArtifactId, BTreeSet<NodeId>>;
    /// The artifacts the owned workloads start from.
    fn set_in_use(&self, ids: BTreeSet<locus_core::ArtifactId>);
}

/// Why a `cid:` source could not be made local.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No live node holds it: the workload waits (as pending) for a holder
    /// to return instead of failing.
    #[error("no live node holds artifact {0}")]
    NoHolder(locus_core::ArtifactId),
    /// Anything else (a corrupt or refused transfer, no disk room…).
    #[error("{0}")]
    Other(String),
}

/// A lifecycle verb on one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Power on.
    Start,
    /// Power off gracefully.
    Stop,
    /// Force off.
    Kill,
}

struct Entry {
    w: Workload,
    instance: Option<Instance>,
    /// A driver operation is under way.
    busy: bool,
    /// Do not restart before this instant.
    not_before: Option<Instant>,
    /// The digest and chunk count of the spec last published.
    published_spec: Option<(String, u32)>,
    /// The summary last published.
    published: Option<WorkloadSummary>,
    /// The spec changed while it ran: restart it.
    restart: bool,
    /// Pending until a live node holds this source artifact.
    awaiting: Option<locus_core::ArtifactId>,
    /// A hand back failed: not tried again before this instant.
    hand_back_after: Option<Instant>,
}

impl Owned {
    /// Owned workloads that are not destroyed markers.
    fn live(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .count()
    }
}

struct Owned {
    entries: BTreeMap<WorkloadId, Entry>,
    /// Keys to tombstone on the fabric (workloads that left this node).
    forget: Vec<(WorkloadId, u32)>,
    /// Copies this node handed back, counted as their new owner's until
    /// that owner's own records hold them (see [`Replicas::remember`]).
    handed: BTreeMap<WorkloadId, reconcile::HandedCopy>,
}

/// Handed-back copies remembered at once, at most.
const MAX_HANDED: usize = 1024;
/// How long a workload runs here after a failed hand back before the next
/// try: each try stops it, so a customer that cannot take it yet (its
/// address not known, its API not up) must not make it restart on every
/// reconcile pass.
const HAND_BACK_RETRY: Duration = Duration::from_secs(2);

struct Inner {
    me: NodeId,
    dir: PathBuf,
    store: Store,
    fabric: FabricHandle,
    capacity: Arc<CapacityPublisher>,
    inventory: tokio::sync::watch::Receiver<Arc<locus_core::inventory::Inventory>>,
    metrics: Arc<WorkloadMetrics>,
    drivers: BTreeMap<Kind, Arc<dyn Driver>>,
    owned: Mutex<Owned>,
    wake: Notify,
    /// Do not start anything before this instant (after a restart, the node
    /// first learns whether its workloads were adopted elsewhere).
    hold_until: Instant,
    http: reqwest::Client,
    /// Signs the handovers this node sends.
    signer: locus_core::Signer,
    peers: Arc<dyn locus_core::PeerTrust>,
    artifacts: Arc<dyn ArtifactSource>,
    /// What each running workload measurably uses (see [`usage`]).
    usage: usage::UsageBook,
    /// Which node a contract names to take a workload over, and to whom
    /// a workload taken over goes back.
    standbys: Arc<dyn Standbys>,
}

/// What contracts between orgs say about workloads: the node standing by
/// to take one over when its owner dies, and the customer a provider
/// gives one back to once it returns. The agent implements it over the
/// market.
pub trait Standbys: Send + Sync + 'static {
    /// The standby of `w` (a copy whose owner may be gone), if a contract
    /// in force names one, and whether the owner's death is witnessed as
    /// that contract asks.
    fn standby(&self, w: &WorkloadSummary) -> Option<locus_sched::Standby>;
    /// The customer to give `w` (owned here, taken over under a contract)
    /// back to: alive again, and settled long enough.
    fn hand_back(&self, w: &WorkloadSummary) -> Option<NodeId>;
}

/// No contracts: failover follows the usual successor rule.
pub struct NoStandbys;

impl Standbys for NoStandbys {
    fn standby(&self, _: &WorkloadSummary) -> Option<locus_sched::Standby> {
        None
    }
    fn hand_back(&self, _: &WorkloadSummary) -> Option<NodeId> {
        None
    }
}

/// The workloads of this node. Cheap to clone.
#[derive(Clone)]
pub struct Workloads {
    inner: Arc<Inner>,
}

/// Everything [`Workloads::start`] needs.
pub struct WorkloadsSetup {
    pub me: NodeId,
    pub data_dir: PathBuf,
    pub store: Store,
    pub fabric: FabricHandle,
    pub capacity: Arc<CapacityPublisher>,
    pub inventory: tokio::sync::watch::Receiver<Arc<locus_core::inventory::Inventory>>,
    pub metrics: Arc<WorkloadMetrics>,
    pub drivers: Vec<Arc<dyn Driver>>,
    /// Where `cid:` sources are fetched from.
    /// Where `cid:` sources come from (the artifact service).
    pub artifacts: Arc<dyn ArtifactSource>,
    /// How long to hold starts after boot.
    pub hold: Duration,
    /// Signs the node-to-node calls (handovers) as this node.
    pub signer: locus_core::Signer,
    /// Which peers work may go to: a node whose certificate does not
    /// chain to an admitted org, or was revoked, is left out of placement,
    /// failover and the majority.
    pub peers: Arc<dyn locus_core::PeerTrust>,
    /// What contracts say about taking workloads over and giving them back.
    pub standbys: Arc<dyn Standbys>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_id() -> WorkloadId {
    let mut b = [0u8; 8];
    // Without OS randomness, fall back to time and pid: unique enough here.
    if getrandom::fill(&mut b).is_err() {
        let t = now_ms() ^ (u64::from(std::process::id()) << 40);
        b = t.to_be_bytes();
    }
    WorkloadId(b)
}

impl Workloads {
    /// Load owned workloads from the store, re-adopt or clean up what a
    /// previous run left, and start the reconcile loop.
    pub async fn start(
        setup: WorkloadsSetup,
    ) -> Result<(Workloads, tokio::task::JoinHandle<()>), WorkloadError> {
        let dir = setup.data_dir.join("workloads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| WorkloadError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        let drivers: BTreeMap<Kind, Arc<dyn Driver>> =
            setup.drivers.into_iter().map(|d| (d.kind(), d)).collect();
        let mut entries = BTreeMap::new();
        let mut known: BTreeSet<(WorkloadId, u64)> = BTreeSet::new();
        for stored in setup.store.workloads().await? {
            let w: Workload = match serde_json::from_str(&stored.body) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(id = %stored.id, error = %e, "unreadable stored workload; left in the store untouched");
                    continue;
                }
            };
            let instance: Option<Instance> = stored
                .instance
                .as_deref()
                .and_then(|i| serde_json::from_str(i).ok());
            known.insert((w.id, w.epoch));
            let mut e = Entry::new(w, instance);
            adopt_instance(&drivers, &mut e).await;
            entries.insert(e.w.id, e);
        }
        // Containers a previous run left that no stored workload claims.
        for d in drivers.values() {
            match d.leftovers().await {
                Ok(list) => {
                    for inst in list {
                        let claimed = entries.get(&inst.id).is_some_and(|e| {
                            e.instance.as_ref().is_some_and(|i| i.handle == inst.handle)
                        });
                        if !claimed {
                            tracing::info!(workload = %inst.id, handle = %inst.handle, "removing a leftover instance");
                            let _ = d.kill(&inst).await;
                            let _ = d.remove(&inst).await;
                        }
                    }
                }
                Err(e) => tracing::debug!(driver = %d.kind(), error = %e, "cannot list leftovers"),
            }
        }
        let inner = Arc::new(Inner {
            me: setup.me,
            dir,
            store: setup.store,
            fabric: setup.fabric,
            capacity: setup.capacity,
            inventory: setup.inventory,
            metrics: setup.metrics,
            drivers,
            owned: Mutex::new(Owned {
                entries,
                forget: Vec::new(),
                handed: BTreeMap::new(),
            }),
            wake: Notify::new(),
            hold_until: Instant::now() + setup.hold,
            artifacts: setup.artifacts,
            signer: setup.signer,
            peers: setup.peers,
            http: reqwest::Client::builder()
                .timeout(HANDOVER_TIMEOUT)
                .build()
                .unwrap_or_default(),
            usage: usage::UsageBook::default(),
            standbys: setup.standbys,
        });
        let w = Workloads { inner };
        for e in w.inner.owned.lock().await.entries.values() {
            w.persist(e).await?;
        }
        w.inner.capacity.set_usage(Allocation::default(), w.kinds());
        let task = tokio::spawn(w.clone().run());
        Ok((w, task))
    }

    /// The workload kinds this node can run.
    pub fn kinds(&self) -> Vec<Kind> {
        self.inner.drivers.keys().copied().collect()
    }

    /// The directory of a workload (its log and files).
    pub fn dir_of(&self, id: WorkloadId) -> PathBuf {
        self.inner.dir.join(id.to_string())
    }

    /// Wake the reconcile loop.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    async fn update_entry(
        &self,
        id: WorkloadId,
        f: impl FnOnce(&mut Entry),
    ) -> Result<(), WorkloadError> {
        let mut owned = self.inner.owned.lock().await;
        if let Some(e) = owned.entries.get_mut(&id) {
            f(e);
            self.persist(e).await?;
        }
        Ok(())
    }

    async fn persist(&self, e: &Entry) -> Result<(), WorkloadError> {
        let body =
            serde_json::to_string(&e.w).map_err(|err| WorkloadError::Invalid(err.to_string()))?;
        let instance = e
            .instance
            .as_ref()
            .and_then(|i| serde_json::to_string(i).ok());
        self.inner
            .store
            .put_workload(e.w.id.to_string(), body, instance, now_ms())
            .await?;
        Ok(())
    }

    /// Stop every in-process instance (Wasm dies with the agent anyway);
    /// processes and containers keep running and are re-adopted at the
    /// next start.
    pub async fn shutdown(&self) {
        let owned = self.inner.owned.lock().await;
        for e in owned.entries.values() {
            if e.w.spec.kind == Kind::Wasm
                && let (Some(inst), Some(d)) = (&e.instance, self.inner.drivers.get(&Kind::Wasm))
            {
                let _ = d.kill(inst).await;
            }
        }
    }
}

impl Entry {
    fn new(w: Workload, instance: Option<Instance>) -> Entry {
        Entry {
            w,
            instance,
            busy: false,
            not_before: None,
            published_spec: None,
            published: None,
            restart: false,
            awaiting: None,
            hand_back_after: None,
        }
    }
}

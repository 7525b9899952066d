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
pub mod metrics;
mod table;

pub use capacity::CapacityPublisher;
pub use metrics::WorkloadMetrics;
use table::WorkloadTable;

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
}

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
    artifacts: locus_artifacts::Artifacts,
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
    pub artifacts: locus_artifacts::Artifacts,
    /// How long to hold starts after boot.
    pub hold: Duration,
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
            let mut e = Entry {
                w,
                instance,
                busy: false,
                not_before: None,
                published_spec: None,
                published: None,
                restart: false,
            };
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
            }),
            wake: Notify::new(),
            hold_until: Instant::now() + setup.hold,
            artifacts: setup.artifacts,
            http: reqwest::Client::builder()
                .timeout(HANDOVER_TIMEOUT)
                .build()
                .unwrap_or_default(),
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

    async fn run(self) {
        loop {
            let _ = tokio::time::timeout(TICK, self.inner.wake.notified()).await;
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
        }
    }

    /// The cluster as the fabric sees it now (empty if the fabric stopped).
    async fn cluster(&self) -> Vec<ClusterNode> {
        self.inner.fabric.nodes().await
    }

    /// One pass of the loop. Public for tests and benchmarks.
    pub async fn reconcile(&self) -> Result<(), WorkloadError> {
        let nodes = self.cluster().await;
        let replicas = self.replicas(&nodes).await;
        let copies = replicas.copies();
        self.fence_and_adopt(&nodes, &copies, &replicas).await?;
        self.place_pending(&nodes).await?;
        self.drive().await?;
        self.publish().await;
        Ok(())
    }

    /// The records of every known node, fetched once per pass.
    async fn replicas(&self, nodes: &[ClusterNode]) -> Replicas {
        let mut by_owner = BTreeMap::new();
        for n in nodes {
            if let Ok(records) = self.inner.fabric.records_of(n.id).await {
                by_owner.insert(n.id, records.into_iter().map(|(k, _, v)| (k, v)).collect());
            }
        }
        Replicas { by_owner }
    }

    async fn fence_and_adopt(
        &self,
        nodes: &[ClusterNode],
        copies: &[WorkloadSummary],
        replicas: &Replicas,
    ) -> Result<(), WorkloadError> {
        // Specs of copies whose owner is gone: the candidates for adoption.
        let liveness: BTreeMap<NodeId, Liveness> =
            nodes.iter().map(|n| (n.id, n.liveness)).collect();
        let mut specs: BTreeMap<WorkloadId, WorkloadSpec> = BTreeMap::new();
        for c in copies {
            if c.failover == Failover::Reschedule
                && !c.destroyed
                && matches!(
                    liveness.get(&c.owner),
                    Some(Liveness::Dead | Liveness::Left)
                )
            {
                match replicas.spec(c) {
                    Some(spec) => {
                        tracing::debug!(
                            workload = %c.id,
                            owner = %c.owner,
                            successor = ?locus_sched::successor(c.id, &spec, nodes, &[c.owner]),
                            majority = locus_sched::has_majority(nodes),
                            "a gone node's workload"
                        );
                        specs.insert(c.id, spec);
                    }
                    None => tracing::debug!(
                        workload = %c.id,
                        owner = %c.owner,
                        "a gone node's workload whose spec has not fully arrived"
                    ),
                }
            }
        }
        let actions =
            locus_sched::plan(self.inner.me, nodes, copies, |id| specs.get(&id), now_ms());
        for action in actions {
            match action {
                Action::Yield { id, by, epoch } => {
                    let mut owned = self.inner.owned.lock().await;
                    let Some(e) = owned.entries.get_mut(&id) else {
                        continue;
                    };
                    if e.busy {
                        continue;
                    }
                    tracing::warn!(workload = %id, %by, epoch, "a newer copy exists; stopping ours");
                    self.inner.metrics.workload_yields.inc();
                    e.busy = true;
                    let instance = e.instance.clone();
                    let driver = self.inner.drivers.get(&e.w.spec.kind).cloned();
                    drop(owned);
                    if let (Some(inst), Some(d)) = (instance, driver) {
                        let _ = d.kill(&inst).await;
                        let _ = d.remove(&inst).await;
                    }
                    self.drop_owned(id).await?;
                }
                Action::Adopt { id, from, epoch } => {
                    let Some(spec) = specs.get(&id).cloned() else {
                        continue;
                    };
                    let mut owned = self.inner.owned.lock().await;
                    if owned.entries.get(&id).is_some_and(|e| e.w.epoch >= epoch) {
                        continue;
                    }
                    let now = now_ms();
                    let mut w = Workload::new(id, spec, self.inner.me, now);
                    w.epoch = epoch;
                    let _ = w.transition(
                        State::Scheduled,
                        format!("adopted from node {from}, which is gone"),
                        now,
                    );
                    tracing::info!(workload = %id, %from, epoch, "adopting");
                    self.inner.metrics.workload_adoptions.inc();
                    let e = Entry::new(w, None);
                    self.persist(&e).await?;
                    owned.entries.insert(id, e);
                }
            }
        }
        Ok(())
    }

    /// Stop tracking a workload here: store, fabric (tombstones), entries.
    async fn drop_owned(&self, id: WorkloadId) -> Result<(), WorkloadError> {
        self.inner.store.delete_workload(id.to_string()).await?;
        let mut owned = self.inner.owned.lock().await;
        if let Some(e) = owned.entries.remove(&id) {
            let chunks = e.published_spec.map_or(0, |(_, n)| n);
            owned.forget.push((id, chunks));
        }
        Ok(())
    }

    async fn place_pending(&self, nodes: &[ClusterNode]) -> Result<(), WorkloadError> {
        let pending: Vec<Workload> = {
            let owned = self.inner.owned.lock().await;
            owned
                .entries
                .values()
                .filter(|e| {
                    e.w.state == State::Pending && e.w.desired == Desired::Running && !e.busy
                })
                .map(|e| e.w.clone())
                .collect()
        };
        for w in pending {
            let decision = locus_sched::place(w.id, &w.spec, nodes);
            match decision.chosen {
                Some(node) if node == self.inner.me => {
                    self.update_entry(w.id, |e| {
                        let _ =
                            e.w.transition(State::Scheduled, "placed on this node", now_ms());
                    })
                    .await?;
                }
                Some(node) => {
                    let mut moved = w.clone();
                    moved.owner = node;
                    moved.epoch += 1;
                    let _ = moved.transition(
                        State::Scheduled,
                        "placed by the node that held it pending",
                        now_ms(),
                    );
                    match self.handover(nodes, node, &moved).await {
                        Ok(_) => self.drop_owned(w.id).await?,
                        Err(e) => {
                            self.update_entry(w.id, |en| {
                                en.w.reason = format!("handover to {node} failed: {e}; retrying");
                            })
                            .await?
                        }
                    }
                }
                None => {
                    let why = decision.why_none();
                    self.update_entry(w.id, |e| e.w.reason = why.clone())
                        .await?;
                }
            }
        }
        Ok(())
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

    /// Send a workload to the node that will own it.
    async fn handover(
        &self,
        nodes: &[ClusterNode],
        to: NodeId,
        w: &Workload,
    ) -> Result<Workload, WorkloadError> {
        let api = nodes
            .iter()
            .find(|n| n.id == to)
            .and_then(|n| n.info.as_ref())
            .map(|i| i.api_addr.clone())
            .ok_or_else(|| WorkloadError::Unreachable {
                node: to.to_string(),
                reason: "its API address is unknown".to_owned(),
            })?;
        let unreachable = |reason: String| WorkloadError::Unreachable {
            node: to.to_string(),
            reason,
        };
        let resp = self
            .inner
            .http
            .post(format!("http://{api}/api/v1/workloads/handover"))
            .json(&Handover::of(w))
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(unreachable(format!("{status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| unreachable(format!("bad answer: {e}")))
    }

    /// Accept a workload handed over by another node (or placed here by a
    /// submission on another node). Refused when it does not fit here.
    pub async fn accept(&self, handed: Handover) -> Result<Workload, WorkloadError> {
        if handed.owner != self.inner.me {
            return Err(WorkloadError::Conflict(format!(
                "the workload is addressed to node {}, this is node {}",
                handed.owner, self.inner.me
            )));
        }
        if handed.epoch == 0 || handed.epoch > MAX_EPOCH {
            return Err(WorkloadError::Invalid(format!(
                "epoch {} is out of range 1..={MAX_EPOCH}",
                handed.epoch
            )));
        }
        handed
            .spec
            .check()
            .map_err(|e| WorkloadError::Conflict(e.to_string()))?;
        // It starts here from scratch: only the id, the spec and the epoch
        // come from the sender.
        let now = now_ms();
        let mut w = Workload::new(handed.id, handed.spec, self.inner.me, now);
        w.epoch = handed.epoch;
        let _ = w.transition(State::Scheduled, handed_reason(&handed.reason), now);
        let nodes = self.cluster().await;
        if let Some(c) = self
            .replicas(&nodes)
            .await
            .copies()
            .iter()
            .find(|c| c.name == *w.spec.name.get() && c.id != w.id && !c.destroyed)
        {
            return Err(WorkloadError::Conflict(format!(
                "a workload named {:?} exists already ({} on node {})",
                c.name, c.id, c.owner
            )));
        }
        let mut owned = self.inner.owned.lock().await;
        if let Some(e) = owned.entries.get(&w.id)
            && e.w.epoch >= w.epoch
        {
            return Ok(e.w.clone());
        }
        self.check_fits(&owned, &w.spec, Some(w.id))?;
        let e = Entry::new(w.clone(), None);
        self.persist(&e).await?;
        owned.entries.insert(w.id, e);
        drop(owned);
        self.wake();
        Ok(w)
    }

    fn check_fits(
        &self,
        owned: &Owned,
        spec: &WorkloadSpec,
        except: Option<WorkloadId>,
    ) -> Result<(), WorkloadError> {
        if !self.inner.drivers.contains_key(&spec.kind) {
            return Err(WorkloadError::Conflict(format!(
                "this node has no {} driver",
                spec.kind
            )));
        }
        if owned.live() >= MAX_OWNED && except.is_none_or(|id| !owned.entries.contains_key(&id)) {
            return Err(WorkloadError::Conflict(format!(
                "this node already owns {MAX_OWNED} workloads"
            )));
        }
        let inv = self.inner.inventory.borrow().clone();
        let cap = crate::capacity::of(&inv);
        let used = allocation(owned.entries.values().filter(|e| Some(e.w.id) != except));
        let cpu = *spec.resources.cpu_millicores.get();
        let mem = spec.resources.memory_bytes();
        if used.cpu_millicores + cpu > cap.cpu_millicores {
            return Err(WorkloadError::Conflict(format!(
                "not enough cpu here: {cpu}m asked, {}m free",
                cap.cpu_millicores.saturating_sub(used.cpu_millicores)
            )));
        }
        if used.memory_bytes + mem > cap.memory_bytes {
            return Err(WorkloadError::Conflict(format!(
                "not enough memory here: {} MiB asked, {} MiB free",
                mem >> 20,
                cap.memory_bytes.saturating_sub(used.memory_bytes) >> 20
            )));
        }
        Ok(())
    }

    /// Submit a new workload: place it over the cluster and hand it to the
    /// chosen node (which may be this one). With no fitting node it stays
    /// pending here and is placed as soon as one fits.
    pub async fn submit(
        &self,
        spec: WorkloadSpec,
        dry_run: bool,
    ) -> Result<Submitted, WorkloadError> {
        spec.check()
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        let nodes = self.cluster().await;
        let copies = self.replicas(&nodes).await.copies();
        if let Some(c) = copies
            .iter()
            .find(|c| c.name == *spec.name.get() && !c.destroyed)
        {
            return Err(WorkloadError::Conflict(format!(
                "a workload named {:?} exists already ({} on node {})",
                c.name, c.id, c.owner
            )));
        }
        let id = new_id();
        let placement = locus_sched::place(id, &spec, &nodes);
        if dry_run {
            return Ok(Submitted {
                workload: None,
                placement,
                dry_run,
            });
        }
        let now = now_ms();
        let mut w = Workload::new(id, spec, self.inner.me, now);
        match placement.chosen {
            Some(node) if node == self.inner.me => {
                let _ = w.transition(State::Scheduled, "placed on this node", now);
                let w = self.accept(Handover::of(&w)).await?;
                Ok(Submitted {
                    workload: Some(w),
                    placement,
                    dry_run,
                })
            }
            Some(node) => {
                let mut there = w.clone();
                there.owner = node;
                let _ = there.transition(
                    State::Scheduled,
                    format!("placed by node {}", self.inner.me),
                    now,
                );
                match self.handover(&nodes, node, &there).await {
                    Ok(w) => Ok(Submitted {
                        workload: Some(w),
                        placement,
                        dry_run,
                    }),
                    Err(e) => {
                        w.reason = format!("handover to {node} failed: {e}; retrying");
                        self.keep_pending(w.clone()).await?;
                        Ok(Submitted {
                            workload: Some(w),
                            placement,
                            dry_run,
                        })
                    }
                }
            }
            None => {
                w.reason = placement.why_none();
                self.keep_pending(w.clone()).await?;
                Ok(Submitted {
                    workload: Some(w),
                    placement,
                    dry_run,
                })
            }
        }
    }

    async fn keep_pending(&self, w: Workload) -> Result<(), WorkloadError> {
        let mut owned = self.inner.owned.lock().await;
        if owned.live() >= MAX_OWNED {
            return Err(WorkloadError::Conflict(format!(
                "this node already holds {MAX_OWNED} workloads"
            )));
        }
        let e = Entry::new(w, None);
        self.persist(&e).await?;
        owned.entries.insert(e.w.id, e);
        Ok(())
    }

    /// Every workload of the cluster (the winning copy of each), with the
    /// node that owns it.
    pub async fn list(&self) -> Vec<WorkloadView> {
        let nodes = self.cluster().await;
        let replicas = self.replicas(&nodes).await;
        let copies = replicas.copies();
        let mut best: BTreeMap<WorkloadId, WorkloadSummary> = BTreeMap::new();
        for c in copies {
            match best.get(&c.id) {
                Some(b) if (b.epoch, b.owner) >= (c.epoch, c.owner) => {}
                _ => {
                    best.insert(c.id, c);
                }
            }
        }
        // Local entries not published yet still show.
        for e in self.inner.owned.lock().await.entries.values() {
            best.entry(e.w.id).or_insert_with(|| e.w.summary(0));
        }
        let mut out = Vec::new();
        for s in best.into_values().filter(|s| !s.destroyed) {
            let node = nodes.iter().find(|n| n.id == s.owner);
            let info = node.and_then(|n| n.info.as_ref());
            let spec_replicated = s.spec_chunks > 0 && replicas.spec(&s).is_some();
            out.push(WorkloadView {
                node_name: info.map(|i| i.name.clone()).unwrap_or_default(),
                site: info.map(|i| i.site.name.get().clone()).unwrap_or_default(),
                node_liveness: node.map_or(Liveness::Dead, |n| n.liveness),
                spec_replicated,
                summary: s,
            });
        }
        out
    }

    /// Find a workload by id, id prefix or name.
    pub async fn locate(&self, query: &str) -> Result<Located, WorkloadError> {
        let all = self.list().await;
        let matches: Vec<&WorkloadView> = all
            .iter()
            .filter(|v| v.summary.id.to_string() == query || v.summary.name == query)
            .collect();
        let matches = if matches.is_empty() {
            all.iter()
                .filter(|v| query.len() >= 4 && v.summary.id.to_string().starts_with(query))
                .collect()
        } else {
            matches
        };
        let v = match matches.as_slice() {
            [] => return Err(WorkloadError::NotFound(query.to_owned())),
            [v] => *v,
            many => {
                return Err(WorkloadError::Invalid(format!(
                    "{query:?} matches {} workloads: {}",
                    many.len(),
                    many.iter()
                        .map(|v| v.summary.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let id = v.summary.id;
        if let Some(e) = self.inner.owned.lock().await.entries.get(&id) {
            return Ok(Located::Local(Box::new(e.w.clone())));
        }
        let nodes = self.cluster().await;
        let api_addr = nodes
            .iter()
            .find(|n| n.id == v.summary.owner)
            .and_then(|n| n.info.as_ref())
            .map(|i| i.api_addr.clone())
            .ok_or_else(|| WorkloadError::Unreachable {
                node: v.summary.owner.to_string(),
                reason: "its API address is unknown".to_owned(),
            })?;
        Ok(Located::Remote {
            id,
            owner: v.summary.owner,
            api_addr,
        })
    }

    /// The full state of an owned workload.
    pub async fn get(&self, id: WorkloadId) -> Result<Workload, WorkloadError> {
        self.inner
            .owned
            .lock()
            .await
            .entries
            .get(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .map(|e| e.w.clone())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))
    }

    /// Power on, power off or force off an owned workload. Returns at once;
    /// the loop carries the change out.
    pub async fn act(&self, id: WorkloadId, verb: Verb) -> Result<Workload, WorkloadError> {
        let mut owned = self.inner.owned.lock().await;
        let e = owned
            .entries
            .get_mut(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
        match verb {
            Verb::Start => {
                e.w.desired = Desired::Running;
                e.not_before = None;
                if matches!(e.w.state, State::Stopped | State::Failed) {
                    e.w.restarts = 0;
                    let _ =
                        e.w.transition(State::Scheduled, "started by the user", now_ms());
                }
            }
            Verb::Stop | Verb::Kill => {
                e.w.desired = Desired::Stopped;
                if verb == Verb::Kill
                    && let (Some(inst), Some(d)) = (
                        e.instance.clone(),
                        self.inner.drivers.get(&e.w.spec.kind).cloned(),
                    )
                {
                    // Force off does not wait for the loop.
                    let exit = d.kill(&inst).await.ok();
                    let _ = d.remove(&inst).await;
                    e.instance = None;
                    let now = now_ms();
                    if e.w.state == State::Running || e.w.state == State::Starting {
                        let _ = e.w.transition(State::Stopping, "killed by the user", now);
                    }
                    e.w.exit_code = exit.and_then(|x| x.code);
                    let _ = e.w.transition(State::Stopped, "killed by the user", now);
                } else if matches!(e.w.state, State::Pending | State::Scheduled) {
                    let _ = e.w.transition(
                        State::Stopped,
                        "stopped by the user before it started",
                        now_ms(),
                    );
                }
            }
        }
        self.persist(e).await?;
        let w = e.w.clone();
        drop(owned);
        self.wake();
        Ok(w)
    }

    /// Change resources or environment; a running workload restarts with
    /// the new spec.
    pub async fn update(
        &self,
        id: WorkloadId,
        update: WorkloadUpdate,
    ) -> Result<Workload, WorkloadError> {
        let mut owned = self.inner.owned.lock().await;
        let e = owned
            .entries
            .get(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
        let mut spec = e.w.spec.clone();
        if let Some(r) = update.resources {
            spec.resources = r;
        }
        if let Some(env) = update.env {
            spec.env.extend(env);
        }
        spec.check()
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        self.check_fits(&owned, &spec, Some(id))?;
        let e = owned
            .entries
            .get_mut(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
        e.w.spec = spec;
        e.restart = e.w.state.is_active();
        e.w.reason = "updated".to_owned();
        self.persist(e).await?;
        let w = e.w.clone();
        drop(owned);
        self.wake();
        Ok(w)
    }

    /// Destroy a workload: only when it is not running, unless `force`
    /// (kill, then remove).
    pub async fn remove(&self, id: WorkloadId, force: bool) -> Result<(), WorkloadError> {
        let (inst, driver) = {
            let owned = self.inner.owned.lock().await;
            let e = owned
                .entries
                .get(&id)
                .filter(|e| e.w.destroyed_unix_ms.is_none())
                .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
            if (e.w.state.is_active() || e.busy) && !force {
                return Err(WorkloadError::Conflict(format!(
                    "workload {} is {}; stop it first, or destroy it with --force",
                    e.w.spec.name.get(),
                    e.w.state
                )));
            }
            (
                e.instance.clone(),
                self.inner.drivers.get(&e.w.spec.kind).cloned(),
            )
        };
        if let (Some(inst), Some(d)) = (inst, driver) {
            let _ = d.kill(&inst).await;
            d.remove(&inst)
                .await
                .map_err(|e| WorkloadError::Conflict(format!("cannot remove the instance: {e}")))?;
        }
        // Keep a marker one epoch above every copy: a stale copy on a node
        // that was away yields to it instead of coming back.
        {
            let mut owned = self.inner.owned.lock().await;
            if let Some(e) = owned.entries.get_mut(&id) {
                let now = now_ms();
                e.instance = None;
                e.w.desired = Desired::Stopped;
                e.w.epoch += 1;
                e.w.destroyed_unix_ms = Some(now);
                force_state(&mut e.w, State::Stopped, "destroyed", now);
                self.persist(e).await?;
            }
        }
        let _ = std::fs::remove_dir_all(self.dir_of(id));
        self.wake();
        Ok(())
    }

    /// Start the driver operations the owned workloads need.
    async fn drive(&self) -> Result<(), WorkloadError> {
        let held = Instant::now() < self.inner.hold_until;
        let mut expired = Vec::new();
        let mut owned = self.inner.owned.lock().await;
        let ids: Vec<WorkloadId> = owned.entries.keys().copied().collect();
        for id in ids {
            let Some(e) = owned.entries.get_mut(&id) else {
                continue;
            };
            if e.busy {
                continue;
            }
            if let Some(at) = e.w.destroyed_unix_ms {
                if now_ms().saturating_sub(at) > DESTROYED_RETENTION_MS {
                    expired.push(id);
                }
                continue;
            }
            let Some(driver) = self.inner.drivers.get(&e.w.spec.kind).cloned() else {
                if e.w.state != State::Failed && e.w.state != State::Pending {
                    let _ = e.w.transition(
                        State::Failed,
                        format!("this node has no {} driver", e.w.spec.kind),
                        now_ms(),
                    );
                    self.persist(e).await?;
                }
                continue;
            };
            let op = match (e.w.desired, e.w.state) {
                (Desired::Running, State::Running) if e.restart => Some(Op::Restart),
                (Desired::Running, State::Running) => Some(Op::Observe),
                (Desired::Running, State::Scheduled) if !held => Some(Op::Start),
                (Desired::Running, State::Stopped | State::Failed) => {
                    let again = match e.w.spec.restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => e.w.state == State::Failed,
                        RestartPolicy::Never => false,
                    };
                    let due = e.not_before.is_none_or(|t| Instant::now() >= t);
                    // Only restart what ended on its own (a user stop sets
                    // desired = stopped).
                    (again && due && !held).then_some(Op::Start)
                }
                (Desired::Stopped, State::Running | State::Starting) => Some(Op::Stop),
                // In motion with no operation under way (a crash between the
                // two): look at what the driver holds.
                (_, State::Starting | State::Stopping) => Some(Op::Observe),
                _ => None,
            };
            let Some(op) = op else { continue };
            if op == Op::Observe {
                // Cheap: done inline.
                let observed = match &e.instance {
                    Some(inst) => driver.observe(inst).await,
                    None => Observed::Gone,
                };
                let exit = match observed {
                    Observed::Running => {
                        if e.w.state != State::Running {
                            force_state(&mut e.w, State::Running, "running", now_ms());
                            self.persist(e).await?;
                        }
                        continue;
                    }
                    Observed::Exited(exit) => exit,
                    Observed::Gone => Exit {
                        code: None,
                        failed: true,
                        reason: "the instance vanished".to_owned(),
                    },
                };
                self.finish(e, exit);
                self.persist(e).await?;
                continue;
            }
            e.busy = true;
            let now = now_ms();
            match op {
                Op::Start => {
                    if e.w.state != State::Scheduled {
                        e.w.restarts += 1;
                        let _ =
                            e.w.transition(State::Scheduled, "restarting by policy", now);
                    }
                    let _ = e.w.transition(State::Starting, "starting", now);
                }
                Op::Stop | Op::Restart => {
                    let _ = e.w.transition(
                        State::Stopping,
                        if op == Op::Restart {
                            "restarting with the updated spec"
                        } else {
                            "stopping"
                        },
                        now,
                    );
                }
                Op::Observe => {}
            }
            self.persist(e).await?;
            let run = Run {
                id,
                epoch: e.w.epoch,
                spec: e.w.spec.clone(),
                dir: self.dir_of(id),
                log_limit_bytes: LOG_LIMIT_BYTES,
            };
            let instance = e.instance.clone();
            let this = self.clone();
            tokio::spawn(async move {
                let result = this.operate(op, &*driver, run, instance).await;
                this.complete(id, op, result).await;
            });
        }
        // Allocation follows what is held.
        let alloc = allocation(owned.entries.values());
        self.inner.artifacts.set_in_use(
            owned
                .entries
                .values()
                .filter_map(|e| locus_core::ArtifactId::from_source(e.w.spec.source.get()))
                .filter_map(Result::ok)
                .collect(),
        );
        drop(owned);
        for id in expired {
            self.drop_owned(id).await?;
        }
        self.inner.capacity.set_usage(alloc, self.kinds());
        let inv = self.inner.inventory.borrow().clone();
        self.inner.capacity.publish(&inv).await;
        Ok(())
    }

    async fn operate(
        &self,
        op: Op,
        driver: &dyn Driver,
        run: Run,
        instance: Option<Instance>,
    ) -> OpResult {
        let timeout = Duration::from_secs(u64::from(*run.spec.stop_timeout_secs.get()));
        if matches!(op, Op::Stop | Op::Restart)
            && let Some(inst) = &instance
        {
            let exit = driver.stop(inst, timeout).await;
            let _ = driver.remove(inst).await;
            if op == Op::Stop {
                return OpResult::Stopped(exit.map_err(|e| e.to_string()));
            }
        }
        if matches!(op, Op::Start | Op::Restart) {
            if let Err(e) = std::fs::create_dir_all(run.files_dir()) {
                return OpResult::Started(Err(format!(
                    "cannot create {}: {e}",
                    run.files_dir().display()
                )));
            }
            let mut run = run;
            if let Some(parsed) = locus_core::ArtifactId::from_source(run.spec.source.get()) {
                match self.artifact_source(parsed).await {
                    Ok(source) => run.spec.source = source,
                    Err(e) => return OpResult::Started(Err(e)),
                }
            }
            return OpResult::Started(driver.start(&run).await.map_err(|e| e.to_string()));
        }
        OpResult::Stopped(Ok(Exit {
            code: None,
            failed: false,
            reason: "stopped".to_owned(),
        }))
    }

    /// Fetch (and verify) an artifact source; the local path to start from.
    async fn artifact_source(
        &self,
        parsed: Result<locus_core::ArtifactId, locus_core::artifact::ArtifactIdError>,
    ) -> Result<locus_core::workload::Source, String> {
        let id = parsed.map_err(|e| e.to_string())?;
        self.inner
            .artifacts
            .fetch_and_wait(id)
            .await
            .map_err(|e| format!("cannot fetch the source artifact: {e}"))?;
        let path = self.inner.artifacts.path(&id);
        locus_core::workload::Source::try_from(path.display().to_string())
    }

    async fn complete(&self, id: WorkloadId, op: Op, result: OpResult) {
        let mut owned = self.inner.owned.lock().await;
        let Some(e) = owned.entries.get_mut(&id) else {
            return;
        };
        e.busy = false;
        let now = now_ms();
        match result {
            OpResult::Started(Ok(inst)) => {
                e.instance = Some(inst);
                e.restart = false;
                e.w.exit_code = None;
                if e.w.state == State::Stopping {
                    // A restart: the old run ended before the new one began.
                    let _ = e.w.transition(State::Stopped, "stopped to restart", now);
                }
                if e.w.state != State::Starting {
                    let _ = e.w.transition(State::Starting, "starting", now);
                }
                let _ = e.w.transition(
                    State::Running,
                    format!("running on node {}", self.inner.me),
                    now,
                );
            }
            OpResult::Started(Err(reason)) => {
                e.instance = None;
                let _ =
                    e.w.transition(State::Failed, format!("could not start: {reason}"), now);
                e.not_before = Some(Instant::now() + backoff(e.w.restarts));
            }
            OpResult::Stopped(Ok(exit)) => {
                e.instance = None;
                e.w.exit_code = exit.code;
                let _ =
                    e.w.transition(State::Stopped, format!("stopped ({})", exit.reason), now);
            }
            OpResult::Stopped(Err(reason)) => {
                let _ =
                    e.w.transition(State::Failed, format!("could not stop: {reason}"), now);
            }
        }
        let _ = op;
        if let Err(err) = self.persist(e).await {
            tracing::error!(workload = %id, error = %err, "cannot persist a workload change");
        }
        drop(owned);
        self.wake();
    }

    /// Record how a run ended, and when it may restart.
    fn finish(&self, e: &mut Entry, exit: Exit) {
        let now = now_ms();
        e.w.exit_code = exit.code;
        let to = if exit.failed {
            State::Failed
        } else {
            State::Stopped
        };
        let _ = e.w.transition(to, exit.reason, now);
        e.not_before = Some(Instant::now() + backoff(e.w.restarts));
        if let (Some(inst), Some(d)) = (
            e.instance.take(),
            self.inner.drivers.get(&e.w.spec.kind).cloned(),
        ) {
            tokio::spawn(async move {
                let _ = d.remove(&inst).await;
            });
        }
    }

    /// Publish what changed to the fabric, and tombstone what left.
    async fn publish(&self) {
        let (changes, forget) = {
            let mut owned = self.inner.owned.lock().await;
            let forget = std::mem::take(&mut owned.forget);
            let mut changes = Vec::new();
            for e in owned.entries.values_mut() {
                let json = e.w.spec.to_json();
                let chunks: Vec<Vec<u8>> = if e.w.destroyed_unix_ms.is_some() {
                    Vec::new()
                } else {
                    json.chunks(SPEC_CHUNK)
                        .map(<[u8]>::to_vec)
                        .take(MAX_SPEC_CHUNKS)
                        .collect()
                };
                let digest = if e.w.destroyed_unix_ms.is_some() {
                    "destroyed".to_owned()
                } else {
                    e.w.spec.digest()
                };
                let spec_changed = e.published_spec.as_ref().is_none_or(|(d, _)| *d != digest);
                let old_chunks = e.published_spec.as_ref().map_or(0, |(_, n)| *n);
                let summary = e.w.summary(chunks.len() as u32);
                if !spec_changed && e.published.as_ref() == Some(&summary) {
                    continue;
                }
                e.published_spec = Some((digest, chunks.len() as u32));
                e.published = Some(summary.clone());
                changes.push((e.w.id, spec_changed.then_some(chunks), old_chunks, summary));
            }
            (changes, forget)
        };
        let fabric = &self.inner.fabric;
        for (id, chunks, old_chunks, summary) in changes {
            // Spec first, then the summary that names its digest.
            if let Some(chunks) = chunks {
                locus_fabric::chunks::publish(
                    fabric,
                    |i| chunk_key(id, i),
                    chunks,
                    old_chunks as usize,
                )
                .await;
            }
            if let Err(e) = fabric.publish_json(&summary_key(id), &summary).await {
                tracing::warn!(workload = %id, error = %e, "cannot publish a workload");
                let mut owned = self.inner.owned.lock().await;
                if let Some(e) = owned.entries.get_mut(&id) {
                    e.published = None;
                }
            }
        }
        for (id, chunks) in forget {
            let _ = fabric.publish(&summary_key(id), None).await;
            locus_fabric::chunks::delete(fabric, |i| chunk_key(id, i), 0..chunks as usize).await;
        }
        let owned = self.inner.owned.lock().await;
        for s in State::ALL {
            let n = owned.entries.values().filter(|e| e.w.state == s).count();
            self.inner
                .metrics
                .workloads
                .with_label_values(&[s.as_str()])
                .set(n as i64);
        }
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

/// Every known node's records, as fetched for one pass: the copies of
/// every workload and the specs behind them come from here.
struct Replicas {
    by_owner: BTreeMap<NodeId, BTreeMap<String, Vec<u8>>>,
}

impl Replicas {
    /// Every copy of every workload (each owner's summaries).
    fn copies(&self) -> Vec<WorkloadSummary> {
        let mut out = Vec::new();
        for (owner, records) in &self.by_owner {
            for (key, value) in records {
                if key.starts_with("wl/")
                    && !key.contains("/spec/")
                    && let Ok(s) = serde_json::from_slice::<WorkloadSummary>(value)
                    && s.owner == *owner
                {
                    out.push(s);
                }
            }
        }
        out
    }

    /// A copy's spec from its owner's chunks; `None` unless every chunk is
    /// there and the digest matches.
    fn spec(&self, s: &WorkloadSummary) -> Option<WorkloadSpec> {
        let records = self.by_owner.get(&s.owner)?;
        let mut json = Vec::new();
        for i in 0..s.spec_chunks as usize {
            json.extend_from_slice(records.get(&chunk_key(s.id, i))?);
        }
        let spec: WorkloadSpec = serde_json::from_slice(&json).ok()?;
        (spec.digest() == s.spec_digest).then_some(spec)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
    Restart,
    Observe,
}

enum OpResult {
    Started(Result<Instance, String>),
    Stopped(Result<Exit, String>),
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
        }
    }
}

/// The reason a handed-over workload is scheduled with: the sender's, when
/// it says where the workload was placed from (bounded, no control
/// characters).
fn handed_reason(sender: &str) -> String {
    let clean: String = sender
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if clean.starts_with("placed") {
        clean
    } else {
        "handed over".to_owned()
    }
}

/// Wait before the `restarts`-th automatic restart: 0.5 s doubling, at most
/// [`MAX_BACKOFF`].
fn backoff(restarts: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(restarts.min(6))).min(MAX_BACKOFF)
}

/// Resources held by the workloads that hold any.
fn allocation<'a>(entries: impl Iterator<Item = &'a Entry>) -> Allocation {
    let mut a = Allocation::default();
    for e in entries {
        if matches!(
            e.w.state,
            State::Scheduled | State::Starting | State::Running | State::Stopping
        ) {
            a.cpu_millicores += *e.w.spec.resources.cpu_millicores.get();
            a.memory_bytes += e.w.spec.resources.memory_bytes();
            a.devices
                .extend(e.w.spec.devices.iter().map(|d| d.get().clone()));
        }
    }
    a
}

/// After a restart of the agent: find out what became of a stored
/// workload's instance.
async fn adopt_instance(drivers: &BTreeMap<Kind, Arc<dyn Driver>>, e: &mut Entry) {
    let now = now_ms();
    let Some(driver) = drivers.get(&e.w.spec.kind) else {
        return;
    };
    let Some(inst) = e.instance.clone() else {
        if matches!(
            e.w.state,
            State::Starting | State::Running | State::Stopping
        ) {
            // Died with the previous run before a handle was stored.
            force_state(&mut e.w, State::Scheduled, "the agent restarted", now);
        }
        return;
    };
    match driver.observe(&inst).await {
        Observed::Running if inst.epoch == e.w.epoch => {
            tracing::info!(workload = %e.w.id, handle = %inst.handle, "re-adopted a running instance");
            force_state(
                &mut e.w,
                State::Running,
                "re-adopted after an agent restart",
                now,
            );
        }
        Observed::Running => {
            let _ = driver.kill(&inst).await;
            let _ = driver.remove(&inst).await;
            e.instance = None;
            force_state(
                &mut e.w,
                State::Scheduled,
                "stale instance removed after an agent restart",
                now,
            );
        }
        Observed::Exited(exit) => {
            let _ = driver.remove(&inst).await;
            e.instance = None;
            e.w.exit_code = exit.code;
            let to = if exit.failed {
                State::Failed
            } else {
                State::Stopped
            };
            force_state(&mut e.w, to, exit.reason, now);
        }
        Observed::Gone => {
            e.instance = None;
            if e.w.desired == Desired::Running {
                force_state(
                    &mut e.w,
                    State::Scheduled,
                    "lost with the previous agent run",
                    now,
                );
            } else {
                force_state(
                    &mut e.w,
                    State::Stopped,
                    "lost with the previous agent run",
                    now,
                );
            }
        }
    }
}

/// Set a state after a restart, through legal steps where needed.
fn force_state(w: &mut Workload, to: State, reason: impl Into<String>, now: u64) {
    let reason = reason.into();
    if w.transition(to, reason.clone(), now).is_err() {
        for via in [
            State::Stopping,
            State::Stopped,
            State::Scheduled,
            State::Starting,
        ] {
            if w.state.can_become(via) && via.can_become(to) {
                let _ = w.transition(via, reason.clone(), now);
                let _ = w.transition(to, reason.clone(), now);
                return;
            }
        }
        tracing::warn!(workload = %w.id, from = %w.state, %to, "no legal path; state left as it was");
    }
}

//! # locus-agent
//!
//! The node daemon's core: it turns a data dir and a [`Config`] into a
//! running [`Node`] — identity, store, host inventory, metrics — and keeps
//! them current with background loops.
//!
//! Owns: the data dir layout (`locus.db`, `lock`), the start and
//! stop sequence, and the loops that refresh what the node knows of itself.
//!
//! Must never: speak HTTP (that is `locus-api`), parse command lines (that is
//! the `locus` binary), or replace a key or database it cannot read.

pub mod inventory;
pub mod metrics;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use locus_core::cluster::NodeInfo;
use locus_core::inventory::Inventory;
use locus_core::{Config, Health, HealthStatus, NodeId, NodeStatus};
use locus_fabric::udp::{FabricConfig, FabricError, FabricHandle};
use locus_fabric::{ClusterKey, Member, Tuning};
use locus_store::{Boot, Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use inventory::HostPaths;
pub use locus_artifacts::Artifacts;
pub use locus_readings::Readings;
pub use locus_things::{Doors, DoorsSetup, Things};
pub use locus_trust::IdentityError;
use locus_trust::{access, audit, credentials, identity};
pub use locus_workloads::Workloads;
pub use metrics::Metrics;

/// Name of the lock file that keeps two agents off one data dir.
pub const LOCK_FILE: &str = "lock";

/// How long a health check waits for the store.
const HEALTH_STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the node keeps its key, database and artifacts.
    pub data_dir: PathBuf,
    /// Validated configuration.
    pub config: Config,
    /// Where host facts are read from (`/proc`, `/sys`).
    pub host_paths: HostPaths,
    /// The address the API actually listens on (known once bound).
    pub api_addr: SocketAddr,
    /// A join token to enroll with, when this node is not enrolled yet.
    pub join: Option<String>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the data dir {path} is in use by another locus agent{holder}")]
    Locked { path: PathBuf, holder: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("invalid gossip configuration: {0}")]
    Gossip(String),
    #[error("cannot read the cluster key {path}: {reason}")]
    ClusterKey { path: PathBuf, reason: String },
    #[error(transparent)]
    Fabric(#[from] FabricError),
    #[error("cannot load the readings: {0}")]
    Readings(String),
    #[error("cannot open the artifact store: {0}")]
    Artifacts(String),
    #[error("cannot load the workloads: {0}")]
    Workloads(String),
    #[error("cannot load the things: {0}")]
    Things(String),
    #[error("cannot load the market: {0}")]
    Market(String),
    #[error(transparent)]
    Doors(#[from] locus_things::DoorsError),
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("this node's credentials: {0}")]
    Trust(#[from] locus_access::TrustError),
    #[error(transparent)]
    Access(#[from] access::AccessError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Signs this node's calls to other nodes with its key
/// (`locus_access::request`): the date from the system clock, the nonce
/// 16 bytes from the OS.
/// The call also carries the node's certificate (`locus-cert`, hex), so
/// that a peer the fabric has not told about this node yet can check it.
struct KeySigner(SigningKey, String);

impl locus_core::RequestSigner for KeySigner {
    fn sign_digest(
        &self,
        method: &str,
        path_and_query: &str,
        body_digest: [u8; 32],
    ) -> Vec<(&'static str, String)> {
        let mut nonce = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut nonce) {
            tracing::error!(error = %e, "no randomness for a request nonce; the call goes unsigned");
            return Vec::new();
        }
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut headers = locus_access::request::sign_request_digest(
            &self.0,
            method,
            path_and_query,
            body_digest,
            date,
            nonce,
        )
        .into_header_pairs();
        headers.push((locus_access::request::HEADER_CERT, self.1.clone()));
        headers
    }
}

/// A running node.
pub struct Node {
    id: NodeId,
    key: SigningKey,
    /// What this node publishes about itself (name, key, site, labels…).
    info: NodeInfo,
    settings: Settings,
    store: Store,
    boot: Boot,
    started: Instant,
    inventory: watch::Receiver<Arc<Inventory>>,
    metrics: Arc<Metrics>,
    fabric: FabricHandle,
    capacity: Arc<locus_workloads::CapacityPublisher>,
    workloads: Workloads,
    artifacts: Artifacts,
    readings: Readings,
    things: Things,
    doors: Doors,
    market: locus_marketplace::Market,
    market_loop: JoinHandle<()>,
    things_failover: JoinHandle<()>,
    access: Arc<access::Access>,
    access_loop: JoinHandle<()>,
    auditor: audit::Auditor,
    audit_loop: JoinHandle<()>,
    refresh: JoinHandle<()>,
    /// Checkpoint, retention and export loops of the readings.
    readings_loops: Vec<JoinHandle<()>>,
    reconcile: JoinHandle<()>,
    repair: JoinHandle<()>,
    _lock: File,
}

impl Node {
    /// Open the data dir, load or create the identity, open the store,
    /// record this start, take a first inventory and start the refresh loop.
    pub async fn start(settings: Settings) -> Result<Node, AgentError> {
        let started = Instant::now();
        let started_at_unix_ms = unix_ms();
        let data_dir = settings.data_dir.clone();
        let dir_err = |source| AgentError::DataDir {
            path: data_dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
            .map_err(dir_err)?;
        let lock = lock_data_dir(&data_dir)?;
        let mut settings = settings;
        // Everything that can be refused is checked before the store is touched.
        let advertise = settings
            .config
            .gossip_advertise_addr()
            .map_err(AgentError::Gossip)?;

        if !settings.config.access.require_tokens && !settings.api_addr.ip().is_loopback() {
            return Err(AgentError::Config(format!(
                "[access] require_tokens = false is refused on a non-loopback API address ({}): \
                 anyone who reaches it could do anything",
                settings.api_addr
            )));
        }
        let (key, origin) = identity::load_or_create(&data_dir)?;
        let id = NodeId::from_public_key(&key.verifying_key());
        let name = settings
            .config
            .name
            .as_ref()
            .map(|n| n.get().clone())
            .unwrap_or_else(|| default_name(id));
        let creds = credentials::settle(&data_dir, &key, settings.join.as_deref(), &name).await?;
        let trust = locus_access::Trust::new(
            key.verifying_key(),
            creds.cert.clone(),
            creds.log.clone(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )?;
        // What a join token left: the cluster key and the seed.
        if settings.config.cluster_key_file.is_none() {
            settings.config.cluster_key_file = credentials::stored_cluster_key(&data_dir);
        }
        for seed in credentials::stored_seeds(&data_dir) {
            if !settings.config.seeds.iter().any(|s| s.get() == &seed)
                && let Ok(seed) = locus_core::config::Seed::try_from(seed)
            {
                settings.config.seeds.push(seed);
            }
        }
        let cluster_key = load_cluster_key(&settings.config)?;
        let admin_token = match &creds.org_key {
            Some(_) => Some(credentials::ensure_admin_token(
                &data_dir,
                &key,
                &creds.cert,
            )?),
            None => None,
        };
        let enroller = match creds.org_key.clone() {
            Some(k) => Some(credentials::Enroller::open(&data_dir, k)?),
            None => None,
        };
        let store = Store::open(&data_dir)?;
        store.bind_node(id).await?;
        let boot = store
            .begin_boot(locus_core::VERSION, started_at_unix_ms)
            .await?;
        match boot.previous_clean {
            Some(false) => tracing::warn!(
                generation = boot.generation,
                "previous run did not stop cleanly; recovering"
            ),
            _ => tracing::debug!(generation = boot.generation, "boot recorded"),
        }

        let metrics = Arc::new(Metrics::new(locus_core::VERSION)?);
        metrics.generation.set(boot.generation as i64);

        let fabric = locus_fabric::udp::start(FabricConfig {
            me: Member {
                id,
                addr: advertise,
                generation: boot.generation,
                bump: 0,
            },
            bind: settings.config.gossip_addr(),
            seeds: settings
                .config
                .seeds
                .iter()
                .map(|s| s.get().clone())
                .collect(),
            key: cluster_key.clone(),
            tuning: Tuning::default(),
        })
        .await?;
        let access = Arc::new(access::Access::new(access::AccessSetup {
            data_dir: data_dir.clone(),
            key: key.clone(),
            trust,
            enroller,
            fabric: fabric.clone(),
            admin_token,
            api_addr: settings.api_addr.to_string(),
            gossip_addr: advertise.to_string(),
            cluster_key: cluster_key.as_ref().map(ClusterKey::to_bytes),
            require_tokens: settings.config.access.require_tokens,
            public_metrics: settings.config.access.public_metrics,
        }));
        let access_loop = access::follow(access.clone()).await?;
        let info = NodeInfo {
            id,
            public_key: locus_core::hex(key.verifying_key().as_bytes()),
            name: name.clone(),
            site: settings.config.site.clone(),
            api_addr: settings.api_addr.to_string(),
            gossip_addr: advertise.to_string(),
            labels: settings
                .config
                .labels
                .iter()
                .map(|(k, v)| (k.get().clone(), v.get().clone()))
                .collect(),
            version: locus_core::VERSION.to_owned(),
            generation: boot.generation,
            started_at_unix_ms,
            energy: settings.config.energy.clone(),
        };
        fabric
            .publish_json(locus_fabric::fabric::KEY_INFO, &info)
            .await
            .map_err(|e| {
                AgentError::Gossip(format!(
                    "cannot publish the node info ({e}); use fewer or shorter labels"
                ))
            })?;

        let first = collect_inventory(&settings.host_paths, &data_dir).await;
        metrics.inventory_refreshes.inc();
        let capacity = Arc::new(locus_workloads::CapacityPublisher::new(fabric.clone()));
        let drivers = drivers(id).await;
        capacity.set_usage(
            Default::default(),
            drivers.iter().map(|d| d.kind()).collect(),
        );
        capacity.publish(&first).await;
        let (tx, inventory) = watch::channel(Arc::new(first));
        let refresh = tokio::spawn(refresh_inventory(
            tx,
            settings.host_paths.clone(),
            data_dir.clone(),
            Duration::from_secs(*settings.config.inventory.refresh_secs.get()),
            metrics.inventory_refreshes.clone(),
            capacity.clone(),
        ));
        let signer: locus_core::Signer = Arc::new(KeySigner(
            key.clone(),
            locus_access::trust::cert_to_hex(&creds.cert),
        ));
        let (artifacts, repair) = Artifacts::start(locus_artifacts::ArtifactsSetup {
            me: id,
            signer: signer.clone(),
            data_dir: data_dir.clone(),
            store: store.clone(),
            fabric: fabric.clone(),
            metrics: metrics.artifacts.clone(),
            budget_bytes: settings.config.artifacts.disk_budget_bytes(),
        })
        .await
        .map_err(|e| AgentError::Artifacts(e.to_string()))?;
        let (readings, readings_loops) = Readings::start(locus_readings::ReadingsSetup {
            store: store.clone(),
            key: key.clone(),
            node: id,
            signer: signer.clone(),
            metrics: metrics.readings.clone(),
            config: settings.config.readings.clone(),
        })
        .await
        .map_err(|e| AgentError::Readings(e.to_string()))?;
        let (auditor, audit_loop) = audit::start(readings.clone(), metrics.audit_dropped.clone());
        let things = Things::start(id, store.clone(), fabric.clone(), signer.clone())
            .await
            .map_err(|e| AgentError::Things(e.to_string()))?;
        let things_config = &settings.config.things;
        let doors = Doors::open(
            DoorsSetup {
                client_id: format!("locus-{id}"),
                upstream: things_config.mqtt_broker.clone(),
                mqtt: things_config.mqtt.then(|| settings.config.mqtt_addr()),
                lwm2m: things_config.lwm2m.then(|| {
                    locus_things::lwm2m::Settings::new(
                        settings.config.lwm2m_addr(),
                        settings.config.lwm2m_bootstrap_addr(),
                    )
                    .dtls(
                        settings.config.lwm2m_dtls_addr(),
                        settings.config.lwm2m_bootstrap_dtls_addr(),
                    )
                }),
                advertise: advertise.ip(),
            },
            things.clone(),
            readings.clone(),
            metrics.things.clone(),
        )
        .await?;
        // The market starts after the workloads it measures; the workloads
        // ask it about standbys once it is there.
        let standbys = Arc::new(MarketStandbys(std::sync::OnceLock::new()));
        let (workloads, reconcile) = Workloads::start(locus_workloads::WorkloadsSetup {
            standbys: standbys.clone(),
            artifacts: Arc::new(SourceOf(artifacts.clone())),
            me: id,
            signer: signer.clone(),
            peers: access.clone(),
            data_dir: data_dir.clone(),
            store: store.clone(),
            fabric: fabric.clone(),
            capacity: capacity.clone(),
            inventory: inventory.clone(),
            metrics: metrics.workloads.clone(),
            drivers,
            // After a restart, first learn whether the workloads moved.
            hold: if boot.generation > 1 {
                Duration::from_secs(3)
            } else {
                Duration::ZERO
            },
        })
        .await
        .map_err(|e| AgentError::Workloads(e.to_string()))?;
        let rules = match &settings.config.market.rules {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    AgentError::Config(format!(
                        "cannot read the market rules {}: {e}",
                        path.display()
                    ))
                })?;
                locus_market::Rules::from_toml(&text)
                    .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?
            }
            None => locus_market::Rules::default(),
        };
        let (market, market_loop) =
            locus_marketplace::Market::start(locus_marketplace::MarketSetup {
                me: id,
                store: store.clone(),
                fabric: fabric.clone(),
                party: access.clone(),
                signer: signer.clone(),
                rules,
                round: Duration::from_secs(*settings.config.market.round_secs.get()),
                cover: Arc::new(CoverOf {
                    workloads: workloads.clone(),
                    artifacts: artifacts.clone(),
                    readings: readings.clone(),
                    fabric: fabric.clone(),
                    me: id,
                }),
                witnesses: *settings.config.market.witnesses.get() as usize,
                answer_secs: *settings.config.market.answer_secs.get(),
            })
            .await
            .map_err(|e| AgentError::Market(e.to_string()))?;
        let _ = standbys.0.set(market.clone());
        let things_failover = things.spawn_failover(
            standbys.clone(),
            Arc::new(HomesOf(workloads.clone())),
            access.clone(),
        );
        tracing::info!(
            node = %id,
            %name,
            generation = boot.generation,
            key = if origin == identity::KeyOrigin::Created { "created" } else { "loaded" },
            org = %access.org(),
            credentials = ?creds.origin,
            data_dir = %data_dir.display(),
            "node started"
        );
        Ok(Node {
            id,
            key,
            info,
            settings,
            store,
            boot,
            started,
            inventory,
            metrics,
            fabric,
            capacity,
            workloads,
            artifacts,
            readings,
            things,
            doors,
            market,
            market_loop,
            things_failover,
            access,
            access_loop,
            auditor,
            audit_loop,
            refresh,
            readings_loops,
            reconcile,
            repair,
            _lock: lock,
        })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// This start's generation.
    pub fn generation(&self) -> u64 {
        self.boot.generation
    }

    /// The node's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Who this node trusts, and its acts of access.
    pub fn access(&self) -> &Arc<access::Access> {
        &self.access
    }

    /// Where the API records mutating calls.
    pub fn audit(&self) -> &audit::Auditor {
        &self.auditor
    }

    /// The node's fabric.
    pub fn fabric(&self) -> &FabricHandle {
        &self.fabric
    }

    /// The workloads this node owns, and the cluster's.
    pub fn workloads(&self) -> &Workloads {
        &self.workloads
    }

    /// The things this node manages, and the directory of all things.
    pub fn things(&self) -> &Things {
        &self.things
    }

    /// This node's part in the market between orgs.
    pub fn market(&self) -> &locus_marketplace::Market {
        &self.market
    }

    /// The device doors: MQTT, LwM2M, commands.
    pub fn doors(&self) -> &Doors {
        &self.doors
    }

    /// The readings this node accepted, sealed.
    pub fn readings(&self) -> &Readings {
        &self.readings
    }

    /// The artifacts this node holds, and the cluster's.
    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    /// The capacity as published.
    pub fn capacity(&self) -> locus_core::cluster::Capacity {
        self.capacity.current(&self.inventory())
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The latest host inventory.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.borrow().clone()
    }

    /// Everything the node says about itself.
    pub fn status(&self) -> NodeStatus {
        let info = &self.info;
        NodeStatus {
            id: self.id,
            public_key: info.public_key.clone(),
            name: info.name.clone(),
            version: info.version.clone(),
            generation: info.generation,
            site: info.site.clone(),
            labels: info.labels.clone(),
            api_addr: info.api_addr.clone(),
            gossip_addr: self.fabric.local_addr().to_string(),
            mqtt_addr: self.doors.endpoints().mqtt.clone(),
            lwm2m_addr: self.doors.endpoints().lwm2m.clone(),
            lwm2m_bootstrap_addr: self.doors.endpoints().bootstrap.clone(),
            lwm2m_dtls_addr: self.doors.endpoints().lwm2m_dtls.clone(),
            lwm2m_bootstrap_dtls_addr: self.doors.endpoints().bootstrap_dtls.clone(),
            seeds: self
                .settings
                .config
                .seeds
                .iter()
                .map(|s| s.get().clone())
                .collect(),
            energy: info.energy.clone(),
            started_at_unix_ms: info.started_at_unix_ms,
            uptime_secs: self.uptime().as_secs(),
            inventory: (*self.inventory()).clone(),
        }
    }

    /// Whether the node's parts answer.
    pub async fn health(&self) -> Health {
        let store_ok = matches!(
            tokio::time::timeout(HEALTH_STORE_TIMEOUT, self.store.schema_version()).await,
            Ok(Ok(_))
        );
        Health {
            status: if store_ok {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            node: self.id,
            uptime_secs: self.uptime().as_secs(),
        }
    }

    /// Announce the leave to the cluster, stop the loops, record a clean
    /// stop and close the store.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        // The reverse of the start: workloads, (device doors end with the
        // process), readings, artifacts, the inventory, the fabric, the store.
        self.market_loop.abort();
        self.things_failover.abort();
        self.reconcile.abort();
        self.workloads.shutdown().await;
        for l in &self.readings_loops {
            l.abort();
        }
        if let Err(e) = self.readings.checkpoint().await {
            tracing::warn!(error = %e, "cannot sign the last checkpoint");
        }
        self.repair.abort();
        self.refresh.abort();
        self.access_loop.abort();
        self.audit_loop.abort();
        self.fabric.leave().await;
        self.store.end_boot(self.boot.generation, unix_ms()).await?;
        self.store.close().await?;
        tracing::info!(node = %self.id, "node stopped cleanly");
        Ok(())
    }
}

/// Take the data dir's lock, or say who holds it.
fn lock_data_dir(data_dir: &Path) -> Result<File, AgentError> {
    let path = data_dir.join(LOCK_FILE);
    let io_err = |source| AgentError::DataDir {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(AgentError::Locked {
                path: data_dir.to_owned(),
                holder: if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    file.set_len(0).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    write!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}

async fn collect_inventory(paths: &HostPaths, data_dir: &Path) -> Inventory {
    let paths = paths.clone();
    let dir = data_dir.to_owned();
    let fallback = (paths.clone(), dir.clone());
    match tokio::task::spawn_blocking(move || inventory::collect(&paths, &dir)).await {
        Ok(inv) => inv,
        // The blocking pool is gone (runtime shutting down): read inline.
        Err(_) => inventory::collect(&fallback.0, &fallback.1),
    }
}

async fn refresh_inventory(
    tx: watch::Sender<Arc<Inventory>>,
    paths: HostPaths,
    data_dir: PathBuf,
    every: Duration,
    refreshes: prometheus::IntCounter,
    capacity: Arc<locus_workloads::CapacityPublisher>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let inv = collect_inventory(&paths, &data_dir).await;
        refreshes.inc();
        capacity.publish(&inv).await;
        if tx.send(Arc::new(inv)).is_err() {
            return;
        }
    }
}

/// The drivers that answer their probe on this host.
async fn drivers(node: NodeId) -> Vec<Arc<dyn locus_runtime::Driver>> {
    use locus_runtime::Driver;
    let mut out: Vec<Arc<dyn Driver>> = Vec::new();
    #[cfg(feature = "wasm")]
    match locus_runtime::wasm::WasmDriver::new() {
        Ok(d) => out.push(Arc::new(d)),
        Err(e) => tracing::warn!(error = %e, "the wasm driver is not available"),
    }
    out.push(Arc::new(locus_runtime::process::ProcessDriver::new()));
    match locus_runtime::container::ContainerDriver::connect() {
        Ok(d) => match d.probe().await.map(|()| d.for_node(node.to_string())) {
            Ok(d) => out.push(Arc::new(d)),
            Err(e) => tracing::info!(error = %e, "no container driver"),
        },
        Err(e) => tracing::info!(error = %e, "no container driver"),
    }
    out
}

/// Host name if it is a valid node name, else `node-<id prefix>`.
fn default_name(id: NodeId) -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| locus_core::config::NodeName::try_from(h).ok())
        .map(|n| n.get().clone())
        .unwrap_or_else(|| format!("node-{}", &id.to_string()[..8]))
}

/// Read the cluster key named by the configuration, if any.
fn load_cluster_key(config: &Config) -> Result<Option<ClusterKey>, AgentError> {
    let Some(path) = &config.cluster_key_file else {
        if !config.gossip_addr().ip().is_loopback() {
            tracing::warn!(
                "gossip is not on loopback and has no cluster key: anyone who reaches the port can join; see `locus keygen`"
            );
        }
        return Ok(None);
    };
    let err = |reason: String| AgentError::ClusterKey {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    ClusterKey::parse(&text).map(Some).map_err(err)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The market as the workloads see it: standbys named by contracts, and
/// the customers to give work back to. Empty until the market starts.
/// Where the workloads that manage things run now, for the things'
/// failover.
struct HomesOf(Workloads);

#[async_trait::async_trait]
impl locus_things::WorkloadHomes for HomesOf {
    async fn home_of(&self, workload: &str) -> Option<NodeId> {
        self.0.owner_of(workload).await
    }
}

struct MarketStandbys(std::sync::OnceLock<locus_marketplace::Market>);

impl locus_things::ThingStandbys for MarketStandbys {
    fn standby(&self, manager: NodeId, thing: &str) -> Option<locus_sched::Standby> {
        self.0.get()?.thing_standby(manager, thing)
    }
    fn hand_back(&self, thing: &str) -> Option<NodeId> {
        self.0.get()?.thing_hand_back(thing)
    }
}

impl locus_workloads::Standbys for MarketStandbys {
    fn standby(&self, w: &locus_core::workload::WorkloadSummary) -> Option<locus_sched::Standby> {
        self.0.get()?.standby(w)
    }
    fn hand_back(&self, w: &locus_core::workload::WorkloadSummary) -> Option<NodeId> {
        self.0.get()?.hand_back(w)
    }
}

/// The workloads as the market sees them: what the covered ones
/// measurably use.
struct CoverOf {
    workloads: Workloads,
    artifacts: Artifacts,
    readings: Readings,
    fabric: FabricHandle,
    me: NodeId,
}

#[async_trait::async_trait]
impl locus_marketplace::CoverSource for CoverOf {
    async fn estimate(
        &self,
        names: &std::collections::BTreeSet<String>,
    ) -> Result<(locus_market::Resources, std::collections::BTreeSet<String>), String> {
        let me = self.me;
        let mut ids = std::collections::BTreeSet::new();
        let usage = self.workloads.usage().await;
        let all = self.workloads.list().await;
        let mut sum = locus_market::Resources::default();
        for name in names {
            let found = all
                .iter()
                .find(|w| w.summary.name == *name || w.summary.id.to_string() == *name);
            let w = found.ok_or_else(|| format!("workloads.{name}: no such workload"))?;
            if w.summary.owner != me {
                return Err(format!(
                    "workloads.{name}: owned by node {}, not this one; a request covers this node's workloads",
                    w.summary.owner
                ));
            }
            let u = usage
                .get(&w.summary.id)
                .filter(|u| u.samples >= 2)
                .ok_or_else(|| {
                    format!("workloads.{name}: not measured yet (it must run for about 10 s first)")
                })?;
            ids.insert(w.summary.id.to_string());
            sum = sum.plus(&locus_market::Resources {
                cpu_millis: (u.cpu_cores_peak * 1000.0)
                    .ceil()
                    .clamp(1.0, f64::from(u32::MAX)) as u32,
                memory_bytes: u.memory_bytes_peak,
                storage_bytes: 0,
                bandwidth_kbps: 0,
            });
        }
        Ok((sum, ids))
    }

    async fn prepare(
        &self,
        customer: NodeId,
        names: &std::collections::BTreeSet<String>,
    ) -> Vec<String> {
        let nodes = self.fabric.nodes().await;
        let Some(me) = nodes.iter().find(|n| n.id == self.me) else {
            return vec!["the fabric does not know this node yet".to_owned()];
        };
        let mut lines = Vec::new();
        for name in names {
            let Some(spec) = self.workloads.spec_of(customer, name).await else {
                lines.push(format!("{name}: its spec is not here yet"));
                continue;
            };
            let fits = match locus_sched::assess(&spec, me, &nodes) {
                Ok(_) => "would run here".to_owned(),
                Err(why) => format!("would not run here: {}", why.join("; ")),
            };
            let source = match locus_core::ArtifactId::from_source(spec.source.get()) {
                Some(Ok(cid)) => {
                    drop(self.artifacts.fetch(cid).await);
                    format!("; fetching its source {cid}")
                }
                _ => String::new(),
            };
            // A contract names workloads by id: say which one it is.
            let label = if spec.name.get() == name {
                name.clone()
            } else {
                format!("{} ({name})", spec.name.get())
            };
            lines.push(format!("{label}: {fits}{source}"));
        }
        lines
    }

    async fn readings_taken(
        &self,
        things: &std::collections::BTreeSet<String>,
        from_ms: u64,
    ) -> Result<(String, Vec<locus_iot::Bundle>), String> {
        let mut bundles = Vec::new();
        for thing in things {
            let from = i64::try_from(from_ms).unwrap_or(i64::MAX);
            if let Some(b) = self
                .readings
                .bundle_of(thing, from)
                .await
                .map_err(|e| format!("readings of {thing}: {e}"))?
            {
                bundles.push(b);
            }
        }
        Ok((self.readings.verifier_key(), bundles))
    }

    async fn take_readings(
        &self,
        provider: NodeId,
        verifier_key: &str,
        bundle: locus_iot::Bundle,
    ) -> Result<u64, String> {
        // Every entry must prove its inclusion in the provider's signed
        // log; only the seqs of other things may be missing.
        let problems = locus_iot::seal::verify_selection(&bundle, verifier_key);
        if !problems.is_empty() {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(format!(
                "the readings do not verify: {}",
                problems.join("; ")
            ));
        }
        let readings = bundle
            .entries
            .into_iter()
            .map(|e| (e.seq, e.reading))
            .collect();
        let result = self
            .readings
            .import(&provider.to_string(), verifier_key, readings)
            .await
            .map_err(|e| e.to_string())?;
        Ok(result.stored)
    }
}

/// The artifact service as the workloads see it: a `cid:` source made
/// local, and the artifacts in use.
struct SourceOf(Artifacts);

#[async_trait::async_trait]
impl locus_workloads::ArtifactSource for SourceOf {
    async fn local_path(
        &self,
        id: locus_core::ArtifactId,
    ) -> Result<PathBuf, locus_workloads::SourceError> {
        match self.0.fetch_and_wait(id).await {
            Ok(_) => Ok(self.0.path(&id)),
            Err(locus_artifacts::service::ArtifactsError::NoHolder(id)) => {
                Err(locus_workloads::SourceError::NoHolder(id))
            }
            Err(e) => Err(locus_workloads::SourceError::Other(format!(
                "cannot fetch the source artifact: {e}"
            ))),
        }
    }

    async fn live_holders(
        &self,
        ids: &std::collections::BTreeSet<locus_core::ArtifactId>,
    ) -> std::collections::BTreeMap<locus_core::ArtifactId, std::collections::BTreeSet<NodeId>>
    {
        self.0.live_holders(ids).await
    }

    fn set_in_use(&self, ids: std::collections::BTreeSet<locus_core::ArtifactId>) {
        self.0.set_in_use(ids);
    }
}

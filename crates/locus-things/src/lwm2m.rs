//! LwM2M 1.0 and 1.1 over CoAP (UDP) and over CoAP with DTLS 1.2 and a
//! pre-shared key (coaps): the node's bootstrap server and LwM2M server for
//! the things it knows.
//!
//! Four sockets, each a CoAP endpoint ([`coap`], on `coap-lite`): each
//! server on plain UDP and on DTLS ([`dtls`], OpenSSL), with the same code
//! above the transport:
//!
//! - the **bootstrap server** answers `POST /bs?ep=NAME` from a client whose
//!   endpoint name is an LWM2M thing anywhere in the cluster with 2.04, then
//!   configures the client, in order and each confirmed before the next:
//!   Delete `/0`, Delete `/1`, Bootstrap-Discover `/0`, Write of a Security
//!   instance naming the LWM2M server of the thing's manager node (NoSec
//!   and `coap://`, or PSK and the `coaps://` server), Write `/1/0` (a
//!   Server instance: short server id, lifetime, binding `U`), then
//!   Bootstrap-Finish (`POST /bs`);
//! - the **LWM2M server** takes Register (`POST /rd`), Update
//!   (`POST /rd/<id>`) and De-register (`DELETE /rd/<id>`) from the things
//!   this node manages, expires registrations after their lifetime,
//!   observes every resource of the thing marked `observe` that the client
//!   announced, and stores each notification as a reading
//!   ([`Readings::ingest`]) — a confirmable notification is acknowledged
//!   only once its reading is durable. Commands go the other way:
//!   [`Lwm2m::read`], [`Lwm2m::write`], [`Lwm2m::execute`] and
//!   [`Lwm2m::rebootstrap`] (Execute `/1/0/9`, Bootstrap-Request Trigger).
//!
//! A client over DTLS is the PSK identity its session authenticated: it is
//! served only as the thing with that identity, a thing with a PSK is
//! served only over DTLS (it would be handed its key, or act as itself,
//! without one), and a registration is updated or ended only over the kind
//! of session it was made over. Everything the servers send a client
//! (observations, commands, the bootstrap's requests) goes over the session
//! it came from.
//!
//! Which things exist, where their manager is, what their resources and
//! keys are comes from a [`Lwm2mDirectory`], which the thing registry
//! implements.
//!
//! Owns: the four sockets, the registrations (by id, with their client
//! address, its PSK identity over DTLS, and the thing they belong to), the
//! observations (by token), the bootstraps in progress and a short history
//! of finished ones.
//!
//! Must never: decide which node manages a thing (the directory says),
//! acknowledge a notification before its reading is stored, wait without a
//! timeout on a client, hold more than the named limits below, parse CoAP,
//! TLV or link format by hand (coap-lite and `locus_iot::lwm2m` do), serve
//! a client as a thing its session does not authenticate, send a PSK over
//! plain CoAP, or crash on anything a client sends.

mod bootstrap;
pub mod coap;
pub mod dtls;
mod server;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap_lite::{Packet, RequestType, ResponseType};
use locus_iot::Value;
use locus_iot::lwm2m::content::{
    self, ContentError, PathError, ResourceDef, ResourceKind, ResourcePath,
};
use locus_iot::lwm2m::query;
use locus_iot::lwm2m::registry::{Registry, RegistryError};
use locus_iot::lwm2m::{self as iot, Method, Security, SecurityMode, Server};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

pub use coap::{ACK_TIMEOUT, CoapError, MAX_RETRANSMIT, RESPONSE_TIMEOUT, Timing};

use crate::metrics::ThingMetrics;
use bootstrap::BootstrapRole;
use coap::{Endpoint, Outgoing, Peer, Reply, Service, Transport, Verdict};
use dtls::{Dtls, DtlsError, PskKeys};
use locus_readings::Readings;
use server::{ServerRole, expire_registrations, store_notifications};

/// Most registrations the LWM2M server holds.
pub const MAX_REGISTRATIONS: usize = 1024;
/// Most observations in place at once, over all registrations.
pub const MAX_OBSERVATIONS: usize = 8192;
/// Most bootstraps in progress at once.
pub const MAX_BOOTSTRAPS: usize = 32;
/// How many finished bootstraps [`Lwm2m::bootstraps`] remembers.
pub const BOOTSTRAP_HISTORY: usize = 64;
/// Endpoints whose bootstrap content format is remembered.
pub const MAX_REMEMBERED_FORMATS: usize = 1024;
/// Notifications waiting to be stored; beyond, a confirmable one is left
/// unacknowledged (the client sends it again) and a non-confirmable one is
/// dropped.
pub const NOTIFICATION_QUEUE: usize = 256;
/// How often expired registrations are removed.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// The registration lifetime written into the Server object.
pub const DEFAULT_LIFETIME_S: u32 = 300;
/// The short server id of this node's LWM2M server in the clients' Security
/// and Server objects.
pub const SHORT_SERVER_ID: u16 = 1;
/// The Bootstrap-Request Trigger resource of the Server object.
pub const BOOTSTRAP_TRIGGER: &str = "/1/0/9";
/// Longest wait for the directory to name a thing; beyond, the request is
/// answered 5.03 Service Unavailable.
pub const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 7641 §3.4: a notification more than this after the last one is
/// newer whatever its sequence number says.
const OBSERVE_FRESH_AFTER: Duration = Duration::from_secs(128);

/// The LWM2M things of the cluster, as the LWM2M module needs them. The
/// thing registry implements it.
#[async_trait::async_trait]
pub trait Lwm2mDirectory: Send + Sync + 'static {
    /// The LWM2M thing with this client endpoint name, anywhere in the
    /// cluster (the bootstrap server serves any; the LWM2M server accepts
    /// only the ones managed here).
    async fn lwm2m_thing(&self, endpoint: &str) -> Option<Lwm2mThing>;

    /// The LWM2M thing with PSK identity `identity`, anywhere in the
    /// cluster, when exactly one has it: the DTLS sockets take the key of a
    /// client's session from it.
    async fn lwm2m_psk(&self, identity: &[u8]) -> Option<Lwm2mThing>;
}

/// The keys of the DTLS sockets: the PSK of the thing with the identity.
struct DirectoryKeys(Arc<dyn Lwm2mDirectory>);

#[async_trait::async_trait]
impl PskKeys for DirectoryKeys {
    async fn psk_key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        match self.0.lwm2m_psk(identity).await?.security {
            SecurityMode::Psk { identity: id, key } if id == identity => Some(key),
            _ => None,
        }
    }
}

/// An LWM2M thing.
#[derive(Clone, PartialEq, Eq)]
pub struct Lwm2mThing {
    /// The thing's name: the `thing` of its readings.
    pub name: String,
    /// Its LwM2M client endpoint name.
    pub endpoint: String,
    /// Whether this node is its manager.
    pub managed_here: bool,
    /// What the bootstrap writes as its LWM2M server: `coap://host:port`
    /// of its manager node's LWM2M server, or with PSK credentials
    /// `coaps://host:port` of its DTLS LWM2M server.
    pub server_uri: String,
    pub security: SecurityMode,
    pub resources: Vec<Lwm2mResource>,
}

// By hand: the PSK must not reach a log.
impl std::fmt::Debug for Lwm2mThing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lwm2mThing")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("managed_here", &self.managed_here)
            .field("server_uri", &self.server_uri)
            .field(
                "security",
                &match self.security {
                    SecurityMode::NoSec => "NoSec",
                    SecurityMode::Psk { .. } => "Psk",
                },
            )
            .field("resources", &self.resources)
            .finish()
    }
}

/// A resource of an LWM2M thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lwm2mResource {
    /// The reading's resource name.
    pub name: String,
    /// `object/instance/resource`, e.g. `3303/0/5700`.
    pub path: String,
    pub unit: Option<String>,
    /// Observe it while the thing is registered, storing every value.
    pub observe: bool,
    /// Its data type, which TLV values need to be read and written; when
    /// absent, [`ResourceKind::well_known`] is asked, else a TLV value is
    /// read as opaque data and a write goes as text.
    pub kind: Option<ResourceKind>,
}

impl Lwm2mThing {
    fn def(&self, r: &Lwm2mResource) -> Result<ResourceDef, PathError> {
        Ok(ResourceDef {
            name: r.name.clone(),
            path: r.path.parse()?,
            unit: r.unit.clone(),
            kind: r.kind,
        })
    }

    /// The kind of the resource at `path`: as defined for the thing, else
    /// well known.
    fn kind_of(&self, path: &ResourcePath) -> Option<ResourceKind> {
        self.resources
            .iter()
            .find(|r| r.path.parse::<ResourcePath>().ok().as_ref() == Some(path))
            .and_then(|r| r.kind)
            .or_else(|| ResourceKind::well_known(path))
    }
}

/// Where the two servers listen, over CoAP and over CoAP with DTLS, and
/// how they behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The LWM2M server's UDP address (LwM2M's default port is 5683).
    pub server_bind: SocketAddr,
    /// The bootstrap server's UDP address (conventionally 5783 when the
    /// LWM2M server has 5683).
    pub bootstrap_bind: SocketAddr,
    /// The LWM2M server's DTLS (coaps) address (LwM2M's default port is
    /// 5684).
    pub server_dtls_bind: SocketAddr,
    /// The bootstrap server's DTLS (coaps) address (conventionally 5784).
    pub bootstrap_dtls_bind: SocketAddr,
    /// CoAP retransmission timing (RFC 7252's by default).
    pub timing: Timing,
    /// The lifetime written into the clients' Server object.
    pub lifetime_s: u32,
    /// The short server id written into their Security and Server objects.
    pub short_server_id: u16,
}

impl Settings {
    /// The plain CoAP sockets at these addresses, the DTLS ones at free
    /// ports of the same addresses ([`Settings::dtls`] sets them).
    pub fn new(server_bind: SocketAddr, bootstrap_bind: SocketAddr) -> Self {
        Self {
            server_bind,
            bootstrap_bind,
            server_dtls_bind: SocketAddr::new(server_bind.ip(), 0),
            bootstrap_dtls_bind: SocketAddr::new(bootstrap_bind.ip(), 0),
            timing: Timing::default(),
            lifetime_s: DEFAULT_LIFETIME_S,
            short_server_id: SHORT_SERVER_ID,
        }
    }

    /// The DTLS sockets at these addresses.
    pub fn dtls(mut self, server_dtls_bind: SocketAddr, bootstrap_dtls_bind: SocketAddr) -> Self {
        self.server_dtls_bind = server_dtls_bind;
        self.bootstrap_dtls_bind = bootstrap_dtls_bind;
        self
    }
}

/// Why an LWM2M operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Lwm2mError {
    #[error("cannot bind the LWM2M {role} socket {addr}: {source}")]
    Bind {
        role: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the LWM2M {role} DTLS socket {addr}: {source}")]
    Dtls {
        role: &'static str,
        addr: SocketAddr,
        #[source]
        source: DtlsError,
    },
    #[error("thing {0:?} is not registered at this node's LWM2M server")]
    NotRegistered(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{method} {path} on thing {thing:?}: {source}")]
    Exchange {
        thing: String,
        method: &'static str,
        path: String,
        #[source]
        source: CoapError,
    },
    #[error("{method} {path} on thing {thing:?} answered {code}{}", if diagnostic.is_empty() { String::new() } else { format!(": {diagnostic}") })]
    Status {
        thing: String,
        method: &'static str,
        path: String,
        code: String,
        diagnostic: String,
    },
}

/// A registration, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistrationView {
    /// The registration id (`/rd/<id>`).
    pub id: String,
    pub endpoint: String,
    pub thing: String,
    /// The client's address.
    pub address: String,
    /// The PSK identity of its DTLS session; absent over plain CoAP.
    pub psk_identity: Option<String>,
    pub lifetime_s: u32,
    /// The LwM2M version the client registered with.
    pub version: String,
    pub binding: String,
    /// The objects and instances it announced (`/3303/0`).
    pub objects: Vec<String>,
    /// The resources observed (`/3303/0/5700`).
    pub observed: Vec<String>,
    pub registered_ms: u64,
    pub updated_ms: u64,
    pub expires_ms: u64,
}

/// A bootstrap, running or finished.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BootstrapView {
    pub endpoint: String,
    pub thing: String,
    /// The client's address.
    pub address: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// `running`, `ok`, or `failed: <why>`.
    pub result: String,
}

struct Session {
    thing: Lwm2mThing,
}

struct Observation {
    registration: String,
    thing: String,
    def: ResourceDef,
    peer: Peer,
    /// The last Observe sequence number taken and when.
    last: Option<(u32, Instant)>,
}

struct ServerState {
    registry: Registry<Peer>,
    /// The thing of each registration, by registration id.
    sessions: HashMap<String, Session>,
    /// By token.
    observations: HashMap<Vec<u8>, Observation>,
}

impl ServerState {
    fn registry(&mut self) -> &mut Registry<Peer> {
        &mut self.registry
    }

    /// Why `peer` may not update or end registration `id`: it registered
    /// over another session (a DTLS session of another PSK identity, or
    /// plain CoAP against DTLS).
    fn wrong_identity(&mut self, id: &str, peer: &Peer) -> Option<String> {
        let r = self.registry.get(id)?;
        (r.addr.identity != peer.identity).then(|| {
            format!(
                "registration {id} was made over {}, not this session",
                if r.addr.secure() {
                    "DTLS with another PSK identity"
                } else {
                    "plain CoAP"
                }
            )
        })
    }

    /// Forget a registration's session and observations.
    fn drop_registration(&mut self, id: &str) {
        self.sessions.remove(id);
        self.observations.retain(|_, o| o.registration != id);
    }
}

/// The answers of a client that does not read the content format it was
/// sent (4.15 Unsupported Content-Format, 4.06 Not Acceptable).
pub(crate) const FORMAT_REFUSED: [ResponseType; 2] = [
    ResponseType::UnsupportedContentFormat,
    ResponseType::NotAcceptable,
];

/// A registered thing, as commands reach it.
struct Target {
    peer: Peer,
    root: String,
    /// The LwM2M version of its Register (`1.0`, `1.1`).
    version: String,
    thing: Lwm2mThing,
}

#[derive(Default)]
struct BootstrapState {
    running: HashSet<String>,
    history: VecDeque<BootstrapView>,
    /// The content format each endpoint's last bootstrap wrote in (at most
    /// [`MAX_REMEMBERED_FORMATS`]), so the next one starts there.
    formats: HashMap<String, u16>,
}

/// A notification waiting to be stored.
struct Notification {
    thing: String,
    def: ResourceDef,
    packet: Packet,
    peer: Peer,
    received_ms: u64,
}

struct Inner {
    settings: Settings,
    server: Arc<Endpoint>,
    bootstrap: Arc<Endpoint>,
    server_dtls: Arc<Endpoint>,
    bootstrap_dtls: Arc<Endpoint>,
    directory: Arc<dyn Lwm2mDirectory>,
    readings: Readings,
    metrics: Arc<ThingMetrics>,
    state: Mutex<ServerState>,
    bootstraps: Mutex<BootstrapState>,
    notifications: mpsc::Sender<Notification>,
}

/// Stops the background tasks when the last [`Lwm2m`] handle goes.
struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

/// The running bootstrap and LWM2M servers. Cheap to clone; the servers stop
/// when the last clone is dropped or [`Lwm2m::shutdown`] is called.
#[derive(Clone)]
pub struct Lwm2m {
    inner: Arc<Inner>,
    tasks: Arc<Tasks>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    crate::unix_ms()
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
    }
}

fn request_type(m: Method) -> RequestType {
    match m {
        Method::Get => RequestType::Get,
        Method::Post => RequestType::Post,
        Method::Put => RequestType::Put,
        Method::Delete => RequestType::Delete,
    }
}

/// The Uri-Path of `path` under a client's root (`/` or e.g. `/lwm2m`).
fn segments(root: &str, path: &str) -> Vec<String> {
    root.split('/')
        .chain(path.split('/'))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `peer` may act as `thing` (to `verb`: register, bootstrap): over
/// DTLS only as the thing whose PSK identity its session authenticated, over
/// plain CoAP only as a thing without a PSK. When not, the reason (a metric
/// label) and why.
fn security_binding(
    thing: &Lwm2mThing,
    peer: &Peer,
    verb: &str,
) -> Result<(), (&'static str, String)> {
    match (&thing.security, &peer.identity) {
        (SecurityMode::NoSec, None) => Ok(()),
        (SecurityMode::Psk { identity, .. }, Some(id)) if identity[..] == id[..] => Ok(()),
        (SecurityMode::Psk { .. }, None) => Err((
            "psk_required",
            format!("thing {:?} has a PSK: {verb} over coaps", thing.name),
        )),
        (_, Some(_)) => Err((
            "wrong_identity",
            format!(
                "this DTLS session's PSK identity is not the one of thing {:?} (endpoint {:?})",
                thing.name, thing.endpoint
            ),
        )),
    }
}

/// RFC 7641 §3.4: whether notification `(v2, t2)` is newer than `(v1, t1)`.
fn fresher(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t2.saturating_duration_since(t1) > OBSERVE_FRESH_AFTER
}

/// A random registration id: 8 bytes in hex.
fn registration_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = crate::unix_ms().to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why a notification was not stored.
enum StoreFailure {
    /// Its payload is not a value of the resource: acknowledged, counted.
    Payload,
    /// The store refused it: left unacknowledged so the client sends it
    /// again.
    Store,
}

impl Lwm2m {
    /// Bind the four sockets (CoAP and DTLS of each server) and start
    /// serving.
    pub async fn start(
        settings: Settings,
        directory: Arc<dyn Lwm2mDirectory>,
        readings: Readings,
        metrics: Arc<ThingMetrics>,
    ) -> Result<Lwm2m, Lwm2mError> {
        let bind = |role, addr| {
            let metrics = metrics.clone();
            let timing = settings.timing;
            async move {
                Endpoint::bind(role, addr, timing, metrics)
                    .await
                    .map_err(|source| Lwm2mError::Bind { role, addr, source })
            }
        };
        let keys: Arc<dyn PskKeys> = Arc::new(DirectoryKeys(directory.clone()));
        let bind_dtls = |role, coap_role, addr| {
            let metrics = metrics.clone();
            let timing = settings.timing;
            let keys = keys.clone();
            async move {
                let dtls = Dtls::bind(role, addr, keys, metrics.clone())
                    .await
                    .map_err(|source| Lwm2mError::Dtls { role, addr, source })?;
                Ok::<_, Lwm2mError>(Endpoint::over(
                    coap_role,
                    Transport::Dtls(Box::new(dtls)),
                    timing,
                    metrics,
                ))
            }
        };
        let server = bind("server", settings.server_bind).await?;
        let bootstrap = bind("bootstrap", settings.bootstrap_bind).await?;
        let server_dtls = bind_dtls("server", "server_dtls", settings.server_dtls_bind).await?;
        let bootstrap_dtls =
            bind_dtls("bootstrap", "bootstrap_dtls", settings.bootstrap_dtls_bind).await?;
        let (tx, rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let inner = Arc::new(Inner {
            settings,
            server: server.clone(),
            bootstrap: bootstrap.clone(),
            server_dtls: server_dtls.clone(),
            bootstrap_dtls: bootstrap_dtls.clone(),
            directory,
            readings,
            metrics,
            state: Mutex::new(ServerState {
                registry: Registry::new(MAX_REGISTRATIONS),
                sessions: HashMap::new(),
                observations: HashMap::new(),
            }),
            bootstraps: Mutex::new(BootstrapState::default()),
            notifications: tx,
        });
        let tasks = vec![
            tokio::spawn(server.run(Arc::new(ServerRole(inner.clone())))),
            tokio::spawn(bootstrap.run(Arc::new(BootstrapRole(inner.clone())))),
            tokio::spawn(server_dtls.run(Arc::new(ServerRole(inner.clone())))),
            tokio::spawn(bootstrap_dtls.run(Arc::new(BootstrapRole(inner.clone())))),
            tokio::spawn(store_notifications(inner.clone(), rx)),
            tokio::spawn(expire_registrations(inner.clone())),
        ];
        let addr = |e: &Endpoint| {
            e.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        tracing::info!(
            server = %addr(&inner.server),
            bootstrap = %addr(&inner.bootstrap),
            server_dtls = %addr(&inner.server_dtls),
            bootstrap_dtls = %addr(&inner.bootstrap_dtls),
            "LWM2M servers listening"
        );
        Ok(Lwm2m {
            inner,
            tasks: Arc::new(Tasks(Mutex::new(tasks))),
        })
    }

    /// Stop serving (both sockets close once in-flight work ends).
    pub fn shutdown(&self) {
        for t in lock(&self.tasks.0).drain(..) {
            t.abort();
        }
    }

    /// The LWM2M server's bound address.
    pub fn server_addr(&self) -> SocketAddr {
        self.inner
            .server
            .local_addr()
            .unwrap_or(self.inner.settings.server_bind)
    }

    /// The bootstrap server's bound address.
    pub fn bootstrap_addr(&self) -> SocketAddr {
        self.inner
            .bootstrap
            .local_addr()
            .unwrap_or(self.inner.settings.bootstrap_bind)
    }

    /// The DTLS LWM2M server's bound address.
    pub fn server_dtls_addr(&self) -> SocketAddr {
        self.inner
            .server_dtls
            .local_addr()
            .unwrap_or(self.inner.settings.server_dtls_bind)
    }

    /// The DTLS bootstrap server's bound address.
    pub fn bootstrap_dtls_addr(&self) -> SocketAddr {
        self.inner
            .bootstrap_dtls
            .local_addr()
            .unwrap_or(self.inner.settings.bootstrap_dtls_bind)
    }

    /// The current registrations, by id.
    pub fn registrations(&self) -> Vec<RegistrationView> {
        let mut st = lock(&self.inner.state);
        let observed = |id: &str, st: &ServerState| {
            let mut v: Vec<String> = st
                .observations
                .values()
                .filter(|o| o.registration == id)
                .map(|o| o.def.path.to_string())
                .collect();
            v.sort();
            v
        };
        let regs: Vec<_> = st.registry().iter().cloned().collect();
        regs.into_iter()
            .map(|r| RegistrationView {
                thing: st
                    .sessions
                    .get(&r.id)
                    .map(|s| s.thing.name.clone())
                    .unwrap_or_default(),
                observed: observed(&r.id, &st),
                expires_ms: r.expires_ms(),
                id: r.id,
                endpoint: r.endpoint,
                address: r.addr.addr.to_string(),
                psk_identity: r
                    .addr
                    .identity
                    .as_ref()
                    .map(|id| String::from_utf8_lossy(id).into_owned()),
                lifetime_s: r.lifetime_s,
                version: r.version,
                binding: r.binding.as_str().to_owned(),
                objects: r.objects.iter().map(ToString::to_string).collect(),
                registered_ms: r.registered_ms,
                updated_ms: r.updated_ms,
            })
            .collect()
    }

    /// The bootstraps running and the last [`BOOTSTRAP_HISTORY`] finished,
    /// oldest first.
    pub fn bootstraps(&self) -> Vec<BootstrapView> {
        lock(&self.inner.bootstraps)
            .history
            .iter()
            .cloned()
            .collect()
    }

    /// Read resource `path` (`3303/0/5700`) of a registered thing.
    pub async fn read(&self, thing: &str, path: &str) -> Result<Value, Lwm2mError> {
        let path: ResourcePath = path.parse()?;
        let (t, packet) = self
            .inner
            .command(
                thing,
                Method::Get,
                path,
                None,
                Vec::new(),
                &[ResponseType::Content],
            )
            .await?;
        Ok(content::decode_value(
            path,
            t.kind_of(&path),
            coap::content_format(&packet),
            &packet.payload,
        )?)
    }

    /// Write `value` to resource `path` of a registered thing: for an LwM2M
    /// 1.0 client TLV when the resource's kind is known, else text (or an
    /// octet-stream for data); for a 1.1 client SenML JSON, or SenML CBOR
    /// when it refuses JSON.
    pub async fn write(&self, thing: &str, path: &str, value: &Value) -> Result<(), Lwm2mError> {
        let path: ResourcePath = path.parse()?;
        let (version, t) = self.inner.version_and_thing(thing)?;
        let kind = t.kind_of(&path);
        if version == "1.0" {
            let (format, payload) = content::encode_value(path, kind, value)?;
            self.inner
                .command(
                    thing,
                    Method::Put,
                    path,
                    Some(format),
                    payload,
                    &[ResponseType::Changed],
                )
                .await?;
            return Ok(());
        }
        // A 1.1 client may speak no TLV: SenML JSON, then SenML CBOR when
        // it does not read JSON.
        let (format, payload) = content::encode_senml(path, kind, value, content::SENML_JSON)?;
        let mut may = vec![ResponseType::Changed];
        may.extend(FORMAT_REFUSED);
        let (_, answer) = self
            .inner
            .command(thing, Method::Put, path, Some(format), payload, &may)
            .await?;
        if coap::response_code(&answer) != Some(ResponseType::Changed) {
            let (format, payload) = content::encode_senml(path, kind, value, content::SENML_CBOR)?;
            self.inner
                .command(
                    thing,
                    Method::Put,
                    path,
                    Some(format),
                    payload,
                    &[ResponseType::Changed],
                )
                .await?;
        }
        Ok(())
    }

    /// Execute resource `path` of a registered thing, with optional
    /// arguments (LwM2M's `0='a',1` text form, sent as given).
    pub async fn execute(
        &self,
        thing: &str,
        path: &str,
        args: Option<&str>,
    ) -> Result<(), Lwm2mError> {
        let path: ResourcePath = path.parse()?;
        let payload = args.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
        let format = args.map(|_| content::TEXT);
        self.inner
            .command(
                thing,
                Method::Post,
                path,
                format,
                payload,
                &[ResponseType::Changed],
            )
            .await?;
        Ok(())
    }

    /// Ask a registered thing to bootstrap again (Execute `/1/0/9`): it
    /// will send a Bootstrap-Request, and then register with the server
    /// the bootstrap names (the manager of the thing at that time).
    pub async fn rebootstrap(&self, thing: &str) -> Result<(), Lwm2mError> {
        self.execute(thing, BOOTSTRAP_TRIGGER, None).await
    }
}

impl Inner {
    /// The LWM2M server socket `peer` speaks to: DTLS or plain CoAP.
    fn server_for(&self, peer: &Peer) -> &Endpoint {
        if peer.secure() {
            &self.server_dtls
        } else {
            &self.server
        }
    }

    /// The bootstrap server socket `peer` speaks to.
    fn bootstrap_for(&self, peer: &Peer) -> &Endpoint {
        if peer.secure() {
            &self.bootstrap_dtls
        } else {
            &self.bootstrap
        }
    }

    /// The LwM2M version a registered thing registered with, and its thing.
    fn version_and_thing(&self, thing: &str) -> Result<(String, Lwm2mThing), Lwm2mError> {
        let t = self.target(thing)?;
        Ok((t.version, t.thing))
    }

    /// Where a registered thing is reached, and what it registered as.
    fn target(&self, thing: &str) -> Result<Target, Lwm2mError> {
        let mut st = lock(&self.state);
        let (id, t) = st
            .sessions
            .iter()
            .find(|(_, s)| s.thing.name == thing)
            .map(|(id, s)| (id.clone(), s.thing.clone()))
            .ok_or_else(|| Lwm2mError::NotRegistered(thing.to_owned()))?;
        let r = st
            .registry()
            .get(&id)
            .ok_or_else(|| Lwm2mError::NotRegistered(thing.to_owned()))?;
        Ok(Target {
            peer: r.addr.clone(),
            root: r.root.clone(),
            version: r.version.clone(),
            thing: t,
        })
    }

    /// Send a command to a registered thing and check the response code.
    async fn command(
        &self,
        thing: &str,
        method: Method,
        path: ResourcePath,
        format: Option<u16>,
        payload: Vec<u8>,
        want: &[ResponseType],
    ) -> Result<(Lwm2mThing, Packet), Lwm2mError> {
        let Target {
            peer,
            root,
            thing: t,
            ..
        } = self.target(thing)?;
        let out = Outgoing::new(request_type(method), segments(&root, &path.to_string()))
            .payload(format, payload);
        let name = method_name(method);
        let resp = self
            .server_for(&peer)
            .request(&peer, out, true)
            .await
            .map_err(|source| Lwm2mError::Exchange {
                thing: thing.to_owned(),
                method: name,
                path: path.to_string(),
                source,
            })?;
        if !coap::response_code(&resp.packet).is_some_and(|c| want.contains(&c)) {
            return Err(Lwm2mError::Status {
                thing: thing.to_owned(),
                method: name,
                path: path.to_string(),
                code: coap::code_text(&resp.packet),
                diagnostic: coap::diagnostic(&resp.packet),
            });
        }
        Ok((t, resp.packet))
    }

    fn reject(
        &self,
        reason: &'static str,
        code: ResponseType,
        why: impl std::fmt::Display,
    ) -> Reply {
        self.metrics
            .lwm2m_rejected_registrations
            .with_label_values(&[reason])
            .inc();
        tracing::info!(reason, %why, "LWM2M registration refused");
        Reply::diagnostic(code, why)
    }

    fn malformed_payload(&self, role: &'static str, what: &str) {
        self.metrics
            .lwm2m_malformed_payloads
            .with_label_values(&[role])
            .inc();
        tracing::debug!(role, what, "malformed LWM2M payload");
    }

    fn set_registration_gauge(&self, st: &mut ServerState) {
        self.metrics
            .lwm2m_registrations
            .set(st.registry().len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::bootstrap::bootstrap_plan;
    use super::*;

    #[test]
    fn observe_sequence_numbers_follow_rfc_7641() {
        let t = Instant::now();
        assert!(fresher(1, t, 2, t));
        assert!(!fresher(2, t, 1, t));
        assert!(!fresher(5, t, 5, t));
        // Wrapped around the 24-bit space.
        assert!(fresher((1 << 24) - 1, t, 0, t));
        assert!(!fresher(0, t, (1 << 24) - 1, t));
        // Long enough after: newer whatever the number.
        assert!(fresher(
            9,
            t,
            3,
            t + OBSERVE_FRESH_AFTER + Duration::from_secs(1)
        ));
    }

    #[test]
    fn requests_go_under_the_clients_root() {
        assert_eq!(segments("/", "/3303/0/5700"), ["3303", "0", "5700"]);
        assert_eq!(segments("/lwm2m", "/1/0/9"), ["lwm2m", "1", "0", "9"]);
    }

    #[test]
    fn a_psk_thing_is_bootstrapped_with_its_credentials_and_coaps() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut t = Lwm2mThing {
            name: "t".into(),
            endpoint: "e".into(),
            managed_here: false,
            server_uri: "coap://192.0.2.1:5683".into(),
            security: SecurityMode::NoSec,
            resources: vec![],
        };
        let security_of = |t: &Lwm2mThing| {
            let plan = bootstrap_plan(t, &Settings::new(any, any)).unwrap();
            let writes = iot::bootstrap_writes(&plan.security, &plan.server).unwrap();
            let mut top = locus_iot::tlv::decode(&writes[0].payload).unwrap();
            top.remove(0)
        };
        let s = security_of(&t);
        assert_eq!(s.child(0).unwrap().as_str(), Ok("coap://192.0.2.1:5683"));
        assert_eq!(s.child(2).unwrap().as_int(), Ok(3));
        t.security = SecurityMode::Psk {
            identity: b"dev-1".to_vec(),
            key: vec![9; 16],
        };
        // A PSK thing is written its manager's DTLS server, never a plain one.
        assert!(bootstrap_plan(&t, &Settings::new(any, any)).is_err());
        t.server_uri = "coaps://192.0.2.1:5684".into();
        let s = security_of(&t);
        assert_eq!(s.child(0).unwrap().as_str(), Ok("coaps://192.0.2.1:5684"));
        assert_eq!(s.child(2).unwrap().as_int(), Ok(0));
        assert_eq!(s.child(3).unwrap().value(), Ok(&b"dev-1"[..]));
        assert_eq!(s.child(5).unwrap().value(), Ok(&[9u8; 16][..]));
        assert_eq!(
            s.child(10).unwrap().as_int(),
            Ok(i64::from(SHORT_SERVER_ID))
        );
        // A URI the Security object cannot hold is refused, not written.
        t.server_uri = "http://x".into();
        assert!(bootstrap_plan(&t, &Settings::new(any, any)).is_err());
    }

    #[test]
    fn a_client_acts_only_as_the_thing_its_session_authenticated() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let plain = Peer::plain(addr);
        let dtls = |id: &[u8]| Peer {
            addr,
            identity: Some(Arc::from(id)),
        };
        let mut t = Lwm2mThing {
            name: "t".into(),
            endpoint: "e".into(),
            managed_here: true,
            server_uri: "coap://h:1".into(),
            security: SecurityMode::NoSec,
            resources: vec![],
        };
        assert!(security_binding(&t, &plain, "register").is_ok());
        assert_eq!(
            security_binding(&t, &dtls(b"dev-1"), "register").map_err(|e| e.0),
            Err("wrong_identity")
        );
        t.security = SecurityMode::Psk {
            identity: b"dev-1".to_vec(),
            key: vec![1],
        };
        assert!(security_binding(&t, &dtls(b"dev-1"), "register").is_ok());
        assert_eq!(
            security_binding(&t, &dtls(b"dev-2"), "register").map_err(|e| e.0),
            Err("wrong_identity")
        );
        let (reason, why) = security_binding(&t, &plain, "register").unwrap_err();
        assert_eq!(reason, "psk_required");
        assert!(why.contains("register over coaps"), "{why}");
    }

    #[test]
    fn the_psk_stays_out_of_debug_output() {
        let t = Lwm2mThing {
            name: "t".into(),
            endpoint: "e".into(),
            managed_here: true,
            server_uri: "coap://h:1".into(),
            security: SecurityMode::Psk {
                identity: b"id".to_vec(),
                key: b"sekrit".to_vec(),
            },
            resources: vec![],
        };
        let s = format!("{t:?}");
        assert!(s.contains("Psk") && !s.contains("115, 101"), "{s}");
    }
}

//! LwM2M 1.0 over CoAP (UDP): the node's bootstrap server and LwM2M
//! server for the things it knows.
//!
//! Two UDP sockets, each a CoAP endpoint ([`coap`], on `coap-lite`):
//!
//! - the **bootstrap server** answers `POST /bs?ep=NAME` from a client whose
//!   endpoint name is an LWM2M thing anywhere in the cluster with 2.04, then
//!   configures the client, in order and each confirmed before the next:
//!   Delete `/0`, Delete `/1`, Write `/0/0` (a Security instance naming the
//!   LWM2M server of the thing's manager node, NoSec or PSK), Write `/1/0`
//!   (a Server instance: short server id, lifetime, binding `U`), then
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
//! Which things exist, where their manager is and what their resources are
//! comes from a [`Lwm2mDirectory`], which the thing registry implements.
//!
//! Owns: the two sockets, the registrations (by id, with their client
//! address and the thing they belong to), the observations (by token), the
//! bootstraps in progress and a short history of finished ones.
//!
//! Must never: decide which node manages a thing (the directory says),
//! acknowledge a notification before its reading is stored, wait without a
//! timeout on a client, hold more than the named limits below, parse CoAP,
//! TLV or link format by hand (coap-lite and `locus_iot::lwm2m` do), or
//! crash on anything a client sends. It does not speak DTLS: a thing with
//! PSK credentials is bootstrapped with them and a `coaps://` server URI,
//! but this server serves plain CoAP only.

pub mod coap;

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
use coap::{Endpoint, Outgoing, Reply, Service, Verdict};
use locus_readings::Readings;

/// Most registrations the LWM2M server holds.
pub const MAX_REGISTRATIONS: usize = 1024;
/// Most observations in place at once, over all registrations.
pub const MAX_OBSERVATIONS: usize = 8192;
/// Most bootstraps in progress at once.
pub const MAX_BOOTSTRAPS: usize = 32;
/// How many finished bootstraps [`Lwm2m::bootstraps`] remembers.
pub const BOOTSTRAP_HISTORY: usize = 64;
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
    /// `coap://host:port` of the LWM2M server of its manager node. With
    /// PSK credentials the bootstrap writes it as `coaps://`.
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

/// Where the two servers listen and how they behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The LWM2M server's UDP address (LwM2M's default port is 5683).
    pub server_bind: SocketAddr,
    /// The bootstrap server's UDP address (conventionally 5783 when the
    /// LWM2M server has 5683).
    pub bootstrap_bind: SocketAddr,
    /// CoAP retransmission timing (RFC 7252's by default).
    pub timing: Timing,
    /// The lifetime written into the clients' Server object.
    pub lifetime_s: u32,
    /// The short server id written into their Security and Server objects.
    pub short_server_id: u16,
}

impl Settings {
    pub fn new(server_bind: SocketAddr, bootstrap_bind: SocketAddr) -> Self {
        Self {
            server_bind,
            bootstrap_bind,
            timing: Timing::default(),
            lifetime_s: DEFAULT_LIFETIME_S,
            short_server_id: SHORT_SERVER_ID,
        }
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
    peer: SocketAddr,
    /// The last Observe sequence number taken and when.
    last: Option<(u32, Instant)>,
}

struct ServerState {
    registry: Registry<SocketAddr>,
    /// The thing of each registration, by registration id.
    sessions: HashMap<String, Session>,
    /// By token.
    observations: HashMap<Vec<u8>, Observation>,
}

impl ServerState {
    fn registry(&mut self) -> &mut Registry<SocketAddr> {
        &mut self.registry
    }

    /// Forget a registration's session and observations.
    fn drop_registration(&mut self, id: &str) {
        self.sessions.remove(id);
        self.observations.retain(|_, o| o.registration != id);
    }
}

#[derive(Default)]
struct BootstrapState {
    running: HashSet<String>,
    history: VecDeque<BootstrapView>,
}

/// A notification waiting to be stored.
struct Notification {
    thing: String,
    def: ResourceDef,
    packet: Packet,
    peer: SocketAddr,
    received_ms: u64,
}

struct Inner {
    settings: Settings,
    server: Arc<Endpoint>,
    bootstrap: Arc<Endpoint>,
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
    crate::registry::unix_ms()
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
        b = crate::registry::unix_ms().to_be_bytes();
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
    /// Bind both sockets and start serving.
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
        let server = bind("server", settings.server_bind).await?;
        let bootstrap = bind("bootstrap", settings.bootstrap_bind).await?;
        let (tx, rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let inner = Arc::new(Inner {
            settings,
            server: server.clone(),
            bootstrap: bootstrap.clone(),
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
            tokio::spawn(store_notifications(inner.clone(), rx)),
            tokio::spawn(expire_registrations(inner.clone())),
        ];
        tracing::info!(
            server = %inner.server.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            bootstrap = %inner.bootstrap.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
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
                address: r.addr.to_string(),
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
                ResponseType::Content,
            )
            .await?;
        Ok(content::decode_value(
            path,
            t.kind_of(&path),
            coap::content_format(&packet),
            &packet.payload,
        )?)
    }

    /// Write `value` to resource `path` of a registered thing: TLV when the
    /// resource's kind is known, else text (or an octet-stream for data).
    pub async fn write(&self, thing: &str, path: &str, value: &Value) -> Result<(), Lwm2mError> {
        let path: ResourcePath = path.parse()?;
        let kind = self.inner.session_thing(thing)?.kind_of(&path);
        let (format, payload) = content::encode_value(path, kind, value)?;
        self.inner
            .command(
                thing,
                Method::Put,
                path,
                Some(format),
                payload,
                ResponseType::Changed,
            )
            .await?;
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
                ResponseType::Changed,
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
    fn session_thing(&self, thing: &str) -> Result<Lwm2mThing, Lwm2mError> {
        Ok(self.target(thing)?.2)
    }

    /// The address, root path and definition of a registered thing.
    fn target(&self, thing: &str) -> Result<(SocketAddr, String, Lwm2mThing), Lwm2mError> {
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
        Ok((r.addr, r.root.clone(), t))
    }

    /// Send a command to a registered thing and check the response code.
    async fn command(
        &self,
        thing: &str,
        method: Method,
        path: ResourcePath,
        format: Option<u16>,
        payload: Vec<u8>,
        want: ResponseType,
    ) -> Result<(Lwm2mThing, Packet), Lwm2mError> {
        let (peer, root, t) = self.target(thing)?;
        let out = Outgoing::new(request_type(method), segments(&root, &path.to_string()))
            .payload(format, payload);
        let name = method_name(method);
        let resp = self
            .server
            .request(peer, out, true)
            .await
            .map_err(|source| Lwm2mError::Exchange {
                thing: thing.to_owned(),
                method: name,
                path: path.to_string(),
                source,
            })?;
        if coap::response_code(&resp.packet) != Some(want) {
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

    /// Ask the directory, at most [`DIRECTORY_TIMEOUT`].
    async fn lookup(&self, endpoint: &str) -> Result<Option<Lwm2mThing>, Reply> {
        tokio::time::timeout(DIRECTORY_TIMEOUT, self.directory.lwm2m_thing(endpoint))
            .await
            .map_err(|_| {
                tracing::warn!(endpoint, "the thing directory did not answer in time");
                Reply::diagnostic(
                    ResponseType::ServiceUnavailable,
                    "the thing directory did not answer in time, try again",
                )
            })
    }

    /// Register (`POST /rd`).
    async fn register(self: &Arc<Self>, req: Packet, peer: SocketAddr) -> Reply {
        let q = match query::parse_register(coap::query(&req).iter().map(Vec::as_slice)) {
            Ok(q) => q,
            Err(e) => return self.reject("invalid", ResponseType::BadRequest, e),
        };
        match coap::content_format(&req) {
            None | Some(content::LINK_FORMAT) => {}
            Some(cf) => {
                return self.reject(
                    "invalid",
                    ResponseType::UnsupportedContentFormat,
                    format!("a Register payload is link format (40), not content format {cf}"),
                );
            }
        }
        let links = match iot::parse_links(&req.payload) {
            Ok(l) => l,
            Err(e) => {
                self.malformed_payload("server", "register links");
                return self.reject(
                    "invalid",
                    ResponseType::BadRequest,
                    format!("Register payload: {e}"),
                );
            }
        };
        let thing = match self.lookup(&q.endpoint).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let Some(thing) = thing else {
            return self.reject(
                "unknown",
                ResponseType::Forbidden,
                format!(
                    "endpoint {:?} is not an LWM2M thing of this cluster",
                    q.endpoint
                ),
            );
        };
        if !thing.managed_here {
            return self.reject(
                "not_managed",
                ResponseType::Forbidden,
                format!(
                    "thing {:?} (endpoint {:?}) is managed by another node: bootstrap again",
                    thing.name, q.endpoint
                ),
            );
        }
        let endpoint = q.endpoint.clone();
        let registered = {
            let mut st = lock(&self.state);
            let mut result = Err(RegistryError::IdInUse(String::new()));
            // A random id colliding twice in a row is a broken RNG.
            for _ in 0..3 {
                result = st.registry().register(
                    registration_id(),
                    q.clone(),
                    links.clone(),
                    peer,
                    now_ms(),
                );
                if !matches!(result, Err(RegistryError::IdInUse(_))) {
                    break;
                }
            }
            match result {
                Ok(r) => {
                    if let Some(old) = &r.replaced {
                        st.drop_registration(&old.id);
                    }
                    st.sessions.insert(
                        r.registration.id.clone(),
                        Session {
                            thing: thing.clone(),
                        },
                    );
                    self.set_registration_gauge(&mut st);
                    Ok(r.registration)
                }
                Err(e) => Err(e),
            }
        };
        let reg = match registered {
            Ok(r) => r,
            Err(e) => return self.reject("full", ResponseType::ServiceUnavailable, e),
        };
        tracing::info!(
            endpoint, thing = thing.name, id = reg.id, %peer,
            lifetime_s = reg.lifetime_s, "LWM2M client registered"
        );
        let mut reply = Reply::new(ResponseType::Created);
        reply.location = vec!["rd".to_owned(), reg.id.clone()];
        let this = self.clone();
        reply.then = Some(Box::pin(async move { this.observe_all(&reg.id).await }));
        reply
    }

    /// Update (`POST /rd/<id>`).
    async fn update(self: &Arc<Self>, id: &str, req: Packet, peer: SocketAddr) -> Reply {
        let q = match query::parse_update(coap::query(&req).iter().map(Vec::as_slice)) {
            Ok(q) => q,
            Err(e) => return Reply::diagnostic(ResponseType::BadRequest, e),
        };
        let links = if req.payload.is_empty() {
            None
        } else {
            match iot::parse_links(&req.payload) {
                Ok(l) => Some(l),
                Err(e) => {
                    self.malformed_payload("server", "update links");
                    return Reply::diagnostic(
                        ResponseType::BadRequest,
                        format!("Update payload: {e}"),
                    );
                }
            }
        };
        let new_links = links.is_some();
        {
            let mut st = lock(&self.state);
            if let Err(e) = st.registry().update(id, q, links, peer, now_ms()) {
                return Reply::diagnostic(ResponseType::NotFound, e);
            }
            for o in st
                .observations
                .values_mut()
                .filter(|o| o.registration == id)
            {
                o.peer = peer;
            }
        }
        tracing::debug!(id, %peer, "LWM2M registration updated");
        let mut reply = Reply::new(ResponseType::Changed);
        if new_links {
            let this = self.clone();
            let id = id.to_owned();
            reply.then = Some(Box::pin(async move { this.observe_all(&id).await }));
        }
        reply
    }

    /// De-register (`DELETE /rd/<id>`).
    fn deregister(&self, id: &str) -> Reply {
        let mut st = lock(&self.state);
        match st.registry().deregister(id) {
            Ok(r) => {
                st.drop_registration(id);
                self.set_registration_gauge(&mut st);
                tracing::info!(id, endpoint = r.endpoint, "LWM2M client de-registered");
                Reply::new(ResponseType::Deleted)
            }
            Err(e) => Reply::diagnostic(ResponseType::NotFound, e),
        }
    }

    /// Observe every resource of registration `id` marked `observe` that
    /// the client announced and that is not observed yet.
    async fn observe_all(self: &Arc<Self>, id: &str) {
        let targets: Vec<(SocketAddr, String, String, ResourceDef)> = {
            let mut st = lock(&self.state);
            let Some(r) = st.registry().get(id).cloned() else {
                return;
            };
            let Some(session) = st.sessions.get(id) else {
                return;
            };
            let observed: HashSet<ResourcePath> = st
                .observations
                .values()
                .filter(|o| o.registration == id)
                .map(|o| o.def.path)
                .collect();
            let thing = &session.thing;
            thing
                .resources
                .iter()
                .filter(|res| res.observe)
                .filter_map(|res| match thing.def(res) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(thing = thing.name, error = %e, "LWM2M resource skipped");
                        None
                    }
                })
                .filter(|d| r.announces(d.path.object, d.path.instance))
                .filter(|d| !observed.contains(&d.path))
                .map(|d| (r.addr, r.root.clone(), thing.name.clone(), d))
                .collect()
        };
        for (peer, root, thing, def) in targets {
            self.observe(id, peer, &root, &thing, def).await;
        }
    }

    async fn observe(&self, id: &str, peer: SocketAddr, root: &str, thing: &str, def: ResourceDef) {
        let token = self.server.token();
        let path = def.path;
        {
            let mut st = lock(&self.state);
            if st.observations.len() >= MAX_OBSERVATIONS {
                tracing::warn!(
                    thing,
                    path = %path,
                    "not observed: {MAX_OBSERVATIONS} observations are in place"
                );
                return;
            }
            if st.registry().get(id).is_none() {
                return;
            }
            st.observations.insert(
                token.clone(),
                Observation {
                    registration: id.to_owned(),
                    thing: thing.to_owned(),
                    def: def.clone(),
                    peer,
                    last: None,
                },
            );
        }
        let forget = |why: &dyn std::fmt::Display| {
            lock(&self.state).observations.remove(&token);
            tracing::warn!(thing, path = %path, why = %why, "LWM2M observation not in place");
        };
        let mut out = Outgoing::new(RequestType::Get, segments(root, &path.to_string()));
        out.observe = Some(0);
        out.token = Some(token.clone());
        let resp = match self.server.request(peer, out, false).await {
            Ok(r) => r,
            Err(e) => return forget(&e),
        };
        let packet = &resp.packet;
        if coap::response_code(packet) != Some(ResponseType::Content) {
            if let Some(mid) = resp.unacked {
                self.server.ack(peer, mid).await;
            }
            let why = format!(
                "the client answered {} {}",
                coap::code_text(packet),
                coap::diagnostic(packet)
            );
            return forget(&why);
        }
        let seq = coap::observe(packet);
        {
            let mut st = lock(&self.state);
            match (st.observations.get_mut(&token), seq) {
                (Some(o), Some(seq)) => o.last = Some((seq, Instant::now())),
                // The client does not observe it: one value, no more.
                (Some(_), None) => {
                    st.observations.remove(&token);
                    tracing::info!(thing, path = %path, "the client does not support Observe here; read once");
                }
                (None, _) => {}
            }
        }
        let stored = self.store(thing, &def, packet, now_ms()).await;
        if let Some(mid) = resp.unacked {
            match stored {
                Err(StoreFailure::Store) => self.server.release(peer, mid),
                _ => self.server.ack(peer, mid).await,
            }
        }
        if stored.is_ok() {
            tracing::debug!(thing, path = %path, "LWM2M resource observed");
        }
    }

    /// Store the reading a Read/Notify response carries.
    async fn store(
        &self,
        thing: &str,
        def: &ResourceDef,
        packet: &Packet,
        received_ms: u64,
    ) -> Result<(), StoreFailure> {
        let reading = def
            .reading(
                thing,
                coap::content_format(packet),
                &packet.payload,
                received_ms as i64,
            )
            .map_err(|e| {
                self.malformed_payload("server", "resource value");
                tracing::info!(thing, error = %e, "LWM2M value not stored");
                StoreFailure::Payload
            })?;
        match self.readings.ingest(vec![reading]).await {
            Ok(_) => {
                self.metrics.lwm2m_readings.inc();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(thing, error = %e, "LWM2M reading not stored; the client will resend it");
                Err(StoreFailure::Store)
            }
        }
    }

    /// Take a notification off the receive loop (no waiting here).
    fn notification(&self, packet: Packet, peer: SocketAddr) -> Verdict {
        // Room in the queue first, so that nothing is marked as seen for a
        // notification that is then dropped.
        let Ok(permit) = self.notifications.try_reserve() else {
            tracing::warn!(%peer, "LWM2M notification queue full; left for the client to resend");
            return Verdict::Release;
        };
        let mut st = lock(&self.state);
        let token = packet.get_token().to_vec();
        let Some(o) = st.observations.get_mut(&token) else {
            return Verdict::Unknown;
        };
        if o.peer != peer {
            return Verdict::Unknown;
        }
        let code = coap::response_code(&packet);
        if code.is_none_or(|c| c.is_error()) {
            // RFC 7641 §3.2: an error ends the observation.
            tracing::info!(thing = o.thing, path = %o.def.path, code = coap::code_text(&packet), "LWM2M observation ended by the client");
            st.observations.remove(&token);
            return Verdict::Ack;
        }
        let now = Instant::now();
        let (thing, def) = (o.thing.clone(), o.def.clone());
        match coap::observe(&packet) {
            Some(seq) => {
                if let Some((v1, t1)) = o.last
                    && !fresher(v1, t1, seq, now)
                {
                    // Older than what was taken: reordered on the way.
                    return Verdict::Ack;
                }
                o.last = Some((seq, now));
            }
            // A notification without Observe is the last one.
            None => {
                st.observations.remove(&token);
            }
        }
        permit.send(Notification {
            thing,
            def,
            packet,
            peer,
            received_ms: now_ms(),
        });
        Verdict::Queued
    }

    /// Bootstrap-Request (`POST /bs?ep=NAME`).
    async fn bootstrap_request(self: &Arc<Self>, req: Packet, peer: SocketAddr) -> Reply {
        let endpoint = match query::parse_bootstrap(coap::query(&req).iter().map(Vec::as_slice)) {
            Ok(e) => e,
            Err(e) => return Reply::diagnostic(ResponseType::BadRequest, e),
        };
        // LwM2M 1.0 TS §5.2.7.1: an unknown endpoint gets 4.00.
        let thing = match self.lookup(&endpoint).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let Some(thing) = thing else {
            tracing::info!(endpoint, %peer, "bootstrap refused: unknown endpoint");
            return Reply::diagnostic(
                ResponseType::BadRequest,
                format!("unknown endpoint client name {endpoint:?}"),
            );
        };
        let requests = match bootstrap_plan(&thing, &self.settings) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(endpoint, thing = thing.name, error = %e, "cannot bootstrap");
                return Reply::diagnostic(
                    ResponseType::InternalServerError,
                    format!("cannot bootstrap thing {:?}: {e}", thing.name),
                );
            }
        };
        {
            let mut b = lock(&self.bootstraps);
            if b.running.contains(&endpoint) {
                // The one in progress configures it.
                return Reply::new(ResponseType::Changed);
            }
            if b.running.len() >= MAX_BOOTSTRAPS {
                return Reply::diagnostic(
                    ResponseType::ServiceUnavailable,
                    format!("{MAX_BOOTSTRAPS} bootstraps are in progress, try again"),
                );
            }
            b.running.insert(endpoint.clone());
            if b.history.len() >= BOOTSTRAP_HISTORY {
                b.history.pop_front();
            }
            b.history.push_back(BootstrapView {
                endpoint: endpoint.clone(),
                thing: thing.name.clone(),
                address: peer.to_string(),
                started_ms: now_ms(),
                finished_ms: None,
                result: "running".to_owned(),
            });
        }
        tracing::info!(endpoint, thing = thing.name, %peer, "bootstrapping");
        let mut reply = Reply::new(ResponseType::Changed);
        let this = self.clone();
        reply.then = Some(Box::pin(async move {
            this.run_bootstrap(endpoint, peer, requests).await;
        }));
        reply
    }

    async fn run_bootstrap(&self, endpoint: String, peer: SocketAddr, requests: Vec<iot::Request>) {
        let mut result = Ok(());
        for (i, r) in requests.into_iter().enumerate() {
            let name = method_name(r.method);
            let want = match r.method {
                Method::Delete => ResponseType::Deleted,
                _ => ResponseType::Changed,
            };
            let out = Outgoing::new(request_type(r.method), segments("/", &r.path))
                .payload(r.content_format, r.payload);
            let step = format!("step {} ({name} {})", i + 1, r.path);
            match self.bootstrap.request(peer, out, true).await {
                Ok(resp) if coap::response_code(&resp.packet) == Some(want) => {}
                Ok(resp) => {
                    result = Err(format!(
                        "{step} answered {} {}",
                        coap::code_text(&resp.packet),
                        coap::diagnostic(&resp.packet)
                    ));
                    break;
                }
                Err(e) => {
                    result = Err(format!("{step}: {e}"));
                    break;
                }
            }
        }
        let label = match &result {
            Ok(()) => {
                tracing::info!(endpoint, %peer, "bootstrap finished");
                "ok"
            }
            Err(why) => {
                tracing::warn!(endpoint, %peer, why, "bootstrap failed");
                "failed"
            }
        };
        self.metrics
            .lwm2m_bootstraps
            .with_label_values(&[label])
            .inc();
        let mut b = lock(&self.bootstraps);
        b.running.remove(&endpoint);
        if let Some(v) = b
            .history
            .iter_mut()
            .rev()
            .find(|v| v.endpoint == endpoint && v.finished_ms.is_none())
        {
            v.finished_ms = Some(now_ms());
            v.result = match result {
                Ok(()) => "ok".to_owned(),
                Err(why) => format!("failed: {why}"),
            };
        }
    }
}

/// The bootstrap requests for `thing`: its manager's server URI (as
/// `coaps://` when the thing has PSK credentials), its security mode, and
/// the short server id and lifetime of `settings`.
fn bootstrap_plan(
    thing: &Lwm2mThing,
    settings: &Settings,
) -> Result<Vec<iot::Request>, iot::Lwm2mError> {
    let mut uri = thing.server_uri.clone();
    if let SecurityMode::Psk { .. } = thing.security
        && let Some(rest) = uri.strip_prefix("coap://")
    {
        uri = format!("coaps://{rest}");
    }
    let ssid = settings.short_server_id;
    iot::bootstrap_requests(
        &Security {
            instance: 0,
            server_uri: uri,
            mode: thing.security.clone(),
            short_server_id: ssid,
        },
        &Server::new(0, ssid, settings.lifetime_s),
    )
}

/// What the LWM2M server's socket serves.
struct ServerRole(Arc<Inner>);

#[async_trait::async_trait]
impl Service for ServerRole {
    async fn handle(&self, req: Packet, peer: SocketAddr) -> Reply {
        let Some(path) = coap::path(&req) else {
            self.0.malformed_payload("server", "uri-path");
            return Reply::diagnostic(ResponseType::BadRequest, "a Uri-Path option is not UTF-8");
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let method = match req.header.code {
            coap_lite::MessageClass::Request(m) => Some(m),
            _ => None,
        };
        match (method, path.as_slice()) {
            (Some(RequestType::Post), ["rd"]) => self.0.register(req, peer).await,
            (Some(RequestType::Post), ["rd", id]) => self.0.update(id, req, peer).await,
            (Some(RequestType::Delete), ["rd", id]) => self.0.deregister(id),
            (_, ["rd"] | ["rd", _]) => Reply::diagnostic(
                ResponseType::MethodNotAllowed,
                "POST /rd registers, POST /rd/<id> updates, DELETE /rd/<id> de-registers",
            ),
            _ => Reply::diagnostic(
                ResponseType::NotFound,
                format!(
                    "no resource /{}: this LWM2M server serves /rd",
                    path.join("/")
                ),
            ),
        }
    }

    fn notification(&self, packet: Packet, peer: SocketAddr) -> Verdict {
        self.0.notification(packet, peer)
    }
}

/// What the bootstrap server's socket serves.
struct BootstrapRole(Arc<Inner>);

#[async_trait::async_trait]
impl Service for BootstrapRole {
    async fn handle(&self, req: Packet, peer: SocketAddr) -> Reply {
        let path = coap::path(&req).unwrap_or_default();
        match (req.header.code, path.as_slice()) {
            (coap_lite::MessageClass::Request(RequestType::Post), [bs]) if bs == "bs" => {
                self.0.bootstrap_request(req, peer).await
            }
            _ => Reply::diagnostic(
                ResponseType::NotFound,
                "this is an LWM2M bootstrap server: POST /bs?ep=NAME",
            ),
        }
    }

    fn notification(&self, _packet: Packet, _peer: SocketAddr) -> Verdict {
        // The bootstrap server observes nothing.
        Verdict::Unknown
    }
}

/// Store queued notifications in order, acknowledging each confirmable one
/// once its reading is durable.
async fn store_notifications(inner: Arc<Inner>, mut rx: mpsc::Receiver<Notification>) {
    while let Some(n) = rx.recv().await {
        let confirmable = n.packet.header.get_type() == coap_lite::MessageType::Confirmable;
        let mid = n.packet.header.message_id;
        let stored = inner
            .store(&n.thing, &n.def, &n.packet, n.received_ms)
            .await;
        if confirmable {
            match stored {
                Err(StoreFailure::Store) => inner.server.release(n.peer, mid),
                _ => inner.server.ack(n.peer, mid).await,
            }
        }
    }
}

/// Remove registrations whose lifetime ran out.
async fn expire_registrations(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut st = lock(&inner.state);
        let gone = st.registry().expire(now_ms());
        for r in &gone {
            st.drop_registration(&r.id);
            tracing::info!(
                id = r.id,
                endpoint = r.endpoint,
                "LWM2M registration expired"
            );
        }
        if !gone.is_empty() {
            inner.set_registration_gauge(&mut st);
        }
    }
}

/// A thing that moved to another manager is asked to bootstrap again
/// (Execute /1/0/9 while it is still registered here), so that it learns
/// its new LwM2M server.
pub async fn rebootstrap_moved_things(
    mut events: tokio::sync::broadcast::Receiver<crate::registry::ThingEvent>,
    lwm2m: Lwm2m,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(crate::registry::ThingEvent::Moved { name, to }) => {
                match lwm2m.rebootstrap(&name).await {
                    Ok(()) => {
                        tracing::info!(thing = %name, %to, "thing re-bootstrapped towards its new manager")
                    }
                    Err(Lwm2mError::NotRegistered(_)) => {}
                    Err(e) => {
                        tracing::warn!(thing = %name, error = %e, "cannot re-bootstrap the thing")
                    }
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
}

#[cfg(test)]
mod tests {
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
            let reqs = bootstrap_plan(t, &Settings::new(any, any)).unwrap();
            assert_eq!(reqs[2].path, "/0/0");
            let mut top = locus_iot::tlv::decode(&reqs[2].payload).unwrap();
            top.remove(0)
        };
        let s = security_of(&t);
        assert_eq!(s.child(0).unwrap().as_str(), Ok("coap://192.0.2.1:5683"));
        assert_eq!(s.child(2).unwrap().as_int(), Ok(3));
        t.security = SecurityMode::Psk {
            identity: b"dev-1".to_vec(),
            key: vec![9; 16],
        };
        let s = security_of(&t);
        assert_eq!(s.child(0).unwrap().as_str(), Ok("coaps://192.0.2.1:5683"));
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

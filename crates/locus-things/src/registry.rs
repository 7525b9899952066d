//! The things this node manages, and the directory of every thing in the
//! cluster.
//!
//! A thing's manager node owns its record. The manager keeps the thing in
//! its store (written before any answer) and in the fabric: a header
//! `thing/<name>` (`{n, digest, generation}`) and the JSON in chunks
//! `thing/<name>/<i>`, so every node can tell who manages a thing and a new
//! manager can take it over. A manager change is a handover: the new
//! manager stores and publishes the thing (generation + 1) before the old
//! one forgets it, and the old one tells its protocol servers (a
//! [`ThingEvent::Moved`]) so that they re-bootstrap LwM2M clients and drop
//! MQTT sessions.
//!
//! This module never parses device payloads and never opens a device
//! socket: MQTT, LwM2M and commands live in their own modules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use locus_core::NodeId;
use locus_core::cluster::Liveness;
use locus_core::thing::{Thing, ThingSpec};
use locus_fabric::udp::FabricHandle;
use locus_store::Store;

use crate::table::ThingTable;

mod failover;
pub use failover::{FAILOVER_TICK, NoThingStandbys, ThingStandbys, WorkloadHomes};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast};

/// Most things one node manages.
pub const MAX_OWNED: usize = 256;
/// Bytes of thing JSON per fabric record.
pub const CHUNK: usize = 768;
/// Most chunks of one thing (24 KiB of JSON).
pub const MAX_CHUNKS: usize = 32;
/// Longest a node remembers where a thing it handed over went (until the
/// new manager's records arrive).
pub const MOVED_MEMORY: Duration = Duration::from_secs(60);
/// Timeout of a handover call to the new manager.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// argon2 password verifications running at once.
pub const MAX_HASHING: usize = 1;
/// Key of the record that says where this node's device servers listen.
pub const KEY_ENDPOINTS: &str = "iot";

/// Why a thing operation failed. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ThingsError {
    #[error("no thing named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the node {node} did not answer: {reason}")]
    Unreachable { node: String, reason: String },
    #[error(transparent)]
    Store(#[from] locus_store::StoreError),
}

/// What happened to a thing this node managed.
#[derive(Debug, Clone, PartialEq)]
pub enum ThingEvent {
    /// Now managed by another node.
    Moved { name: String, to: NodeId },
    /// Removed from the registry.
    Removed { name: String },
}

/// Where a node's device servers listen, as published in its
/// [`KEY_ENDPOINTS`] record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    pub mqtt: Option<String>,
    pub lwm2m: Option<String>,
    pub bootstrap: Option<String>,
    /// The LwM2M server over DTLS (coaps); absent in records of nodes that
    /// have none.
    #[serde(default)]
    pub lwm2m_dtls: Option<String>,
    /// The LwM2M bootstrap server over DTLS (coaps).
    #[serde(default)]
    pub bootstrap_dtls: Option<String>,
}

/// Where a thing is.
#[derive(Debug, Clone)]
pub enum Located {
    /// This node manages it.
    Local(Thing),
    /// Another node does.
    Remote {
        thing: Thing,
        owner: NodeId,
        api_addr: String,
    },
}

/// Why an MQTT login was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("no thing named {0:?} is managed here")]
    Unknown(String),
    #[error("thing {0:?} is managed by node {1}")]
    ManagedElsewhere(String, NodeId),
    #[error("wrong password for thing {0:?}")]
    BadPassword(String),
    #[error("thing {0:?} is not an mqtt thing")]
    NotMqtt(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    n: u32,
    digest: String,
    generation: u64,
    /// The workload that manages the thing, if any (so that a node can
    /// tell where the thing goes without assembling it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workload: Option<String>,
}

struct Owned {
    thing: Thing,
    chunks: u32,
}

struct Inner {
    me: NodeId,
    store: Store,
    fabric: FabricHandle,
    owned: Mutex<BTreeMap<String, Owned>>,
    /// Thing name → (new manager, the thing as handed over, when).
    moved: Mutex<HashMap<String, (Thing, Instant)>>,
    /// Thing name → BLAKE3 of the last password that verified.
    logins: std::sync::Mutex<HashMap<String, [u8; 32]>>,
    /// Bounds the argon2 verifications running at once, so that a flood of
    /// bad logins costs at most that many cores.
    hashing: tokio::sync::Semaphore,
    events: broadcast::Sender<ThingEvent>,
    /// Where this node's own device servers listen.
    endpoints: std::sync::Mutex<Endpoints>,
    /// Signs the handovers this node sends.
    signer: locus_core::Signer,
}

/// The node's things. Cheap to clone.
#[derive(Clone)]
pub struct Things {
    inner: Arc<Inner>,
}

/// The header and chunk keys of a thing's records.
fn header_key(name: &str) -> String {
    format!("thing/{name}")
}
fn chunk_key(name: &str, i: usize) -> String {
    format!("thing/{name}/{i}")
}

/// Hash a password for storage (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, ThingsError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ThingsError::Invalid(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ThingsError::Invalid(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ThingsError::Invalid(format!("cannot hash the password: {e}")))
}

fn verify_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password, &h)
            .is_ok()
    })
}

/// The name and generation of each thing an owner published, from the
/// headers alone (no thing is assembled or parsed).
fn generations_in(records: &[(String, u64, Vec<u8>)]) -> Vec<(String, u64, Option<String>)> {
    records
        .iter()
        .filter_map(|(key, _, value)| {
            let name = key.strip_prefix("thing/").filter(|n| !n.contains('/'))?;
            let h = serde_json::from_slice::<Header>(value).ok()?;
            Some((name.to_owned(), h.generation, h.workload))
        })
        .collect()
}

/// Assemble the things an owner published from its records.
fn things_in(records: &[(String, u64, Vec<u8>)]) -> Vec<Thing> {
    let by_key: BTreeMap<&str, &[u8]> = records
        .iter()
        .map(|(k, _, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut out = Vec::new();
    for (key, value) in &by_key {
        if key.strip_prefix("thing/").is_none_or(|n| n.contains('/')) {
            continue;
        }
        let Ok(h) = serde_json::from_slice::<Header>(value) else {
            continue;
        };
        // Chunks still on their way, or of another version: not yet.
        let Some(json) = locus_fabric::chunks::collect(
            |k| by_key.get(k).copied(),
            key,
            (h.n as usize).min(MAX_CHUNKS),
        )
        .filter(|json| blake3::hash(json).to_hex().as_str() == h.digest) else {
            continue;
        };
        if let Ok(t) = serde_json::from_slice::<Thing>(&json) {
            out.push(t);
        }
    }
    out
}

impl Things {
    /// The node's store (the MQTT broker keeps its sessions there).
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Load the things this node manages and publish them.
    pub async fn start(
        me: NodeId,
        store: Store,
        fabric: FabricHandle,
        signer: locus_core::Signer,
    ) -> Result<Things, ThingsError> {
        let mut owned = BTreeMap::new();
        for (name, body) in store.things().await? {
            match serde_json::from_str::<Thing>(&body) {
                Ok(t) => {
                    owned.insert(
                        name,
                        Owned {
                            thing: t,
                            chunks: 0,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(thing = %name, error = %e, "stored thing is unreadable; skipped")
                }
            }
        }
        let (events, _) = broadcast::channel(64);
        let things = Things {
            inner: Arc::new(Inner {
                me,
                store,
                fabric,
                signer,
                owned: Mutex::new(owned),
                moved: Mutex::new(HashMap::new()),
                logins: std::sync::Mutex::new(HashMap::new()),
                hashing: tokio::sync::Semaphore::new(MAX_HASHING),
                events,
                endpoints: std::sync::Mutex::new(Endpoints::default()),
            }),
        };
        let mut owned = things.inner.owned.lock().await;
        for o in owned.values_mut() {
            o.chunks = things.publish(&o.thing, 0).await;
        }
        drop(owned);
        Ok(things)
    }

    /// Events about things this node managed.
    pub fn subscribe(&self) -> broadcast::Receiver<ThingEvent> {
        self.inner.events.subscribe()
    }

    /// Publish where this node's device servers listen.
    pub async fn publish_endpoints(&self, e: &Endpoints) {
        if let Ok(mut mine) = self.inner.endpoints.lock() {
            *mine = e.clone();
        }
        if let Err(err) = self.inner.fabric.publish_json(KEY_ENDPOINTS, e).await {
            tracing::warn!(error = %err, "cannot publish the device endpoints");
        }
    }

    /// Where `node`'s device servers listen.
    pub async fn endpoints_of(&self, node: NodeId) -> Option<Endpoints> {
        if node == self.inner.me {
            return self.inner.endpoints.lock().ok().map(|e| e.clone());
        }
        let records = self.inner.fabric.records_of(node).await.ok()?;
        records
            .iter()
            .find(|(k, _, _)| k == KEY_ENDPOINTS)
            .and_then(|(_, _, v)| serde_json::from_slice(v).ok())
    }

    /// Publish a thing's records (chunks, then the header that names
    /// them); returns its chunk count.
    async fn publish(&self, t: &Thing, old_chunks: u32) -> u32 {
        let name = t.spec.name.get();
        let json = serde_json::to_vec(t).unwrap_or_default();
        let f = &self.inner.fabric;
        let n = locus_fabric::chunks::publish(
            f,
            |i| chunk_key(name, i),
            json.chunks(CHUNK).map(<[u8]>::to_vec),
            old_chunks as usize,
        )
        .await;
        let header = Header {
            n: n as u32,
            digest: blake3::hash(&json).to_hex().to_string(),
            generation: t.generation,
            workload: t.workload.clone(),
        };
        if let Err(e) = f.publish_json(&header_key(name), &header).await {
            tracing::warn!(thing = %name, error = %e, "cannot publish a thing");
        }
        n as u32
    }

    async fn unpublish(&self, name: &str, chunks: u32) {
        let f = &self.inner.fabric;
        let _ = f.publish(&header_key(name), None).await;
        locus_fabric::chunks::delete(f, |i| chunk_key(name, i), 0..chunks as usize).await;
    }

    /// Every thing in the cluster, with its manager's API address. A thing
    /// claimed by two nodes (a handover in flight) is shown once, at the
    /// higher generation.
    pub async fn directory(&self) -> Vec<(Thing, String)> {
        let mut best: BTreeMap<String, (Thing, String)> = BTreeMap::new();
        let nodes = self.inner.fabric.nodes().await;
        for n in nodes
            .iter()
            .filter(|n| n.liveness == Liveness::Alive || n.id == self.inner.me)
        {
            let api = n
                .info
                .as_ref()
                .map(|i| i.api_addr.clone())
                .unwrap_or_default();
            let found = if n.id == self.inner.me {
                self.inner
                    .owned
                    .lock()
                    .await
                    .values()
                    .map(|o| o.thing.clone())
                    .collect()
            } else {
                match self.inner.fabric.records_of(n.id).await {
                    Ok(records) => things_in(&records),
                    Err(_) => continue,
                }
            };
            for t in found.into_iter().filter(|t| t.manager == n.id) {
                let name = t.spec.name.get().clone();
                if best
                    .get(&name)
                    .is_none_or(|(b, _)| b.generation < t.generation)
                {
                    best.insert(name, (t, api.clone()));
                }
            }
        }
        // What the records show, the handover memory no longer needs to.
        let mut moved = self.inner.moved.lock().await;
        moved.retain(|name, (_, at)| at.elapsed() < MOVED_MEMORY && !best.contains_key(name));
        drop(moved);
        best.into_values().collect()
    }

    /// The things this node manages.
    pub async fn owned(&self) -> Vec<Thing> {
        self.inner
            .owned
            .lock()
            .await
            .values()
            .map(|o| o.thing.clone())
            .collect()
    }

    /// A thing this node manages.
    pub async fn get_local(&self, name: &str) -> Option<Thing> {
        self.inner
            .owned
            .lock()
            .await
            .get(name)
            .map(|o| o.thing.clone())
    }

    /// Find a thing anywhere in the cluster.
    pub async fn locate(&self, name: &str) -> Result<Located, ThingsError> {
        if let Some(t) = self.get_local(name).await {
            return Ok(Located::Local(t));
        }
        if let Some((t, api)) = self
            .directory()
            .await
            .into_iter()
            .find(|(t, _)| t.spec.name.get() == name)
        {
            return Ok(Located::Remote {
                owner: t.manager,
                thing: t,
                api_addr: api,
            });
        }
        // Handed over moments ago: the new manager's records may not have
        // arrived yet.
        let moved = self.inner.moved.lock().await.get(name).cloned();
        if let Some((t, at)) = moved
            && at.elapsed() < MOVED_MEMORY
        {
            let api = self
                .inner
                .fabric
                .nodes()
                .await
                .into_iter()
                .find(|n| n.id == t.manager)
                .and_then(|n| n.info.map(|i| i.api_addr))
                .unwrap_or_default();
            return Ok(Located::Remote {
                owner: t.manager,
                thing: t,
                api_addr: api,
            });
        }
        Err(ThingsError::NotFound(name.to_owned()))
    }

    /// Register a thing managed by this node (the caller resolved the
    /// manager to this node). The password is hashed; only the hash stays.
    pub async fn add(
        &self,
        mut spec: ThingSpec,
        workload: Option<String>,
    ) -> Result<Thing, ThingsError> {
        spec.check()
            .map_err(|e| ThingsError::Invalid(e.to_string()))?;
        let name = spec.name.get().clone();
        if let Ok(l) = self.locate(&name).await {
            let owner = match l {
                Located::Local(t) => t.manager,
                Located::Remote { owner, .. } => owner,
            };
            return Err(ThingsError::Conflict(format!(
                "thing {name:?} already exists, managed by node {owner}"
            )));
        }
        let password_hash = match spec.credentials.password.take() {
            Some(p) => {
                let p = p.get().clone();
                Some(
                    tokio::task::spawn_blocking(move || hash_password(&p))
                        .await
                        .map_err(|e| ThingsError::Invalid(e.to_string()))??,
                )
            }
            None => None,
        };
        let now = crate::unix_ms();
        let thing = Thing {
            spec,
            password_hash,
            manager: self.inner.me,
            workload,
            generation: 1,
            created_unix_ms: now,
            updated_unix_ms: now,
        };
        self.keep(thing.clone()).await?;
        Ok(thing)
    }

    /// Store and publish a thing this node now manages.
    async fn keep(&self, thing: Thing) -> Result<(), ThingsError> {
        let name = thing.spec.name.get().clone();
        let mut owned = self.inner.owned.lock().await;
        if !owned.contains_key(&name) && owned.len() >= MAX_OWNED {
            return Err(ThingsError::Conflict(format!(
                "this node already manages {MAX_OWNED} things"
            )));
        }
        let body = serde_json::to_string(&thing).unwrap_or_default();
        if body.len() > CHUNK * MAX_CHUNKS {
            return Err(ThingsError::Invalid(format!(
                "thing {name:?} is {} bytes of JSON; the limit is {}",
                body.len(),
                CHUNK * MAX_CHUNKS
            )));
        }
        self.inner
            .store
            .put_thing(name.clone(), body, thing.updated_unix_ms)
            .await?;
        let old = owned.get(&name).map_or(0, |o| o.chunks);
        let chunks = self.publish(&thing, old).await;
        self.inner.logins.lock().map(|mut l| l.remove(&name)).ok();
        self.inner.moved.lock().await.remove(&name);
        owned.insert(name, Owned { thing, chunks });
        Ok(())
    }

    /// Remove a thing this node manages.
    pub async fn remove(&self, name: &str) -> Result<Thing, ThingsError> {
        let thing = self.forget(name).await?;
        let _ = self.inner.events.send(ThingEvent::Removed {
            name: name.to_owned(),
        });
        Ok(thing)
    }

    /// Stop managing a thing: out of the store, off the fabric, out of
    /// memory and of the login cache.
    async fn forget(&self, name: &str) -> Result<Thing, ThingsError> {
        let mut owned = self.inner.owned.lock().await;
        let Some(chunks) = owned.get(name).map(|o| o.chunks) else {
            return Err(ThingsError::NotFound(name.to_owned()));
        };
        self.inner.store.delete_thing(name.to_owned()).await?;
        self.unpublish(name, chunks).await;
        let o = owned
            .remove(name)
            .ok_or_else(|| ThingsError::NotFound(name.to_owned()))?;
        drop(owned);
        self.inner.logins.lock().map(|mut l| l.remove(name)).ok();
        Ok(o.thing)
    }

    /// Give a thing this node manages a new manager: `to` (this node or
    /// another, whose API is at `to_api`) and optionally a workload there.
    pub async fn attach(
        &self,
        name: &str,
        to: NodeId,
        to_api: &str,
        workload: Option<String>,
    ) -> Result<Thing, ThingsError> {
        let Some(mut thing) = self.get_local(name).await else {
            return Err(ThingsError::NotFound(name.to_owned()));
        };
        thing.generation += 1;
        thing.updated_unix_ms = crate::unix_ms();
        thing.workload = workload;
        if to == self.inner.me {
            self.keep(thing.clone()).await?;
            return Ok(thing);
        }
        thing.manager = to;
        let client = reqwest::Client::builder()
            .timeout(HANDOVER_TIMEOUT)
            .build()
            .map_err(|e| ThingsError::Invalid(e.to_string()))?;
        let unreachable = |reason: String| ThingsError::Unreachable {
            node: to.to_string(),
            reason,
        };
        const PATH: &str = "/api/v1/things/handover";
        let body = serde_json::to_vec(&thing)
            .map_err(|e| ThingsError::Invalid(format!("cannot encode the thing: {e}")))?;
        let mut req = client
            .post(format!("http://{to_api}{PATH}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in self.inner.signer.sign("POST", PATH, &body) {
            req = req.header(name, value);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(ThingsError::Conflict(format!(
                "node {to} refused the thing ({status}): {body}"
            )));
        }
        // The new manager has it durably: forget it here.
        self.forget(name).await?;
        let mut moved = self.inner.moved.lock().await;
        moved.retain(|_, (_, at)| at.elapsed() < MOVED_MEMORY);
        moved.insert(name.to_owned(), (thing.clone(), Instant::now()));
        drop(moved);
        let _ = self.inner.events.send(ThingEvent::Moved {
            name: name.to_owned(),
            to,
        });
        Ok(thing)
    }

    /// Take a thing handed over by its previous manager.
    pub async fn accept(&self, thing: Thing) -> Result<Thing, ThingsError> {
        if thing.manager != self.inner.me {
            return Err(ThingsError::Conflict(format!(
                "the thing is addressed to node {}, not to this node {}",
                thing.manager, self.inner.me
            )));
        }
        thing
            .check()
            .map_err(|e| ThingsError::Invalid(e.to_string()))?;
        if let Some(have) = self.get_local(thing.spec.name.get()).await
            && have.generation > thing.generation
        {
            return Err(ThingsError::Conflict(format!(
                "this node holds a newer generation ({}) of the thing",
                have.generation
            )));
        }
        self.keep(thing.clone()).await?;
        Ok(thing)
    }

    /// Check an MQTT login: the user name is a thing this node manages and
    /// the password matches its hash.
    pub async fn authenticate(&self, name: &str, password: &[u8]) -> Result<(), AuthError> {
        let Some(thing) = self.get_local(name).await else {
            return match self.locate(name).await {
                Ok(Located::Remote { owner, .. }) => {
                    Err(AuthError::ManagedElsewhere(name.to_owned(), owner))
                }
                _ => Err(AuthError::Unknown(name.to_owned())),
            };
        };
        if thing.spec.protocol != locus_core::thing::ThingProtocol::Mqtt {
            return Err(AuthError::NotMqtt(name.to_owned()));
        }
        let Some(hash) = thing.password_hash else {
            return Err(AuthError::BadPassword(name.to_owned()));
        };
        let digest = *blake3::hash(password).as_bytes();
        let cached = self
            .inner
            .logins
            .lock()
            .ok()
            .and_then(|l| l.get(name).copied());
        if cached == Some(digest) {
            return Ok(());
        }
        let pw = password.to_vec();
        let Ok(_permit) = self.inner.hashing.acquire().await else {
            return Err(AuthError::BadPassword(name.to_owned()));
        };
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(AuthError::BadPassword(name.to_owned()));
        }
        if let Ok(mut l) = self.inner.logins.lock() {
            l.insert(name.to_owned(), digest);
        }
        Ok(())
    }
}

impl Things {
    /// The LwM2M things of the cluster, including one this node handed over
    /// moments ago.
    async fn lwm2m_things(&self) -> Vec<Thing> {
        use locus_core::thing::ThingProtocol;
        let mut all: Vec<Thing> = self.directory().await.into_iter().map(|(t, _)| t).collect();
        all.extend(
            self.inner
                .moved
                .lock()
                .await
                .values()
                .filter(|(_, at)| at.elapsed() < MOVED_MEMORY)
                .map(|(t, _)| t.clone()),
        );
        all.retain(|t| t.spec.protocol == ThingProtocol::Lwm2m);
        all
    }

    /// `t` as the LwM2M servers see it: its server is its manager's LwM2M
    /// server, over DTLS when it has PSK credentials.
    async fn as_lwm2m(&self, t: Thing) -> Option<crate::lwm2m::Lwm2mThing> {
        use locus_core::thing::ValueType;
        use locus_iot::lwm2m::SecurityMode;
        use locus_iot::lwm2m::content::ResourceKind;
        let c = &t.spec.credentials;
        let security = match (&c.psk_identity, &c.psk_key) {
            (Some(id), Some(key)) => SecurityMode::Psk {
                identity: id.get().as_bytes().to_vec(),
                key: key.bytes(),
            },
            _ => SecurityMode::NoSec,
        };
        let endpoints = self.endpoints_of(t.manager).await.unwrap_or_default();
        let server_uri = match (&security, endpoints.lwm2m, endpoints.lwm2m_dtls) {
            (SecurityMode::NoSec, Some(server), _) => format!("coap://{server}"),
            (SecurityMode::Psk { .. }, _, Some(server)) => format!("coaps://{server}"),
            (SecurityMode::NoSec, None, _) => {
                tracing::warn!(thing = %t.spec.name.get(), manager = %t.manager, "the manager of the thing runs no LwM2M server");
                return None;
            }
            (SecurityMode::Psk { .. }, _, None) => {
                tracing::warn!(thing = %t.spec.name.get(), manager = %t.manager, "the manager of the thing runs no LwM2M server over DTLS");
                return None;
            }
        };
        let resources = t
            .spec
            .resources
            .iter()
            .filter_map(|r| {
                Some(crate::lwm2m::Lwm2mResource {
                    name: r.name.get().clone(),
                    path: r.path.as_ref()?.get().clone(),
                    unit: r.unit.as_ref().map(|u| u.get().clone()),
                    observe: r.observe && r.access.readable(),
                    kind: Some(match r.value_type {
                        ValueType::Float => ResourceKind::Float,
                        ValueType::Int => ResourceKind::Integer,
                        ValueType::Bool => ResourceKind::Boolean,
                        ValueType::String => ResourceKind::String,
                        ValueType::Binary => ResourceKind::Opaque,
                    }),
                })
            })
            .collect();
        Some(crate::lwm2m::Lwm2mThing {
            name: t.spec.name.get().clone(),
            endpoint: t.spec.endpoint().to_owned(),
            managed_here: t.manager == self.inner.me,
            server_uri,
            security,
            resources,
        })
    }
}

/// The LwM2M server's view of the registry: any LwM2M thing of the
/// cluster (the bootstrap server writes the server of its current
/// manager), including one this node handed over moments ago.
#[async_trait::async_trait]
impl crate::lwm2m::Lwm2mDirectory for Things {
    async fn lwm2m_thing(&self, endpoint: &str) -> Option<crate::lwm2m::Lwm2mThing> {
        let t = self
            .lwm2m_things()
            .await
            .into_iter()
            .find(|t| t.spec.endpoint() == endpoint)?;
        self.as_lwm2m(t).await
    }

    async fn lwm2m_psk(&self, identity: &[u8]) -> Option<crate::lwm2m::Lwm2mThing> {
        let mut named = self.lwm2m_things().await;
        named.retain(|t| {
            t.spec
                .credentials
                .psk_identity
                .as_ref()
                .is_some_and(|id| id.get().as_bytes() == identity)
        });
        // A thing handed over moments ago may be listed twice: the
        // directory's record first.
        named.sort_by(|a, b| a.spec.name.get().cmp(b.spec.name.get()));
        named.dedup_by(|later, first| later.spec.name == first.spec.name);
        match named.len() {
            1 => self.as_lwm2m(named.remove(0)).await,
            0 => None,
            n => {
                tracing::warn!(
                    identity = %String::from_utf8_lossy(identity), things = n,
                    "a PSK identity shared by several things is refused"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, b"correct horse"));
        assert!(!verify_password(&h, b"correct horsE"));
        assert!(!verify_password("not a hash", b"x"));
    }

    #[test]
    fn records_assemble_only_when_complete_and_matching() {
        let spec = ThingSpec::parse(
            "name = \"t1\"\nprotocol = \"http\"\n",
            locus_core::workload::SpecFormat::Toml,
        )
        .unwrap();
        let t = Thing {
            spec,
            password_hash: None,
            manager: NodeId::from_bytes([3; 10]),
            workload: None,
            generation: 2,
            created_unix_ms: 1,
            updated_unix_ms: 1,
        };
        let json = serde_json::to_vec(&t).unwrap();
        let (a, b) = json.split_at(json.len() / 2);
        let header = serde_json::to_vec(&Header {
            n: 2,
            digest: blake3::hash(&json).to_hex().to_string(),
            generation: 2,
            workload: None,
        })
        .unwrap();
        let mut records = vec![
            ("thing/t1".to_owned(), 3, header),
            ("thing/t1/0".to_owned(), 1, a.to_vec()),
        ];
        assert!(things_in(&records).is_empty(), "a chunk is missing");
        records.push(("thing/t1/1".to_owned(), 2, b.to_vec()));
        assert_eq!(things_in(&records), vec![t]);
        records[2].2 = b"garbage".to_vec();
        assert!(things_in(&records).is_empty(), "digest mismatch");
    }
}

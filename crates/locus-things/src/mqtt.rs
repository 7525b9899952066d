//! The node's embedded MQTT broker for things: MQTT 3.1.1 and MQTT 5 over
//! TCP on one listener, built on ntex-mqtt, on its own thread and runtime.
//! Login, ingest, subscriptions and commands are one code path; only what
//! each version can say differs.
//!
//! - **Login**: the user name is a thing's name, the password its own
//!   (checked against the argon2 hash in the registry). Only things this
//!   node manages get in: an unknown name or a wrong password gets CONNACK
//!   return code 4 (bad user name or password), a thing managed by another
//!   node gets 5 (not authorised).
//! - **Readings**: a thing publishes on `things/{thing}/readings` a JSON
//!   payload (SenML JSON, one simple reading, or a map of resources to
//!   values; see `locus_iot::senml`). The readings are durable and sealed
//!   (`Readings::ingest`) *before* the QoS 1 PUBACK leaves. A thing whose
//!   profile declares resources may only publish those.
//! - **Refusals**: a publish that is refused (another topic, a malformed
//!   payload, an undeclared resource) is logged with the reason and counted
//!   (`locus_thing_malformed_total`, `locus_mqtt_refused_total`), and
//!   nothing of it is stored. MQTT 3.1.1 has no negative PUBACK, so the
//!   connection closes without an acknowledgement; MQTT 5 answers a PUBACK
//!   whose reason code says why (135, 153, or 128 when the store failed).
//! - **Commands**: a thing subscribes to `things/{thing}/commands/#`; a
//!   command is a QoS 1 publish on `things/{thing}/commands/{resource}`,
//!   reported delivered once the thing's PUBACK arrives. A thing may not
//!   subscribe to anything else.
//! - **Persistent sessions**: a thing that logs in without a clean session
//!   (3.1.1 `clean_session = 0`, 5 `clean_start = 0` with a session expiry)
//!   keeps its command subscriptions across disconnections and restarts.
//!   A command to such a thing while it is offline is queued durably (at
//!   most [`MAX_QUEUED`] per thing; past that it is refused, saying so) and
//!   delivered, oldest first, when it is back; a queued command is
//!   forgotten only once the thing's PUBACK arrives. `locus thing cmd` says
//!   whether a command was delivered or queued.
//! - **Manager change**: when a thing moves to another node, its session
//!   here is closed and its next login here is refused with code 5.
//!
//! The broker never relays one thing's messages to another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locus_core::thing::ThingSpec;
use locus_iot::{Reading, senml};
use ntex::SharedCfg;
use ntex::util::Bytes;
use ntex_mqtt::{v3, v5};
use tokio::sync::{mpsc, oneshot};

mod persisted;

pub use persisted::MAX_QUEUED;
use persisted::{Enqueued, Persisted, Sessions};

use crate::metrics::ThingMetrics;
use crate::registry::{AuthError, ThingEvent, Things};
use locus_readings::Readings;

/// Most MQTT sessions open at once.
pub const MAX_SESSIONS: usize = 4096;
/// Largest publish accepted, bytes.
pub const MAX_PACKET: u32 = 256 * 1024;
/// How long a client has to send its CONNECT and be answered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command waits for the thing's PUBACK.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands queued for one session.
const COMMAND_QUEUE: usize = 16;
/// Most sessions of one thing at once (a device may publish and subscribe
/// over separate connections).
pub const MAX_SESSIONS_PER_THING: usize = 8;

/// Why a command could not be delivered over MQTT.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MqttCommandError {
    #[error("thing {0:?} has no MQTT session on this node")]
    NotConnected(String),
    #[error("thing {thing:?} is connected but not subscribed to {topic}")]
    NotSubscribed { thing: String, topic: String },
    #[error("thing {0:?} did not acknowledge the command within 5 s")]
    Timeout(String),
    #[error("the session of thing {0:?} closed: {1}")]
    Closed(String, String),
    #[error(
        "thing {thing:?} is offline and already has {max} commands queued (the most kept); this one was not queued"
    )]
    QueueFull { thing: String, max: u32 },
    #[error("cannot queue the command for thing {0:?}: {1}")]
    Store(String, String),
}

/// How a command reached its thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The thing acknowledged it (PUBACK) on `topic`.
    Delivered { topic: String },
    /// The thing is offline with a persistent session: the command is
    /// stored and `waiting` commands (this one included) will be delivered
    /// on `topic` when it is back.
    Queued { topic: String, waiting: u32 },
}

enum Cmd {
    Publish {
        topic: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Deliver what is queued for the thing.
    Drain,
    Close,
}

struct SessionEntry {
    id: u64,
    client_id: String,
    tx: mpsc::Sender<Cmd>,
    subs: Arc<Mutex<Vec<String>>>,
}

struct Shared {
    things: Things,
    readings: Readings,
    metrics: Arc<ThingMetrics>,
    /// Thing name → its open sessions.
    sessions: Mutex<HashMap<String, Vec<SessionEntry>>>,
    next_id: AtomicU64,
    /// Things whose queued commands are being delivered (one session at a
    /// time, so that none goes out twice).
    draining: Mutex<std::collections::HashSet<String>>,
    /// The persistent sessions (as in the store).
    kept: Mutex<Sessions>,
}

impl Shared {
    fn refuse(&self, reason: &str) {
        self.metrics.mqtt_refused.with_label_values(&[reason]).inc();
    }
    fn malformed(&self, kind: &str) {
        self.metrics
            .thing_malformed
            .with_label_values(&["mqtt", kind])
            .inc();
    }
}

/// The state of one thing's connection (lives on the broker thread).
struct Conn {
    thing: String,
    spec: ThingSpec,
    id: u64,
    shared: Arc<Shared>,
    subs: Arc<Mutex<Vec<String>>>,
    topic: String,
    client_id: String,
    /// Not a clean session: its subscriptions are kept.
    persistent: bool,
    /// This session's command queue.
    tx: mpsc::Sender<Cmd>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.sessions.lock()
            && let Some(list) = s.get_mut(&self.thing)
        {
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                s.remove(&self.thing);
            }
        }
        self.shared.metrics.mqtt_sessions.dec();
    }
}

/// Why the broker closes a connection.
#[derive(Debug)]
pub struct Refused(pub String);

impl From<()> for Refused {
    fn from(_: ()) -> Self {
        Refused("refused".into())
    }
}

/// The running broker.
pub struct Broker {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Does MQTT filter `filter` match `topic`?
fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Why a login is refused, in terms both protocol versions can say.
enum LoginRefused {
    /// Unknown thing, wrong password, no user name.
    BadCredentials,
    /// The thing exists but may not log in here (managed by another node,
    /// not an MQTT thing).
    NotAuthorized,
    /// Too many sessions.
    Unavailable,
}

/// Check a login and open the thing's session: its connection state and
/// the queue of commands for it.
async fn login(
    shared: Arc<Shared>,
    user: Option<String>,
    password: &[u8],
    client_id: String,
    persistent: bool,
) -> Result<(Conn, mpsc::Receiver<Cmd>), LoginRefused> {
    let Some(user) = user else {
        shared.refuse("no_credentials");
        tracing::info!("MQTT login without a user name refused");
        return Err(LoginRefused::BadCredentials);
    };
    if let Err(e) = shared.things.authenticate(&user, password).await {
        tracing::info!(thing = %user, reason = %e, "MQTT login refused");
        return Err(match e {
            AuthError::ManagedElsewhere(..) => {
                shared.refuse("managed_elsewhere");
                LoginRefused::NotAuthorized
            }
            AuthError::NotMqtt(_) => {
                shared.refuse("not_mqtt");
                LoginRefused::NotAuthorized
            }
            AuthError::Unknown(_) => {
                shared.refuse("unknown_thing");
                LoginRefused::BadCredentials
            }
            AuthError::BadPassword(_) => {
                shared.refuse("bad_password");
                LoginRefused::BadCredentials
            }
        });
    }
    let Some(thing) = shared.things.get_local(&user).await else {
        shared.refuse("unknown_thing");
        return Err(LoginRefused::BadCredentials);
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let subs = Arc::new(Mutex::new(Vec::new()));
    {
        let Ok(mut sessions) = shared.sessions.lock() else {
            return Err(LoginRefused::Unavailable);
        };
        let total: usize = sessions.values().map(Vec::len).sum();
        let list = sessions.entry(user.clone()).or_default();
        // A new login with the same client id takes over (MQTT-3.1.4-2).
        list.retain(|e| {
            let same = e.client_id == client_id;
            if same {
                let _ = e.tx.try_send(Cmd::Close);
            }
            !same
        });
        if total >= MAX_SESSIONS || list.len() >= MAX_SESSIONS_PER_THING {
            shared.refuse("too_many_sessions");
            return Err(LoginRefused::Unavailable);
        }
        list.push(SessionEntry {
            id,
            client_id: client_id.clone(),
            tx: tx.clone(),
            subs: subs.clone(),
        });
    }
    shared.metrics.mqtt_sessions.inc();
    // A persistent session gets its subscriptions back and what was queued
    // while it was away; a clean one discards what its client id had.
    if persistent {
        let kept = shared
            .kept
            .lock()
            .ok()
            .and_then(|k| k.filters(&user, &client_id).cloned());
        if let Some(filters) = kept {
            if let Ok(mut s) = subs.lock() {
                *s = filters;
            }
            let _ = tx.try_send(Cmd::Drain);
        }
    } else if shared
        .kept
        .lock()
        .is_ok_and(|mut k| k.remove(&user, &client_id))
        && let Err(e) = shared
            .things
            .store()
            .drop_session(user.clone(), client_id.clone())
            .await
    {
        tracing::warn!(thing = %user, error = %e, "cannot discard the MQTT session");
    }
    tracing::debug!(thing = %user, persistent, "MQTT session open");
    let conn = Conn {
        topic: format!("things/{user}/readings"),
        thing: user,
        spec: thing.spec,
        id,
        shared,
        subs,
        client_id,
        persistent,
        tx,
    };
    Ok((conn, rx))
}

/// Deliver the session's commands through `send` (a QoS 1 publish that
/// ends with the thing's PUBACK) until it closes.
fn deliver_commands<F, Fut>(
    conn: &Conn,
    mut rx: mpsc::Receiver<Cmd>,
    send: F,
    close: impl FnOnce() + 'static,
) where
    F: Fn(String, Bytes) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    let (shared, thing, subs) = (conn.shared.clone(), conn.thing.clone(), conn.subs.clone());
    ntex::rt::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Publish {
                    topic,
                    payload,
                    reply,
                } => {
                    let _ = reply.send(send(topic, payload).await);
                }
                Cmd::Drain => drain(&shared, &thing, &subs, &send).await,
                Cmd::Close => {
                    close();
                    break;
                }
            }
        }
    });
}

/// Deliver the commands queued for `thing` that this session subscribed
/// to, oldest first; each is forgotten once the thing acknowledged it.
/// Stops at the first that is not acknowledged (the rest stay queued).
async fn drain<F, Fut>(shared: &Shared, thing: &str, subs: &Mutex<Vec<String>>, send: &F)
where
    F: Fn(String, Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if !shared
        .draining
        .lock()
        .is_ok_and(|mut d| d.insert(thing.to_owned()))
    {
        return;
    }
    let store = shared.things.store();
    match store.queued(thing.to_owned()).await {
        Ok(queued) => {
            for q in queued {
                let wanted = subs
                    .lock()
                    .is_ok_and(|s| s.iter().any(|f| matches(f, &q.topic)));
                if !wanted {
                    continue;
                }
                if let Err(e) = send(q.topic.clone(), Bytes::from(q.payload)).await {
                    tracing::info!(thing, topic = %q.topic, error = %e, "queued command not acknowledged; kept");
                    break;
                }
                if let Err(e) = store.delivered(q.id).await {
                    tracing::warn!(thing, error = %e, "cannot forget a delivered command");
                }
                tracing::info!(thing, topic = %q.topic, "queued command delivered");
            }
        }
        Err(e) => tracing::warn!(thing, error = %e, "cannot read the queued commands"),
    }
    if let Ok(mut d) = shared.draining.lock() {
        d.remove(thing);
    }
}

/// Session present: a persistent session whose subscriptions were kept.
fn session_present(conn: &Conn) -> bool {
    conn.persistent && conn.subs.lock().is_ok_and(|s| !s.is_empty())
}

async fn connect_v3(shared: Arc<Shared>, c: v3::Connect) -> Result<v3::ConnectAck<Conn>, Refused> {
    let pkt = c.packet();
    let user = pkt.username.as_ref().map(|u| u.to_string());
    let password = pkt.password.clone().unwrap_or_default();
    let client_id = pkt.client_id.to_string();
    let persistent = !pkt.clean_session;
    match login(shared, user, &password, client_id, persistent).await {
        Ok((conn, rx)) => {
            let sink = c.sink();
            let closer = sink.clone();
            deliver_commands(
                &conn,
                rx,
                move |topic, payload| {
                    let sink = sink.clone();
                    async move {
                        sink.publish(topic)
                            .send_at_least_once(payload)
                            .await
                            .map_err(|e| format!("{e:?}"))
                    }
                },
                move || closer.close(),
            );
            let present = session_present(&conn);
            Ok(c.ack(conn, present))
        }
        Err(LoginRefused::BadCredentials) => Ok(c.bad_username_or_pwd()),
        Err(LoginRefused::NotAuthorized) => Ok(c.not_authorized()),
        Err(LoginRefused::Unavailable) => Ok(c.service_unavailable()),
    }
}

async fn connect_v5(shared: Arc<Shared>, c: v5::Connect) -> Result<v5::ConnectAck<Conn>, Refused> {
    use v5::codec::ConnectAckReason;
    let pkt = c.packet();
    let user = pkt.username.as_ref().map(|u| u.to_string());
    let password = pkt.password.clone().unwrap_or_default();
    let client_id = pkt.client_id.to_string();
    let persistent = !pkt.clean_start && pkt.session_expiry_interval_secs > 0;
    match login(shared, user, &password, client_id, persistent).await {
        Ok((conn, rx)) => {
            let sink = c.sink();
            let closer = sink.clone();
            deliver_commands(
                &conn,
                rx,
                move |topic, payload| {
                    let sink = sink.clone();
                    async move {
                        let ack = sink
                            .publish(topic)
                            .send_at_least_once(payload)
                            .await
                            .map_err(|e| format!("{e:?}"))?;
                        if ack.reason_code == v5::codec::PublishAckReason::Success {
                            Ok(())
                        } else {
                            Err(format!("PUBACK reason {:?}", ack.reason_code))
                        }
                    }
                },
                move || closer.close(),
            );
            let present = session_present(&conn);
            // What this broker does not do, said up front (MQTT 5 §3.2.2.3):
            // the codec then refuses a QoS 2 or retained publish with
            // DISCONNECT 0x9B / 0x9A.
            Ok(c.ack(conn).with(|ack| {
                ack.session_present = present;
                ack.max_qos = v5::QoS::AtLeastOnce;
                ack.retain_available = false;
                ack.shared_subscription_available = false;
                ack.subscription_identifiers_available = false;
            }))
        }
        Err(LoginRefused::BadCredentials) => Ok(c.failed(ConnectAckReason::BadUserNameOrPassword)),
        Err(LoginRefused::NotAuthorized) => Ok(c.failed(ConnectAckReason::NotAuthorized)),
        Err(LoginRefused::Unavailable) => Ok(c.failed(ConnectAckReason::ServerUnavailable)),
    }
}

/// The readings of one payload of `spec`'s thing, or what is wrong with
/// it: `(metric kind, why)`.
fn readings_of(spec: &ThingSpec, payload: &[u8]) -> Result<Vec<Reading>, (&'static str, String)> {
    let thing = spec.name.get();
    let records = senml::parse(payload, now_s()).map_err(|e| ("json", e.to_string()))?;
    let mut readings = Vec::with_capacity(records.len());
    for (i, mut r) in records.into_iter().enumerate() {
        if !spec.resources.is_empty() {
            let Some(res) = spec.resource(&r.name) else {
                return Err((
                    "undeclared_resource",
                    format!(
                        "record {i}: thing {thing} declares no resource {:?}",
                        r.name
                    ),
                ));
            };
            if r.unit.is_none() {
                r.unit = res.unit.as_ref().map(|u| u.get().clone());
            }
        }
        readings.push(
            r.to_reading(thing)
                .map_err(|e| ("reading", format!("record {i}: {e}")))?,
        );
    }
    Ok(readings)
}

/// Store readings; true when they are durable and sealed.
async fn store(shared: &Shared, thing: &str, readings: Vec<Reading>) -> bool {
    let n = readings.len() as u64;
    match shared.readings.ingest(readings).await {
        Ok(_) => {
            shared
                .metrics
                .thing_readings
                .with_label_values(&["mqtt"])
                .inc_by(n);
            true
        }
        Err(e) => {
            tracing::error!(thing, error = %e, "cannot store readings; not acknowledged");
            false
        }
    }
}

/// Why a publish is not acknowledged as stored.
enum PublishRefused {
    /// Outside `things/{thing}/readings`.
    Topic(String),
    /// The payload is not readings of this thing.
    Malformed(String),
    /// The store did not commit them.
    Store,
}

/// Store the readings of one publish of `conn`'s thing; `Ok` once they are
/// durable and sealed.
async fn accept(
    conn: &Conn,
    topic: &str,
    payload: Result<Bytes, String>,
) -> Result<(), PublishRefused> {
    let shared = &conn.shared;
    if topic != conn.topic {
        shared.refuse("topic");
        tracing::warn!(thing = %conn.thing, %topic, "publish outside things/{{thing}}/readings refused");
        return Err(PublishRefused::Topic(format!("topic {topic} refused")));
    }
    let payload = payload.map_err(|e| {
        shared.malformed("payload");
        PublishRefused::Malformed(format!("payload: {e}"))
    })?;
    let readings = readings_of(&conn.spec, &payload).map_err(|(kind, why)| {
        shared.malformed(kind);
        tracing::warn!(thing = %conn.thing, kind, %why, "malformed readings refused");
        PublishRefused::Malformed(why)
    })?;
    if store(shared, &conn.thing, readings).await {
        Ok(())
    } else {
        Err(PublishRefused::Store)
    }
}

/// MQTT 3.1.1 has no negative PUBACK: a refused publish closes the
/// connection unacknowledged.
async fn publish_v3(session: &v3::Session<Conn>, p: v3::Publish) -> Result<(), Refused> {
    let payload = p.read_all().await.map_err(|e| format!("{e:?}"));
    accept(session, p.publish_topic(), payload)
        .await
        .map_err(|e| match e {
            PublishRefused::Topic(why) | PublishRefused::Malformed(why) => Refused(why),
            PublishRefused::Store => Refused("store".into()),
        })
}

/// MQTT 5 says why: a refused publish gets a PUBACK with its reason code
/// (nothing of it was stored) and the session stays open.
async fn publish_v5(
    session: &v5::Session<Conn>,
    p: v5::Publish,
) -> Result<v5::PublishAck, Refused> {
    use v5::codec::PublishAckReason;
    let payload = p.read_all().await.map_err(|e| format!("{e:?}"));
    let topic = p.publish_topic().to_owned();
    Ok(match accept(session, &topic, payload).await {
        Ok(()) => p.ack(),
        Err(PublishRefused::Topic(why)) => p
            .ack()
            .reason_code(PublishAckReason::NotAuthorized)
            .reason(why.into()),
        Err(PublishRefused::Malformed(why)) => p
            .ack()
            .reason_code(PublishAckReason::PayloadFormatInvalid)
            .reason(why.into()),
        Err(PublishRefused::Store) => p
            .ack()
            .reason_code(PublishAckReason::UnspecifiedError)
            .reason("the readings could not be stored".into()),
    })
}

impl TryFrom<Refused> for v5::PublishAck {
    type Error = Refused;

    fn try_from(e: Refused) -> Result<Self, Self::Error> {
        Err(e)
    }
}

/// May `conn`'s thing subscribe to `topic`? Only to its own commands;
/// an allowed filter is remembered for command delivery.
fn subscribe(conn: &Conn, topic: &str) -> bool {
    let own = format!("things/{}/commands/", conn.thing);
    let inside = topic.starts_with(&own)
        && !topic[own.len()..].is_empty()
        && !topic[own.len()..].contains("/#/");
    if inside {
        if let Ok(mut subs) = conn.subs.lock()
            && subs.len() < 64
        {
            subs.push(topic.to_owned());
        }
    } else {
        conn.shared.refuse("subscription");
        tracing::info!(thing = %conn.thing, %topic, "subscription outside things/{{thing}}/commands/ refused");
    }
    inside
}

fn unsubscribe<'a>(conn: &Conn, topics: impl Iterator<Item = &'a ntex::util::ByteString>) {
    let gone: Vec<String> = topics.map(|t| t.to_string()).collect();
    if let Ok(mut subs) = conn.subs.lock() {
        subs.retain(|s| !gone.contains(s));
    }
}

/// After a SUBSCRIBE or UNSUBSCRIBE of a persistent session: keep its
/// filters (before the acknowledgement, so that a SUBACK means they
/// survive), then deliver what waits for them. A clean session keeps
/// nothing and is sent nothing that was queued.
async fn subscriptions_changed(conn: &Conn) {
    if !conn.persistent {
        return;
    }
    let filters = conn.subs.lock().map(|s| s.clone()).unwrap_or_default();
    let kept = conn.shared.kept.lock().is_ok_and(|mut k| {
        // At most MAX_SESSIONS_PER_THING client ids of a thing are kept.
        let room = k.filters(&conn.thing, &conn.client_id).is_some()
            || k.count(&conn.thing) < MAX_SESSIONS_PER_THING;
        if room {
            k.set(conn.thing.clone(), conn.client_id.clone(), filters.clone());
        }
        room
    });
    if !kept {
        conn.shared.refuse("persistent_sessions");
        tracing::warn!(thing = %conn.thing, client_id = %conn.client_id, "the thing has {MAX_SESSIONS_PER_THING} persistent sessions already; this one is not kept");
        return;
    }
    if let Err(e) = conn
        .shared
        .things
        .store()
        .keep_session(
            conn.thing.clone(),
            conn.client_id.clone(),
            filters,
            crate::unix_ms(),
        )
        .await
    {
        tracing::warn!(thing = %conn.thing, error = %e, "cannot keep the MQTT session");
    }
    let _ = conn.tx.try_send(Cmd::Drain);
}

async fn protocol_v3(
    session: &v3::Session<Conn>,
    msg: v3::ProtocolMessage,
) -> Result<v3::ProtocolMessageAck, Refused> {
    Ok(match msg {
        v3::ProtocolMessage::Subscribe(mut s) => {
            for mut sub in s.iter_mut() {
                if subscribe(session, sub.topic().as_ref()) {
                    sub.confirm(v3::QoS::AtLeastOnce);
                } else {
                    sub.fail();
                }
            }
            subscriptions_changed(session).await;
            s.ack()
        }
        v3::ProtocolMessage::Unsubscribe(u) => {
            unsubscribe(session, u.iter());
            subscriptions_changed(session).await;
            u.ack()
        }
        other => other.ack(),
    })
}

async fn protocol_v5(
    session: &v5::Session<Conn>,
    msg: v5::ProtocolMessage,
) -> Result<v5::ProtocolMessageAck, Refused> {
    Ok(match msg {
        v5::ProtocolMessage::Subscribe(mut s) => {
            for mut sub in s.iter_mut() {
                if sub.topic().starts_with("$share/") {
                    session.shared.refuse("subscription");
                    sub.fail(v5::codec::SubscribeAckReason::SharedSubscriptionNotSupported);
                } else if subscribe(session, sub.topic().as_ref()) {
                    sub.confirm(v5::QoS::AtLeastOnce);
                } else {
                    sub.fail(v5::codec::SubscribeAckReason::NotAuthorized);
                }
            }
            subscriptions_changed(session).await;
            s.ack()
        }
        v5::ProtocolMessage::Unsubscribe(u) => {
            unsubscribe(session, u.iter());
            subscriptions_changed(session).await;
            u.ack()
        }
        other => other.ack(),
    })
}

/// The broker's limits: a client that does not complete its CONNECT in
/// [`CONNECT_TIMEOUT`] is dropped; packets are at most [`MAX_PACKET`].
fn config() -> SharedCfg {
    let secs = ntex::time::Seconds(CONNECT_TIMEOUT.as_secs() as u16);
    SharedCfg::new("mqtt")
        .add(
            ntex_mqtt::MqttServiceConfig::new()
                .set_connect_timeout(secs)
                .set_handshake_timeout(secs)
                .set_max_size(MAX_PACKET),
        )
        .into()
}

/// Count what ends a session badly: a broken MQTT packet after login.
fn control(conn: &Conn, c: ntex_mqtt::Control<Refused>) {
    if let ntex_mqtt::Control::Stop(ntex_mqtt::Reason::Protocol(e)) = c {
        conn.shared.refuse("protocol");
        conn.shared.malformed("packet");
        tracing::warn!(thing = %conn.thing, error = ?e.get_ref(), "malformed MQTT packet; closing");
    }
}

impl Broker {
    /// Bind `bind` and serve things on a thread of its own.
    pub async fn start(
        bind: SocketAddr,
        things: Things,
        readings: Readings,
        metrics: Arc<ThingMetrics>,
    ) -> std::io::Result<Broker> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // The persistent sessions, read once; memory follows the store.
        let kept = things
            .store()
            .sessions()
            .await
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            things: things.clone(),
            readings,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            draining: Mutex::new(std::collections::HashSet::new()),
            kept: Mutex::new(Sessions::from_rows(kept)),
        });
        let for_server = shared.clone();
        std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                let run = ntex::rt::System::build()
                    .name("mqtt")
                    .disable_signals()
                    .build(ntex::rt::DefaultRuntime)
                    .block_on(async move {
                        let server = ntex::server::build()
                            .workers(1)
                            .disable_signals()
                            .listen("mqtt", listener, config(), async move |_| {
                                let (v3_login, v5_login) = (for_server.clone(), for_server.clone());
                                ntex_mqtt::MqttServer::new()
                                    .v3(v3::MqttServer::new(
                                        async move |s: &v3::Session<Conn>, p| {
                                            publish_v3(s, p).await
                                        },
                                    )
                                    .protocol(async move |s: &v3::Session<Conn>, m| {
                                        protocol_v3(s, m).await
                                    })
                                    .control(async move |s: &v3::Session<Conn>, c| {
                                        control(s, c);
                                        Ok::<_, Refused>(None)
                                    })
                                    .build(move |c| connect_v3(v3_login.clone(), c)))
                                    .v5(v5::MqttServer::new(
                                        async move |s: &v5::Session<Conn>, p| {
                                            publish_v5(s, p).await
                                        },
                                    )
                                    .protocol(async move |s: &v5::Session<Conn>, m| {
                                        protocol_v5(s, m).await
                                    })
                                    .control(async move |s: &v5::Session<Conn>, c| {
                                        control(s, c);
                                        Ok::<_, Refused>(None)
                                    })
                                    .build(move |c| connect_v5(v5_login.clone(), c)))
                            })?
                            .run();
                        if let Err(e) = server.await {
                            tracing::error!(error = ?e, "the MQTT server stopped");
                        }
                        Ok::<(), std::io::Error>(())
                    });
                if let Err(e) = run {
                    tracing::error!(error = %e, "the MQTT broker stopped");
                }
            })?;
        // Sessions of things that moved away or were removed close at once.
        let mut events = things.subscribe();
        let for_events = shared.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ThingEvent::Moved { name, .. } | ThingEvent::Removed { name }) => {
                        let entries = for_events
                            .sessions
                            .lock()
                            .ok()
                            .and_then(|mut s| s.remove(&name))
                            .unwrap_or_default();
                        if !entries.is_empty() {
                            tracing::info!(thing = %name, "thing left this node; closing its MQTT sessions");
                        }
                        for e in entries {
                            let _ = e.tx.send(Cmd::Close).await;
                        }
                        if let Ok(mut k) = for_events.kept.lock() {
                            k.forget(&name);
                        }
                        let forgotten = for_events.things.store().forget_thing(name.clone()).await;
                        if let Err(e) = forgotten {
                            tracing::warn!(thing = %name, error = %e, "cannot forget its MQTT sessions and queue");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });
        tracing::info!(%addr, "MQTT broker listening");
        Ok(Broker { shared, addr })
    }

    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Things with an open session here.
    pub fn connected(&self) -> Vec<String> {
        self.shared
            .sessions
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Publish a command to a connected thing (QoS 1) and wait for its
    /// PUBACK.
    pub async fn command(
        &self,
        thing: &str,
        resource: &str,
        payload: Vec<u8>,
    ) -> Result<Delivery, MqttCommandError> {
        let topic = format!("things/{thing}/commands/{resource}");
        let live = {
            let sessions = self.shared.sessions.lock().ok();
            let list = sessions.as_ref().and_then(|s| s.get(thing));
            let subscriber = list.and_then(|list| {
                list.iter().find(|e| {
                    e.subs
                        .lock()
                        .is_ok_and(|subs| subs.iter().any(|f| matches(f, &topic)))
                })
            });
            match subscriber {
                Some(e) => Ok(e.tx.clone()),
                None if list.is_some() => Err(MqttCommandError::NotSubscribed {
                    thing: thing.to_owned(),
                    topic: topic.clone(),
                }),
                None => Err(MqttCommandError::NotConnected(thing.to_owned())),
            }
        };
        let tx = match live {
            Ok(tx) => tx,
            Err(offline) => return self.queue(thing, topic, payload, offline).await,
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Cmd::Publish {
            topic: topic.clone(),
            payload: Bytes::from(payload),
            reply,
        })
        .await
        .map_err(|_| MqttCommandError::Closed(thing.to_owned(), "session gone".into()))?;
        let topic = acknowledged(thing, topic, rx, "session gone").await?;
        Ok(Delivery::Delivered { topic })
    }

    /// Queue a command for a thing that is not subscribed now, when one of
    /// its persistent sessions subscribed to the topic; `offline` otherwise.
    async fn queue(
        &self,
        thing: &str,
        topic: String,
        payload: Vec<u8>,
        offline: MqttCommandError,
    ) -> Result<Delivery, MqttCommandError> {
        let subscribed = self
            .shared
            .kept
            .lock()
            .is_ok_and(|k| k.of_thing(thing).any(|f| matches(f, &topic)));
        if !subscribed {
            return Err(offline);
        }
        let stored =
            |e: locus_store::StoreError| MqttCommandError::Store(thing.to_owned(), e.to_string());
        match self
            .shared
            .things
            .store()
            .enqueue(thing.to_owned(), topic.clone(), payload, crate::unix_ms())
            .await
            .map_err(stored)?
        {
            Enqueued::Queued(waiting) => {
                tracing::info!(thing, %topic, waiting, "command queued for an offline thing");
                Ok(Delivery::Queued { topic, waiting })
            }
            Enqueued::Full => Err(MqttCommandError::QueueFull {
                thing: thing.to_owned(),
                max: MAX_QUEUED,
            }),
        }
    }
}

/// Longest wait between two connection attempts to an external broker.
pub const UPSTREAM_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Commands waiting for the external broker connection.
const UPSTREAM_QUEUE: usize = 64;

/// A connection to an external MQTT broker, used instead of the embedded
/// one: the node subscribes to `things/+/readings` (QoS 1) and keeps the
/// readings of the things it manages, durable and sealed before the PUBACK
/// to the broker (ntex-mqtt acknowledges after the handler); a malformed
/// payload is counted and acknowledged (refusing it would make the broker
/// send it again for ever). Commands are QoS 1 publishes to the broker. It
/// reconnects with capped backoff.
pub struct Upstream {
    addr: String,
    commands: mpsc::Sender<UpstreamCommand>,
    connected: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    /// Start the connection loop on a thread of its own.
    pub fn start(
        url: &locus_core::config::BrokerUrl,
        client_id: String,
        things: Things,
        readings: Readings,
        metrics: Arc<ThingMetrics>,
    ) -> std::io::Result<Upstream> {
        let (addr, auth) = url.parts();
        let shared = Arc::new(Shared {
            things,
            readings,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            draining: Mutex::new(std::collections::HashSet::new()),
            kept: Mutex::new(Sessions::default()),
        });
        let (tx, rx) = mpsc::channel(UPSTREAM_QUEUE);
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, c) = (addr.clone(), connected.clone());
        std::thread::Builder::new()
            .name("mqtt-upstream".into())
            .spawn(move || {
                ntex::rt::System::build()
                    .name("mqtt-upstream")
                    .disable_signals()
                    .build(ntex::rt::DefaultRuntime)
                    .block_on(upstream_loop(a, auth, client_id, shared, rx, c));
            })?;
        Ok(Upstream {
            addr,
            commands: tx,
            connected,
        })
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Publish a command (QoS 1) and wait for the broker's PUBACK.
    pub async fn command(
        &self,
        thing: &str,
        resource: &str,
        payload: Vec<u8>,
    ) -> Result<String, MqttCommandError> {
        let topic = format!("things/{thing}/commands/{resource}");
        let (reply, rx) = oneshot::channel();
        self.commands
            .send((topic.clone(), Bytes::from(payload), reply))
            .await
            .map_err(|_| {
                MqttCommandError::Closed(thing.to_owned(), "broker link stopped".into())
            })?;
        acknowledged(thing, topic, rx, "broker link stopped").await
    }
}

/// Wait (at most [`COMMAND_TIMEOUT`]) for the PUBACK of a command sent on
/// `topic`; `gone` says why when the sender vanished.
async fn acknowledged(
    thing: &str,
    topic: String,
    rx: oneshot::Receiver<Result<(), String>>,
    gone: &str,
) -> Result<String, MqttCommandError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
        Err(_) => Err(MqttCommandError::Timeout(thing.to_owned())),
        Ok(Err(_)) => Err(MqttCommandError::Closed(thing.to_owned(), gone.to_owned())),
        Ok(Ok(Err(e))) => Err(MqttCommandError::Closed(thing.to_owned(), e)),
        Ok(Ok(Ok(()))) => Ok(topic),
    }
}

/// The thing of a `things/{thing}/readings` topic.
fn reading_topic(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("things/")?
        .strip_suffix("/readings")
        .filter(|t| !t.is_empty() && !t.contains('/'))
}

async fn upstream_publish(shared: Arc<Shared>, p: v3::Publish) -> Result<(), Refused> {
    let Some(thing) = reading_topic(p.publish_topic()) else {
        return Ok(());
    };
    // Not ours (another node manages it): acknowledged, not stored.
    let Some(t) = shared.things.get_local(thing).await else {
        return Ok(());
    };
    let payload = match p.read_all().await {
        Ok(b) => b,
        Err(e) => {
            shared.malformed("payload");
            tracing::warn!(thing, error = ?e, "unreadable payload from the broker; dropped");
            return Ok(());
        }
    };
    match readings_of(&t.spec, &payload) {
        Err((kind, why)) => {
            shared.malformed(kind);
            tracing::warn!(thing, kind, %why, "malformed readings from the broker; dropped");
            Ok(())
        }
        Ok(readings) => {
            if store(&shared, thing, readings).await {
                Ok(())
            } else {
                // Not acknowledged: the broker sends it again after the
                // reconnect.
                Err(Refused("store".into()))
            }
        }
    }
}

type UpstreamCommand = (String, Bytes, oneshot::Sender<Result<(), String>>);

async fn upstream_loop(
    addr: String,
    auth: Option<(String, String)>,
    client_id: String,
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<UpstreamCommand>,
    connected: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut connect = v3::client::Connect::new(addr.clone())
            .client_id(client_id.clone())
            .keep_alive(ntex::time::Seconds(30));
        if let Some((user, password)) = &auth {
            connect = connect
                .username(user.clone())
                .password(Bytes::from(password.clone().into_bytes()));
        }
        let client = ntex::Pipeline::new(SharedCfg::default(), v3::client::MqttConnector::new())
            .call(connect)
            .await;
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(broker = %addr, error = ?e, retry_in = ?backoff, "cannot reach the MQTT broker");
                ntex::time::sleep(backoff).await;
                backoff = (backoff * 2).min(UPSTREAM_MAX_BACKOFF);
                continue;
            }
        };
        let sink = client.sink();
        let s = shared.clone();
        let router = client.resource("things/{thing}/readings", move |p: v3::Publish| {
            let s = s.clone();
            async move { upstream_publish(s, p).await }
        });
        ntex::rt::spawn(router.start_default());
        let subscribed = sink
            .subscribe()
            .topic_filter("things/+/readings".into(), v3::QoS::AtLeastOnce)
            .send()
            .await;
        if let Err(e) = subscribed {
            tracing::warn!(broker = %addr, error = ?e, "cannot subscribe at the MQTT broker");
            sink.close();
            ntex::time::sleep(backoff).await;
            continue;
        }
        tracing::info!(broker = %addr, "taking readings from the MQTT broker");
        connected.store(true, Ordering::Relaxed);
        backoff = Duration::from_secs(1);
        while sink.is_open() {
            let next = tokio::select! {
                c = commands.recv() => c,
                _ = ntex::time::sleep(Duration::from_millis(500)) => continue,
            };
            let Some((topic, payload, reply)) = next else {
                sink.close();
                return;
            };
            let sent = sink.publish(topic).send_at_least_once(payload).await;
            let _ = reply.send(sent.map_err(|e| format!("{e:?}")));
        }
        connected.store(false, Ordering::Relaxed);
        tracing::warn!(broker = %addr, "the MQTT broker connection closed; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, reading_topic};

    #[test]
    fn reading_topics_name_one_thing() {
        assert_eq!(reading_topic("things/t-1/readings"), Some("t-1"));
        assert_eq!(reading_topic("things//readings"), None);
        assert_eq!(reading_topic("things/a/b/readings"), None);
        assert_eq!(reading_topic("things/a/commands"), None);
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(matches("things/a/commands/#", "things/a/commands/led"));
        assert!(matches("things/a/commands/+", "things/a/commands/led"));
        assert!(matches("things/a/commands/led", "things/a/commands/led"));
        assert!(!matches("things/a/commands/+", "things/a/commands/led/x"));
        assert!(!matches("things/a/commands/fan", "things/a/commands/led"));
        assert!(!matches("things/b/commands/#", "things/a/commands/led"));
    }
}

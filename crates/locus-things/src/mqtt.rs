//! The node's embedded MQTT broker for things: MQTT 3.1.1 over TCP, built
//! on ntex-mqtt, on its own thread and runtime.
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
//! - **Refusals**: MQTT 3.1.1 has no negative PUBACK, so a publish that is
//!   refused (another topic, a malformed payload, an undeclared resource)
//!   closes the connection without an acknowledgement; it is logged with
//!   the reason and counted (`locus_thing_malformed_total`,
//!   `locus_mqtt_refused_total`). Nothing unacknowledged was stored.
//! - **Commands**: a thing subscribes to `things/{thing}/commands/#`; a
//!   command is a QoS 1 publish on `things/{thing}/commands/{resource}`,
//!   reported delivered once the thing's PUBACK arrives. A thing may not
//!   subscribe to anything else.
//! - **Manager change**: when a thing moves to another node, its session
//!   here is closed and its next login here is refused with code 5.
//!
//! The broker never keeps messages for offline clients and never relays
//! one thing's messages to another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locus_core::thing::ThingSpec;
use locus_iot::{Reading, senml};
use ntex::SharedCfg;
use ntex::util::Bytes;
use ntex_mqtt::v3;
use tokio::sync::{mpsc, oneshot};

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
}

enum Cmd {
    Publish {
        topic: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), String>>,
    },
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

async fn connect(shared: Arc<Shared>, c: v3::Connect) -> Result<v3::ConnectAck<Conn>, Refused> {
    let pkt = c.packet();
    let user = pkt.username.as_ref().map(|u| u.to_string());
    let password = pkt.password.clone().unwrap_or_default();
    let Some(user) = user else {
        shared.refuse("no_credentials");
        tracing::info!("MQTT login without a user name refused");
        return Ok(c.bad_username_or_pwd());
    };
    match shared.things.authenticate(&user, &password).await {
        Ok(()) => {}
        Err(e) => {
            tracing::info!(thing = %user, reason = %e, "MQTT login refused");
            return Ok(match e {
                AuthError::ManagedElsewhere(..) => {
                    shared.refuse("managed_elsewhere");
                    c.not_authorized()
                }
                AuthError::NotMqtt(_) => {
                    shared.refuse("not_mqtt");
                    c.not_authorized()
                }
                AuthError::Unknown(_) => {
                    shared.refuse("unknown_thing");
                    c.bad_username_or_pwd()
                }
                AuthError::BadPassword(_) => {
                    shared.refuse("bad_password");
                    c.bad_username_or_pwd()
                }
            });
        }
    }
    let Some(thing) = shared.things.get_local(&user).await else {
        shared.refuse("unknown_thing");
        return Ok(c.bad_username_or_pwd());
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(COMMAND_QUEUE);
    let subs = Arc::new(Mutex::new(Vec::new()));
    {
        let Ok(mut sessions) = shared.sessions.lock() else {
            return Ok(c.service_unavailable());
        };
        let client_id = pkt.client_id.to_string();
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
            return Ok(c.service_unavailable());
        }
        list.push(SessionEntry {
            id,
            client_id,
            tx,
            subs: subs.clone(),
        });
    }
    shared.metrics.mqtt_sessions.inc();
    let sink = c.sink();
    ntex::rt::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Publish {
                    topic,
                    payload,
                    reply,
                } => {
                    let sent = sink.publish(topic).send_at_least_once(payload).await;
                    let _ = reply.send(sent.map_err(|e| format!("{e:?}")));
                }
                Cmd::Close => {
                    sink.close();
                    break;
                }
            }
        }
    });
    tracing::debug!(thing = %user, "MQTT session open");
    let conn = Conn {
        topic: format!("things/{user}/readings"),
        thing: user,
        spec: thing.spec,
        id,
        shared,
        subs,
    };
    Ok(c.ack(conn, false))
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

async fn publish(session: &v3::Session<Conn>, p: v3::Publish) -> Result<(), Refused> {
    let conn: &Conn = session;
    let shared = &conn.shared;
    if p.publish_topic() != conn.topic {
        shared.refuse("topic");
        tracing::warn!(thing = %conn.thing, topic = %p.publish_topic(), "publish outside things/{{thing}}/readings refused; closing");
        return Err(Refused(format!("topic {} refused", p.publish_topic())));
    }
    let payload = p.read_all().await.map_err(|e| {
        shared.malformed("payload");
        Refused(format!("payload: {e:?}"))
    })?;
    let readings = readings_of(&conn.spec, &payload).map_err(|(kind, why)| {
        shared.malformed(kind);
        tracing::warn!(thing = %conn.thing, kind, %why, "malformed readings refused; closing");
        Refused(why)
    })?;
    if store(shared, &conn.thing, readings).await {
        Ok(())
    } else {
        Err(Refused("store".into()))
    }
}

async fn protocol(
    session: &v3::Session<Conn>,
    msg: v3::ProtocolMessage,
) -> Result<v3::ProtocolMessageAck, Refused> {
    let conn: &Conn = session;
    Ok(match msg {
        v3::ProtocolMessage::Subscribe(mut s) => {
            let own = format!("things/{}/commands/", conn.thing);
            for mut sub in s.iter_mut() {
                let topic = sub.topic().to_string();
                let inside = topic.starts_with(&own)
                    && !topic[own.len()..].is_empty()
                    && !topic[own.len()..].contains("/#/");
                if inside {
                    if let Ok(mut subs) = conn.subs.lock()
                        && subs.len() < 64
                    {
                        subs.push(topic);
                    }
                    sub.confirm(v3::QoS::AtLeastOnce);
                } else {
                    conn.shared.refuse("subscription");
                    tracing::info!(thing = %conn.thing, %topic, "subscription outside things/{{thing}}/commands/ refused");
                    sub.fail();
                }
            }
            s.ack()
        }
        v3::ProtocolMessage::Unsubscribe(u) => {
            let gone: Vec<String> = u.iter().map(|t| t.to_string()).collect();
            if let Ok(mut subs) = conn.subs.lock() {
                subs.retain(|s| !gone.contains(s));
            }
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
fn control(session: &v3::Session<Conn>, c: ntex_mqtt::Control<Refused>) {
    if let ntex_mqtt::Control::Stop(ntex_mqtt::Reason::Protocol(e)) = c {
        let conn: &Conn = session;
        conn.shared.refuse("protocol");
        conn.shared.malformed("packet");
        tracing::warn!(thing = %conn.thing, error = ?e.get_ref(), "malformed MQTT packet; closing");
    }
}

impl Broker {
    /// Bind `bind` and serve things on a thread of its own.
    pub fn start(
        bind: SocketAddr,
        things: Things,
        readings: Readings,
        metrics: Arc<ThingMetrics>,
    ) -> std::io::Result<Broker> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            things: things.clone(),
            readings,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
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
                                let for_connect = for_server.clone();
                                v3::MqttServer::new(async move |s: &v3::Session<Conn>, p| {
                                    publish(s, p).await
                                })
                                .protocol(async move |s: &v3::Session<Conn>, m| {
                                    protocol(s, m).await
                                })
                                .control(async move |s: &v3::Session<Conn>, c| {
                                    control(s, c);
                                    Ok::<_, Refused>(None)
                                })
                                .build(move |c| connect(for_connect.clone(), c))
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
    ) -> Result<String, MqttCommandError> {
        let topic = format!("things/{thing}/commands/{resource}");
        let tx = {
            let sessions = self.shared.sessions.lock().ok();
            let Some(list) = sessions.as_ref().and_then(|s| s.get(thing)) else {
                return Err(MqttCommandError::NotConnected(thing.to_owned()));
            };
            let subscriber = list.iter().find(|e| {
                e.subs
                    .lock()
                    .is_ok_and(|subs| subs.iter().any(|f| matches(f, &topic)))
            });
            match subscriber {
                Some(e) => e.tx.clone(),
                None => {
                    return Err(MqttCommandError::NotSubscribed {
                        thing: thing.to_owned(),
                        topic,
                    });
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Cmd::Publish {
            topic: topic.clone(),
            payload: Bytes::from(payload),
            reply,
        })
        .await
        .map_err(|_| MqttCommandError::Closed(thing.to_owned(), "session gone".into()))?;
        acknowledged(thing, topic, rx, "session gone").await
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

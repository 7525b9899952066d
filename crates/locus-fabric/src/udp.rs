//! The fabric over a real UDP socket: one tokio task owns the socket, the
//! [`Fabric`] state machine and its timers; everyone else talks to it
//! through a bounded command queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use locus_core::NodeId;
use locus_core::cluster::ClusterNode;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::deadlines::Deadlines;
use crate::fabric::{Fabric, Now, Output, Stats, Timer, Tuning};
use crate::member::Member;
use crate::records::{RecordError, RecordEvent};
use crate::wire::{ClusterKey, MAX_DATAGRAM, Sealer, WireError};

/// Commands waiting for the fabric task, at most.
const COMMAND_QUEUE: usize = 256;
/// Record events buffered for slow subscribers, at most.
const EVENT_QUEUE: usize = 1024;
/// How often unresolved seeds are looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// What the fabric needs to start.
#[derive(Debug, Clone)]
pub struct FabricConfig {
    /// This node's identity (its `addr` is the address peers reach it at).
    pub me: Member,
    /// Address to bind the UDP socket to.
    pub bind: SocketAddr,
    /// Seeds, `HOST:PORT`, resolved at start and retried until one answers.
    pub seeds: Vec<String>,
    /// Cluster key; without one, datagrams travel unsealed.
    pub key: Option<ClusterKey>,
    /// Timing.
    pub tuning: Tuning,
}

/// Why the fabric could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    #[error(
        "the gossip address {addr} is already in use (another locus agent?); choose another with --gossip or `[listen] gossip`"
    )]
    AddrInUse { addr: SocketAddr },
    #[error("cannot listen for gossip on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the fabric has stopped")]
    Stopped,
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Counters of the UDP shell, readable without asking the task.
#[derive(Debug, Default)]
pub struct Counters {
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub send_errors: AtomicU64,
    pub dropped_unauthenticated: AtomicU64,
    pub dropped_malformed: AtomicU64,
}

/// A point-in-time picture of the fabric, answered by the task.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub me: Member,
    pub nodes: Vec<ClusterNode>,
    pub stats: Stats,
    pub active_members: usize,
}

enum Command {
    Publish {
        key: String,
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<u64, RecordError>>,
    },
    Snapshot(oneshot::Sender<Snapshot>),
    Records(NodeId, oneshot::Sender<Vec<(String, u64, Vec<u8>)>>),
    Leave(oneshot::Sender<()>),
}

/// Handle to a running fabric.
#[derive(Clone)]
pub struct FabricHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<RecordEvent>,
    counters: Arc<Counters>,
    local_addr: SocketAddr,
    task: Arc<JoinHandle<()>>,
}

impl FabricHandle {
    /// Address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Shell counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Subscribe to record changes (all owners).
    pub fn subscribe(&self) -> broadcast::Receiver<RecordEvent> {
        self.events.subscribe()
    }

    /// Write a record this node owns.
    pub async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, FabricError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                key: key.to_owned(),
                value,
                reply,
            })
            .await
            .map_err(|_| FabricError::Stopped)?;
        Ok(rx.await.map_err(|_| FabricError::Stopped)??)
    }

    /// Publish a JSON record.
    pub async fn publish_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, FabricError> {
        let bytes = serde_json::to_vec(value).map_err(|_| RecordError::BadKey(key.to_owned()))?;
        self.publish(key, Some(bytes)).await
    }

    /// The fabric as it is now.
    pub async fn snapshot(&self) -> Result<Snapshot, FabricError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Snapshot(reply))
            .await
            .map_err(|_| FabricError::Stopped)?;
        rx.await.map_err(|_| FabricError::Stopped)
    }

    /// The nodes as this node sees them now (none once the fabric stopped).
    pub async fn nodes(&self) -> Vec<locus_core::cluster::ClusterNode> {
        self.snapshot().await.map(|s| s.nodes).unwrap_or_default()
    }

    /// The live records of `owner` held by this node: `(key, version, value)`.
    pub async fn records_of(
        &self,
        owner: NodeId,
    ) -> Result<Vec<(String, u64, Vec<u8>)>, FabricError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Records(owner, reply))
            .await
            .map_err(|_| FabricError::Stopped)?;
        rx.await.map_err(|_| FabricError::Stopped)
    }

    /// Announce a graceful leave, then stop the task.
    pub async fn leave(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(reply)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.task.abort();
    }
}

/// Bind the socket and start the fabric task.
pub async fn start(config: FabricConfig) -> Result<FabricHandle, FabricError> {
    let socket = UdpSocket::bind(config.bind).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            FabricError::AddrInUse { addr: config.bind }
        } else {
            FabricError::Bind {
                addr: config.bind,
                source,
            }
        }
    })?;
    let local_addr = socket.local_addr().unwrap_or(config.bind);
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let counters = Arc::new(Counters::default());
    let clock = Clock::new();
    let seed = {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    };
    let fabric = Fabric::new(config.me.clone(), config.tuning.clone(), seed, clock.now());
    let shell = Shell {
        socket,
        sealer: Sealer::new(config.key.as_ref()),
        fabric,
        timers: Deadlines::new(),
        clock,
        counters: counters.clone(),
        events: events.clone(),
        seeds: config.seeds,
    };
    let task = tokio::spawn(shell.run(rx));
    Ok(FabricHandle {
        commands,
        events,
        counters,
        local_addr,
        task: Arc::new(task),
    })
}

struct Clock {
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    fn now(&self) -> Now {
        Now {
            // +1 so that no real timestamp is 0 (0 means "no echo").
            mono_us: self.start.elapsed().as_micros() as u64 + 1,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    fn deadline(&self, mono_us: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + Duration::from_micros(mono_us))
    }
}

struct Shell {
    socket: UdpSocket,
    sealer: Sealer,
    fabric: Fabric,
    timers: Deadlines<Timer>,
    clock: Clock,
    counters: Arc<Counters>,
    events: broadcast::Sender<RecordEvent>,
    seeds: Vec<String>,
}

impl Shell {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut joined = self.resolve_and_join().await;
        let mut resolve = tokio::time::interval(RESOLVE_EVERY);
        resolve.tick().await;
        self.flush().await;
        loop {
            let next = self
                .timers
                .next_at()
                .map(|at| self.clock.deadline(at))
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(from, &buf[..len]),
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip recv error");
                        continue;
                    }
                },
                () = tokio::time::sleep_until(next) => self.fire_due_timers(),
                command = commands.recv() => match command {
                    Some(Command::Publish { key, value, reply }) => {
                        let _ = reply.send(self.fabric.publish(&key, value, self.clock.now()));
                    }
                    Some(Command::Snapshot(reply)) => {
                        let _ = reply.send(Snapshot {
                            me: self.fabric.me().clone(),
                            nodes: self.fabric.snapshot(),
                            stats: self.fabric.stats(),
                            active_members: self.fabric.active_members(),
                        });
                    }
                    Some(Command::Records(owner, reply)) => {
                        let records = self.fabric.records().lock();
                        let list = records.of(owner).filter_map(|(k, r)| Some((k.to_owned(), r.version, r.value.clone()?))).collect();
                        let _ = reply.send(list);
                    }
                    Some(Command::Leave(reply)) => {
                        self.fabric.leave(self.clock.now());
                        self.flush().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
                _ = resolve.tick(), if !joined => {
                    joined = self.resolve_and_join().await;
                }
            }
            self.flush().await;
        }
    }

    /// Look the seeds up and join through those that resolve.
    async fn resolve_and_join(&mut self) -> bool {
        if self.seeds.is_empty() {
            return true;
        }
        let mut addrs = Vec::new();
        for seed in &self.seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(found) => {
                    addrs.extend(found.filter(|a| a.is_ipv4() == self.fabric.me().addr.is_ipv4()))
                }
                Err(e) => tracing::warn!(seed, error = %e, "cannot resolve seed; will retry"),
            }
        }
        if addrs.is_empty() {
            return false;
        }
        tracing::info!(seeds = ?addrs, "joining the cluster");
        self.fabric.join(&addrs, self.clock.now());
        true
    }

    fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        match self.sealer.open(datagram) {
            Ok(envelope) => self
                .fabric
                .handle_envelope(from, envelope, self.clock.now()),
            Err(WireError::Unauthenticated | WireError::KeyRequired | WireError::NoKey) => {
                self.counters
                    .dropped_unauthenticated
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "dropped a datagram that failed authentication");
            }
            Err(e) => {
                self.counters
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, error = %e, "dropped a malformed datagram");
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = self.clock.now();
        while let Some((_, timer)) = self.timers.pop_due(now.mono_us) {
            self.fabric.handle_timer(timer, now);
        }
    }

    async fn flush(&mut self) {
        let now = self.clock.now();
        let outputs: Vec<Output> = self.fabric.drain().collect();
        for out in outputs {
            match out {
                Output::Schedule { after, timer } => {
                    self.timers
                        .push(now.mono_us + after.as_micros() as u64, timer);
                }
                Output::Send { to, envelope } => {
                    let mut nonce = [0u8; 24];
                    if getrandom::fill(&mut nonce).is_err() {
                        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let datagram = self.sealer.seal(&envelope, nonce);
                    match self.socket.send_to(&datagram, to).await {
                        Ok(n) => {
                            self.counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
                            self.counters
                                .bytes_out
                                .fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%to, error = %e, "gossip send failed");
                        }
                    }
                }
            }
        }
        let events = self.fabric.records().lock().drain_events();
        for event in events {
            // No subscriber is fine; a lagging one loses the oldest events.
            let _ = self.events.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn node(byte: u8, seeds: Vec<String>) -> FabricHandle {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        drop(socket);
        start(FabricConfig {
            me: Member {
                id: NodeId::from_bytes([byte; 10]),
                addr,
                generation: 1,
                bump: 0,
            },
            bind: addr,
            seeds,
            key: Some(ClusterKey::parse(&"42".repeat(32)).unwrap()),
            tuning: Tuning::default(),
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn records_travel_over_real_udp_and_reach_subscribers() {
        let a = node(1, vec![]).await;
        let b = node(2, vec![a.local_addr().to_string()]).await;
        let mut events = b.subscribe();
        a.publish("test/hello", Some(b"world".to_vec()))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("no record event in 10 s")
                .unwrap();
            if event.key == "test/hello" {
                assert_eq!(event.owner, NodeId::from_bytes([1; 10]));
                assert_eq!(event.value.as_deref(), Some(&b"world"[..]));
                break;
            }
        }
        let held = b.records_of(NodeId::from_bytes([1; 10])).await.unwrap();
        assert!(
            held.iter()
                .any(|(k, _, v)| k == "test/hello" && v == b"world"),
            "{held:?}"
        );
        let snapshot = b.snapshot().await.unwrap();
        assert_eq!(snapshot.nodes.len(), 2);
        a.leave().await;
        b.leave().await;
    }
}

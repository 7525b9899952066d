//! The fabric of one node as a plain state machine: datagrams and timer
//! events go in, datagrams to send and timers to arm come out. No sockets,
//! no clocks, no tasks: the UDP shell (`udp.rs`) and the simulator
//! (`sim.rs`) drive the very same code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec};
use locus_core::NodeId;
use locus_core::cluster::{Capacity, ClusterNode, Coordinate, Liveness, NodeInfo, VivaldiTuning};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::member::Member;
use crate::records::{self, Item, RecordError, SharedRecords, Update};
use crate::view::View;
use crate::wire::{Envelope, Frame, MAX_DATAGRAM, SEAL_OVERHEAD, Stamp, WireCoordinate};

/// Record key of a node's [`NodeInfo`].
pub const KEY_INFO: &str = "node/info";
/// Record key of a node's [`Capacity`].
pub const KEY_CAPACITY: &str = "node/capacity";
/// Record key a node writes just before it leaves on purpose.
pub const KEY_LEAVING: &str = "node/leaving";

/// Frame and stamp bytes around a foca packet, at most.
const ENVELOPE_OVERHEAD: usize = 48;
/// Sync response frames sent for one request, at most.
const MAX_SYNC_FRAMES: usize = 32;
/// Peers whose clocks are remembered for RTT samples, at most.
const MAX_CLOCKS: usize = 8192;
/// Owners listed in one digest, at most.
const DIGEST_ENTRIES: usize = 40;
/// Peer coordinates remembered, at most.
const MAX_PEER_COORDINATES: usize = 8192;
/// How long before the same owner may be asked again for its records.
const SYNC_RETRY: Duration = Duration::from_secs(1);

/// Timing of the fabric. The defaults aim at detecting a crash cluster-wide
/// in about two seconds at N = 100 with no false verdict at 10% loss (see
/// BENCHMARKS.md: a suspicion multiplier of 0.7 or 1.3 gave false verdicts,
/// five indirect probes instead of three cut spurious suspicions eightfold).
/// `probe_rtt` suits RTTs up to ~100 ms; raise both periods for WAN links.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Period of SWIM's random probe.
    pub probe_period: Duration,
    /// Wait for a direct ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly.
    pub indirect_probes: usize,
    /// Suspicion lasts `max(1, log10 N) × multiplier × probe_period`.
    pub suspicion_multiplier: f64,
    /// Each update is piggybacked `multiplier × log10(N + 1)` times.
    pub retransmit_multiplier: f64,
    /// Period of the extra gossip round that spreads updates.
    pub gossip_every: Duration,
    /// Members gossiped to per round.
    pub gossip_fanout: usize,
    /// Period of housekeeping (suspicion polling, digests, rejoin).
    pub housekeeping_every: Duration,
    /// Period of the records digest sent to one random peer.
    pub digest_every: Duration,
    /// Period of announces to the seeds while this node knows no one.
    pub rejoin_every: Duration,
    /// For this long after joining, ask a random member for more members
    /// every `discover_every` (SWIM alone learns old members slowly).
    pub discover_for: Duration,
    /// See `discover_for`.
    pub discover_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(125),
            indirect_probes: 5,
            suspicion_multiplier: 1.6,
            retransmit_multiplier: 10.0,
            gossip_every: Duration::from_millis(150),
            gossip_fanout: 3,
            housekeeping_every: Duration::from_millis(250),
            digest_every: Duration::from_secs(2),
            rejoin_every: Duration::from_secs(2),
            discover_for: Duration::from_secs(20),
            discover_every: Duration::from_millis(500),
        }
    }
}

impl Tuning {
    /// foca's configuration for a cluster of `n` members.
    pub fn foca_config(&self, n: usize) -> foca::Config {
        let size = NonZeroU32::new(n.clamp(1, u32::MAX as usize) as u32).unwrap_or(NonZeroU32::MIN);
        let mut c = foca::Config::new_lan(size);
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.num_indirect_probes =
            NonZeroUsize::new(self.indirect_probes.max(1)).unwrap_or(NonZeroUsize::MIN);
        let factor = (n.max(1) as f64).log10().max(1.0) * self.suspicion_multiplier;
        c.suspect_to_down_after = self.probe_period.mul_f64(factor.max(0.1));
        let tx = (self.retransmit_multiplier * ((n + 1) as f64).log10())
            .ceil()
            .clamp(3.0, 255.0);
        c.max_transmissions =
            std::num::NonZeroU8::new(tx as u8).unwrap_or(std::num::NonZeroU8::MIN);
        c.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - SEAL_OVERHEAD - ENVELOPE_OVERHEAD)
            .unwrap_or(NonZeroUsize::MIN);
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_every,
            num_members: NonZeroUsize::new(self.gossip_fanout.max(1)).unwrap_or(NonZeroUsize::MIN),
        });
        // Needed to heal partitions: a member declared down learns it and
        // rejoins. (foca 2.0 also sends this after a *refuted* suspicion,
        // which makes a live member rejoin under a new `bump`: harmless, the
        // view follows the rename, and counted as `rejoins`.)
        c.notify_down_members = true;
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(30),
            num_members: NonZeroUsize::MIN,
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        });
        c
    }
}

/// The two clocks the fabric reads, passed in by its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, µs (RTTs, timers).
    pub mono_us: u64,
    /// Wall-clock time, unix ms (transition times, record ages).
    pub unix_ms: u64,
}

/// A timer the driver must fire back after the requested delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    Swim(foca::Timer<Member>),
    Housekeeping,
}

/// What the fabric asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send { to: SocketAddr, envelope: Envelope },
    Schedule { after: Duration, timer: Timer },
}

/// Counters of the fabric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub swim_errors: u64,
    pub sync_requests_in: u64,
    pub sync_requests_out: u64,
    pub records_pulled: u64,
    pub rtt_samples: u64,
    pub rejoins: u64,
    /// Members this node saw declared down (its own detector or gossip).
    pub members_down: u64,
}

/// One node's fabric.
pub struct Fabric {
    foca: Foca<Member, PostcardCodec, StdRng, SharedRecords>,
    runtime: AccumulatingRuntime<Member>,
    records: SharedRecords,
    view: View,
    tuning: Tuning,
    rng: StdRng,
    seeds: Vec<SocketAddr>,
    version: u64,
    sized_for: usize,
    last_digest_us: u64,
    last_rejoin_us: u64,
    joined_at_us: u64,
    last_discover_us: u64,
    peer_coordinates: HashMap<NodeId, Coordinate>,
    last_expiry_ms: u64,
    coordinate: Coordinate,
    vivaldi: VivaldiTuning,
    clocks: HashMap<SocketAddr, (u64, u64)>,
    sync_asked: HashMap<NodeId, u64>,
    out: Vec<Output>,
    left: bool,
    stats: Stats,
}

impl Fabric {
    /// A fabric for `me`, alone until [`Fabric::join`]. `seed` drives every
    /// random choice, so a simulated run replays exactly.
    pub fn new(me: Member, tuning: Tuning, seed: u64, now: Now) -> Fabric {
        let records = SharedRecords::default();
        records.set_clock(now.unix_ms);
        records.set_local(me.id);
        let foca = Foca::with_custom_broadcast(
            me.clone(),
            tuning.foca_config(1),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
            records.clone(),
        );
        let mut fabric = Fabric {
            foca,
            runtime: AccumulatingRuntime::new(),
            records,
            view: View::new(me, now.unix_ms),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_f00d),
            seeds: Vec::new(),
            version: 0,
            sized_for: 1,
            last_digest_us: now.mono_us,
            last_rejoin_us: now.mono_us,
            joined_at_us: now.mono_us,
            last_discover_us: now.mono_us,
            peer_coordinates: HashMap::new(),
            last_expiry_ms: now.unix_ms,
            coordinate: Coordinate::default(),
            vivaldi: VivaldiTuning::default(),
            clocks: HashMap::new(),
            sync_asked: HashMap::new(),
            out: Vec::new(),
            left: false,
            stats: Stats::default(),
            tuning,
        };
        let every = fabric.tuning.housekeeping_every;
        fabric.out.push(Output::Schedule {
            after: every,
            timer: Timer::Housekeeping,
        });
        fabric
    }

    /// This node's current identity.
    pub fn me(&self) -> &Member {
        self.view.me()
    }

    /// Join through `seeds` (gossip addresses); they are retried while this
    /// node knows no live member.
    pub fn join(&mut self, seeds: &[SocketAddr], now: Now) {
        let me = self.me().addr;
        self.seeds = seeds.iter().copied().filter(|s| *s != me).collect();
        self.joined_at_us = now.mono_us;
        self.announce_to_seeds(now);
        self.pump(now);
    }

    fn announce_to_seeds(&mut self, now: Now) {
        self.last_rejoin_us = now.mono_us;
        for seed in self.seeds.clone() {
            let _ = self.foca.announce(Member::seed(seed), &mut self.runtime);
        }
    }

    /// Write a record this node owns (`None` deletes it).
    pub fn publish(
        &mut self,
        key: &str,
        value: Option<Vec<u8>>,
        now: Now,
    ) -> Result<u64, RecordError> {
        records::check_key(key)?;
        if let Some(v) = &value
            && v.len() > records::MAX_VALUE_LEN
        {
            return Err(RecordError::TooLarge {
                key: key.to_owned(),
                len: v.len(),
            });
        }
        self.records.set_clock(now.unix_ms);
        self.version += 1;
        let me = self.me().clone();
        let update = Update {
            owner: me.id,
            generation: me.generation,
            key: key.to_owned(),
            version: self.version,
            value,
        };
        let data =
            postcard::to_allocvec(&Item::Update(update)).map_err(|_| RecordError::TooMany)?;
        match self.foca.add_broadcast(&data) {
            Ok(true) => {}
            Ok(false) => {
                self.version -= 1;
                return Err(RecordError::TooMany);
            }
            Err(_) => {
                self.version -= 1;
                return Err(RecordError::TooLarge {
                    key: key.to_owned(),
                    len: data.len(),
                });
            }
        }
        self.pump(now);
        Ok(self.version)
    }

    /// Announce a graceful leave: peers will mark this node "left".
    pub fn leave(&mut self, now: Now) {
        let _ = self.publish(KEY_LEAVING, Some(b"1".to_vec()), now);
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.left = true;
        self.pump(now);
    }

    /// A datagram arrived from `from` (already opened by the driver).
    pub fn handle_envelope(&mut self, from: SocketAddr, envelope: Envelope, now: Now) {
        self.records.set_clock(now.unix_ms);
        self.stats.frames_in += 1;
        let Envelope {
            stamp,
            coordinate,
            frame,
        } = envelope;
        self.sample_rtt(from, stamp, coordinate, now);
        match frame {
            Frame::Swim(bytes) => {
                if self.foca.handle_data(&bytes, &mut self.runtime).is_err() {
                    self.stats.swim_errors += 1;
                }
            }
            Frame::SyncRequest {
                owner,
                generation,
                since,
            } => {
                self.stats.sync_requests_in += 1;
                self.answer_sync(from, owner, generation, since, now);
            }
            Frame::Digest(summaries) => {
                let behind: Vec<(NodeId, u64, u64)> = {
                    let mut records = self.records.lock();
                    let me = self.view.me().id;
                    summaries
                        .iter()
                        .take(DIGEST_ENTRIES)
                        .filter(|s| s.owner != me)
                        .filter_map(|s| match records.note_summary(s) {
                            records::Applied::Behind {
                                owner,
                                generation,
                                since,
                            } => Some((owner, generation, since)),
                            _ => None,
                        })
                        .collect()
                };
                for (owner, generation, since) in behind {
                    self.ask_sync(owner, generation, since, now);
                }
            }
            Frame::SyncResponse {
                after,
                complete_to,
                updates,
            } => {
                let me = self.me().id;
                let mut records = self.records.lock();
                let updates: Vec<Update> = updates.into_iter().filter(|u| u.owner != me).collect();
                self.stats.records_pulled +=
                    records.apply_range(after, complete_to, updates, now.unix_ms);
            }
        }
        self.pump(now);
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, timer: Timer, now: Now) {
        self.records.set_clock(now.unix_ms);
        match timer {
            Timer::Swim(t) => {
                let _ = self.foca.handle_timer(t, &mut self.runtime);
            }
            Timer::Housekeeping => {
                self.housekeeping(now);
                self.out.push(Output::Schedule {
                    after: self.tuning.housekeeping_every,
                    timer: Timer::Housekeeping,
                });
            }
        }
        self.pump(now);
    }

    /// Take what the driver must do.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    /// The liveness view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The records.
    pub fn records(&self) -> &SharedRecords {
        &self.records
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Members foca currently counts as active (alive or suspect).
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Membership updates and custom broadcasts waiting to be piggybacked.
    pub fn backlogs(&self) -> (usize, usize) {
        (
            self.foca.updates_backlog(),
            self.foca.custom_broadcast_backlog(),
        )
    }

    /// This node's network coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coordinate
    }

    /// Every known node with what it published.
    pub fn snapshot(&self) -> Vec<ClusterNode> {
        let records = self.records.lock();
        let me = self.me().id;
        self.view
            .iter()
            .map(|(id, e)| {
                let decode = |key: &str| records.get(*id, key).map(|b| b.to_vec());
                ClusterNode {
                    id: *id,
                    liveness: e.liveness,
                    since_unix_ms: e.since_ms,
                    transitions: e.history.iter().cloned().collect(),
                    generation: e.member.generation,
                    gossip_addr: e.member.addr.to_string(),
                    info: decode(KEY_INFO)
                        .and_then(|b| serde_json::from_slice::<NodeInfo>(&b).ok()),
                    capacity: decode(KEY_CAPACITY)
                        .and_then(|b| serde_json::from_slice::<Capacity>(&b).ok()),
                    coordinate: if *id == me {
                        Some(self.coordinate.clone())
                    } else {
                        self.peer_coordinates.get(id).cloned()
                    },
                    is_self: *id == me,
                }
            })
            .collect()
    }

    fn pump(&mut self, now: Now) {
        while let Some(n) = self.runtime.to_notify() {
            self.on_notification(n, now);
        }
        while let Some((to, bytes)) = self.runtime.to_send() {
            let envelope = self.envelope(to.addr, Frame::Swim(bytes.to_vec()), now);
            self.send(to.addr, envelope);
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.out.push(Output::Schedule {
                after,
                timer: Timer::Swim(timer),
            });
        }
    }

    fn send(&mut self, to: SocketAddr, envelope: Envelope) {
        self.stats.frames_out += 1;
        self.out.push(Output::Send { to, envelope });
    }

    fn on_notification(&mut self, n: OwnedNotification<Member>, now: Now) {
        match n {
            OwnedNotification::MemberUp(m) => {
                self.view.set(&m, Liveness::Alive, now.unix_ms);
                // A node that (re)joins knows nothing yet: tell it at once
                // what we hold, so it can pull what it misses without
                // waiting for the periodic digest.
                if m.id != self.me().id {
                    self.send_digest_to(m.addr, now);
                }
            }
            OwnedNotification::MemberDown(m) => {
                self.stats.members_down += 1;
                self.note_leaving(&m, now);
                self.view.set(&m, Liveness::Dead, now.unix_ms);
            }
            OwnedNotification::Rename(_, new) => {
                let liveness = self
                    .view
                    .get(&new.id)
                    .map_or(Liveness::Alive, |e| e.liveness);
                self.view.set(&new, liveness, now.unix_ms);
            }
            OwnedNotification::Rejoin(me) => {
                self.stats.rejoins += 1;
                self.view.set_me(me, now.unix_ms);
            }
            OwnedNotification::Active | OwnedNotification::Idle | OwnedNotification::Defunct => {}
        }
    }

    fn note_leaving(&mut self, m: &Member, now: Now) {
        let leaving = {
            let records = self.records.lock();
            records.head(m.id).is_some_and(|(g, _)| g == m.generation)
                && records.get(m.id, KEY_LEAVING).is_some()
        };
        if leaving {
            self.view.mark_leaving(&m.id, m.generation, now.unix_ms);
        }
    }

    fn housekeeping(&mut self, now: Now) {
        if self.left {
            return;
        }
        // Suspicion is not notified by foca: read it from the membership.
        let states: Vec<(Member, foca::State)> = self
            .foca
            .iter_membership_state()
            .map(|m| (m.id().clone(), m.state()))
            .collect();
        for (member, state) in &states {
            let current = self.view.get(&member.id).map(|e| e.liveness);
            match (state, current) {
                (foca::State::Suspect, Some(Liveness::Alive) | None) => {
                    self.view.set(member, Liveness::Suspect, now.unix_ms);
                }
                (foca::State::Alive, Some(Liveness::Suspect) | None) => {
                    self.view.set(member, Liveness::Alive, now.unix_ms);
                }
                (foca::State::Down, Some(Liveness::Alive | Liveness::Suspect)) => {
                    self.note_leaving(member, now);
                    self.view.set(member, Liveness::Dead, now.unix_ms);
                }
                (foca::State::Down, Some(Liveness::Dead)) => self.note_leaving(member, now),
                _ => {}
            }
        }
        // Size foca for the cluster it is in (suspicion and retransmissions
        // grow with log N).
        let n = states.len() + 1;
        if (n > self.sized_for * 2 || n * 2 < self.sized_for)
            && self.foca.set_config(self.tuning.foca_config(n)).is_ok()
        {
            self.sized_for = n;
        }
        // Alone: keep knocking at the seeds (offline autonomy: rejoin by itself).
        if self.foca.num_members() == 0
            && !self.seeds.is_empty()
            && now.mono_us.saturating_sub(self.last_rejoin_us)
                >= self.tuning.rejoin_every.as_micros() as u64
        {
            self.announce_to_seeds(now);
        }
        // Just joined: ask random members for their member lists.
        if now.mono_us.saturating_sub(self.joined_at_us)
            < self.tuning.discover_for.as_micros() as u64
            && now.mono_us.saturating_sub(self.last_discover_us)
                >= self.tuning.discover_every.as_micros() as u64
            && !states.is_empty()
        {
            self.last_discover_us = now.mono_us;
            let (member, _) = &states[self.rng.random_range(0..states.len())];
            let _ = self.foca.announce(member.clone(), &mut self.runtime);
        }
        // Anti-entropy: tell one random peer which heads this node holds.
        let jitter = self
            .rng
            .random_range(0..=self.tuning.digest_every.as_micros() as u64 / 4);
        if now.mono_us.saturating_sub(self.last_digest_us) + jitter
            >= self.tuning.digest_every.as_micros() as u64
        {
            self.last_digest_us = now.mono_us;
            self.send_digest(now);
        }
        if now.unix_ms.saturating_sub(self.last_expiry_ms) >= 60_000 {
            self.last_expiry_ms = now.unix_ms;
            self.records.lock().expire_tombstones(now.unix_ms);
            let horizon = now.mono_us.saturating_sub(60_000_000);
            self.clocks.retain(|_, (_, at)| *at >= horizon);
            self.sync_asked.retain(|_, at| *at >= horizon);
            let alive: std::collections::HashSet<NodeId> =
                self.view.iter().map(|(id, _)| *id).collect();
            self.peer_coordinates.retain(|id, _| alive.contains(id));
        }
    }

    /// A bounded random sample of the heads this node holds (its own
    /// always first), to one random live peer.
    fn send_digest(&mut self, now: Now) {
        let Some(to) = self.random_alive_peer() else {
            return;
        };
        self.send_digest_to(to, now);
    }

    fn send_digest_to(&mut self, to: SocketAddr, now: Now) {
        let me = self.me().id;
        let mut all = self.records.lock().summaries();
        let own = all
            .iter()
            .position(|s| s.owner == me)
            .map(|i| all.swap_remove(i));
        let mut sample: Vec<records::Summary> = own.into_iter().collect();
        while sample.len() < DIGEST_ENTRIES && !all.is_empty() {
            let i = self.rng.random_range(0..all.len());
            sample.push(all.swap_remove(i));
        }
        let envelope = self.envelope(to, Frame::Digest(sample), now);
        self.send(to, envelope);
    }

    /// The gossip address of a random peer this node sees alive.
    fn random_alive_peer(&mut self) -> Option<SocketAddr> {
        let me = self.me().id;
        let alive: Vec<SocketAddr> = self
            .view
            .iter()
            .filter(|(id, e)| **id != me && e.liveness == Liveness::Alive)
            .map(|(_, e)| e.member.addr)
            .collect();
        (!alive.is_empty()).then(|| alive[self.rng.random_range(0..alive.len())])
    }

    fn envelope(&self, to: SocketAddr, frame: Frame, now: Now) -> Envelope {
        Envelope {
            stamp: self.stamp_for(to, now),
            coordinate: (self.stats.rtt_samples > 0)
                .then(|| WireCoordinate::from(&self.coordinate)),
            frame,
        }
    }

    fn stamp_for(&self, to: SocketAddr, now: Now) -> Stamp {
        match self.clocks.get(&to) {
            Some((their_sent, received_at)) => Stamp {
                sent_us: now.mono_us,
                echo_us: *their_sent,
                hold_us: now.mono_us.saturating_sub(*received_at),
            },
            None => Stamp {
                sent_us: now.mono_us,
                echo_us: 0,
                hold_us: 0,
            },
        }
    }

    fn sample_rtt(
        &mut self,
        from: SocketAddr,
        stamp: Stamp,
        coordinate: Option<WireCoordinate>,
        now: Now,
    ) {
        if self.clocks.len() < MAX_CLOCKS || self.clocks.contains_key(&from) {
            self.clocks.insert(from, (stamp.sent_us, now.mono_us));
        }
        let Some(peer) = self.view.by_addr(from).map(|e| e.member.id) else {
            return;
        };
        let theirs: Coordinate = match coordinate.map(Coordinate::from) {
            Some(c) if c.is_valid() => c,
            _ => Coordinate::default(),
        };
        if coordinate.is_some()
            && (self.peer_coordinates.len() < MAX_PEER_COORDINATES
                || self.peer_coordinates.contains_key(&peer))
        {
            self.peer_coordinates.insert(peer, theirs.clone());
        }
        if stamp.echo_us == 0 || stamp.echo_us > now.mono_us {
            return;
        }
        let Some(rtt_us) = (now.mono_us - stamp.echo_us).checked_sub(stamp.hold_us) else {
            return;
        };
        if rtt_us == 0 || rtt_us > 10_000_000 {
            return;
        }
        self.coordinate
            .update(&theirs, rtt_us as f64 / 1e6, &self.vivaldi);
        self.stats.rtt_samples += 1;
    }

    fn ask_sync(&mut self, owner: NodeId, generation: u64, since: u64, now: Now) {
        if owner == self.me().id {
            return;
        }
        if let Some(at) = self.sync_asked.get(&owner)
            && now.mono_us.saturating_sub(*at) < SYNC_RETRY.as_micros() as u64
        {
            return;
        }
        // Ask the owner if it is up, else anyone alive who may hold a replica.
        let target = match self.view.get(&owner) {
            Some(e) if matches!(e.liveness, Liveness::Alive | Liveness::Suspect) => {
                Some(e.member.addr)
            }
            _ => self.random_alive_peer(),
        };
        let Some(to) = target else {
            return;
        };
        self.sync_asked.insert(owner, now.mono_us);
        self.stats.sync_requests_out += 1;
        let envelope = self.envelope(
            to,
            Frame::SyncRequest {
                owner,
                generation,
                since,
            },
            now,
        );
        self.send(to, envelope);
    }

    fn answer_sync(
        &mut self,
        to: SocketAddr,
        owner: NodeId,
        generation: u64,
        since: u64,
        now: Now,
    ) {
        let (updates, complete_to) = self.records.lock().since(owner, generation, since);
        let budget = MAX_DATAGRAM - SEAL_OVERHEAD - ENVELOPE_OVERHEAD;
        let mut frames = 0;
        let mut batch: Vec<Update> = Vec::new();
        let mut size = 0;
        let mut after = since;
        for u in updates {
            let len = postcard::to_allocvec(&u).map_or(budget, |b| b.len());
            if !batch.is_empty() && size + len > budget {
                let last = batch.last().map_or(after, |u| u.version);
                let frame = Frame::SyncResponse {
                    after,
                    complete_to,
                    updates: std::mem::take(&mut batch),
                };
                after = last;
                let envelope = self.envelope(to, frame, now);
                self.send(to, envelope);
                size = 0;
                frames += 1;
                if frames >= MAX_SYNC_FRAMES {
                    return;
                }
            }
            size += len;
            batch.push(u);
        }
        if !batch.is_empty() {
            let envelope = self.envelope(
                to,
                Frame::SyncResponse {
                    after,
                    complete_to,
                    updates: batch,
                },
                now,
            );
            self.send(to, envelope);
        }
    }
}

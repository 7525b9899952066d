//! A deterministic simulator of many fabrics in one thread.
//!
//! Virtual time, a seeded random generator and an ordered event queue: the
//! same seed gives the same run, event for event, so a failing seed can be
//! replayed. The network has sites with one-way latencies between them,
//! jitter, packet loss and cuts between sites. Nodes crash (they stop in
//! place, like SIGKILL), restart with a higher generation, or leave.
//!
//! Every datagram goes through the real wire encoding and decoding, and is
//! counted as if it were sealed with a cluster key.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use locus_core::NodeId;
use locus_core::cluster::Liveness;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::deadlines::Deadlines;
use crate::fabric::{Fabric, Now, Output, Timer, Tuning};
use crate::member::Member;
use crate::wire::{SEAL_OVERHEAD, Sealer};

/// A simulated node.
pub struct SimNode {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub site: usize,
    pub generation: u64,
    epoch: u64,
    fabric: Option<Fabric>,
    /// Bytes this node sent (as sealed datagrams).
    pub bytes_out: u64,
}

impl SimNode {
    /// The node's fabric while it runs.
    pub fn fabric(&self) -> Option<&Fabric> {
        self.fabric.as_ref()
    }

    /// Whether the node runs.
    pub fn is_up(&self) -> bool {
        self.fabric.is_some()
    }
}

enum Event {
    Deliver {
        to: usize,
        from: SocketAddr,
        datagram: Vec<u8>,
    },
    Timer {
        node: usize,
        epoch: u64,
        timer: Timer,
    },
}

/// The simulated network.
#[derive(Debug, Clone)]
pub struct Network {
    /// One-way latency between sites, ms (`one_way_ms[a][b]`).
    pub one_way_ms: Vec<Vec<f64>>,
    /// Latency varies by ± this fraction.
    pub jitter: f64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Pairs of sites that cannot reach each other.
    pub cuts: BTreeSet<(usize, usize)>,
}

impl Network {
    /// `sites` sites, 0.5 ms inside a site, 5 to 40 ms between sites.
    pub fn sites(sites: usize) -> Network {
        let one_way_ms = (0..sites)
            .map(|a| {
                (0..sites)
                    .map(|b| {
                        if a == b {
                            0.5
                        } else {
                            5.0 + 35.0 * ((a as f64 - b as f64).abs() / sites.max(2) as f64)
                        }
                    })
                    .collect()
            })
            .collect();
        Network {
            one_way_ms,
            jitter: 0.2,
            loss: 0.0,
            cuts: BTreeSet::new(),
        }
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cuts.contains(&(a.min(b), a.max(b)))
    }
}

/// The simulator.
pub struct Sim {
    pub seed: u64,
    now_us: u64,
    rng: StdRng,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: Deadlines<Event>,
    pub net: Network,
    tuning: Tuning,
    sealer: Sealer,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Datagrams lost or cut.
    pub dropped: u64,
}

impl Sim {
    /// A simulator with `per_site[i]` nodes in site `i`, none started yet.
    pub fn new(seed: u64, per_site: &[usize], net: Network, tuning: Tuning) -> Sim {
        let mut nodes = Vec::new();
        let mut by_addr = HashMap::new();
        for (site, count) in per_site.iter().enumerate() {
            for _ in 0..*count {
                let i = nodes.len();
                let mut id = [0u8; 10];
                id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                id[8] = site as u8;
                let ip = Ipv4Addr::new(127, (site + 1) as u8, (i / 250) as u8, (i % 250 + 1) as u8);
                let addr = SocketAddr::new(IpAddr::V4(ip), 7401);
                by_addr.insert(addr, i);
                nodes.push(SimNode {
                    id: NodeId::from_bytes(id),
                    addr,
                    site,
                    generation: 0,
                    epoch: 0,
                    fabric: None,
                    bytes_out: 0,
                });
            }
        }
        Sim {
            seed,
            now_us: 0,
            rng: StdRng::seed_from_u64(seed),
            nodes,
            by_addr,
            queue: Deadlines::new(),
            net,
            tuning,
            sealer: Sealer::new(None),
            delivered: 0,
            dropped: 0,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono_us: self.now_us,
            unix_ms: self.now_us / 1000,
        }
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Start node `i` (again, with a higher generation if it ran before)
    /// and join through the nodes `seeds`.
    pub fn start(&mut self, i: usize, seeds: &[usize]) {
        let node_seed = self.rng.random::<u64>();
        let now = self.now();
        let seed_addrs: Vec<SocketAddr> = seeds
            .iter()
            .filter(|s| **s != i)
            .map(|s| self.nodes[*s].addr)
            .collect();
        let node = &mut self.nodes[i];
        node.generation += 1;
        node.epoch += 1;
        let me = Member {
            id: node.id,
            addr: node.addr,
            generation: node.generation,
            bump: 0,
        };
        let mut fabric = Fabric::new(me, self.tuning.clone(), node_seed, now);
        fabric.join(&seed_addrs, now);
        // Like an agent, publish what the node is.
        let info = format!(
            "{{\"site\":{},\"generation\":{}}}",
            node.site, node.generation
        );
        let _ = fabric.publish(crate::fabric::KEY_INFO, Some(info.into_bytes()), now);
        node.fabric = Some(fabric);
        self.flush(i);
    }

    /// Node `i` writes one of its records.
    pub fn publish(
        &mut self,
        i: usize,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<u64, crate::records::RecordError> {
        let now = self.now();
        let result = match self.nodes[i].fabric.as_mut() {
            Some(f) => f.publish(key, value, now),
            None => Ok(0),
        };
        self.flush(i);
        result
    }

    /// The value of `owner`'s record `key` as node `observer` holds it.
    pub fn record(&self, observer: usize, owner: usize, key: &str) -> Option<Vec<u8>> {
        let f = self.nodes[observer].fabric.as_ref()?;
        let records = f.records().lock();
        records.get(self.nodes[owner].id, key).map(<[u8]>::to_vec)
    }

    /// Stop node `i` in place, as SIGKILL would.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].fabric = None;
        self.nodes[i].epoch += 1;
    }

    /// Node `i` announces its leave, then stops.
    pub fn leave(&mut self, i: usize) {
        let now = self.now();
        if let Some(f) = self.nodes[i].fabric.as_mut() {
            f.leave(now);
        }
        self.flush(i);
        self.crash(i);
    }

    /// Cut (or restore) the network between two sites.
    pub fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        let pair = (a.min(b), a.max(b));
        if cut {
            self.net.cuts.insert(pair);
        } else {
            self.net.cuts.remove(&pair);
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.queue.push(at, event);
    }

    /// Move node `i`'s pending outputs onto the network and the timer queue.
    fn flush(&mut self, i: usize) {
        let Some(fabric) = self.nodes[i].fabric.as_mut() else {
            return;
        };
        let outputs: Vec<Output> = fabric.drain().collect();
        let epoch = self.nodes[i].epoch;
        let from = self.nodes[i].addr;
        let from_site = self.nodes[i].site;
        for out in outputs {
            match out {
                Output::Schedule { after, timer } => {
                    self.push(
                        self.now_us + after.as_micros() as u64,
                        Event::Timer {
                            node: i,
                            epoch,
                            timer,
                        },
                    );
                }
                Output::Send { to, envelope } => {
                    let datagram = self.sealer.seal(&envelope, [0; 24]);
                    self.nodes[i].bytes_out += (datagram.len() + SEAL_OVERHEAD - 3) as u64;
                    let Some(&j) = self.by_addr.get(&to) else {
                        self.dropped += 1;
                        continue;
                    };
                    let to_site = self.nodes[j].site;
                    let lost = self.rng.random::<f64>() < self.net.loss;
                    if lost || self.net.is_cut(from_site, to_site) {
                        self.dropped += 1;
                        continue;
                    }
                    let base = self.net.one_way_ms[from_site][to_site];
                    let jitter = 1.0 + self.net.jitter * (self.rng.random::<f64>() * 2.0 - 1.0);
                    let delay_us = (base * jitter * 1000.0).max(1.0) as u64;
                    self.push(
                        self.now_us + delay_us,
                        Event::Deliver {
                            to: j,
                            from,
                            datagram,
                        },
                    );
                }
            }
        }
    }

    /// Run the simulation for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now_us + d.as_micros() as u64;
        while let Some((at, event)) = self.queue.pop_due(end) {
            self.now_us = at;
            let now = self.now();
            match event {
                Event::Timer { node, epoch, timer } => {
                    if self.nodes[node].epoch != epoch {
                        continue;
                    }
                    if let Some(f) = self.nodes[node].fabric.as_mut() {
                        f.handle_timer(timer, now);
                    }
                    self.flush(node);
                }
                Event::Deliver { to, from, datagram } => {
                    let Some(f) = self.nodes[to].fabric.as_mut() else {
                        continue;
                    };
                    match self.sealer.open(&datagram) {
                        Ok(envelope) => {
                            self.delivered += 1;
                            f.handle_envelope(from, envelope, now);
                        }
                        Err(_) => self.dropped += 1,
                    }
                    self.flush(to);
                }
            }
        }
        self.now_us = end;
    }

    /// Run in steps of `step` until `done(self)` or `max` elapses; returns
    /// the virtual time it took, or `None`.
    pub fn run_until(
        &mut self,
        step: Duration,
        max: Duration,
        done: impl Fn(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now_us;
        while self.now_us - start < max.as_micros() as u64 {
            if done(self) {
                return Some(Duration::from_micros(self.now_us - start));
            }
            self.run_for(step);
        }
        done(self).then(|| Duration::from_micros(self.now_us - start))
    }

    /// How `observer` sees `target`.
    pub fn liveness(&self, observer: usize, target: usize) -> Option<Liveness> {
        let f = self.nodes[observer].fabric.as_ref()?;
        f.view().get(&self.nodes[target].id).map(|e| e.liveness)
    }

    /// Indices of running nodes.
    pub fn up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_up())
            .collect()
    }

    /// Fraction of running nodes (other than `target`) for which `pred`
    /// holds of their view of `target`.
    pub fn fraction_seeing(&self, target: usize, pred: impl Fn(Option<Liveness>) -> bool) -> f64 {
        let observers: Vec<usize> = self.up().into_iter().filter(|i| *i != target).collect();
        if observers.is_empty() {
            return 1.0;
        }
        let yes = observers
            .iter()
            .filter(|o| pred(self.liveness(**o, target)))
            .count();
        yes as f64 / observers.len() as f64
    }

    /// Running nodes that see some other running node as dead: false verdicts.
    pub fn false_dead(&self) -> usize {
        let up = self.up();
        let mut count = 0;
        for &o in &up {
            for &t in &up {
                if o != t && self.liveness(o, t) == Some(Liveness::Dead) {
                    count += 1;
                }
            }
        }
        count
    }

    /// Total bytes sent by all nodes.
    pub fn bytes_out(&self) -> u64 {
        self.nodes.iter().map(|n| n.bytes_out).sum()
    }

    /// A fingerprint of everyone's view, to check that a replay is identical.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        let mut mix = |v: u64| {
            h ^= v;
            h = h.wrapping_mul(0x100000001b3);
        };
        mix(self.delivered);
        mix(self.dropped);
        for n in &self.nodes {
            if let Some(f) = &n.fabric {
                for (id, e) in f.view().iter() {
                    mix(u64::from(id.as_bytes()[7]));
                    mix(e.liveness as u64);
                    mix(e.since_ms);
                }
            }
        }
        h
    }
}

//! `locus bench fabric`: failure detection and dissemination of the fabric,
//! measured in the deterministic simulator (the same state machine as the
//! agent, over a simulated network of 5 sites). Prints JSON.

use std::time::{Duration, Instant};

use anyhow::bail;
use locus_core::cluster::Liveness;
use locus_fabric::Tuning;
use locus_fabric::sim::{Network, Sim};
use serde::Serialize;

use crate::cli::FabricBenchArgs;

const SITES: usize = 5;

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    version: &'static str,
    sites: usize,
    tuning: TuningReport,
    runs: Vec<Run>,
    false_verdicts: FalseVerdicts,
}

#[derive(Debug, Serialize)]
struct TuningReport {
    probe_period_ms: u128,
    probe_rtt_ms: u128,
    gossip_every_ms: u128,
    gossip_fanout: usize,
    suspicion_multiplier: f64,
    retransmit_multiplier: f64,
}

#[derive(Debug, Serialize)]
struct Run {
    nodes: usize,
    loss: f64,
    seed: u64,
    /// A node joins a converged cluster: until 99% of nodes see it alive
    /// and it sees 99% of them.
    join_ms: Option<f64>,
    /// A node crashes: until 99% of live nodes see it dead.
    dead_99_ms: Option<f64>,
    /// ... until every live node sees it dead.
    dead_100_ms: Option<f64>,
    /// A revocation (a ~200-byte record) published by one node: until 99%
    /// of live nodes hold it.
    revocation_99_ms: Option<f64>,
    /// ... until every live node holds it, so every node refuses the
    /// revoked credential.
    revocation_100_ms: Option<f64>,
    /// Gossip sent per node per second in steady state (sealed datagrams).
    bytes_per_node_per_sec: f64,
    kbit_per_node_per_sec: f64,
    /// Wall time the simulation of this run took.
    wall_secs: f64,
}

#[derive(Debug, Serialize)]
struct FalseVerdicts {
    nodes: usize,
    loss: f64,
    virtual_secs: u64,
    seed: u64,
    /// Transitions to "dead" recorded about nodes that never failed.
    false_dead_transitions: usize,
    /// Times a live node learned it had been declared down and rejoined.
    rejoins: u64,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 100_000.0).round() / 100.0)
}

fn boot(n: usize, seed: u64, loss: f64, tuning: &Tuning) -> Sim {
    let per_site: Vec<usize> = (0..SITES)
        .map(|s| n / SITES + usize::from(s < n % SITES))
        .collect();
    let mut sim = Sim::new(seed, &per_site, Network::sites(SITES), tuning.clone());
    let firsts: Vec<usize> = per_site
        .iter()
        .scan(0, |acc, c| {
            let first = *acc;
            *acc += c;
            Some(first)
        })
        .collect();
    // All but the last node join, a few per millisecond.
    for i in 0..n - 1 {
        let site = sim.nodes()[i].site;
        sim.start(i, &[0, firsts[site]]);
        if i % 4 == 3 {
            sim.run_for(Duration::from_millis(1));
        }
    }
    sim.net.loss = loss;
    sim
}

fn seen_alive_fraction(sim: &Sim, target: usize) -> f64 {
    sim.fraction_seeing(target, |l| {
        matches!(l, Some(Liveness::Alive | Liveness::Suspect))
    })
}

fn sees_fraction(sim: &Sim, observer: usize) -> f64 {
    let others: Vec<usize> = sim.up().into_iter().filter(|i| *i != observer).collect();
    if others.is_empty() {
        return 1.0;
    }
    let yes = others
        .iter()
        .filter(|t| {
            matches!(
                sim.liveness(observer, **t),
                Some(Liveness::Alive | Liveness::Suspect)
            )
        })
        .count();
    yes as f64 / others.len() as f64
}

fn run(n: usize, loss: f64, seed: u64, tuning: &Tuning) -> anyhow::Result<Run> {
    if n < 3 {
        bail!("a fabric benchmark needs at least 3 nodes");
    }
    let wall = Instant::now();
    let mut sim = boot(n, seed, loss, tuning);
    let step = Duration::from_millis(50);
    // Let the cluster converge before measuring.
    sim.run_until(Duration::from_millis(500), Duration::from_secs(120), |s| {
        (0..n - 1)
            .step_by((n / 20).max(1))
            .all(|t| seen_alive_fraction(s, t) >= 0.99)
    });
    sim.run_for(Duration::from_secs(10));

    // Join.
    let newcomer = n - 1;
    sim.start(newcomer, &[0]);
    let join = sim.run_until(step, Duration::from_secs(60), |s| {
        seen_alive_fraction(s, newcomer) >= 0.99 && sees_fraction(s, newcomer) >= 0.99
    });
    sim.run_for(Duration::from_secs(10));

    // Steady-state bandwidth.
    let before = sim.bytes_out();
    let window = Duration::from_secs(20);
    sim.run_for(window);
    let bytes = (sim.bytes_out() - before) as f64 / n as f64 / window.as_secs_f64();

    // A revocation spreads.
    let revoker = 1;
    let key = "access/revocation/bench";
    sim.publish(revoker, key, Some(vec![0x5a; 200]))
        .map_err(|e| anyhow::anyhow!("cannot publish the revocation record: {e}"))?;
    let start = sim.elapsed();
    let holding = |s: &Sim| {
        let up = s.up();
        up.iter()
            .filter(|o| s.record(**o, revoker, key).is_some())
            .count() as f64
            / up.len() as f64
    };
    let revocation_99 = sim.run_until(Duration::from_millis(10), Duration::from_secs(60), |s| {
        holding(s) >= 0.99
    });
    let revocation_100 = sim
        .run_until(Duration::from_millis(10), Duration::from_secs(60), |s| {
            holding(s) >= 1.0
        })
        .map(|_| sim.elapsed() - start);

    // Crash.
    let victim = n / 2;
    sim.crash(victim);
    let start = sim.elapsed();
    let dead_99 = sim.run_until(step, Duration::from_secs(60), |s| {
        s.fraction_seeing(victim, |l| l == Some(Liveness::Dead)) >= 0.99
    });
    let dead_100 = sim
        .run_until(step, Duration::from_secs(60), |s| {
            s.fraction_seeing(victim, |l| l == Some(Liveness::Dead)) >= 1.0
        })
        .map(|_| sim.elapsed() - start);
    Ok(Run {
        nodes: n,
        loss,
        seed,
        join_ms: ms(join),
        dead_99_ms: ms(dead_99),
        dead_100_ms: ms(dead_100),
        revocation_99_ms: ms(revocation_99),
        revocation_100_ms: ms(revocation_100),
        bytes_per_node_per_sec: bytes.round(),
        kbit_per_node_per_sec: (bytes * 8.0 / 1000.0 * 100.0).round() / 100.0,
        wall_secs: (wall.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    })
}

/// A counter summed over every running node.
fn total(sim: &Sim, pick: fn(&locus_fabric::Stats) -> u64) -> u64 {
    sim.nodes()
        .iter()
        .filter_map(|x| x.fabric())
        .map(|f| pick(&f.stats()))
        .sum()
}

fn false_verdicts(n: usize, loss: f64, secs: u64, seed: u64, tuning: &Tuning) -> FalseVerdicts {
    let mut sim = boot(n, seed, 0.0, tuning);
    sim.start(n - 1, &[0]);
    sim.run_for(Duration::from_secs(20));
    sim.net.loss = loss;
    // Only transitions after the loss starts count.
    let from_ms = sim.elapsed().as_millis() as u64;
    let rejoins_before = total(&sim, |s| s.rejoins);
    let downs_before = total(&sim, |s| s.members_down);
    let mut false_dead = 0;
    for _ in 0..secs / 10 {
        sim.run_for(Duration::from_secs(10));
    }
    for o in sim.up() {
        let Some(f) = sim.nodes()[o].fabric() else {
            continue;
        };
        for (_, entry) in f.view().iter() {
            false_dead += entry
                .history
                .iter()
                .filter(|t| t.to == Liveness::Dead && t.at_unix_ms >= from_ms)
                .count();
        }
    }
    let rejoins = total(&sim, |s| s.rejoins);
    let downs = total(&sim, |s| s.members_down);
    eprintln!(
        "  down notifications during the run: {}",
        downs - downs_before
    );
    FalseVerdicts {
        nodes: n,
        loss,
        virtual_secs: secs,
        seed,
        false_dead_transitions: false_dead,
        rejoins: rejoins - rejoins_before,
    }
}

pub fn fabric(args: &FabricBenchArgs) -> anyhow::Result<()> {
    let mut t = Tuning::default();
    if let Some(ms) = args.probe_period_ms {
        t.probe_period = Duration::from_millis(ms.max(2));
        t.probe_rtt = t.probe_rtt.min(t.probe_period / 2);
    }
    if let Some(m) = args.suspicion {
        t.suspicion_multiplier = m;
    }
    let mut runs = Vec::new();
    for &n in &args.nodes {
        for &loss in &args.loss {
            for r in 0..args.runs {
                let seed = args.seed + r as u64;
                eprintln!(
                    "fabric: {n} nodes, {:.0}% loss, seed {seed} …",
                    loss * 100.0
                );
                let result = run(n, loss, seed, &t)?;
                eprintln!(
                    "  join {:?} ms, dead to 99% {:?} ms, to all {:?} ms, revocation to all {:?} ms, {:.2} kbit/s per node ({:.1} s)",
                    result.join_ms,
                    result.dead_99_ms,
                    result.dead_100_ms,
                    result.revocation_100_ms,
                    result.kbit_per_node_per_sec,
                    result.wall_secs
                );
                runs.push(result);
            }
        }
    }
    eprintln!(
        "fabric: false verdicts, {} nodes, 10% loss, {} s …",
        args.false_nodes, args.false_secs
    );
    let false_verdicts = false_verdicts(args.false_nodes, 0.10, args.false_secs, args.seed, &t);
    let report = Report {
        benchmark: "fabric",
        version: locus_core::VERSION,
        sites: SITES,
        tuning: TuningReport {
            probe_period_ms: t.probe_period.as_millis(),
            probe_rtt_ms: t.probe_rtt.as_millis(),
            gossip_every_ms: t.gossip_every.as_millis(),
            gossip_fanout: t.gossip_fanout,
            suspicion_multiplier: t.suspicion_multiplier,
            retransmit_multiplier: t.retransmit_multiplier,
        },
        runs,
        false_verdicts,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

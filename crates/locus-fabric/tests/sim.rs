//! Deterministic simulation of the fabric: 50 nodes over 5 sites with
//! per-site latencies; joins, crashes, partitions, healing, 10% loss.
//! Every step asserts who is seen alive or dead. The seed is printed; run
//! with `LOCUS_SIM_SEED=<seed>` to replay a failing run exactly.

use std::time::Duration;

use locus_core::cluster::Liveness;
use locus_fabric::Tuning;
use locus_fabric::sim::{Network, Sim};

const SITES: usize = 5;
const PER_SITE: usize = 10;

fn seeds() -> Vec<u64> {
    match std::env::var("LOCUS_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("LOCUS_SIM_SEED must be a number")],
        Err(_) => vec![1, 2, 3],
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn is_alive(l: Option<Liveness>) -> bool {
    matches!(l, Some(Liveness::Alive | Liveness::Suspect))
}

/// Start every node, each joining through the first node of its site and
/// the first node of site 0.
fn boot(seed: u64) -> Sim {
    let mut sim = Sim::new(
        seed,
        &[PER_SITE; SITES],
        Network::sites(SITES),
        Tuning::default(),
    );
    for i in 0..SITES * PER_SITE {
        let site_seed = (i / PER_SITE) * PER_SITE;
        sim.start(i, &[0, site_seed]);
        sim.run_for(secs(0.05));
    }
    sim
}

fn everyone_sees_everyone(sim: &Sim) -> bool {
    let up = sim.up();
    up.iter().all(|&t| sim.fraction_seeing(t, is_alive) == 1.0)
}

fn scenario(seed: u64) -> u64 {
    println!(
        "simulation seed {seed} (replay: LOCUS_SIM_SEED={seed} cargo test -p locus-fabric --test sim)"
    );
    let mut sim = boot(seed);

    // 1. Joins: everyone knows every live node within seconds.
    let t = sim.run_until(secs(0.1), secs(15.0), everyone_sees_everyone);
    assert!(
        t.is_some(),
        "seed {seed}: membership did not converge after joins"
    );
    println!(
        "  joined: full membership {:.2?} after the last join",
        t.unwrap_or_default()
    );
    sim.run_for(secs(5.0));
    assert_eq!(sim.false_dead(), 0, "seed {seed}: a live node is seen dead");
    // Node records (published via owned records) reach everyone.
    let known = sim.nodes()[0]
        .fabric()
        .map(|f| f.records().lock().owners())
        .unwrap_or(0);
    assert_eq!(
        known,
        SITES * PER_SITE,
        "seed {seed}: node 0 misses some owners' records"
    );

    // 2. Crash one node per site: everyone else sees them dead.
    let crashed: Vec<usize> = (0..SITES).map(|s| s * PER_SITE + 3).collect();
    for &c in &crashed {
        sim.crash(c);
    }
    let t = sim.run_until(secs(0.05), secs(20.0), |sim| {
        crashed
            .iter()
            .all(|&c| sim.fraction_seeing(c, |l| l == Some(Liveness::Dead)) == 1.0)
    });
    assert!(
        t.is_some(),
        "seed {seed}: crashed nodes not seen dead by all"
    );
    println!(
        "  crash: all 5 crashed nodes dead everywhere after {:.2?}",
        t.unwrap_or_default()
    );
    assert_eq!(
        sim.false_dead(),
        0,
        "seed {seed}: false dead verdict after crashes"
    );

    // 3. Restart them: they rejoin with a higher generation and are alive again.
    for &c in &crashed {
        sim.start(c, &[0]);
    }
    let t = sim.run_until(secs(0.1), secs(20.0), everyone_sees_everyone);
    assert!(
        t.is_some(),
        "seed {seed}: restarted nodes not seen alive again"
    );
    for &c in &crashed {
        let gen_seen = sim.nodes()[1].fabric().and_then(|f| {
            f.view()
                .get(&sim.nodes()[c].id)
                .map(|e| e.member.generation)
        });
        assert_eq!(
            gen_seen,
            Some(2),
            "seed {seed}: node {c} rejoined with the wrong generation"
        );
    }
    println!(
        "  restart: back alive everywhere after {:.2?}",
        t.unwrap_or_default()
    );

    // 4. Partition site 4 from all other sites: each side sees the other dead,
    //    and keeps its own side alive.
    for s in 0..SITES - 1 {
        sim.set_cut(s, SITES - 1, true);
    }
    let far: Vec<usize> = ((SITES - 1) * PER_SITE..SITES * PER_SITE).collect();
    let near: Vec<usize> = (0..(SITES - 1) * PER_SITE).collect();
    let t = sim.run_until(secs(0.1), secs(30.0), |sim| {
        far.iter().all(|&f| {
            near.iter()
                .all(|&n| sim.liveness(n, f) == Some(Liveness::Dead))
        }) && near.iter().all(|&n| {
            far.iter()
                .all(|&f| sim.liveness(f, n) == Some(Liveness::Dead))
        })
    });
    assert!(
        t.is_some(),
        "seed {seed}: the partition was not detected on both sides"
    );
    println!(
        "  partition: both sides see the other dead after {:.2?}",
        t.unwrap_or_default()
    );
    for &a in &far {
        for &b in &far {
            if a != b {
                assert!(
                    is_alive(sim.liveness(a, b)),
                    "seed {seed}: {a} lost {b} inside the cut-off site"
                );
            }
        }
    }

    // 5. Heal: the sides find each other again by themselves.
    sim.net.cuts.clear();
    let t = sim.run_until(secs(0.2), secs(60.0), everyone_sees_everyone);
    assert!(t.is_some(), "seed {seed}: the cluster did not heal");
    println!(
        "  heal: one cluster again after {:.2?}",
        t.unwrap_or_default()
    );

    // 6. 10% packet loss for 60 s: no false verdict, and a crash is still seen.
    sim.net.loss = 0.10;
    // A record written under loss reaches every replica (broadcast, then
    // digests and pulls for those that missed it).
    for v in 0..20u8 {
        sim.publish(1, "test/counter", Some(vec![v]))
            .expect("publish");
        sim.run_for(secs(0.1));
    }
    let t = sim.run_until(secs(0.1), secs(30.0), |sim| {
        sim.up()
            .iter()
            .all(|&o| sim.record(o, 1, "test/counter") == Some(vec![19]))
    });
    assert!(
        t.is_some(),
        "seed {seed}: a record did not reach every replica under 10% loss"
    );
    println!(
        "  record under 10% loss: on every replica {:.2?} after the last write",
        t.unwrap_or_default()
    );
    sim.run_for(secs(60.0));
    assert_eq!(
        sim.false_dead(),
        0,
        "seed {seed}: false dead verdict under 10% loss"
    );
    let victim = 7;
    sim.crash(victim);
    let t = sim.run_until(secs(0.05), secs(20.0), |sim| {
        sim.fraction_seeing(victim, |l| l == Some(Liveness::Dead)) == 1.0
    });
    assert!(
        t.is_some(),
        "seed {seed}: crash not detected under 10% loss"
    );
    println!(
        "  10% loss: no false verdict in 60 s; crash seen by all after {:.2?}",
        t.unwrap_or_default()
    );

    // 7. A graceful leave is "left", never "dead".
    sim.net.loss = 0.0;
    let leaver = 12;
    sim.leave(leaver);
    let t = sim.run_until(secs(0.05), secs(20.0), |sim| {
        sim.fraction_seeing(leaver, |l| l == Some(Liveness::Left)) == 1.0
    });
    assert!(
        t.is_some(),
        "seed {seed}: the leave was not seen as left by all"
    );
    for o in sim.up() {
        let history = sim.nodes()[o].fabric().and_then(|f| {
            f.view()
                .get(&sim.nodes()[leaver].id)
                .map(|e| e.history.clone())
        });
        let ever_dead = history
            .into_iter()
            .flatten()
            .skip_while(|t| t.to != Liveness::Left)
            .any(|t| t.to == Liveness::Dead);
        assert!(!ever_dead, "seed {seed}: node {o} saw the leaver as dead");
    }
    println!(
        "  leave: seen as left by all after {:.2?}",
        t.unwrap_or_default()
    );
    sim.fingerprint()
}

#[test]
fn fifty_nodes_five_sites_joins_crashes_partitions_loss() {
    for seed in seeds() {
        scenario(seed);
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    let a = {
        let mut sim = boot(99);
        sim.crash(5);
        sim.net.loss = 0.1;
        sim.run_for(secs(10.0));
        sim.fingerprint()
    };
    let b = {
        let mut sim = boot(99);
        sim.crash(5);
        sim.net.loss = 0.1;
        sim.run_for(secs(10.0));
        sim.fingerprint()
    };
    assert_eq!(a, b, "the same seed must give the same run");
}

//! Failover in the deterministic simulator, over many seeds: 15 nodes in 3
//! sites run the real SWIM fabric (with 5% packet loss); each node owns
//! workloads published as real owned records, and every half second each
//! node runs `locus_sched::plan` on its own view, adopting and yielding as
//! the agent does. After crashes, restarts, a partition of a minority site
//! and its healing, every workload must have exactly one copy on a running
//! node. The seed is printed; `LOCUS_SIM_SEED=<seed>` replays one run.

use std::collections::BTreeMap;
use std::time::Duration;

use locus_core::cluster::{Capacity, ClusterNode, NodeInfo};
use locus_core::workload::{
    Kind, SpecFormat, State, Workload, WorkloadId, WorkloadSpec, WorkloadSummary,
};
use locus_fabric::Tuning;
use locus_fabric::sim::{Network, Sim};
use locus_sched::{Action, plan};

const SITES: usize = 3;
const PER_SITE: usize = 5;
const N: usize = SITES * PER_SITE;
const WORKLOADS: usize = 12;
const STEP: Duration = Duration::from_millis(500);

fn seeds() -> Vec<u64> {
    match std::env::var("LOCUS_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("LOCUS_SIM_SEED must be a number")],
        Err(_) => (1..=20).collect(),
    }
}

/// What each simulated node owns (its store).
type Owned = Vec<BTreeMap<WorkloadId, Workload>>;

fn key(id: WorkloadId) -> String {
    format!("wl/{id}")
}

fn spec_key(id: WorkloadId) -> String {
    format!("wl/{id}/spec/0")
}

/// Info and capacity as an agent publishes them (the simulator publishes
/// only a stub): every node has room and every driver.
fn complete(mut nodes: Vec<ClusterNode>, sim: &Sim) -> Vec<ClusterNode> {
    for n in &mut nodes {
        let Some(i) = sim.nodes().iter().position(|s| s.id == n.id) else {
            continue;
        };
        let info: NodeInfo = serde_json::from_value(serde_json::json!({
            "id": n.id.to_string(), "public_key": "00", "name": format!("n{i}"),
            "site": {"name": format!("site{}", i / PER_SITE)},
            "api_addr": "127.0.0.1:1", "gossip_addr": n.gossip_addr,
            "labels": {}, "version": "0", "generation": n.generation,
            "started_at_unix_ms": 0, "energy": {}
        }))
        .expect("node info");
        n.info = Some(info);
        n.capacity = Some(Capacity {
            cpu_millicores: 4000,
            memory_bytes: 8 << 30,
            drivers: Kind::ALL.to_vec(),
            ..Capacity::default()
        });
    }
    nodes
}

fn publish(sim: &mut Sim, i: usize, w: &Workload) {
    let summary = w.summary(1);
    sim.publish(i, &spec_key(w.id), Some(w.spec.to_json()))
        .expect("publish spec");
    sim.publish(
        i,
        &key(w.id),
        Some(serde_json::to_vec(&summary).expect("json")),
    )
    .expect("publish summary");
}

/// One reconcile pass on every running node, as the agent's loop does it.
fn reconcile(sim: &mut Sim, owned: &mut Owned, ids: &[WorkloadId]) {
    for i in sim.up() {
        let Some(fabric) = sim.nodes()[i].fabric() else {
            continue;
        };
        let nodes = complete(fabric.snapshot(), sim);
        let mut copies: Vec<WorkloadSummary> = Vec::new();
        let mut specs: BTreeMap<WorkloadId, WorkloadSpec> = BTreeMap::new();
        for (j, n) in sim.nodes().iter().enumerate() {
            for &id in ids {
                if let Some(bytes) = sim.record(i, j, &key(id))
                    && let Ok(s) = serde_json::from_slice::<WorkloadSummary>(&bytes)
                    && s.owner == n.id
                {
                    copies.push(s);
                    if let Some(spec) = sim
                        .record(i, j, &spec_key(id))
                        .and_then(|b| serde_json::from_slice::<WorkloadSpec>(&b).ok())
                    {
                        specs.insert(id, spec);
                    }
                }
            }
        }
        let me = sim.nodes()[i].id;
        for action in plan(
            me,
            &nodes,
            &copies,
            |id| specs.get(&id),
            sim.elapsed().as_millis() as u64,
        ) {
            match action {
                Action::Yield { id, .. } => {
                    owned[i].remove(&id);
                    sim.publish(i, &key(id), None).expect("tombstone");
                    sim.publish(i, &spec_key(id), None).expect("tombstone");
                }
                Action::Adopt { id, epoch, .. } => {
                    let Some(spec) = specs.get(&id).cloned() else {
                        continue;
                    };
                    let mut w = Workload::new(id, spec, me, 0);
                    w.epoch = epoch;
                    w.transition(State::Scheduled, "adopted", 0).expect("legal");
                    w.transition(State::Starting, "start", 0).expect("legal");
                    w.transition(State::Running, "up", 0).expect("legal");
                    publish(sim, i, &w);
                    owned[i].insert(id, w);
                }
            }
        }
    }
}

/// Copies of each workload on running nodes.
fn copies_running(sim: &Sim, owned: &Owned) -> BTreeMap<WorkloadId, Vec<(usize, u64)>> {
    let mut out: BTreeMap<WorkloadId, Vec<(usize, u64)>> = BTreeMap::new();
    for i in sim.up() {
        for (id, w) in &owned[i] {
            out.entry(*id).or_default().push((i, w.epoch));
        }
    }
    out
}

fn exactly_one_each(sim: &Sim, owned: &Owned, ids: &[WorkloadId]) -> bool {
    let c = copies_running(sim, owned);
    ids.iter().all(|id| c.get(id).is_some_and(|v| v.len() == 1))
}

/// Run reconcile passes until `done`, at most `max`; returns the time taken.
fn settle(
    sim: &mut Sim,
    owned: &mut Owned,
    ids: &[WorkloadId],
    max: Duration,
    done: impl Fn(&Sim, &Owned) -> bool,
) -> Option<Duration> {
    let start = sim.elapsed();
    while sim.elapsed() - start < max {
        reconcile(sim, owned, ids);
        if done(sim, owned) {
            return Some(sim.elapsed() - start);
        }
        sim.run_for(STEP);
    }
    None
}

fn scenario(seed: u64) -> Vec<(WorkloadId, usize, u64)> {
    println!(
        "failover simulation seed {seed} (replay: LOCUS_SIM_SEED={seed} cargo test -p locus-sched --test failover_sim)"
    );
    let mut net = Network::sites(SITES);
    net.loss = 0.05;
    let mut sim = Sim::new(seed, &[PER_SITE; SITES], net, Tuning::default());
    for i in 0..N {
        sim.start(i, &[0, (i / PER_SITE) * PER_SITE]);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(10));
    let mut owned: Owned = vec![BTreeMap::new(); N];

    // Workloads spread by placement as node 0 sees the cluster.
    let view = complete(sim.nodes()[0].fabric().expect("up").snapshot(), &sim);
    let mut ids = Vec::new();
    for k in 0..WORKLOADS {
        let id = WorkloadId([k as u8 + 1, (seed % 251) as u8, 0, 0, 0, 0, 0, 7]);
        let spec = WorkloadSpec::parse(
            &format!("name = \"w{k}\"\nsource = \"m.wasm\"\n"),
            SpecFormat::Toml,
        )
        .expect("spec");
        let chosen = locus_sched::place(id, &spec, &view)
            .chosen
            .expect("a node fits");
        let i = sim
            .nodes()
            .iter()
            .position(|n| n.id == chosen)
            .expect("known");
        let mut w = Workload::new(id, spec, chosen, 0);
        w.transition(State::Scheduled, "placed", 0).expect("legal");
        w.transition(State::Starting, "start", 0).expect("legal");
        w.transition(State::Running, "up", 0).expect("legal");
        publish(&mut sim, i, &w);
        owned[i].insert(id, w);
        ids.push(id);
    }
    sim.run_for(Duration::from_secs(5));
    assert!(exactly_one_each(&sim, &owned, &ids), "seed {seed}: setup");

    // 1. Crash the two nodes that own the most workloads.
    let mut by_load: Vec<usize> = (0..N).collect();
    by_load.sort_by_key(|i| std::cmp::Reverse(owned[*i].len()));
    let victims = [by_load[0], by_load[1]];
    for &v in &victims {
        sim.crash(v);
    }
    let t = settle(
        &mut sim,
        &mut owned,
        &ids,
        Duration::from_secs(30),
        |s, o| exactly_one_each(s, o, &ids),
    );
    let t = t.unwrap_or_else(|| {
        panic!(
            "seed {seed}: after crashing {victims:?}, copies are {:?}",
            copies_running(&sim, &owned)
        )
    });
    println!("  crash of {victims:?}: one copy of each workload again after {t:.1?}");
    for (id, v) in copies_running(&sim, &owned) {
        assert!(
            !victims.contains(&v[0].0),
            "seed {seed}: {id} still on a victim"
        );
    }

    // 2. The victims come back with their stores (stale copies): they
    //    republish them, see the newer epochs and yield.
    for &v in &victims {
        sim.start(v, &[0, PER_SITE]);
        let stale: Vec<Workload> = owned[v].values().cloned().collect();
        for w in &stale {
            publish(&mut sim, v, w);
        }
    }
    let t = settle(
        &mut sim,
        &mut owned,
        &ids,
        Duration::from_secs(40),
        |s, o| exactly_one_each(s, o, &ids) && victims.iter().all(|v| o[*v].is_empty()),
    )
    .unwrap_or_else(|| {
        panic!(
            "seed {seed}: after the restart, copies are {:?}",
            copies_running(&sim, &owned)
        )
    });
    println!("  restart: stale copies yielded after {t:.1?}");

    // 3. Cut site 2 (a minority) from the rest: its workloads move to the
    //    majority; the minority adopts nothing.
    let minority: Vec<usize> = (2 * PER_SITE..N).collect();
    let before: BTreeMap<WorkloadId, u64> = copies_running(&sim, &owned)
        .into_iter()
        .map(|(id, v)| (id, v[0].1))
        .collect();
    sim.set_cut(0, 2, true);
    sim.set_cut(1, 2, true);
    let majority_side = |s: &Sim, o: &Owned| {
        let c = copies_running(s, o);
        ids.iter().all(|id| {
            c.get(id)
                .is_some_and(|v| v.iter().filter(|(i, _)| !minority.contains(i)).count() == 1)
        })
    };
    settle(
        &mut sim,
        &mut owned,
        &ids,
        Duration::from_secs(40),
        majority_side,
    )
    .unwrap_or_else(|| {
        panic!(
            "seed {seed}: during the partition, copies are {:?}",
            copies_running(&sim, &owned)
        )
    });
    for i in &minority {
        for (id, w) in &owned[*i] {
            assert!(
                w.epoch <= before[id],
                "seed {seed}: the minority adopted {id} (epoch {})",
                w.epoch
            );
        }
    }

    // 4. Heal: the minority's stale copies yield; one copy each.
    sim.set_cut(0, 2, false);
    sim.set_cut(1, 2, false);
    let t = settle(
        &mut sim,
        &mut owned,
        &ids,
        Duration::from_secs(60),
        |s, o| exactly_one_each(s, o, &ids),
    )
    .unwrap_or_else(|| {
        panic!(
            "seed {seed}: after healing, copies are {:?}",
            copies_running(&sim, &owned)
        )
    });
    println!("  partition healed: one copy each after {t:.1?}");
    // Stable: a few more passes change nothing.
    for _ in 0..6 {
        reconcile(&mut sim, &mut owned, &ids);
        sim.run_for(STEP);
    }
    assert!(
        exactly_one_each(&sim, &owned, &ids),
        "seed {seed}: not stable"
    );
    copies_running(&sim, &owned)
        .into_iter()
        .map(|(id, v)| (id, v[0].0, v[0].1))
        .collect()
}

#[test]
fn every_workload_keeps_exactly_one_copy_through_crashes_and_partitions() {
    for seed in seeds() {
        scenario(seed);
    }
}

#[test]
fn a_seed_replays_exactly() {
    assert_eq!(scenario(7), scenario(7));
}

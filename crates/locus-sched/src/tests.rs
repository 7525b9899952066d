use super::*;
use locus_core::cluster::{Capacity, Coordinate, NodeInfo};
use locus_core::workload::{Kind, SpecFormat};
use proptest::prelude::*;

pub(crate) fn node(i: u8, site: &str, liveness: Liveness, cpu: u64, used: u64) -> ClusterNode {
    let id = NodeId::from_bytes([i; 10]);
    let info: NodeInfo = serde_json::from_value(serde_json::json!({
        "id": id.to_string(), "public_key": "00", "name": format!("n{i}"),
        "site": {"name": site}, "api_addr": "127.0.0.1:1", "gossip_addr": "127.0.0.1:2",
        "labels": {"arch": if i.is_multiple_of(2) { "arm64" } else { "x86_64" }},
        "version": "0", "generation": 1, "started_at_unix_ms": 0, "energy": {}
    }))
    .unwrap();
    let mut cap = Capacity {
        cpu_millicores: cpu,
        memory_bytes: 4 << 30,
        drivers: Kind::ALL.to_vec(),
        ..Capacity::default()
    };
    cap.allocated.cpu_millicores = used;
    ClusterNode {
        id,
        liveness,
        since_unix_ms: 0,
        transitions: Vec::new(),
        generation: 1,
        gossip_addr: String::new(),
        info: Some(info),
        capacity: Some(cap),
        coordinate: None,
        is_self: false,
    }
}

fn coord(x: f64) -> Coordinate {
    let mut c = Coordinate::default();
    c.vec[0] = x;
    c
}

fn spec(extra: &str) -> WorkloadSpec {
    WorkloadSpec::parse(
        &format!("name = \"w\"\nsource = \"m.wasm\"\n{extra}"),
        SpecFormat::Toml,
    )
    .unwrap()
}

const ID: WorkloadId = WorkloadId([7; 8]);

#[test]
fn filters_name_every_reason() {
    let mut nodes = vec![
        node(1, "lab", Liveness::Alive, 2000, 1950),
        node(2, "pop", Liveness::Alive, 2000, 0),
        node(3, "lab", Liveness::Dead, 2000, 0),
        node(4, "lab", Liveness::Alive, 2000, 0),
    ];
    nodes[3].capacity.as_mut().unwrap().drivers = vec![Kind::Process];
    let s = spec(
        "[resources]\ncpu_millicores = 500\n[placement]\nsite = \"lab\"\nlabels = { arch = \"arm64\" }\n",
    );
    let d = place(ID, &s, &nodes);
    assert_eq!(d.chosen, None);
    let why = |i: u8| {
        d.verdicts
            .iter()
            .find(|v| v.node == NodeId::from_bytes([i; 10]))
            .unwrap()
            .reasons
            .join(" | ")
    };
    assert!(why(1).contains("cpu: 500m asked, 50m free"), "{}", why(1));
    assert!(why(2).contains("site: wants lab"), "{}", why(2));
    assert!(why(3).contains("not alive"), "{}", why(3));
    assert!(why(4).contains("no driver"), "{}", why(4));
    assert!(d.why_none().starts_with("no node fits"), "{}", d.why_none());
}

#[test]
fn spread_and_pack_pick_opposite_ends() {
    let nodes = vec![
        node(1, "lab", Liveness::Alive, 4000, 3000),
        node(2, "lab", Liveness::Alive, 4000, 0),
    ];
    let spread = place(ID, &spec(""), &nodes);
    assert_eq!(spread.chosen, Some(nodes[1].id));
    let pack = place(ID, &spec("[placement]\nstrategy = \"pack\"\n"), &nodes);
    assert_eq!(pack.chosen, Some(nodes[0].id));
    assert!(pack.verdicts[0].score > pack.verdicts[1].score);
}

#[test]
fn within_n_ms_of_a_site_uses_coordinates() {
    let mut nodes = vec![
        node(1, "pop", Liveness::Alive, 1000, 0),
        node(2, "lab", Liveness::Alive, 1000, 0),
        node(3, "far", Liveness::Alive, 1000, 0),
        node(4, "nocoord", Liveness::Alive, 1000, 0),
    ];
    nodes[0].coordinate = Some(coord(0.0));
    nodes[1].coordinate = Some(coord(0.005)); // 5 ms
    nodes[2].coordinate = Some(coord(0.080)); // 80 ms
    let s = spec("[placement]\nnear = { site = \"pop\", within_ms = 20 }\n");
    let d = place(ID, &s, &nodes);
    let fitting: Vec<NodeId> = d
        .verdicts
        .iter()
        .filter(|v| v.fits)
        .map(|v| v.node)
        .collect();
    assert_eq!(fitting, vec![nodes[0].id, nodes[1].id], "{d:#?}");
    let far = d.verdicts.iter().find(|v| v.node == nodes[2].id).unwrap();
    assert!(far.reasons[0].contains("about 80.0 ms"), "{far:?}");
    let none = d.verdicts.iter().find(|v| v.node == nodes[3].id).unwrap();
    assert!(none.reasons[0].contains("no estimate"), "{none:?}");
    let lab = d.verdicts.iter().find(|v| v.node == nodes[1].id).unwrap();
    assert!((lab.terms.as_ref().unwrap().rtt_ms.unwrap() - 5.0).abs() < 0.1);
}

#[test]
fn a_dead_owner_has_exactly_one_successor_and_a_stale_copy_yields() {
    let nodes: Vec<ClusterNode> = (1..=5)
        .map(|i| {
            node(
                i,
                "lab",
                if i == 1 {
                    Liveness::Dead
                } else {
                    Liveness::Alive
                },
                2000,
                0,
            )
        })
        .collect();
    let s = spec("");
    let summary = |owner: u8, epoch: u64| WorkloadSummary {
        id: ID,
        name: "w".into(),
        kind: Kind::Wasm,
        owner: NodeId::from_bytes([owner; 10]),
        epoch,
        desired: Desired::Running,
        state: State::Running,
        reason: String::new(),
        since_unix_ms: 0,
        failover: Failover::Reschedule,
        cpu_millicores: 100,
        memory_mb: 64,
        restarts: 0,
        exit_code: None,
        spec_digest: s.digest(),
        spec_chunks: 1,
        destroyed: false,
        tenant: Default::default(),
    };
    let copies = vec![summary(1, 1)];
    let adopters: Vec<NodeId> = nodes[1..]
        .iter()
        .filter(|n| !plan(n.id, &nodes, &copies, |_| Some(&s), 10_000).is_empty())
        .map(|n| n.id)
        .collect();
    assert_eq!(adopters.len(), 1);
    let adopter = adopters[0];
    assert_eq!(
        plan(adopter, &nodes, &copies, |_| Some(&s), 10_000),
        vec![Action::Adopt {
            id: ID,
            from: nodes[0].id,
            epoch: 2
        }]
    );
    // The old owner returns with its stale copy: it yields, nobody adopts.
    let mut back = nodes.clone();
    back[0].liveness = Liveness::Alive;
    let mut copies = vec![summary(1, 1)];
    copies.push(WorkloadSummary {
        owner: adopter,
        epoch: 2,
        ..copies[0].clone()
    });
    assert_eq!(
        plan(nodes[0].id, &back, &copies, |_| Some(&s), 10_000),
        vec![Action::Yield {
            id: ID,
            by: adopter,
            epoch: 2
        }]
    );
    for n in &back[1..] {
        assert!(plan(n.id, &back, &copies, |_| Some(&s), 10_000).is_empty());
    }
    // A node alone in a minority adopts nothing.
    let mut alone = nodes.clone();
    for n in &mut alone[2..] {
        n.liveness = Liveness::Dead;
    }
    assert!(!has_majority(&alone));
    assert!(plan(alone[1].id, &alone, &[summary(1, 1)], |_| Some(&s), 10_000).is_empty());
    // `stay` workloads are not adopted.
    let stay = vec![WorkloadSummary {
        failover: Failover::Stay,
        ..summary(1, 1)
    }];
    assert!(
        nodes[1..]
            .iter()
            .all(|n| plan(n.id, &nodes, &stay, |_| Some(&s), 10_000).is_empty())
    );

    // A standby named by a contract: only it adopts, and only once the
    // death is witnessed; nobody else meanwhile.
    let copies = vec![summary(1, 1)];
    let standby = nodes
        .iter()
        .map(|n| n.id)
        .find(|n| *n != adopter && *n != nodes[0].id)
        .unwrap();
    let named = |witnessed| {
        move |_: &WorkloadSummary| {
            Some(Standby {
                node: standby,
                witnessed,
            })
        }
    };
    for n in &nodes[1..] {
        let actions = plan_with_standbys(n.id, &nodes, &copies, |_| Some(&s), named(false), 10_000);
        assert!(
            actions.is_empty(),
            "nobody adopts before the death is witnessed"
        );
        let actions = plan_with_standbys(n.id, &nodes, &copies, |_| Some(&s), named(true), 10_000);
        assert_eq!(
            !actions.is_empty(),
            n.id == standby,
            "only the standby adopts"
        );
    }
    // A standby that others see as unable to run it (their view of its
    // capacity lags) still leaves it to the standby alone.
    let mut full = nodes.clone();
    if let Some(cap) = full
        .iter_mut()
        .find(|n| n.id == standby)
        .and_then(|n| n.capacity.as_mut())
    {
        cap.allocated.cpu_millicores = cap.cpu_millicores;
    }
    for n in full
        .iter()
        .filter(|n| n.id != standby && n.id != nodes[0].id)
    {
        assert!(
            plan_with_standbys(n.id, &full, &copies, |_| Some(&s), named(true), 10_000).is_empty(),
            "a node other than the alive standby adopts"
        );
    }
    // Nor does one that is only suspected for a moment.
    let mut suspected = nodes.clone();
    suspected
        .iter_mut()
        .find(|n| n.id == standby)
        .unwrap()
        .liveness = Liveness::Suspect;
    for n in suspected
        .iter()
        .filter(|n| n.id != standby && n.id != nodes[0].id)
    {
        assert!(
            plan_with_standbys(n.id, &suspected, &copies, |_| Some(&s), named(true), 10_000)
                .is_empty(),
            "a node adopts while the standby is only suspected"
        );
    }
    // Nor does one this node left out of its view (its certificate is not
    // checked here yet).
    let unseen: Vec<ClusterNode> = nodes.iter().filter(|n| n.id != standby).cloned().collect();
    for n in unseen.iter().filter(|n| n.id != nodes[0].id) {
        assert!(
            plan_with_standbys(n.id, &unseen, &copies, |_| Some(&s), named(true), 10_000)
                .is_empty(),
            "a node adopts while the standby is out of its view"
        );
    }
    // A standby that is gone leaves it to the usual successor.
    let mut gone = nodes.clone();
    gone.iter_mut().find(|n| n.id == standby).unwrap().liveness = Liveness::Dead;
    let adopters: Vec<NodeId> = gone[1..]
        .iter()
        .filter(|n| {
            !plan_with_standbys(n.id, &gone, &copies, |_| Some(&s), named(true), 10_000).is_empty()
        })
        .map(|n| n.id)
        .collect();
    assert_eq!(adopters.len(), 1);
    assert_ne!(adopters[0], standby);
}

proptest! {
    /// Placement does not depend on the order of the snapshot, and what it
    /// chooses passes every filter.
    #[test]
    fn placement_is_order_independent(
        used in prop::collection::vec(0u64..2000, 1..12),
        dead in prop::collection::vec(any::<bool>(), 12),
        rotate in 0usize..12,
        pack in any::<bool>(),
        id in any::<[u8; 8]>(),
    ) {
        let nodes: Vec<ClusterNode> = used.iter().enumerate().map(|(i, u)| {
            let l = if dead[i] { Liveness::Dead } else { Liveness::Alive };
            node(i as u8 + 1, if i % 3 == 0 { "a" } else { "b" }, l, 2000, *u)
        }).collect();
        let s = spec(if pack { "[resources]\ncpu_millicores = 300\n[placement]\nstrategy = \"pack\"\n" } else { "[resources]\ncpu_millicores = 300\n" });
        let id = WorkloadId(id);
        let a = place(id, &s, &nodes);
        let mut shuffled = nodes.clone();
        let r = rotate % shuffled.len();
        shuffled.rotate_left(r);
        shuffled.reverse();
        let b = place(id, &s, &shuffled);
        prop_assert_eq!(a.chosen, b.chosen);
        if let Some(c) = a.chosen {
            let n = nodes.iter().find(|n| n.id == c).unwrap();
            prop_assert!(assess(&s, n, &nodes).is_ok());
        } else {
            prop_assert!(nodes.iter().all(|n| assess(&s, n, &nodes).is_err()));
        }
        prop_assert_eq!(successor(id, &s, &nodes, &[]), successor(id, &s, &shuffled, &[]));
    }
}

#[test]
fn replicas_go_to_sites_without_a_copy_first() {
    let nodes = vec![
        node(1, "a", Liveness::Alive, 1000, 0),
        node(2, "a", Liveness::Alive, 1000, 0),
        node(3, "b", Liveness::Alive, 1000, 0),
        node(4, "b", Liveness::Dead, 1000, 0),
        node(5, "c", Liveness::Alive, 1000, 0),
    ];
    let holders: std::collections::BTreeSet<_> = [nodes[0].id].into();
    let f = replica_fetchers(b"art", 3, &nodes, &holders);
    assert_eq!(f.len(), 2);
    let sites: std::collections::BTreeSet<_> = f
        .iter()
        .map(|id| {
            nodes
                .iter()
                .find(|n| n.id == *id)
                .unwrap()
                .info
                .as_ref()
                .unwrap()
                .site
                .name
                .get()
                .clone()
        })
        .collect();
    assert_eq!(
        sites,
        ["b".to_owned(), "c".to_owned()].into(),
        "one copy per site before a second"
    );
    assert!(!f.contains(&nodes[3].id), "a dead node is never asked");
    // Enough live holders: nothing to do; a dead holder does not count.
    let all: std::collections::BTreeSet<_> = [nodes[0].id, nodes[2].id, nodes[4].id].into();
    assert!(replica_fetchers(b"art", 3, &nodes, &all).is_empty());
    let with_dead: std::collections::BTreeSet<_> = [nodes[0].id, nodes[3].id].into();
    assert_eq!(replica_fetchers(b"art", 2, &nodes, &with_dead).len(), 1);
    // More copies than nodes: every live node.
    assert_eq!(replica_fetchers(b"art", 10, &nodes, &holders).len(), 3);
}

#[test]
fn nearest_holders_come_first() {
    let mut nodes = vec![
        node(1, "a", Liveness::Alive, 1000, 0),
        node(2, "a", Liveness::Alive, 1000, 0),
        node(3, "b", Liveness::Alive, 1000, 0),
        node(4, "b", Liveness::Alive, 1000, 0),
    ];
    nodes[0].coordinate = Some(coord(0.0));
    nodes[1].coordinate = Some(coord(0.050));
    nodes[2].coordinate = Some(coord(0.005));
    let ids = [nodes[3].id, nodes[1].id, nodes[2].id];
    let order = nearest_first(&nodes[0], &nodes, &ids);
    assert_eq!(order, vec![nodes[2].id, nodes[1].id, nodes[3].id]);
}

proptest! {
    #[test]
    fn every_view_agrees_on_the_fetchers(k in 0usize..6, held in proptest::collection::btree_set(0u8..8, 0..4), key in any::<[u8; 4]>()) {
        let nodes: Vec<_> = (0..8).map(|i| node(i, ["a", "b", "c"][i as usize % 3], Liveness::Alive, 1000, 0)).collect();
        let holders: std::collections::BTreeSet<_> = held.iter().map(|i| nodes[*i as usize].id).collect();
        let mut rev = nodes.clone();
        rev.reverse();
        let a = replica_fetchers(&key, k, &nodes, &holders);
        let b = replica_fetchers(&key, k, &rev, &holders);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.len(), k.saturating_sub(holders.len()).min(8 - holders.len()));
        prop_assert!(a.iter().all(|id| !holders.contains(id)));
    }
}

#[test]
fn a_dead_managers_thing_has_one_adopter_or_its_witnessed_standby() {
    let mut nodes: Vec<ClusterNode> = (1..=4)
        .map(|i| node(i, "lab", Liveness::Alive, 2000, 0))
        .collect();
    let manager = nodes[0].id;
    assert_eq!(
        thing_adopter("t1", manager, &nodes, None, None, 10_000),
        None,
        "the manager is up"
    );
    nodes[0].liveness = Liveness::Dead;
    nodes[0].since_unix_ms = 9_500;
    assert_eq!(
        thing_adopter("t1", manager, &nodes, None, None, 10_000),
        None,
        "within the grace"
    );
    let adopter = thing_adopter("t1", manager, &nodes, None, None, 11_000).unwrap();
    assert_ne!(adopter, manager);
    // Every node computes the same adopter; another name may go elsewhere.
    let names: std::collections::BTreeSet<NodeId> = (0..40)
        .filter_map(|i| thing_adopter(&format!("t{i}"), manager, &nodes, None, None, 11_000))
        .collect();
    assert!(names.len() > 1, "names spread over the live nodes");
    // A standby: it alone, and only once witnessed.
    let sb = nodes[3].id;
    let standby = |witnessed| {
        Some(Standby {
            node: sb,
            witnessed,
        })
    };
    assert_eq!(
        thing_adopter("t1", manager, &nodes, standby(false), None, 11_000),
        None
    );
    assert_eq!(
        thing_adopter("t1", manager, &nodes, standby(true), None, 11_000),
        Some(sb)
    );
    // A standby suspected for a moment still holds it: nobody else takes it.
    let mut suspected = nodes.clone();
    suspected[3].liveness = Liveness::Suspect;
    assert_eq!(
        thing_adopter("t1", manager, &suspected, standby(false), None, 11_000),
        None
    );
    let unseen: Vec<ClusterNode> = nodes.iter().filter(|n| n.id != sb).cloned().collect();
    assert_eq!(
        thing_adopter("t1", manager, &unseen, standby(false), None, 11_000),
        None,
        "the standby is out of this node's view, not gone"
    );
    // A standby known to be gone leaves it to the usual successor.
    let mut gone = nodes.clone();
    gone[3].liveness = Liveness::Dead;
    gone[3].since_unix_ms = 0;
    gone.push(node(5, "lab", Liveness::Alive, 2000, 0));
    assert!(thing_adopter("t1", manager, &gone, standby(false), None, 11_000).is_some());
    // A thing managed by a workload goes where the workload runs now,
    // waits while it has not moved, and not forever.
    let home = nodes[2].id;
    assert_eq!(
        thing_adopter("t1", manager, &nodes, None, Some(home), 11_000),
        Some(home)
    );
    assert_eq!(
        thing_adopter("t1", manager, &nodes, None, Some(manager), 11_000),
        None,
        "the workload has not moved yet"
    );
    assert_eq!(
        thing_adopter(
            "t1",
            manager,
            &nodes,
            None,
            Some(manager),
            9_500 + FOLLOW_WAIT_MS
        ),
        Some(adopter),
        "waited long enough: the usual successor"
    );
    // A minority adopts nothing.
    nodes[1].liveness = Liveness::Dead;
    nodes[2].liveness = Liveness::Dead;
    assert_eq!(
        thing_adopter("t1", manager, &nodes, None, None, 11_000),
        None
    );
}

//! The fabric between real agent processes on 127.0.0.x: joins, SIGKILL,
//! restart, graceful stop, cluster keys, and hostile datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use locus_testkit::*;
use nix::sys::signal::Signal;
use serde_json::Value;

fn keygen(path: &Path) {
    let out = locus(&["keygen", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

struct Member {
    agent: Agent,
    gossip: SocketAddr,
}

fn start_member(
    dir: &Path,
    i: usize,
    gossip: SocketAddr,
    seed: Option<SocketAddr>,
    key: &Path,
) -> Member {
    let api = free_addr_on(&format!("127.0.0.{i}"));
    let mut args = vec![
        "--gossip".to_owned(),
        gossip.to_string(),
        "--cluster-key-file".to_owned(),
        key.to_str().unwrap().to_owned(),
        "--name".to_owned(),
        format!("n{i}"),
        "--site".to_owned(),
        format!("site{}", i % 2),
    ];
    if let Some(seed) = seed {
        args.push("--seed".to_owned());
        args.push(seed.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::spawn(&dir.join(format!("n{i}")), api, &args);
    agent.wait_healthy();
    Member { agent, gossip }
}

fn nodes(agent: &Agent) -> Vec<Value> {
    get_json(agent, "/api/v1/nodes")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state_of(agent: &Agent, id: &str) -> Option<(String, u64)> {
    nodes(agent).into_iter().find(|n| n["id"] == id).map(|n| {
        (
            n["liveness"].as_str().unwrap_or("").to_owned(),
            n["generation"].as_u64().unwrap_or(0),
        )
    })
}

#[test]
fn five_agents_see_a_crash_a_restart_and_a_leave() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    keygen(&key);
    let gossips: Vec<SocketAddr> = (1..=5)
        .map(|i| free_udp_on(&format!("127.0.0.{i}")))
        .collect();
    let mut members: Vec<Member> = (1..=5)
        .map(|i| {
            start_member(
                dir.path(),
                i,
                gossips[i - 1],
                (i > 1).then_some(gossips[0]),
                &key,
            )
        })
        .collect();
    let ids: Vec<String> = members
        .iter()
        .map(|m| {
            get_json(&m.agent, "/api/v1/node")["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();

    let t = wait_until(
        "every agent sees 5 alive nodes",
        Duration::from_secs(30),
        || {
            members.iter().all(|m| {
                nodes(&m.agent)
                    .iter()
                    .filter(|n| n["liveness"] == "alive")
                    .count()
                    == 5
            })
        },
    );
    println!("joined: 5 agents see each other after {t:.2?}");
    // Membership and published node state travel separately: a node may be
    // alive before its info (and so its site) has reached everyone.
    let t = wait_until(
        "every agent sees 5 nodes in 2 sites",
        Duration::from_secs(30),
        || {
            members.iter().all(|m| {
                let sites = get_json(&m.agent, "/api/v1/sites");
                let sites = sites.as_array().cloned().unwrap_or_default();
                let placed: usize = sites
                    .iter()
                    .map(|s| s["nodes"].as_array().map_or(0, Vec::len))
                    .sum();
                sites.len() == 2 && placed == 5
            })
        },
    );
    println!("node state: every agent knows every site after {t:.2?}");

    // SIGKILL node 3: every other node marks it dead.
    members[2].agent.signal(Signal::SIGKILL);
    let t = wait_until("node 3 is dead everywhere", Duration::from_secs(20), || {
        members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .all(|(_, m)| state_of(&m.agent, &ids[2]).is_some_and(|(l, _)| l == "dead"))
    });
    println!("SIGKILL: node 3 dead everywhere after {t:.2?}");

    // Restart it: same id, higher generation, alive everywhere.
    let restarted = start_member(dir.path(), 3, members[2].gossip, Some(gossips[0]), &key);
    let me = get_json(&restarted.agent, "/api/v1/node");
    assert_eq!(me["id"], ids[2].as_str());
    assert_eq!(me["generation"], 2);
    members[2] = restarted;
    let t = wait_until(
        "node 3 is alive again with generation 2",
        Duration::from_secs(20),
        || {
            members
                .iter()
                .all(|m| state_of(&m.agent, &ids[2]) == Some(("alive".to_owned(), 2)))
        },
    );
    println!("restart: node 3 back with generation 2 after {t:.2?}");

    // Graceful stop of node 4: marked left, never dead.
    let stopping = members.remove(3);
    assert!(stopping.agent.stop().success());
    wait_until("node 4 is left everywhere", Duration::from_secs(20), || {
        members
            .iter()
            .all(|m| state_of(&m.agent, &ids[3]).is_some_and(|(l, _)| l == "left"))
    });
    std::thread::sleep(Duration::from_secs(3));
    for m in &members {
        let n = get_json(&m.agent, &format!("/api/v1/nodes/{}", ids[3]));
        assert_eq!(n["liveness"], "left", "{n}");
        let history: Vec<&str> = n["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap())
            .collect();
        assert!(
            !history.contains(&"dead"),
            "a planned stop was seen as a failure: {history:?}"
        );
    }

    // The CLI shows the same picture.
    let out = locus(&["--api", &members[0].agent.api(), "nodes", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("left") && text.contains("n3"), "{text}");
    let out = locus(&[
        "--api",
        &members[0].agent.api(),
        "--json",
        "nodes",
        "ls",
        "--state",
        "alive",
    ]);
    let alive: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(alive.as_array().map(Vec::len), Some(4), "{alive}");
    let out = locus(&["--api", &members[0].agent.api(), "sites", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("site0"));

    // Coordinates appear once nodes have exchanged gossip for a while.
    wait_until(
        "an RTT estimate between n1 and n2",
        Duration::from_secs(30),
        || {
            let out = locus(&[
                "--api",
                &members[0].agent.api(),
                "--json",
                "nodes",
                "rtt",
                "n1",
                "n2",
            ]);
            out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| {
                    v["rtt_ms"]
                        .as_f64()
                        .is_some_and(|r| (0.0..50.0).contains(&r))
                })
        },
    );
}

#[test]
fn a_node_with_another_key_cannot_join_and_hostile_datagrams_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (key_a, key_b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    keygen(&key_a);
    keygen(&key_b);
    let ga = free_udp_on("127.0.0.1");
    let a = start_member(dir.path(), 1, ga, None, &key_a);
    let b = start_member(dir.path(), 2, free_udp_on("127.0.0.2"), Some(ga), &key_b);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        nodes(&a.agent).len(),
        1,
        "a stranger joined: {:?}",
        nodes(&a.agent)
    );
    assert_eq!(
        nodes(&b.agent).len(),
        1,
        "the stranger learned the cluster: {:?}",
        nodes(&b.agent)
    );

    // Hostile datagrams: garbage, a truncated header, a forged sealed frame.
    let sock = UdpSocket::bind("127.0.0.9:0").unwrap();
    let mut x: u64 = 7;
    for len in [0usize, 1, 2, 3, 10, 100, 1000, 1400, 1500, 9000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        sock.send_to(&bytes, ga).unwrap();
        let mut sealed = b"LF\x01".to_vec();
        sealed.extend_from_slice(&bytes);
        sock.send_to(&sealed, ga).unwrap();
        let mut open = b"LF\x00".to_vec();
        open.extend_from_slice(&bytes);
        sock.send_to(&open, ga).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let metrics = http()
        .get(a.agent.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let count = |event: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("locus_fabric_events_total{{event=\"{event}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("dropped_unauthenticated") >= 10, "{metrics}");
    assert!(count("dropped_malformed") >= 5, "{metrics}");
    assert_eq!(get_json(&a.agent, "/healthz")["status"], "ok");
    assert_eq!(nodes(&a.agent).len(), 1);
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.key");
    keygen(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = locus(&["keygen", "-o", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    std::fs::write(&path, "not a key\n").unwrap();
    let (code, stderr) = agent_fails(
        &dir.path().join("node"),
        &[
            "--cluster-key-file",
            path.to_str().unwrap(),
            "--listen",
            &free_addr().to_string(),
            "--gossip",
            &free_udp_on("127.0.0.1").to_string(),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot read the cluster key") && stderr.contains("64 hex digits"),
        "{stderr}"
    );
}

#[test]
fn a_busy_gossip_port_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = agent_fails(
        &dir.path().join("node"),
        &["--gossip", &addr, "--listen", &free_addr().to_string()],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("the gossip address {addr} is already in use")),
        "{stderr}"
    );
}

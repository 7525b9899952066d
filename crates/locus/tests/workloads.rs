//! Workloads end to end on real agents: every lifecycle verb through the
//! CLI, the process driver's re-adoption after an agent crash, placement and
//! forwarding across agents and sites, a pending workload placed when a
//! node joins, and failover after SIGKILL with exactly one copy afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use locus_testkit::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// A WASI module that prints `tick` every 200 ms, forever.
const TICKER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "tick\n")
  (func (export "_start")
    (loop $l
      (i32.store (i32.const 0) (i32.const 8))
      (i32.store (i32.const 4) (i32.const 5))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))
      (i64.store (i32.const 200) (i64.const 0))
      (i32.store8 (i32.const 208) (i32.const 0))
      (i32.store (i32.const 216) (i32.const 1))
      (i64.store (i32.const 224) (i64.const 200000000))
      (i64.store (i32.const 232) (i64.const 0))
      (i32.store16 (i32.const 240) (i32.const 0))
      (drop (call $poll (i32.const 200) (i32.const 304) (i32.const 1) (i32.const 400)))
      (br $l))))"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn ticker(dir: &Path) -> PathBuf {
    write(dir, "ticker.wat", TICKER)
}

fn workloads(agent: &Agent) -> Vec<Value> {
    get_json(agent, "/api/v1/workloads")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn find(agent: &Agent, name: &str) -> Option<Value> {
    workloads(agent).into_iter().find(|w| w["name"] == name)
}

fn wait_state(agent: &Agent, name: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Some(w) = find(agent, name) {
            if w["state"] == state {
                return w;
            }
            last = w;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{name} never became {state}; last seen: {last}\nagent log:\n{}",
        agent.logs()
    );
}

fn inspect(agent: &Agent, name: &str) -> Value {
    get_json(agent, &format!("/api/v1/workloads/{name}"))
}

#[test]
fn a_wasm_workload_goes_through_every_verb() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    let module = ticker(dir.path());
    let spec = write(
        dir.path(),
        "ticker.toml",
        &format!(
            "name = \"ticker\"\nsource = \"{}\"\nenv = {{ A = \"1\" }}\n[resources]\ncpu_millicores = 100\nmemory_mb = 16\n",
            module.display()
        ),
    );

    // A dry run explains and runs nothing.
    let out = ok(&cli(&agent, &["run", spec.to_str().unwrap(), "--dry-run"]));
    assert!(out.contains("VERDICT") && out.contains("fits"), "{out}");
    assert!(workloads(&agent).is_empty());

    ok(&cli(&agent, &["run", spec.to_str().unwrap()]));
    wait_state(&agent, "ticker", "running");
    wait_until("the log shows ticks", Duration::from_secs(10), || {
        ok(&cli(&agent, &["logs", "ticker"])).contains("tick\ntick\n")
    });
    let ps = ok(&cli(&agent, &["ps"]));
    assert!(ps.contains("ticker") && ps.contains("running"), "{ps}");

    // Destroy is refused while it runs.
    let out = cli(&agent, &["rm", "ticker"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop it first"), "{err}");

    // A second workload with the same name is refused.
    let out = cli(&agent, &["run", spec.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));

    ok(&cli(&agent, &["stop", "ticker"]));
    wait_state(&agent, "ticker", "stopped");
    ok(&cli(&agent, &["start", "ticker"]));
    wait_state(&agent, "ticker", "running");

    // Update restarts it with the new environment.
    ok(&cli(
        &agent,
        &["update", "ticker", "--env", "B=2", "--cpu", "200"],
    ));
    wait_until("the update is applied", Duration::from_secs(20), || {
        let w = inspect(&agent, "ticker");
        w["state"] == "running"
            && w["spec"]["env"]["B"] == "2"
            && w["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["reason"].as_str().unwrap_or("").contains("updated spec"))
    });
    assert_eq!(
        inspect(&agent, "ticker")["spec"]["resources"]["cpu_millicores"],
        200
    );

    // Force off, then destroy.
    ok(&cli(&agent, &["kill", "ticker"]));
    let w = wait_state(&agent, "ticker", "stopped");
    assert!(w["reason"].as_str().unwrap().contains("killed"), "{w}");
    ok(&cli(&agent, &["rm", "ticker"]));
    wait_until("it is gone", Duration::from_secs(10), || {
        workloads(&agent).is_empty()
    });

    // Force destroy of a running workload.
    ok(&cli(&agent, &["run", spec.to_str().unwrap()]));
    wait_state(&agent, "ticker", "running");
    ok(&cli(&agent, &["rm", "--force", "ticker"]));
    wait_until("it is gone", Duration::from_secs(10), || {
        workloads(&agent).is_empty()
    });

    // Bad specs: the CLI and the API name the field.
    let bad = write(
        dir.path(),
        "bad.toml",
        "name = \"x\"\nsource = \"y\"\n[resources]\nmemory_mb = 0\n",
    );
    let out = cli(&agent, &["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resources.memory_mb") && err.contains("line 4"),
        "{err}"
    );
    let r = http()
        .post(agent.url("/api/v1/workloads"))
        .header("content-type", "application/json")
        .body(r#"{"name":"x","source":"y","restart":"sometimes"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["details"]["path"], "restart", "{body}");

    // A module that exceeds its memory limit fails with that reason.
    let hog = write(
        dir.path(),
        "hog.wat",
        r#"(module (memory 1) (func (export "_start")
             (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
             unreachable))"#,
    );
    let spec = write(
        dir.path(),
        "hog.toml",
        &format!(
            "name = \"hog\"\nsource = \"{}\"\nrestart = \"never\"\n[resources]\nmemory_mb = 4\n",
            hog.display()
        ),
    );
    ok(&cli(&agent, &["run", spec.to_str().unwrap()]));
    let w = wait_state(&agent, "hog", "failed");
    assert!(
        w["reason"].as_str().unwrap().contains("memory limit"),
        "{w}"
    );
}

#[test]
fn a_process_restarts_on_failure_and_survives_an_agent_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let mut agent = Agent::start(&data, &[]);
    let flaky = write(
        dir.path(),
        "flaky.toml",
        "name = \"flaky\"\nkind = \"process\"\nsource = \"/bin/sh\"\nargs = [\"-c\", \"echo trying; exit 3\"]\n",
    );
    ok(&cli(&agent, &["run", flaky.to_str().unwrap()]));
    wait_until(
        "flaky is restarted by its policy",
        Duration::from_secs(20),
        || find(&agent, "flaky").is_some_and(|w| w["restarts"].as_u64().unwrap_or(0) >= 2),
    );
    wait_until(
        "a run has ended with its code",
        Duration::from_secs(20),
        || {
            let w = inspect(&agent, "flaky");
            w["state"] == "failed" && w["exit_code"] == 3
        },
    );
    assert!(ok(&cli(&agent, &["logs", "flaky"])).contains("trying"));
    ok(&cli(&agent, &["rm", "--force", "flaky"]));

    // A long process, `stay` on its node: the agent dies, the process does
    // not; the restarted agent re-adopts it.
    let marker = format!("{}", 4000 + std::process::id() % 1000);
    let long = write(
        dir.path(),
        "long.toml",
        &format!(
            "name = \"long\"\nkind = \"process\"\nsource = \"/bin/sleep\"\nargs = [\"{marker}\"]\nfailover = \"stay\"\n"
        ),
    );
    ok(&cli(&agent, &["run", long.to_str().unwrap()]));
    wait_state(&agent, "long", "running");
    let count = || {
        std::process::Command::new("pgrep")
            .args(["-f", &format!("^/bin/sleep {marker}$")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    };
    assert_eq!(count(), 1);
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));
    assert_eq!(count(), 1, "the process died with the agent");
    let addr = agent.addr;
    drop(agent);
    let agent = Agent::spawn(&data, addr, &[]);
    agent.wait_healthy();
    let w = wait_state(&agent, "long", "running");
    assert!(w["reason"].as_str().unwrap().contains("re-adopted"), "{w}");
    assert_eq!(count(), 1);
    ok(&cli(&agent, &["stop", "long"]));
    wait_state(&agent, "long", "stopped");
    wait_until("the process is gone", Duration::from_secs(15), || {
        count() == 0
    });
}

fn node_name(w: &Value) -> String {
    w["node_name"].as_str().unwrap_or("").to_owned()
}

#[test]
fn placement_forwards_across_sites_and_a_pending_workload_waits_for_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let module = ticker(dir.path());
    let m1 = member(dir.path(), 1, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir.path(), 2, "b", &seeds);
    let m3 = member(dir.path(), 3, "c", &seeds);
    wait_cluster(&[&m1, &m2, &m3], 3);

    // Submitted to n1, placed on the only node of site c, forwarded there.
    let spec = write(
        dir.path(),
        "c.toml",
        &format!(
            "name = \"at-c\"\nsource = \"{}\"\n[placement]\nsite = \"c\"\n",
            module.display()
        ),
    );
    let out = ok(&cli(
        &m1.agent,
        &["run", spec.to_str().unwrap(), "--explain"],
    ));
    assert!(out.contains("site: wants c"), "{out}");
    let w = wait_state(&m1.agent, "at-c", "running");
    assert_eq!(node_name(&w), m3.name);
    // Any node answers for it, forwarding to the owner.
    let via_n2 = ok(&cli(&m2.agent, &["inspect", "at-c", "--json"]));
    assert!(via_n2.contains("running on node"), "{via_n2}");
    wait_until(
        "logs come through a forwarding node",
        Duration::from_secs(10),
        || ok(&cli(&m2.agent, &["logs", "at-c"])).contains("tick"),
    );
    ok(&cli(&m1.agent, &["stop", "at-c"]));
    wait_state(&m2.agent, "at-c", "stopped");

    // Within 50 ms of site a: on loopback every node qualifies once
    // coordinates exist; the explanation carries the estimate.
    let near_a = write(
        dir.path(),
        "near-a.toml",
        &format!(
            "name = \"near-a\"\nsource = \"{}\"\n[placement]\nnear = {{ site = \"a\", within_ms = 50 }}\n",
            module.display()
        ),
    );
    wait_until("coordinates are known", Duration::from_secs(30), || {
        let out = ok(&cli(
            &m2.agent,
            &["run", near_a.to_str().unwrap(), "--dry-run", "--json"],
        ));
        let v: Value = serde_json::from_str(&out).unwrap();
        v["placement"]["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["fits"] == true)
    });
    ok(&cli(&m2.agent, &["run", near_a.to_str().unwrap()]));
    wait_state(&m1.agent, "near-a", "running");

    // Within 20 ms of site d, which has no node yet: pending with the reason…
    let near_d = write(
        dir.path(),
        "near-d.toml",
        &format!(
            "name = \"near-d\"\nsource = \"{}\"\n[placement]\nnear = {{ site = \"d\", within_ms = 20 }}\n",
            module.display()
        ),
    );
    ok(&cli(&m1.agent, &["run", near_d.to_str().unwrap()]));
    let w = wait_state(&m3.agent, "near-d", "pending");
    assert!(w["reason"].as_str().unwrap().contains("latency"), "{w}");
    // …and placed as soon as a node of site d joins (on loopback every node
    // is then within 20 ms of it, so any of them may run it).
    let _m4 = member(dir.path(), 4, "d", &seeds);
    let w = wait_state(&m1.agent, "near-d", "running");
    assert!(
        w["reason"].as_str().unwrap().starts_with("running on node"),
        "{w}"
    );
    let near_d_site = w["site"].as_str().unwrap().to_owned();

    // More CPU than any node has: pending, with the reason per node.
    let huge = write(
        dir.path(),
        "huge.toml",
        &format!(
            "name = \"huge\"\nsource = \"{}\"\n[resources]\ncpu_millicores = 900000\n",
            module.display()
        ),
    );
    ok(&cli(&m2.agent, &["run", huge.to_str().unwrap()]));
    let w = wait_state(&m1.agent, "huge", "pending");
    assert!(w["reason"].as_str().unwrap().contains("cpu"), "{w}");
    let ps = ok(&cli(&m1.agent, &["ps", "--state", "running", "--json"]));
    let running: Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(running.as_array().unwrap().len(), 2, "{running}");
    let site = near_d_site;
    let ps = ok(&cli(
        &m1.agent,
        &["ps", "--site", &site, "--state", "running", "--json"],
    ));
    let at_site: Value = serde_json::from_str(&ps).unwrap();
    assert!(
        at_site
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "near-d"),
        "{at_site}"
    );
}

fn running_copies(members: &[&Member]) -> usize {
    members
        .iter()
        .map(|m| {
            let text = http()
                .get(m.agent.url("/metrics"))
                .send()
                .and_then(|r| r.text())
                .unwrap_or_default();
            text.lines()
                .find(|l| l.starts_with("locus_workloads{state=\"running\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_killed_node_s_workload_runs_elsewhere_and_once_after_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let module = ticker(dir.path());
    let gossips: Vec<SocketAddr> = (1..=4)
        .map(|i| free_udp_on(&format!("127.0.8.{i}")))
        .collect();
    let seeds = [gossips[0], gossips[1]];
    let mut members: Vec<Member> = (1..=4)
        .map(|i| {
            let ip = format!("127.0.8.{i}");
            member_on(
                dir.path(),
                i,
                "lab",
                &seeds,
                gossips[i - 1],
                free_addr_on(&ip),
            )
        })
        .collect();
    wait_cluster(&members.iter().collect::<Vec<_>>(), 4);
    let spec = write(
        dir.path(),
        "svc.toml",
        &format!("name = \"svc\"\nsource = \"{}\"\n", module.display()),
    );
    ok(&cli(&members[0].agent, &["run", spec.to_str().unwrap()]));
    let w = wait_state(&members[0].agent, "svc", "running");
    let owner = node_name(&w);
    let victim = members.iter().position(|m| m.name == owner).unwrap();
    let witness = (victim + 1) % members.len();

    let t0 = Instant::now();
    members[victim].agent.signal(Signal::SIGKILL);
    let w = wait_until("svc runs on another node", Duration::from_secs(30), || {
        find(&members[witness].agent, "svc")
            .is_some_and(|w| w["state"] == "running" && w["node_name"] != owner.as_str())
    });
    let _ = w;
    println!(
        "failover: running elsewhere {:.2?} after SIGKILL",
        t0.elapsed()
    );
    let w = find(&members[witness].agent, "svc").unwrap();
    assert_eq!(w["epoch"], 2, "{w}");
    let history = inspect(&members[witness].agent, "svc")["history"].to_string();
    assert!(history.contains("adopted from node"), "{history}");

    // The victim comes back (same data dir and addresses): its stale copy
    // yields, exactly one copy runs in the cluster.
    let old = members.remove(victim);
    let (gossip, api) = (old.gossip, old.agent.addr);
    drop(old);
    let back = member_on(dir.path(), victim + 1, "lab", &seeds, gossip, api);
    members.insert(victim, back);
    let all: Vec<&Member> = members.iter().collect();
    wait_cluster(&all, 4);
    wait_until("exactly one copy runs", Duration::from_secs(30), || {
        running_copies(&all) == 1
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running_copies(&all), 1);
    for m in &members {
        let list = workloads(&m.agent);
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0]["epoch"], 2);
        assert_ne!(list[0]["node_name"], owner.as_str());
    }
}

fn containers_of(id: &str, all: bool) -> usize {
    let mut args = vec!["ps", "-q", "--filter"];
    let filter = format!("label=locus.workload={id}");
    args.push(&filter);
    if all {
        args.push("-a");
    }
    let out = std::process::Command::new("docker")
        .args(&args)
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_container_from_a_tarball_outlives_an_agent_crash_and_is_destroyed() {
    let tar = image_tarball();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let mut agent = Agent::start(&data, &[]);
    let spec = write(
        dir.path(),
        "c.toml",
        &format!(
            "name = \"box\"\nkind = \"container\"\nsource = \"{}\"\nargs = [\"sh\", \"-c\", \"echo hello from a container; exec /bin/busybox sleep 3600\"]\nfailover = \"stay\"\nstop_timeout_secs = 1\n[resources]\nmemory_mb = 32\ncpu_millicores = 250\n",
            tar.display()
        ),
    );
    ok(&cli(&agent, &["run", spec.to_str().unwrap()]));
    let w = wait_state(&agent, "box", "running");
    let id = w["id"].as_str().unwrap().to_owned();
    wait_until(
        "the container's output is in the log",
        Duration::from_secs(15),
        || ok(&cli(&agent, &["logs", "box"])).contains("hello from a container"),
    );
    assert_eq!(containers_of(&id, false), 1);

    // The agent dies; the container does not, and the next agent adopts it.
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));
    assert_eq!(containers_of(&id, false), 1);
    let addr = agent.addr;
    drop(agent);
    let agent = Agent::spawn(&data, addr, &[]);
    agent.wait_healthy();
    let w = wait_state(&agent, "box", "running");
    assert!(w["reason"].as_str().unwrap().contains("re-adopted"), "{w}");
    assert_eq!(containers_of(&id, false), 1);

    // Graceful stop, start again, then force destroy: nothing is left.
    ok(&cli(&agent, &["stop", "box"]));
    wait_state(&agent, "box", "stopped");
    assert_eq!(containers_of(&id, false), 0);
    ok(&cli(&agent, &["start", "box"]));
    wait_state(&agent, "box", "running");
    ok(&cli(&agent, &["rm", "--force", "box"]));
    wait_until("the container is removed", Duration::from_secs(20), || {
        containers_of(&id, true) == 0
    });
    assert!(workloads(&agent).is_empty());
}

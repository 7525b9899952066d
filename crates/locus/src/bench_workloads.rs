//! `locus bench workloads`: deploy latency per driver (submit → running, on
//! the submitting node and on another one), failover time (SIGKILL of the
//! owner → running elsewhere) and agent memory with ten Wasm workloads, on
//! real agents started from this very binary on loopback. Prints one JSON
//! object on stdout; progress goes to stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::WorkloadsBenchArgs;

/// A WASI service that sleeps in a loop (one 64 KiB page of memory).
const TICKER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l
      (i32.store8 (i32.const 208) (i32.const 0))
      (i32.store (i32.const 216) (i32.const 1))
      (i64.store (i32.const 224) (i64.const 1000000000))
      (drop (call $poll (i32.const 200) (i32.const 304) (i32.const 1) (i32.const 400)))
      (br $l))))"#;
/// Guest memory of one ticker instance.
const TICKER_GUEST_BYTES: u64 = 64 * 1024;
/// Longest wait for anything in one run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Poll period while waiting for a state.
const POLL: Duration = Duration::from_millis(2);

#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    pub(crate) runs: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) min_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) fn stats(mut samples: Vec<f64>) -> Stats {
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if samples.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    Stats {
        runs: samples.len(),
        p50_ms: pick(0.50),
        p95_ms: pick(0.95),
        p99_ms: pick(0.99),
        min_ms: samples.first().copied().unwrap_or(f64::NAN),
        max_ms: samples.last().copied().unwrap_or(f64::NAN),
    }
}

pub(crate) struct Member {
    pub(crate) child: Option<Child>,
    pub(crate) api: SocketAddr,
    gossip: SocketAddr,
    pub(crate) dir: PathBuf,
    site: String,
}

pub(crate) struct Cluster {
    exe: PathBuf,
    pub(crate) members: Vec<Member>,
    seeds: Vec<SocketAddr>,
    pub(crate) http: reqwest::blocking::Client,
    /// The join token of the nodes after the first.
    join: Option<String>,
    /// A configuration file for every agent.
    config: Option<PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn free_tcp(ip: &str) -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind(format!("{ip}:0"))?.local_addr()?)
}

fn free_udp(ip: &str) -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind(format!("{ip}:0"))?.local_addr()?)
}

impl Cluster {
    pub(crate) fn start(exe: &Path, root: &Path, n: usize) -> anyhow::Result<Cluster> {
        let mut members = Vec::new();
        for i in 0..n {
            let ip = format!("127.0.99.{}", i + 1);
            members.push(Member {
                child: None,
                api: free_tcp(&ip)?,
                gossip: free_udp(&ip)?,
                dir: root.join(format!("b{i}")),
                site: format!("s{i}"),
            });
        }
        let seeds = members.iter().take(2).map(|m| m.gossip).collect();
        let mut c = Cluster {
            exe: exe.to_owned(),
            members,
            seeds,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            join: None,
            config: None,
        };
        // The first node founds the org; the others join it with one
        // join token, and every call uses the first node's admin token.
        c.spawn(0)?;
        c.wait_healthy(0)?;
        c.http = crate::bench::admin_client(&c.members[0].dir, Some(Duration::from_secs(30)))?;
        if n > 1 {
            let made: Value = c
                .http
                .post(c.url(0, "/api/v1/org/join-tokens"))
                .json(&serde_json::json!({"uses": n - 1, "ttl_secs": 3600}))
                .send()?
                .error_for_status()?
                .json()?;
            c.join = made["token"].as_str().map(str::to_owned);
        }
        for i in 1..n {
            c.spawn(i)?;
        }
        for i in 1..n {
            c.wait_healthy(i)?;
        }
        c.wait_converged()?;
        Ok(c)
    }

    /// One agent that lets user calls through without a token
    /// (`[access] require_tokens = false`), for comparisons.
    pub(crate) fn start_open(exe: &Path, root: &Path) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(root)?;
        let config = root.join("open.toml");
        std::fs::write(&config, "[access]\nrequire_tokens = false\n")?;
        let mut c = Cluster {
            exe: exe.to_owned(),
            members: vec![Member {
                child: None,
                api: free_tcp("127.0.98.1")?,
                gossip: free_udp("127.0.98.1")?,
                dir: root.join("o0"),
                site: "open".to_owned(),
            }],
            seeds: Vec::new(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            join: None,
            config: Some(config),
        };
        c.spawn(0)?;
        c.wait_healthy(0)?;
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let log = std::fs::File::create(m.dir.with_extension("log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen", &m.api.to_string()])
            .args(["--gossip", &m.gossip.to_string()])
            .args(crate::bench::ANY_DEVICE_PORTS)
            .args(["--name", &format!("b{i}"), "--site", &m.site]);
        for s in self.seeds.iter().filter(|s| **s != m.gossip) {
            cmd.args(["--seed", &s.to_string()]);
        }
        if let Some(token) = &self.join
            && !m.dir.join("node.cert").exists()
        {
            cmd.args(["--join", token]);
        }
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .env(
                "LOCUS_LOG",
                "warn,locus_workloads=debug,locus_artifacts=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start an agent")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// The admin token every call uses.
    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.members[0].dir.join("admin.token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    }

    /// A client with the admin token and no overall deadline.
    pub(crate) fn long_http(&self) -> anyhow::Result<reqwest::blocking::Client> {
        crate::bench::admin_client(&self.members[0].dir, None)
    }

    pub(crate) fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.members[i].api)
    }

    pub(crate) fn get(&self, i: usize, path: &str) -> anyhow::Result<Value> {
        let r = self.http.get(self.url(i, path)).send()?;
        if !r.status().is_success() {
            bail!("GET {path} on b{i}: {}", r.status());
        }
        Ok(r.json()?)
    }

    fn wait_healthy(&self, i: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < RUN_TIMEOUT {
            if self
                .http
                .get(self.url(i, "/healthz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("agent b{i} never became healthy")
    }

    pub(crate) fn wait_converged(&self) -> anyhow::Result<()> {
        let n = self.members.len();
        let start = Instant::now();
        while start.elapsed() < RUN_TIMEOUT {
            let ok = (0..n).all(|i| {
                self.get(i, "/api/v1/nodes").is_ok_and(|v| {
                    v.as_array().is_some_and(|a| {
                        a.iter()
                            .filter(|x| {
                                x["liveness"] == "alive"
                                    && !x["info"].is_null()
                                    && !x["capacity"].is_null()
                            })
                            .count()
                            == n
                    })
                })
            });
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the cluster did not converge")
    }

    fn index_of(&self, node_id: &str) -> Option<usize> {
        (0..self.members.len()).find(|i| {
            self.get(*i, "/api/v1/node")
                .is_ok_and(|v| v["id"].as_str() == Some(node_id))
        })
    }

    fn submit(&self, i: usize, spec: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(self.url(i, "/api/v1/workloads"))
            .json(spec)
            .send()?;
        let status = r.status();
        let body: Value = r.json()?;
        if !status.is_success() {
            bail!("submit refused: {body}");
        }
        Ok(body)
    }

    fn remove(&self, i: usize, id: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(self.url(i, &format!("/api/v1/workloads/{id}?force=true")))
            .send()?;
        if !r.status().is_success() {
            bail!("remove {id}: {}", r.status());
        }
        Ok(())
    }

    fn running_copies(&self) -> usize {
        (0..self.members.len())
            .filter_map(|i| {
                let text = self
                    .http
                    .get(self.url(i, "/metrics"))
                    .send()
                    .ok()?
                    .text()
                    .ok()?;
                text.lines()
                    .find(|l| l.starts_with("locus_workloads{state=\"running\"}"))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<usize>().ok())
            })
            .sum()
    }
}

/// Submit on node `from` a workload placed at site of node `to`; time until
/// it runs (polling the owner directly).
fn deploy_once(c: &Cluster, from: usize, to: usize, spec: &Value) -> anyhow::Result<f64> {
    let mut spec = spec.clone();
    spec["placement"] = json!({ "site": c.members[to].site });
    let t0 = Instant::now();
    let body = c.submit(from, &spec)?;
    let id = body["workload"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no workload in {body}"))?
        .to_owned();
    let path = format!("/api/v1/workloads/{id}");
    loop {
        let w = c.get(to, &path).unwrap_or(Value::Null);
        match w["state"].as_str() {
            Some("running") => break,
            Some("failed") => bail!("the workload failed: {}", w["reason"]),
            _ => {}
        }
        if t0.elapsed() > RUN_TIMEOUT {
            bail!("the workload never ran");
        }
        std::thread::sleep(POLL);
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    c.remove(to, &id)?;
    Ok(ms)
}

#[derive(Debug, Serialize)]
struct Deploy {
    local: Stats,
    remote: Stats,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    version: &'static str,
    release_build: bool,
    agents: usize,
    deploy: serde_json::Map<String, Value>,
    failover: Option<Stats>,
    failover_samples_ms: Vec<f64>,
    /// Running on its node → its spec held by another node.
    spec_replication: Option<Stats>,
    memory: Option<Memory>,
}

#[derive(Debug, Serialize)]
struct Memory {
    workloads: usize,
    idle_rss_bytes: u64,
    rss_bytes: u64,
    guest_bytes: u64,
    rss_without_guests_mb: f64,
}

pub(crate) fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no VmRSS"))
}

pub fn workloads(args: &WorkloadsBenchArgs) -> anyhow::Result<()> {
    in_scratch_dir(&std::env::temp_dir(), |root| run(args, root))
}

/// [`in_scratch_dir`] for a part that answers a value.
pub(crate) fn in_scratch_value(
    f: impl FnOnce(&Path) -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    let mut out = Value::Null;
    in_scratch_dir(&std::env::temp_dir(), |root| {
        out = f(root)?;
        Ok(())
    })?;
    Ok(out)
}

/// Run `f` in a fresh directory under `parent`, removed afterwards unless
/// `f` fails: then the agents' logs are kept for the post-mortem.
pub(crate) fn in_scratch_dir(
    parent: &Path,
    f: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let root = tempfile::tempdir_in(parent)?;
    let path = root.path().to_owned();
    let result = f(&path);
    if result.is_err() {
        let _ = root.keep();
        eprintln!("agent logs kept under {}", path.display());
    }
    result
}

fn run(args: &WorkloadsBenchArgs, root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let ticker = root.join("ticker.wat");
    std::fs::write(&ticker, TICKER)?;
    eprintln!("starting {} agents…", args.agents);
    let mut c = Cluster::start(&exe, root, usize::from(args.agents.max(2)))?;

    let mut deploy = serde_json::Map::new();
    for driver in &args.drivers {
        let spec = match driver.as_str() {
            "wasm" => {
                json!({ "name": "x", "kind": "wasm", "source": ticker, "failover": "stay", "restart": "never" })
            }
            "process" => {
                json!({ "name": "x", "kind": "process", "source": "/bin/sleep", "args": ["3600"], "failover": "stay", "restart": "never" })
            }
            "container" => {
                json!({ "name": "x", "kind": "container", "source": args.image, "args": ["sleep", "3600"], "failover": "stay", "restart": "never", "stop_timeout_secs": 0 })
            }
            other => bail!("unknown driver {other:?}; expected wasm, process or container"),
        };
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for k in 0..args.runs {
            for (to, out) in [(0, &mut local), (1, &mut remote)] {
                let mut s = spec.clone();
                s["name"] = json!(format!("d-{driver}-{to}-{k}"));
                out.push(deploy_once(&c, 0, to, &s).with_context(|| format!("{driver} run {k}"))?);
            }
            if (k + 1) % 10 == 0 {
                eprintln!("  {driver}: {} of {} runs", k + 1, args.runs);
            }
        }
        deploy.insert(
            driver.clone(),
            serde_json::to_value(Deploy {
                local: stats(local),
                remote: stats(remote),
            })?,
        );
    }

    let mut failover_samples = Vec::new();
    let mut replication_samples = Vec::new();
    for k in 0..args.failover_runs {
        let spec = json!({ "name": format!("fo-{k}"), "source": ticker, "failover": "reschedule" });
        let body = c.submit(0, &spec)?;
        let id = body["workload"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let owner = body["workload"]["owner"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let victim = c
            .index_of(&owner)
            .ok_or_else(|| anyhow!("owner {owner} is not a bench agent"))?;
        let path = format!("/api/v1/workloads/{id}");
        let start = Instant::now();
        while !c.get(victim, &path).is_ok_and(|w| w["state"] == "running") {
            if start.elapsed() > RUN_TIMEOUT {
                bail!("failover run {k}: the workload never ran");
            }
            std::thread::sleep(POLL);
        }
        let witness = (victim + 1) % c.members.len();
        // The cluster must hold the workload's spec before its node dies (a
        // node that dies before its records spread takes them along until it
        // returns); how long that takes is reported too.
        let seen = Instant::now();
        while !c.get(witness, "/api/v1/workloads").is_ok_and(|l| {
            l.as_array().is_some_and(|a| {
                a.iter().any(|w| {
                    w["id"] == id.as_str() && w["state"] == "running" && w["failover_ready"] == true
                })
            })
        }) {
            if seen.elapsed() > RUN_TIMEOUT {
                bail!("failover run {k}: the workload never reached node b{witness}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        replication_samples.push(seen.elapsed().as_secs_f64() * 1000.0);
        let pid = c.members[victim]
            .child
            .as_ref()
            .map(|ch| ch.id())
            .ok_or_else(|| anyhow!("no process"))?;
        let t0 = Instant::now();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
        loop {
            let list = c.get(witness, "/api/v1/workloads").unwrap_or(Value::Null);
            let moved = list.as_array().is_some_and(|a| {
                a.iter().any(|w| {
                    w["id"] == id.as_str()
                        && w["state"] == "running"
                        && w["owner"] != owner.as_str()
                })
            });
            if moved {
                break;
            }
            if t0.elapsed() > RUN_TIMEOUT {
                bail!("failover run {k}: the workload did not move: {list}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        failover_samples.push(ms);
        eprintln!("  failover {}/{}: {ms:.0} ms", k + 1, args.failover_runs);
        if let Some(mut ch) = c.members[victim].child.take() {
            let _ = ch.wait();
        }
        c.spawn(victim)?;
        c.wait_healthy(victim)?;
        c.wait_converged()?;
        let settle = Instant::now();
        while c.running_copies() != 1 {
            if settle.elapsed() > RUN_TIMEOUT {
                let views: Vec<String> = (0..c.members.len())
                    .map(|i| {
                        format!(
                            "b{i}: {}",
                            c.get(i, "/api/v1/workloads").unwrap_or(Value::Null)
                        )
                    })
                    .collect();
                bail!(
                    "failover run {k}: {} running copies after the return (victim b{victim}):\n{}",
                    c.running_copies(),
                    views.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.remove(witness, &id)?;
    }

    let memory = if args.memory_workloads > 0 {
        let pid = c.members[0]
            .child
            .as_ref()
            .map(|ch| ch.id())
            .ok_or_else(|| anyhow!("no process"))?;
        std::thread::sleep(Duration::from_secs(2));
        let idle = rss(pid)?;
        for k in 0..args.memory_workloads {
            let spec = json!({ "name": format!("m-{k}"), "source": ticker, "failover": "stay",
                               "placement": { "site": c.members[0].site }, "resources": { "cpu_millicores": 10 } });
            let body = c.submit(0, &spec)?;
            let id = body["workload"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let start = Instant::now();
            while !c
                .get(0, &format!("/api/v1/workloads/{id}"))
                .is_ok_and(|w| w["state"] == "running")
            {
                if start.elapsed() > RUN_TIMEOUT {
                    bail!("memory run: workload {k} never ran");
                }
                std::thread::sleep(POLL);
            }
        }
        std::thread::sleep(Duration::from_secs(5));
        let with = rss(pid)?;
        let guest = TICKER_GUEST_BYTES * args.memory_workloads as u64;
        Some(Memory {
            workloads: args.memory_workloads,
            idle_rss_bytes: idle,
            rss_bytes: with,
            guest_bytes: guest,
            rss_without_guests_mb: with.saturating_sub(guest) as f64 / 1e6,
        })
    } else {
        None
    };

    let report = Report {
        benchmark: "workloads",
        version: locus_core::VERSION,
        release_build: !cfg!(debug_assertions),
        agents: c.members.len(),
        deploy,
        failover: (!failover_samples.is_empty()).then(|| stats(failover_samples.clone())),
        failover_samples_ms: failover_samples,
        spec_replication: (!replication_samples.is_empty()).then(|| stats(replication_samples)),
        memory,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

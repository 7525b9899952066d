//! `locus bench seal`: what a long seal log costs an agent. For each log
//! length N (and a baseline of 0), a fresh data dir is given N sealed
//! readings written straight into its store (`locus_readings::bulk`: the
//! rows, leaves and block roots ingest would write, in large transactions,
//! with checkpoints signed by the node's key at N/2 + 37 and N); then a
//! real `locus agent` is started on it and timed from spawn to a healthy
//! `/healthz`, left idle and its memory read from `/proc/PID/status`, and
//! asked for an inclusion and a consistency proof, which are verified here
//! against the signed checkpoints. The agent is SIGKILLed and started
//! again, and the same proofs must come back byte for byte; with
//! `--upgrade`, the block roots are then deleted (a store from before they
//! were kept) and the one-time upgrade at start is measured the same way;
//! with `--compare-with`, another locus binary (a build from before block
//! roots) is started on the log, turned back into its schema, and must
//! serve the same proofs.
//! Prints one JSON object on stdout (one entry per N and a summary against
//! the targets); progress goes to stderr.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use locus_iot::merkle::{self, Hash};
use locus_iot::seal::Sealed;
use locus_iot::{Reading, checkpoint};
use locus_readings::bulk;
use locus_store::Store;
use serde_json::{Value, json};

use crate::bench::{ANY_DEVICE_PORTS, healthy, rss_split};
use crate::bench_workloads::{in_scratch_dir, rss};
use crate::cli::SealBenchArgs;

/// Longest wait for an agent on a log with its block roots to be healthy.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for an agent that first computes every block root.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest wait for one HTTP answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// The RSS growth from 0 to the longest log the design aims at, MB.
const TARGET_RSS_GROWTH_MB: f64 = 16.0;
/// The start time at the longest log the design aims at, ms.
const TARGET_START_MS: f64 = 1000.0;

pub fn seal(args: &SealBenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    in_scratch_dir(&args.dir, |root| run(args, root))
}

fn run(args: &SealBenchArgs, root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut sizes = vec![0];
    sizes.extend(args.readings.iter().copied().filter(|n| *n > 0));
    let mut runs = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let dir = root.join(format!("n{i}-{n}"));
        let run = one_size(args, &exe, &dir, n).with_context(|| format!("log of {n} readings"))?;
        eprintln!("{n} readings: {run}");
        runs.push(run);
        // One log on disk at a time (10⁷ readings are gigabytes).
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let summary = summary(&runs);
    let out = json!({
        "benchmark": "seal",
        "version": locus_core::VERSION,
        "release_build": !cfg!(debug_assertions),
        "idle_secs": args.idle_secs,
        "per_transaction": args.per_transaction,
        "runs": runs,
        "summary": summary,
    });
    crate::bench::emit(&out, args.out.as_deref())
}

/// The sizes of the checkpoints signed in a log of `n` readings, and the
/// seq whose inclusion is asked for.
fn marks(n: u64) -> (Option<u64>, u64) {
    let mid = (n >= 2).then(|| (n / 2 + 37).min(n - 1));
    (mid, (n / 3 + 11).min(n.saturating_sub(1)))
}

fn one_size(args: &SealBenchArgs, exe: &Path, dir: &Path, n: u64) -> anyhow::Result<Value> {
    eprintln!("sealing {n} readings into {} …", dir.display());
    let generated = generate(dir, n, args.per_transaction)?;
    let log = dir.with_extension("log");
    let mut starts = Vec::new();

    let (first, agent) = measure(exe, dir, &log, n, args.idle_secs, START_TIMEOUT)?;
    agent.kill()?;
    let bodies = first.bodies.clone();
    starts.push(first.report("first", None));

    let (again, agent) = measure(exe, dir, &log, n, args.idle_secs, START_TIMEOUT)?;
    agent.kill()?;
    let same = again.bodies == bodies;
    ensure!(same, "the proofs after a SIGKILL and restart differ");
    starts.push(again.report("after_sigkill", Some(same)));

    if args.upgrade {
        let rows = forget_block_roots(dir)?;
        eprintln!("deleted {rows} block roots; starting on leaves alone …");
        let (upgraded, agent) = measure(exe, dir, &log, n, args.idle_secs, UPGRADE_TIMEOUT)?;
        agent.kill()?;
        let same = upgraded.bodies == bodies;
        ensure!(same, "the proofs after the upgrade differ");
        ensure!(
            block_roots(dir)? == rows,
            "the upgrade did not store every block root"
        );
        starts.push(upgraded.report("upgrade_from_leaves", Some(same)));
    }
    if let Some(other) = &args.compare_with {
        downgrade(dir)?;
        eprintln!("starting {} on the same log …", other.display());
        let (theirs, agent) = measure(other, dir, &log, n, args.idle_secs, UPGRADE_TIMEOUT)?;
        agent.kill()?;
        let same = theirs.bodies == bodies;
        ensure!(same, "the other binary's proofs differ");
        starts.push(theirs.report("other_binary", Some(same)));
    }
    Ok(json!({
        "readings": n,
        "block_roots": n / locus_iot::merkle::BLOCK_LEAVES,
        "generate": generated,
        "starts": starts,
    }))
}

/// Fill a fresh data dir with `n` sealed readings, as its node would have
/// written them.
fn generate(dir: &Path, n: u64, per_transaction: u64) -> anyhow::Result<Value> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let (key, _) = locus_trust::identity::load_or_create(dir)?;
    let node = locus_core::NodeId::from_public_key(&key.verifying_key());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let t = Instant::now();
    runtime.block_on(async {
        let store = Store::open(dir)?;
        store.bind_node(node).await?;
        let (mid, _) = marks(n);
        let notes =
            bulk::seal_synthetic(store.clone(), &key, n, mid.as_slice(), per_transaction).await?;
        ensure!(
            notes.len() == usize::from(mid.is_some()) + usize::from(n > 0),
            "{} checkpoints signed",
            notes.len()
        );
        store.close().await?;
        anyhow::Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    let db: u64 = ["locus.db", "locus.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Ok(json!({
        "secs": round(secs, 2),
        "readings_per_s": round(n as f64 / secs.max(1e-9), 0),
        "db_mb": round(db as f64 / 1e6, 1),
        "db_bytes_per_reading": if n > 0 { round(db as f64 / n as f64, 1) } else { 0.0 },
    }))
}

/// Delete every block root, as a store written before they were kept;
/// returns how many there were.
fn forget_block_roots(dir: &Path) -> anyhow::Result<u64> {
    block_roots_then(dir, true)
}

/// How many block roots the store of `dir` holds.
fn block_roots(dir: &Path) -> anyhow::Result<u64> {
    block_roots_then(dir, false)
}

/// Count the block roots of the store of `dir` (no agent running on it),
/// and delete them if asked.
fn block_roots_then(dir: &Path, delete: bool) -> anyhow::Result<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::open(dir)?;
        let n = store
            .call(move |c| {
                let n: i64 = c.query_row("SELECT COUNT(*) FROM seal_blocks", [], |r| r.get(0))?;
                if delete {
                    c.execute("DELETE FROM seal_blocks", [])?;
                }
                Ok(n as u64)
            })
            .await?;
        store.close().await?;
        Ok(n)
    })
}

/// Turn the store of `dir` back into the schema before block roots were
/// stored, for a binary of that time.
fn downgrade(dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::open(dir)?;
        let sql = format!(
            "DROP TABLE seal_blocks; PRAGMA user_version = {};",
            locus_store::SCHEMA_VERSION - 1
        );
        store
            .call(move |c| {
                c.execute_batch(&sql)?;
                Ok(())
            })
            .await?;
        store.close().await?;
        anyhow::Ok(())
    })
}

/// An agent child process, SIGKILLed and reaped on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One start of an agent on a data dir.
struct Start {
    start_ms: f64,
    rss: u64,
    anon: u64,
    file: u64,
    peak: u64,
    inclusion_ms: Option<f64>,
    consistency_ms: Option<f64>,
    /// The proof answers, as served.
    bodies: Vec<String>,
}

impl Start {
    fn report(&self, kind: &str, identical: Option<bool>) -> Value {
        let mb = |b: u64| round(b as f64 / 1e6, 2);
        json!({
            "kind": kind,
            "start_ms": round(self.start_ms, 1),
            "idle_rss_mb": mb(self.rss),
            "idle_rss_anon_mb": mb(self.anon),
            "idle_rss_file_mb": mb(self.file),
            "peak_rss_mb": mb(self.peak),
            "inclusion_ms": self.inclusion_ms.map(|v| round(v, 2)),
            "consistency_ms": self.consistency_ms.map(|v| round(v, 2)),
            "proofs_verified": !self.bodies.is_empty(),
            "proofs_identical_to_first": identical,
        })
    }
}

/// Start an agent on `dir`, time it to healthy, leave it idle, read its
/// memory, fetch and verify the proofs. Returns the agent, still running.
fn measure(
    exe: &Path,
    dir: &Path,
    log: &Path,
    n: u64,
    idle_secs: u64,
    timeout: Duration,
) -> anyhow::Result<(Start, Agent)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port")?;
    let gossip = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .context("cannot find a free UDP port")?;
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let t = Instant::now();
    let child = Command::new(exe)
        .args(["agent", "--listen", &addr.to_string()])
        .args(["--gossip", &gossip.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args(ANY_DEVICE_PORTS)
        .env("LOCUS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("cannot start the agent")?;
    let mut agent = Agent { child };
    loop {
        if healthy(addr) {
            break;
        }
        if let Some(status) = agent.child.try_wait()? {
            bail!(
                "the agent exited with {status} before it was healthy; see {}",
                log.display()
            );
        }
        if t.elapsed() > timeout {
            bail!("the agent was not healthy after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let start_ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!("  healthy after {start_ms:.1} ms; idle for {idle_secs} s …");
    std::thread::sleep(Duration::from_secs(idle_secs));
    let pid = agent.child.id();
    let rss = rss(pid)?;
    let (anon, file) = rss_split(pid)?;
    let peak = peak_rss(pid)?;
    let mut start = Start {
        start_ms,
        rss,
        anon,
        file,
        peak,
        inclusion_ms: None,
        consistency_ms: None,
        bodies: Vec::new(),
    };
    if n > 0 {
        let http = crate::bench::admin_client(dir, Some(HTTP_TIMEOUT))?;
        prove(&http, addr, n, &mut start)?;
    }
    Ok((start, agent))
}

/// VmHWM of `pid`: the most it was ever resident, in bytes.
fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no VmHWM"))
}

fn get(http: &reqwest::blocking::Client, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let r = http.get(format!("http://{addr}{path}")).send()?;
    let status = r.status();
    let body = r.text()?;
    ensure!(status.is_success(), "GET {path}: {status}: {body}");
    Ok(body)
}

fn unhex(v: &Value) -> anyhow::Result<Hash> {
    let s = v.as_str().ok_or_else(|| anyhow!("not a hex string: {v}"))?;
    ensure!(s.len() == 64, "not a 32-byte hex hash: {s}");
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

fn unhex_all(v: &Value) -> anyhow::Result<Vec<Hash>> {
    v.as_array()
        .ok_or_else(|| anyhow!("not a list of hashes: {v}"))?
        .iter()
        .map(unhex)
        .collect()
}

/// Fetch the inclusion proof of the chosen seq and the consistency proof
/// between the two signed checkpoints, and verify both here against the
/// checkpoints, opened with the node's verifier key.
fn prove(
    http: &reqwest::blocking::Client,
    addr: SocketAddr,
    n: u64,
    start: &mut Start,
) -> anyhow::Result<()> {
    let (mid, seq) = marks(n);
    let cp: Value = serde_json::from_str(&get(http, addr, "/api/v1/readings/checkpoint")?)?;
    ensure!(
        cp["log_size"] == n,
        "the agent's log holds {}",
        cp["log_size"]
    );
    let vkey = cp["verifier_key"]
        .as_str()
        .ok_or_else(|| anyhow!("no verifier key"))?;
    let (name, key) = checkpoint::parse_verifier_key(vkey)?;
    let open = |note: &Value| -> anyhow::Result<checkpoint::Checkpoint> {
        let note = note
            .as_str()
            .ok_or_else(|| anyhow!("no signed checkpoint"))?;
        Ok(checkpoint::open(note, &name, &key)?)
    };

    let t = Instant::now();
    let body = get(
        http,
        addr,
        &format!("/api/v1/readings/{seq}/proof?size={n}"),
    )?;
    start.inclusion_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    let p: Value = serde_json::from_str(&body)?;
    let tree = open(&p["checkpoint"])?;
    ensure!(
        tree.size == n,
        "the checkpoint of the proof has size {}",
        tree.size
    );
    let reading: Reading = serde_json::from_value(p["reading"].clone())?;
    ensure!(
        reading == bulk::synthetic_reading(seq)?,
        "seq {seq} holds another reading"
    );
    let leaf = Sealed { seq, reading }.leaf_hash();
    ensure!(
        unhex(&p["leaf_hash"])? == leaf,
        "the leaf hash of seq {seq} differs"
    );
    merkle::verify_inclusion(&leaf, seq, n, &unhex_all(&p["proof"])?, &tree.root)
        .with_context(|| format!("inclusion of seq {seq} in {n}"))?;
    start.bodies.push(body);

    if let Some(mid) = mid {
        let t = Instant::now();
        let body = get(
            http,
            addr,
            &format!("/api/v1/readings/consistency?from={mid}&to={n}"),
        )?;
        start.consistency_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
        let c: Value = serde_json::from_str(&body)?;
        let old = open(&c["from_checkpoint"])?;
        let new = open(&c["to_checkpoint"])?;
        merkle::verify_consistency(mid, n, &old.root, &new.root, &unhex_all(&c["proof"])?)
            .with_context(|| format!("consistency from {mid} to {n}"))?;
        start.bodies.push(body);
    }
    Ok(())
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Memory growth and start time from the baseline to the longest log,
/// against the targets.
fn summary(runs: &[Value]) -> Value {
    let first = |run: &Value, key: &str| run["starts"][0][key].as_f64().unwrap_or(f64::NAN);
    let (Some(base), Some(last)) = (runs.first(), runs.last()) else {
        return json!({});
    };
    let growth = first(last, "idle_rss_mb") - first(base, "idle_rss_mb");
    let growth_anon = first(last, "idle_rss_anon_mb") - first(base, "idle_rss_anon_mb");
    // The slower of the two starts on the longest log (with block roots).
    let start_ms = last["starts"]
        .as_array()
        .map(|s| {
            s.iter()
                .take(2)
                .filter_map(|s| s["start_ms"].as_f64())
                .fold(0.0, f64::max)
        })
        .unwrap_or(f64::NAN);
    json!({
        "from_readings": base["readings"],
        "to_readings": last["readings"],
        "idle_rss_growth_mb": round(growth, 2),
        "idle_rss_anon_growth_mb": round(growth_anon, 2),
        "target_rss_growth_mb": TARGET_RSS_GROWTH_MB,
        "rss_growth_within_target": growth <= TARGET_RSS_GROWTH_MB,
        "baseline_start_ms": base["starts"][0]["start_ms"],
        "start_ms": round(start_ms, 1),
        "target_start_ms": TARGET_START_MS,
        "start_within_target": start_ms <= TARGET_START_MS,
    })
}

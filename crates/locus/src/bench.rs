//! `locus bench footprint`: how light is the agent? Starts this very binary
//! as an agent on fresh data dirs, times start-up to a healthy `/healthz`,
//! then leaves one agent idle and reads its memory and CPU from /proc.
//! Prints one JSON object on stdout; progress goes to stderr.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Device servers on free ports, so that benchmark agents never compete
/// for 1883 or 5683.
pub(crate) const ANY_DEVICE_PORTS: [&str; 10] = [
    "--mqtt",
    "127.0.0.1:0",
    "--lwm2m",
    "127.0.0.1:0",
    "--lwm2m-bootstrap",
    "127.0.0.1:0",
    "--lwm2m-dtls",
    "127.0.0.1:0",
    "--lwm2m-bootstrap-dtls",
    "127.0.0.1:0",
];

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use crate::cli::FootprintArgs;

/// Longest wait for one agent to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize)]
struct Footprint {
    benchmark: &'static str,
    version: &'static str,
    release_build: bool,
    binary_bytes: u64,
    runs: u32,
    startup_ms: Summary,
    idle_secs: u64,
    idle_rss_bytes: u64,
    idle_rss_mb: f64,
    /// Anonymous resident memory (heap, stacks): what the agent itself holds.
    idle_rss_anon_mb: f64,
    /// File-backed resident pages (the binary's code, shared and
    /// reclaimable).
    idle_rss_file_mb: f64,
    idle_cpu_percent: f64,
    /// One clock tick over the idle window: the smallest non-zero reading.
    idle_cpu_resolution_percent: f64,
    idle_cpu_ms: f64,
    threads: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    min: f64,
    p50: f64,
    max: f64,
    samples: Vec<f64>,
}

/// An agent child process, killed and reaped on drop.
struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn footprint(args: &FootprintArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let binary_bytes = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0);
    let mut samples = Vec::new();
    let mut last = None;
    for run in 1..=args.runs {
        let (agent, ms) = start_agent(&exe)?;
        eprintln!("start-up {run}/{}: {ms:.1} ms", args.runs);
        samples.push((ms * 100.0).round() / 100.0);
        last = Some(agent);
    }
    let agent = last.ok_or_else(|| anyhow!("no run"))?;
    let pid = agent.child.id();
    eprintln!("idle for {} s …", args.idle_secs);
    let ticks_before = cpu_ticks(pid)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let ticks = cpu_ticks(pid)?.saturating_sub(ticks_before);
    let wall = t.elapsed().as_secs_f64();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let percent = |ticks: f64| (ticks / hz / wall * 100.0 * 10_000.0).round() / 10_000.0;
    let (rss, threads) = rss_and_threads(pid)?;
    let (anon, file) = rss_split(pid)?;

    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let report = Footprint {
        benchmark: "footprint",
        version: locus_core::VERSION,
        release_build: !cfg!(debug_assertions),
        binary_bytes,
        runs: args.runs,
        startup_ms: Summary {
            min: sorted[0],
            p50: sorted[sorted.len() / 2],
            max: sorted[sorted.len() - 1],
            samples,
        },
        idle_secs: args.idle_secs,
        idle_rss_bytes: rss,
        idle_rss_mb: (rss as f64 / 1e6 * 10.0).round() / 10.0,
        idle_rss_anon_mb: (anon as f64 / 1e6 * 10.0).round() / 10.0,
        idle_rss_file_mb: (file as f64 / 1e6 * 10.0).round() / 10.0,
        idle_cpu_percent: percent(ticks as f64),
        idle_cpu_resolution_percent: percent(1.0),
        idle_cpu_ms: ticks as f64 / hz * 1000.0,
        threads,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Print a report as pretty JSON on stdout and, when asked, into `out`.
pub(crate) fn emit(
    report: &impl serde::Serialize,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Start an agent on a fresh data dir and a free port; return it with the
/// milliseconds from spawn to the first healthy `/healthz`.
fn start_agent(exe: &std::path::Path) -> anyhow::Result<(Agent, f64)> {
    let dir = tempfile::tempdir().context("cannot make a temp data dir")?;
    let addr = free_port()?;
    let gossip = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .context("cannot find a free UDP port")?;
    let start = Instant::now();
    let child = Command::new(exe)
        .args([
            "agent",
            "--listen",
            &addr.to_string(),
            "--gossip",
            &gossip.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(ANY_DEVICE_PORTS)
        .env("LOCUS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the agent")?;
    let mut agent = Agent { child, _dir: dir };
    loop {
        if healthy(addr) {
            return Ok((agent, start.elapsed().as_secs_f64() * 1000.0));
        }
        if let Some(status) = agent.child.try_wait()? {
            bail!("the agent exited with {status} before it was healthy");
        }
        if start.elapsed() > START_TIMEOUT {
            bail!("the agent was not healthy after {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?)
}

/// One plain HTTP/1.1 GET of /healthz; true on a 200.
pub(crate) fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// utime + stime of `pid`, in clock ticks. Unlike per-thread counters it
/// keeps the time of threads that have exited (the blocking pool comes and
/// goes), at the price of a coarse unit.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("bad /proc/PID/stat field {i}"))
    };
    // utime and stime are fields 14 and 15 of stat: indices 11 and 12 after ')'.
    Ok(field(11)? + field(12)?)
}

/// RssAnon and RssFile of `pid`, in bytes.
pub(crate) fn rss_split(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/PID/status")?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((kib("RssAnon:") * 1024, kib("RssFile:") * 1024))
}

fn rss_and_threads(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/PID/status")?;
    let value = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {key} in /proc/PID/status"))
    };
    Ok((value("VmRSS:")? * 1024, value("Threads:")?))
}

/// A client that calls with the local admin token an agent made in
/// `data_dir`; `timeout` is the whole call's (`None`: no deadline).
pub(crate) fn admin_client(
    data_dir: &std::path::Path,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<reqwest::blocking::Client> {
    let token = std::fs::read_to_string(data_dir.join("admin.token"))
        .with_context(|| format!("no admin token in {}", data_dir.display()))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))?,
    );
    Ok(reqwest::blocking::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .build()?)
}

//! # locus-testkit
//!
//! The test harness every crate's tests share: start the real `locus`
//! binary as an agent on a free loopback port and a fresh data dir, drive
//! it with a real HTTP client and the CLI, form clusters of agents on
//! 127.0.7.x, read metrics, and SIGKILL an agent under load to check that
//! every acknowledged write survived.
//!
//! Owns: nothing of the product; it is a dev-dependency only.
//! Must never: be a dependency of a crate that ships in the binary, or
//! reach any address outside the loopback range.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The `locus` binary under test: `$LOCUS_BIN`, else `locus` next to the
/// test executable's `deps/` folder (where cargo builds it for the tests of
/// the `locus` package).
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LOCUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = dir.join("locus");
    assert!(
        bin.exists(),
        "{} is not built: run the tests of the locus package, or set LOCUS_BIN",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback address `ip` (bound then released; the
/// agent binds it next).
pub fn free_addr_on(ip: &str) -> SocketAddr {
    let l = TcpListener::bind(format!("{ip}:0")).expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

/// A free TCP port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    free_addr_on("127.0.0.1")
}

/// A free UDP port on loopback address `ip`, for gossip.
pub fn free_udp_on(ip: &str) -> SocketAddr {
    let s = std::net::UdpSocket::bind(format!("{ip}:0")).expect("bind udp");
    s.local_addr().expect("local addr")
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_addr() -> SocketAddr {
    free_udp_on("127.0.0.1")
}

/// A running agent, killed on drop. Its stderr goes to a file in the test
/// dir so that a failing test can show it.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Start an agent on `data_dir` and wait until `/healthz` is 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Agent {
        let agent = Agent::spawn(data_dir, free_addr(), extra);
        agent.wait_healthy();
        agent
    }

    /// Start an agent without waiting.
    pub fn spawn(data_dir: &Path, addr: SocketAddr, extra: &[&str]) -> Agent {
        let log = data_dir.with_extension(format!("{}.log", addr.port()));
        let stderr = std::fs::File::create(&log).expect("create log file");
        let mut cmd = Command::new(bin());
        cmd.args(["agent", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir);
        if !extra.contains(&"--gossip") {
            cmd.args(["--gossip", &free_udp_addr().to_string()]);
        }
        any_device_ports(&mut cmd, extra);
        let child = cmd
            .args(extra)
            .env("LOCUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn locus agent");
        Agent {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    /// The local admin token in the agent's data dir (a member that joined
    /// a cluster holds a copy of its founder's).
    pub fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    /// A client that calls with this agent's admin token (or, for an
    /// agent that has none, the test's).
    pub fn http(&self) -> reqwest::blocking::Client {
        client_with(self.token().or_else(test_token))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = http();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/healthz")).send()
                && r.status().is_success()
            {
                if let Some(token) = self.token() {
                    TOKEN.with(|t| {
                        t.borrow_mut().get_or_insert(token);
                    });
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "agent on {} never became healthy; log:\n{}",
            self.addr,
            self.logs()
        );
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Wait for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
    }
}

/// Kills every process whose command line holds its marker when dropped,
/// even when the test fails: a process workload outlives its agent (a
/// SIGKILL of the agent leaves it running), and a test's workloads must
/// not outlive the test.
pub struct KillMarked(pub String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.0])
            .status();
    }
}

/// Lines of an agent's log a failing test shows.
const LOG_TAIL: usize = 60;

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that failed shows what each of its agents said last: on
        // a loaded CI machine this is the only trace of why.
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- last {} lines of the agent on {} ({}) ---\n{}",
                tail.len(),
                self.addr,
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

thread_local! {
    /// The admin token of the first agent this test thread saw healthy:
    /// [`http`] calls with it, so that a test of one org needs no other
    /// step (a test that calls without a token uses [`anonymous`]).
    static TOKEN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The token [`http`] calls with in this test thread.
pub fn test_token() -> Option<String> {
    TOKEN.with(|t| t.borrow().clone())
}

/// A client calling with the token of this test's first agent.
pub fn http() -> reqwest::blocking::Client {
    client_with(test_token())
}

/// A client with no token.
pub fn anonymous() -> reqwest::blocking::Client {
    client_with(None)
}

/// Make ring the TLS provider of this test process, as `locus` does at
/// start; every HTTP client needs one. Call before building a client of
/// your own.
pub fn tls_ready() {
    locus_trust::tls::install_default_provider();
}

/// A blocking HTTP client builder, with the TLS provider ready.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    tls_ready();
    reqwest::blocking::Client::builder()
}

fn client_with(token: Option<String>) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token
        && let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
    {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    client_builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

pub fn get_json(agent: &Agent, path: &str) -> serde_json::Value {
    let r = agent.http().get(agent.url(path)).send().expect("GET");
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().expect("JSON body")
}

/// The node that manages `thing`, as `m` sees it (`None` while `m` does
/// not answer or does not know the thing).
pub fn manager_of(m: &Member, thing: &str) -> Option<String> {
    let r = m
        .agent
        .http()
        .get(m.agent.url(&format!("/api/v1/things/{thing}")))
        .send()
        .ok()?;
    let v: serde_json::Value = r.json().ok()?;
    v["manager"].as_str().map(str::to_owned)
}

/// Run the CLI to completion (with this test's token, if an agent made
/// one).
pub fn locus(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    if let Some(token) = test_token() {
        cmd.env("LOCUS_TOKEN", token);
    }
    cmd.args(args)
        .env_remove("LOCUS_API")
        .stdin(Stdio::null())
        .output()
        .expect("run locus")
}

/// Device servers (MQTT, LwM2M) on free ports unless the test names them,
/// so that agents of parallel tests never compete for 1883 or 5683.
pub fn any_device_ports(cmd: &mut Command, extra: &[&str]) {
    for flag in [
        "--mqtt",
        "--lwm2m",
        "--lwm2m-bootstrap",
        "--lwm2m-dtls",
        "--lwm2m-bootstrap-dtls",
    ] {
        if !extra.contains(&flag) {
            cmd.args([flag, "127.0.0.1:0"]);
        }
    }
}

/// Run `locus agent` expecting it to fail at start; returns (exit code, stderr).
pub fn agent_fails(data_dir: &Path, extra: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--data-dir"]).arg(data_dir);
    if !extra.contains(&"--gossip") {
        cmd.args(["--gossip", &free_udp_addr().to_string()]);
    }
    any_device_ports(&mut cmd, extra);
    cmd.args(extra);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn locus agent");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("agent kept running although it should have failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run the CLI against `agent`; it finds the admin token in the agent's
/// data dir by itself, as on the agent's machine.
pub fn cli(agent: &Agent, args: &[&str]) -> std::process::Output {
    let api = agent.api();
    let mut v: Vec<&str> = vec!["--api", &api];
    v.extend_from_slice(args);
    Command::new(bin())
        .args(&v)
        .env_remove("LOCUS_API")
        .env_remove("LOCUS_TOKEN")
        .env("LOCUS_DATA_DIR", &agent.data_dir)
        .env("LOCUS_LOGIN_FILE", agent.data_dir.join("no-login.json"))
        .stdin(Stdio::null())
        .output()
        .expect("run locus")
}

pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting until {what}");
}

pub struct Member {
    pub agent: Agent,
    pub gossip: SocketAddr,
    pub name: String,
}

pub fn member(dir: &Path, i: usize, site: &str, seeds: &[SocketAddr]) -> Member {
    member_with(dir, i, site, seeds, &[])
}

/// A member started with extra agent arguments.
pub fn member_with(
    dir: &Path,
    i: usize,
    site: &str,
    seeds: &[SocketAddr],
    extra: &[&str],
) -> Member {
    let ip = format!("127.0.7.{i}");
    member_on_with(
        dir,
        i,
        site,
        seeds,
        free_udp_on(&ip),
        free_addr_on(&ip),
        extra,
    )
}

pub fn member_on(
    dir: &Path,
    i: usize,
    site: &str,
    seeds: &[SocketAddr],
    gossip: SocketAddr,
    api: SocketAddr,
) -> Member {
    member_on_with(dir, i, site, seeds, gossip, api, &[])
}

/// A member on given addresses, with extra agent arguments.
pub fn member_on_with(
    dir: &Path,
    i: usize,
    site: &str,
    seeds: &[SocketAddr],
    gossip: SocketAddr,
    api: SocketAddr,
    extra: &[&str],
) -> Member {
    let name = format!("w{i}");
    let mut args = vec![
        "--gossip".to_owned(),
        gossip.to_string(),
        "--name".to_owned(),
        name.clone(),
        "--site".to_owned(),
        site.to_owned(),
    ];
    for s in seeds.iter().filter(|s| **s != gossip) {
        args.push("--seed".to_owned());
        args.push(s.to_string());
    }
    let data_dir = dir.join(&name);
    // The first member of `dir` founds the org; the others join it with a
    // join token from the founder, and hold a copy of its admin token.
    let founder = FOUNDERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(dir)
        .cloned();
    match &founder {
        Some((api, founder_dir)) if *founder_dir != data_dir => {
            if !data_dir.join("node.cert").exists() {
                args.push("--join".to_owned());
                args.push(join_token(api, founder_dir));
            }
            std::fs::create_dir_all(&data_dir).expect("data dir");
            std::fs::copy(
                founder_dir.join("admin.token"),
                data_dir.join("admin.token"),
            )
            .expect("copy the founder's admin token");
        }
        _ => {}
    }
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let agent = Agent::spawn(&data_dir, api, &args);
    agent.wait_healthy();
    if founder.is_none() {
        FOUNDERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_owned(), (agent.api(), data_dir));
    }
    Member {
        agent,
        gossip,
        name,
    }
}

/// The founding member of each test dir: its API and data dir.
static FOUNDERS: Mutex<BTreeMap<PathBuf, (String, PathBuf)>> = Mutex::new(BTreeMap::new());

/// A join token made by the agent at `api` (whose data dir holds the admin
/// token).
pub fn join_token(api: &str, data_dir: &Path) -> String {
    let token = std::fs::read_to_string(data_dir.join("admin.token")).expect("admin token");
    let r = client_with(Some(token.trim().to_owned()))
        .post(format!("{api}/api/v1/org/join-tokens"))
        .json(&serde_json::json!({"uses": 1, "ttl_secs": 600}))
        .send()
        .expect("POST join-tokens");
    assert_eq!(
        r.status(),
        201,
        "join token: {}",
        r.text().unwrap_or_default()
    );
    let v: serde_json::Value = r.json().expect("join token JSON");
    v["token"].as_str().expect("token").to_owned()
}

pub fn wait_cluster(members: &[&Member], n: usize) {
    wait_until(
        "every agent knows every node",
        Duration::from_secs(30),
        || {
            if std::env::var_os("LOCUS_TEST_DEBUG").is_some() {
                for m in members {
                    let nodes = get_json(&m.agent, "/api/v1/nodes");
                    let brief: Vec<String> = nodes
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| {
                            format!(
                                "{}:{}:{}:{}",
                                x["info"]["name"],
                                x["liveness"],
                                x["generation"],
                                x["capacity"].is_null()
                            )
                        })
                        .collect();
                    eprintln!("{} sees {brief:?}", m.name);
                }
            }
            members.iter().all(|m| {
                get_json(&m.agent, "/api/v1/nodes")
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|x| {
                        x["liveness"] == "alive" && !x["capacity"].is_null() && !x["info"].is_null()
                    })
                    .count()
                    == n
            })
        },
    );
}

/// The `docker save` tarball scripts/test-images.sh builds (run here when
/// missing).
pub fn image_tarball() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tar = root.join("target/test-assets/busybox-image.tar");
    if !tar.exists() {
        let status = std::process::Command::new(root.join("scripts/test-images.sh"))
            .status()
            .expect("run scripts/test-images.sh");
        assert!(status.success());
    }
    assert!(
        tar.exists(),
        "scripts/test-images.sh did not build {}",
        tar.display()
    );
    tar
}

/// The stored readings of `thing` (up to 10 000), oldest first.
pub fn readings(agent: &Agent, thing: &str) -> Vec<serde_json::Value> {
    get_json(
        agent,
        &format!("/api/v1/readings?thing={thing}&limit=10000"),
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// The sum of the values of the `/metrics` lines that start with `prefix`
/// (a whole family, or one labelled series).
pub fn metric(agent: &Agent, prefix: &str) -> f64 {
    let text = anonymous()
        .get(agent.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    sum_metric(&text, prefix)
}

/// The sum of the values of the lines of a Prometheus text exposition
/// that start with `prefix`.
pub fn sum_metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Run `publishers` threads calling `publish(p, i)` for i = 0, 1, … (each
/// call true once the agent acknowledged it), SIGKILL the agent once
/// `acked_before_kill` calls were acknowledged, and return what was
/// acknowledged, as `dev{p}/{i}`.
pub fn kill_under_load(
    agent: Agent,
    publishers: usize,
    acked_before_kill: usize,
    publish: impl Fn(usize, u32) -> bool + Send + Sync + 'static,
) -> std::collections::BTreeSet<String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let acked: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publish = Arc::new(publish);
    let threads: Vec<_> = (0..publishers)
        .map(|p| {
            let (acked, stop, publish) = (acked.clone(), stop.clone(), publish.clone());
            std::thread::spawn(move || {
                for i in 0..10_000u32 {
                    if stop.load(Ordering::Relaxed) || !publish(p, i) {
                        break;
                    }
                    acked.lock().unwrap().insert(format!("dev{p}/{i}"));
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < acked_before_kill {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "publishers are too slow"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut agent = agent;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    drop(agent);
    acked.lock().unwrap().clone()
}

/// Assert that every acknowledged `dev{p}/{value}` of [`kill_under_load`]
/// is stored on `agent` (things `dev0`… with a numeric reading each);
/// returns how many are stored.
pub fn assert_acked_stored(
    agent: &Agent,
    things: usize,
    acked: &std::collections::BTreeSet<String>,
) -> usize {
    let mut stored = std::collections::BTreeSet::new();
    for p in 0..things {
        for r in readings(agent, &format!("dev{p}")) {
            let v = r["reading"]["value"]["number"].as_f64().unwrap();
            stored.insert(format!("dev{p}/{v}"));
        }
    }
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged readings lost: {lost:?}",
        lost.len()
    );
    eprintln!(
        "{} acknowledged, {} stored after the SIGKILL",
        acked.len(),
        stored.len()
    );
    stored.len()
}

/// The key of the node whose data dir is `data_dir` (its `node.key`,
/// PKCS#8 PEM), to sign node-to-node calls as that node.
pub fn node_key(data_dir: &Path) -> ed25519_dalek::SigningKey {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(data_dir.join("node.key")).expect("read node.key");
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("parse node.key")
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The signature headers of a node-to-node call `method path_and_query`
/// whose body has the BLAKE3 digest `body_digest`, signed with `key` at
/// `date` (unix seconds) with a fresh nonce.
pub fn sign_call(
    key: &ed25519_dalek::SigningKey,
    method: &str,
    path_and_query: &str,
    body_digest: [u8; 32],
    date: u64,
) -> Vec<(&'static str, String)> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("randomness");
    locus_access::request::sign_request_digest(
        key,
        method,
        path_and_query,
        body_digest,
        date,
        nonce,
    )
    .into_header_pairs()
}

/// [`sign_call`] for a body held whole, dated now.
pub fn sign_body(
    key: &ed25519_dalek::SigningKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    sign_call(
        key,
        method,
        path_and_query,
        locus_access::request::body_digest(body),
        unix_now(),
    )
}

/// The aiocoap LwM2M client of the tests (`crates/locus-things/tests/
/// lwm2m_client.py`, a CoAP stack nobody here wrote), and the JSON events
/// it prints, one per line.
pub struct Lwm2mClient {
    child: Child,
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl Lwm2mClient {
    /// Start it towards `bootstrap_uri` (`coap://…` or `coaps://…`) as
    /// `endpoint`, with `extra` arguments.
    pub fn start(bootstrap_uri: &str, endpoint: &str, extra: &[&str]) -> Lwm2mClient {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join("target/pyenv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: scripts/test.sh makes the venv",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(root.join("crates/locus-things/tests/lwm2m_client.py"))
            .args(["--bootstrap", bootstrap_uri, "--endpoint", endpoint])
            .args(["--notify-every", "0.3", "--retry", "0.5"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let out = child.stdout.take().unwrap();
        let e = events.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    e.lock().unwrap().push(v);
                }
            }
        });
        Lwm2mClient { child, events }
    }

    /// How many events named `event` it printed.
    pub fn count(&self, event: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == event)
            .count()
    }

    /// The last event named `event` (null if none).
    pub fn last(&self, event: &str) -> Value {
        self.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["event"] == event)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Every event so far, one per line.
    pub fn said(&self) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lwm2mClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

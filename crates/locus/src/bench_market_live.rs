//! The live part of `locus bench market`: agents of as many orgs on
//! loopback (each its own org, every org admitting the others), started
//! from this very binary. Times request → signed contract at the customer
//! while providers keep offers on the book, then customer SIGKILL →
//! covered workload running at the provider, and customer back → running
//! at the customer again, over several kills.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench_workloads::stats;

/// Longest wait for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A takeover slower than this (the p99 target) keeps the agents'
/// logs of that moment for a post-mortem.
const TAKEOVER_TARGET: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(10);

pub(crate) struct Agent {
    pub(crate) child: Option<Child>,
    pub(crate) api: SocketAddr,
    gossip: SocketAddr,
    pub(crate) dir: PathBuf,
    http: Option<reqwest::blocking::Client>,
}

pub(crate) struct Orgs {
    exe: PathBuf,
    pub(crate) agents: Vec<Agent>,
}

impl Drop for Orgs {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(c) = a.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn free(ip: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    Ok((
        std::net::TcpListener::bind(format!("{ip}:0"))?.local_addr()?,
        std::net::UdpSocket::bind(format!("{ip}:0"))?.local_addr()?,
    ))
}

impl Orgs {
    pub(crate) fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let seed = self.agents[0].gossip;
        let a = &self.agents[i];
        let log = std::fs::File::create(a.dir.with_extension("log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&a.dir)
            .args([
                "--listen",
                &a.api.to_string(),
                "--gossip",
                &a.gossip.to_string(),
            ])
            .args(crate::bench::ANY_DEVICE_PORTS)
            .args(["--name", &format!("m{i}"), "--site", "lab"]);
        if i > 0 {
            cmd.args(["--seed", &seed.to_string()]);
        }
        let child = cmd
            .env("LOCUS_LOG", "warn,locus_marketplace=info,locus_things=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start an agent")?;
        self.agents[i].child = Some(child);
        let start = Instant::now();
        while !crate::bench::healthy(self.agents[i].api) {
            if start.elapsed() > STEP_TIMEOUT {
                bail!("agent m{i} never became healthy");
            }
            std::thread::sleep(POLL);
        }
        self.agents[i].http = Some(crate::bench::admin_client(
            &self.agents[i].dir,
            Some(STEP_TIMEOUT),
        )?);
        Ok(())
    }

    pub(crate) fn call(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let a = &self.agents[i];
        let http = a.http.as_ref().context("agent not started")?;
        let mut req = http.request(method, format!("http://{}{path}", a.api));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send()?;
        let status = r.status();
        let text = r.text()?;
        if !status.is_success() {
            bail!("{path} on m{i}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(crate) fn get(&self, i: usize, path: &str) -> anyhow::Result<Value> {
        self.call(i, reqwest::Method::GET, path, None)
    }

    pub(crate) fn wait(
        &self,
        what: &str,
        mut done: impl FnMut() -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > STEP_TIMEOUT {
                bail!("timed out waiting until {what}");
            }
            std::thread::sleep(POLL);
        }
        Ok(start.elapsed())
    }

    pub(crate) fn node_id(&self, i: usize) -> anyhow::Result<String> {
        Ok(self.get(i, "/api/v1/node")?["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub(crate) fn running_at(&self, watcher: usize, name: &str, node: &str) -> bool {
        self.get(watcher, "/api/v1/workloads").is_ok_and(|l| {
            l.as_array().is_some_and(|a| {
                a.iter()
                    .any(|w| w["name"] == name && w["owner"] == node && w["state"] == "running")
            })
        })
    }

    /// Copy every agent's log so far into a directory of the system's
    /// temporary directory that outlives the run; answers it.
    pub(crate) fn keep_logs(&self, what: &str) -> PathBuf {
        let to =
            std::env::temp_dir().join(format!("locus-bench-market-{}-{what}", std::process::id()));
        if std::fs::create_dir_all(&to).is_ok() {
            for (i, a) in self.agents.iter().enumerate() {
                let _ = std::fs::copy(a.dir.with_extension("log"), to.join(format!("m{i}.log")));
            }
        }
        to
    }

    pub(crate) fn contracts(&self, i: usize) -> usize {
        self.get(i, "/api/v1/market/contracts")
            .map_or(0, |v| v.as_array().map_or(0, Vec::len))
    }
}

/// Kill every process whose command line holds `marker` (the customer's
/// service, which outlives an agent SIGKILL by design).
pub(crate) fn kill_marked(marker: &str) {
    if let Ok(out) = Command::new("pgrep").args(["-f", marker]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Orgs {
    /// `n` agents (not started) on `127.0.<net>.x`, data dirs under `root`.
    pub(crate) fn new(n: usize, net: u8, root: &Path) -> anyhow::Result<Orgs> {
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let mut agents = Vec::new();
        for i in 0..n {
            let (api, gossip) = free(&format!("127.0.{net}.{}", i + 1))?;
            agents.push(Agent {
                child: None,
                api,
                gossip,
                dir: root.join(format!("m{i}")),
                http: None,
            });
        }
        Ok(Orgs { exe, agents })
    }

    /// Every org admits every other, then waits until all did.
    pub(crate) fn admit_each_other(&self) -> anyhow::Result<()> {
        let n = self.agents.len();
        let keys: Vec<String> = (0..n)
            .map(|i| {
                Ok(self.get(i, "/api/v1/orgs")?[0]["key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned())
            })
            .collect::<anyhow::Result<_>>()?;
        for i in 0..n {
            for (j, key) in keys.iter().enumerate() {
                if i != j {
                    self.call(
                        i,
                        reqwest::Method::POST,
                        "/api/v1/orgs",
                        Some(&json!({"key": key, "name": format!("org {j}")})),
                    )?;
                }
            }
        }
        self.wait("every org admits the others", || {
            (0..n).all(|i| {
                self.get(i, "/api/v1/orgs")
                    .is_ok_and(|v| v.as_array().map_or(0, Vec::len) == n)
            })
        })?;
        Ok(())
    }

    /// Wait until every agent sees every node alive.
    pub(crate) fn wait_converged(&self) -> anyhow::Result<()> {
        let n = self.agents.len();
        self.wait("every agent sees every node", || {
            (0..n).all(|i| {
                self.get(i, "/api/v1/nodes").is_ok_and(|v| {
                    v.as_array().is_some_and(|a| {
                        a.iter()
                            .filter(|x| x["liveness"] == "alive" && !x["capacity"].is_null())
                            .count()
                            == n
                    })
                })
            })
        })?;
        Ok(())
    }
}

const SENSOR_PASSWORD: &str = "bench-sensor-password";

pub(crate) fn manager_of(orgs: &Orgs, watcher: usize, thing: &str) -> Option<String> {
    orgs.get(watcher, &format!("/api/v1/things/{thing}")).ok()?["manager"]
        .as_str()
        .map(str::to_owned)
}

pub(crate) fn live(
    agents: usize,
    requests: usize,
    handovers: usize,
    root: &Path,
) -> anyhow::Result<Value> {
    let mut orgs = Orgs::new(agents, 97, root)?;
    // The customer's service is placed on m0 while it is alone.
    eprintln!("market: starting {agents} agents of {agents} orgs…");
    orgs.spawn(0)?;
    let marker = format!("locus-bench-market-{}", std::process::id());
    let spec = json!({"name": "svc", "kind": "process", "source": "/bin/sh",
        "args": ["-c", format!("while :; do sleep 1; done # {marker}")]});
    let created = orgs.call(0, reqwest::Method::POST, "/api/v1/workloads", Some(&spec))?;
    let svc_id = created["workload"]["id"]
        .as_str()
        .context("the created workload has no id")?
        .to_owned();
    let sensor = json!({"name": "t1", "protocol": "mqtt", "credentials": {"password": SENSOR_PASSWORD},
        "resources": [{"name": "temperature", "unit": "Cel"}]});
    orgs.call(0, reqwest::Method::POST, "/api/v1/things", Some(&sensor))?;
    for i in 1..agents {
        orgs.spawn(i)?;
    }
    let ids: Vec<String> = (0..agents)
        .map(|i| orgs.node_id(i))
        .collect::<anyhow::Result<_>>()?;
    orgs.wait_converged()?;
    eprintln!("market: every org admits the others…");
    orgs.admit_each_other()?;

    // Request → contract, the providers keeping one offer each on the book.
    let offer = |i: usize| {
        orgs.call(
            i,
            reqwest::Method::POST,
            "/api/v1/market/offers",
            Some(&json!({"price": 200 + 50 * i as u64, "tier": "nano"})),
        )
    };
    for i in 1..agents {
        offer(i)?;
    }
    let mut signed = Vec::new();
    for r in 0..requests {
        eprintln!("market: request {}/{requests}", r + 1);
        let before = orgs.contracts(0);
        let start = Instant::now();
        orgs.call(
            0,
            reqwest::Method::POST,
            "/api/v1/market/requests",
            Some(&json!({"cpu_millis": 100, "max_price": 5000})),
        )?;
        orgs.wait("a contract", || orgs.contracts(0) > before)?;
        signed.push(start.elapsed().as_secs_f64() * 1000.0);
        // The provider whose offer was sold offers again.
        let last: Value = orgs.get(0, "/api/v1/market/contracts")?;
        let sold = last
            .as_array()
            .and_then(|a| a.iter().max_by_key(|c| c["start"].as_u64()))
            .and_then(|c| c["provider"].as_str())
            .and_then(|p| ids.iter().position(|id| id == p));
        if let Some(p) = sold {
            orgs.wait("the sold offer leaves the book", || {
                orgs.get(p, "/api/v1/market/book").is_ok_and(|b| {
                    !b.as_array()
                        .is_some_and(|a| a.iter().any(|e| e["mine"] == true))
                })
            })?;
            offer(p)?;
        }
    }

    // Cover svc, then kill its node again and again.
    orgs.wait("svc is measured and requested", || {
        orgs.call(
            0,
            reqwest::Method::POST,
            "/api/v1/market/requests",
            Some(&json!({"workloads": ["svc"], "things": ["t1"], "max_price": 5000})),
        )
        .is_ok()
    })?;
    let covered = orgs.contracts(0);
    orgs.wait("a contract covers svc", || {
        orgs.get(0, "/api/v1/market/contracts").is_ok_and(|v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|c| c["workloads"] == json!([svc_id])))
        })
    })?;
    let _ = covered;
    let contract = orgs.get(0, "/api/v1/market/contracts")?;
    let provider_id = contract
        .as_array()
        .and_then(|a| a.iter().find(|c| c["workloads"] == json!([svc_id])))
        .and_then(|c| c["provider"].as_str())
        .context("no provider")?
        .to_owned();
    let provider = ids
        .iter()
        .position(|id| *id == provider_id)
        .context("provider unknown")?;
    let watcher = (1..agents).find(|i| *i != provider).context("no watcher")?;
    orgs.wait("svc's spec spreads", || {
        orgs.get(watcher, "/api/v1/workloads").is_ok_and(|l| {
            l.as_array().is_some_and(|a| {
                a.iter()
                    .any(|w| w["name"] == "svc" && w["spec_replicated"] == true)
            })
        })
    })?;
    let (mut takeover, mut back, mut thing_takeover) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..handovers {
        eprintln!("market: handover {}/{handovers}", k + 1);
        orgs.wait("svc runs on its customer", || {
            orgs.running_at(watcher, "svc", &ids[0])
        })?;
        // (A customer killed before its things' records spread again
        // leaves nothing for the provider to adopt until it returns.)
        orgs.wait("t1 is back with its customer", || {
            manager_of(&orgs, watcher, "t1").as_deref() == Some(ids[0].as_str())
        })?;
        if let Some(mut c) = orgs.agents[0].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_marked(&marker);
        let killed = Instant::now();
        let killed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        orgs.wait("svc runs at the provider", || {
            orgs.running_at(watcher, "svc", &provider_id)
        })?;
        takeover.push(killed.elapsed().as_secs_f64() * 1000.0);
        orgs.wait("the provider manages t1", || {
            manager_of(&orgs, watcher, "t1").as_deref() == Some(provider_id.as_str())
        })?;
        thing_takeover.push(killed.elapsed().as_secs_f64() * 1000.0);
        if killed.elapsed() > TAKEOVER_TARGET {
            let kept = orgs.keep_logs(&format!("takeover-{}", k + 1));
            eprintln!(
                "market: kill {} took {:?} (killed at unix {} ms); logs kept in {}",
                k + 1,
                killed.elapsed(),
                killed_at_ms,
                kept.display()
            );
        }
        orgs.spawn(0)?;
        let restarted = Instant::now();
        orgs.wait("svc runs on its customer again", || {
            orgs.running_at(watcher, "svc", &ids[0])
        })?;
        back.push(restarted.elapsed().as_secs_f64() * 1000.0);
    }
    orgs.wait("t1 is back with its customer", || {
        manager_of(&orgs, watcher, "t1").as_deref() == Some(ids[0].as_str())
    })?;

    // Settle every contract: the provider closes it, the customer checks
    // and countersigns, the arbitrator releases both stakes.
    let all = orgs.get(0, "/api/v1/market/contracts")?;
    let mut settled = Vec::new();
    let mut released = Vec::new();
    for c in all.as_array().into_iter().flatten() {
        let id = c["id"].as_str().unwrap_or_default().to_owned();
        let at = |node: &Value| {
            ids.iter()
                .position(|i| node.as_str() == Some(i.as_str()))
                .context("a party is not one of the bench's nodes")
        };
        let (p, a) = (at(&c["provider"])?, at(&c["arbitrator"])?);
        eprintln!("market: settle {}", &id[..12]);
        let state = |i: usize| {
            orgs.get(i, &format!("/api/v1/market/contracts/{id}"))
                .map(|v| v["settlement"].clone())
                .unwrap_or_default()
        };
        orgs.wait("both stakes are held", || {
            state(a)["held"].as_object().is_some_and(|h| h.len() == 2)
        })?;
        let start = Instant::now();
        orgs.call(
            p,
            reqwest::Method::POST,
            &format!("/api/v1/market/contracts/{id}/settlement"),
            Some(&json!({"action": "settle"})),
        )?;
        orgs.wait("the customer countersigned", || {
            state(0)["state"] == "countersigned"
        })?;
        settled.push(start.elapsed().as_secs_f64() * 1000.0);
        orgs.wait("the stakes are released", || {
            state(a)["held"].as_object().is_some_and(|h| h.is_empty())
        })?;
        released.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    // Every org's own balance, as its node proves it from the receipts it
    // received, sums to 0 once the receipts have spread.
    let balances = || -> Vec<i64> {
        (0..agents)
            .map(|i| {
                orgs.get(i, "/api/v1/market/account")
                    .map_or(0, |v| v["balance"].as_i64().unwrap_or(0))
            })
            .collect()
    };
    orgs.wait("every org's balance agrees", || {
        balances().iter().sum::<i64>() == 0
    })?;
    let balances = balances();
    kill_marked(&marker);
    Ok(json!({
        "agents": agents,
        "orgs": agents,
        "request_to_contract": stats(signed),
        "takeover_after_sigkill": stats(takeover),
        "thing_accepted_at_provider_after_sigkill": stats(thing_takeover),
        "hand_back_after_restart": stats(back),
        "settle_to_countersigned": stats(settled),
        "settle_to_stakes_released": stats(released),
        "balances": balances,
    }))
}

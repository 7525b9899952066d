//! `locus bench things`: sustained MQTT ingest into one real agent, with
//! durability (every reading committed, fsync, before its PUBACK) and
//! sealing on, from many QoS 1 publishers with several messages in flight
//! each; publish → PUBACK latency (the PUBACK leaves only once the reading
//! is stored and sealed, so it bounds publish → stored); bytes stored per
//! reading; agent CPU and RSS under load; and the rates of inclusion- and
//! consistency-proof generation and verification, in process and through
//! the API. Prints one JSON object on stdout; progress goes to stderr.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use locus_iot::merkle::{self, MerkleLog};
use ntex::{Pipeline, SharedCfg};
use ntex_mqtt::{v3, v5};
use serde_json::{Value, json};

use crate::bench_workloads::{Cluster, in_scratch_dir, rss, stats};
use crate::cli::{MqttVersion, ThingsBenchArgs};

const PASSWORD: &str = "bench-password";

pub fn things(args: &ThingsBenchArgs) -> anyhow::Result<()> {
    in_scratch_dir(&args.dir, |root| run(args, root))
}

/// Bytes of the node's database files (main file and WAL).
fn db_bytes(dir: &Path) -> u64 {
    ["locus.db", "locus.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// CPU seconds (user + system) a process used so far.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok((utime + stime) / ticks)
}

struct Load {
    acked: u64,
    failed: u64,
    latencies_ms: Vec<f64>,
    elapsed: f64,
}

/// One publisher's connection, in the version it speaks.
#[derive(Clone)]
enum Sink {
    V3(v3::MqttSink),
    V5(v5::MqttSink),
}

impl Sink {
    async fn connect(version: MqttVersion, broker: &str, p: usize) -> anyhow::Result<Sink> {
        Sink::connect_as(
            version,
            broker,
            &format!("bench-{p}"),
            &format!("b{p}"),
            PASSWORD,
        )
        .await
    }

    /// Connect as thing `user` with its password.
    async fn connect_as(
        version: MqttVersion,
        broker: &str,
        client_id: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Sink> {
        let password = ntex::util::Bytes::from(password.to_owned());
        let cannot = |e: &dyn std::fmt::Debug| anyhow!("{user} cannot connect to {broker}: {e:?}");
        Ok(match version {
            MqttVersion::V311 => {
                let client = Pipeline::new(SharedCfg::default(), v3::client::MqttConnector::new())
                    .call(
                        v3::client::Connect::new(broker.to_owned())
                            .client_id(client_id.to_owned())
                            .username(user.to_owned())
                            .password(password),
                    )
                    .await
                    .map_err(|e| cannot(&e))?;
                let sink = client.sink();
                ntex::rt::spawn(client.start_default());
                Sink::V3(sink)
            }
            MqttVersion::V5 => {
                let client = Pipeline::new(SharedCfg::default(), v5::client::MqttConnector::new())
                    .call(
                        v5::client::Connect::new(broker.to_owned())
                            .client_id(client_id.to_owned())
                            .username(user.to_owned().into())
                            .password(password),
                    )
                    .await
                    .map_err(|e| cannot(&e))?;
                let sink = client.sink();
                ntex::rt::spawn(client.start_default());
                Sink::V5(sink)
            }
        })
    }

    /// A QoS 1 publish; `Ok` once a successful PUBACK came back.
    async fn publish(&self, topic: String, payload: ntex::util::Bytes) -> Result<(), ()> {
        match self {
            Sink::V3(s) => s
                .publish(topic)
                .send_at_least_once(payload)
                .await
                .map_err(|_| ()),
            Sink::V5(s) => match s.publish(topic).send_at_least_once(payload).await {
                Ok(ack) if ack.reason_code == v5::codec::PublishAckReason::Success => Ok(()),
                _ => Err(()),
            },
        }
    }

    fn close(&self) {
        match self {
            Sink::V3(s) => s.close(),
            Sink::V5(s) => s.close(),
        }
    }
}

/// One QoS 1 publish of `payload` on `topic` as thing `user` (MQTT 3.1.1),
/// answered once the broker acknowledged it.
pub(crate) fn publish_once(
    broker: &str,
    user: &str,
    password: &str,
    topic: &str,
    payload: &str,
) -> anyhow::Result<()> {
    let (broker, user, password, topic, payload) = (
        broker.to_owned(),
        user.to_owned(),
        password.to_owned(),
        topic.to_owned(),
        payload.to_owned(),
    );
    std::thread::spawn(move || {
        ntex::rt::System::build()
            .name("publish-once")
            .disable_signals()
            .build(ntex::rt::DefaultRuntime)
            .block_on(async move {
                let sink = Sink::connect_as(
                    MqttVersion::V311,
                    &broker,
                    &format!("{user}-once"),
                    &user,
                    &password,
                )
                .await?;
                let r = sink.publish(topic, ntex::util::Bytes::from(payload)).await;
                sink.close();
                r.map_err(|()| anyhow!("the broker did not acknowledge the publish"))
            })
    })
    .join()
    .map_err(|_| anyhow!("the MQTT client panicked"))?
}

/// Run `publishers` MQTT connections with `window` QoS 1 publishes in
/// flight each, for `secs` after a one-second warm-up, on one thread.
fn load(
    version: MqttVersion,
    broker: &str,
    publishers: usize,
    window: usize,
    secs: u64,
) -> anyhow::Result<Load> {
    let broker = broker.to_owned();
    let handle = std::thread::spawn(move || {
        ntex::rt::System::build()
            .name("bench-load")
            .disable_signals()
            .build(ntex::rt::DefaultRuntime)
            .block_on(async move {
                let mut sinks = Vec::new();
                for p in 0..publishers {
                    sinks.push(Sink::connect(version, &broker, p).await?);
                }
                let start = Instant::now();
                let warm = start + Duration::from_secs(1);
                let end = warm + Duration::from_secs(secs);
                let shared = Rc::new(RefCell::new((0u64, 0u64, Vec::<f64>::new())));
                let mut tasks = Vec::new();
                for (p, sink) in sinks.iter().enumerate() {
                    for w in 0..window {
                        let sink = sink.clone();
                        let shared = shared.clone();
                        let topic = format!("things/b{p}/readings");
                        tasks.push(ntex::rt::spawn(async move {
                            let mut i = 0u64;
                            while Instant::now() < end {
                                let payload = format!("{{\"temperature\": {}.{w}}}", i % 1000);
                                let t0 = Instant::now();
                                let r = sink
                                    .publish(topic.clone(), ntex::util::Bytes::from(payload))
                                    .await;
                                if t0 >= warm {
                                    let mut s = shared.borrow_mut();
                                    match r {
                                        Ok(()) => {
                                            s.0 += 1;
                                            s.2.push(t0.elapsed().as_secs_f64() * 1e3);
                                        }
                                        Err(_) => s.1 += 1,
                                    }
                                }
                                if r.is_err() {
                                    break;
                                }
                                i += 1;
                            }
                        }));
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
                let elapsed = warm.elapsed().as_secs_f64();
                for s in &sinks {
                    s.close();
                }
                let (acked, failed, latencies_ms) = shared.take();
                Ok::<Load, anyhow::Error>(Load {
                    acked,
                    failed,
                    latencies_ms,
                    elapsed,
                })
            })
    });
    handle
        .join()
        .map_err(|_| anyhow!("the load thread panicked"))?
}

/// Inclusion and consistency proofs over a log of `n` leaves, in process.
fn proofs_in_process(n: u64) -> Value {
    let t = Instant::now();
    let mut log = MerkleLog::new();
    for i in 0..n {
        log.append_data(&i.to_le_bytes());
    }
    let build = t.elapsed().as_secs_f64();
    let root = log.current_root();
    let samples = 100_000u64.min(n);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let picks: Vec<u64> = (0..samples).map(|_| next()).collect();
    let t = Instant::now();
    let proofs: Vec<Vec<merkle::Hash>> = picks
        .iter()
        .map(|&i| log.inclusion_proof(i, n).unwrap_or_default())
        .collect();
    let gen_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut ok = 0u64;
    for (&i, p) in picks.iter().zip(&proofs) {
        let leaf = merkle::leaf_hash(&i.to_le_bytes());
        if merkle::verify_inclusion(&leaf, i, n, p, &root).is_ok() {
            ok += 1;
        }
    }
    let verify_s = t.elapsed().as_secs_f64();
    let olds: Vec<u64> = (0..samples / 10).map(|_| next().max(1)).collect();
    let t = Instant::now();
    let cproofs: Vec<Vec<merkle::Hash>> = olds
        .iter()
        .map(|&m| log.consistency_proof(m, n).unwrap_or_default())
        .collect();
    let cgen_s = t.elapsed().as_secs_f64();
    let old_roots: Vec<merkle::Hash> = olds.iter().map(|&m| log.root(m).unwrap_or(root)).collect();
    let t = Instant::now();
    let mut cok = 0u64;
    for ((&m, p), r) in olds.iter().zip(&cproofs).zip(&old_roots) {
        if merkle::verify_consistency(m, n, r, &root, p).is_ok() {
            cok += 1;
        }
    }
    let cverify_s = t.elapsed().as_secs_f64();
    json!({
        "leaves": n,
        "append_leaves_per_s": n as f64 / build,
        "inclusion_proof_bytes": proofs.first().map_or(0, |p| p.len() * 32),
        "inclusion_generated_per_s": samples as f64 / gen_s,
        "inclusion_verified_per_s": samples as f64 / verify_s,
        "inclusion_verified_ok": ok == samples,
        "consistency_generated_per_s": olds.len() as f64 / cgen_s,
        "consistency_verified_per_s": olds.len() as f64 / cverify_s,
        "consistency_verified_ok": cok == olds.len() as u64,
    })
}

fn run(args: &ThingsBenchArgs, root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    eprintln!("starting an agent…");
    let c = Cluster::start(&exe, root, 1)?;
    let node = c.get(0, "/api/v1/node")?;
    let broker = node["mqtt_addr"]
        .as_str()
        .ok_or_else(|| anyhow!("the agent runs no MQTT broker"))?
        .to_owned();
    let pid = c.members[0]
        .child
        .as_ref()
        .map(|c| c.id())
        .ok_or_else(|| anyhow!("no agent process"))?;
    eprintln!("registering {} things…", args.publishers);
    for p in 0..args.publishers {
        let body = json!({
            "name": format!("b{p}"), "protocol": "mqtt",
            "credentials": { "password": PASSWORD },
        });
        let r = c.http.post(c.url(0, "/api/v1/things")).json(&body).send()?;
        anyhow::ensure!(
            r.status().is_success(),
            "cannot register b{p}: {}",
            r.text()?
        );
    }
    let dir = c.members[0].dir.clone();
    let db_before = db_bytes(&dir);
    let rss_idle = rss(pid)?;
    let cpu_before = cpu_secs(pid)?;
    eprintln!(
        "{} publishers × {} in flight for {} s (QoS 1, durable and sealed before PUBACK)…",
        args.publishers, args.window, args.secs
    );
    let rss_peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_idle));
    let watch = {
        let peak = rss_peak.clone();
        let secs = args.secs + 2;
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                if let Ok(r) = rss(pid) {
                    peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let t = Instant::now();
    let l = load(
        args.mqtt_version,
        &broker,
        usize::from(args.publishers),
        usize::from(args.window),
        args.secs,
    )?;
    let wall = t.elapsed().as_secs_f64();
    let cpu_used = cpu_secs(pid)? - cpu_before;
    let _ = watch.join();
    let stored: u64 = {
        let cp = c.get(0, "/api/v1/readings/checkpoint")?;
        cp["log_size"].as_u64().unwrap_or(0)
    };
    let db_after = db_bytes(&dir);
    let mean = l.latencies_ms.iter().sum::<f64>() / l.latencies_ms.len().max(1) as f64;
    let s = stats(l.latencies_ms);
    let ingest = json!({
        "mqtt_version": match args.mqtt_version {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        },
        "publishers": args.publishers,
        "in_flight_per_publisher": args.window,
        "seconds": l.elapsed,
        "acked": l.acked,
        "failed": l.failed,
        "readings_per_s": l.acked as f64 / l.elapsed,
        "stored_in_log": stored,
        "publish_to_puback_ms": {
            "p50": s.p50_ms, "p99": s.p99_ms, "max": s.max_ms, "mean": mean,
        },
        "agent_cpu_cores": cpu_used / wall,
        "agent_rss_idle_mb": rss_idle as f64 / 1e6,
        "agent_rss_peak_mb": rss_peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
        "db_bytes_per_reading": if stored > 0 { (db_after.saturating_sub(db_before)) as f64 / stored as f64 } else { f64::NAN },
    });
    eprintln!("ingest: {ingest}");

    eprintln!("proofs in process over {} leaves…", args.proof_leaves);
    let in_process = proofs_in_process(args.proof_leaves);
    eprintln!("proofs through the API…");
    let api = proofs_over_api(&c, stored)?;
    let out = json!({
        "bench": "things",
        "version": locus_core::VERSION,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "mqtt_ingest": ingest,
        "proofs_in_process": in_process,
        "proofs_api": api,
    });
    crate::bench::emit(&out, args.out.as_deref())
}

/// Inclusion proofs served by the agent and checked here, one request at
/// a time: what a client auditing readings one by one sees.
fn proofs_over_api(c: &Cluster, stored: u64) -> anyhow::Result<Value> {
    // Wait for a checkpoint that covers what was stored.
    let deadline = Instant::now() + Duration::from_secs(15);
    let size = loop {
        let cp = c.get(0, "/api/v1/readings/checkpoint")?;
        let size = cp["size"].as_u64().unwrap_or(0);
        if size >= stored || Instant::now() > deadline {
            break size;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if size == 0 {
        return Ok(json!({ "skipped": "no checkpoint" }));
    }
    let n = 2000u64.min(size);
    let t = Instant::now();
    let mut ok = 0u64;
    for k in 0..n {
        let seq = (k * 7919) % size;
        let v = c.get(0, &format!("/api/v1/readings/{seq}/proof?size={size}"))?;
        let parse = |h: &Value| -> Option<merkle::Hash> {
            let s = h.as_str()?;
            let b: Vec<u8> = (0..s.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect();
            b.try_into().ok()
        };
        let leaf = parse(&v["leaf_hash"]);
        let root = parse(&v["root"]);
        let path: Option<Vec<merkle::Hash>> = v["proof"]
            .as_array()
            .map(|a| a.iter().filter_map(parse).collect());
        if let (Some(leaf), Some(root), Some(path)) = (leaf, root, path)
            && merkle::verify_inclusion(&leaf, seq, size, &path, &root).is_ok()
        {
            ok += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(json!({
        "tree_size": size,
        "requests": n,
        "verified_ok": ok,
        "proofs_per_s": n as f64 / secs,
    }))
}

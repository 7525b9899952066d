//! `locus bench artifacts`: local put throughput (hash + store, in process
//! and through the API), peer-to-peer get throughput between two agents
//! compared in the same run with plain static file servers serving the same
//! file (Python's `http.server`, and nginx when installed), fan-out of one
//! artifact to many nodes, and agent RSS during a multi-GB transfer. Prints
//! one JSON object on stdout; progress goes to stderr.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench_workloads::{Cluster, in_scratch_dir, rss, stats};
use crate::cli::{ArtifactsBenchArgs, PutsBenchArgs};

const MIB: u64 = 1 << 20;

/// Deterministic content of `len` bytes.
fn write_content(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Upload `file` to agent `i` with curl (a client nobody here wrote, which
/// streams the file with its Content-Length); its CID.
fn upload(c: &Cluster, i: usize, file: &Path) -> anyhow::Result<String> {
    let v = upload_with(c, i, file, "")?;
    Ok(v["cid"].as_str().unwrap_or_default().to_owned())
}

/// Upload `file` to agent `i` with a query (`?replicas=…`); the answer.
fn upload_with(c: &Cluster, i: usize, file: &Path, query: &str) -> anyhow::Result<Value> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "-T"])
        .arg(file)
        .args(["-H", "Content-Type: application/octet-stream"])
        .args(["-H", &format!("Authorization: Bearer {}", c.token())])
        .arg(c.url(i, &format!("/api/v1/artifacts{query}")))
        .output()
        .context("cannot run curl")?;
    if !out.status.success() {
        bail!("upload: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn fetch(c: &Cluster, i: usize, cid: &str) -> anyhow::Result<Value> {
    let r = c
        .long_http()?
        .post(c.url(i, &format!("/api/v1/artifacts/{cid}/fetch")))
        .send()?;
    if !r.status().is_success() {
        bail!(
            "fetch on b{i}: {} {}",
            r.status(),
            r.text().unwrap_or_default()
        );
    }
    Ok(r.json()?)
}

fn collect(c: &Cluster, i: usize) -> anyhow::Result<()> {
    let r = c
        .http
        .post(c.url(i, "/api/v1/artifacts/gc?all=true"))
        .send()?;
    if !r.status().is_success() {
        bail!("gc on b{i}: {}", r.status());
    }
    Ok(())
}

fn wait_holders(c: &Cluster, i: usize, cid: &str, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if c.get(i, &format!("/api/v1/artifacts/{cid}"))
            .is_ok_and(|v| v["holders"].as_array().is_some_and(|h| h.len() == n))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("b{i} never saw {n} holder(s) of {cid}")
}

/// A static file server serving `dir` on a free loopback port.
struct FileServer {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn python_server(dir: &Path) -> anyhow::Result<FileServer> {
    let port = free_port()?;
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start python3 -m http.server")?;
    Ok(FileServer {
        name: "python3 -m http.server",
        child,
        port,
    })
}

fn nginx_server(dir: &Path, work: &Path) -> anyhow::Result<Option<FileServer>> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(nginx) = nginx else { return Ok(None) };
    let port = free_port()?;
    std::fs::create_dir_all(work)?;
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {w}/nginx.pid;\nerror_log {w}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on;\n\
               client_body_temp_path {w}; proxy_temp_path {w}; fastcgi_temp_path {w}; uwsgi_temp_path {w}; scgi_temp_path {w};\n\
               server {{ listen 127.0.0.1:{port}; root {d}; }} }}\n",
            w = work.display(),
            d = dir.display()
        ),
    )?;
    let child = Command::new(nginx)
        .args([
            "-c",
            &conf.display().to_string(),
            "-p",
            &work.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nginx")?;
    Ok(Some(FileServer {
        name: "nginx",
        child,
        port,
    }))
}

/// Download `url` with curl into `out`; seconds taken.
fn curl_get(url: &str, out: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    let status = Command::new("curl")
        .args(["-sSf", "-o", &out.display().to_string(), url])
        .status()
        .context("cannot run curl")?;
    if !status.success() {
        bail!("curl {url} failed");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on {port}")
}

/// Peak RSS growth (bytes) of `pids` while `during` runs.
fn rss_growth(
    pids: &[u32],
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<u64>> {
    let base: Vec<u64> = pids.iter().map(|p| rss(*p).unwrap_or(0)).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let pids2 = pids.to_vec();
    let sampler = std::thread::spawn(move || {
        let mut peak = vec![0u64; pids2.len()];
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, p) in pids2.iter().enumerate() {
                peak[i] = peak[i].max(rss(*p).unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let r = during();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    r?;
    Ok(peak
        .iter()
        .zip(base)
        .map(|(p, b)| p.saturating_sub(b))
        .collect())
}

pub fn artifacts(args: &ArtifactsBenchArgs) -> anyhow::Result<()> {
    in_scratch_dir(&args.dir, |root| run(args, root))
}

fn run(args: &ArtifactsBenchArgs, root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let size = args.size_mb * MIB;
    let files = root.join("files");
    std::fs::create_dir_all(&files)?;
    let file = files.join("artifact.bin");
    eprintln!("writing a {} MiB test file…", args.size_mb);
    write_content(&file, size, 1)?;

    // 0. What bounds a put here: hashing alone (file in the page cache,
    // outboard to nowhere), and this disk writing 1 GiB with an fsync.
    let mut hash_only = Vec::new();
    for _ in 0..args.runs {
        let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&file)?);
        let t = Instant::now();
        let tree = bao_tree::BaoTree::new(size, locus_artifacts::blob::BLOCK);
        bao_tree::io::sync::outboard_post_order(f, tree, std::io::sink())?;
        hash_only.push(gbps(size, t.elapsed().as_secs_f64()));
    }
    let mut disk = Vec::new();
    for _ in 0..args.runs {
        let probe = root.join("disk.probe");
        let block = vec![0u8; 1 << 20];
        let t = Instant::now();
        let mut f = std::fs::File::create(&probe)?;
        for _ in 0..args.size_mb {
            f.write_all(&block)?;
        }
        f.sync_all()?;
        disk.push(gbps(size, t.elapsed().as_secs_f64()));
        std::fs::remove_file(&probe)?;
    }
    eprintln!(
        "  hashing alone {:.2} GB/s; this disk writes {:.2} GB/s with an fsync",
        median(hash_only.clone()),
        median(disk.clone())
    );

    // 1. Local put, in process: hash + outboard + write + fsync + rename.
    let store = locus_artifacts::BlobStore::open(&root.join("store"))?;
    let mut inproc = Vec::new();
    for run in 0..args.runs {
        let f = std::fs::File::open(&file)?;
        let t = Instant::now();
        let got = store.ingest(
            std::io::BufReader::with_capacity(1 << 20, f),
            Some(size),
            &mut |_| {},
        )?;
        inproc.push(gbps(size, t.elapsed().as_secs_f64()));
        store.remove(&got.id)?;
        eprintln!(
            "  put in process #{run}: {:.2} GB/s",
            inproc.last().copied().unwrap_or(0.0)
        );
    }

    eprintln!("starting {} agents…", args.agents.max(2));
    std::fs::create_dir_all(root.join("agents"))?;
    let mut c = Cluster::start(&exe, &root.join("agents"), args.agents.max(2) as usize)?;

    // 2. Local put through the API (HTTP upload on loopback).
    let mut api_put = Vec::new();
    let mut cid = String::new();
    for run in 0..args.runs {
        let t = Instant::now();
        cid = upload(&c, 0, &file)?;
        api_put.push(gbps(size, t.elapsed().as_secs_f64()));
        eprintln!(
            "  put through the API #{run}: {:.2} GB/s",
            api_put.last().copied().unwrap_or(0.0)
        );
        if run + 1 < args.runs {
            c.http
                .post(c.url(0, &format!("/api/v1/artifacts/{cid}/unpin")))
                .send()?;
            collect(&c, 0)?;
        }
    }
    wait_holders(&c, 1, &cid, 1)?;

    // 3. Peer get b0 → b1, against static file servers on the same file.
    let mut p2p = Vec::new();
    for run in 0..args.runs {
        let t = Instant::now();
        let report = fetch(&c, 1, &cid)?;
        let secs = t.elapsed().as_secs_f64();
        if report["fetched_bytes"].as_u64() != Some(size) {
            bail!("unexpected fetch report {report}");
        }
        p2p.push(gbps(size, secs));
        eprintln!(
            "  peer get #{run}: {:.2} GB/s",
            p2p.last().copied().unwrap_or(0.0)
        );
        collect(&c, 1)?;
        wait_holders(&c, 1, &cid, 1)?;
    }
    let mut servers = vec![python_server(&files)?];
    if let Some(n) = nginx_server(&files, &root.join("nginx"))? {
        servers.push(n);
    }
    let mut plain = serde_json::Map::new();
    for s in &servers {
        wait_port(s.port)?;
        let (mut v, mut durable) = (Vec::new(), Vec::new());
        for run in 0..args.runs {
            let out = root.join("plain.out");
            let secs = curl_get(&format!("http://127.0.0.1:{}/artifact.bin", s.port), &out)?;
            // A fetch ends with the artifact fsynced; the same for curl.
            let t = Instant::now();
            std::fs::File::open(&out)?.sync_all()?;
            let sync = t.elapsed().as_secs_f64();
            std::fs::remove_file(&out)?;
            v.push(gbps(size, secs));
            durable.push(gbps(size, secs + sync));
            eprintln!(
                "  {} #{run}: {:.2} GB/s, {:.2} GB/s with the fsync",
                s.name,
                v.last().copied().unwrap_or(0.0),
                durable.last().copied().unwrap_or(0.0)
            );
        }
        plain.insert(
            s.name.to_owned(),
            json!({
                "gbps": median(v.clone()),
                "runs_gbps": v,
                "gbps_with_fsync": median(durable.clone()),
                "runs_gbps_with_fsync": durable,
            }),
        );
    }
    drop(servers);
    let p2p_median = median(p2p.clone());
    let python = |k: &str| {
        plain
            .get("python3 -m http.server")
            .and_then(|v| v[k].as_f64())
            .unwrap_or(f64::NAN)
    };
    let (python_gbps, python_durable) = (python("gbps"), python("gbps_with_fsync"));

    // 4. Fan-out: every other agent fetches the same artifact at once.
    let fan_size = args.fanout_mb * MIB;
    let fan_file = files.join("fanout.bin");
    write_content(&fan_file, fan_size, 2)?;
    let fan_cid = upload(&c, 0, &fan_file)?;
    let n = c.members.len();
    for i in 1..n {
        wait_holders(&c, i, &fan_cid, 1)?;
    }
    eprintln!("  fan-out of {} MiB to {} nodes…", args.fanout_mb, n - 1);
    let t = Instant::now();
    let per_node: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..n)
            .map(|i| {
                let (c, fan_cid) = (&c, &fan_cid);
                s.spawn(move || -> anyhow::Result<f64> {
                    let t = Instant::now();
                    fetch(c, i, fan_cid)?;
                    Ok(t.elapsed().as_secs_f64() * 1000.0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a fetch thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<f64>>>()
    })?;
    let fan_total = t.elapsed().as_secs_f64();
    for i in 1..n {
        collect(&c, i)?;
    }

    // 5. RSS of holder and fetcher during a big transfer.
    let big = args.rss_gb * (1 << 30);
    let big_file = files.join("big.bin");
    write_content(&big_file, big, 3)?;
    let pid = |c: &Cluster, i: usize| c.members[i].child.as_ref().map(Child::id).unwrap_or(0);
    let (p0, p1) = (pid(&c, 0), pid(&c, 1));
    let mut big_cid = String::new();
    let put_growth = rss_growth(&[p0], || {
        big_cid = upload(&c, 0, &big_file)?;
        Ok(())
    })?;
    std::fs::remove_file(&big_file)?;
    wait_holders(&c, 1, &big_cid, 1)?;
    let t = Instant::now();
    let get_growth = rss_growth(&[p0, p1], || fetch(&c, 1, &big_cid).map(|_| ()))?;
    let big_secs = t.elapsed().as_secs_f64();
    let idle = (rss(p0).unwrap_or(0), rss(p1).unwrap_or(0));
    c.members.iter_mut().for_each(|m| {
        if let Some(ch) = m.child.as_mut() {
            let _ = ch.kill();
        }
    });

    let report = json!({
        "size_mb": args.size_mb,
        "runs": args.runs,
        "hash_only_gbps": median(hash_only),
        "disk_write_fsync_gbps": median(disk),
        "local_put_gbps": {
            "in_process": median(inproc.clone()),
            "through_api": median(api_put.clone()),
            "runs_in_process": inproc,
            "runs_through_api": api_put,
            "target": 1.0,
        },
        "peer_get": {
            "gbps": p2p_median,
            "runs_gbps": p2p,
            "plain_servers": plain,
            "ratio_to_python_http_server": p2p_median / python_gbps,
            "ratio_to_python_http_server_with_fsync": p2p_median / python_durable,
            "target_ratio": 0.8,
        },
        "fanout": {
            "nodes": n - 1,
            "size_mb": args.fanout_mb,
            "all_done_s": fan_total,
            "per_node": stats(per_node),
            "anchor": "Kraken: 3 GB to 2,600 hosts, p50 10 s",
        },
        "rss_during_transfer": {
            "size_gb": args.rss_gb,
            "upload_growth_mb": put_growth[0] as f64 / MIB as f64,
            "holder_growth_mb": get_growth[0] as f64 / MIB as f64,
            "fetcher_growth_mb": get_growth[1] as f64 / MIB as f64,
            "transfer_gbps": gbps(big, big_secs),
            "rss_after_mb": [idle.0 as f64 / MIB as f64, idle.1 as f64 / MIB as f64],
            "target_growth_mb": 32,
        },
    });
    crate::bench::emit(&report, args.out.as_deref())
}

/// `locus bench puts`: how long a durable put takes, by size and K.
pub fn puts(args: &PutsBenchArgs) -> anyhow::Result<()> {
    in_scratch_dir(&args.dir, |root| run_puts(args, root))
}

fn run_puts(args: &PutsBenchArgs, root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let n = args.agents as usize;
    eprintln!("starting {n} agents, one per site…");
    std::fs::create_dir_all(root.join("agents"))?;
    let c = Cluster::start(&exe, &root.join("agents"), n)?;
    let file = root.join("put.bin");
    let mut cases = Vec::new();
    let mut seed = 1u64;
    for &size_mb in &args.sizes_mb {
        // With --no-wait the largest K shows what waiting costs.
        let mut ks: Vec<(u32, bool)> = args.replicas.iter().map(|k| (*k, true)).collect();
        if let Some(top) = args.replicas.iter().max() {
            ks.push((*top, false));
        }
        for (k, wait) in ks {
            let mut ms = Vec::new();
            let mut copies = Vec::new();
            for _ in 0..args.runs {
                // Fresh bytes each run: a node that holds them answers a
                // push at once.
                seed += 1;
                write_content(&file, size_mb * MIB, seed)?;
                let t = Instant::now();
                let v = upload_with(&c, 0, &file, &format!("?replicas={k}&wait={wait}"))?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                let got = v["copies"].as_array().map_or(0, Vec::len);
                let wanted = v["wanted"].as_u64().unwrap_or(0) as usize;
                if got < wanted {
                    bail!(
                        "a put of {size_mb} MiB with K={k} confirmed {got} of {wanted} copies: {v}"
                    );
                }
                copies.push(got);
            }
            let s = stats(ms);
            eprintln!(
                "  {size_mb} MiB, K={k}{}: p50 {:.1} ms, p99 {:.1} ms",
                if wait { "" } else { " --no-wait" },
                s.p50_ms,
                s.p99_ms
            );
            cases.push(json!({
                "size_mb": size_mb,
                "replicas": k,
                "wait": wait,
                "copies_confirmed": copies,
                "latency": s,
                "mb_per_s_p50": size_mb as f64 / (s.p50_ms / 1e3),
            }));
        }
    }
    let _ = std::fs::remove_file(&file);
    let report = json!({
        "bench": "puts",
        "agents": n,
        "sites": n,
        "client": "curl, streaming the file with its Content-Length, on loopback",
        "cases": cases,
    });
    crate::bench::emit(&report, args.out.as_deref())
}

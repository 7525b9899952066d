//! Artifacts end to end on real agents: CIDs checked by an independent
//! implementation (Python's `multiformats` and `blake3`), replication that
//! heals after a SIGKILL, a get on a node that holds nothing, a corrupt
//! holder caught at the chunk, a fetch resumed after its agent was killed,
//! a multi-GB transfer with flat memory, and workloads started from CIDs.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use locus_testkit::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Deterministic, incompressible-looking content: `len` bytes from `seed`
/// (`seed | 1` seeds it: give even seeds 2 apart).
fn write_content(path: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn put(agent: &Agent, file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["artifact", "put", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&cli(agent, &args)).trim().to_owned()
}

/// `locus --json artifact get CID -o OUT` on `agent`: the fetch report.
fn get_to(agent: &Agent, cid: &str, out: &Path) -> Value {
    let text = ok(&cli(
        agent,
        &[
            "--json",
            "artifact",
            "get",
            cid,
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    serde_json::from_str(&text).unwrap()
}

/// `locus --json artifact gc --all` on `agent`: what it removed.
fn gc_all(agent: &Agent) -> Vec<Value> {
    let text = ok(&cli(agent, &["--json", "artifact", "gc", "--all"]));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["removed"].as_array().cloned().unwrap_or_default()
}

fn stat(agent: &Agent, cid: &str) -> Value {
    get_json(agent, &format!("/api/v1/artifacts/{cid}"))
}

fn holders(agent: &Agent, cid: &str) -> Vec<String> {
    let resp = http()
        .get(agent.url(&format!("/api/v1/artifacts/{cid}")))
        .send()
        .unwrap();
    if resp.status() == 404 {
        return Vec::new();
    }
    resp.json::<Value>().unwrap()["holders"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn node_id(agent: &Agent) -> String {
    get_json(agent, "/api/v1/node")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn blob_path(agent: &Agent, cid: &str) -> PathBuf {
    agent.data_dir.join("artifacts/blobs").join(cid)
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na]).unwrap();
            if n == 0 {
                return false;
            }
            nb += n;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

fn rss_kb(agent: &Agent) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn cids_agree_with_an_independent_implementation() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs multiformats and blake3 there",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    // Sizes around every boundary: empty, one chunk, a chunk and a byte,
    // a 16 KiB group and a byte, several MiB.
    for (i, size) in [0u64, 1, 1024, 1025, 16385, 5 * 1024 * 1024 + 7]
        .into_iter()
        .enumerate()
    {
        let file = dir.path().join(format!("f{i}"));
        write_content(&file, size, 40 + i as u64);
        let cid = put(&agent, &file, &[]);
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(
                "import sys, blake3\n\
                 from multiformats import CID\n\
                 c = CID.decode(sys.argv[1])\n\
                 assert c.version == 1, c.version\n\
                 assert c.codec.name == 'raw', c.codec.name\n\
                 assert c.hashfun.name == 'blake3', c.hashfun.name\n\
                 assert c.base.name == 'base32', c.base.name\n\
                 d = blake3.blake3(open(sys.argv[2], 'rb').read()).digest()\n\
                 assert c.raw_digest == d, (c.raw_digest.hex(), d.hex())\n\
                 print('ok')\n",
            )
            .arg(&cid)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
            "size {size}, cid {cid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And the other way: the stat of that CID is the file's size.
        assert_eq!(stat(&agent, &cid)["size"], size);
    }
    // A CID of another codec or hash is refused with the reason.
    let out = cli(
        &agent,
        &[
            "artifact",
            "stat",
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blake3"));
}

#[test]
fn replicas_heal_after_a_holder_dies_and_a_node_with_nothing_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = member(dir.path(), 21, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir.path(), 22, "b", &seeds);
    let m3 = member(dir.path(), 23, "c", &seeds);
    let m4 = member(dir.path(), 24, "d", &seeds);
    let all = [&m1, &m2, &m3, &m4];
    wait_cluster(&all, 4);
    let file = dir.path().join("data");
    write_content(&file, 20 << 20, 7);
    let cid = put(&m1.agent, &file, &["--replicas", "2", "--name", "data.bin"]);

    wait_until("two live holders", Duration::from_secs(30), || {
        holders(&m1.agent, &cid).len() == 2
    });
    let first = holders(&m1.agent, &cid);
    let ids: Vec<String> = all.iter().map(|m| node_id(&m.agent)).collect();
    let other = first.iter().find(|h| **h != ids[0]).unwrap().clone();
    let victim = ids.iter().position(|i| *i == other).unwrap();
    assert_ne!(victim, 0);
    assert!(same_file(&blob_path(&all[victim].agent, &cid), &file));

    // SIGKILL the other holder: another node copies it until 2 live hold it.
    all[victim].agent.signal(Signal::SIGKILL);
    let healed = wait_until("two live holders again", Duration::from_secs(30), || {
        let h = holders(&m1.agent, &cid);
        h.len() == 2 && !h.contains(&other)
    });
    eprintln!("replica count healed {healed:?} after the SIGKILL");
    let now = holders(&m1.agent, &cid);
    let new = now.iter().find(|h| **h != ids[0]).unwrap();
    let new_i = ids.iter().position(|i| i == new).unwrap();
    assert!(same_file(&blob_path(&all[new_i].agent, &cid), &file));

    // The remaining node holds nothing; a get there fetches and verifies.
    let empty = (1..4).find(|i| *i != victim && *i != new_i).unwrap();
    let e = &all[empty].agent;
    assert!(
        get_json(e, "/api/v1/artifacts")
            .as_array()
            .unwrap()
            .is_empty()
    );
    let out = dir.path().join("got");
    let report = get_to(e, &cid, &out);
    assert_eq!(report["fetched_bytes"], 20 << 20);
    assert_eq!(report["already_local"], false);
    assert!(same_file(&out, &file));
    let listed = ok(&cli(e, &["artifact", "ls"]));
    assert!(
        listed.contains(&cid) && listed.contains("data.bin"),
        "{listed}"
    );

    // A range of it, straight from the API.
    let resp = http()
        .get(e.url(&format!("/api/v1/artifacts/{cid}/content")))
        .header("Range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 1000-1999/{}", 20 << 20)
    );
    let part = resp.bytes().unwrap();
    let whole = std::fs::read(&file).unwrap();
    assert_eq!(&part[..], &whole[1000..2000]);

    // Pinned: the uploader's copy is never collected.
    let gc = gc_all(&m1.agent);
    assert!(gc.is_empty(), "pinned: {gc:?}");
    // Unpinned, three copies of a K=2 artifact: collecting everywhere drops
    // exactly the extra one (the holders' rendezvous ranking agrees).
    ok(&cli(&m1.agent, &["artifact", "unpin", &cid]));
    let live = [0, new_i, empty];
    let on_disk = || {
        live.iter()
            .filter(|i| blob_path(&all[**i].agent, &cid).exists())
            .count()
    };
    for i in live {
        wait_until(
            "every node sees every holder",
            Duration::from_secs(15),
            || {
                live.iter()
                    .all(|j| holders(&all[*j].agent, &cid).len() == on_disk())
            },
        );
        ok(&cli(&all[i].agent, &["artifact", "gc", "--all"]));
    }
    assert_eq!(on_disk(), 2, "K=2 copies are kept");
    wait_until("the holders say so too", Duration::from_secs(15), || {
        holders(&m1.agent, &cid).len() == 2
    });
}

#[test]
fn a_corrupt_holder_is_caught_at_the_chunk_and_the_fetch_completes_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = member(dir.path(), 31, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir.path(), 32, "b", &seeds);
    let m3 = member(dir.path(), 33, "c", &seeds);
    wait_cluster(&[&m1, &m2, &m3], 3);
    let file = dir.path().join("data");
    let size: u64 = 40 << 20;
    write_content(&file, size, 9);
    let cid = put(&m1.agent, &file, &[]);
    // m2 takes a copy, then its disk "rots": one flipped byte in every
    // 4 MiB span, so whatever span m2 serves is bad.
    ok(&cli(&m2.agent, &["artifact", "fetch", &cid]));
    let bad = blob_path(&m2.agent, &cid);
    let mut perms = std::fs::metadata(&bad).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&bad, perms).unwrap();
    let mut raw = std::fs::read(&bad).unwrap();
    let flips: Vec<u64> = (0..10).map(|i| i * (4 << 20) + 123_457).collect();
    for at in &flips {
        raw[*at as usize] ^= 0x20;
    }
    std::fs::write(&bad, raw).unwrap();
    let m2_id = node_id(&m2.agent);
    wait_until("m3 sees both holders", Duration::from_secs(15), || {
        holders(&m3.agent, &cid).len() == 2
    });

    let out = dir.path().join("got");
    let report = get_to(&m3.agent, &cid, &out);
    assert!(same_file(&out, &file), "the copy is the original");
    assert!(report["corrupt_chunks"].as_u64().unwrap() >= 1, "{report}");
    let peer = report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == m2_id.as_str())
        .unwrap()
        .clone();
    let why = peer["dropped"].as_str().unwrap();
    // The reported offset is the 16 KiB group of one of the flipped bytes.
    let offset: u64 = why.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        flips.iter().any(|f| f / 16384 * 16384 == offset),
        "{why} is not the group of a flipped byte"
    );
    assert!(metric(&m3.agent, "locus_artifact_corrupt_chunks_total") >= 1.0);
    // What m2 sent before its bad group was verified and kept.
    assert!(report["fetched_bytes"] == size, "{report}");
}

#[test]
fn a_fetch_interrupted_by_a_crash_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = member(dir.path(), 41, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir.path(), 42, "b", &seeds);
    wait_cluster(&[&m1, &m2], 2);
    let file = dir.path().join("data");
    let size: u64 = 768 << 20;
    write_content(&file, size, 11);
    let cid = put(&m1.agent, &file, &[]);
    wait_until("m2 sees the holder", Duration::from_secs(15), || {
        holders(&m2.agent, &cid).len() == 1
    });
    // Start the fetch, and SIGKILL m2 once some of it has arrived.
    let url = m2.agent.url(&format!("/api/v1/artifacts/{cid}/fetch"));
    let token = m2.agent.token().unwrap();
    let t = std::thread::spawn(move || {
        let _ = client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .post(url)
            .bearer_auth(token)
            .send();
    });
    let started = Instant::now();
    while metric(&m2.agent, "locus_artifact_fetched_bytes_total") < (48 << 20) as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the fetch never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (api, gossip) = (m2.agent.addr, m2.gossip);
    let mut m2 = m2;
    m2.agent.signal(Signal::SIGKILL);
    m2.agent.wait_exit(Duration::from_secs(10));
    let _ = t.join();
    let partial = m2.agent.data_dir.join("artifacts/partial").join(&cid);
    assert!(partial.exists(), "the partial download is kept");
    assert!(
        !blob_path(&m2.agent, &cid).exists(),
        "it was interrupted before the end"
    );
    drop(m2);

    let m2 = member_on(dir.path(), 42, "b", &seeds, gossip, api);
    wait_cluster(&[&m1, &m2], 2);
    wait_until("m2 sees the holder again", Duration::from_secs(15), || {
        holders(&m2.agent, &cid).len() == 1
    });
    let report = ok(&cli(&m2.agent, &["--json", "artifact", "fetch", &cid]));
    let report: Value = serde_json::from_str(&report).unwrap();
    let resumed = report["resumed_bytes"].as_u64().unwrap();
    let fetched = report["fetched_bytes"].as_u64().unwrap();
    assert!(resumed >= 32 << 20, "{report}");
    assert_eq!(resumed + fetched, size, "{report}");
    assert!(same_file(&blob_path(&m2.agent, &cid), &file));
}

#[test]
fn a_multi_gigabyte_artifact_moves_with_flat_agent_memory() {
    let gib: u64 = std::env::var("LOCUS_TEST_BIG_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let m1 = member(dir.path(), 51, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir.path(), 52, "b", &seeds);
    wait_cluster(&[&m1, &m2], 2);
    let file = dir.path().join("big");
    write_content(&file, gib << 30, 13);

    // Sample both agents' RSS while the upload and the fetch run.
    let sample = |agents: &[&Agent], during: &mut dyn FnMut()| -> Vec<u64> {
        let base: Vec<u64> = agents.iter().map(|a| rss_kb(a)).collect();
        let pids: Vec<u32> = agents.iter().map(|a| a.child.id()).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = vec![0u64; pids.len()];
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                        && let Some(kb) = st
                            .lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|v| v.parse::<u64>().ok())
                    {
                        peak[i] = peak[i].max(kb);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        during();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().unwrap();
        peak.iter()
            .zip(base)
            .map(|(p, b)| p.saturating_sub(b))
            .collect()
    };
    let mut cid = String::new();
    let growth = sample(&[&m1.agent], &mut || cid = put(&m1.agent, &file, &[]));
    eprintln!("upload of {gib} GiB: agent RSS grew {} KiB", growth[0]);
    assert!(growth[0] < 64 << 10, "upload RSS grew {} KiB", growth[0]);
    wait_until("m2 sees the holder", Duration::from_secs(15), || {
        holders(&m2.agent, &cid).len() == 1
    });
    let growth = sample(&[&m1.agent, &m2.agent], &mut || {
        ok(&cli(&m2.agent, &["artifact", "fetch", &cid]));
    });
    eprintln!(
        "fetch of {gib} GiB: RSS grew {} KiB (holder), {} KiB (fetcher)",
        growth[0], growth[1]
    );
    assert!(
        growth[0] < 64 << 10 && growth[1] < 64 << 10,
        "{growth:?} KiB"
    );
    assert_eq!(
        std::fs::metadata(blob_path(&m2.agent, &cid)).unwrap().len(),
        gib << 30
    );
}

#[test]
fn workloads_start_from_artifacts_fetched_on_the_node_that_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = member(dir.path(), 61, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir.path(), 62, "b", &seeds);
    wait_cluster(&[&m1, &m2], 2);
    // A process from a CID: /bin/sleep, stored on m1 only, placed on site b.
    let cid = put(&m1.agent, Path::new("/bin/sleep"), &[]);
    let spec = dir.path().join("sleeper.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"sleeper\"\nkind = \"process\"\nsource = \"cid:{cid}\"\nargs = [\"300\"]\nstop_timeout_secs = 1\n[placement]\nsite = \"b\"\n"
        ),
    )
    .unwrap();
    ok(&cli(&m1.agent, &["run", spec.to_str().unwrap()]));
    wait_until("the sleeper runs on b", Duration::from_secs(30), || {
        get_json(&m1.agent, "/api/v1/workloads")
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "sleeper" && w["state"] == "running")
    });
    assert!(blob_path(&m2.agent, &cid).exists(), "m2 fetched the source");
    let v = stat(&m2.agent, &cid);
    assert_eq!(v["in_use"], true, "{v}");
    // In use: collection leaves it alone.
    let gc = gc_all(&m2.agent);
    assert!(gc.is_empty(), "{gc:?}");

    // A container from a CID: a `docker save` tarball stored as an
    // artifact, loaded into the engine from the store of the node that runs
    // it.
    let image = put(&m1.agent, &image_tarball(), &[]);
    let spec = dir.path().join("box.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"box\"\nkind = \"container\"\nsource = \"cid:{image}\"\nargs = [\"sh\", \"-c\", \"echo hello from an artifact; exec /bin/busybox sleep 300\"]\nstop_timeout_secs = 1\n[resources]\nmemory_mb = 32\n[placement]\nsite = \"b\"\n"
        ),
    )
    .unwrap();
    ok(&cli(&m1.agent, &["run", spec.to_str().unwrap()]));
    wait_until(
        "the container logs its greeting",
        Duration::from_secs(60),
        || {
            let out = cli(&m1.agent, &["logs", "box"]);
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("hello from an artifact")
        },
    );
    assert!(
        blob_path(&m2.agent, &image).exists(),
        "m2 fetched the image"
    );
    ok(&cli(&m1.agent, &["rm", "--force", "box"]));

    // A CID no node holds: the workload waits as pending and says why.
    let missing = locus_core::ArtifactId::of(b"no node holds this").to_string();
    let spec = dir.path().join("ghost.toml");
    std::fs::write(
        &spec,
        format!("name = \"ghost\"\nkind = \"process\"\nsource = \"cid:{missing}\"\nrestart = \"never\"\n"),
    )
    .unwrap();
    ok(&cli(&m1.agent, &["run", spec.to_str().unwrap()]));
    let want = format!("waiting for artifact {missing}: no live holder");
    wait_until(
        "the ghost waits with the reason",
        Duration::from_secs(30),
        || {
            let w = get_json(&m1.agent, "/api/v1/workloads/ghost");
            w["state"] == "pending" && w["reason"] == want.as_str()
        },
    );
    ok(&cli(&m1.agent, &["rm", "--force", "sleeper"]));
}

#[test]
fn the_disk_budget_collects_the_least_recently_used_and_refuses_what_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[artifacts]\ndisk_budget_mb = 3\n").unwrap();
    let m1 = member(dir.path(), 71, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member_with(
        dir.path(),
        72,
        "b",
        &seeds,
        &["--config", config.to_str().unwrap()],
    );
    wait_cluster(&[&m1, &m2], 2);
    let cids: Vec<String> = (0..3)
        .map(|i| {
            let f = dir.path().join(format!("f{i}"));
            write_content(&f, 1 << 20, 80 + 2 * i);
            put(&m1.agent, &f, &[])
        })
        .collect();
    for c in &cids {
        wait_until("m2 sees the holder", Duration::from_secs(15), || {
            holders(&m2.agent, c).len() == 1
        });
    }
    // Three 1 MiB artifacts and their hash trees do not fit in 3 MiB: the
    // third fetch collects the least recently used of the first two.
    for c in &cids {
        ok(&cli(&m2.agent, &["artifact", "fetch", c]));
    }
    assert!(
        !blob_path(&m2.agent, &cids[0]).exists(),
        "the oldest went; log:\n{}",
        m2.agent.logs()
    );
    assert!(blob_path(&m2.agent, &cids[1]).exists());
    assert!(blob_path(&m2.agent, &cids[2]).exists());
    // Pinned, nothing can go: a 4 MiB upload is refused with the reason.
    ok(&cli(&m2.agent, &["artifact", "pin", &cids[1]]));
    ok(&cli(&m2.agent, &["artifact", "pin", &cids[2]]));
    let big = dir.path().join("big");
    write_content(&big, 4 << 20, 90);
    let out = cli(&m2.agent, &["artifact", "put", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over_budget") && err.contains("budget"),
        "{err}"
    );
    assert!(blob_path(&m2.agent, &cids[1]).exists() && blob_path(&m2.agent, &cids[2]).exists());
}

#[test]
fn a_download_abandoned_when_its_only_holder_dies_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = member(dir.path(), 81, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir.path(), 82, "b", &seeds);
    wait_cluster(&[&m1, &m2], 2);
    let file = dir.path().join("data");
    write_content(&file, 768 << 20, 17);
    let cid = put(&m1.agent, &file, &[]);
    wait_until("m2 sees the holder", Duration::from_secs(15), || {
        holders(&m2.agent, &cid).len() == 1
    });
    let url = m2.agent.url(&format!("/api/v1/artifacts/{cid}/fetch"));
    let token = m2.agent.token().unwrap();
    let t = std::thread::spawn(move || {
        client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .post(url)
            .bearer_auth(token)
            .send()
            .map(|r| r.status().as_u16())
    });
    let started = Instant::now();
    while metric(&m2.agent, "locus_artifact_fetched_bytes_total") < (48 << 20) as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the fetch never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The only holder dies mid-transfer: the fetch fails, the partial stays.
    let mut m1 = m1;
    m1.agent.signal(Signal::SIGKILL);
    m1.agent.wait_exit(Duration::from_secs(10));
    let status = t.join().unwrap().unwrap();
    assert_eq!(status, 502, "the fetch fails once no holder is left");
    let partial = m2.agent.data_dir.join("artifacts/partial").join(&cid);
    assert!(partial.exists());
    // Within budget, a plain gc keeps it (it can still resume) …
    ok(&cli(&m2.agent, &["artifact", "gc"]));
    assert!(partial.exists());
    // … and gc --all drops it.
    let text = ok(&cli(&m2.agent, &["--json", "artifact", "gc", "--all"]));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["discarded_partials"], serde_json::json!([cid]), "{v}");
    assert!(!partial.exists());
}

/// `/bin/sleep` followed by `pad` bytes (an ELF runs whatever trails it):
/// an executable big enough that no peer can copy it in the first
/// moments after its put.
fn padded_sleep(path: &Path, pad: u64) -> String {
    let tail = path.with_extension("tail");
    write_content(&tail, pad, 5);
    let mut bytes = std::fs::read("/bin/sleep").unwrap();
    bytes.extend_from_slice(&std::fs::read(&tail).unwrap());
    std::fs::remove_file(&tail).unwrap();
    std::fs::write(path, &bytes).unwrap();
    locus_core::ArtifactId::of(&bytes).to_string()
}

fn workload(agent: &Agent, name: &str) -> Option<Value> {
    let list = http().get(agent.url("/api/v1/workloads")).send().ok()?;
    let list: Value = list.json().ok()?;
    list.as_array()?.iter().find(|w| w["name"] == name).cloned()
}

/// Three members on three sites; the workload `name` runs `cid` (not yet
/// uploaded) and waits as pending for it on some node, which is returned
/// with the others.
fn pending_on_its_owner(
    dir: &Path,
    base: usize,
    name: &str,
    cid: &str,
) -> (Member, Vec<Member>, Vec<SocketAddr>) {
    let m1 = member(dir, base, "a", &[]);
    let seeds = [m1.gossip];
    let m2 = member(dir, base + 1, "b", &seeds);
    let m3 = member(dir, base + 2, "c", &seeds);
    wait_cluster(&[&m1, &m2, &m3], 3);
    let gossips = vec![m1.gossip, m2.gossip, m3.gossip];
    let spec = dir.join(format!("{name}.toml"));
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\nkind = \"process\"\nsource = \"cid:{cid}\"\nargs = [\"300\"]\nstop_timeout_secs = 1\n"
        ),
    )
    .unwrap();
    ok(&cli(&m1.agent, &["run", spec.to_str().unwrap()]));
    let want = format!("waiting for artifact {cid}: no live holder");
    let mut owner = String::new();
    wait_until(
        "the workload waits as pending for its artifact, its spec replicated",
        Duration::from_secs(60),
        || {
            let Some(w) = workload(&m1.agent, name) else {
                return false;
            };
            assert_ne!(w["state"], "failed", "{w}");
            owner = w["node_name"].as_str().unwrap_or_default().to_owned();
            w["state"] == "pending"
                && w["reason"] == want.as_str()
                && w["spec_replicated"] == true
                && w["failover_ready"] == false
        },
    );
    let mut all = vec![m1, m2, m3];
    let i = all.iter().position(|m| m.name == owner).unwrap();
    let x = all.remove(i);
    (x, all, gossips)
}

/// The issue a durable put settles: the uploader is SIGKILLed at once
/// after the put answers, before any replication pass could have run; the
/// workload that needs the artifact was owned by the uploader and runs on
/// another node from a copy the put waited for.
#[test]
fn a_durable_put_survives_its_uploader_killed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app");
    let cid = padded_sleep(&file, 64 << 20);
    let (mut x, others, _) = pending_on_its_owner(dir.path(), 91, "durable", &cid);

    let text = ok(&cli(
        &x.agent,
        &[
            "--json",
            "artifact",
            "put",
            file.to_str().unwrap(),
            "--replicas",
            "3",
        ],
    ));
    x.agent.signal(Signal::SIGKILL);
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["cid"], cid.as_str(), "{report}");
    assert_eq!(report["wanted"], 3, "{report}");
    assert_eq!(report["copies"].as_array().unwrap().len(), 3, "{report}");
    for m in &others {
        assert!(
            same_file(&blob_path(&m.agent, &cid), &file),
            "{} holds a whole copy when the put answers",
            m.name
        );
    }
    x.agent.wait_exit(Duration::from_secs(10));

    let took = wait_until(
        "the workload runs on another node",
        Duration::from_secs(60),
        || {
            workload(&others[0].agent, "durable").is_some_and(|w| {
                assert_ne!(w["state"], "failed", "{w}");
                w["state"] == "running" && w["node_name"] != x.name.as_str()
            })
        },
    );
    eprintln!("running elsewhere {took:?} after the uploader's SIGKILL");
    let w = workload(&others[0].agent, "durable").unwrap();
    assert_eq!(w["failover_ready"], true, "{w}");

    // A pushed copy whose bytes do not hash to its CID is refused, even
    // when a node of the cluster signed it: the signature covers the
    // digest the CID names, the receiver checks the bytes against it.
    let named = locus_core::ArtifactId::of(b"what the CID names");
    let other = named.to_string();
    let path = format!("/api/v1/artifacts/{other}");
    let mut req = http()
        .put(others[0].agent.url(&path))
        .body("something else");
    let key = node_key(&others[1].agent.data_dir);
    for (name, value) in sign_call(&key, "PUT", &path, *named.digest(), unix_now()) {
        req = req.header(name, value);
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "cid_mismatch", "{body}");
    assert!(!blob_path(&others[0].agent, &other).exists());
}

/// Without waiting, the uploader's copy is the only one when it dies: the
/// workload waits as pending with the reason (never failed) and runs once
/// the uploader is back.
#[test]
fn a_put_that_does_not_wait_leaves_the_workload_pending_until_its_holder_returns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app");
    let cid = padded_sleep(&file, 64 << 20);
    let (mut x, others, gossips) = pending_on_its_owner(dir.path(), 94, "eager", &cid);

    let text = ok(&cli(
        &x.agent,
        &[
            "--json",
            "artifact",
            "put",
            file.to_str().unwrap(),
            "--replicas",
            "3",
            "--no-wait",
        ],
    ));
    x.agent.signal(Signal::SIGKILL);
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["copies"].as_array().unwrap().len(), 1, "{report}");
    x.agent.wait_exit(Duration::from_secs(10));

    let want = format!("waiting for artifact {cid}: no live holder");
    wait_until(
        "another node adopts the workload and waits for the artifact",
        Duration::from_secs(60),
        || {
            workload(&others[0].agent, "eager").is_some_and(|w| {
                assert_ne!(w["state"], "failed", "{w}");
                w["state"] == "pending"
                    && w["reason"] == want.as_str()
                    && w["node_name"] != x.name.as_str()
            })
        },
    );
    // It stays pending, not failed, while no holder is live.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let w = workload(&others[0].agent, "eager").unwrap();
        assert_eq!(w["state"], "pending", "{w}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // The uploader returns with its copy: the workload starts.
    let i: usize = x.name.trim_start_matches('w').parse().unwrap();
    let site = ["a", "b", "c"][i - 94];
    let back = member_on_with(
        dir.path(),
        i,
        site,
        &gossips,
        gossips[i - 94],
        x.agent.addr,
        &[],
    );
    let took = wait_until(
        "the workload runs once the holder is back",
        Duration::from_secs(60),
        || {
            workload(&others[0].agent, "eager").is_some_and(|w| {
                assert_ne!(w["state"], "failed", "{w}");
                w["state"] == "running"
            })
        },
    );
    eprintln!("running {took:?} after the holder returned");
    drop(back);
}

//! Readings end to end on real agents: an EdgeX event posted with curl is
//! stored and queryable, also through EdgeX's own query paths; every
//! acknowledged reading survives a SIGKILL under load; an exported bundle
//! verifies with `locus verify`, and a reading altered or dropped in the
//! store is named by it; proofs verify; retention keeps the log provable;
//! readings reach a parent node exactly once through crashes of both.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use locus_testkit::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn event(device: &str, id: &str, values: &[f64], origin_ns: i64) -> Value {
    json!({
        "apiVersion": "v3",
        "event": {
            "apiVersion": "v3", "id": id, "deviceName": device, "profileName": "climate",
            "sourceName": "temperature", "origin": origin_ns,
            "readings": values.iter().enumerate().map(|(i, v)| json!({
                "resourceName": format!("t{i}"), "valueType": "Float64",
                "value": v.to_string(), "units": "Cel", "origin": origin_ns,
            })).collect::<Vec<_>>(),
        }
    })
}

fn post(agent: &Agent, device: &str, body: &Value) -> reqwest::Result<u16> {
    http()
        .post(agent.url(&format!("/api/v3/event/svc/climate/{device}/temperature")))
        .json(body)
        .send()
        .map(|r| r.status().as_u16())
}

/// Export seq `0..count` and run `locus verify` on it: (exit code, output).
fn export_and_verify(agent: &Agent, dir: &Path, count: u64) -> (i32, String) {
    export_range_and_verify(agent, dir, 0, count)
}

/// Export seq `start..start + count` and run `locus verify` on it.
fn export_range_and_verify(agent: &Agent, dir: &Path, start: u64, count: u64) -> (i32, String) {
    let bundle = http()
        .get(agent.url(&format!(
            "/api/v1/readings/bundle?start={start}&count={count}"
        )))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let path = dir.join("bundle.json");
    std::fs::write(&path, bundle).unwrap();
    let key = get_json(agent, "/api/v1/readings/checkpoint")["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = locus(&["verify", path.to_str().unwrap(), "--key", &key]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn an_edgex_event_posted_with_curl_is_stored_and_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    let body = event(
        "greenhouse-1",
        "6a3f",
        &[23.5, 24.0],
        1_602_168_089_665_565_200,
    );
    let out = std::process::Command::new("curl")
        .args([
            "-H",
            &format!("Authorization: Bearer {}", agent.token().unwrap()),
        ])
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
        ])
        .arg(body.to_string())
        .arg(agent.url("/api/v3/event/device-virtual/climate/greenhouse-1/temperature"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("201"), "{text}");
    assert!(text.contains("\"id\":\"6a3f\""), "{text}");
    // Read back with curl the way an EdgeX client does: by device and
    // origin range (nanoseconds), newest first.
    let curl_get = |path: &str| -> Value {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail-with-body"])
            .args([
                "-H",
                &format!("Authorization: Bearer {}", agent.token().unwrap()),
            ])
            .arg(agent.url(path))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let got = curl_get(
        "/api/v3/reading/device/name/greenhouse-1/start/1602168089665000000/end/1602168089665999999",
    );
    assert_eq!(got["apiVersion"], "v3");
    assert_eq!(got["statusCode"], 200);
    assert_eq!(got["totalCount"], 2, "{got}");
    let edgex = got["readings"].as_array().unwrap();
    assert_eq!(edgex.len(), 2);
    // Same origin: the later seq first.
    assert_eq!(edgex[0]["resourceName"], "t1");
    assert_eq!(edgex[0]["value"], "24");
    assert_eq!(edgex[1]["resourceName"], "t0");
    assert_eq!(edgex[1]["value"], "23.5");
    for r in edgex {
        assert_eq!(r["deviceName"], "greenhouse-1");
        assert_eq!(r["profileName"], "climate");
        assert_eq!(r["valueType"], "Float64");
        assert_eq!(r["units"], "Cel");
        // Readings keep milliseconds.
        assert_eq!(r["origin"], 1_602_168_089_665_000_000i64);
        assert_eq!(r["id"].as_str().unwrap().len(), 36);
    }
    let none = curl_get(
        "/api/v3/reading/device/name/greenhouse-1/start/1602168089665000001/end/1702168089665000000",
    );
    assert_eq!(none["totalCount"], 0, "{none}");
    let newest = curl_get("/api/v3/reading/device/name/greenhouse-1?limit=1");
    assert_eq!(newest["totalCount"], 2);
    assert_eq!(newest["readings"].as_array().unwrap().len(), 1);
    assert_eq!(newest["readings"][0]["resourceName"], "t1");
    let page2 = curl_get("/api/v3/reading/device/name/greenhouse-1?limit=1&offset=1");
    assert_eq!(page2["readings"][0]["resourceName"], "t0");

    let got = readings(&agent, "greenhouse-1");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["reading"]["value"]["number"], 23.5);
    assert_eq!(got[0]["reading"]["unit"], "Cel");
    assert_eq!(got[0]["reading"]["time_ms"], 1_602_168_089_665i64);
    // A time range that excludes them, and another thing: nothing.
    let none = get_json(
        &agent,
        "/api/v1/readings?thing=greenhouse-1&from_ms=1602168089666",
    );
    assert_eq!(none, json!([]));
    assert!(readings(&agent, "other").is_empty());
    // Bad events name the field; a device that contradicts the path is a conflict.
    let mut bad = body.clone();
    bad["event"]["readings"][0]["value"] = json!("warm");
    assert_eq!(post(&agent, "greenhouse-1", &bad).unwrap(), 409);
    assert_eq!(post(&agent, "greenhouse-2", &body).unwrap(), 409);
    assert_eq!(
        post(&agent, "greenhouse-1", &json!({"apiVersion": "v2"})).unwrap(),
        400
    );
    assert_eq!(
        readings(&agent, "greenhouse-1").len(),
        2,
        "refused events store nothing"
    );
}

#[test]
fn every_acknowledged_reading_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let agent = Agent::start(&data, &[]);
    let addr = agent.addr;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", agent.token().unwrap())
            .parse()
            .unwrap(),
    );
    let client = client_builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let acked = kill_under_load(agent, 4, 300, move |p, i| {
        let url = format!("http://{addr}/api/v3/event/svc/climate/dev{p}/temperature");
        let body = event(
            &format!("dev{p}"),
            &format!("p{p}-{i}"),
            &[f64::from(i)],
            1_700_000_000_000_000_000,
        );
        matches!(client.post(&url).json(&body).send(), Ok(r) if r.status().as_u16() == 201)
    });

    let agent = Agent::spawn(&data, addr, &[]);
    agent.wait_healthy();
    let stored = assert_acked_stored(&agent, 4, &acked);
    // The log rebuilt from the store still verifies.
    let (code, text) = export_and_verify(&agent, dir.path(), stored as u64);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_reading_altered_or_dropped_in_the_store_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let agent = Agent::start(&data, &[]);
    for i in 0..20 {
        let body = event(
            "meter",
            &format!("e{i}"),
            &[f64::from(i)],
            1_700_000_000_000_000_000 + i64::from(i),
        );
        assert_eq!(post(&agent, "meter", &body).unwrap(), 201);
    }
    let (code, text) = export_and_verify(&agent, dir.path(), 20);
    assert_eq!(code, 0, "an honest store verifies: {text}");
    let addr = agent.addr;
    assert!(agent.stop().success());

    // Someone edits the database: reading 7's value, and reading 3 gone.
    let db = data.join("locus.db");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, json\n\
             c = sqlite3.connect(sys.argv[1])\n\
             (b,) = c.execute('SELECT body FROM readings WHERE seq = 7').fetchone()\n\
             r = json.loads(b); r['value'] = {'number': 1000.0}\n\
             c.execute('UPDATE readings SET body = ? WHERE seq = 7', (json.dumps(r),))\n\
             c.execute('DELETE FROM readings WHERE seq = 3')\n\
             c.commit()\n",
        )
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let agent = Agent::spawn(&data, addr, &[]);
    agent.wait_healthy();
    let (code, text) = export_and_verify(&agent, dir.path(), 20);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("seq 7") && text.contains("altered"), "{text}");
    assert!(text.contains("seq 3") && text.contains("dropped"), "{text}");
    assert!(text.contains("2 problem(s)"), "nothing else: {text}");
}

fn unhex(s: &Value) -> [u8; 32] {
    let s = s.as_str().expect("a hex string");
    let v: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn unhex_all(v: &Value) -> Vec<[u8; 32]> {
    v.as_array().unwrap().iter().map(unhex).collect()
}

fn status(agent: &Agent, path: &str) -> (u16, Value) {
    let r = http().get(agent.url(path)).send().unwrap();
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

#[test]
fn proofs_served_by_an_honest_node_verify() {
    use locus_iot::{Sealed, checkpoint, merkle};
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    for i in 0..10 {
        let body = event(
            "meter",
            &format!("e{i}"),
            &[f64::from(i)],
            1_700_000_000_000_000_000,
        );
        assert_eq!(post(&agent, "meter", &body).unwrap(), 201);
    }
    let key = get_json(&agent, "/api/v1/readings/checkpoint")["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (name, vk) = checkpoint::parse_verifier_key(&key).unwrap();

    // Default size: a checkpoint signed for it, returned with the proof.
    let p = get_json(&agent, "/api/v1/readings/4/proof");
    let reading: locus_iot::Reading = serde_json::from_value(p["reading"].clone()).unwrap();
    assert_eq!(reading.value(), &locus_iot::Value::Number(4.0));
    let leaf = Sealed { seq: 4, reading }.leaf_hash();
    assert_eq!(leaf, unhex(&p["leaf_hash"]));
    let size = p["tree_size"].as_u64().unwrap();
    assert_eq!(size, 10);
    let cp = checkpoint::open(p["checkpoint"].as_str().unwrap(), &name, &vk).unwrap();
    assert_eq!((cp.size, cp.root), (size, unhex(&p["root"])));
    merkle::verify_inclusion(&leaf, 4, size, &unhex_all(&p["proof"]), &cp.root).unwrap();

    // Another size, and the consistency of the two trees.
    let p = get_json(&agent, "/api/v1/readings/4/proof?size=6");
    assert!(p["checkpoint"].is_null());
    let root6 = unhex(&p["root"]);
    merkle::verify_inclusion(&leaf, 4, 6, &unhex_all(&p["proof"]), &root6).unwrap();
    let c = get_json(&agent, "/api/v1/readings/consistency?from=6&to=10");
    assert_eq!(unhex(&c["from_root"]), root6);
    merkle::verify_consistency(6, 10, &root6, &cp.root, &unhex_all(&c["proof"])).unwrap();

    // What cannot be proved says why.
    for (path, want, says) in [
        ("/api/v1/readings/10/proof", 404, "seq 10 is not sealed"),
        (
            "/api/v1/readings/4/proof?size=11",
            404,
            "tree size 11 is beyond the log",
        ),
        (
            "/api/v1/readings/4/proof?size=4",
            409,
            "not in the tree of size 4",
        ),
        (
            "/api/v1/readings/consistency?from=7&to=6",
            409,
            "from 7 is larger than to 6",
        ),
        (
            "/api/v1/readings/consistency?from=0&to=11",
            404,
            "tree size 11 is beyond the log",
        ),
        ("/api/v1/readings/four/proof", 400, "four"),
    ] {
        let (code, body) = status(&agent, path);
        assert_eq!(code, want, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{path}: {message}");
    }
}

#[test]
fn retention_deletes_the_oldest_bodies_and_what_is_kept_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("locus.toml");
    std::fs::write(&config, "[readings]\nmax_readings = 5\n").unwrap();
    let config = config.to_str().unwrap();
    let data = dir.path().join("n");
    let agent = Agent::start(&data, &["--config", config]);
    for i in 0..12 {
        let body = event(
            "meter",
            &format!("e{i}"),
            &[f64::from(i)],
            1_700_000_000_000_000_000,
        );
        assert_eq!(post(&agent, "meter", &body).unwrap(), 201);
    }
    // The retention pass runs at start, then every minute.
    let addr = agent.addr;
    assert!(agent.stop().success());
    let agent = Agent::spawn(&data, addr, &["--config", config]);
    agent.wait_healthy();
    wait_until("retention ran", Duration::from_secs(10), || {
        status(&agent, "/api/v1/readings/bundle?start=0&count=12").0 == 410
    });
    let (_, body) = status(&agent, "/api/v1/readings/bundle?start=0&count=12");
    assert_eq!(body["error"]["code"], "pruned", "{body}");
    assert_eq!(body["error"]["details"]["first_pruned_seq"], 0);
    assert_eq!(body["error"]["details"]["pruned_below"], 7);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("reading seq 0 was deleted by retention"),
        "{message}"
    );
    let (code, body) = status(&agent, "/api/v1/readings/6/proof");
    assert_eq!(code, 410, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("seq 6"));

    // Queries say so, and hold what is kept.
    let r = http()
        .get(agent.url("/api/v1/readings?thing=meter"))
        .send()
        .unwrap();
    assert_eq!(r.headers()["locus-pruned-below"], "7");
    let kept: Vec<Value> = r.json().unwrap();
    let seqs: Vec<u64> = kept.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (7..12).collect::<Vec<_>>());

    // The log is whole: what is kept exports and verifies, and proves.
    let (code, text) = export_range_and_verify(&agent, dir.path(), 7, 5);
    assert_eq!(code, 0, "{text}");
    let p = get_json(&agent, "/api/v1/readings/9/proof");
    let reading: locus_iot::Reading = serde_json::from_value(p["reading"].clone()).unwrap();
    let leaf = locus_iot::Sealed { seq: 9, reading }.leaf_hash();
    locus_iot::merkle::verify_inclusion(
        &leaf,
        9,
        p["tree_size"].as_u64().unwrap(),
        &unhex_all(&p["proof"]),
        &unhex(&p["root"]),
    )
    .unwrap();
}

/// Post `values` to `agent` as events of `per_event` readings of `device`.
fn post_values(agent: &Agent, device: &str, values: std::ops::Range<u32>, per_event: usize) {
    let values: Vec<f64> = values.map(f64::from).collect();
    for chunk in values.chunks(per_event) {
        let body = event(device, "e", chunk, 1_700_000_000_000_000_000);
        assert_eq!(post(agent, device, &body).unwrap(), 201);
    }
}

/// `(seq, reading)` of every reading `parent` imported from `origin`.
fn imported(parent: &Agent, origin: &str) -> Vec<(u64, Value)> {
    let r = http()
        .get(parent.url(&format!(
            "/api/v1/readings/imports/{origin}?start=0&limit=10000"
        )))
        .send();
    match r {
        Ok(r) if r.status().is_success() => r
            .json::<Vec<Value>>()
            .unwrap()
            .into_iter()
            .map(|v| (v["seq"].as_u64().unwrap(), v["reading"].clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// A metric's value in the Prometheus text of `agent`.
#[test]
fn every_reading_reaches_the_parent_exactly_once_through_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let parent_dir = dir.path().join("parent");
    let child_dir = dir.path().join("child");
    // Imports are node-to-node calls: the parent accepts only nodes of its
    // cluster, so the two gossip, each a seed of the other.
    let parent_gossip = free_udp_addr().to_string();
    let child_gossip = free_udp_addr().to_string();
    let parent_args = [
        "--gossip",
        parent_gossip.as_str(),
        "--seed",
        child_gossip.as_str(),
    ];
    let parent = Agent::start(&parent_dir, &parent_args);
    let parent_addr = parent.addr;
    let config = dir.path().join("child.toml");
    std::fs::write(
        &config,
        format!("[readings]\nexport_url = \"http://{parent_addr}\"\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    // ... and the child is a node of the parent's org (its first start
    // enrolls with a join token; later starts ignore it).
    let join = join_token(&parent.api(), &parent_dir);
    let child_args = [
        "--config",
        config.as_str(),
        "--gossip",
        child_gossip.as_str(),
        "--seed",
        parent_gossip.as_str(),
        "--join",
        join.as_str(),
    ];
    let child = Agent::start(&child_dir, &child_args);
    let child_addr = child.addr;
    let origin = get_json(&child, "/api/v1/node")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let arrived = |parent: &Agent, n: usize| {
        wait_until(
            &format!("{n} readings reached the parent"),
            Duration::from_secs(60),
            || imported(parent, &origin).len() >= n,
        );
    };

    // 1. Readings flow to the parent.
    post_values(&child, "c", 0..50, 1);
    arrived(&parent, 50);

    // 2. The parent dies; the child keeps accepting, and keeps them.
    let mut parent = parent;
    parent.signal(Signal::SIGKILL);
    parent.wait_exit(Duration::from_secs(10));
    drop(parent);
    post_values(&child, "c", 50..150, 1);
    wait_until(
        "the child sees the export fail",
        Duration::from_secs(30),
        || metric(&child, "locus_readings_export_failures_total") >= 1.0,
    );
    assert!(metric(&child, "locus_readings_export_backlog") >= 1.0);
    let parent = Agent::spawn(&parent_dir, parent_addr, &parent_args);
    parent.wait_healthy();
    arrived(&parent, 150);
    wait_until("the outbox is empty", Duration::from_secs(30), || {
        metric(&child, "locus_readings_export_backlog") == 0.0
    });

    // 3. The child dies while readings pour in and its outbox is being
    // sent, and comes back.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(std::sync::atomic::AtomicU32::new(150));
    let publisher = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let url = format!("http://{child_addr}/api/v3/event/svc/climate/c/temperature");
        // Made here: the test's token is this thread's.
        let client = http();
        std::thread::spawn(move || {
            let mut next = 150u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && next < 9_000 {
                let values: Vec<f64> = (next..next + 50).map(f64::from).collect();
                let body = event("c", "e", &values, 1_700_000_000_000_000_000);
                match client.post(&url).json(&body).send() {
                    Ok(r) if r.status().as_u16() == 201 => {
                        next += 50;
                        acked.store(next, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        })
    };
    wait_until(
        "the burst flows to the parent",
        Duration::from_secs(60),
        || imported(&parent, &origin).len() > 1500,
    );
    let backlog = metric(&child, "locus_readings_export_backlog");
    let mut child = child;
    child.signal(Signal::SIGKILL);
    child.wait_exit(Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    drop(child);
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst) as usize;
    let at_kill = imported(&parent, &origin).len();
    eprintln!(
        "child killed with {acked} readings acknowledged, {at_kill} at the parent, a backlog of {backlog}"
    );
    // Also the worst moment to die: after the parent stored a batch, before
    // the child committed its cursor. Put the cursor back as that crash
    // would have left it; the batch goes again and is stored once.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute('UPDATE export_cursors SET next = MAX(0, next - 700)')\n\
             c.commit()\n",
        )
        .arg(child_dir.join("locus.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = Agent::spawn(&child_dir, child_addr, &child_args);
    child.wait_healthy();
    // What the child stored: every reading it acknowledged, maybe a few
    // more that were committed as it died.
    let mut mine: Vec<(u64, Value)> = readings(&child, "c")
        .into_iter()
        .map(|v| (v["seq"].as_u64().unwrap(), v["reading"].clone()))
        .collect();
    mine.sort_by_key(|(s, _)| *s);
    assert!(
        mine.len() >= acked,
        "{} stored < {acked} acknowledged",
        mine.len()
    );
    arrived(&parent, mine.len());

    // Every reading of the child, once, as the child sealed it.
    let got = imported(&parent, &origin);
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..mine.len() as u64).collect::<Vec<_>>());
    assert_eq!(got, mine);
    let summary = get_json(&parent, "/api/v1/readings/imports");
    assert_eq!(summary[0]["origin"], origin.as_str());
    assert_eq!(summary[0]["count"], mine.len());
    assert_eq!(summary[0]["next_seq"], mine.len());
    assert_eq!(
        summary[0]["verifier_key"],
        get_json(&child, "/api/v1/readings/checkpoint")["verifier_key"]
    );
    let duplicates = metric(
        &parent,
        "locus_readings_imported_total{result=\"duplicate\"}",
    );
    eprintln!("the parent was sent {duplicates} readings again and stored none twice");
    assert!(duplicates >= 700.0, "{duplicates}");
}

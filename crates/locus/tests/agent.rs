//! The agent as a user meets it: the real binary, real sockets, real signals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use locus_testkit::*;
use nix::sys::signal::Signal;

fn meminfo_total_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn cpuinfo_processors() -> u64 {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    text.lines().filter(|l| l.starts_with("processor")).count() as u64
}

#[test]
fn every_endpoint_answers_and_the_inventory_matches_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("node"), &[]);
    let client = http();

    let health = get_json(&agent, "/healthz");
    assert_eq!(health["status"], "ok");
    let id = health["node"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 20);

    let node = get_json(&agent, "/api/v1/node");
    assert_eq!(node["id"], id.as_str());
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(node["generation"], 1);
    assert_eq!(node["api_addr"], agent.addr.to_string());
    assert_eq!(node["public_key"].as_str().unwrap().len(), 64);
    let inv = &node["inventory"];
    assert_eq!(
        inv["memory"]["total_bytes"].as_u64().unwrap(),
        meminfo_total_bytes()
    );
    assert_eq!(
        inv["cpu"]["logical_cores"].as_u64().unwrap(),
        cpuinfo_processors()
    );
    assert_eq!(inv["cpu"]["arch"], std::env::consts::ARCH);
    assert!(inv["disk"]["total_bytes"].as_u64().unwrap() > 0);
    let interfaces = inv["interfaces"].as_array().unwrap();
    let lo = interfaces
        .iter()
        .find(|i| i["name"] == "lo")
        .expect("lo is listed");
    assert_eq!(lo["loopback"], true);
    assert!(
        lo["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "127.0.0.1")
    );
    let sysfs_usb = std::fs::read_dir("/sys/bus/usb/devices")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().contains(':'))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        inv["usb"].as_array().unwrap().len(),
        sysfs_usb,
        "USB devices agree with sysfs"
    );
    let sysfs_power = std::fs::read_dir("/sys/class/power_supply")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(inv["power"].as_array().unwrap().len(), sysfs_power);

    let devices = get_json(&agent, "/api/v1/devices");
    assert!(devices.is_array());

    let metrics = client.get(agent.url("/metrics")).send().unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().unwrap();
    for needle in [
        "locus_build_info{",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "locus_generation 1",
        "locus_http_requests_total{method=\"GET\",route=\"/api/v1/node\",status=\"200\"} 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }

    let doc = get_json(&agent, "/api/v1/openapi.json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/healthz", "/metrics", "/api/v1/node", "/api/v1/devices"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let ui = client.get(agent.url("/api/v1/docs/")).send().unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.text().unwrap().contains("swagger"), "Swagger UI page");

    let missing = client.get(agent.url("/api/v1/nothing")).send().unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/v1/nothing")
    );
    let wrong = client.delete(agent.url("/api/v1/node")).send().unwrap();
    assert_eq!(wrong.status(), 405);
    let body: serde_json::Value = wrong.json().unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(body["error"].get("details").is_some());

    assert!(agent.stop().success());
}

#[test]
fn a_restart_keeps_the_node_id_and_raises_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let first = Agent::start(&data, &[]);
    let id = get_json(&first, "/api/v1/node")["id"].clone();
    assert!(first.stop().success());

    let second = Agent::start(&data, &[]);
    let node = get_json(&second, "/api/v1/node");
    assert_eq!(node["id"], id);
    assert_eq!(node["generation"], 2);
    assert!(
        !second.logs().contains("did not stop cleanly"),
        "{}",
        second.logs()
    );

    // A crash (SIGKILL) is noticed at the next start, and the id survives it.
    second.signal(Signal::SIGKILL);
    drop(second);
    let third = Agent::start(&data, &[]);
    let node = get_json(&third, "/api/v1/node");
    assert_eq!(node["id"], id);
    assert_eq!(node["generation"], 3);
    assert!(
        third.logs().contains("previous run did not stop cleanly"),
        "{}",
        third.logs()
    );
}

#[test]
fn a_corrupt_key_stops_the_agent_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    std::fs::create_dir_all(&data).unwrap();
    let key = data.join("node.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let addr = free_addr().to_string();
    let (code, stderr) = agent_fails(&data, &["--listen", &addr]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("node.key is corrupt"), "{stderr}");
    assert!(stderr.contains("left untouched"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"
    );
}

#[test]
fn an_invalid_config_names_the_key_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("locus.toml");
    std::fs::write(
        &config,
        "name = \"pi\"\n\n[site]\nname = \"garden\"\nlatitude = 123.0\n",
    )
    .unwrap();
    let (code, stderr) = agent_fails(
        &dir.path().join("node"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 5"), "{stderr}");
    assert!(stderr.contains("site.latitude"), "{stderr}");
    assert!(stderr.contains("123"), "{stderr}");

    std::fs::write(&config, "[listen]\napi = \"127.0.0.1:7400\"\nbogus = 1\n").unwrap();
    let (code, stderr) = agent_fails(
        &dir.path().join("node"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("unknown field `bogus`"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("node").exists(),
        "a bad config touches no data"
    );
}

#[test]
fn a_config_file_sets_name_site_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("locus.toml");
    std::fs::write(
        &config,
        "name = \"pi-garden\"\nseeds = [\"127.0.0.9:7401\"]\n[site]\nname = \"garden\"\nlatitude = 48.1\nlongitude = -1.6\n[labels]\nsolar = \"yes\"\n[energy]\nsource = \"solar_battery\"\n",
    )
    .unwrap();
    let agent = Agent::start(
        &dir.path().join("node"),
        &["--config", config.to_str().unwrap()],
    );
    let node = get_json(&agent, "/api/v1/node");
    assert_eq!(node["name"], "pi-garden");
    assert_eq!(node["site"]["name"], "garden");
    assert_eq!(node["site"]["latitude"], 48.1);
    assert_eq!(node["labels"]["solar"], "yes");
    assert_eq!(node["seeds"][0], "127.0.0.9:7401");
    assert_eq!(node["energy"]["source"], "solar_battery");
}

#[test]
fn a_busy_port_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = agent_fails(&dir.path().join("node"), &["--listen", &addr]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("the API address {addr} is already in use")),
        "{stderr}"
    );
}

#[test]
fn two_agents_cannot_share_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let _first = Agent::start(&data, &[]);
    let addr = free_addr().to_string();
    let (code, stderr) = agent_fails(&data, &["--listen", &addr]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is in use by another locus agent (pid"),
        "{stderr}"
    );
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&dir.path().join("node"), &[]);
    // A request whose headers are not finished yet when the signal arrives.
    let mut conn = TcpStream::connect(agent.addr).unwrap();
    conn.write_all(
        format!(
            "GET /api/v1/node HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n",
            agent.token().unwrap()
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    agent.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the old one is served.
    assert!(
        TcpStream::connect(agent.addr).is_err(),
        "listener still open after SIGTERM"
    );
    conn.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let status = agent.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(
        agent.logs().contains("node stopped cleanly"),
        "{}",
        agent.logs()
    );
}

//! LwM2M over DTLS 1.2 with PSK on real agents, against clients nobody
//! here wrote: Debian's `coap-client-gnutls` (libcoap on GnuTLS) registers
//! and bootstraps with a thing's PSK, and is refused with a wrong key, an
//! unknown identity or another thing's endpoint; aiocoap on tinydtls
//! (`crates/locus-things/tests/lwm2m_client.py`) is bootstrapped over coaps
//! to the node's coaps server, registers there, is observed into readings
//! and takes Read, Write and Execute, and is refused over plain CoAP and
//! with a wrong key; random datagrams to the coaps ports are counted and
//! harm nothing.
//!
//! `scripts/test.sh` installs libcoap3-bin and the Python venv
//! (`target/pyenv`, aiocoap and DTLSSocket).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use locus_testkit::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A PSK thing `name` with identity `{name}-id` and key `{name}-secret`
/// (written in hex, as the spec takes it), registered at `agent`.
fn add_psk_thing(agent: &Agent, dir: &std::path::Path, name: &str) {
    let key: String = format!("{name}-secret")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
name = "{name}"
protocol = "lwm2m"
credentials = {{ psk_identity = "{name}-id", psk_key = "{key}" }}
[[resources]]
name = "temperature"
path = "3303/0/5700"
unit = "Cel"
[[resources]]
name = "light"
path = "3311/0/5850"
type = "bool"
access = "rw"
[[resources]]
name = "reset"
path = "3303/0/5605"
access = "x"
"#
        ),
    )
    .unwrap();
    ok(&cli(agent, &["thing", "add", path.to_str().unwrap()]));
}

fn addr(node: &Value, key: &str) -> String {
    node[key]
        .as_str()
        .unwrap_or_else(|| panic!("the node shows no {key}: {node}"))
        .to_owned()
}

/// Run libcoap's client (`coap-client-gnutls` or `-notls`); its output and
/// log, which name each message's code (`c:2.01`).
fn coap_client(tool: &str, args: &[&str]) -> String {
    let out: Output = Command::new(tool)
        .args(["-v", "6", "-B", "3"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool}: {e}; scripts/test.sh installs it (Debian's libcoap3-bin)")
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Register of `endpoint` over coaps, with PSK `identity` and `key`.
fn register_over_dtls(server: &str, identity: &str, key: &str, endpoint: &str) -> String {
    coap_client(
        "coap-client-gnutls",
        &[
            "-m",
            "post",
            "-u",
            identity,
            "-k",
            key,
            "-t",
            "40",
            "-e",
            "</1/0>,</3/0>",
            &format!("coaps://{server}/rd?ep={endpoint}&lt=60&lwm2m=1.1&b=U"),
        ],
    )
}

fn refused(agent: &Agent, role: &str, reason: &str) -> f64 {
    metric(
        agent,
        &format!("locus_lwm2m_dtls_refused_total{{reason=\"{reason}\",role=\"{role}\"}}"),
    )
}

#[test]
fn coap_client_on_gnutls_registers_and_bootstraps_with_its_psk_only() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    add_psk_thing(&agent, dir.path(), "meter-1");
    add_psk_thing(&agent, dir.path(), "meter-2");
    let node = get_json(&agent, "/api/v1/node");
    let server = addr(&node, "lwm2m_dtls_addr");
    let bootstrap = addr(&node, "lwm2m_bootstrap_dtls_addr");

    // A wrong key, an unknown identity: no registration, each counted.
    let out = register_over_dtls(&server, "meter-1-id", "not-the-key", "meter-1");
    assert!(!out.contains("c:2.01"), "{out}");
    let out = register_over_dtls(&server, "nobody", "meter-1-secret", "meter-1");
    assert!(!out.contains("c:2.01"), "{out}");
    wait_until("both refusals counted", WAIT, || {
        refused(&agent, "server", "wrong_key") >= 1.0
            && refused(&agent, "server", "unknown_identity") >= 1.0
    });
    assert_eq!(metric(&agent, "locus_lwm2m_registrations"), 0.0);

    // The right key, but another thing's endpoint: 4.03, counted.
    let out = register_over_dtls(&server, "meter-1-id", "meter-1-secret", "meter-2");
    assert!(out.contains("c:4.03"), "{out}");
    assert_eq!(
        metric(
            &agent,
            "locus_lwm2m_rejected_registrations_total{reason=\"wrong_identity\"}"
        ),
        1.0
    );

    // Its own: 2.01 Created, and registered.
    let started = Instant::now();
    let out = register_over_dtls(&server, "meter-1-id", "meter-1-secret", "meter-1");
    eprintln!(
        "coap-client-gnutls: handshake + Register + close over loopback in {:?}",
        started.elapsed()
    );
    assert!(out.contains("c:2.01"), "{out}");
    assert!(out.contains("Location-Path:rd"), "{out}");
    wait_until("the registration counted", WAIT, || {
        metric(&agent, "locus_lwm2m_registrations") == 1.0
    });
    assert!(
        agent
            .logs()
            .contains("LWM2M client registered endpoint=\"meter-1\""),
        "{}",
        agent.logs()
    );

    // Over plain CoAP the PSK thing is refused, and told why.
    let out = coap_client(
        "coap-client-notls",
        &[
            "-m",
            "post",
            "-t",
            "40",
            "-e",
            "</1/0>",
            &format!(
                "coap://{}/rd?ep=meter-1&lt=60&b=U",
                addr(&node, "lwm2m_addr")
            ),
        ],
    );
    assert!(out.contains("c:4.03"), "{out}");
    assert!(
        out.contains("thing \"meter-1\" has a PSK: register over coaps"),
        "{out}"
    );

    // A Bootstrap-Request over coaps: 2.04 Changed.
    let out = coap_client(
        "coap-client-gnutls",
        &[
            "-m",
            "post",
            "-u",
            "meter-1-id",
            "-k",
            "meter-1-secret",
            &format!("coaps://{bootstrap}/bs?ep=meter-1"),
        ],
    );
    assert!(out.contains("c:2.04"), "{out}");
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_aiocoap_client_on_tinydtls_is_bootstrapped_observed_and_commanded_over_coaps() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    add_psk_thing(&agent, dir.path(), "thermo-s");
    let node = get_json(&agent, "/api/v1/node");
    let bootstrap = format!("coaps://{}", addr(&node, "lwm2m_bootstrap_dtls_addr"));
    let server = format!("coaps://{}", addr(&node, "lwm2m_dtls_addr"));
    let key = hex("thermo-s-secret");
    let client = Lwm2mClient::start(
        &bootstrap,
        "thermo-s",
        &["--psk-identity", "thermo-s-id", "--psk-key", &key],
    );
    wait_until("the client registers over coaps", WAIT, || {
        client.count("registered") == 1
    });
    // The bootstrap, over DTLS, wrote the coaps server and the thing's PSK.
    let write = client
        .events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "bootstrap-write" && e["bootstrap_server"] == false)
        .cloned()
        .unwrap_or_else(|| panic!("no Security write; the client said:\n{}", client.said()));
    assert_eq!(write["server_uri"], server.as_str());
    assert_eq!(write["security_mode"], 0, "PSK");
    assert_eq!(write["psk_identity"], "thermo-s-id");
    assert_eq!(write["psk_key_bytes"], "thermo-s-secret".len());
    assert_eq!(client.last("registered")["server_uri"], server.as_str());
    // Its session is counted (the gauge follows within a sweep).
    wait_until("one DTLS session counted", WAIT, || {
        metric(&agent, "locus_lwm2m_dtls_sessions{role=\"server\"}") == 1.0
    });

    // Observed over the session: notifications become readings.
    wait_until("observed temperatures are stored", WAIT, || {
        readings(&agent, "thermo-s").len() >= 3
    });
    let r = &readings(&agent, "thermo-s")[0]["reading"];
    assert_eq!(r["resource"], "temperature");
    assert_eq!(r["unit"], "Cel");

    // Read, Write and Execute reach it over its session.
    let read: Value = serde_json::from_str(&ok(&cli(
        &agent,
        &["--json", "thing", "cmd", "thermo-s", "temperature"],
    )))
    .unwrap();
    assert!(read["value"].is_number(), "{read}");
    ok(&cli(&agent, &["thing", "cmd", "thermo-s", "light", "on"]));
    wait_until("the client saw the write", WAIT, || {
        client.count("write") == 1
    });
    assert_eq!(client.last("write")["path"], "/3311/0/5850");
    assert_eq!(client.last("write")["value"], true);
    ok(&cli(&agent, &["thing", "cmd", "thermo-s", "reset", "now"]));
    wait_until("the client saw the execute", WAIT, || {
        client.count("execute") >= 1
    });
    assert_eq!(client.last("execute")["path"], "/3303/0/5605");
}

#[test]
fn a_psk_thing_is_refused_over_plain_coap_with_a_wrong_key_and_as_another_thing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    add_psk_thing(&agent, dir.path(), "door-1");
    add_psk_thing(&agent, dir.path(), "door-2");
    let node = get_json(&agent, "/api/v1/node");

    // Over plain CoAP the bootstrap server refuses it: it would write its
    // key to whoever asks.
    let plain = Lwm2mClient::start(
        &format!("coap://{}", addr(&node, "lwm2m_bootstrap_addr")),
        "door-1",
        &[],
    );
    wait_until("the plain bootstrap is refused", WAIT, || {
        plain.count("bootstrap-requested") >= 1
    });
    let answer = plain.last("bootstrap-requested");
    assert_eq!(answer["code"], "4.03 Forbidden", "{answer}");
    assert!(
        answer["diagnostic"]
            .as_str()
            .unwrap()
            .contains("has a PSK: bootstrap over coaps"),
        "{answer}"
    );
    assert_eq!(plain.count("bootstrap-write"), 0);
    drop(plain);

    let bootstrap = format!("coaps://{}", addr(&node, "lwm2m_bootstrap_dtls_addr"));
    // Door 2's key, asking as door 1: refused at the Bootstrap-Request.
    let other = Lwm2mClient::start(
        &bootstrap,
        "door-1",
        &[
            "--psk-identity",
            "door-2-id",
            "--psk-key",
            &hex("door-2-secret"),
        ],
    );
    wait_until("the bootstrap as another thing is refused", WAIT, || {
        other.count("bootstrap-requested") >= 1
    });
    assert_eq!(other.last("bootstrap-requested")["code"], "4.03 Forbidden");
    assert_eq!(other.count("bootstrap-write"), 0);
    drop(other);

    // A wrong key: no session, nothing written, counted.
    let wrong = Lwm2mClient::start(
        &bootstrap,
        "door-1",
        &["--psk-identity", "door-1-id", "--psk-key", &hex("guess")],
    );
    wait_until("the wrong key is refused and counted", WAIT, || {
        refused(&agent, "bootstrap", "wrong_key") >= 1.0
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(wrong.count("bootstrap-requested"), 0, "{}", wrong.said());
    assert_eq!(wrong.count("bootstrap-write"), 0);
    for reason in ["psk_required", "wrong_identity"] {
        assert!(
            metric(
                &agent,
                &format!("locus_lwm2m_rejected_registrations_total{{reason=\"{reason}\"}}")
            ) >= 1.0,
            "{reason}"
        );
    }
    assert_eq!(metric(&agent, "locus_lwm2m_registrations"), 0.0);
}

#[test]
fn random_datagrams_to_the_coaps_ports_are_counted_and_harm_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    add_psk_thing(&agent, dir.path(), "probe-1");
    let node = get_json(&agent, "/api/v1/node");
    let ports = [
        addr(&node, "lwm2m_dtls_addr"),
        addr(&node, "lwm2m_bootstrap_dtls_addr"),
    ];
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Bounded: 20 batches of 50, each counted before the next is sent.
    const BATCHES: usize = 20;
    const BATCH: usize = 50;
    for batch in 0..BATCHES {
        for i in 0..BATCH {
            let len = (next() % 1600) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 4 == 0 && d.len() > 13 {
                // Shaped like a DTLS record: handshake or application data,
                // epoch 0 or 1, with the length it has.
                d[0] = if i % 8 == 0 { 22 } else { 23 };
                d[1..3].copy_from_slice(&[0xFE, 0xFD]);
                d[3..5].copy_from_slice(&[0, (i % 2) as u8]);
                let body = (d.len() - 13) as u16;
                d[11..13].copy_from_slice(&body.to_be_bytes());
            }
            socket.send_to(&d, &ports[i % 2]).unwrap();
        }
        let want = ((batch + 1) * BATCH) as f64;
        wait_until("the batch counted", WAIT, || {
            metric(&agent, "locus_lwm2m_dtls_refused_total") >= want
        });
    }
    assert!(refused(&agent, "server", "bad_record") > 0.0);
    assert!(refused(&agent, "bootstrap", "bad_record") > 0.0);
    assert_eq!(
        metric(&agent, "locus_lwm2m_dtls_sessions"),
        0.0,
        "no session from garbage"
    );
    // Still serving: a real client registers.
    let out = register_over_dtls(&ports[0], "probe-1-id", "probe-1-secret", "probe-1");
    assert!(out.contains("c:2.01"), "{out}");
    let health = http().get(agent.url("/healthz")).send().unwrap();
    assert!(health.status().is_success());
}

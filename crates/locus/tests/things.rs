//! Things end to end on real agents, with MQTT clients nobody here wrote
//! (Debian's `mosquitto_pub` and `mosquitto_sub`): the registry over the
//! CLI, per-thing logins, readings durable before PUBACK, refusals that
//! never store anything, commands, and a manager change between two nodes.

use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locus_testkit::*;
use serde_json::Value;

const PASSWORD: &str = "change-me-please";

fn thing_file(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
name = "{name}"
protocol = "mqtt"
credentials = {{ password = "{PASSWORD}" }}
[[resources]]
name = "temperature"
unit = "Cel"
[[resources]]
name = "humidity"
[[resources]]
name = "fan"
type = "bool"
access = "rw"
"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The agent's MQTT broker: (host, port).
fn broker(agent: &Agent) -> (String, String) {
    let node = get_json(agent, "/api/v1/node");
    let addr = node["mqtt_addr"]
        .as_str()
        .expect("the broker runs")
        .to_owned();
    let (h, p) = addr.rsplit_once(':').unwrap();
    (h.to_owned(), p.to_owned())
}

fn mosquitto(tool: &str) -> Command {
    // Debian puts the broker in /usr/sbin, which not every PATH holds.
    let sbin = format!("/usr/sbin/{tool}");
    let tool = if std::path::Path::new(&sbin).exists() {
        sbin.as_str()
    } else {
        tool
    };
    let probe = Command::new(tool).arg("--help").output();
    assert!(
        probe.is_ok(),
        "{tool} is missing: install Debian's mosquitto-clients (scripts/test.sh does)"
    );
    Command::new(tool)
}

/// One QoS 1 publish with mosquitto_pub (it exits 0 only after PUBACK).
fn publish(agent: &Agent, user: &str, password: &str, topic: &str, msg: &str) -> Output {
    let (h, p) = broker(agent);
    mosquitto("mosquitto_pub")
        .args(["-h", &h, "-p", &p, "-u", user, "-P", password, "-q", "1"])
        .args(["-i", &format!("pub-{user}"), "-t", topic, "-m", msg])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn things_log_in_with_their_own_password_and_readings_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    let file = thing_file(dir.path(), "greenhouse-1");
    ok(&cli(&agent, &["thing", "add", &file]));
    let ls = ok(&cli(&agent, &["--json", "thing", "ls"]));
    let ls: Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(ls[0]["name"], "greenhouse-1");
    assert_eq!(ls[0]["password"], true);
    assert!(
        !ls.to_string().contains(PASSWORD),
        "the password leaked: {ls}"
    );
    // The same name twice is refused, naming the manager.
    let again = cli(&agent, &["thing", "add", &file]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let topic = "things/greenhouse-1/readings";
    let out = publish(
        &agent,
        "greenhouse-1",
        PASSWORD,
        topic,
        r#"{"temperature": 21.5, "humidity": 40}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let senml = r#"[{"bn":"","n":"temperature","v":22.25,"t":1700000000}]"#;
    assert!(
        publish(&agent, "greenhouse-1", PASSWORD, topic, senml)
            .status
            .success()
    );

    // Refused: a wrong password and an unknown thing (CONNACK 4), another
    // thing's topic, a payload that is not JSON, an undeclared resource.
    // None of them stores anything; each is counted.
    let wrong = publish(
        &agent,
        "greenhouse-1",
        "not-the-password",
        topic,
        "{\"temperature\": 1}",
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("bad user name or password"));
    let unknown = publish(
        &agent,
        "intruder",
        PASSWORD,
        "things/intruder/readings",
        "{\"x\": 1}",
    );
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("bad user name or password"));
    for (t, m) in [
        ("things/other/readings", r#"{"temperature": 2}"#),
        (topic, "[{\"n\": \"temperature\", \"v\": "),
        (topic, r#"{"pressure": 1013}"#),
        (topic, r#"[{"n": "temperature", "v": 1, "vs": "two"}]"#),
    ] {
        let out = publish(&agent, "greenhouse-1", PASSWORD, t, m);
        assert!(!out.status.success(), "{t} {m} was accepted");
    }
    let stored = readings(&agent, "greenhouse-1");
    let values: Vec<(String, f64)> = stored
        .iter()
        .map(|r| {
            (
                r["reading"]["resource"].as_str().unwrap().to_owned(),
                r["reading"]["value"]["number"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(values.len(), 3, "{stored:?}");
    assert!(values.contains(&("temperature".into(), 22.25)));
    assert!(values.contains(&("humidity".into(), 40.0)));
    // The unit comes from the profile when the payload has none.
    assert!(
        stored
            .iter()
            .all(|r| r["reading"]["resource"] != "temperature" || r["reading"]["unit"] == "Cel")
    );
    assert!(readings(&agent, "intruder").is_empty());
    assert_eq!(
        metric(&agent, "locus_mqtt_refused_total{reason=\"bad_password\"}"),
        1.0
    );
    assert_eq!(
        metric(&agent, "locus_mqtt_refused_total{reason=\"unknown_thing\"}"),
        1.0
    );
    assert_eq!(
        metric(&agent, "locus_mqtt_refused_total{reason=\"topic\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &agent,
            "locus_thing_malformed_total{kind=\"json\",protocol=\"mqtt\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &agent,
            "locus_thing_malformed_total{kind=\"undeclared_resource\",protocol=\"mqtt\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&agent, "locus_thing_readings_total{protocol=\"mqtt\"}"),
        3.0
    );

    // Removed: its login is refused from then on.
    ok(&cli(&agent, &["thing", "rm", "greenhouse-1"]));
    assert!(
        !publish(
            &agent,
            "greenhouse-1",
            PASSWORD,
            topic,
            "{\"temperature\": 3}"
        )
        .status
        .success()
    );
    agent.wait_healthy();
}

/// One QoS 1 publish in MQTT 5: mosquitto_pub exits 0 once the PUBACK
/// arrives, and prints its reason code on stderr when that is a refusal.
fn publish_v5(agent: &Agent, user: &str, password: &str, topic: &str, msg: &str) -> Output {
    let (h, p) = broker(agent);
    mosquitto("mosquitto_pub")
        .args([
            "-V", "mqttv5", "-h", &h, "-p", &p, "-u", user, "-P", password,
        ])
        .args([
            "-q",
            "1",
            "-i",
            &format!("pub5-{user}"),
            "-t",
            topic,
            "-m",
            msg,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn mqtt5_clients_log_in_publish_take_commands_and_are_told_why_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    ok(&cli(
        &agent,
        &["thing", "add", &thing_file(dir.path(), "vent-5")],
    ));
    let topic = "things/vent-5/readings";

    // Accepted: stored before the PUBACK.
    let out = publish_v5(
        &agent,
        "vent-5",
        PASSWORD,
        topic,
        r#"{"temperature": 19.5}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(readings(&agent, "vent-5").len(), 1);

    // A wrong password: CONNACK 134, bad user name or password.
    let wrong = publish_v5(&agent, "vent-5", "not-it", topic, r#"{"temperature": 1}"#);
    assert_eq!(wrong.status.code(), Some(134), "{wrong:?}");
    // Another thing's topic and a payload that is not readings: a PUBACK
    // whose reason code says why (135 not authorised, 153 payload format
    // invalid); nothing is stored and the session is not dropped for it.
    for (t, m, why) in [
        (
            "things/other/readings",
            r#"{"temperature": 2}"#,
            "Not authorized",
        ),
        (
            topic,
            "[{\"n\": \"temperature\", \"v\": ",
            "Payload format invalid",
        ),
        (topic, r#"{"pressure": 1013}"#, "Payload format invalid"),
    ] {
        let out = publish_v5(&agent, "vent-5", PASSWORD, t, m);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("failed: {why}")), "{t} {m}: {err}");
    }
    assert_eq!(readings(&agent, "vent-5").len(), 1);
    // What the broker does not do is said in the CONNACK (maximum QoS 1,
    // no retain): a QoS 2 publish is refused by the client itself, a
    // retained one closes the session; neither is stored. QoS 0 is stored.
    let (h, p) = broker(&agent);
    let extra = |args: &[&str]| {
        mosquitto("mosquitto_pub")
            .args([
                "-V", "mqttv5", "-h", &h, "-p", &p, "-u", "vent-5", "-P", PASSWORD,
            ])
            .args([
                "-i",
                "pub5-extra",
                "-t",
                topic,
                "-m",
                r#"{"temperature": 20.5}"#,
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let qos2 = extra(&["-q", "2"]);
    assert!(
        String::from_utf8_lossy(&qos2.stderr).contains("QoS not supported"),
        "{qos2:?}"
    );
    extra(&["-q", "1", "-r"]);
    // QoS 0 is at most once: a publish followed at once by DISCONNECT may
    // be dropped with the connection, so the client lingers between three.
    extra(&["-q", "0", "--repeat", "3", "--repeat-delay", "0.3"]);
    wait_until("a QoS 0 reading is stored", Duration::from_secs(10), || {
        readings(&agent, "vent-5").len() >= 2
    });
    assert_eq!(
        metric(&agent, "locus_mqtt_refused_total{reason=\"bad_password\"}"),
        1.0
    );
    assert_eq!(
        metric(&agent, "locus_mqtt_refused_total{reason=\"topic\"}"),
        1.0
    );

    // Commands reach an MQTT 5 subscriber; other topics (and shared
    // subscriptions) are refused to it.
    let denied = mosquitto("mosquitto_sub")
        .args([
            "-V", "mqttv5", "-h", &h, "-p", &p, "-u", "vent-5", "-P", PASSWORD,
        ])
        .args([
            "-i",
            "sub5-other",
            "-q",
            "1",
            "-t",
            "things/other/#",
            "-C",
            "1",
            "-W",
            "3",
        ])
        .args(["-t", "$share/g/things/vent-5/commands/#"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("denied"),
        "{denied:?}"
    );
    let sub = mosquitto("mosquitto_sub")
        .args([
            "-V", "mqttv5", "-h", &h, "-p", &p, "-u", "vent-5", "-P", PASSWORD,
        ])
        .args([
            "-i",
            "sub5",
            "-q",
            "1",
            "-t",
            "things/vent-5/commands/#",
            "-v",
            "-C",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the MQTT 5 subscriber is connected",
        Duration::from_secs(10),
        || metric(&agent, "locus_mqtt_sessions") >= 1.0,
    );
    // Its SUBSCRIBE may trail its CONNECT: retry until it is delivered.
    wait_until("the command is delivered", Duration::from_secs(10), || {
        cli(&agent, &["thing", "cmd", "vent-5", "fan", "true"])
            .status
            .success()
    });
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "things/vent-5/commands/fan true"
    );
    agent.wait_healthy();
}

/// paho-mqtt 2 (PyPI), a client nobody here wrote, as a thing in MQTT
/// 3.1.1 and in MQTT 5: login, readings acknowledged once stored, a
/// refused publish answered with its reason (MQTT 5), commands delivered.
#[test]
fn paho_mqtt_things_in_both_versions_publish_and_take_commands() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    let (h, p) = broker(&agent);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh makes the venv",
        python.display()
    );
    for (version, thing) in [("3.1.1", "paho-3"), ("5", "paho-5")] {
        ok(&cli(
            &agent,
            &["thing", "add", &thing_file(dir.path(), thing)],
        ));
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("crates/locus/tests/mqtt_paho.py"))
            .args([
                "--host",
                &h,
                "--port",
                &p,
                "--user",
                thing,
                "--password",
                PASSWORD,
            ])
            .args(["--version", version, "--timeout", "45"])
            .arg("--publish")
            .arg(format!("things/{thing}/readings={{\"temperature\": 18.5}}"))
            .args([
                "--subscribe",
                &format!("things/{thing}/commands/#"),
                "--commands",
                "1",
            ]);
        if version == "5" {
            cmd.arg("--publish")
                .arg(format!("things/{thing}/readings=not json"));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::<Value>::new()));
        let stdout = child.stdout.take().unwrap();
        let seen = events.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    seen.lock().unwrap().push(v);
                }
            }
        });
        let count = |name: &str| {
            events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e["event"] == name)
                .count()
        };
        let pubacks = if version == "5" { 2 } else { 1 };
        wait_until(
            "the publishes are answered",
            Duration::from_secs(20),
            || count("puback") == pubacks,
        );
        // A try waits up to 5 s for the thing's PUBACK: a loaded machine
        // gets several tries.
        wait_until("the command is delivered", Duration::from_secs(30), || {
            cli(&agent, &["thing", "cmd", thing, "fan", "true"])
                .status
                .success()
        });
        assert!(child.wait().unwrap().success());
        reader.join().unwrap();
        let events = events.lock().unwrap().clone();
        let of = |name: &str| -> Vec<Value> {
            events
                .iter()
                .filter(|e| e["event"] == name)
                .cloned()
                .collect()
        };
        assert_eq!(of("connack")[0]["reason"], 0, "{version}: {events:?}");
        assert_eq!(
            of("suback")[0]["reasons"],
            serde_json::json!([1]),
            "{version}"
        );
        let acks = of("puback");
        assert_eq!(acks[0]["reason"], 0, "{version}: {events:?}");
        if version == "5" {
            assert_eq!(acks[1]["reason"], 153, "payload format invalid: {events:?}");
        }
        let cmds = of("command");
        assert_eq!(cmds[0]["topic"], format!("things/{thing}/commands/fan"));
        assert_eq!(cmds[0]["payload"], "true");
        assert_eq!(readings(&agent, thing).len(), 1, "{version}");
    }
    agent.wait_healthy();
}

/// `mosquitto_sub` of a thing's commands with a persistent session
/// (`-c`, fixed client id), for at most `secs` seconds or `count` messages.
fn persistent_sub(agent: &Agent, version: &str, id: &str, count: u32, secs: u32) -> Output {
    let (h, p) = broker(agent);
    mosquitto("mosquitto_sub")
        .args([
            "-V", version, "-h", &h, "-p", &p, "-u", "vent-q", "-P", PASSWORD,
        ])
        .args([
            "-c",
            "-i",
            id,
            "-q",
            "1",
            "-t",
            "things/vent-q/commands/#",
            "-v",
        ])
        .args(["-C", &count.to_string(), "-W", &secs.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A QoS 1 command to a thing that is offline but had a persistent session
/// is stored, reported as queued, survives a SIGKILL of the agent, and is
/// delivered exactly once when the session is back; a clean login discards
/// the session; the queue is bounded per thing.
#[test]
fn a_command_to_an_offline_thing_waits_for_its_persistent_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let mut agent = Agent::start(&data, &[]);
    ok(&cli(
        &agent,
        &["thing", "add", &thing_file(dir.path(), "vent-q")],
    ));
    for (version, id) in [("mqttv311", "keeper-3"), ("mqttv5", "keeper-5")] {
        // The session subscribes, then goes away.
        persistent_sub(&agent, version, id, 1, 1);
        let out = ok(&cli(&agent, &["thing", "cmd", "vent-q", "fan", "true"]));
        assert!(out.contains("queued"), "{version}: {out}");
        let json: Value = serde_json::from_str(&ok(&cli(
            &agent,
            &["--json", "thing", "cmd", "vent-q", "fan", "false"],
        )))
        .unwrap();
        assert_eq!(json["queued"], true, "{json}");
        // Stored, not in memory: the agent dies and comes back.
        agent.signal(nix::sys::signal::Signal::SIGKILL);
        agent.wait_exit(Duration::from_secs(10));
        agent = Agent::start(&data, &[]);
        let got = persistent_sub(&agent, version, id, 2, 10);
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).trim(),
            "things/vent-q/commands/fan true\nthings/vent-q/commands/fan false",
            "{version}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        // Exactly once: nothing more the next time.
        let again = persistent_sub(&agent, version, id, 1, 2);
        assert!(again.stdout.is_empty(), "{version}: {again:?}");
        // A clean login with that client id discards the session.
        let (h, p) = broker(&agent);
        mosquitto("mosquitto_sub")
            .args([
                "-V", version, "-h", &h, "-p", &p, "-u", "vent-q", "-P", PASSWORD,
            ])
            .args(["-i", id, "-t", "things/vent-q/commands/#", "-W", "1"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let gone = cli(&agent, &["thing", "cmd", "vent-q", "fan", "true"]);
        assert!(!gone.status.success(), "{version}: {gone:?}");
        assert!(
            String::from_utf8_lossy(&gone.stderr).contains("no MQTT session"),
            "{version}: {gone:?}"
        );
    }
    // The bound: a persistent session, then more commands than are kept.
    persistent_sub(&agent, "mqttv5", "keeper-bound", 1, 1);
    for i in 0..16 {
        let out = ok(&cli(&agent, &["thing", "cmd", "vent-q", "fan", "true"]));
        assert!(out.contains(&format!("{} command(s) wait", i + 1)), "{out}");
    }
    let full = cli(&agent, &["thing", "cmd", "vent-q", "fan", "true"]);
    assert!(!full.status.success());
    assert!(
        String::from_utf8_lossy(&full.stderr).contains("already has 16 commands queued"),
        "{full:?}"
    );
    let got = persistent_sub(&agent, "mqttv5", "keeper-bound", 16, 10);
    assert_eq!(String::from_utf8_lossy(&got.stdout).lines().count(), 16);
    agent.wait_healthy();
}

/// A `mosquitto_sub` of the thing's commands, printing `topic payload`.
fn subscriber(agent: &Agent, thing: &str, filter: &str) -> (Child, Arc<Mutex<String>>) {
    let (h, p) = broker(agent);
    let mut child = mosquitto("mosquitto_sub")
        .args([
            "-h", &h, "-p", &p, "-u", thing, "-P", PASSWORD, "-q", "1", "-v",
        ])
        .args(["-i", &format!("sub-{thing}"), "-t", filter])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().unwrap();
    let s = seen.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (child, seen)
}

#[test]
fn commands_reach_the_thing_over_mqtt_and_edgex() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    let file = thing_file(dir.path(), "greenhouse-2");
    ok(&cli(&agent, &["thing", "add", &file]));
    // Not connected yet: the command says so.
    let out = cli(&agent, &["thing", "cmd", "greenhouse-2", "fan", "on"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no MQTT session"));

    let (mut sub, seen) = subscriber(&agent, "greenhouse-2", "things/greenhouse-2/commands/#");
    wait_until(
        "the subscription is in place",
        Duration::from_secs(10),
        || {
            cli(&agent, &["thing", "cmd", "greenhouse-2", "fan", "on"])
                .status
                .success()
        },
    );
    let r: Value = serde_json::from_str(&ok(&cli(
        &agent,
        &["--json", "thing", "cmd", "greenhouse-2", "fan", "off"],
    )))
    .unwrap();
    assert_eq!(r["action"], "write");
    assert_eq!(r["value"], false);
    assert!(r["detail"].as_str().unwrap().contains("PUBACK"));
    // A publisher on another connection does not disturb the subscriber.
    let topic = "things/greenhouse-2/readings";
    assert!(
        publish(
            &agent,
            "greenhouse-2",
            PASSWORD,
            topic,
            r#"{"temperature": 19.5}"#
        )
        .status
        .success()
    );
    // EdgeX command API: PUT writes, GET reads (an MQTT thing's newest reading).
    let auth = format!("Authorization: Bearer {}", agent.token().unwrap());
    let put = Command::new("curl")
        .args(["-H", &auth])
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"fan": "true"}"#,
        ])
        .arg(agent.url("/api/v3/device/name/greenhouse-2/fan"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&put.stdout), "200");
    let get = Command::new("curl")
        .args(["-sS", "-H", &auth])
        .arg(agent.url("/api/v3/device/name/greenhouse-2/temperature"))
        .output()
        .unwrap();
    let ev: Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(ev["event"]["readings"][0]["value"], "19.5");
    assert_eq!(ev["event"]["readings"][0]["valueType"], "Float64");
    wait_until(
        "the subscriber saw every command",
        Duration::from_secs(10),
        || {
            let s = seen.lock().unwrap();
            s.contains("things/greenhouse-2/commands/fan false")
                && s.matches("commands/fan true").count() >= 2
        },
    );
    // What the profile forbids is refused before anything is sent.
    let ro = cli(
        &agent,
        &["thing", "cmd", "greenhouse-2", "temperature", "3"],
    );
    assert!(String::from_utf8_lossy(&ro.stderr).contains("read-only"));
    let bad = cli(&agent, &["thing", "cmd", "greenhouse-2", "fan", "maybe"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a boolean"));
    // A thing may subscribe only to its own commands.
    let (h, p) = broker(&agent);
    let other = mosquitto("mosquitto_sub")
        .args([
            "-h",
            &h,
            "-p",
            &p,
            "-u",
            "greenhouse-2",
            "-P",
            PASSWORD,
            "-q",
            "1",
        ])
        .args(["-i", "snoop", "-t", "things/other/#", "-W", "3"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("denied"),
        "{other:?}"
    );
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn every_acknowledged_mqtt_reading_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let agent = Agent::start(&data, &[]);
    for p in 0..4 {
        ok(&cli(
            &agent,
            &["thing", "add", &thing_file(dir.path(), &format!("dev{p}"))],
        ));
    }
    let (h, port) = broker(&agent);
    let addr = agent.addr;
    let acked = kill_under_load(agent, 4, 200, move |p, i| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                &h,
                "-p",
                &port,
                "-u",
                &format!("dev{p}"),
                "-P",
                PASSWORD,
            ])
            .args(["-q", "1", "-t", &format!("things/dev{p}/readings")])
            .args(["-m", &format!("{{\"temperature\": {i}}}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let agent = Agent::spawn(&data, addr, &[]);
    agent.wait_healthy();
    assert_acked_stored(&agent, 4, &acked);
    // The things survived too: they log in again.
    assert!(
        publish(
            &agent,
            "dev0",
            PASSWORD,
            "things/dev0/readings",
            "{\"temperature\": -1}"
        )
        .status
        .success()
    );
}

#[test]
fn a_thing_moves_to_another_manager() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(dir.path(), 1, "lab", &[]);
    let b = member(dir.path(), 2, "field", &[a.gossip]);
    wait_cluster(&[&a, &b], 2);
    let file = thing_file(dir.path(), "mover");
    ok(&cli(&a.agent, &["thing", "add", &file]));
    let topic = "things/mover/readings";
    assert!(
        publish(&a.agent, "mover", PASSWORD, topic, r#"{"temperature": 1}"#)
            .status
            .success()
    );
    // Any node sees it, and forwards calls to its manager.
    wait_until("b sees the thing", Duration::from_secs(15), || {
        cli(&b.agent, &["thing", "inspect", "mover"])
            .status
            .success()
    });
    let t: Value = serde_json::from_str(&ok(&cli(
        &b.agent,
        &["--json", "thing", "attach", "mover", "--node", "w2"],
    )))
    .unwrap();
    assert_eq!(t["generation"], 2);
    let b_id = get_json(&b.agent, "/api/v1/node")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(t["manager"], b_id.as_str());
    // The old manager now refuses the thing (CONNACK 5), the new one takes it.
    let old = publish(&a.agent, "mover", PASSWORD, topic, r#"{"temperature": 2}"#);
    assert!(!old.status.success());
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("not authorised"),
        "{old:?}"
    );
    let new = publish(&b.agent, "mover", PASSWORD, topic, r#"{"temperature": 3}"#);
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    // Readings taken by the new manager are sealed and signed by it (in
    // its log, after the audit entry of the attach call it answered).
    let taken = readings(&b.agent, "mover");
    assert_eq!(taken.len(), 1);
    assert_eq!(readings(&a.agent, "mover").len(), 1);
    let seq = taken[0]["seq"].as_u64().unwrap();
    let key_b = get_json(&b.agent, "/api/v1/readings/checkpoint")["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key_b.starts_with(&format!("locus/{b_id}+")), "{key_b}");
    wait_until("b signs a checkpoint", Duration::from_secs(15), || {
        get_json(&b.agent, "/api/v1/readings/checkpoint")["size"]
            .as_u64()
            .is_some_and(|s| s > seq)
    });
    let bundle = http()
        .get(
            b.agent
                .url(&format!("/api/v1/readings/bundle?start={seq}&count=1")),
        )
        .send()
        .unwrap()
        .text()
        .unwrap();
    let path = dir.path().join("b.json");
    std::fs::write(&path, bundle).unwrap();
    let out = locus(&["verify", path.to_str().unwrap(), "--key", &key_b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Both nodes agree on who manages it, and the old one forwards.
    wait_until("a sees the new manager", Duration::from_secs(15), || {
        get_json(&a.agent, "/api/v1/things/mover")["manager"] == b_id.as_str()
    });
    ok(&cli(&a.agent, &["thing", "rm", "mover"]));
    wait_until(
        "the thing is gone everywhere",
        Duration::from_secs(15),
        || {
            !cli(&b.agent, &["thing", "inspect", "mover"])
                .status
                .success()
                && !cli(&a.agent, &["thing", "inspect", "mover"])
                    .status
                    .success()
        },
    );
}

#[test]
fn an_lwm2m_thing_is_bootstrapped_observed_commanded_and_moved() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(dir.path(), 11, "lab", &[]);
    let b = member(dir.path(), 12, "field", &[a.gossip]);
    wait_cluster(&[&a, &b], 2);
    let file = dir.path().join("thermo.toml");
    std::fs::write(
        &file,
        r#"
name = "thermo-1"
protocol = "lwm2m"
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
"#,
    )
    .unwrap();
    ok(&cli(&a.agent, &["thing", "add", file.to_str().unwrap()]));
    let node_a = get_json(&a.agent, "/api/v1/node");
    let client = Lwm2mClient::start(
        &format!(
            "coap://{}",
            node_a["lwm2m_bootstrap_addr"].as_str().unwrap()
        ),
        "thermo-1",
        &[],
    );
    // Bootstrap-Request → Delete /0, /1 → Write /0/0 (A's server), /1/0 → Finish → Register.
    wait_until("the client registers at a", Duration::from_secs(20), || {
        client.count("registered") == 1
    });
    {
        let ev = client.events.lock().unwrap();
        let order: Vec<&str> = ev.iter().filter_map(|e| e["event"].as_str()).collect();
        let pos = |name: &str| order.iter().position(|e| *e == name).unwrap_or(usize::MAX);
        assert!(
            pos("bootstrap-request") < pos("bootstrap-delete"),
            "{order:?}"
        );
        assert!(
            pos("bootstrap-delete") < pos("bootstrap-write"),
            "{order:?}"
        );
        assert!(
            pos("bootstrap-write") < pos("bootstrap-finish"),
            "{order:?}"
        );
        assert!(pos("bootstrap-finish") < pos("registered"), "{order:?}");
    }
    let uri = client.last("registered")["server_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        uri,
        format!("coap://{}", node_a["lwm2m_addr"].as_str().unwrap())
    );
    // Observed: notifications become readings on a.
    wait_until(
        "a stores observed temperatures",
        Duration::from_secs(20),
        || readings(&a.agent, "thermo-1").len() >= 3,
    );
    let r = &readings(&a.agent, "thermo-1")[0]["reading"];
    assert_eq!(r["resource"], "temperature");
    assert_eq!(r["unit"], "Cel");
    // Commands: Read, Write, Execute over CoAP.
    let read: Value = serde_json::from_str(&ok(&cli(
        &b.agent,
        &["--json", "thing", "cmd", "thermo-1", "temperature"],
    )))
    .unwrap();
    assert!(read["value"].is_number(), "{read}");
    assert!(
        read["detail"]
            .as_str()
            .unwrap()
            .contains("Read /3303/0/5700")
    );
    ok(&cli(&a.agent, &["thing", "cmd", "thermo-1", "light", "on"]));
    wait_until("the client saw the write", Duration::from_secs(10), || {
        client.count("write") == 1
    });
    assert_eq!(client.last("write")["path"], "/3311/0/5850");
    ok(&cli(
        &a.agent,
        &["thing", "cmd", "thermo-1", "reset", "now"],
    ));
    wait_until(
        "the client saw the execute",
        Duration::from_secs(10),
        || client.count("execute") >= 1,
    );
    // Move it to b: a triggers a new bootstrap, which writes b's server.
    ok(&cli(
        &a.agent,
        &["thing", "attach", "thermo-1", "--node", "w12"],
    ));
    wait_until("the client registers at b", Duration::from_secs(30), || {
        client.count("registered") == 2
    });
    let node_b = get_json(&b.agent, "/api/v1/node");
    assert_eq!(
        client.last("registered")["server_uri"],
        format!("coap://{}", node_b["lwm2m_addr"].as_str().unwrap()).as_str()
    );
    assert_eq!(client.count("bootstrap-finish"), 2);
    wait_until(
        "b stores observed temperatures",
        Duration::from_secs(20),
        || readings(&b.agent, "thermo-1").len() >= 2,
    );
    let b_id = node_b["id"].as_str().unwrap();
    let key = get_json(&b.agent, "/api/v1/readings/checkpoint")["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key.starts_with(&format!("locus/{b_id}+")));
}

/// An MQTT 3.1.1 CONNECT with a user name and password, byte by byte.
fn connect_packet(user: &str, password: &str) -> Vec<u8> {
    let field = |s: &str| {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mut body = field("MQTT");
    body.extend_from_slice(&[4, 0xC2, 0, 60]);
    body.extend(field("raw"));
    body.extend(field(user));
    body.extend(field(password));
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

#[test]
fn broken_mqtt_packets_close_the_connection_and_are_counted() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    ok(&cli(
        &agent,
        &["thing", "add", &thing_file(dir.path(), "raw-1")],
    ));
    let (h, p) = broker(&agent);
    let addr = format!("{h}:{p}");
    let closed = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        // Whatever arrives before the close, the stream must end.
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => {}
            }
        }
    };
    // Garbage instead of a CONNECT.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed(&mut s));
    // A good login, then a packet of the reserved type 15.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&connect_packet("raw-1", PASSWORD)).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    s.write_all(&[0xF0, 0x00]).unwrap();
    assert!(closed(&mut s));
    // A PUBLISH whose length runs past what is sent, then the close.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&connect_packet("raw-1", PASSWORD)).unwrap();
    s.read_exact(&mut connack).unwrap();
    s.write_all(&[0x32, 0x7f, 0, 3, b'a']).unwrap();
    drop(s);
    wait_until(
        "the protocol error is counted",
        Duration::from_secs(10),
        || metric(&agent, "locus_mqtt_refused_total{reason=\"protocol\"}") >= 1.0,
    );
    // The broker still serves.
    let out = publish(
        &agent,
        "raw-1",
        PASSWORD,
        "things/raw-1/readings",
        r#"{"temperature": 5}"#,
    );
    assert!(out.status.success());
    assert!(readings(&agent, "raw-1").len() == 1);
    agent.wait_healthy();
}

/// Debian's mosquitto broker on a free loopback port.
struct Mosquitto {
    child: Child,
}

impl Mosquitto {
    fn start(dir: &std::path::Path, port: u16) -> Mosquitto {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = mosquitto("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("mosquitto listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Mosquitto { child }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_external_broker_can_replace_the_embedded_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let broker = Mosquitto::start(dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let agent = Agent::start(&dir.path().join("n"), &["--mqtt-broker", &url]);
    ok(&cli(
        &agent,
        &["thing", "add", &thing_file(dir.path(), "ext-1")],
    ));
    assert_eq!(
        get_json(&agent, "/api/v1/node")["mqtt_addr"],
        format!("127.0.0.1:{port}").as_str()
    );
    let pub_ext = |msg: &str| {
        mosquitto("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-t", "things/ext-1/readings", "-m", msg])
            .output()
            .unwrap()
    };
    // The agent subscribes once it is connected; a reading published after
    // that is stored.
    wait_until(
        "the agent stores a reading from the broker",
        Duration::from_secs(20),
        || {
            pub_ext(r#"{"temperature": 7}"#);
            !readings(&agent, "ext-1").is_empty()
        },
    );
    // Readings of things it does not manage are not kept.
    let other = mosquitto("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "things/stranger/readings", "-m", r#"{"x": 1}"#])
        .output()
        .unwrap();
    assert!(other.status.success());
    // Commands go out through the broker.
    let sub = mosquitto("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v"])
        .args(["-t", "things/ext-1/commands/#", "-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let r = ok(&cli(&agent, &["thing", "cmd", "ext-1", "fan", "on"]));
    assert!(r.contains("PUBACK from the broker"), "{r}");
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "things/ext-1/commands/fan true"
    );
    // The broker restarts: the agent reconnects and takes readings again.
    drop(broker);
    let _broker = Mosquitto::start(dir.path(), port);
    let before = readings(&agent, "ext-1").len();
    wait_until("the agent reconnects", Duration::from_secs(30), || {
        pub_ext(r#"{"temperature": 8}"#);
        readings(&agent, "ext-1").len() > before
    });
    assert!(readings(&agent, "stranger").is_empty());
}

#[test]
fn http_thing_commands_go_to_its_edgex_device_service() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edgex_device_service.py");
    let mut service = Command::new("python3")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(service.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap();
    let file = dir.path().join("pump.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"pump-3\"\nprotocol = \"http\"\nurl = \"http://127.0.0.1:{port}\"\n\
             [[resources]]\nname = \"speed\"\ntype = \"int\"\naccess = \"rw\"\n"
        ),
    )
    .unwrap();
    ok(&cli(&agent, &["thing", "add", file.to_str().unwrap()]));
    let read: Value = serde_json::from_str(&ok(&cli(
        &agent,
        &["--json", "thing", "cmd", "pump-3", "speed"],
    )))
    .unwrap();
    assert_eq!(read["value"], "1200");
    ok(&cli(&agent, &["thing", "cmd", "pump-3", "speed", "900"]));
    let read: Value = serde_json::from_str(&ok(&cli(
        &agent,
        &["--json", "thing", "cmd", "pump-3", "speed"],
    )))
    .unwrap();
    assert_eq!(read["value"], "900");
    let seen: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    assert_eq!(seen[1]["method"], "PUT");
    assert_eq!(seen[1]["value"], "900");
    // A value that is not an int never reaches the device.
    let bad = cli(&agent, &["thing", "cmd", "pump-3", "speed", "fast"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an integer"));
    // The device service gone: the command says the device is unreachable.
    let _ = service.kill();
    let _ = service.wait();
    let gone = cli(&agent, &["thing", "cmd", "pump-3", "speed"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("503"),
        "{gone:?}"
    );
}

/// POST one EdgeX event for `device` to `m` with curl, following
/// redirects and sending the token along: (status, redirects, final URL).
fn curl_event(m: &Member, device: &str, value: f64) -> (u16, u32, String) {
    let body = serde_json::json!({
        "apiVersion": "v3",
        "event": {
            "apiVersion": "v3", "id": format!("ev-{value}"), "deviceName": device,
            "profileName": "valve", "sourceName": "flow", "origin": 1,
            "readings": [{"resourceName": "flow", "valueType": "Float64",
                "value": value.to_string(), "origin": 1}],
        }
    });
    let token = m.agent.token().or_else(test_token).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--location-trusted",
            "--max-time",
            "10",
        ])
        .args(["-w", "%{http_code} %{num_redirects} %{url_effective}"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ])
        .arg(
            m.agent
                .url(&format!("/api/v3/event/valve-svc/valve/{device}/flow")),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split(' ');
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let redirects = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        status,
        redirects,
        parts.next().unwrap_or_default().to_owned(),
    )
}

/// An http thing's device service may post its events to any node: a node
/// that does not manage the thing redirects them (307, kept a POST) to the
/// node that does, which seals them; when that node dies, the events
/// reach the node that adopted the thing.
#[test]
fn an_http_things_events_are_redirected_to_its_manager_and_follow_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(dir.path(), 208, "lab", &[]);
    let b = member(dir.path(), 209, "lab", &[a.gossip]);
    let c = member(dir.path(), 210, "lab", &[a.gossip]);
    wait_cluster(&[&a, &b, &c], 3);
    let file = dir.path().join("valve.toml");
    std::fs::write(
        &file,
        "name = \"valve-1\"\nprotocol = \"http\"\nurl = \"http://127.0.0.1:9\"\n\
         [[resources]]\nname = \"flow\"\ntype = \"float\"\n",
    )
    .unwrap();
    ok(&cli(&a.agent, &["thing", "add", file.to_str().unwrap()]));
    let id = |m: &Member| {
        get_json(&m.agent, "/api/v1/node")["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let manager = |m: &Member| manager_of(m, "valve-1");
    let a_id = id(&a);
    wait_until("b sees a manage it", Duration::from_secs(10), || {
        manager(&b).as_deref() == Some(a_id.as_str())
    });
    let stored_at = |m: &Member| {
        get_json(&m.agent, "/api/v1/readings?thing=valve-1&limit=100")
            .as_array()
            .map_or(0, Vec::len)
    };

    // Posted to b: redirected once, stored and sealed at a.
    let (status, redirects, url) = curl_event(&b, "valve-1", 1.5);
    assert_eq!((status, redirects), (201, 1), "{url}");
    assert!(url.starts_with(&a.agent.api()), "{url}");
    assert_eq!(stored_at(&a), 1);
    // Posted to its manager: stored there at once.
    let (status, redirects, _) = curl_event(&a, "valve-1", 2.5);
    assert_eq!((status, redirects), (201, 0));
    assert_eq!(stored_at(&a), 2);

    // The manager dies: one node adopts the thing; the other redirects.
    let mut a = a;
    a.agent.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = a.agent.wait_exit(Duration::from_secs(5));
    drop(a);
    wait_until("one live node manages it", Duration::from_secs(20), || {
        manager(&b).is_some_and(|m| m != a_id) && manager(&c) == manager(&b)
    });
    let new = manager(&b).unwrap();
    let (adopter, other) = if id(&b) == new { (&b, &c) } else { (&c, &b) };
    let (status, redirects, url) = curl_event(other, "valve-1", 3.5);
    assert_eq!((status, redirects), (201, 1), "{url}");
    assert!(url.starts_with(&adopter.agent.api()), "{url}");
    let (status, redirects, _) = curl_event(adopter, "valve-1", 4.5);
    assert_eq!((status, redirects), (201, 0));
    assert_eq!(stored_at(adopter), 2, "both events sealed by the adopter");
}

/// A thing whose manager dies is taken over by one live node (the
/// rendezvous rule workloads use, keyed by its name): its MQTT login and
/// readings work there; the old manager, back, yields to the newer
/// generation.
#[test]
fn a_dead_managers_thing_is_adopted_by_one_node_and_the_manager_yields_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(dir.path(), 31, "lab", &[]);
    let b = member(dir.path(), 32, "lab", &[a.gossip]);
    let c = member(dir.path(), 33, "lab", &[a.gossip]);
    wait_cluster(&[&a, &b, &c], 3);
    let file = thing_file(dir.path(), "orphan-1");
    ok(&cli(&a.agent, &["thing", "add", &file]));
    let a_id = get_json(&a.agent, "/api/v1/node")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let manager = |m: &Member| manager_of(m, "orphan-1");
    wait_until("b sees a manage it", Duration::from_secs(10), || {
        manager(&b).as_deref() == Some(a_id.as_str())
    });

    let (gossip, api) = (a.gossip, a.agent.addr);
    let mut a = a;
    a.agent.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = a.agent.wait_exit(Duration::from_secs(5));
    drop(a);
    let took = wait_until("one live node manages it", Duration::from_secs(20), || {
        manager(&b).is_some_and(|m| m != a_id) && manager(&c) == manager(&b)
    });
    eprintln!("manager SIGKILL → thing managed elsewhere: {took:?}");
    let new = manager(&b).unwrap();
    let (adopter, other) = if get_json(&b.agent, "/api/v1/node")["id"] == new.as_str() {
        (&b, &c)
    } else {
        (&c, &b)
    };
    let adopted = |m: &Member| {
        m.agent
            .logs()
            .contains("adopting a thing whose manager is gone")
    };
    assert!(adopted(adopter) && !adopted(other), "exactly one adopter");
    let out = publish(
        &adopter.agent,
        "orphan-1",
        PASSWORD,
        "things/orphan-1/readings",
        r#"{"temperature": 19.5}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The old manager returns with its stale copy and yields.
    let a = member_on(dir.path(), 31, "lab", &[b.gossip], gossip, api);
    wait_until(
        "a yields to the newer generation",
        Duration::from_secs(15),
        || manager(&a).as_deref() == Some(new.as_str()),
    );
    assert!(
        a.agent
            .logs()
            .contains("a newer manager holds the thing; yielding")
    );
    let out = publish(
        &a.agent,
        "orphan-1",
        PASSWORD,
        "things/orphan-1/readings",
        r#"{"temperature": 20.5}"#,
    );
    assert!(
        !out.status.success(),
        "the old manager still takes its login"
    );
}

#[test]
fn things_managed_by_a_workload_follow_it_when_it_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    // Only a and c are gateways: the workload can only fail over to c,
    // while the usual successor of a thing is any live node by its name.
    let gateway = dir.path().join("gateway.toml");
    std::fs::write(&gateway, "[labels]\ngateway = \"yes\"\n").unwrap();
    let gateway = gateway.to_str().unwrap();
    let a = member_with(dir.path(), 34, "lab", &[], &["--config", gateway]);
    let marker = format!("locus-things-follow-{}", std::process::id());
    let _cleanup = locus_testkit::KillMarked(marker.clone());
    let spec = serde_json::json!({
        "name": "gw", "kind": "process", "source": "/bin/sh",
        "args": ["-c", format!("while :; do sleep 1; done # {marker}")],
        "placement": {"labels": {"gateway": "yes"}},
    });
    let r = a
        .agent
        .http()
        .post(a.agent.url("/api/v1/workloads"))
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let b = member(dir.path(), 35, "lab", &[a.gossip]);
    let c = member_with(dir.path(), 36, "lab", &[a.gossip], &["--config", gateway]);
    let d = member(dir.path(), 37, "lab", &[a.gossip]);
    wait_cluster(&[&a, &b, &c, &d], 4);
    let id = |m: &Member| {
        get_json(&m.agent, "/api/v1/node")["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a_id, c_id) = (id(&a), id(&c));
    // Four things managed by gw: by their names alone, each would go to
    // b, c or d.
    let names: Vec<String> = (1..=4).map(|i| format!("sensor-{i}")).collect();
    for name in &names {
        let file = thing_file(dir.path(), name);
        ok(&cli(&a.agent, &["thing", "add", &file, "--workload", "gw"]));
    }
    let manager = manager_of;
    wait_until("b sees a manage them", Duration::from_secs(10), || {
        names
            .iter()
            .all(|n| manager(&b, n).as_deref() == Some(a_id.as_str()))
    });
    let mut a = a;
    a.agent.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = a.agent.wait_exit(Duration::from_secs(5));
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &marker])
        .status();
    drop(a);
    let took = wait_until(
        "gw and its things are on c",
        Duration::from_secs(40),
        || {
            names
                .iter()
                .all(|n| manager(&b, n).as_deref() == Some(c_id.as_str()))
        },
    );
    eprintln!("manager SIGKILL → things with their workload on c: {took:?}");
    let w = get_json(&b.agent, "/api/v1/workloads");
    let gw = w
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "gw")
        .cloned()
        .unwrap();
    assert_eq!(gw["owner"], c_id.as_str(), "{gw}");
    for name in &names {
        let out = publish(
            &c.agent,
            name,
            PASSWORD,
            &format!("things/{name}/readings"),
            r#"{"temperature": 18.5}"#,
        );
        assert!(out.status.success(), "{name} cannot log in at c");
    }
    let _ = d;
}

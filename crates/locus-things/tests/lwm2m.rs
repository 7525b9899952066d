//! The LWM2M bootstrap and LWM2M servers against a real client nobody here
//! wrote (aiocoap, driven by `tests/lwm2m_client.py`), and against raw
//! datagrams: malformed CoAP, bad queries, bad link format and bad TLV.
//!
//! The Python interpreter is `target/pyenv/bin/python`, where
//! `scripts/test.sh` installs `scripts/requirements-test.txt` (aiocoap).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
    option_value::{OptionValueU16, OptionValueU32},
};
use ed25519_dalek::SigningKey;
use locus_core::NodeId;
use locus_iot::Value;
use locus_iot::lwm2m::SecurityMode;
use locus_iot::lwm2m::content::ResourceKind;
use locus_readings::{Readings, ReadingsMetrics, ReadingsSetup};
use locus_store::Store;
use locus_things::lwm2m::{Lwm2mError, Settings, Timing};
use locus_things::{Lwm2m, Lwm2mDirectory, Lwm2mResource, Lwm2mThing, ThingMetrics};
use prometheus::Registry;
use serde_json::Value as Json;
use tokio::net::UdpSocket;

/// Longest wait for anything in these tests.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Directory {
    things: Mutex<HashMap<String, Lwm2mThing>>,
}

impl Directory {
    fn add(&self, t: Lwm2mThing) {
        self.things.lock().unwrap().insert(t.endpoint.clone(), t);
    }
}

#[async_trait::async_trait]
impl Lwm2mDirectory for Directory {
    async fn lwm2m_thing(&self, endpoint: &str) -> Option<Lwm2mThing> {
        self.things.lock().unwrap().get(endpoint).cloned()
    }

    async fn lwm2m_psk(&self, _identity: &[u8]) -> Option<Lwm2mThing> {
        // These things have no PSK.
        None
    }
}

fn thing(name: &str, endpoint: &str, managed_here: bool, server: SocketAddr) -> Lwm2mThing {
    Lwm2mThing {
        name: name.into(),
        endpoint: endpoint.into(),
        managed_here,
        server_uri: format!("coap://{server}"),
        security: SecurityMode::NoSec,
        resources: vec![
            Lwm2mResource {
                name: "temperature".into(),
                path: "3303/0/5700".into(),
                unit: Some("Cel".into()),
                observe: true,
                kind: Some(ResourceKind::Float),
            },
            Lwm2mResource {
                name: "switch".into(),
                path: "3311/0/5850".into(),
                unit: None,
                observe: false,
                kind: None,
            },
        ],
    }
}

struct Fixture {
    lwm2m: Lwm2m,
    readings: Readings,
    metrics: Registry,
    directory: Arc<Directory>,
    sealer: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.lwm2m.shutdown();
        for t in &self.sealer {
            t.abort();
        }
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let node = NodeId::from_public_key(&key.verifying_key());
    let metrics = Registry::new();
    let (readings, sealer) = Readings::start(ReadingsSetup {
        store,
        key,
        node,
        metrics: Arc::new(ReadingsMetrics::register(&metrics).unwrap()),
        config: Default::default(),
        signer: std::sync::Arc::new(locus_core::signer::Unsigned),
    })
    .await
    .unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut settings = Settings::new(any, any);
    // Quick retransmissions so that a lost exchange fails within the test.
    settings.timing = Timing {
        ack_timeout: Duration::from_millis(300),
        max_retransmit: 3,
        response_timeout: Duration::from_secs(5),
    };
    settings.lifetime_s = 30;
    let directory = Arc::new(Directory::default());
    let lwm2m = Lwm2m::start(
        settings,
        directory.clone(),
        readings.clone(),
        Arc::new(ThingMetrics::register(&metrics).unwrap()),
    )
    .await
    .unwrap();
    directory.add(thing("thing-1", "dev-1", true, lwm2m.server_addr()));
    Fixture {
        lwm2m,
        readings,
        metrics,
        directory,
        sealer,
        _dir: dir,
    }
}

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs aiocoap there (scripts/requirements-test.txt)",
        python.display()
    );
    python
}

/// The Python LwM2M client, its events and its stdin.
struct Client {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<Json>,
    seen: Vec<Json>,
}

impl Client {
    fn spawn(bootstrap: SocketAddr, endpoint: &str, extra: &[&str]) -> Client {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lwm2m_client.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg("--bootstrap")
            .arg(format!("coap://{bootstrap}"))
            .arg("--endpoint")
            .arg(endpoint)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Json>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("client: {line}"),
                }
            }
        });
        Client {
            child,
            stdin,
            events,
            seen: Vec::new(),
        }
    }

    /// Wait for the next event named `name` that `pred` accepts; events
    /// before it are kept in `seen`.
    async fn wait(&mut self, name: &str, pred: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + WAIT;
        loop {
            while let Ok(e) = self.events.try_recv() {
                self.seen.push(e.clone());
                if e["event"] == name && pred(&e) {
                    return e;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {name} event within {WAIT:?}; the client said:\n{}",
                self.seen
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`Client::wait`], but an event already seen counts too (for
    /// events whose order against others is not fixed).
    async fn wait_seen(&mut self, name: &str, pred: impl Fn(&Json) -> bool) -> Json {
        match self.seen.iter().find(|e| e["event"] == name && pred(e)) {
            Some(e) => e.clone(),
            None => self.wait(name, pred).await,
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns `Some`, at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(metrics: &Registry, line_start: &str) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&metrics.gather())
        .unwrap();
    locus_testkit::sum_metric(&text, line_start)
}

/// What a 1.0 client without an account of its own sees of a bootstrap:
/// it knows no Bootstrap-Discover, so its server account goes to /0/1,
/// clear of where clients keep a Bootstrap-Server account.
const BOOTSTRAP_OF_A_1_0_CLIENT: [&str; 7] = [
    "bootstrap-request",
    "bootstrap-delete /0",
    "bootstrap-delete /1",
    "bootstrap-discover /0",
    "bootstrap-write /0/1",
    "bootstrap-write /1/0",
    "bootstrap-finish",
];

/// The bootstrap steps the client saw from its last Bootstrap-Request on
/// (its answer may arrive after the first Delete, so it is left out).
fn bootstrap_steps(seen: &[Json]) -> Vec<String> {
    let start = seen
        .iter()
        .rposition(|e| e["event"] == "bootstrap-request")
        .expect("a bootstrap request");
    seen[start..]
        .iter()
        .filter(|e| e["event"].as_str().unwrap().starts_with("bootstrap-"))
        .filter(|e| e["event"] != "bootstrap-requested")
        .map(|e| match e["path"].as_str() {
            Some(p) => format!("{} {p}", e["event"].as_str().unwrap()),
            None => e["event"].as_str().unwrap().to_owned(),
        })
        .collect()
}

async fn temperatures(readings: &Readings) -> Vec<f64> {
    readings
        .query(Some("thing-1".into()), 0, i64::MAX, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.reading.resource() == "temperature")
        .map(|r| {
            assert_eq!(r.reading.unit(), Some("Cel"));
            match r.reading.value() {
                Value::Number(x) => *x,
                other => panic!("temperature {other:?}"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_bootstraps_registers_is_observed_and_takes_commands() {
    let f = fixture().await;
    let server_uri = format!("coap://{}", f.lwm2m.server_addr());
    let mut c = Client::spawn(f.lwm2m.bootstrap_addr(), "dev-1", &[]);

    // The bootstrap, in order, with the right contents. This 1.0 client
    // knows no Bootstrap-Discover, so its server account goes to /0/1,
    // clear of where clients keep a Bootstrap-Server account.
    let requested = c.wait("bootstrap-requested", |_| true).await;
    assert_eq!(requested["code"], "2.04 Changed");
    c.wait("registered", |_| true).await;
    assert_eq!(bootstrap_steps(&c.seen), BOOTSTRAP_OF_A_1_0_CLIENT);
    let security = c
        .seen
        .iter()
        .find(|e| e["event"] == "bootstrap-write" && e["path"] == "/0/1")
        .unwrap();
    assert_eq!(security["server_uri"], server_uri.as_str());
    assert_eq!(security["bootstrap_server"], false);
    assert_eq!(security["security_mode"], 3, "NoSec");
    assert_eq!(security["short_server_id"], 1);
    assert_eq!(security["content_format"], 11542);
    let server = c
        .seen
        .iter()
        .find(|e| e["event"] == "bootstrap-write" && e["path"] == "/1/0")
        .unwrap();
    assert_eq!(server["short_server_id"], 1);
    assert_eq!(server["lifetime"], 30);
    assert_eq!(server["binding"], "U");
    let registered = c.seen.last().unwrap().clone();
    assert_eq!(registered["server_uri"], server_uri.as_str());
    let b = eventually("the bootstrap to be recorded as ok", || async {
        let b = f.lwm2m.bootstraps();
        (b.len() == 1 && b[0].result == "ok").then_some(b)
    })
    .await;
    assert_eq!(b[0].endpoint, "dev-1");
    assert_eq!(b[0].thing, "thing-1");

    // Registered, with what it announced.
    let regs = f.lwm2m.registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0].endpoint, "dev-1");
    assert_eq!(regs[0].thing, "thing-1");
    assert_eq!(regs[0].lifetime_s, 30);
    assert_eq!(registered["location"], format!("/rd/{}", regs[0].id));
    assert!(regs[0].objects.contains(&"/3303/0".to_owned()), "{regs:?}");

    // Observed: notifications become stored, queryable readings.
    // The client may take the Observe before it sees its Register answered.
    c.wait_seen("observe", |_| true).await;
    let temps = eventually("three temperature readings", || async {
        let t = temperatures(&f.readings).await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    assert!(temps.windows(2).all(|w| w[0] <= w[1]), "{temps:?}");
    assert!(temps[0] >= 20.0, "{temps:?}");
    assert_eq!(
        f.lwm2m.registrations()[0].observed,
        ["/3303/0/5700".to_owned()]
    );
    // Counted once stored: the count follows the commit the query saw.
    eventually("the readings counted", || async {
        (metric(&f.metrics, "locus_lwm2m_readings_total") >= 3.0).then_some(())
    })
    .await;

    // Commands reach the client.
    let Value::Number(t) = f.lwm2m.read("thing-1", "3303/0/5700").await.unwrap() else {
        panic!("not a number")
    };
    assert!(t >= 20.0);
    f.lwm2m
        .write("thing-1", "/3311/0/5850", &Value::Bool(true))
        .await
        .unwrap();
    let w = c.wait("write", |e| e["path"] == "/3311/0/5850").await;
    assert_eq!(w["value"], true);
    assert_eq!(w["content_format"], 11542, "a known kind is written as TLV");
    f.lwm2m
        .write("thing-1", "3311/0/5706", &Value::String("red".into()))
        .await
        .unwrap();
    let w = c.wait("write", |e| e["path"] == "/3311/0/5706").await;
    assert_eq!(w["value"], "red");
    assert_eq!(w["content_format"], 0, "an unknown kind is written as text");
    f.lwm2m
        .execute("thing-1", "3303/0/5605", Some("0='now'"))
        .await
        .unwrap();
    let x = c.wait("execute", |e| e["path"] == "/3303/0/5605").await;
    assert_eq!(x["args"], "0='now'");

    // What fails says why.
    let e = f.lwm2m.read("thing-1", "3303/0/9999").await.unwrap_err();
    assert!(
        matches!(&e, Lwm2mError::Status { code, .. } if code.starts_with("4.04")),
        "{e}"
    );
    let e = f.lwm2m.read("nobody", "3303/0/5700").await.unwrap_err();
    assert!(matches!(e, Lwm2mError::NotRegistered(_)), "{e}");
    let e = f.lwm2m.read("thing-1", "3303/0").await.unwrap_err();
    assert!(matches!(e, Lwm2mError::Path(_)), "{e}");
    let e = f
        .lwm2m
        .write("thing-1", "3311/0/5850", &Value::String("on".into()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("boolean"), "{e}");

    // Rebootstrap: Execute /1/0/9, a whole new bootstrap, a new registration.
    let first_id = regs[0].id.clone();
    f.lwm2m.rebootstrap("thing-1").await.unwrap();
    c.wait("execute", |e| e["path"] == "/1/0/9").await;
    c.wait("bootstrap-requested", |_| true).await;
    c.wait("registered", |_| true).await;
    assert_eq!(bootstrap_steps(&c.seen), BOOTSTRAP_OF_A_1_0_CLIENT);
    let regs = eventually("one new registration", || async {
        let r = f.lwm2m.registrations();
        (r.len() == 1 && r[0].id != first_id).then_some(r)
    })
    .await;
    assert_eq!(regs[0].thing, "thing-1");
    eventually("two bootstraps recorded", || async {
        let b = f.lwm2m.bootstraps();
        (b.len() == 2 && b.iter().all(|b| b.result == "ok")).then_some(())
    })
    .await;
    // Observed again after the new registration.
    let before = temperatures(&f.readings).await.len();
    eventually("readings after the rebootstrap", || async {
        (temperatures(&f.readings).await.len() >= before + 2).then_some(())
    })
    .await;

    // De-register.
    c.send("deregister");
    let d = c.wait("deregistered", |_| true).await;
    assert_eq!(d["code"], "2.02 Deleted");
    assert!(f.lwm2m.registrations().is_empty());
    let e = f.lwm2m.read("thing-1", "3303/0/5700").await.unwrap_err();
    assert!(matches!(e, Lwm2mError::NotRegistered(_)), "{e}");
    assert_eq!(
        metric(&f.metrics, "locus_lwm2m_bootstraps_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(metric(&f.metrics, "locus_lwm2m_registrations"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_values_foreign_things_and_unknown_endpoints() {
    let f = fixture().await;
    // Text notifications.
    let mut c = Client::spawn(
        f.lwm2m.bootstrap_addr(),
        "dev-1",
        &["--format", "text", "--start-temperature", "-5.5"],
    );
    c.wait("registered", |_| true).await;
    let temps = eventually("two text readings", || async {
        let t = temperatures(&f.readings).await;
        (t.len() >= 2).then_some(t)
    })
    .await;
    assert_eq!(temps[0], -5.5);

    // A thing another node manages is bootstrapped but not registered here.
    f.directory
        .add(thing("thing-2", "dev-2", false, f.lwm2m.server_addr()));
    let mut other = Client::spawn(f.lwm2m.bootstrap_addr(), "dev-2", &["--retry", "30"]);
    let refused = other.wait("register-failed", |_| true).await;
    assert_eq!(refused["code"], "4.03 Forbidden");
    assert!(
        refused["diagnostic"]
            .as_str()
            .unwrap()
            .contains("managed by another node"),
        "{refused}"
    );
    assert_eq!(
        metric(
            &f.metrics,
            "locus_lwm2m_rejected_registrations_total{reason=\"not_managed\"}"
        ),
        1.0
    );

    // An endpoint that is no thing gets 4.00 from the bootstrap server.
    let mut stranger = Client::spawn(f.lwm2m.bootstrap_addr(), "dev-3", &["--retry", "30"]);
    let r = stranger.wait("bootstrap-requested", |_| true).await;
    assert_eq!(r["code"], "4.00 Bad Request");
    assert!(r["diagnostic"].as_str().unwrap().contains("dev-3"), "{r}");
    assert_eq!(f.lwm2m.registrations().len(), 1);
}

/// A raw CoAP peer on a UDP socket.
struct Raw {
    socket: UdpSocket,
    next_mid: u16,
}

impl Raw {
    async fn new() -> Raw {
        Raw {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            next_mid: 100,
        }
    }

    async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).await.unwrap();
    }

    async fn send_packet(&self, to: SocketAddr, p: &Packet) {
        self.send(to, &p.to_bytes().unwrap()).await;
    }

    /// The next datagram that `pred` accepts (others are skipped).
    async fn recv(&self, pred: impl Fn(&Packet) -> bool) -> Packet {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, _) = tokio::time::timeout(left, self.socket.recv_from(&mut buf))
                .await
                .expect("no datagram in time")
                .unwrap();
            let p = Packet::from_bytes(&buf[..n]).unwrap();
            if pred(&p) {
                return p;
            }
        }
    }

    /// Nothing arrives within `d`.
    async fn silent(&self, d: Duration) -> bool {
        let mut buf = [0u8; 2048];
        tokio::time::timeout(d, self.socket.recv_from(&mut buf))
            .await
            .is_err()
    }

    fn request(
        &mut self,
        method: RequestType,
        path: &[&str],
        query: &[&str],
        payload: &[u8],
    ) -> Packet {
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        self.next_mid += 1;
        p.header.message_id = self.next_mid;
        p.set_token(vec![0xAB, self.next_mid as u8]);
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p.payload = payload.to_vec();
        p
    }

    /// Send a confirmable request and wait for its piggybacked answer.
    async fn call(
        &mut self,
        to: SocketAddr,
        method: RequestType,
        path: &[&str],
        query: &[&str],
        payload: &[u8],
    ) -> Packet {
        let req = self.request(method, path, query, payload);
        self.send_packet(to, &req).await;
        let mid = req.header.message_id;
        self.recv(|p| {
            p.header.message_id == mid && p.header.get_type() == MessageType::Acknowledgement
        })
        .await
    }

    /// A notification (or response) of ours to the server.
    fn notification(
        &mut self,
        kind: MessageType,
        token: &[u8],
        seq: Option<u32>,
        payload: &[u8],
    ) -> Packet {
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(kind);
        p.header.code = MessageClass::Response(ResponseType::Content);
        self.next_mid += 1;
        p.header.message_id = self.next_mid;
        p.set_token(token.to_vec());
        if let Some(s) = seq {
            p.add_option_as(CoapOption::Observe, OptionValueU32(s));
        }
        p.add_option_as(CoapOption::ContentFormat, OptionValueU16(11542));
        p.payload = payload.to_vec();
        p
    }
}

fn code(p: &Packet) -> MessageClass {
    p.header.code
}

fn text(p: &Packet) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// TLV of resource 5700 holding an 8-byte float.
fn tlv_float(x: f64) -> Vec<u8> {
    let mut v = vec![0xE8, 0x16, 0x44, 8];
    v.extend_from_slice(&x.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_queries_links_and_tlv_are_answered_and_counted() {
    let f = fixture().await;
    let server = f.lwm2m.server_addr();
    let bootstrap = f.lwm2m.bootstrap_addr();
    let mut raw = Raw::new().await;
    let malformed = |socket: &str| {
        metric(
            &f.metrics,
            &format!("locus_coap_malformed_datagrams_total{{socket=\"{socket}\"}}"),
        )
    };

    // Too short to be CoAP: dropped, counted, not answered.
    raw.send(server, b"hi").await;
    assert!(raw.silent(Duration::from_millis(300)).await);
    assert_eq!(malformed("server"), 1.0);

    // A confirmable request with a reserved option delta (15): 4.00 with
    // its message id and token.
    raw.send(server, &[0x42, 0x02, 0x12, 0x34, 7, 8, 0xF0])
        .await;
    let a = raw.recv(|_| true).await;
    assert_eq!(a.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(code(&a), MessageClass::Response(ResponseType::BadRequest));
    assert_eq!(a.header.message_id, 0x1234);
    assert_eq!(a.get_token(), &[7, 8]);
    assert!(text(&a).contains("malformed"), "{}", text(&a));
    assert_eq!(malformed("server"), 2.0);
    // The same on the bootstrap socket.
    raw.send(bootstrap, &[0x40, 0x02, 0x00, 0x09, 0xDF]).await;
    let a = raw.recv(|_| true).await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::BadRequest));
    assert_eq!(malformed("bootstrap"), 1.0);

    // A ping is answered with a reset; a reserved code class is malformed.
    raw.send(server, &[0x40, 0x00, 0x00, 0x0A]).await;
    let a = raw.recv(|_| true).await;
    assert_eq!(a.header.get_type(), MessageType::Reset);
    assert_eq!(a.header.message_id, 0x0A);
    raw.send(server, &[0x50, 0xE1, 0x00, 0x0B]).await;
    assert!(raw.silent(Duration::from_millis(200)).await);
    assert_eq!(malformed("server"), 3.0);

    // Register with bad queries and bad links: 4.00 naming the problem.
    let a = raw
        .call(
            server,
            RequestType::Post,
            &["rd"],
            &["ep=dev-1", "lt=0"],
            b"</3303/0>",
        )
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::BadRequest));
    assert!(text(&a).contains("lt=\"0\""), "{}", text(&a));
    let a = raw
        .call(server, RequestType::Post, &["rd"], &["lt=60"], b"</3303/0>")
        .await;
    assert!(text(&a).contains("\"ep\" is missing"), "{}", text(&a));
    let a = raw
        .call(
            server,
            RequestType::Post,
            &["rd"],
            &["ep=dev-1"],
            b"</3303/0>,<<",
        )
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::BadRequest));
    assert!(text(&a).contains("link format"), "{}", text(&a));
    let a = raw
        .call(
            server,
            RequestType::Post,
            &["rd"],
            &["ep=nobody"],
            b"</3303/0>",
        )
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::Forbidden));
    assert_eq!(
        metric(&f.metrics, "locus_lwm2m_rejected_registrations_total"),
        4.0
    );
    assert_eq!(
        metric(&f.metrics, "locus_lwm2m_malformed_payloads_total"),
        1.0
    );
    let a = raw
        .call(server, RequestType::Get, &["nothing", "here"], &[], b"")
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::NotFound));
    let a = raw
        .call(bootstrap, RequestType::Post, &["bs"], &[], b"")
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::BadRequest));

    // Register for real from the raw socket; the server observes 5700.
    let a = raw
        .call(
            server,
            RequestType::Post,
            &["rd"],
            &["ep=dev-1", "lt=60"],
            b"</3303/0>",
        )
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::Created));
    let location: Vec<String> = a
        .get_option(CoapOption::LocationPath)
        .unwrap()
        .iter()
        .map(|s| String::from_utf8(s.clone()).unwrap())
        .collect();
    assert_eq!(location[0], "rd");
    let observe = raw
        .recv(|p| code(p) == MessageClass::Request(RequestType::Get))
        .await;
    assert_eq!(observe.get_observe_value(), Some(Ok(0)));
    let path: Vec<&[u8]> = observe
        .get_option(CoapOption::UriPath)
        .unwrap()
        .iter()
        .map(Vec::as_slice)
        .collect();
    assert_eq!(path, [&b"3303"[..], b"0", b"5700"]);
    let token = observe.get_token().to_vec();

    // The first response holds bad TLV: counted, nothing stored, the
    // observation stays.
    let mut first = raw.notification(MessageType::Acknowledgement, &token, Some(1), &[0xC8]);
    first.header.message_id = observe.header.message_id;
    raw.send_packet(server, &first).await;
    eventually("the bad TLV to be counted", || async {
        (metric(&f.metrics, "locus_lwm2m_malformed_payloads_total") == 2.0).then_some(())
    })
    .await;

    // A confirmable notification with cut TLV: acknowledged (nothing to
    // resend), counted.
    let n = raw.notification(
        MessageType::Confirmable,
        &token,
        Some(2),
        &tlv_float(1.0)[..7],
    );
    raw.send_packet(server, &n).await;
    let ack = raw
        .recv(|p| p.header.message_id == n.header.message_id)
        .await;
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(code(&ack), MessageClass::Empty);
    assert_eq!(
        metric(&f.metrics, "locus_lwm2m_malformed_payloads_total"),
        3.0
    );
    assert!(temperatures(&f.readings).await.is_empty());

    // A good one: acknowledged only once stored, so the reading is there
    // as soon as the ACK is.
    let n = raw.notification(MessageType::Confirmable, &token, Some(3), &tlv_float(21.5));
    raw.send_packet(server, &n).await;
    let ack = raw
        .recv(|p| p.header.message_id == n.header.message_id)
        .await;
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(temperatures(&f.readings).await, [21.5]);
    // Its retransmission (the ACK was lost) is acknowledged again, not
    // stored twice.
    raw.send_packet(server, &n).await;
    let again = raw
        .recv(|p| p.header.message_id == n.header.message_id)
        .await;
    assert_eq!(again.header.get_type(), MessageType::Acknowledgement);
    // An older sequence number arriving late is acknowledged, not stored.
    let late = raw.notification(MessageType::Confirmable, &token, Some(2), &tlv_float(-1.0));
    raw.send_packet(server, &late).await;
    raw.recv(|p| p.header.message_id == late.header.message_id)
        .await;
    assert_eq!(temperatures(&f.readings).await, [21.5]);
    // A non-confirmable one is stored too.
    let non = raw.notification(
        MessageType::NonConfirmable,
        &token,
        Some(4),
        &tlv_float(22.0),
    );
    raw.send_packet(server, &non).await;
    eventually("the NON notification", || async {
        (temperatures(&f.readings).await == [21.5, 22.0]).then_some(())
    })
    .await;
    // A notification for a token the server does not know: reset.
    let stray = raw.notification(MessageType::Confirmable, b"zzzz", Some(5), &tlv_float(0.0));
    raw.send_packet(server, &stray).await;
    let rst = raw
        .recv(|p| p.header.message_id == stray.header.message_id)
        .await;
    assert_eq!(rst.header.get_type(), MessageType::Reset);

    // The server still works: Update, then De-register.
    let id = location[1].as_str();
    let a = raw
        .call(server, RequestType::Post, &["rd", id], &["lt=90"], b"")
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::Changed));
    assert_eq!(f.lwm2m.registrations()[0].lifetime_s, 90);
    let a = raw
        .call(server, RequestType::Post, &["rd", "nope"], &[], b"")
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::NotFound));
    let a = raw
        .call(server, RequestType::Delete, &["rd", id], &[], b"")
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::Deleted));
    assert!(f.lwm2m.registrations().is_empty());
    // And after it, a notification of the gone observation is reset.
    let n = raw.notification(MessageType::Confirmable, &token, Some(6), &tlv_float(23.0));
    raw.send_packet(server, &n).await;
    let rst = raw
        .recv(|p| p.header.message_id == n.header.message_id)
        .await;
    assert_eq!(rst.header.get_type(), MessageType::Reset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_expire_after_their_lifetime() {
    let f = fixture().await;
    let server = f.lwm2m.server_addr();
    let mut raw = Raw::new().await;
    // No resource announced that is observed: nothing else to answer.
    let a = raw
        .call(
            server,
            RequestType::Post,
            &["rd"],
            &["ep=dev-1", "lt=1"],
            b"</3/0>",
        )
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::Created));
    assert_eq!(f.lwm2m.registrations().len(), 1);
    eventually("the registration to expire", || async {
        f.lwm2m.registrations().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_answer_fails_the_bootstrap_in_bounded_time() {
    let f = fixture().await;
    let bootstrap = f.lwm2m.bootstrap_addr();
    let mut raw = Raw::new().await;
    let started = Instant::now();
    let a = raw
        .call(bootstrap, RequestType::Post, &["bs"], &["ep=dev-1"], b"")
        .await;
    assert_eq!(code(&a), MessageClass::Response(ResponseType::Changed));
    // The Delete /0 is sent, retransmitted, then given up: 300 ms doubling,
    // 3 retransmissions, the first timeout up to 1.5 times longer.
    let b = eventually("the bootstrap to fail", || async {
        let b = f.lwm2m.bootstraps();
        (b.len() == 1 && b[0].result != "running").then_some(b)
    })
    .await;
    assert!(
        b[0].result.starts_with("failed: step 1 (DELETE /0)"),
        "{}",
        b[0].result
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut deletes = 0;
    while !raw.silent(Duration::from_millis(100)).await {
        deletes += 1;
    }
    assert!(deletes >= 1);
    assert_eq!(
        metric(
            &f.metrics,
            "locus_lwm2m_bootstraps_total{result=\"failed\"}"
        ),
        1.0
    );
}

/// A client that keeps its Bootstrap-Server account at `/0/0` (LwM2M 1.1
/// with Bootstrap-Discover, and 1.0 without) keeps it through the
/// bootstrap, gets its server account elsewhere and registers after one
/// bootstrap; a 1.1 client with no account of its own gets `/0/0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_its_bootstrap_account_and_registers_after_one_bootstrap() {
    let f = fixture().await;
    for (i, (args, security_at)) in [
        (
            &["--lwm2m", "1.1", "--bootstrap-account", "--format", "senml"][..],
            "/0/1",
        ),
        (&["--lwm2m", "1.0", "--bootstrap-account"][..], "/0/1"),
        (&["--lwm2m", "1.1", "--format", "senml"][..], "/0/0"),
        (
            &[
                "--lwm2m",
                "1.1",
                "--bootstrap-account",
                "--format",
                "senml-cbor",
            ][..],
            "/0/1",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let endpoint = format!("keeper-{i}");
        f.directory.add(thing(
            &format!("keeper-{i}"),
            &endpoint,
            true,
            f.lwm2m.server_addr(),
        ));
        let mut c = Client::spawn(f.lwm2m.bootstrap_addr(), &endpoint, args);
        c.wait("registered", |_| true).await;
        let steps = bootstrap_steps(&c.seen);
        let senml = args.contains(&"senml");
        let mut expected = vec![
            "bootstrap-request".to_owned(),
            "bootstrap-delete /0".to_owned(),
            "bootstrap-delete /1".to_owned(),
            "bootstrap-discover /0".to_owned(),
        ];
        // A SenML-only client refuses the TLV write (4.15) and gets the
        // writes again in SenML JSON; a CBOR-only one refuses that too.
        let cbor = args.contains(&"senml-cbor");
        if senml || cbor {
            expected.push(format!("bootstrap-write-refused {security_at}"));
        }
        if cbor {
            expected.push(format!("bootstrap-write-refused {security_at}"));
        }
        expected.extend([
            format!("bootstrap-write {security_at}"),
            "bootstrap-write /1/0".to_owned(),
            "bootstrap-finish".to_owned(),
        ]);
        assert_eq!(steps, expected, "{args:?}");
        let written = c
            .seen
            .iter()
            .filter(|e| e["event"] == "bootstrap-write")
            .map(|e| e["content_format"].as_u64().unwrap())
            .collect::<Vec<_>>();
        let format = if cbor {
            112
        } else if senml {
            110
        } else {
            11542
        };
        assert_eq!(written, [format; 2], "{args:?}");
        let finish = c
            .seen
            .iter()
            .find(|e| e["event"] == "bootstrap-finish")
            .unwrap();
        let kept: &[u16] = if args.contains(&"--bootstrap-account") {
            &[0]
        } else {
            &[]
        };
        assert_eq!(
            finish["bootstrap_accounts"],
            serde_json::json!(kept),
            "{args:?}"
        );
        assert_eq!(
            c.seen
                .iter()
                .filter(|e| e["event"] == "bootstrap-request")
                .count(),
            1,
            "{args:?}: one bootstrap"
        );
        assert!(
            !c.seen
                .iter()
                .any(|e| e["event"] == "bootstrap-account-overwritten"),
            "{args:?}"
        );
        let discover = c
            .seen
            .iter()
            .find(|e| e["event"] == "bootstrap-discover")
            .unwrap();
        assert_eq!(discover["answered"], args.contains(&"1.1"), "{args:?}");
        // Observed into readings, in SenML JSON (1.1) or TLV (1.0).
        let name = format!("keeper-{i}");
        eventually("its temperature readings", || async {
            let n = f
                .readings
                .query(Some(name.clone()), 0, i64::MAX, 10)
                .await
                .unwrap()
                .len();
            (n >= 2).then_some(())
        })
        .await;
        // A Write goes in SenML JSON to a 1.1 client, in TLV to a 1.0 one
        // (the on/off resource is a well-known boolean).
        f.lwm2m
            .write(&name, "3311/0/5850", &Value::Bool(true))
            .await
            .unwrap();
        let w = c.wait("write", |e| e["path"] == "/3311/0/5850").await;
        assert_eq!(w["value"], true, "{args:?}");
        let want = if cbor {
            112
        } else if args.contains(&"1.1") {
            110
        } else {
            11542
        };
        assert_eq!(w["content_format"], want, "{args:?}");
        // It answers a Read (in its format) and an Execute.
        let Value::Number(t) = f.lwm2m.read(&name, "3303/0/5700").await.unwrap() else {
            panic!("{args:?}: the temperature is not a number");
        };
        assert!(t >= 20.0, "{args:?}: {t}");
        f.lwm2m.execute(&name, "3303/0/5605", None).await.unwrap();
        c.wait("execute", |e| e["path"] == "/3303/0/5605").await;
        // A second bootstrap starts in the format the first one ended in.
        if cbor {
            f.lwm2m.rebootstrap(&name).await.unwrap();
            c.wait("execute", |e| e["path"] == "/1/0/9").await;
            c.wait("registered", |_| true).await;
            let again = bootstrap_steps(&c.seen);
            assert!(
                !again
                    .iter()
                    .any(|s| s.starts_with("bootstrap-write-refused")),
                "{again:?}"
            );
        }
    }
}

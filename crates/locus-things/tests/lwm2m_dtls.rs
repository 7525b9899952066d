//! The LWM2M servers over DTLS 1.2 with PSK, in process, against a DTLS
//! client on OpenSSL driven datagram by datagram: a client is served only
//! as the thing its PSK identity names, a PSK thing is refused over plain
//! CoAP, server-initiated requests reach the client over its session, a
//! wrong key, an unknown identity and garbage are refused and counted, a
//! spoofed ClientHello gets one small HelloVerifyRequest and nothing more,
//! and a lost server flight is sent again.
//!
//! `crates/locus/tests/lwm2m_dtls.rs` runs the same servers in real agents
//! against clients nobody here wrote (libcoap's coap-client on GnuTLS,
//! aiocoap on tinydtls).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
    option_value::OptionValueU32,
};
use ed25519_dalek::SigningKey;
use locus_core::NodeId;
use locus_iot::Value;
use locus_iot::lwm2m::SecurityMode;
use locus_iot::lwm2m::content::ResourceKind;
use locus_readings::{Readings, ReadingsMetrics, ReadingsSetup};
use locus_store::Store;
use locus_things::lwm2m::{Settings, Timing};
use locus_things::{Lwm2m, Lwm2mDirectory, Lwm2mResource, Lwm2mThing, ThingMetrics};
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVersion};
use prometheus::Registry;
use tokio::net::UdpSocket;

/// Longest wait for anything in these tests.
const WAIT: Duration = Duration::from_secs(20);
const KEY_1: &[u8] = b"key-of-thing-1";
const KEY_2: &[u8] = b"key-of-thing-2";

#[derive(Default)]
struct Directory {
    things: Mutex<HashMap<String, Lwm2mThing>>,
}

#[async_trait::async_trait]
impl Lwm2mDirectory for Directory {
    async fn lwm2m_thing(&self, endpoint: &str) -> Option<Lwm2mThing> {
        self.things.lock().unwrap().get(endpoint).cloned()
    }

    async fn lwm2m_psk(&self, identity: &[u8]) -> Option<Lwm2mThing> {
        self.things
            .lock()
            .unwrap()
            .values()
            .find(
                |t| matches!(&t.security, SecurityMode::Psk { identity: id, .. } if id == identity),
            )
            .cloned()
    }
}

fn thing(n: u8, security: SecurityMode, server_uri: String) -> Lwm2mThing {
    Lwm2mThing {
        name: format!("thing-{n}"),
        endpoint: format!("dev-{n}"),
        managed_here: true,
        server_uri,
        security,
        resources: vec![Lwm2mResource {
            name: "temperature".into(),
            path: "3303/0/5700".into(),
            unit: Some("Cel".into()),
            observe: true,
            kind: Some(ResourceKind::Float),
        }],
    }
}

fn psk(identity: &str, key: &[u8]) -> SecurityMode {
    SecurityMode::Psk {
        identity: identity.as_bytes().to_vec(),
        key: key.to_vec(),
    }
}

struct Fixture {
    lwm2m: Lwm2m,
    readings: Readings,
    metrics: Registry,
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

/// The servers, with things 1 and 2 (PSK identities `id-1`, `id-2`) and
/// thing 3 (no PSK).
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
    let mut settings = Settings::new(any, any).dtls(any, any);
    settings.timing = Timing {
        ack_timeout: Duration::from_millis(300),
        max_retransmit: 3,
        response_timeout: Duration::from_secs(5),
    };
    let directory = Arc::new(Directory::default());
    let lwm2m = Lwm2m::start(
        settings,
        directory.clone(),
        readings.clone(),
        Arc::new(ThingMetrics::register(&metrics).unwrap()),
    )
    .await
    .unwrap();
    let secure = format!("coaps://{}", lwm2m.server_dtls_addr());
    for t in [
        thing(1, psk("id-1", KEY_1), secure.clone()),
        thing(2, psk("id-2", KEY_2), secure),
        thing(
            3,
            SecurityMode::NoSec,
            format!("coap://{}", lwm2m.server_addr()),
        ),
    ] {
        directory
            .things
            .lock()
            .unwrap()
            .insert(t.endpoint.clone(), t);
    }
    Fixture {
        lwm2m,
        readings,
        metrics,
        sealer,
        _dir: dir,
    }
}

fn metric(metrics: &Registry, line_start: &str) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&metrics.gather())
        .unwrap();
    locus_testkit::sum_metric(&text, line_start)
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

/// A DTLS session's datagrams, one per read and write.
#[derive(Default)]
struct Wire {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let d = self
            .inbox
            .pop_front()
            .ok_or(std::io::ErrorKind::WouldBlock)?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A DTLS 1.2 PSK client session, not yet started.
fn client_session(identity: &str, key: &[u8]) -> SslStream<Wire> {
    let mut b = SslContext::builder(SslMethod::dtls()).unwrap();
    b.set_min_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
    b.set_max_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
    b.set_cipher_list("PSK-AES128-CCM8").unwrap();
    b.set_options(SslOptions::NO_QUERY_MTU);
    let (id, key) = (identity.as_bytes().to_vec(), key.to_vec());
    b.set_psk_client_callback(move |_, _hint, id_out, key_out| {
        id_out[..id.len()].copy_from_slice(&id);
        id_out[id.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    let mut ssl = Ssl::new(&b.build()).unwrap();
    ssl.set_mtu(1200).unwrap();
    ssl.set_connect_state();
    SslStream::new(ssl, Wire::default()).unwrap()
}

fn blocked(e: &openssl::ssl::Error) -> bool {
    matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE)
}

/// A CoAP client over DTLS.
struct Client {
    socket: UdpSocket,
    stream: SslStream<Wire>,
    server: SocketAddr,
    mid: u16,
}

impl Client {
    /// Handshake with `server`, at most `within`.
    async fn connect(
        server: SocketAddr,
        identity: &str,
        key: &[u8],
        within: Duration,
    ) -> Result<Client, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut c = Client {
            socket,
            stream: client_session(identity, key),
            server,
            mid: 0,
        };
        let deadline = Instant::now() + within;
        loop {
            let r = c.stream.do_handshake();
            c.flush().await;
            match r {
                Ok(()) => return Ok(c),
                Err(e) if blocked(&e) => {}
                Err(e) => return Err(e.to_string()),
            }
            if Instant::now() > deadline {
                return Err("the handshake did not finish".into());
            }
            c.datagram(Duration::from_millis(100)).await;
        }
    }

    async fn flush(&mut self) {
        for d in std::mem::take(&mut self.stream.get_mut().outbox) {
            self.socket.send_to(&d, self.server).await.unwrap();
        }
    }

    /// Take one datagram from the server, if one comes within `within`.
    async fn datagram(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 2048];
        match tokio::time::timeout(within, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                self.stream.get_mut().inbox.push_back(buf[..n].to_vec());
                true
            }
            _ => false,
        }
    }

    async fn send(&mut self, p: &Packet) {
        self.stream.ssl_write(&p.to_bytes().unwrap()).unwrap();
        self.flush().await;
    }

    /// The next CoAP message over the session.
    async fn recv(&mut self) -> Packet {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.ssl_read(&mut buf) {
                Ok(n) => return Packet::from_bytes(&buf[..n]).unwrap(),
                Err(e) if blocked(&e) => {}
                Err(e) => panic!("the DTLS session failed: {e}"),
            }
            self.flush().await;
            assert!(Instant::now() < deadline, "no CoAP message within {WAIT:?}");
            self.datagram(Duration::from_millis(100)).await;
        }
    }

    /// Send a confirmable request, and answer the server's own requests
    /// with `serve` until the response comes.
    async fn call(&mut self, mut p: Packet, serve: impl Fn(&Packet) -> Packet) -> Packet {
        self.mid = self.mid.wrapping_add(1);
        p.header.message_id = self.mid;
        self.send(&p).await;
        loop {
            let got = self.recv().await;
            if matches!(got.header.code, MessageClass::Request(_)) {
                let answer = serve(&got);
                self.send(&answer).await;
            } else if got.get_token() == p.get_token() {
                return got;
            }
        }
    }

    /// Answer the server's next request with `serve`; the request.
    async fn serve_one(&mut self, serve: impl Fn(&Packet) -> Packet) -> Packet {
        loop {
            let got = self.recv().await;
            if matches!(got.header.code, MessageClass::Request(_)) {
                let answer = serve(&got);
                self.send(&answer).await;
                return got;
            }
        }
    }
}

fn request(method: RequestType, path: &[&str], query: &[&str], payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.set_token(vec![0xD7, path.len() as u8, query.len() as u8]);
    for s in path {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    p
}

fn register(endpoint: &str) -> Packet {
    let ep = format!("ep={endpoint}");
    request(
        RequestType::Post,
        &["rd"],
        &[&ep, "lt=60", "b=U"],
        b"</1/0>,</3303/0>",
    )
}

/// The client's answer to a Read or Observe: the temperature as text.
fn temperature(req: &Packet, value: &str) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Acknowledgement);
    p.header.message_id = req.header.message_id;
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.set_token(req.get_token().to_vec());
    if req.get_observe_value().is_some() {
        p.add_option_as(CoapOption::Observe, OptionValueU32(1));
    }
    p.set_content_format(coap_lite::ContentFormat::TextPlain);
    p.payload = value.as_bytes().to_vec();
    p
}

fn code(p: &Packet) -> MessageClass {
    p.header.code
}

fn text(p: &Packet) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// A plain CoAP exchange from a fresh UDP socket.
async fn plain_call(server: SocketAddr, mut p: Packet) -> Packet {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    p.header.message_id = 7;
    socket
        .send_to(&p.to_bytes().unwrap(), server)
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    Packet::from_bytes(&buf[..n]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psk_client_is_served_only_as_its_own_thing_and_over_its_session() {
    let f = fixture().await;
    let started = Instant::now();
    let mut c = Client::connect(
        f.lwm2m.server_dtls_addr(),
        "id-1",
        KEY_1,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    eprintln!(
        "DTLS 1.2 PSK-AES128-CCM8 handshake over loopback (cookie exchange and key lookup included): {:?}",
        started.elapsed()
    );
    assert_eq!(
        c.stream.ssl().current_cipher().map(|c| c.name()),
        Some("PSK-AES128-CCM8")
    );

    // Registered as thing 1, then observed over the same session: the
    // value it answers becomes a reading.
    let created = c
        .call(register("dev-1"), |req| temperature(req, "21.5"))
        .await;
    assert_eq!(
        code(&created),
        MessageClass::Response(ResponseType::Created),
        "{}",
        text(&created)
    );
    let regs = f.lwm2m.registrations();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].thing, "thing-1");
    assert_eq!(regs[0].psk_identity.as_deref(), Some("id-1"));
    let observe = c.serve_one(|req| temperature(req, "21.5")).await;
    assert_eq!(observe.get_observe_value().and_then(Result::ok), Some(0));
    eventually("the observed temperature stored", || async {
        let r = f
            .readings
            .query(Some("thing-1".into()), 0, i64::MAX, 10)
            .await
            .unwrap();
        r.iter()
            .any(|r| r.reading.value() == &Value::Number(21.5))
            .then_some(())
    })
    .await;
    eventually("one session counted", || async {
        (metric(&f.metrics, "locus_lwm2m_dtls_sessions{role=\"server\"}") == 1.0).then_some(())
    })
    .await;

    // A command goes over the session too.
    let lwm2m = f.lwm2m.clone();
    let read = tokio::spawn(async move { lwm2m.read("thing-1", "3303/0/5700").await });
    let get = c.serve_one(|req| temperature(req, "22.25")).await;
    assert_eq!(code(&get), MessageClass::Request(RequestType::Get));
    assert_eq!(read.await.unwrap().unwrap(), Value::Number(22.25));

    // Not as another PSK thing, nor as a thing without a PSK.
    for other in ["dev-2", "dev-3"] {
        let refused = c.call(register(other), |req| temperature(req, "0")).await;
        assert_eq!(
            code(&refused),
            MessageClass::Response(ResponseType::Forbidden),
            "{other}"
        );
        assert!(
            text(&refused).contains("PSK identity"),
            "{}",
            text(&refused)
        );
    }
    assert_eq!(
        metric(
            &f.metrics,
            "locus_lwm2m_rejected_registrations_total{reason=\"wrong_identity\"}"
        ),
        2.0
    );

    // Over plain CoAP, thing 1 may neither register nor bootstrap (which
    // would hand out its key), nor touch the DTLS registration.
    let refused = plain_call(f.lwm2m.server_addr(), register("dev-1")).await;
    assert_eq!(
        code(&refused),
        MessageClass::Response(ResponseType::Forbidden)
    );
    assert!(
        text(&refused).contains("thing \"thing-1\" has a PSK: register over coaps"),
        "{}",
        text(&refused)
    );
    let refused = plain_call(
        f.lwm2m.bootstrap_addr(),
        request(RequestType::Post, &["bs"], &["ep=dev-1"], b""),
    )
    .await;
    assert_eq!(
        code(&refused),
        MessageClass::Response(ResponseType::Forbidden)
    );
    assert!(
        text(&refused).contains("bootstrap over coaps"),
        "{}",
        text(&refused)
    );
    let id = regs[0].id.clone();
    let refused = plain_call(
        f.lwm2m.server_addr(),
        request(RequestType::Delete, &["rd", &id], &[], b""),
    )
    .await;
    assert_eq!(
        code(&refused),
        MessageClass::Response(ResponseType::Forbidden)
    );
    assert_eq!(f.lwm2m.registrations().len(), 1);
    assert_eq!(
        metric(
            &f.metrics,
            "locus_lwm2m_rejected_registrations_total{reason=\"psk_required\"}"
        ),
        2.0
    );

    // A thing without a PSK still registers over plain CoAP.
    let created = plain_call(f.lwm2m.server_addr(), register("dev-3")).await;
    assert_eq!(
        code(&created),
        MessageClass::Response(ResponseType::Created)
    );

    // Its own session ends its registration.
    let deleted = c
        .call(
            request(RequestType::Delete, &["rd", &id], &[], b""),
            |req| temperature(req, "0"),
        )
        .await;
    assert_eq!(
        code(&deleted),
        MessageClass::Response(ResponseType::Deleted)
    );
    assert!(
        f.lwm2m.registrations().iter().all(|r| r.thing != "thing-1"),
        "{:?}",
        f.lwm2m.registrations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_over_dtls_writes_the_coaps_server() {
    let f = fixture().await;
    let mut c = Client::connect(
        f.lwm2m.bootstrap_dtls_addr(),
        "id-2",
        KEY_2,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    // Not thing 1's bootstrap: its key is not this client's.
    let refused = c
        .call(
            request(RequestType::Post, &["bs"], &["ep=dev-1"], b""),
            |_| panic!("no bootstrap request may come"),
        )
        .await;
    assert_eq!(
        code(&refused),
        MessageClass::Response(ResponseType::Forbidden)
    );
    let changed = c
        .call(
            request(RequestType::Post, &["bs"], &["ep=dev-2"], b""),
            |_| panic!("the answer comes first"),
        )
        .await;
    assert_eq!(
        code(&changed),
        MessageClass::Response(ResponseType::Changed)
    );
    // Then its requests, over the session: Delete /0, Delete /1,
    // Bootstrap-Discover /0 (answered 4.05 as a 1.0 client), then the
    // Security instance with the coaps server and its own PSK.
    let answer = |req: &Packet, code: ResponseType| {
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(MessageType::Acknowledgement);
        p.header.message_id = req.header.message_id;
        p.header.code = MessageClass::Response(code);
        p.set_token(req.get_token().to_vec());
        p
    };
    for want in ["DELETE /0", "DELETE /1", "GET /0"] {
        let req = c
            .serve_one(|req| {
                answer(
                    req,
                    match req.header.code {
                        MessageClass::Request(RequestType::Delete) => ResponseType::Deleted,
                        _ => ResponseType::MethodNotAllowed,
                    },
                )
            })
            .await;
        let path: Vec<String> = req
            .get_option(CoapOption::UriPath)
            .map(|p| {
                p.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let method = match req.header.code {
            MessageClass::Request(RequestType::Delete) => "DELETE",
            _ => "GET",
        };
        assert_eq!(format!("{method} /{}", path.join("/")), want);
    }
    let write = c.serve_one(|req| answer(req, ResponseType::Changed)).await;
    let instance = locus_iot::tlv::decode(&write.payload).unwrap().remove(0);
    let uri = instance.child(0).unwrap().as_str().unwrap().to_owned();
    assert_eq!(uri, format!("coaps://{}", f.lwm2m.server_dtls_addr()));
    assert_eq!(instance.child(2).unwrap().as_int(), Ok(0), "PSK mode");
    assert_eq!(instance.child(3).unwrap().value(), Ok(&b"id-2"[..]));
    assert_eq!(instance.child(5).unwrap().value(), Ok(KEY_2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_unknown_identities_and_garbage_are_refused_and_counted() {
    let f = fixture().await;
    let server = f.lwm2m.server_dtls_addr();
    let refused = |reason: &str| {
        metric(
            &f.metrics,
            &format!("locus_lwm2m_dtls_refused_total{{reason=\"{reason}\",role=\"server\"}}"),
        )
    };
    // The wrong key: the server cannot read the client's Finished.
    assert!(
        Client::connect(server, "id-1", b"not the key", Duration::from_secs(3))
            .await
            .is_err()
    );
    eventually("the wrong key counted", || async {
        (refused("wrong_key") == 1.0).then_some(())
    })
    .await;
    // An identity no thing has: a fatal alert.
    let err = Client::connect(server, "nobody", KEY_1, Duration::from_secs(3))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("alert"), "{err}");
    eventually("the unknown identity counted", || async {
        (refused("unknown_identity") == 1.0).then_some(())
    })
    .await;
    assert!(f.lwm2m.registrations().is_empty());

    // Random datagrams and records of sessions that do not exist, to both
    // DTLS sockets (a bounded loop).
    let before = metric(&f.metrics, "locus_lwm2m_dtls_refused_total");
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const SENT: usize = 300;
    for i in 0..SENT {
        let len = (next() % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 && d.len() >= 13 {
            // A well-formed application data record of epoch 1.
            d[..5].copy_from_slice(&[23, 0xFE, 0xFD, 0, 1]);
            let body = (d.len() - 13) as u16;
            d[11..13].copy_from_slice(&body.to_be_bytes());
        }
        let to = if i % 2 == 0 {
            server
        } else {
            f.lwm2m.bootstrap_dtls_addr()
        };
        raw.send_to(&d, to).await.unwrap();
    }
    eventually("every datagram refused and counted", || async {
        (metric(&f.metrics, "locus_lwm2m_dtls_refused_total") - before == SENT as f64).then_some(())
    })
    .await;
    assert!(refused("bad_record") > 0.0 && refused("no_session") > 0.0);

    // The server still serves a client with the right key.
    let mut c = Client::connect(server, "id-1", KEY_1, Duration::from_secs(5))
        .await
        .unwrap();
    let created = c
        .call(register("dev-1"), |req| temperature(req, "20"))
        .await;
    assert_eq!(
        code(&created),
        MessageClass::Response(ResponseType::Created)
    );
}

/// The records of a datagram: (content type, first body byte, length).
fn record_kinds(d: &[u8]) -> Vec<(u8, u8, usize)> {
    let mut out = Vec::new();
    let mut rest = d;
    while rest.len() >= 13 {
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let body = &rest[13..13 + len];
        out.push((rest[0], body.first().copied().unwrap_or(0), len));
        rest = &rest[13 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_client_hello_gets_one_small_hello_verify_request() {
    let f = fixture().await;
    let server = f.lwm2m.server_dtls_addr();
    // A real client's first ClientHello, sent from an address that never
    // answers (as a spoofed one would not).
    let mut session = client_session("id-1", KEY_1);
    assert!(session.do_handshake().is_err());
    let hello = session.get_mut().outbox.remove(0);
    assert_eq!(record_kinds(&hello)[0].0, 22);
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    raw.send_to(&hello, server).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, raw.recv_from(&mut buf))
        .await
        .expect("a HelloVerifyRequest")
        .unwrap();
    // Handshake record, HelloVerifyRequest (3), no larger than what came.
    assert_eq!(record_kinds(&buf[..n]), vec![(22, 3, n - 13)]);
    assert!(
        n <= hello.len(),
        "{n} bytes for a {}-byte hello",
        hello.len()
    );
    // Nothing else, ever: no retransmission, no ServerHello.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), raw.recv_from(&mut buf))
            .await
            .is_err()
    );
    // The half-open handshake is dropped after the handshake timeout.
    eventually("the half-open handshake timed out", || async {
        (metric(
            &f.metrics,
            "locus_lwm2m_dtls_refused_total{reason=\"timeout\",role=\"server\"}",
        ) == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        metric(&f.metrics, "locus_lwm2m_dtls_sessions{role=\"server\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_flight_is_sent_again() {
    let f = fixture().await;
    let server = f.lwm2m.server_dtls_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = Client {
        socket,
        stream: client_session("id-1", KEY_1),
        server,
        mid: 0,
    };
    // ClientHello → HelloVerifyRequest → ClientHello with the cookie.
    assert!(c.stream.do_handshake().is_err());
    c.flush().await;
    assert!(c.datagram(WAIT).await);
    assert!(c.stream.do_handshake().is_err());
    c.flush().await;
    // The ServerHello flight is lost on the way.
    assert!(c.datagram(WAIT).await);
    let lost = c.stream.get_mut().inbox.pop_back().unwrap();
    assert_eq!(record_kinds(&lost)[0], (22, 2, record_kinds(&lost)[0].2));
    // The client stays silent: the server sends its flight again on its
    // own timer.
    let started = Instant::now();
    assert!(
        c.datagram(Duration::from_secs(5)).await,
        "no retransmission"
    );
    let waited = started.elapsed();
    eprintln!("the lost ServerHello flight came again after {waited:?}");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    let again = c.stream.get_ref().inbox.back().unwrap().clone();
    assert_eq!(record_kinds(&again)[0].1, 2, "a ServerHello again");
    // And the handshake completes.
    let deadline = Instant::now() + WAIT;
    loop {
        match c.stream.do_handshake() {
            Ok(()) => break,
            Err(e) if blocked(&e) => {}
            Err(e) => panic!("{e}"),
        }
        c.flush().await;
        assert!(Instant::now() < deadline);
        c.datagram(Duration::from_millis(100)).await;
    }
    let created = c
        .call(register("dev-1"), |req| temperature(req, "20"))
        .await;
    assert_eq!(
        code(&created),
        MessageClass::Response(ResponseType::Created)
    );
}

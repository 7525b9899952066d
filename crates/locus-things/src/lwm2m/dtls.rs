//! DTLS 1.2 with pre-shared keys (RFC 6347, RFC 4279: LwM2M's PSK security
//! mode) for the LwM2M sockets, on OpenSSL through the `openssl` crate: one
//! UDP socket, one session per peer address, and plaintext datagrams in and
//! out for the CoAP endpoint above it ([`super::coap::Transport`]).
//!
//! A datagram from an address without a session must be a ClientHello. It
//! is answered with a HelloVerifyRequest carrying a cookie (an HMAC of the
//! address under a secret drawn at the first datagram), and the handshake goes on only
//! with a ClientHello that returns the cookie, so a spoofed source gets one
//! datagram no larger than its own. The key is the one of the thing whose
//! PSK identity the client names: the identity is read from the
//! ClientKeyExchange before OpenSSL sees it, the key is looked up
//! ([`PskKeys`], the thing directory) while the client's datagrams wait, and
//! OpenSSL's PSK callback takes it from there; an unknown identity fails the
//! handshake. The plaintext of an established session goes up with its
//! peer's address and PSK identity, which is what the LwM2M server
//! authenticates a client as. A new handshake from an address that has a
//! session replaces it once the client returned its cookie (RFC 6347
//! §4.2.8).
//!
//! Owns: the socket, the cookie secret, the sessions (at most
//! [`MAX_SESSIONS`] addresses, at most [`MAX_HANDSHAKES`] of them
//! handshaking, each for at most [`HANDSHAKE_TIMEOUT`]; established ones
//! are forgotten after [`IDLE_TIMEOUT`] without a datagram), the key lookups
//! in flight, and the counts of refused handshakes and open sessions.
//!
//! Must never: pass up a datagram that no session decrypted, answer an
//! address that has not returned its cookie with more than the
//! HelloVerifyRequest, speak anything but DTLS 1.2 with a PSK cipher suite,
//! log a key, decide what a PSK identity may act as (the LwM2M server does),
//! wait on a lookup in the receive loop, hold more than its named limits, or
//! panic on any datagram.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslSessionCacheMode, SslStream, SslVersion,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::coap::Peer;
use crate::metrics::ThingMetrics;

/// Most peer addresses with a session or a handshake; beyond, a new
/// handshake is refused.
pub const MAX_SESSIONS: usize = 1024;
/// Most handshakes in progress; beyond, the oldest one whose client has
/// not returned its cookie yet makes room, else the new one is refused.
pub const MAX_HANDSHAKES: usize = 256;
/// Longest a handshake may take, the client's retransmissions included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An established session without a datagram from its peer this long is
/// forgotten (the client handshakes again).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Longest wait for the key of a PSK identity; beyond, the identity is
/// unknown.
pub const KEY_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Most key lookups in flight; beyond, the handshake is refused.
pub const MAX_LOOKUPS: usize = 64;
/// The path MTU the handshake is cut to: OpenSSL cannot ask a socket it
/// does not own.
pub const MTU: u32 = 1200;
/// Largest datagram read; a longer one is not DTLS this server accepts.
pub const MAX_DATAGRAM: usize = 2048;
/// Most records parsed in one datagram.
pub const MAX_RECORDS: usize = 32;
/// Plaintext datagrams waiting for the CoAP endpoint; beyond, they are
/// dropped (CoAP retransmits).
pub const READY_QUEUE: usize = 256;
/// Datagrams of one client held while the key of its identity is looked up.
pub const MAX_PARKED: usize = 8;
/// Datagrams one session may emit in one step (a handshake flight).
pub const MAX_OUTBOX: usize = 64;
/// How often handshakes are re-driven (OpenSSL retransmits a flight the
/// client did not answer in time) and timeouts applied.
pub const SWEEP: Duration = Duration::from_millis(250);
/// The cipher suites offered, in order: LwM2M's mandatory
/// TLS_PSK_WITH_AES_128_CCM_8 first, then GCM and CBC for clients without it.
pub const CIPHERS: &str = "PSK-AES128-CCM8:PSK-AES128-GCM-SHA256:PSK-AES128-CBC-SHA256";
/// Length of a cookie (a truncated HMAC-SHA256).
const COOKIE_LEN: usize = 16;

const CHANGE_CIPHER_SPEC: u8 = 20;
const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const CLIENT_KEY_EXCHANGE: u8 = 16;
/// OpenSSL's state once it read the client's ChangeCipherSpec and waits for
/// its Finished.
const READ_CHANGE_CIPHER_SPEC: &str = "TRCCS";

/// Where the keys of PSK identities come from.
#[async_trait::async_trait]
pub trait PskKeys: Send + Sync + 'static {
    /// The key of the thing with PSK identity `identity`, if exactly one
    /// thing has it.
    async fn psk_key(&self, identity: &[u8]) -> Option<Vec<u8>>;
}

/// Why a DTLS socket could not start.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error("cannot bind the UDP socket: {0}")]
    Bind(#[source] io::Error),
    #[error("cannot set up OpenSSL for DTLS 1.2 with PSK: {0}")]
    Tls(#[from] ErrorStack),
}

/// The datagrams of one session: what came in for OpenSSL to read (one
/// datagram per read), and what OpenSSL wrote (one datagram per write).
#[derive(Default)]
struct Wire {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbox.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Beyond the bound, the datagram is lost as on the network.
        if self.outbox.len() < MAX_OUTBOX {
            self.outbox.push(buf.to_vec());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a handshake's OpenSSL callbacks and the transport share.
struct HandshakeInfo {
    peer: SocketAddr,
    state: Mutex<HandshakeState>,
}

impl HandshakeInfo {
    fn state(&self) -> std::sync::MutexGuard<'_, HandshakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct HandshakeState {
    /// The client returned a valid cookie.
    cookie_ok: bool,
    key: KeyState,
    /// What the PSK callback made of the client's identity: `Some(true)`
    /// when it had the key.
    psk: Option<bool>,
}

#[derive(Default)]
enum KeyState {
    #[default]
    Unasked,
    Looking(Vec<u8>),
    Known {
        identity: Vec<u8>,
        key: Option<Vec<u8>>,
    },
}

struct Handshake {
    stream: SslStream<Wire>,
    info: Arc<HandshakeInfo>,
    started: Instant,
    /// Datagrams held while the key is looked up.
    parked: Option<Vec<Vec<u8>>>,
}

struct Live {
    stream: SslStream<Wire>,
    identity: Arc<[u8]>,
    heard: Instant,
}

/// What the server has with one peer address.
#[derive(Default)]
struct Association {
    live: Option<Live>,
    handshake: Option<Handshake>,
}

#[derive(Default)]
struct Table {
    peers: HashMap<SocketAddr, Association>,
    ready: VecDeque<(Vec<u8>, Peer)>,
}

/// What one step of the sessions leaves to do outside the lock.
#[derive(Default)]
struct Effects {
    send: Vec<(SocketAddr, Vec<u8>)>,
    refused: Vec<(SocketAddr, &'static str)>,
    lookups: Vec<(SocketAddr, Vec<u8>)>,
    established: Vec<(SocketAddr, Arc<[u8]>, Duration)>,
}

impl Effects {
    fn refuse(&mut self, addr: SocketAddr, reason: &'static str) {
        self.refused.push((addr, reason));
    }

    fn outbox(&mut self, addr: SocketAddr, stream: &mut SslStream<Wire>) {
        for d in std::mem::take(&mut stream.get_mut().outbox) {
            self.send.push((addr, d));
        }
    }
}

/// A key looked up.
struct Resolved {
    addr: SocketAddr,
    identity: Vec<u8>,
    key: Option<Vec<u8>>,
}

/// What only the receiving task touches.
struct Driver {
    resolved: mpsc::Receiver<Resolved>,
    sweep: tokio::time::Interval,
    buf: Vec<u8>,
}

/// DTLS 1.2 PSK sessions over one UDP socket.
pub struct Dtls {
    role: &'static str,
    socket: UdpSocket,
    /// Made at the first datagram: a node no DTLS client talks to never
    /// initialises OpenSSL (about 2 MB of its pages).
    tls: std::sync::OnceLock<Tls>,
    keys: Arc<dyn PskKeys>,
    metrics: Arc<ThingMetrics>,
    table: Mutex<Table>,
    lookups: Arc<AtomicUsize>,
    resolved: mpsc::Sender<Resolved>,
    driver: tokio::sync::Mutex<Driver>,
}

/// The OpenSSL side of a socket: its context and the index of the
/// handshake state attached to each session.
struct Tls {
    context: SslContext,
    info: Index<Ssl, Arc<HandshakeInfo>>,
}

impl Tls {
    /// A fresh cookie secret and the context.
    fn new() -> Result<Tls, ErrorStack> {
        let mut secret = [0u8; 32];
        if getrandom::fill(&mut secret).is_err() {
            openssl::rand::rand_bytes(&mut secret)?;
        }
        let info = Ssl::new_ex_index()?;
        Ok(Tls {
            context: context(PKey::hmac(&secret)?, info)?,
            info,
        })
    }
}

/// The cookie of `peer`: HMAC-SHA256 of its address under `secret`, cut to
/// [`COOKIE_LEN`] bytes.
fn cookie(secret: &PKey<Private>, peer: SocketAddr) -> Result<Vec<u8>, ErrorStack> {
    let mut signer = Signer::new(MessageDigest::sha256(), secret)?;
    signer.update(peer.to_string().as_bytes())?;
    let mut mac = signer.sign_to_vec()?;
    mac.truncate(COOKIE_LEN);
    Ok(mac)
}

/// The OpenSSL context: DTLS 1.2 only, the PSK suites of [`CIPHERS`] in the
/// server's order, cookie exchange, no renegotiation, tickets or session
/// cache.
fn context(
    secret: PKey<Private>,
    index: Index<Ssl, Arc<HandshakeInfo>>,
) -> Result<SslContext, ErrorStack> {
    let mut b = SslContext::builder(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_cipher_list(CIPHERS)?;
    b.set_options(
        SslOptions::COOKIE_EXCHANGE
            | SslOptions::NO_QUERY_MTU
            | SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::NO_TICKET,
    );
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    let generate_secret = secret.clone();
    b.set_cookie_generate_cb(move |ssl, out| {
        let Some(info) = ssl.ex_data(index) else {
            return Err(ErrorStack::get());
        };
        let c = cookie(&generate_secret, info.peer)?;
        let n = c.len().min(out.len());
        out[..n].copy_from_slice(&c[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(move |ssl, got| {
        let Some(info) = ssl.ex_data(index) else {
            return false;
        };
        let ok = cookie(&secret, info.peer)
            .is_ok_and(|c| c.len() == got.len() && openssl::memcmp::eq(&c, got));
        if ok {
            info.state().cookie_ok = true;
        }
        ok
    });
    b.set_psk_server_callback(move |ssl, identity, out| {
        let Some(info) = ssl.ex_data(index) else {
            return Ok(0);
        };
        let mut st = info.state();
        let key = match (&st.key, identity) {
            (KeyState::Known { identity, key }, Some(named)) if identity[..] == *named => {
                key.clone()
            }
            _ => None,
        };
        match key {
            Some(k) if !k.is_empty() && k.len() <= out.len() => {
                out[..k.len()].copy_from_slice(&k);
                st.psk = Some(true);
                Ok(k.len())
            }
            // No key: OpenSSL answers unknown_psk_identity.
            _ => {
                st.psk = Some(false);
                Ok(0)
            }
        }
    });
    Ok(b.build())
}

/// One DTLS record of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record<'a> {
    kind: u8,
    epoch: u16,
    body: &'a [u8],
}

/// The records of a datagram (RFC 6347 §4.1), or `None` when it is not a
/// sequence of whole DTLS records of known content types.
fn records(datagram: &[u8]) -> Option<Vec<Record<'_>>> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        if out.len() >= MAX_RECORDS {
            return None;
        }
        let (head, after) = rest.split_first_chunk::<13>()?;
        let [kind, major, _minor, e0, e1, .., l0, l1] = *head;
        if !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&kind) || major != 0xFE {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let body = after.get(..len)?;
        out.push(Record {
            kind,
            epoch: u16::from_be_bytes([e0, e1]),
            body,
        });
        rest = &after[len..];
    }
    (!out.is_empty()).then_some(out)
}

/// Whether the datagram starts a handshake: its first record is a
/// ClientHello of epoch 0.
fn is_client_hello(records: &[Record<'_>]) -> bool {
    records.first().is_some_and(|r| {
        r.kind == HANDSHAKE && r.epoch == 0 && r.body.first() == Some(&CLIENT_HELLO)
    })
}

fn u24(b: [u8; 3]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// The PSK identity named by a ClientKeyExchange in these records (RFC 4279
/// §2: `opaque psk_identity<0..2^16-1>`), when its first fragment holds it
/// whole.
fn psk_identity<'a>(records: &[Record<'a>]) -> Option<&'a [u8]> {
    records
        .iter()
        .filter(|r| r.kind == HANDSHAKE && r.epoch == 0)
        .find_map(|r| {
            // Handshake fragments: type, length (3), message_seq (2),
            // fragment_offset (3), fragment_length (3), then the fragment.
            let mut rest = r.body;
            while let Some((head, after)) = rest.split_first_chunk::<12>() {
                let [kind, _, _, _, _, _, o0, o1, o2, f0, f1, f2] = *head;
                let fragment = after.get(..u24([f0, f1, f2]))?;
                if kind == CLIENT_KEY_EXCHANGE && u24([o0, o1, o2]) == 0 {
                    let (len, identity) = fragment.split_first_chunk::<2>()?;
                    return identity.get(..usize::from(u16::from_be_bytes(*len)));
                }
                rest = &after[fragment.len()..];
            }
            None
        })
}

/// Whether these records hold a handshake message under a cipher (the
/// client's Finished).
fn has_encrypted_handshake(records: &[Record<'_>]) -> bool {
    records.iter().any(|r| r.kind == HANDSHAKE && r.epoch > 0)
}

fn would_block(e: &openssl::ssl::Error) -> bool {
    matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dtls {
    /// Bind `addr` for DTLS role `role` (`server`, `bootstrap`), with the
    /// keys of `keys`.
    pub async fn bind(
        role: &'static str,
        addr: SocketAddr,
        keys: Arc<dyn PskKeys>,
        metrics: Arc<ThingMetrics>,
    ) -> Result<Dtls, DtlsError> {
        let socket = UdpSocket::bind(addr).await.map_err(DtlsError::Bind)?;
        let (tx, rx) = mpsc::channel(MAX_LOOKUPS);
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Dtls {
            role,
            socket,
            tls: std::sync::OnceLock::new(),
            keys,
            metrics,
            table: Mutex::new(Table::default()),
            lookups: Arc::new(AtomicUsize::new(0)),
            resolved: tx,
            driver: tokio::sync::Mutex::new(Driver {
                resolved: rx,
                sweep,
                buf: vec![0u8; MAX_DATAGRAM + 1],
            }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// The next plaintext datagram of an established session, with its
    /// peer. Meanwhile it runs the handshakes; meant for one task (the
    /// endpoint's receive loop).
    pub async fn recv(&self) -> (Vec<u8>, Peer) {
        let mut driver = self.driver.lock().await;
        let Driver {
            resolved,
            sweep,
            buf,
        } = &mut *driver;
        loop {
            if let Some(ready) = self.table().ready.pop_front() {
                return ready;
            }
            let effects = tokio::select! {
                r = self.socket.recv_from(buf) => match r {
                    Ok((n, from)) => self.datagram(&buf[..n], from, Instant::now()),
                    Err(e) => {
                        // ICMP errors surface here on some systems.
                        tracing::debug!(role = self.role, error = %e, "DTLS receive error");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                Some(r) = resolved.recv() => {
                    self.lookups.fetch_sub(1, Ordering::Relaxed);
                    self.resolved(r, Instant::now())
                }
                _ = sweep.tick() => self.sweep(Instant::now()),
            };
            self.apply(effects).await;
        }
    }

    /// Send one plaintext datagram over `peer`'s session, which must be
    /// established and authenticated as `peer.identity`.
    pub async fn send(&self, bytes: &[u8], peer: &Peer) -> io::Result<()> {
        let out = {
            let mut t = self.table();
            let Some(a) = t.peers.get_mut(&peer.addr) else {
                return Err(no_session(peer));
            };
            let Some(live) = a
                .live
                .as_mut()
                .filter(|l| peer.identity.as_ref() == Some(&l.identity))
            else {
                return Err(no_session(peer));
            };
            let written = live.stream.ssl_write(bytes);
            let out = std::mem::take(&mut live.stream.get_mut().outbox);
            if let Err(e) = written {
                a.live = None;
                return Err(io::Error::other(format!("DTLS session failed: {e}")));
            }
            out
        };
        for d in out {
            self.socket.send_to(&d, peer.addr).await?;
        }
        Ok(())
    }

    /// Send, count and start what a step left to do.
    async fn apply(&self, fx: Effects) {
        for (addr, d) in fx.send {
            if let Err(e) = self.socket.send_to(&d, addr).await {
                tracing::debug!(role = self.role, %addr, error = %e, "cannot send a DTLS datagram");
            }
        }
        for (addr, reason) in fx.refused {
            self.metrics
                .lwm2m_dtls_refused
                .with_label_values(&[self.role, reason])
                .inc();
            match reason {
                "bad_record" | "no_session" => {
                    tracing::debug!(role = self.role, %addr, reason, "DTLS datagram refused")
                }
                _ => tracing::info!(role = self.role, %addr, reason, "DTLS handshake refused"),
            }
        }
        for (addr, identity, took) in fx.established {
            tracing::info!(
                role = self.role, %addr, identity = %String::from_utf8_lossy(&identity),
                took_ms = took.as_millis() as u64, "DTLS session established"
            );
        }
        for (addr, identity) in fx.lookups {
            let keys = self.keys.clone();
            let tx = self.resolved.clone();
            tokio::spawn(async move {
                let key = tokio::time::timeout(KEY_LOOKUP_TIMEOUT, keys.psk_key(&identity))
                    .await
                    .ok()
                    .flatten();
                let _ = tx
                    .send(Resolved {
                        addr,
                        identity,
                        key,
                    })
                    .await;
            });
        }
    }

    /// A new handshake with `peer`.
    fn handshake(&self, peer: SocketAddr, now: Instant) -> Result<Handshake, ErrorStack> {
        let tls = match self.tls.get() {
            Some(t) => t,
            None => {
                let t = Tls::new()?;
                self.tls.get_or_init(|| t)
            }
        };
        let mut ssl = Ssl::new(&tls.context)?;
        ssl.set_mtu(MTU)?;
        let info = Arc::new(HandshakeInfo {
            peer,
            state: Mutex::default(),
        });
        ssl.set_ex_data(tls.info, info.clone());
        ssl.set_accept_state();
        Ok(Handshake {
            stream: SslStream::new(ssl, Wire::default())?,
            info,
            started: now,
            parked: None,
        })
    }

    /// A datagram from `from`.
    fn datagram(&self, bytes: &[u8], from: SocketAddr, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let Some(recs) = records(bytes).filter(|_| bytes.len() <= MAX_DATAGRAM) else {
            fx.refuse(from, "bad_record");
            return fx;
        };
        let hello = is_client_hello(&recs);
        let mut t = self.table();
        let Table { peers, ready } = &mut *t;
        let known = peers.get(&from);
        let new_peer = known.is_none();
        if new_peer && !hello {
            fx.refuse(from, "no_session");
            return fx;
        }
        if hello && known.is_none_or(|a| a.handshake.is_none()) {
            if new_peer && peers.len() >= MAX_SESSIONS || !make_room(peers, &mut fx) {
                fx.refuse(from, "too_many_sessions");
                return fx;
            }
            match self.handshake(from, now) {
                Ok(h) => peers.entry(from).or_default().handshake = Some(h),
                Err(e) => {
                    tracing::warn!(role = self.role, %from, error = %e, "cannot start a DTLS handshake");
                    return fx;
                }
            }
        }
        let Some(a) = peers.get_mut(&from) else {
            return fx;
        };
        // While a new handshake waits for its cookie, the session it may
        // replace still takes the records of its epoch.
        let to_handshake = match (&a.handshake, &a.live) {
            (Some(_), None) => true,
            (Some(_), Some(_)) => recs.iter().any(|r| r.epoch == 0),
            (None, _) => false,
        };
        if to_handshake {
            self.feed_handshake(a, from, bytes.to_vec(), now, ready, &mut fx);
        } else if let Some(live) = &mut a.live {
            live.stream.get_mut().inbox.push_back(bytes.to_vec());
            if !read_live(live, from, now, ready, &mut fx) {
                a.live = None;
            }
        }
        if a.live.is_none() && a.handshake.is_none() {
            peers.remove(&from);
        }
        fx
    }

    /// Give a datagram to `a`'s handshake, first looking up the key of the
    /// identity its ClientKeyExchange names.
    fn feed_handshake(
        &self,
        a: &mut Association,
        from: SocketAddr,
        datagram: Vec<u8>,
        now: Instant,
        ready: &mut VecDeque<(Vec<u8>, Peer)>,
        fx: &mut Effects,
    ) {
        let Some(h) = a.handshake.as_mut() else {
            return;
        };
        if let Some(parked) = &mut h.parked {
            if parked.len() < MAX_PARKED {
                parked.push(datagram);
            }
            return;
        }
        let Some(recs) = records(&datagram) else {
            return;
        };
        let finished = has_encrypted_handshake(&recs);
        if let Some(identity) = psk_identity(&recs) {
            let mut st = h.info.state();
            let known =
                matches!(&st.key, KeyState::Known { identity: k, .. } if k[..] == *identity);
            if !known {
                if self.lookups.fetch_add(1, Ordering::Relaxed) >= MAX_LOOKUPS {
                    self.lookups.fetch_sub(1, Ordering::Relaxed);
                    drop(st);
                    fx.refuse(from, "busy");
                    a.handshake = None;
                    return;
                }
                st.key = KeyState::Looking(identity.to_vec());
                fx.lookups.push((from, identity.to_vec()));
                drop(st);
                h.parked = Some(vec![datagram]);
                return;
            }
        }
        h.stream.get_mut().inbox.push_back(datagram);
        drive(a, from, finished, now, ready, fx);
    }

    /// The key of an identity arrived: the handshake waiting for it goes on
    /// with the datagrams it held.
    fn resolved(&self, r: Resolved, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let mut t = self.table();
        let Table { peers, ready } = &mut *t;
        let Some(a) = peers.get_mut(&r.addr) else {
            return fx;
        };
        let Some(h) = a.handshake.as_mut() else {
            return fx;
        };
        {
            let mut st = h.info.state();
            if !matches!(&st.key, KeyState::Looking(id) if *id == r.identity) {
                return fx;
            }
            st.key = KeyState::Known {
                identity: r.identity,
                key: r.key,
            };
        }
        for d in h.parked.take().unwrap_or_default() {
            self.feed_handshake(a, r.addr, d, now, ready, &mut fx);
        }
        if a.live.is_none() && a.handshake.is_none() {
            peers.remove(&r.addr);
        }
        fx
    }

    /// Time out handshakes and idle sessions, and re-drive the handshakes
    /// (OpenSSL retransmits a flight whose answer is late).
    fn sweep(&self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let mut t = self.table();
        let Table { peers, ready } = &mut *t;
        for (&addr, a) in peers.iter_mut() {
            if let Some(h) = &a.handshake {
                if now.duration_since(h.started) > HANDSHAKE_TIMEOUT {
                    let reason = if h.info.state().psk == Some(true) {
                        "wrong_key"
                    } else {
                        "timeout"
                    };
                    fx.refuse(addr, reason);
                    a.handshake = None;
                } else if h.parked.is_none() {
                    drive(a, addr, false, now, ready, &mut fx);
                }
            }
            if a.live
                .as_ref()
                .is_some_and(|l| now.duration_since(l.heard) > IDLE_TIMEOUT)
            {
                tracing::debug!(role = self.role, %addr, "idle DTLS session forgotten");
                a.live = None;
            }
        }
        peers.retain(|_, a| a.live.is_some() || a.handshake.is_some());
        self.metrics
            .lwm2m_dtls_sessions
            .with_label_values(&[self.role])
            .set(peers.values().filter(|a| a.live.is_some()).count() as i64);
        fx
    }
}

fn no_session(peer: &Peer) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("no DTLS session with {peer}"),
    )
}

/// Make room for one more handshake: below [`MAX_HANDSHAKES`], or by
/// dropping the oldest one whose client has not returned its cookie.
fn make_room(peers: &mut HashMap<SocketAddr, Association>, fx: &mut Effects) -> bool {
    let handshakes = peers.values().filter(|a| a.handshake.is_some()).count();
    if handshakes < MAX_HANDSHAKES {
        return true;
    }
    let oldest = peers
        .iter()
        .filter_map(|(addr, a)| a.handshake.as_ref().map(|h| (*addr, h)))
        .filter(|(_, h)| !h.info.state().cookie_ok)
        .min_by_key(|(_, h)| h.started)
        .map(|(addr, _)| addr);
    let Some(addr) = oldest else {
        return false;
    };
    fx.refuse(addr, "too_many_sessions");
    if let Some(a) = peers.get_mut(&addr) {
        a.handshake = None;
        if a.live.is_none() {
            peers.remove(&addr);
        }
    }
    true
}

/// Run `a`'s handshake as far as the datagrams it has take it: on success
/// it becomes the session; on failure it is dropped and counted. `finished`:
/// the datagram just given held an encrypted handshake message (the
/// client's Finished).
fn drive(
    a: &mut Association,
    addr: SocketAddr,
    finished: bool,
    now: Instant,
    ready: &mut VecDeque<(Vec<u8>, Peer)>,
    fx: &mut Effects,
) {
    let Some(h) = a.handshake.as_mut() else {
        return;
    };
    let result = h.stream.do_handshake();
    fx.outbox(addr, &mut h.stream);
    match result {
        Ok(()) => {
            let Some(h) = a.handshake.take() else {
                return;
            };
            let Some(identity) = h.stream.ssl().psk_identity().map(Arc::<[u8]>::from) else {
                fx.refuse(addr, "failed");
                return;
            };
            fx.established
                .push((addr, identity.clone(), now.duration_since(h.started)));
            let mut live = Live {
                stream: h.stream,
                identity,
                heard: now,
            };
            // Records that came after the Finished.
            let keep = read_live(&mut live, addr, now, ready, fx);
            a.live = keep.then_some(live);
        }
        Err(e) if would_block(&e) => {
            // OpenSSL drops a Finished it cannot decrypt and waits on: with
            // the client's ChangeCipherSpec read and its Finished refused,
            // the keys differ.
            if finished && h.stream.ssl().state_string() == READ_CHANGE_CIPHER_SPEC {
                fx.refuse(addr, "wrong_key");
                a.handshake = None;
            } else if h.info.state().cookie_ok && a.live.is_some() {
                // RFC 6347 §4.2.8: the client proved its address; its new
                // handshake replaces the old session.
                a.live = None;
            }
        }
        Err(e) => {
            let reason = match h.info.state().psk {
                Some(false) => "unknown_identity",
                Some(true) => "wrong_key",
                None => "failed",
            };
            tracing::debug!(%addr, error = %e, reason, "DTLS handshake failed");
            fx.refuse(addr, reason);
            a.handshake = None;
        }
    }
}

/// Read what `live` has received into `ready`; `false` when the session
/// ended (closed by the peer or failed).
fn read_live(
    live: &mut Live,
    addr: SocketAddr,
    now: Instant,
    ready: &mut VecDeque<(Vec<u8>, Peer)>,
    fx: &mut Effects,
) -> bool {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let keep = loop {
        match live.stream.ssl_read(&mut buf) {
            Ok(n) => {
                live.heard = now;
                if ready.len() < READY_QUEUE {
                    ready.push_back((
                        buf[..n].to_vec(),
                        Peer {
                            addr,
                            identity: Some(live.identity.clone()),
                        },
                    ));
                } else {
                    tracing::debug!(%addr, "DTLS plaintext dropped: the CoAP endpoint is behind");
                }
            }
            Err(e) if would_block(&e) => break true,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "DTLS session ended");
                break false;
            }
        }
    };
    fx.outbox(addr, &mut live.stream);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 0xFE, 0xFD];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0; 6]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn handshake_message(kind: u8, offset: usize, body: &[u8]) -> Vec<u8> {
        let len = |n: usize| [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let mut m = vec![kind];
        m.extend_from_slice(&len(body.len()));
        m.extend_from_slice(&[0, 2]);
        m.extend_from_slice(&len(offset));
        m.extend_from_slice(&len(body.len()));
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn records_split_and_refuse_what_is_not_dtls() {
        let mut d = record(HANDSHAKE, 0, &[CLIENT_HELLO, 1, 2]);
        d.extend(record(APPLICATION_DATA, 1, b"xyz"));
        let recs = records(&d).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(is_client_hello(&recs));
        assert_eq!(
            (recs[1].kind, recs[1].epoch, recs[1].body),
            (23, 1, &b"xyz"[..])
        );
        // Cut, an unknown content type, not DTLS, empty.
        assert!(records(&d[..d.len() - 1]).is_none());
        assert!(records(&record(24, 0, b"")).is_none());
        assert!(records(&[22, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(records(&[]).is_none());
        // Too many records.
        let many: Vec<u8> = (0..=MAX_RECORDS)
            .flat_map(|_| record(APPLICATION_DATA, 1, b""))
            .collect();
        assert!(records(&many).is_none());
    }

    #[test]
    fn the_identity_is_read_from_the_client_key_exchange() {
        let mut cke = vec![0, 5];
        cke.extend_from_slice(b"dev-1");
        let mut body = handshake_message(CLIENT_KEY_EXCHANGE, 0, &cke);
        let mut d = record(HANDSHAKE, 0, &body);
        d.extend(record(CHANGE_CIPHER_SPEC, 0, &[1]));
        d.extend(record(HANDSHAKE, 1, &[0; 40]));
        let recs = records(&d).unwrap();
        assert_eq!(psk_identity(&recs), Some(&b"dev-1"[..]));
        assert!(has_encrypted_handshake(&recs));
        assert!(!is_client_hello(&recs));
        // A later fragment, a cut identity: not read.
        body = handshake_message(CLIENT_KEY_EXCHANGE, 4, &cke);
        assert_eq!(
            psk_identity(&records(&record(HANDSHAKE, 0, &body)).unwrap()),
            None
        );
        body = handshake_message(CLIENT_KEY_EXCHANGE, 0, &cke[..4]);
        assert_eq!(
            psk_identity(&records(&record(HANDSHAKE, 0, &body)).unwrap()),
            None
        );
    }

    proptest::proptest! {
        /// Whatever arrives, reading its records never panics.
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Some(recs) = records(&bytes) {
                let _ = (is_client_hello(&recs), psk_identity(&recs), has_encrypted_handshake(&recs));
            }
        }
    }
}

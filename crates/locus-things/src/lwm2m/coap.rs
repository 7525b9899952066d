//! One CoAP endpoint (RFC 7252) over a datagram [`Transport`] — a UDP
//! socket, or DTLS sessions over one ([`super::dtls`]) — in both roles: it
//! answers requests through a [`Service`] and sends its own confirmable
//! requests, retransmitted until acknowledged. A [`Peer`] is an address
//! and, over DTLS, the PSK identity of its session: a message from one
//! never matches an exchange with another.
//!
//! Owns: the transport, message ids and tokens, the exchanges in flight
//! (matched by token, retransmitted with exponential back-off from
//! [`Timing::ack_timeout`], at most [`Timing::max_retransmit`] times), the
//! deduplication of confirmable messages received (a duplicate gets the
//! answer already sent, or nothing while the first is still being handled),
//! and the handling of malformed datagrams (dropped, counted, answered with
//! 4.00 Bad Request when they are confirmable requests whose header and
//! token can be read).
//!
//! Must never: parse CoAP itself (that is `coap-lite`), wait on a service
//! inside the receive loop, hold more than its named limits of exchanges,
//! requests being handled and remembered messages, or panic on any datagram.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
    option_value::{OptionValueU16, OptionValueU32},
};
use futures_util::future::BoxFuture;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, Semaphore, oneshot};

use super::dtls::Dtls;
use crate::metrics::ThingMetrics;

/// RFC 7252 §4.8: the first retransmission timeout of a confirmable
/// message (before the random factor).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 7252 §4.8: how many times a confirmable message is retransmitted.
pub const MAX_RETRANSMIT: u32 = 4;
/// RFC 7252 §4.8: the first timeout is drawn from `ACK_TIMEOUT` times
/// 1 to this factor.
pub const ACK_RANDOM_FACTOR: f64 = 1.5;
/// How long a request acknowledged with an empty ACK waits for its
/// separate response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// RFC 7252 §4.8.2: how long a received confirmable message is remembered
/// to recognise its retransmissions.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Largest datagram read; a longer one is malformed (RFC 7252 §4.6 asks
/// for messages that fit the path MTU, 1152 bytes of payload or less).
pub const MAX_DATAGRAM: usize = 1500;
/// Most of this endpoint's own requests in flight at once.
pub const MAX_PENDING: usize = 256;
/// Most received requests being handled at once; beyond, 5.03.
pub const MAX_HANDLING: usize = 64;
/// Most received confirmable messages remembered for deduplication.
pub const MAX_DEDUP: usize = 4096;
/// Longest diagnostic payload sent with an error.
pub const MAX_DIAGNOSTIC: usize = 256;

/// Retransmission timing; [`Timing::default`] is RFC 7252's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub ack_timeout: Duration,
    pub max_retransmit: u32,
    pub response_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ack_timeout: ACK_TIMEOUT,
            max_retransmit: MAX_RETRANSMIT,
            response_timeout: RESPONSE_TIMEOUT,
        }
    }
}

/// Why one of this endpoint's requests got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoapError {
    #[error("no acknowledgement after {attempts} transmissions")]
    Timeout { attempts: u32 },
    #[error("acknowledged, but no response came within {0:?}")]
    NoResponse(Duration),
    #[error("the peer reset the exchange")]
    Reset,
    #[error("{MAX_PENDING} requests are already in flight")]
    Busy,
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("cannot send: {0}")]
    Io(String),
}

/// A request this endpoint sends.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: RequestType,
    pub path: Vec<String>,
    pub query: Vec<String>,
    pub content_format: Option<u16>,
    /// The Content-Format asked for in the answer.
    pub accept: Option<u16>,
    pub observe: Option<u32>,
    pub payload: Vec<u8>,
    /// The token to use (an observation's); a fresh one otherwise.
    pub token: Option<Vec<u8>>,
}

impl Outgoing {
    pub fn new(method: RequestType, path: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            method,
            path: path.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            content_format: None,
            accept: None,
            observe: None,
            payload: Vec::new(),
            token: None,
        }
    }

    pub fn payload(mut self, content_format: Option<u16>, payload: Vec<u8>) -> Self {
        self.content_format = content_format;
        self.payload = payload;
        self
    }

    /// Ask for the answer in `content_format`.
    pub fn accept(mut self, content_format: Option<u16>) -> Self {
        self.accept = content_format;
        self
    }
}

/// A response to one of this endpoint's requests.
#[derive(Debug)]
pub struct Response {
    pub packet: Packet,
    /// Set when the response came as a separate confirmable message that
    /// the requester must acknowledge ([`Endpoint::ack`]) once it has
    /// handled it, or release ([`Endpoint::release`]) to have it sent again.
    pub unacked: Option<u16>,
}

/// The answer to a received request.
pub struct Reply {
    pub code: ResponseType,
    pub content_format: Option<u16>,
    /// Location-Path segments (Register's `rd/<id>`).
    pub location: Vec<String>,
    pub payload: Vec<u8>,
    /// Work to start once the reply is sent.
    pub then: Option<BoxFuture<'static, ()>>,
}

impl Reply {
    pub fn new(code: ResponseType) -> Self {
        Self {
            code,
            content_format: None,
            location: Vec::new(),
            payload: Vec::new(),
            then: None,
        }
    }

    /// An error answer with a diagnostic payload (RFC 7252 §5.5.2).
    pub fn diagnostic(code: ResponseType, why: impl std::fmt::Display) -> Self {
        let mut text = why.to_string();
        if text.len() > MAX_DIAGNOSTIC {
            let mut cut = MAX_DIAGNOSTIC;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Self {
            content_format: Some(0),
            payload: text.into_bytes(),
            ..Self::new(code)
        }
    }
}

/// What the service makes of a response that matches none of the
/// endpoint's requests (a notification).
pub enum Verdict {
    /// Not an observation the service knows: reset it, which cancels it
    /// at the client.
    Unknown,
    /// Taken; acknowledge it now.
    Ack,
    /// Queued; the service acknowledges it ([`Endpoint::ack`]) once handled,
    /// or releases it ([`Endpoint::release`]).
    Queued,
    /// Not taken now (no room): neither acknowledged nor remembered, so
    /// that the client's retransmission is handled afresh.
    Release,
}

/// What an endpoint serves.
#[async_trait::async_trait]
pub trait Service: Send + Sync + 'static {
    /// Answer a request from `peer`.
    async fn handle(&self, request: Packet, peer: Peer) -> Reply;
    /// Take a response that answers none of this endpoint's requests.
    fn notification(&self, packet: Packet, peer: Peer) -> Verdict;
}

type Outcome = Result<Response, CoapError>;

struct Pending {
    peer: Peer,
    mid: u16,
    ack_separate: bool,
    acked: Arc<Notify>,
    tx: oneshot::Sender<Outcome>,
}

enum Seen {
    /// Being handled: a retransmission is ignored.
    Handling,
    /// Answered with these bytes: a retransmission gets them again.
    Answered(Vec<u8>),
}

/// Confirmable messages received, by peer and message id, with when each
/// was first seen; at most [`MAX_DEDUP`], none older than
/// [`EXCHANGE_LIFETIME`].
#[derive(Default)]
struct Dedup {
    seen: HashMap<(Peer, u16), (Instant, Seen)>,
    order: VecDeque<(Instant, (Peer, u16))>,
}

impl Dedup {
    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < EXCHANGE_LIFETIME && self.order.len() <= MAX_DEDUP {
                break;
            }
            let Some((t, key)) = self.order.pop_front() else {
                break;
            };
            // Only the entry this one recorded (a released key may have
            // been seen again since).
            if self.seen.get(&key).is_some_and(|(first, _)| *first == t) {
                self.seen.remove(&key);
            }
        }
    }

    fn get(&self, key: &(Peer, u16)) -> Option<&Seen> {
        self.seen.get(key).map(|(_, s)| s)
    }

    fn insert(&mut self, key: (Peer, u16), seen: Seen, now: Instant) {
        match self.seen.get_mut(&key) {
            Some(entry) => entry.1 = seen,
            None => {
                self.seen.insert(key.clone(), (now, seen));
                self.order.push_back((now, key));
            }
        }
        self.expire(now);
    }
}

struct State {
    next_mid: u16,
    next_token: u64,
    token_salt: [u8; 4],
    rng: u64,
    pending: HashMap<Vec<u8>, Pending>,
    dedup: Dedup,
}

impl State {
    fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    /// xorshift64*: jitter only, not a secret.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Who a CoAP message comes from or goes to: an address and, over DTLS,
/// the PSK identity its session authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The PSK identity of the peer's DTLS session; `None` over plain UDP.
    pub identity: Option<Arc<[u8]>>,
}

impl Peer {
    /// A peer over plain UDP.
    pub fn plain(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            identity: None,
        }
    }

    /// Whether it speaks over DTLS.
    pub fn secure(&self) -> bool {
        self.identity.is_some()
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.identity {
            None => write!(f, "{}", self.addr),
            Some(id) => write!(
                f,
                "{} (DTLS, PSK identity {:?})",
                self.addr,
                String::from_utf8_lossy(id)
            ),
        }
    }
}

/// What carries an endpoint's datagrams: a UDP socket, or DTLS sessions
/// over one. The CoAP code above it is the same for both.
pub enum Transport {
    Udp(UdpSocket),
    Dtls(Box<Dtls>),
}

impl Transport {
    /// Receive one datagram (decrypted, over DTLS) into `buf`: its length,
    /// at most `buf.len()` (a longer one is cut there), and its peer.
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, Peer)> {
        match self {
            Transport::Udp(socket) => {
                let (n, addr) = socket.recv_from(buf).await?;
                Ok((n, Peer::plain(addr)))
            }
            Transport::Dtls(dtls) => {
                let (bytes, peer) = dtls.recv().await;
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok((n, peer))
            }
        }
    }

    /// Send one datagram to `peer` (over its DTLS session, when it has one).
    async fn send(&self, bytes: &[u8], peer: &Peer) -> std::io::Result<()> {
        match self {
            Transport::Udp(_) if peer.secure() => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a DTLS peer cannot be reached over plain UDP",
            )),
            Transport::Udp(socket) => socket.send_to(bytes, peer.addr).await.map(|_| ()),
            Transport::Dtls(dtls) => dtls.send(bytes, peer).await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Transport::Udp(socket) => socket.local_addr(),
            Transport::Dtls(dtls) => dtls.local_addr(),
        }
    }
}

/// A CoAP endpoint on one transport.
pub struct Endpoint {
    role: &'static str,
    transport: Transport,
    timing: Timing,
    metrics: Arc<ThingMetrics>,
    handling: Arc<Semaphore>,
    state: Mutex<State>,
}

fn code_of(packet: &Packet) -> String {
    packet.header.code.to_string()
}

/// The value of a packet's Content-Format option (absent, or not a number:
/// `None`).
pub fn content_format(packet: &Packet) -> Option<u16> {
    packet
        .get_first_option_as::<OptionValueU16>(CoapOption::ContentFormat)
        .and_then(Result::ok)
        .map(|v| v.0)
}

/// The value of a packet's Observe option.
pub fn observe(packet: &Packet) -> Option<u32> {
    packet.get_observe_value().and_then(Result::ok)
}

/// The Uri-Path segments, or `None` when one is not UTF-8.
pub fn path(packet: &Packet) -> Option<Vec<String>> {
    packet
        .get_option(CoapOption::UriPath)
        .map_or(Some(Vec::new()), |segs| {
            segs.iter()
                .map(|s| String::from_utf8(s.clone()).ok())
                .collect()
        })
}

/// The Uri-Query options, raw.
pub fn query(packet: &Packet) -> Vec<Vec<u8>> {
    packet
        .get_option(CoapOption::UriQuery)
        .map(|q| q.iter().cloned().collect())
        .unwrap_or_default()
}

/// The Location-Path segments.
pub fn location(packet: &Packet) -> Vec<String> {
    packet
        .get_option(CoapOption::LocationPath)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The response code of a packet, if it is a response.
pub fn response_code(packet: &Packet) -> Option<ResponseType> {
    match packet.header.code {
        MessageClass::Response(r) => Some(r),
        _ => None,
    }
}

/// `2.05` and friends, for messages.
pub fn code_text(packet: &Packet) -> String {
    code_of(packet)
}

/// The payload as diagnostic text, bounded.
pub fn diagnostic(packet: &Packet) -> String {
    String::from_utf8_lossy(&packet.payload[..packet.payload.len().min(MAX_DIAGNOSTIC)])
        .into_owned()
}

fn empty(kind: MessageType, mid: u16) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(kind);
    p.header.code = MessageClass::Empty;
    p.header.message_id = mid;
    p
}

/// A 4.00 for a confirmable request that coap-lite could not parse, when
/// its header and token can be read.
fn bad_request_for(bytes: &[u8], why: &str) -> Option<Vec<u8>> {
    let (&[b0, code, m0, m1], rest) = bytes.split_first_chunk::<4>()?;
    let (version, kind, tkl) = (b0 >> 6, (b0 >> 4) & 0b11, usize::from(b0 & 0x0f));
    let is_request = code >> 5 == 0 && code & 0x1f != 0;
    if version != 1 || kind != 0 || !is_request || tkl > 8 || rest.len() < tkl {
        return None;
    }
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Acknowledgement);
    p.header.code = MessageClass::Response(ResponseType::BadRequest);
    p.header.message_id = u16::from_be_bytes([m0, m1]);
    p.set_token(rest[..tkl].to_vec());
    p.set_content_format(coap_lite::ContentFormat::TextPlain);
    p.payload = format!("malformed CoAP message: {why}").into_bytes();
    p.to_bytes().ok()
}

impl Endpoint {
    /// Bind UDP socket `addr`.
    pub async fn bind(
        role: &'static str,
        addr: SocketAddr,
        timing: Timing,
        metrics: Arc<ThingMetrics>,
    ) -> std::io::Result<Arc<Endpoint>> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(Endpoint::over(
            role,
            Transport::Udp(socket),
            timing,
            metrics,
        ))
    }

    /// An endpoint over `transport`.
    pub fn over(
        role: &'static str,
        transport: Transport,
        timing: Timing,
        metrics: Arc<ThingMetrics>,
    ) -> Arc<Endpoint> {
        let mut seed = [0u8; 16];
        // Without OS randomness, ids still differ between runs by the clock.
        if getrandom::fill(&mut seed).is_err() {
            let t = crate::unix_ms().to_le_bytes();
            seed[..8].copy_from_slice(&t);
            seed[8..].copy_from_slice(&t);
        }
        let [m0, m1, s0, s1, s2, s3, ..] = seed;
        let rng = u64::from_le_bytes(seed[8..].try_into().unwrap_or([1; 8])) | 1;
        Arc::new(Endpoint {
            role,
            transport,
            timing,
            metrics,
            handling: Arc::new(Semaphore::new(MAX_HANDLING)),
            state: Mutex::new(State {
                next_mid: u16::from_le_bytes([m0, m1]),
                next_token: 0,
                token_salt: [s0, s1, s2, s3],
                rng,
                pending: HashMap::new(),
                dedup: Dedup::default(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.transport.local_addr()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token no other exchange of this endpoint uses: 4 random bytes and
    /// a counter.
    pub fn token(&self) -> Vec<u8> {
        let mut s = self.state();
        s.next_token = s.next_token.wrapping_add(1);
        let mut t = s.token_salt.to_vec();
        t.extend_from_slice(&(s.next_token as u32).to_be_bytes());
        t
    }

    async fn send(&self, bytes: &[u8], peer: &Peer) {
        if let Err(e) = self.transport.send(bytes, peer).await {
            tracing::debug!(role = self.role, %peer, error = %e, "cannot send a CoAP message");
        }
    }

    /// Acknowledge the confirmable message `mid` from `peer` (a separate
    /// response or a notification), and answer its retransmissions with the
    /// same ACK.
    pub async fn ack(&self, peer: &Peer, mid: u16) {
        let Ok(bytes) = empty(MessageType::Acknowledgement, mid).to_bytes() else {
            return;
        };
        self.state().dedup.insert(
            (peer.clone(), mid),
            Seen::Answered(bytes.clone()),
            Instant::now(),
        );
        self.send(&bytes, peer).await;
    }

    /// Forget a confirmable message that could not be handled, so that its
    /// retransmission is handled afresh.
    pub fn release(&self, peer: &Peer, mid: u16) {
        let mut s = self.state();
        let key = (peer.clone(), mid);
        if matches!(s.dedup.get(&key), Some(Seen::Handling)) {
            s.dedup.seen.remove(&key);
        }
    }

    /// Send a confirmable request and wait for its response. With
    /// `ack_separate`, a separate response is acknowledged on arrival;
    /// otherwise [`Response::unacked`] says the caller must.
    pub async fn request(
        &self,
        peer: &Peer,
        out: Outgoing,
        ack_separate: bool,
    ) -> Result<Response, CoapError> {
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(out.method);
        let token = out.token.unwrap_or_else(|| self.token());
        p.set_token(token.clone());
        if let Some(o) = out.observe {
            p.add_option_as(CoapOption::Observe, OptionValueU32(o));
        }
        for seg in &out.path {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        if let Some(cf) = out.content_format {
            p.add_option_as(CoapOption::ContentFormat, OptionValueU16(cf));
        }
        if let Some(a) = out.accept {
            p.add_option_as(CoapOption::Accept, OptionValueU16(a));
        }
        for q in &out.query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p.payload = out.payload;

        let (tx, mut rx) = oneshot::channel();
        let acked = Arc::new(Notify::new());
        let (bytes, mut timeout) = {
            let mut s = self.state();
            if s.pending.len() >= MAX_PENDING {
                return Err(CoapError::Busy);
            }
            let mid = s.mid();
            p.header.message_id = mid;
            let bytes = p.to_bytes().map_err(|e| CoapError::Encode(e.to_string()))?;
            // RFC 7252 §4.2: a random duration between ACK_TIMEOUT and
            // ACK_TIMEOUT * ACK_RANDOM_FACTOR.
            let jitter = (s.random() % 1000) as f64 / 1000.0;
            let first = self
                .timing
                .ack_timeout
                .mul_f64(1.0 + (ACK_RANDOM_FACTOR - 1.0) * jitter);
            s.pending.insert(
                token.clone(),
                Pending {
                    peer: peer.clone(),
                    mid,
                    ack_separate,
                    acked: acked.clone(),
                    tx,
                },
            );
            (bytes, first)
        };
        // Remove the exchange however this ends (also when the caller
        // drops the future).
        struct Guard<'a>(&'a Endpoint, Vec<u8>);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                self.0.state().pending.remove(&self.1);
            }
        }
        let _guard = Guard(self, token);

        let mut attempts = 0;
        loop {
            self.send(&bytes, peer).await;
            attempts += 1;
            tokio::select! {
                r = &mut rx => return r.unwrap_or(Err(CoapError::Reset)),
                _ = acked.notified() => break,
                _ = tokio::time::sleep(timeout) => {
                    if attempts > self.timing.max_retransmit {
                        return Err(CoapError::Timeout { attempts });
                    }
                    timeout *= 2;
                }
            }
        }
        // Acknowledged with an empty ACK: the response comes separately.
        match tokio::time::timeout(self.timing.response_timeout, rx).await {
            Ok(r) => r.unwrap_or(Err(CoapError::Reset)),
            Err(_) => Err(CoapError::NoResponse(self.timing.response_timeout)),
        }
    }

    /// Receive and dispatch datagrams until the task is stopped.
    pub async fn run(self: Arc<Self>, service: Arc<dyn Service>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (n, peer) = match self.transport.recv(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors surface here on some systems; keep going.
                    tracing::debug!(role = self.role, error = %e, "CoAP receive error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if n > MAX_DATAGRAM {
                self.malformed(&peer, &buf[..n], "datagram longer than 1500 bytes")
                    .await;
                continue;
            }
            let bytes = &buf[..n];
            let packet = match Packet::from_bytes(bytes) {
                Ok(p) => p,
                Err(e) => {
                    self.malformed(&peer, bytes, &e.to_string()).await;
                    continue;
                }
            };
            if packet.header.get_version() != 1 {
                // RFC 7252 §3: silently ignored.
                self.count_malformed(&peer, "CoAP version is not 1");
                continue;
            }
            self.dispatch(packet, &peer, &service).await;
        }
    }

    fn count_malformed(&self, peer: &Peer, why: &str) {
        self.metrics
            .coap_malformed_datagrams
            .with_label_values(&[self.role])
            .inc();
        tracing::debug!(role = self.role, %peer, why, "malformed CoAP datagram");
    }

    async fn malformed(&self, peer: &Peer, bytes: &[u8], why: &str) {
        self.count_malformed(peer, why);
        if let Some(answer) = bad_request_for(bytes, why) {
            self.send(&answer, peer).await;
        }
    }

    async fn dispatch(self: &Arc<Self>, packet: Packet, peer: &Peer, service: &Arc<dyn Service>) {
        let kind = packet.header.get_type();
        let mid = packet.header.message_id;
        match packet.header.code {
            MessageClass::Empty => {
                if !packet.get_token().is_empty() || !packet.payload.is_empty() {
                    self.count_malformed(peer, "an empty message with a token or payload");
                }
                match kind {
                    MessageType::Acknowledgement => {
                        let s = self.state();
                        if let Some(p) =
                            s.pending.values().find(|p| p.peer == *peer && p.mid == mid)
                        {
                            p.acked.notify_one();
                        }
                    }
                    MessageType::Reset => {
                        let mut s = self.state();
                        let token = s
                            .pending
                            .iter()
                            .find(|(_, p)| p.peer == *peer && p.mid == mid)
                            .map(|(t, _)| t.clone());
                        if let Some(p) = token.and_then(|t| s.pending.remove(&t)) {
                            let _ = p.tx.send(Err(CoapError::Reset));
                        }
                    }
                    // A ping (RFC 7252 §4.3): answered with a reset.
                    MessageType::Confirmable => self.reset(peer, mid).await,
                    MessageType::NonConfirmable => {}
                }
            }
            MessageClass::Request(_) => self.request_in(packet, peer, service).await,
            // An unknown method code (class 0): answered as a request.
            MessageClass::Reserved(c) if c >> 5 == 0 => {
                self.request_in(packet, peer, service).await
            }
            MessageClass::Response(_) => self.response_in(packet, peer, service).await,
            MessageClass::Reserved(_) => {
                // RFC 7252 §4.2/4.3: a message format error; reset a CON.
                self.count_malformed(peer, "a code of a reserved class");
                if kind == MessageType::Confirmable {
                    self.reset(peer, mid).await;
                }
            }
        }
    }

    async fn reset(&self, peer: &Peer, mid: u16) {
        if let Ok(bytes) = empty(MessageType::Reset, mid).to_bytes() {
            self.send(&bytes, peer).await;
        }
    }

    /// For a confirmable message: `Some(bytes)` to resend, `None` to
    /// ignore (still being handled), or proceed (`Err`) after marking it.
    fn first_time(&self, peer: &Peer, mid: u16) -> Result<(), Option<Vec<u8>>> {
        let mut s = self.state();
        let now = Instant::now();
        s.dedup.expire(now);
        match s.dedup.get(&(peer.clone(), mid)) {
            Some(Seen::Handling) => Err(None),
            Some(Seen::Answered(b)) => Err(Some(b.clone())),
            None => {
                s.dedup.insert((peer.clone(), mid), Seen::Handling, now);
                Ok(())
            }
        }
    }

    async fn request_in(self: &Arc<Self>, packet: Packet, peer: &Peer, service: &Arc<dyn Service>) {
        let kind = packet.header.get_type();
        let mid = packet.header.message_id;
        if !matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable) {
            self.count_malformed(peer, "a request in an ACK or RST");
            return;
        }
        let confirmable = kind == MessageType::Confirmable;
        if confirmable {
            match self.first_time(peer, mid) {
                Ok(()) => {}
                Err(Some(again)) => return self.send(&again, peer).await,
                Err(None) => return,
            }
        }
        let Ok(permit) = self.handling.clone().try_acquire_owned() else {
            let reply = Reply::diagnostic(
                ResponseType::ServiceUnavailable,
                format!("{MAX_HANDLING} requests are being handled, try again"),
            );
            self.answer(&packet, peer, reply).await;
            return;
        };
        let this = self.clone();
        let service = service.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = service.handle(packet.clone(), peer.clone()).await;
            this.answer(&packet, &peer, reply).await;
        });
    }

    async fn answer(&self, request: &Packet, peer: &Peer, mut reply: Reply) {
        let confirmable = request.header.get_type() == MessageType::Confirmable;
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.code = MessageClass::Response(reply.code);
        p.set_token(request.get_token().to_vec());
        if confirmable {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = request.header.message_id;
        } else {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = self.state().mid();
        }
        for seg in &reply.location {
            p.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
        }
        if let Some(cf) = reply.content_format {
            p.add_option_as(CoapOption::ContentFormat, OptionValueU16(cf));
        }
        p.payload = std::mem::take(&mut reply.payload);
        let bytes = match p.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(role = self.role, %peer, error = %e, "cannot encode a CoAP reply");
                return;
            }
        };
        if confirmable {
            self.state().dedup.insert(
                (peer.clone(), request.header.message_id),
                Seen::Answered(bytes.clone()),
                Instant::now(),
            );
        }
        self.send(&bytes, peer).await;
        if let Some(then) = reply.then.take() {
            tokio::spawn(then);
        }
    }

    async fn response_in(&self, packet: Packet, peer: &Peer, service: &Arc<dyn Service>) {
        let kind = packet.header.get_type();
        let mid = packet.header.message_id;
        if kind == MessageType::Reset {
            self.count_malformed(peer, "a response in a RST");
            return;
        }
        if kind == MessageType::Acknowledgement {
            // A piggybacked response: it must match our request's id too.
            let mut s = self.state();
            let matches = s
                .pending
                .get(packet.get_token())
                .is_some_and(|p| p.peer == *peer && p.mid == mid);
            if matches && let Some(p) = s.pending.remove(packet.get_token()) {
                let _ = p.tx.send(Ok(Response {
                    packet,
                    unacked: None,
                }));
            }
            return;
        }
        let confirmable = kind == MessageType::Confirmable;
        if confirmable {
            match self.first_time(peer, mid) {
                Ok(()) => {}
                Err(Some(again)) => return self.send(&again, peer).await,
                Err(None) => return,
            }
        }
        // A separate response to one of ours?
        let pending = {
            let mut s = self.state();
            let token = packet.get_token();
            if s.pending.get(token).is_some_and(|p| p.peer == *peer) {
                s.pending.remove(token)
            } else {
                None
            }
        };
        if let Some(p) = pending {
            let ack_now = confirmable && p.ack_separate;
            let unacked = (confirmable && !p.ack_separate).then_some(mid);
            let _ = p.tx.send(Ok(Response { packet, unacked }));
            if ack_now {
                self.ack(peer, mid).await;
            }
            return;
        }
        match service.notification(packet, peer.clone()) {
            Verdict::Unknown => {
                if let Ok(bytes) = empty(MessageType::Reset, mid).to_bytes() {
                    if confirmable {
                        self.state().dedup.insert(
                            (peer.clone(), mid),
                            Seen::Answered(bytes.clone()),
                            Instant::now(),
                        );
                    }
                    self.send(&bytes, peer).await;
                }
            }
            Verdict::Ack if confirmable => self.ack(peer, mid).await,
            Verdict::Release if confirmable => self.release(peer, mid),
            Verdict::Ack | Verdict::Queued | Verdict::Release => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_is_bounded_and_expires() {
        let mut d = Dedup::default();
        let now = Instant::now();
        let peer = Peer::plain("127.0.0.1:1".parse().unwrap());
        for mid in 0..(MAX_DEDUP as u16 + 10) {
            d.insert((peer.clone(), mid), Seen::Handling, now);
        }
        assert_eq!(d.seen.len(), MAX_DEDUP);
        assert!(!d.seen.contains_key(&(peer, 0)), "the oldest go first");
        d.expire(now + EXCHANGE_LIFETIME);
        assert!(d.seen.is_empty());
        assert!(d.order.is_empty());
    }

    #[test]
    fn unparseable_confirmable_requests_get_a_bad_request() {
        // CON GET, mid 0x1234, token [7, 8], then option delta 15 (reserved).
        let bytes = [0x42, 0x01, 0x12, 0x34, 7, 8, 0xF0];
        assert!(Packet::from_bytes(&bytes).is_err());
        let answer = Packet::from_bytes(&bad_request_for(&bytes, "x").unwrap()).unwrap();
        assert_eq!(answer.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::BadRequest)
        );
        assert_eq!(answer.header.message_id, 0x1234);
        assert_eq!(answer.get_token(), &[7, 8]);
        // Not answerable: too short, NON, a response, a cut token, version 2.
        for bad in [
            &[0x40, 0x01][..],
            &[0x52, 0x01, 0, 0, 7, 8, 0xF0],
            &[0x42, 0x45, 0, 0, 7, 8, 0xF0],
            &[0x48, 0x01, 0, 0, 7],
            &[0x82, 0x01, 0, 0, 7, 8, 0xF0],
        ] {
            assert!(bad_request_for(bad, "x").is_none(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever arrives, parsing and reading it never panics.
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            let _ = bad_request_for(&bytes, "x");
            if let Ok(p) = Packet::from_bytes(&bytes) {
                let _ = (path(&p), query(&p), location(&p), content_format(&p), observe(&p));
                let _ = (response_code(&p), code_text(&p), diagnostic(&p));
            }
        }
    }
}

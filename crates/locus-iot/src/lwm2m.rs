//! The LwM2M 1.0 pieces locus needs as data: the bootstrap writes of a
//! Security (`/0`) and a Server (`/1`) object instance, as TLV, and the
//! CoRE Link Format (RFC 6690) payload a client sends with Register and
//! Update.
//!
//! A bootstrap server deletes `/0` and `/1`, writes one [`Security`] and
//! one [`Server`] instance (whose short server ids match), then sends
//! Bootstrap-Finish: [`bootstrap_requests`] lists those requests; the CoAP
//! exchanges live elsewhere.
//!
//! The submodules hold the rest of what an LwM2M server needs as data:
//! [`query`] reads the Uri-Query parameters of Bootstrap-Request, Register
//! and Update; [`registry`] is the table of registrations with their
//! expiry; [`content`] reads resource values out of Read and Notify
//! payloads (text, opaque, TLV) into readings and encodes Write payloads.

use std::fmt::Write as _;

use thiserror::Error;

use crate::tlv::{self, Tlv, value};

pub mod content;
pub mod query;
pub mod registry;

/// Object id of LwM2M Security.
pub const SECURITY_OBJECT: u16 = 0;
/// Object id of LwM2M Server.
pub const SERVER_OBJECT: u16 = 1;

/// Resource ids of the Security object that locus writes.
pub mod security_res {
    pub const SERVER_URI: u16 = 0;
    pub const BOOTSTRAP_SERVER: u16 = 1;
    pub const SECURITY_MODE: u16 = 2;
    pub const PUBLIC_KEY_OR_IDENTITY: u16 = 3;
    pub const SERVER_PUBLIC_KEY: u16 = 4;
    pub const SECRET_KEY: u16 = 5;
    pub const SHORT_SERVER_ID: u16 = 10;
}

/// Resource ids of the Server object that locus writes.
pub mod server_res {
    pub const SHORT_SERVER_ID: u16 = 0;
    pub const LIFETIME: u16 = 1;
    pub const NOTIFICATION_STORING: u16 = 6;
    pub const BINDING: u16 = 7;
}

/// Longest PSK identity accepted (RFC 4279 §5.3 asks for up to 128 bytes).
pub const MAX_PSK_IDENTITY: usize = 128;
/// Longest PSK accepted (RFC 4279 §5.3 asks for up to 64 bytes).
pub const MAX_PSK_KEY: usize = 64;
/// Most links read from one Register or Update payload.
pub const MAX_LINKS: usize = 1024;

/// What is wrong with a bootstrap write or a link payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Lwm2mError {
    #[error("short server id {0} is outside 1..=65534")]
    ShortServerId(u16),
    #[error("server URI {uri:?}: {why}")]
    ServerUri { uri: String, why: &'static str },
    #[error("PSK {what} is {len} bytes: {why}")]
    Psk {
        what: &'static str,
        len: usize,
        why: &'static str,
    },
    #[error("the Security instance names short server id {security}, the Server instance {server}")]
    ShortServerIdMismatch { security: u16, server: u16 },
    #[error("lifetime 0: a registration must last at least a second")]
    Lifetime,
    #[error("link format, byte {offset}: {why}")]
    Link { offset: usize, why: String },
}

/// How a client secures its connection to the LwM2M server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityMode {
    /// Plain CoAP (`coap://`), mode 3.
    NoSec,
    /// DTLS with a pre-shared key (`coaps://`), mode 0.
    Psk { identity: Vec<u8>, key: Vec<u8> },
}

impl SecurityMode {
    /// The value of resource 2 (Security Mode).
    pub fn code(&self) -> i64 {
        match self {
            SecurityMode::Psk { .. } => 0,
            SecurityMode::NoSec => 3,
        }
    }
}

/// A Security object instance for an LwM2M server (not a bootstrap server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    pub instance: u16,
    /// `coap://host:port` for [`SecurityMode::NoSec`], `coaps://…` for PSK.
    pub server_uri: String,
    pub mode: SecurityMode,
    /// Must match the [`Server`] instance's.
    pub short_server_id: u16,
}

fn check_ssid(id: u16) -> Result<(), Lwm2mError> {
    if id == 0 || id == u16::MAX {
        return Err(Lwm2mError::ShortServerId(id));
    }
    Ok(())
}

impl Security {
    /// The instance as TLV: resources 0 (URI), 1 (false), 2 (mode), 3
    /// (PSK identity), 4 (server public key, empty), 5 (PSK) and 10 (short
    /// server id). Resources 3–5 are mandatory in the object, so NoSec
    /// writes them empty.
    pub fn to_tlv(&self) -> Result<Tlv, Lwm2mError> {
        Ok(instance_tlv(self.instance, self.resources()?))
    }

    /// The instance as SenML JSON or CBOR (`format`, LwM2M 1.1): the
    /// resources of [`Security::to_tlv`], named `/0/{instance}/{resource}`.
    pub fn to_senml(&self, format: u16) -> Result<Vec<u8>, Lwm2mError> {
        Ok(instance_senml(
            SECURITY_OBJECT,
            self.instance,
            &self.resources()?,
            format,
        ))
    }

    /// The resources written, checked.
    fn resources(&self) -> Result<Vec<(u16, crate::Value)>, Lwm2mError> {
        check_ssid(self.short_server_id)?;
        let scheme = match self.mode {
            SecurityMode::NoSec => "coap://",
            SecurityMode::Psk { .. } => "coaps://",
        };
        let uri = |why| Lwm2mError::ServerUri {
            uri: self.server_uri.clone(),
            why,
        };
        let Some(host) = self.server_uri.strip_prefix(scheme) else {
            return Err(uri(match self.mode {
                SecurityMode::NoSec => "NoSec needs a coap:// URI",
                SecurityMode::Psk { .. } => "PSK needs a coaps:// URI",
            }));
        };
        if host.is_empty() || host.starts_with('/') {
            return Err(uri("no host after the scheme"));
        }
        if self
            .server_uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(uri("it contains a space or a control character"));
        }
        let (identity, key): (&[u8], &[u8]) = match &self.mode {
            SecurityMode::NoSec => (&[], &[]),
            SecurityMode::Psk { identity, key } => {
                for (what, v, max) in [
                    ("identity", identity, MAX_PSK_IDENTITY),
                    ("key", key, MAX_PSK_KEY),
                ] {
                    if v.is_empty() {
                        return Err(Lwm2mError::Psk {
                            what,
                            len: 0,
                            why: "it is empty",
                        });
                    }
                    if v.len() > max {
                        return Err(Lwm2mError::Psk {
                            what,
                            len: v.len(),
                            why: "it is too long",
                        });
                    }
                }
                (identity, key)
            }
        };
        use crate::Value;
        use security_res::*;
        Ok(vec![
            (SERVER_URI, Value::String(self.server_uri.clone())),
            (BOOTSTRAP_SERVER, Value::Bool(false)),
            (SECURITY_MODE, Value::Number(self.mode.code() as f64)),
            (PUBLIC_KEY_OR_IDENTITY, Value::Data(identity.to_vec())),
            (SERVER_PUBLIC_KEY, Value::Data(Vec::new())),
            (SECRET_KEY, Value::Data(key.to_vec())),
            (SHORT_SERVER_ID, Value::Number(self.short_server_id.into())),
        ])
    }
}

/// The transport bindings of LwM2M 1.0 (resource 7 of the Server object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Binding {
    /// UDP.
    #[default]
    U,
    /// UDP with queue mode.
    UQ,
    /// SMS.
    S,
    /// SMS with queue mode.
    SQ,
    /// UDP and SMS.
    US,
    /// UDP with queue mode and SMS.
    UQS,
}

impl Binding {
    pub const ALL: [Binding; 6] = [
        Binding::U,
        Binding::UQ,
        Binding::S,
        Binding::SQ,
        Binding::US,
        Binding::UQS,
    ];

    /// The binding named by `s` (`U`, `UQ`, …), as the `b` parameter of
    /// Register and resource 7 of the Server object write it.
    pub fn parse(s: &str) -> Option<Binding> {
        Binding::ALL.into_iter().find(|b| b.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Binding::U => "U",
            Binding::UQ => "UQ",
            Binding::S => "S",
            Binding::SQ => "SQ",
            Binding::US => "US",
            Binding::UQS => "UQS",
        }
    }
}

/// A Server object instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub instance: u16,
    /// Must match the [`Security`] instance's.
    pub short_server_id: u16,
    /// Seconds a registration lasts without an Update.
    pub lifetime_s: u32,
    pub binding: Binding,
    /// Whether the client stores notifications while the server is
    /// disabled or offline (resource 6, mandatory in the object).
    pub store_notifications: bool,
}

impl Server {
    /// A server instance with UDP binding that stores notifications.
    pub fn new(instance: u16, short_server_id: u16, lifetime_s: u32) -> Self {
        Self {
            instance,
            short_server_id,
            lifetime_s,
            binding: Binding::U,
            store_notifications: true,
        }
    }

    /// The instance as TLV: resources 0 (short server id), 1 (lifetime),
    /// 6 (notification storing) and 7 (binding).
    pub fn to_tlv(&self) -> Result<Tlv, Lwm2mError> {
        Ok(instance_tlv(self.instance, self.resources()?))
    }

    /// The instance as SenML JSON or CBOR (`format`, LwM2M 1.1), named
    /// `/1/{instance}/…`.
    pub fn to_senml(&self, format: u16) -> Result<Vec<u8>, Lwm2mError> {
        Ok(instance_senml(
            SERVER_OBJECT,
            self.instance,
            &self.resources()?,
            format,
        ))
    }

    fn resources(&self) -> Result<Vec<(u16, crate::Value)>, Lwm2mError> {
        check_ssid(self.short_server_id)?;
        if self.lifetime_s == 0 {
            return Err(Lwm2mError::Lifetime);
        }
        use crate::Value;
        use server_res::*;
        Ok(vec![
            (SHORT_SERVER_ID, Value::Number(self.short_server_id.into())),
            (LIFETIME, Value::Number(self.lifetime_s.into())),
            (NOTIFICATION_STORING, Value::Bool(self.store_notifications)),
            (BINDING, Value::String(self.binding.as_str().to_owned())),
        ])
    }
}

/// An object instance of `resources` as TLV (numbers here are integers).
fn instance_tlv(instance: u16, resources: Vec<(u16, crate::Value)>) -> Tlv {
    use crate::Value;
    Tlv::object_instance(
        instance,
        resources
            .into_iter()
            .map(|(id, v)| {
                let bytes = match v {
                    Value::String(s) => value::string(&s),
                    Value::Bool(b) => value::boolean(b),
                    Value::Number(x) => value::int(x as i64),
                    Value::Data(d) => d,
                };
                Tlv::resource(id, bytes)
            })
            .collect(),
    )
}

/// An object instance of `resources` as a SenML pack (JSON or CBOR): the
/// base name `/{object}/{instance}/` and one record per resource.
fn instance_senml(
    object: u16,
    instance: u16,
    resources: &[(u16, crate::Value)],
    format: u16,
) -> Vec<u8> {
    let records: Vec<crate::senml::WriteRecord> = resources
        .iter()
        .enumerate()
        .map(|(i, (id, v))| crate::senml::WriteRecord {
            base_name: (i == 0).then(|| format!("/{object}/{instance}/")),
            name: id.to_string(),
            value: v.clone(),
        })
        .collect();
    content::senml_pack(&records, format)
}

/// A CoAP method of the requests a bootstrap server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// One request a server sends to a client: method, path, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Absolute path under the client's root, e.g. `/0/0`.
    pub path: String,
    /// CoAP Content-Format of the payload, when it has one.
    pub content_format: Option<u16>,
    /// The Content-Format asked for in the answer, when one is.
    pub accept: Option<u16>,
    pub payload: Vec<u8>,
}

impl Request {
    /// The path's segments, as CoAP Uri-Path options.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').filter(|s| !s.is_empty())
    }
}

/// The requests of a bootstrap, in the order they must be sent: Delete
/// `/0` and `/1` ([`bootstrap_clear`]), then the writes and
/// Bootstrap-Finish ([`bootstrap_writes`]). A bootstrap server that can
/// ask sends [`bootstrap_discover`] between the two and writes the
/// Security instance at [`free_instance`]; this is the plan for a client
/// that cannot be asked.
pub fn bootstrap_requests(
    security: &Security,
    server: &Server,
) -> Result<Vec<Request>, Lwm2mError> {
    let mut out = bootstrap_clear();
    out.extend(bootstrap_writes(security, server)?);
    Ok(out)
}

/// Delete `/0` and `/1`. A Delete of `/0` leaves the client's own
/// Bootstrap-Server account in place (LwM2M 1.1 TS §5.2.7.5), so the
/// instances the client keeps must be discovered before writing.
pub fn bootstrap_clear() -> Vec<Request> {
    [SECURITY_OBJECT, SERVER_OBJECT]
        .into_iter()
        .map(|o| Request {
            method: Method::Delete,
            path: format!("/{o}"),
            content_format: None,
            accept: None,
            payload: Vec::new(),
        })
        .collect()
}

/// Bootstrap-Discover of the Security object (`GET /0`, Accept
/// `application/link-format`): which instances the client kept. A 1.0
/// client may not know the operation and answer 4.xx.
pub fn bootstrap_discover() -> Request {
    Request {
        method: Method::Get,
        path: format!("/{SECURITY_OBJECT}"),
        content_format: None,
        accept: Some(content::LINK_FORMAT),
        payload: Vec::new(),
    }
}

/// The lowest instance id of `object` that `discovered` (the client's
/// answer to a Bootstrap-Discover) does not list.
pub fn free_instance(discovered: &Links, object: u16) -> u16 {
    let taken: std::collections::BTreeSet<u16> = discovered
        .objects
        .iter()
        .filter(|o| o.object == object)
        .filter_map(|o| o.instance)
        .collect();
    (0..=content::MAX_ID)
        .find(|i| !taken.contains(i))
        .unwrap_or(content::MAX_ID)
}

/// Write the Security instance (TLV), write the Server instance (TLV),
/// then Bootstrap-Finish (`POST /bs`). The two instances must name the
/// same short server id.
pub fn bootstrap_writes(security: &Security, server: &Server) -> Result<Vec<Request>, Lwm2mError> {
    bootstrap_writes_as(security, server, content::TLV)
}

/// [`bootstrap_writes`] in content format `format`: TLV, or SenML JSON or
/// SenML CBOR for an LwM2M 1.1 client that speaks no TLV (any other format
/// is TLV).
pub fn bootstrap_writes_as(
    security: &Security,
    server: &Server,
    format: u16,
) -> Result<Vec<Request>, Lwm2mError> {
    if format == content::SENML_JSON || format == content::SENML_CBOR {
        if security.short_server_id != server.short_server_id {
            return Err(Lwm2mError::ShortServerIdMismatch {
                security: security.short_server_id,
                server: server.short_server_id,
            });
        }
        let req = |path: String, payload: Option<Vec<u8>>| Request {
            method: if payload.is_some() {
                Method::Put
            } else {
                Method::Post
            },
            path,
            content_format: payload.as_ref().map(|_| format),
            accept: None,
            payload: payload.unwrap_or_default(),
        };
        return Ok(vec![
            req(
                format!("/{SECURITY_OBJECT}/{}", security.instance),
                Some(security.to_senml(format)?),
            ),
            req(
                format!("/{SERVER_OBJECT}/{}", server.instance),
                Some(server.to_senml(format)?),
            ),
            req("/bs".to_owned(), None),
        ]);
    }
    if security.short_server_id != server.short_server_id {
        return Err(Lwm2mError::ShortServerIdMismatch {
            security: security.short_server_id,
            server: server.short_server_id,
        });
    }
    let tlv_of = |t: Tlv| {
        tlv::encode(&[t]).map_err(|e| Lwm2mError::ServerUri {
            uri: security.server_uri.clone(),
            why: if matches!(e, tlv::TlvError::TooLong { .. }) {
                "the instance is too long for TLV"
            } else {
                "the instance cannot be encoded"
            },
        })
    };
    let security_tlv = tlv_of(security.to_tlv()?)?;
    let server_tlv = tlv_of(server.to_tlv()?)?;
    let req = |method, path: String, payload: Option<Vec<u8>>| Request {
        method,
        path,
        content_format: payload.as_ref().map(|_| content::TLV),
        accept: None,
        payload: payload.unwrap_or_default(),
    };
    Ok(vec![
        req(
            Method::Put,
            format!("/{SECURITY_OBJECT}/{}", security.instance),
            Some(security_tlv),
        ),
        req(
            Method::Put,
            format!("/{SERVER_OBJECT}/{}", server.instance),
            Some(server_tlv),
        ),
        req(Method::Post, "/bs".to_owned(), None),
    ])
}

/// An object, or one of its instances, that a client says it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectPath {
    pub object: u16,
    pub instance: Option<u16>,
}

impl std::fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.instance {
            Some(i) => write!(f, "/{}/{i}", self.object),
            None => write!(f, "/{}", self.object),
        }
    }
}

/// What a Register or Update payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// The client's root path: `/`, or the alternate path of the link with
    /// `rt="oma.lwm2m"` (e.g. `/lwm2m`). Requests to the client go under it.
    pub root: String,
    /// The objects and instances, in payload order.
    pub objects: Vec<ObjectPath>,
}

impl Links {
    /// The payload form: the root link when it is not `/`, then one link
    /// per object or instance.
    pub fn to_link_format(&self) -> String {
        let mut out = String::new();
        let prefix = if self.root == "/" { "" } else { &self.root };
        if !prefix.is_empty() {
            let _ = write!(out, "<{prefix}>;rt=\"oma.lwm2m\"");
        }
        for o in &self.objects {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "<{prefix}{o}>");
        }
        out
    }
}

/// One parsed link-value: its URI and parameters, with their offsets.
struct RawLink<'a> {
    at: usize,
    uri: &'a str,
    params: Vec<(&'a str, Option<String>)>,
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, why: impl Into<String>) -> Lwm2mError {
        Lwm2mError::Link {
            offset: self.at,
            why: why.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(&f) {
            self.at += 1;
        }
        // Only ASCII bytes are taken, so these are char boundaries.
        &self.s[start..self.at]
    }

    fn link(&mut self) -> Result<RawLink<'a>, Lwm2mError> {
        let at = self.at;
        if self.peek() != Some(b'<') {
            return Err(self.err("a link starts with '<'"));
        }
        self.at += 1;
        let start = self.at;
        let Some(len) = self.s[start..].find('>') else {
            return Err(Lwm2mError::Link {
                offset: at,
                why: "no '>' closes the link".into(),
            });
        };
        let uri = &self.s[start..start + len];
        self.at = start + len + 1;
        let mut params = Vec::new();
        while self.peek() == Some(b';') {
            self.at += 1;
            let name =
                self.take_while(|b| b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~*".contains(&b));
            if name.is_empty() {
                return Err(self.err("a parameter name is expected after ';'"));
            }
            let value = if self.peek() == Some(b'=') {
                self.at += 1;
                Some(if self.peek() == Some(b'"') {
                    self.quoted()?
                } else {
                    let v = self.take_while(|b| {
                        b.is_ascii_graphic() && !matches!(b, b',' | b';' | b'"' | b'\\')
                    });
                    if v.is_empty() {
                        return Err(self.err(format!("parameter {name} has an empty value")));
                    }
                    v.to_owned()
                })
            } else {
                None
            };
            params.push((name, value));
        }
        Ok(RawLink { at, uri, params })
    }

    fn quoted(&mut self) -> Result<String, Lwm2mError> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            let rest = &self.s[self.at..];
            let Some(c) = rest.chars().next() else {
                return Err(self.err("a quoted string is not closed"));
            };
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = self.s[self.at..].chars().next() else {
                        return Err(self.err("a quoted string ends in a backslash"));
                    };
                    self.at += e.len_utf8();
                    out.push(e);
                }
                c if c.is_control() => {
                    self.at -= c.len_utf8();
                    return Err(self.err("a control character in a quoted string"));
                }
                c => out.push(c),
            }
        }
    }
}

/// Parse one path segment: a decimal id without sign or spaces.
fn segment(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse the CoRE Link Format payload of Register or Update, e.g.
/// `</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>,</3303/0>;rt="x"`, into the
/// client's root path and its objects and instances. Parameters other
/// than `rt` are read and ignored; whitespace between links is tolerated.
pub fn parse_links(payload: &[u8]) -> Result<Links, Lwm2mError> {
    let s = std::str::from_utf8(payload).map_err(|e| Lwm2mError::Link {
        offset: e.valid_up_to(),
        why: "not UTF-8".into(),
    })?;
    let mut p = Parser { s, at: 0 };
    let mut raw = Vec::new();
    p.skip_ws();
    while p.peek().is_some() {
        if raw.len() == MAX_LINKS {
            return Err(p.err(format!("more than {MAX_LINKS} links")));
        }
        raw.push(p.link()?);
        p.skip_ws();
        match p.peek() {
            None => break,
            Some(b',') => {
                p.at += 1;
                p.skip_ws();
                if p.peek().is_none() {
                    return Err(p.err("a link is expected after ','"));
                }
            }
            Some(_) => return Err(p.err("',' or the end is expected after a link")),
        }
    }

    // The root: the link whose resource types include oma.lwm2m.
    let is_root = |l: &RawLink| {
        l.params.iter().any(|(n, v)| {
            *n == "rt"
                && v.as_deref()
                    .is_some_and(|v| v.split(' ').any(|t| t == "oma.lwm2m"))
        })
    };
    let mut root = "/".to_owned();
    let mut seen_root = None;
    for l in raw.iter().filter(|l| is_root(l)) {
        if seen_root.is_some() {
            return Err(Lwm2mError::Link {
                offset: l.at,
                why: "a second link with rt=\"oma.lwm2m\"".into(),
            });
        }
        if !l.uri.starts_with('/') || l.uri.contains(['?', '#']) {
            return Err(Lwm2mError::Link {
                offset: l.at,
                why: format!("root path {:?} is not an absolute path", l.uri),
            });
        }
        let r = l.uri.trim_end_matches('/');
        root = if r.is_empty() {
            "/".into()
        } else {
            r.to_owned()
        };
        seen_root = Some(l.at);
    }

    let prefix = if root == "/" { "" } else { root.as_str() };
    let mut objects = Vec::new();
    for l in &raw {
        if seen_root == Some(l.at) {
            continue;
        }
        let bad = |why: String| Lwm2mError::Link { offset: l.at, why };
        let Some(path) = l.uri.strip_prefix(prefix) else {
            return Err(bad(format!(
                "link <{}> is outside the root path {root}",
                l.uri
            )));
        };
        if path.is_empty() || path == "/" {
            // The root itself, without rt: it names no object.
            continue;
        }
        let Some(path) = path.strip_prefix('/') else {
            return Err(bad(format!("link <{}> is not a path under {root}", l.uri)));
        };
        let mut segs = path.split('/');
        let object = segs.next().and_then(segment);
        let instance = segs.next().map(segment);
        let (Some(object), None) = (object, segs.next()) else {
            return Err(bad(format!(
                "link <{}> is not /object or /object/instance",
                l.uri
            )));
        };
        let instance = match instance {
            None => None,
            Some(Some(i)) if i != u16::MAX => Some(i),
            Some(_) => {
                return Err(bad(format!(
                    "link <{}>: the instance is not an id in 0..=65534",
                    l.uri
                )));
            }
        };
        objects.push(ObjectPath { object, instance });
    }
    Ok(Links { root, objects })
}

#[cfg(test)]
mod tests;

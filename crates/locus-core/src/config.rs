//! Node configuration: what an operator may write in `locus.toml`.
//!
//! Every key is optional; an empty file (or no file) gives the embedded
//! defaults. Unknown keys and bad values are rejected with the dotted key
//! path and the line and column where they stand. Values are validated while
//! they are read (newtypes with `try_from`), so a [`Config`] that exists is a
//! valid one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Default address of the HTTP API: loopback only, so a fresh node exposes
/// nothing to the network until its operator says so.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7400";
/// Default address of the gossip endpoint (used by the fabric).
pub const DEFAULT_GOSSIP_ADDR: &str = "127.0.0.1:7401";
/// Default period of the host inventory refresh.
pub const DEFAULT_INVENTORY_REFRESH_SECS: u64 = 30;

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Human name of the node; defaults to the host name.
    #[serde(default)]
    pub name: Option<NodeName>,
    /// Where the node stands.
    #[serde(default)]
    pub site: SiteConfig,
    /// Free-form labels used by placement (`key = "value"`).
    #[serde(default)]
    pub labels: BTreeMap<LabelKey, LabelValue>,
    /// Addresses the node listens on.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Gossip addresses (`HOST:PORT`) of nodes to join through.
    #[serde(default)]
    pub seeds: Vec<Seed>,
    /// File holding the cluster key (64 hex digits, from `locus keygen`);
    /// without one, gossip is neither encrypted nor authenticated.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub cluster_key_file: Option<std::path::PathBuf>,
    /// What powers the node.
    #[serde(default)]
    pub energy: EnergyProfile,
    /// Host inventory settings.
    #[serde(default)]
    pub inventory: InventoryConfig,
    /// Artifact store settings.
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
    /// Device servers.
    #[serde(default)]
    pub things: ThingsConfig,
    /// Readings: retention and export to a parent node.
    #[serde(default)]
    pub readings: ReadingsConfig,
    /// Who may call the API.
    #[serde(default)]
    pub access: AccessConfig,
    /// The node's part in the market between orgs.
    #[serde(default)]
    pub market: MarketConfig,
}

/// The node's part in the market between orgs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    /// Seconds between two clearing rounds (default 1, at most 60).
    #[serde(default = "default_round_secs")]
    pub round_secs: RoundSecs,
    /// The decision rules of both sides (a TOML file with `[provider]` and
    /// `[customer]`); without it, the defaults documented in
    /// `locus market rules`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub rules: Option<std::path::PathBuf>,
    /// Nodes of orgs other than a provider's that must sign they see its
    /// customer dead before the provider takes over (default 2, 1–4: a
    /// statement carries at most 4 observations per takeover).
    #[serde(default = "default_witnesses")]
    pub witnesses: Witnesses,
    /// Seconds a customer has to countersign or dispute a usage statement
    /// before its provider takes it to the arbitrator (default 60,
    /// 1–86400).
    #[serde(default = "default_answer_secs")]
    pub answer_secs: AnswerSecs,
}

fn default_witnesses() -> Witnesses {
    Witnesses(2)
}

fn default_answer_secs() -> AnswerSecs {
    AnswerSecs(60)
}

validated!(
    /// Seconds to answer a usage statement: 1–86400.
    #[derive(Copy, Eq)]
    AnswerSecs(u64, "u64"), schema = u64,
    check = |v| if (1..=86_400).contains(v) { Ok(()) } else { Err(format!("answer_secs {v} is out of range 1..=86400")) },
    constrain = |o| { o.minimum = Some(1.into()); o.maximum = Some(86_400.into()); }
);

/// Most witnesses a takeover may need: a usage statement carries at most
/// this many observations per takeover (`locus_market::settle::MAX_EVIDENCE`).
pub const MAX_WITNESSES: u64 = 4;

validated!(
    /// Witnesses a takeover needs: 1–[`MAX_WITNESSES`].
    #[derive(Copy, Eq)]
    Witnesses(u64, "u64"), schema = u64,
    check = |v| if (1..=MAX_WITNESSES).contains(v) { Ok(()) } else { Err(format!("witnesses {v} is out of range 1..={MAX_WITNESSES}")) },
    constrain = |o| { o.minimum = Some(1.into()); o.maximum = Some(MAX_WITNESSES.into()); }
);

fn default_round_secs() -> RoundSecs {
    RoundSecs(1)
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            round_secs: default_round_secs(),
            rules: None,
            witnesses: default_witnesses(),
            answer_secs: default_answer_secs(),
        }
    }
}

validated!(
    /// Seconds between two clearing rounds: 1–60.
    #[derive(Copy, Eq)]
    RoundSecs(u64, "u64"), schema = u64,
    check = |v| if (1..=60).contains(v) { Ok(()) } else { Err(format!("round_secs {v} is out of range 1..=60")) },
    constrain = |o| { o.minimum = Some(1.into()); o.maximum = Some(60.into()); }
);

/// Who may call the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Every user call needs a token (default true). `false` lets every
    /// call through as the local org admin: for a lab machine or a
    /// measurement of the token check's cost only, and refused unless the
    /// API listens on loopback. Node-to-node calls stay signed either way.
    #[serde(default = "on")]
    pub require_tokens: bool,
    /// `/metrics` answers without a token (default true, so a Prometheus
    /// scraper needs none); `false` asks for a token of any role.
    /// `/healthz` always answers without one.
    #[serde(default = "on")]
    pub public_metrics: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            require_tokens: true,
            public_metrics: true,
        }
    }
}

/// A configuration error, located in the source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted path of the offending key (`site.latitude`), empty for a
    /// syntax error outside any key.
    pub path: String,
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// 1-based column of the offending text, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if !self.path.is_empty() && self.path != "." {
            write!(f, "key `{}`: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl Config {
    /// Parse and validate a TOML document.
    pub fn from_toml_str(src: &str) -> Result<Config, ConfigError> {
        parse_toml(src)
    }

    /// The API listen address, or the default.
    pub fn api_addr(&self) -> SocketAddr {
        self.listen.api.unwrap_or_else(default_api_addr)
    }

    /// The gossip listen address, or the default.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.listen.gossip.unwrap_or_else(default_gossip_addr)
    }

    /// The MQTT broker's listen address, or the default.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.listen
            .mqtt
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)))
    }

    /// The LwM2M server's listen address, or the default.
    pub fn lwm2m_addr(&self) -> SocketAddr {
        self.listen
            .lwm2m
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5683)))
    }

    /// The LwM2M bootstrap server's listen address, or the default.
    pub fn lwm2m_bootstrap_addr(&self) -> SocketAddr {
        self.listen
            .lwm2m_bootstrap
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5783)))
    }

    /// The LwM2M server's DTLS (coaps) listen address, or the default.
    pub fn lwm2m_dtls_addr(&self) -> SocketAddr {
        self.listen
            .lwm2m_dtls
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5684)))
    }

    /// The LwM2M bootstrap server's DTLS (coaps) listen address, or the
    /// default.
    pub fn lwm2m_bootstrap_dtls_addr(&self) -> SocketAddr {
        self.listen
            .lwm2m_bootstrap_dtls
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5784)))
    }

    /// The gossip address peers reach this node at: `gossip_advertise`, or
    /// the listen address when it is a concrete one.
    pub fn gossip_advertise_addr(&self) -> Result<SocketAddr, String> {
        match (self.listen.gossip_advertise, self.gossip_addr()) {
            (Some(a), _) => Ok(a),
            (None, l) if l.ip().is_unspecified() => Err(format!(
                "gossip listens on the wildcard address {l}; set `[listen] gossip_advertise` to the address peers should use"
            )),
            (None, l) => Ok(l),
        }
    }
}

fn default_api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

fn default_gossip_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7401))
}

/// Parse a JSON document that must be an object into `T`; errors carry the
/// field path, line and column. `what` names the document in errors.
pub(crate) fn parse_json_object<T: serde::de::DeserializeOwned>(
    src: &str,
    what: &str,
) -> Result<T, ConfigError> {
    // serde would also read a struct from an array of its fields.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(src)
        && !v.is_object()
    {
        return Err(ConfigError {
            path: String::new(),
            line: Some(1),
            column: Some(1),
            message: format!("{what} must be a JSON object"),
        });
    }
    // `3.0` is an integer to JSON Schema (and to many clients); accept it
    // where an integer is expected.
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(src)
        && integral_floats_to_integers(&mut v)
        && let Ok(doc) = serde_json::from_value::<T>(v)
    {
        return Ok(doc);
    }
    let mut de = serde_json::Deserializer::from_str(src);
    let doc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            path,
            line: Some(inner.line()),
            column: Some(inner.column()),
            message: strip_position(&inner.to_string()),
        }
    })?;
    de.end().map_err(|e| ConfigError {
        path: String::new(),
        line: Some(e.line()),
        column: Some(e.column()),
        message: strip_position(&e.to_string()),
    })?;
    Ok(doc)
}

/// Turn every float without a fractional part (`3.0`) into an integer, as
/// JSON Schema counts them; true if anything changed.
pub fn integral_floats_to_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                *v = Value::from(f as u64);
                true
            } else if f.fract() == 0.0 && f < 0.0 && f > i64::MIN as f64 {
                *v = Value::from(f as i64);
                true
            } else {
                false
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |c, x| integral_floats_to_integers(x) | c),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |c, x| integral_floats_to_integers(x) | c),
        _ => false,
    }
}

/// serde_json appends " at line L column C"; the error carries them apart.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Deserialize a TOML document into `T`, locating any error: the dotted key
/// path, and the line and column where it stands.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(src: &str) -> Result<T, ConfigError> {
    let locate = |span: Option<std::ops::Range<usize>>| match span {
        Some(span) => {
            let (line, column) = line_column(src, span.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let de = toml::de::Deserializer::parse(src).map_err(|e| {
        let (line, column) = locate(e.span());
        ConfigError {
            path: String::new(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = locate(inner.span());
        ConfigError {
            path,
            line,
            column,
            message: inner.message().trim().to_owned(),
        }
    })
}

/// 1-based line and column of byte `offset` in `src`.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where a node stands: the unit of locality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site name (a PoP, a lab, a field); nodes with the same site name are
    /// one site.
    #[serde(default = "SiteName::default_site")]
    pub name: SiteName,
    /// Latitude in degrees, -90..=90.
    #[serde(default)]
    pub latitude: Option<Latitude>,
    /// Longitude in degrees, -180..=180.
    #[serde(default)]
    pub longitude: Option<Longitude>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            name: SiteName::default_site(),
            latitude: None,
            longitude: None,
        }
    }
}

/// Listen addresses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// HTTP API address (`IP:PORT`), default `127.0.0.1:7400`.
    #[schema(value_type = Option<String>, example = "127.0.0.1:7400")]
    pub api: Option<SocketAddr>,
    /// The same API over TLS (`IP:PORT`), off by default: the certificate
    /// is made of the node key and carries its node certificate, so a
    /// client pins the node key or the org key (`locus --pin`).
    #[schema(value_type = Option<String>, example = "0.0.0.0:7443")]
    pub api_tls: Option<SocketAddr>,
    /// Gossip address (`IP:PORT`), default `127.0.0.1:7401`.
    #[schema(value_type = Option<String>, example = "127.0.0.1:7401")]
    pub gossip: Option<SocketAddr>,
    /// Gossip address peers should use, when `gossip` binds a wildcard
    /// address (`0.0.0.0:7401`) or sits behind NAT.
    #[schema(value_type = Option<String>, example = "192.0.2.7:7401")]
    pub gossip_advertise: Option<SocketAddr>,
    /// MQTT broker for things (TCP), default `127.0.0.1:1883`; port 0
    /// picks a free port.
    #[schema(value_type = Option<String>, example = "0.0.0.0:1883")]
    pub mqtt: Option<SocketAddr>,
    /// LwM2M server (CoAP over UDP), default `127.0.0.1:5683`.
    #[schema(value_type = Option<String>, example = "0.0.0.0:5683")]
    pub lwm2m: Option<SocketAddr>,
    /// LwM2M bootstrap server (CoAP over UDP), default `127.0.0.1:5783`.
    #[schema(value_type = Option<String>, example = "0.0.0.0:5783")]
    pub lwm2m_bootstrap: Option<SocketAddr>,
    /// LwM2M server over DTLS 1.2 with PSK (coaps), default
    /// `127.0.0.1:5684`; port 0 picks a free port.
    #[schema(value_type = Option<String>, example = "0.0.0.0:5684")]
    pub lwm2m_dtls: Option<SocketAddr>,
    /// LwM2M bootstrap server over DTLS 1.2 with PSK (coaps), default
    /// `127.0.0.1:5784`; port 0 picks a free port.
    #[schema(value_type = Option<String>, example = "0.0.0.0:5784")]
    pub lwm2m_bootstrap_dtls: Option<SocketAddr>,
}

/// Which device servers the node runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThingsConfig {
    /// Run the embedded MQTT broker (default true).
    #[serde(default = "on")]
    pub mqtt: bool,
    /// Run the LwM2M server and bootstrap server, over CoAP and over DTLS
    /// (default true).
    #[serde(default = "on")]
    pub lwm2m: bool,
    /// An external MQTT broker to take readings from instead of running
    /// the embedded one (`mqtt://[USER:PASSWORD@]HOST:PORT`): the node
    /// subscribes to `things/+/readings` and keeps the readings of the
    /// things it manages; the broker authenticates the things.
    #[serde(default)]
    pub mqtt_broker: Option<BrokerUrl>,
}

validated!(
    /// A tenant: 1–63 letters, digits, `.`, `_` or `-`.
    #[derive(Eq, PartialOrd, Ord, Hash)]
    Tenant(String, "String"), schema = String,
    check = |v| check_name("tenant", v, 63),
    constrain = |o| o.pattern = Some("^[A-Za-z0-9._-]{1,63}$".into())
);

impl Default for Tenant {
    fn default() -> Self {
        Tenant("default".to_owned())
    }
}

validated!(
    /// `mqtt://[USER:PASSWORD@]HOST:PORT`.
    BrokerUrl(String, "String"), schema = String,
    check = |v| BrokerUrl::split(v).map(|_| ()),
    constrain = |o| o.pattern = Some("^mqtt://([^:@/\\s]+:[^@/\\s]+@)?[^:@/\\s]+:[0-9]{1,5}$".into())
);

impl BrokerUrl {
    /// `(host:port, user and password)`.
    pub fn parts(&self) -> (String, Option<(String, String)>) {
        Self::split(&self.0).unwrap_or_default()
    }

    #[allow(clippy::type_complexity)]
    fn split(v: &str) -> Result<(String, Option<(String, String)>), String> {
        let bad = || format!("mqtt_broker {v:?} must be mqtt://[USER:PASSWORD@]HOST:PORT");
        let rest = v.strip_prefix("mqtt://").ok_or_else(bad)?;
        let (auth, addr) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty()
            || port.parse::<u16>().map_or(true, |p| p == 0)
            || addr.contains('/')
            || addr.chars().any(char::is_whitespace)
        {
            return Err(bad());
        }
        let auth = match auth {
            Some(a) => {
                let (u, p) = a.split_once(':').ok_or_else(bad)?;
                if u.is_empty() {
                    return Err(bad());
                }
                Some((u.to_owned(), p.to_owned()))
            }
            None => None,
        };
        Ok((addr.to_owned(), auth))
    }
}

impl Default for ThingsConfig {
    fn default() -> Self {
        ThingsConfig {
            mqtt: true,
            lwm2m: true,
            mqtt_broker: None,
        }
    }
}

fn on() -> bool {
    true
}

/// What powers the node. A placeholder until energy-aware placement lands:
/// it is published but does not yet change any decision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnergyProfile {
    /// The main power source.
    #[serde(default)]
    pub source: PowerSource,
    /// Peak power of the solar panel, in watts.
    #[serde(default)]
    pub panel_peak_watts: Option<NonNegative>,
    /// Usable battery capacity, in watt-hours.
    #[serde(default)]
    pub battery_capacity_wh: Option<NonNegative>,
}

/// Main power source of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerSource {
    /// The mains grid.
    #[default]
    Grid,
    /// Solar panel without storage.
    Solar,
    /// Solar panel with a battery.
    SolarBattery,
    /// Battery only.
    Battery,
}

/// Host inventory settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// Seconds between two inventory refreshes (1..=86400).
    #[serde(default = "default_refresh")]
    pub refresh_secs: RefreshSecs,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            refresh_secs: default_refresh(),
        }
    }
}

fn default_refresh() -> RefreshSecs {
    RefreshSecs(DEFAULT_INVENTORY_REFRESH_SECS)
}

/// Artifact store settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// Disk the artifact store may use, in MiB (1..=16777216, default
    /// 10240). Past it, unpinned artifacts no workload uses are collected,
    /// least recently used first; an artifact that cannot fit is refused.
    #[serde(default = "default_budget")]
    pub disk_budget_mb: DiskBudgetMb,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            disk_budget_mb: default_budget(),
        }
    }
}

impl ArtifactsConfig {
    /// The budget in bytes.
    pub fn disk_budget_bytes(&self) -> u64 {
        self.disk_budget_mb.0 << 20
    }
}

fn default_budget() -> DiskBudgetMb {
    DiskBudgetMb(10_240)
}

/// Default of `[readings] retention_days`.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Default of `[readings] max_readings`.
pub const DEFAULT_MAX_READINGS: u64 = 10_000_000;

/// Readings: how long their bodies are kept, and where they are exported.
///
/// Retention deletes the bodies of the oldest readings (by seq, the order
/// the node accepted them in) but never their leaves, so the seal log, its
/// checkpoints and the proofs of the readings kept stay valid; a reading not
/// yet acknowledged by the parent of `export_url` is never deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadingsConfig {
    /// Days a reading's body is kept after the node accepted it (0..=36500,
    /// default 30; 0 keeps them forever).
    #[serde(default = "default_retention_days")]
    pub retention_days: RetentionDays,
    /// Most reading bodies kept; past it the oldest go first (0..=10^12,
    /// default 10000000; 0: no limit).
    #[serde(default = "default_max_readings")]
    pub max_readings: MaxReadings,
    /// The API of a parent node (`http://HOST:PORT`) this node sends every
    /// reading to, in order, at least once; none by default.
    #[serde(default)]
    pub export_url: Option<ExportUrl>,
}

impl Default for ReadingsConfig {
    fn default() -> Self {
        ReadingsConfig {
            retention_days: default_retention_days(),
            max_readings: default_max_readings(),
            export_url: None,
        }
    }
}

fn default_retention_days() -> RetentionDays {
    RetentionDays(DEFAULT_RETENTION_DAYS)
}

fn default_max_readings() -> MaxReadings {
    MaxReadings(DEFAULT_MAX_READINGS)
}

/// Declares a newtype over `$raw` whose values pass `$check`; serde reads
/// it through `try_from`, so an invalid value fails where it stands.
macro_rules! validated {
    // With schema constraints, so that the OpenAPI document says what the
    // check accepts (clients and fuzzers then generate valid values).
    ($(#[$meta:meta])* $name:ident($raw:ty, $raw_lit:literal), schema = $schema:ty, check = $check:expr, constrain = $constrain:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(try_from = $raw_lit, into = $raw_lit)]
        pub struct $name($raw);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let mut schema = <$schema as utoipa::PartialSchema>::schema();
                if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o)) = &mut schema {
                    let constrain: fn(&mut utoipa::openapi::schema::Object) = $constrain;
                    constrain(o);
                }
                schema
            }
        }

        impl utoipa::ToSchema for $name {}

        $crate::config::validated!(@impls $name, $raw, $check);
    };
    (@impls $name:ident, $raw:ty, $check:expr) => {
        impl TryFrom<$raw> for $name {
            type Error = String;
            fn try_from(v: $raw) -> Result<Self, String> {
                let check: fn(&$raw) -> Result<(), String> = $check;
                check(&v).map(|()| $name(v))
            }
        }

        impl From<$name> for $raw {
            fn from(v: $name) -> $raw {
                v.0
            }
        }

        impl $name {
            /// The validated value.
            pub fn get(&self) -> &$raw {
                &self.0
            }
        }
    };
    ($(#[$meta:meta])* $name:ident($raw:ty, $raw_lit:literal), schema = $schema:ty, check = $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
        #[serde(try_from = $raw_lit, into = $raw_lit)]
        #[schema(value_type = $schema)]
        pub struct $name($raw);

        impl TryFrom<$raw> for $name {
            type Error = String;
            fn try_from(v: $raw) -> Result<Self, String> {
                let check: fn(&$raw) -> Result<(), String> = $check;
                check(&v).map(|()| $name(v))
            }
        }

        impl From<$name> for $raw {
            fn from(v: $name) -> $raw {
                v.0
            }
        }

        impl $name {
            /// The validated value.
            pub fn get(&self) -> &$raw {
                &self.0
            }
        }
    };
}

pub(crate) use validated;

/// Checks a name made of letters, digits, `.`, `_` and `-`, 1 to `max` long.
/// Deserialize a struct from a table of fields only: serde's derive also
/// takes a struct from a sequence of its fields in order (`[null, null]`),
/// which no document of ours means and the schema does not allow.
pub(crate) fn only_fields<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Fields<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of fields")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Fields(std::marker::PhantomData))
}

pub(crate) fn check_name(what: &str, v: &str, max: usize) -> Result<(), String> {
    if v.is_empty() || v.len() > max {
        return Err(format!("{what} {v:?} must be 1 to {max} characters long"));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} {v:?} contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn check_range(what: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{what} {v} is out of range {lo}..={hi}"))
    }
}

validated!(
    /// Name of a node: 1–63 letters, digits, `.`, `_` or `-`.
    NodeName(String, "String"), schema = String,
    check = |v| check_name("node name", v, 63)
);

validated!(
    /// Name of a site: 1–63 letters, digits, `.`, `_` or `-`.
    SiteName(String, "String"), schema = String,
    check = |v| check_name("site name", v, 63),
    constrain = |o| o.pattern = Some("^[A-Za-z0-9._-]{1,63}$".into())
);

impl SiteName {
    fn default_site() -> SiteName {
        SiteName("default".to_owned())
    }
}

validated!(
    /// Label key: 1–63 letters, digits, `.`, `_` or `-` (a `/` may separate a
    /// prefix, as in `locus.io/arch`).
    #[derive(Eq, PartialOrd, Ord, Hash)]
    LabelKey(String, "String"), schema = String,
    check = |v| match v.split_once('/') {
        Some((prefix, name)) => check_name("label prefix", prefix, 63).and(check_name("label key", name, 63)),
        None => check_name("label key", v, 63),
    },
    constrain = |o| o.pattern = Some("^([A-Za-z0-9._-]{1,63}/)?[A-Za-z0-9._-]{1,63}$".into())
);

validated!(
    /// Label value: at most 253 characters, no control characters.
    LabelValue(String, "String"), schema = String,
    check = |v| {
        if v.chars().count() > 253 {
            Err(format!("label value is {} characters long; the limit is 253", v.chars().count()))
        } else if v.chars().any(char::is_control) {
            Err(format!("label value {v:?} contains a control character"))
        } else {
            Ok(())
        }
    },
    constrain = |o| {
        o.max_length = Some(253);
        o.pattern = Some("^[^\\x00-\\x1f\\x7f-\\x9f]*$".into());
    }
);

validated!(
    /// A seed: the gossip address of a node to join through, `HOST:PORT`.
    Seed(String, "String"), schema = String,
    check = |v| {
        let Some((host, port)) = v.rsplit_once(':') else {
            return Err(format!("seed {v:?} must be HOST:PORT"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("seed {v:?} has no valid host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err(format!("seed {v:?} has an invalid port {port:?} (1..=65535)")),
        }
    }
);

validated!(
    /// Latitude in degrees.
    Latitude(f64, "f64"), schema = f64,
    check = |v| check_range("latitude", *v, -90.0, 90.0)
);

validated!(
    /// Longitude in degrees.
    Longitude(f64, "f64"), schema = f64,
    check = |v| check_range("longitude", *v, -180.0, 180.0)
);

validated!(
    /// A finite, non-negative quantity.
    NonNegative(f64, "f64"), schema = f64,
    check = |v| check_range("value", *v, 0.0, f64::MAX)
);

validated!(
    /// Seconds between two refreshes, 1..=86400.
    RefreshSecs(u64, "u64"), schema = u64,
    check = |v| if (1..=86_400).contains(v) { Ok(()) } else { Err(format!("refresh_secs {v} is out of range 1..=86400")) }
);

validated!(
    /// MiB of disk, 1..=16777216 (16 TiB).
    DiskBudgetMb(u64, "u64"), schema = u64,
    check = |v| if (1..=16_777_216).contains(v) { Ok(()) } else { Err(format!("disk_budget_mb {v} is out of range 1..=16777216")) }
);

validated!(
    /// Days a reading is kept, 0..=36500 (0: forever).
    RetentionDays(u32, "u32"), schema = u32,
    check = |v| if *v <= 36_500 { Ok(()) } else { Err(format!("retention_days {v} is out of range 0..=36500 (0 keeps readings forever)")) }
);

validated!(
    /// Most readings kept, 0..=10^12 (0: no limit).
    MaxReadings(u64, "u64"), schema = u64,
    check = |v| if *v <= 1_000_000_000_000 { Ok(()) } else { Err(format!("max_readings {v} is out of range 0..=1000000000000 (0 means no limit)")) }
);

validated!(
    /// The base URL of a parent node's API: `http://HOST[:PORT][/PATH]`,
    /// without a query or fragment; kept without a trailing `/`.
    ExportUrl(String, "String"), schema = String,
    check = |v| check_export_url(v)
);

impl ExportUrl {
    /// The URL of `path` (which starts with `/`) on the parent.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0.trim_end_matches('/'))
    }
}

fn check_export_url(v: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("export_url {v:?} {why}"));
    let Some(rest) = v.strip_prefix("http://") else {
        return bad(
            "must start with http:// (the API of a parent node, e.g. http://10.0.0.1:7400)",
        );
    };
    if v.len() > 2048 {
        return bad("is longer than 2048 characters");
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains a space or a control character");
    }
    if v.contains(['?', '#']) {
        return bad("must not have a query or fragment");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return bad("must not hold credentials");
    }
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        match h.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return bad("has an unclosed '[' in its host"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("has no host");
    }
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(1..))
    {
        return bad("has an invalid port (1..=65535)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml_str("").expect("empty config");
        assert_eq!(c, Config::default());
        assert_eq!(c.api_addr().to_string(), DEFAULT_API_ADDR);
        assert_eq!(c.gossip_addr().to_string(), DEFAULT_GOSSIP_ADDR);
        assert_eq!(c.site.name.get(), "default");
    }

    #[test]
    fn full_example_parses() {
        let src = r#"
name = "pi-garden"
seeds = ["192.0.2.10:7401", "seed.example:7401", "[2001:db8::1]:7401"]

[site]
name = "garden"
latitude = 48.11
longitude = -1.68

[labels]
arch = "arm64"
"locus.io/solar" = "yes"

[listen]
api = "0.0.0.0:7400"
gossip = "0.0.0.0:7401"

[energy]
source = "solar_battery"
panel_peak_watts = 20
battery_capacity_wh = 50.5

[inventory]
refresh_secs = 10
"#;
        let c = Config::from_toml_str(src).expect("valid config");
        assert_eq!(c.name.as_ref().map(|n| n.get().as_str()), Some("pi-garden"));
        assert_eq!(c.seeds.len(), 3);
        assert_eq!(c.site.latitude.as_ref().map(|l| *l.get()), Some(48.11));
        assert_eq!(c.energy.source, PowerSource::SolarBattery);
        assert_eq!(*c.inventory.refresh_secs.get(), 10);
        assert_eq!(c.labels.len(), 2);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = Config::from_toml_str(include_str!("../../../examples/locus.toml"))
            .expect("examples/locus.toml must parse");
        assert_eq!(c.site.name.get(), "garden");
        assert_eq!(c.api_addr().to_string(), DEFAULT_API_ADDR);
        assert_eq!(c.lwm2m_dtls_addr().to_string(), "127.0.0.1:5684");
        assert_eq!(c.lwm2m_bootstrap_dtls_addr().to_string(), "127.0.0.1:5784");
    }

    #[test]
    fn the_coaps_listeners_default_to_5684_and_5784() {
        let c = Config::from_toml_str("").expect("empty config");
        assert_eq!(c.lwm2m_dtls_addr().to_string(), "127.0.0.1:5684");
        assert_eq!(c.lwm2m_bootstrap_dtls_addr().to_string(), "127.0.0.1:5784");
        let c = Config::from_toml_str("[listen]\nlwm2m_dtls = \"0.0.0.0:0\"\n").expect("valid");
        assert_eq!(c.lwm2m_dtls_addr().to_string(), "0.0.0.0:0");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_toml_str("name = \"a\"\n[site]\nname = \"x\"\naltitude = 3\n")
            .expect_err("unknown key");
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("unknown field `altitude`"), "{err}");
        assert!(err.path.starts_with("site"), "{err:?}");
    }

    #[test]
    fn bad_value_is_named_with_its_path_and_line() {
        let err = Config::from_toml_str("[site]\nname = \"x\"\nlatitude = 95.0\n")
            .expect_err("bad latitude");
        assert_eq!(err.path, "site.latitude");
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("latitude 95 is out of range"), "{err}");
        assert_eq!(
            err.to_string(),
            "line 3, column 12: key `site.latitude`: latitude 95 is out of range -90..=90"
        );
    }

    #[test]
    fn bad_listen_address_and_seed_are_rejected() {
        let err = Config::from_toml_str("[listen]\napi = \"localhost\"\n").expect_err("bad addr");
        assert_eq!(err.path, "listen.api");
        assert_eq!(err.line, Some(2));
        let err = Config::from_toml_str("seeds = [\"a:1\", \"nope\"]\n").expect_err("bad seed");
        assert_eq!(err.path, "seeds[1]");
        assert!(err.message.contains("HOST:PORT"), "{err}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = Config::from_toml_str("name = \"a\"\n[site\n").expect_err("syntax");
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err =
            Config::from_toml_str("[inventory]\nrefresh_secs = \"soon\"\n").expect_err("type");
        assert_eq!(err.path, "inventory.refresh_secs");
        assert_eq!(err.line, Some(2));
        let err = Config::from_toml_str("[inventory]\nrefresh_secs = 0\n").expect_err("range");
        assert!(err.message.contains("1..=86400"), "{err}");
    }

    #[test]
    fn readings_section_has_defaults_and_checked_values() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(*c.readings.retention_days.get(), DEFAULT_RETENTION_DAYS);
        assert_eq!(*c.readings.max_readings.get(), DEFAULT_MAX_READINGS);
        assert_eq!(c.readings.export_url, None);
        let c = Config::from_toml_str(
            "[readings]\nretention_days = 0\nmax_readings = 5\nexport_url = \"http://10.0.0.1:7400/\"\n",
        )
        .unwrap();
        assert_eq!(*c.readings.retention_days.get(), 0);
        assert_eq!(*c.readings.max_readings.get(), 5);
        let url = c.readings.export_url.unwrap();
        assert_eq!(
            url.join("/api/v1/readings/import"),
            "http://10.0.0.1:7400/api/v1/readings/import"
        );
        let err = Config::from_toml_str("[readings]\nretention_days = 40000\n").unwrap_err();
        assert_eq!(err.path, "readings.retention_days");
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("0..=36500"), "{err}");
        let err = Config::from_toml_str("[readings]\nmax_readings = -1\n").unwrap_err();
        assert_eq!(err.path, "readings.max_readings");
        for bad in [
            "https://a:1",
            "10.0.0.1:7400",
            "http://",
            "http://a:0",
            "http://a:99999",
            "http://a b",
            "http://u:p@a",
            "http://a/?x=1",
        ] {
            let err = Config::from_toml_str(&format!("[readings]\nexport_url = {bad:?}\n"))
                .expect_err(bad);
            assert_eq!(err.path, "readings.export_url", "{bad}");
            assert!(err.message.contains("export_url"), "{err}");
        }
        for good in [
            "http://a",
            "http://[::1]:7400",
            "http://parent.example:80/edge",
        ] {
            Config::from_toml_str(&format!("[readings]\nexport_url = {good:?}\n")).expect(good);
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(src in "\\PC{0,200}") {
            let _ = Config::from_toml_str(&src);
        }

        #[test]
        fn errors_point_inside_the_source(key in "[a-z]{1,8}", n in 0u32..1000) {
            let src = format!("[site]\nname = \"s\"\n{key} = {n}\n");
            match Config::from_toml_str(&src) {
                Ok(_) => prop_assert!(key == "latitude" || key == "longitude"),
                Err(e) => prop_assert!(e.line.is_some_and(|l| l <= 3)),
            }
        }
    }
}

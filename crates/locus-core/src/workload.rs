//! Workloads: what a user asks a node to run, and the life of each one.
//!
//! A [`WorkloadSpec`] is the user's document (TOML or JSON), validated while
//! it is read so that a spec that exists is a valid one; errors name the
//! field path, line and column. A [`Workload`] is a spec plus what happened
//! to it: its owner, its epoch (the fence that keeps one copy running after
//! a failover), its [`State`] and the reason of each change.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::NodeId;
pub use crate::config::integral_floats_to_integers;
use crate::config::{ConfigError, check_name, parse_json_object, parse_toml, validated};

/// Most transitions kept in a workload's history.
pub const HISTORY_LIMIT: usize = 16;
/// Most entries in `args`, `env`, `ports` or `devices`.
pub const LIST_LIMIT: usize = 64;

/// The runtime a workload needs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A WebAssembly module (WASI preview 1), sandboxed: the default.
    #[default]
    Wasm,
    /// A native executable run as a child process.
    Process,
    /// A container on the node's Docker engine.
    Container,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 3] = [Kind::Wasm, Kind::Process, Kind::Container];

    /// The name used in specs, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Wasm => "wasm",
            Kind::Process => "process",
            Kind::Container => "container",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a workload that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: an ended workload stays stopped or failed.
    Never,
    /// Only when it failed (non-zero exit, trap, limit).
    #[default]
    OnFailure,
    /// Whenever it ends.
    Always,
}

/// What happens to a workload when its node dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Failover {
    /// Another node adopts it and starts it.
    #[default]
    Reschedule,
    /// It stays with its node and runs again when the node returns.
    Stay,
}

/// How placement ranks the nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Prefer the emptiest node.
    #[default]
    Spread,
    /// Prefer the fullest node that still fits.
    Pack,
}

validated!(
    /// Name of a workload: 1–63 letters, digits, `.`, `_` or `-`.
    #[derive(Eq, PartialOrd, Ord, Hash)]
    WorkloadName(String, "String"), schema = String,
    check = |v| check_name("workload name", v, 63),
    constrain = |o| o.pattern = Some("^[A-Za-z0-9._-]{1,63}$".into())
);

validated!(
    /// Where the code comes from: an artifact (`cid:<cid>`, fetched and
    /// verified before start), a file path on the node (a `.wasm`/`.wat`
    /// module, an executable, a `docker save` tarball) or a container image
    /// reference already in the node's engine. 1–1024 characters.
    Source(String, "String"), schema = String,
    check = |v| {
        if v.trim().is_empty() {
            Err("source must not be empty".to_owned())
        } else if v.chars().count() > 1024 {
            Err(format!("source is {} characters long; the limit is 1024", v.chars().count()))
        } else if v.chars().any(char::is_control) {
            Err("source contains a control character".to_owned())
        } else if let Some(Err(e)) = crate::artifact::ArtifactId::from_source(v) {
            Err(e.to_string())
        } else {
            Ok(())
        }
    },
    constrain = |o| {
        o.max_length = Some(1024);
        o.pattern = Some("^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$".into());
    }
);

validated!(
    /// CPU share in millicores (1000 = one core): 1 to 1 000 000.
    Millicores(u64, "u64"), schema = u64,
    check = |v| if (1..=1_000_000).contains(v) { Ok(()) } else { Err(format!("cpu_millicores {v} is out of range 1..=1000000")) },
    constrain = |o| {
        o.minimum = Some(1.into());
        o.maximum = Some(1_000_000.into());
    }
);

validated!(
    /// Memory in MiB: 1 to 1 048 576 (1 TiB).
    MemoryMb(u64, "u64"), schema = u64,
    check = |v| if (1..=1_048_576).contains(v) { Ok(()) } else { Err(format!("memory_mb {v} is out of range 1..=1048576")) },
    constrain = |o| {
        o.minimum = Some(1.into());
        o.maximum = Some(1_048_576.into());
    }
);

validated!(
    /// Graceful stop timeout in seconds: 0 to 3600.
    StopTimeout(u32, "u32"), schema = u32,
    check = |v| if *v <= 3600 { Ok(()) } else { Err(format!("stop_timeout_secs {v} is out of range 0..=3600")) },
    constrain = |o| o.maximum = Some(3600.into())
);

validated!(
    /// An environment variable name: letters, digits and `_`, not starting
    /// with a digit, 1–255 long.
    #[derive(Eq, PartialOrd, Ord, Hash)]
    EnvName(String, "String"), schema = String,
    check = |v| {
        let ok = !v.is_empty()
            && v.len() <= 255
            && !v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok { Ok(()) } else { Err(format!("environment variable name {v:?} must be letters, digits and '_', not starting with a digit")) }
    },
    constrain = |o| o.pattern = Some("^[A-Za-z_][A-Za-z0-9_]{0,254}$".into())
);

validated!(
    /// A program argument or environment value: at most 1024 characters,
    /// no NUL.
    Text(String, "String"), schema = String,
    check = |v| {
        if v.chars().count() > 1024 {
            Err(format!("value is {} characters long; the limit is 1024", v.chars().count()))
        } else if v.contains('\0') {
            Err("value contains a NUL byte".to_owned())
        } else {
            Ok(())
        }
    },
    constrain = |o| {
        o.max_length = Some(1024);
        o.pattern = Some("^[^\\x00]*$".into());
    }
);

validated!(
    /// Latency bound in milliseconds: 1 to 60 000.
    WithinMs(u32, "u32"), schema = u32,
    check = |v| if (1..=60_000).contains(v) { Ok(()) } else { Err(format!("within_ms {v} is out of range 1..=60000")) },
    constrain = |o| {
        o.minimum = Some(1.into());
        o.maximum = Some(60_000.into());
    }
);

validated!(
    /// A host device a workload needs, as the node lists it in
    /// `/api/v1/devices` (`usb:1d6b:0002`, `pci:0000:00:02.0`) or, for
    /// containers, a path under `/dev`.
    DeviceRef(String, "String"), schema = String,
    check = |v| {
        if v.is_empty() || v.chars().count() > 255 || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
            Err(format!("device {v:?} must be 1 to 255 characters without spaces"))
        } else {
            Ok(())
        }
    },
    constrain = |o| o.pattern = Some("^[^\\s\\x00-\\x1f\\x7f-\\x9f]{1,255}$".into())
);

/// What a workload reserves on its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU share in millicores; enforced by the driver (fuel/epoch pacing,
    /// cgroups, Docker CPU quota). Default 100.
    #[serde(default = "default_cpu")]
    pub cpu_millicores: Millicores,
    /// Memory limit in MiB; the workload fails when it tries to use more.
    /// Default 64.
    #[serde(default = "default_memory")]
    pub memory_mb: MemoryMb,
}

fn default_cpu() -> Millicores {
    Millicores(100)
}

fn default_memory() -> MemoryMb {
    MemoryMb(64)
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_millicores: default_cpu(),
            memory_mb: default_memory(),
        }
    }
}

impl Resources {
    /// Memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb.0 * 1024 * 1024
    }
}

/// A transport protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A port the workload listens on, published on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port inside the workload (containers); for processes and Wasm the
    /// workload binds `host` itself.
    #[schema(minimum = 1, maximum = 65535)]
    pub container: u16,
    /// Port on the node; defaults to `container`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub host: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

impl Port {
    /// The port on the node.
    pub fn host_port(&self) -> u16 {
        self.host.unwrap_or(self.container)
    }
}

/// "Within N ms of site S".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Near {
    /// The site to stay close to.
    pub site: crate::config::SiteName,
    /// Largest estimated round-trip time to any node of that site.
    pub within_ms: WithinMs,
}

/// Where a workload may run and how nodes are ranked.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Only nodes of this site.
    #[serde(default)]
    pub site: Option<crate::config::SiteName>,
    /// Only nodes carrying every one of these labels.
    #[serde(default)]
    pub labels: BTreeMap<crate::config::LabelKey, crate::config::LabelValue>,
    /// Only nodes within a round-trip time of a site.
    #[serde(default)]
    pub near: Option<Near>,
    /// `spread` (default) or `pack`.
    #[serde(default)]
    pub strategy: Strategy,
}

/// What a user asks to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Name, unique among a tenant's workloads.
    pub name: WorkloadName,
    /// `wasm` (default), `process` or `container`.
    #[serde(default)]
    pub kind: Kind,
    /// The module, executable, image tarball or image reference.
    pub source: Source,
    /// Arguments (for containers: the command).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub args: Vec<Text>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<EnvName, Text>,
    /// CPU and memory reserved and enforced.
    #[serde(default)]
    pub resources: Resources,
    /// Ports published on the node.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub ports: Vec<Port>,
    /// Host devices the workload needs (placement only picks nodes that have
    /// them free).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub devices: Vec<DeviceRef>,
    /// `never`, `on-failure` (default) or `always`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `reschedule` (default) or `stay`.
    #[serde(default)]
    pub failover: Failover,
    /// Constraints and ranking.
    #[serde(default)]
    pub placement: Placement,
    /// Seconds a graceful stop waits before killing. Default 10.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: StopTimeout,
    /// The tenant that owns the workload (default `default`); a node sets
    /// it from the caller's token, and only an org admin names another
    /// tenant of its org.
    #[serde(default)]
    pub tenant: crate::config::Tenant,
}

fn default_stop_timeout() -> StopTimeout {
    StopTimeout(10)
}

/// The format of a spec document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    Toml,
    Json,
}

impl SpecFormat {
    /// Guess the format from a file name (`.json` → JSON, anything else TOML).
    pub fn from_path(path: &str) -> SpecFormat {
        if path.to_ascii_lowercase().ends_with(".json") {
            SpecFormat::Json
        } else {
            SpecFormat::Toml
        }
    }
}

impl WorkloadSpec {
    /// Parse and validate a spec document; errors carry the field path and
    /// the line and column.
    pub fn parse(src: &str, format: SpecFormat) -> Result<WorkloadSpec, ConfigError> {
        let spec = Self::parse_fields(src, format)?;
        spec.check()?;
        Ok(spec)
    }

    /// Parse a spec document and validate each field, but not the rules
    /// that span fields ([`WorkloadSpec::check`]).
    pub fn parse_fields(src: &str, format: SpecFormat) -> Result<WorkloadSpec, ConfigError> {
        match format {
            SpecFormat::Toml => parse_toml(src),
            SpecFormat::Json => parse_json_object(src, "a workload spec"),
        }
    }

    /// Rules that span fields.
    pub fn check(&self) -> Result<(), ConfigError> {
        let err = |path: &str, message: String| ConfigError {
            path: path.to_owned(),
            line: None,
            column: None,
            message,
        };
        for (path, len) in [
            ("args", self.args.len()),
            ("env", self.env.len()),
            ("ports", self.ports.len()),
            ("devices", self.devices.len()),
            ("placement.labels", self.placement.labels.len()),
        ] {
            if len > LIST_LIMIT {
                return Err(err(
                    path,
                    format!("{len} entries; the limit is {LIST_LIMIT}"),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.container == 0 || p.host == Some(0) {
                return Err(err(
                    &format!("ports[{i}]"),
                    "port 0 is not a port".to_owned(),
                ));
            }
            if !seen.insert((p.host_port(), p.protocol)) {
                return Err(err(
                    &format!("ports[{i}].host"),
                    format!("host port {} is published twice", p.host_port()),
                ));
            }
        }
        Ok(())
    }

    /// The spec as canonical JSON (what is stored, replicated and hashed).
    pub fn to_json(&self) -> Vec<u8> {
        // A spec is plain data: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A short digest of the canonical JSON, to tell spec versions apart.
    pub fn digest(&self) -> String {
        blake3::hash(&self.to_json()).to_hex()[..16].to_owned()
    }
}

/// The id of a workload: 16 lowercase hex digits, random at creation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId(pub [u8; 8]);

impl WorkloadId {
    /// Derive an id from the bytes of a random source.
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        WorkloadId(bytes)
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkloadId({self})")
    }
}

/// Why a string is not a workload id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid workload id {0:?}: expected 16 lowercase hex digits")]
pub struct ParseWorkloadIdError(String);

impl FromStr for WorkloadId {
    type Err = ParseWorkloadIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseWorkloadIdError(s.to_owned());
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut out = [0u8; 8];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(WorkloadId(out))
    }
}

impl Serialize for WorkloadId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WorkloadId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for WorkloadId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-f]{16}$"))
            .description(Some("Workload id: 16 lowercase hex digits"))
            .into()
    }
}

impl ToSchema for WorkloadId {}

/// Where a workload is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Accepted, no node fits yet.
    Pending,
    /// A node owns it and will start it.
    Scheduled,
    /// The driver is starting it.
    Starting,
    /// It runs.
    Running,
    /// A graceful stop is under way.
    Stopping,
    /// It ended cleanly or was stopped.
    Stopped,
    /// It ended badly or could not start.
    Failed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Scheduled,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Stopped,
        State::Failed,
    ];

    /// The name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Scheduled => "scheduled",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// Whether a driver may hold something for the workload in this state.
    pub fn is_active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }

    /// Whether `self → to` is a legal change.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Pending, Scheduled)
                | (Scheduled, Pending)
                | (Scheduled, Starting)
                | (Scheduled, Stopped)
                | (Starting, Running)
                | (Starting, Pending)
                | (Starting, Failed)
                | (Starting, Stopping)
                | (Running, Stopping)
                | (Running, Stopped)
                | (Running, Failed)
                | (Stopping, Stopped)
                | (Stopping, Failed)
                | (Stopped, Scheduled)
                | (Stopped, Starting)
                | (Failed, Scheduled)
                | (Failed, Starting)
                | (Stopped, Pending)
                | (Failed, Pending)
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?}; expected one of {}",
                    State::ALL.map(State::as_str).join(", ")
                )
            })
    }
}

/// Whether the user wants the workload running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

/// One change of state, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    pub reason: String,
    pub at_unix_ms: u64,
}

/// An illegal change of state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("workload cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: State,
    pub to: State,
}

/// A workload as its owner knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workload {
    pub id: WorkloadId,
    pub spec: WorkloadSpec,
    /// The node that runs it (or holds it while pending).
    pub owner: NodeId,
    /// Grows at each adoption: of two copies, the higher epoch wins and the
    /// other stops.
    pub epoch: u64,
    pub desired: Desired,
    pub state: State,
    /// Why the workload is in its state.
    pub reason: String,
    pub since_unix_ms: u64,
    pub created_unix_ms: u64,
    /// Exit code of the last run, when it ended with one.
    pub exit_code: Option<i32>,
    /// Times the workload was restarted by its policy.
    pub restarts: u32,
    /// The last changes, oldest first.
    pub history: Vec<StateChange>,
    /// When it was destroyed. A destroyed workload stays a while as a
    /// marker at a higher epoch, so that a stale copy on a node that was
    /// away yields instead of coming back to life.
    #[serde(default)]
    pub destroyed_unix_ms: Option<u64>,
}

impl Workload {
    /// A new workload, pending on `owner`.
    pub fn new(id: WorkloadId, spec: WorkloadSpec, owner: NodeId, now_ms: u64) -> Workload {
        Workload {
            id,
            spec,
            owner,
            epoch: 1,
            desired: Desired::Running,
            state: State::Pending,
            reason: "accepted".to_owned(),
            since_unix_ms: now_ms,
            created_unix_ms: now_ms,
            exit_code: None,
            restarts: 0,
            history: Vec::new(),
            destroyed_unix_ms: None,
        }
    }

    /// Move to `to` for `reason`; an illegal change is refused and nothing
    /// changes. Moving to the same state only updates the reason.
    pub fn transition(
        &mut self,
        to: State,
        reason: impl Into<String>,
        now_ms: u64,
    ) -> Result<(), IllegalTransition> {
        let reason = reason.into();
        if to == self.state {
            self.reason = reason;
            return Ok(());
        }
        if !self.state.can_become(to) {
            return Err(IllegalTransition {
                from: self.state,
                to,
            });
        }
        self.history.push(StateChange {
            from: self.state,
            to,
            reason: reason.clone(),
            at_unix_ms: now_ms,
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
        self.state = to;
        self.reason = reason;
        self.since_unix_ms = now_ms;
        Ok(())
    }

    /// The rank of this copy against another copy of the same workload:
    /// higher epoch wins, then the higher owner id (any fixed order works;
    /// every node must use the same).
    pub fn fence(&self) -> (u64, NodeId) {
        (self.epoch, self.owner)
    }
}

/// What every other node learns of a workload through the fabric (the spec
/// travels separately, in chunks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkloadSummary {
    pub id: WorkloadId,
    pub name: String,
    pub kind: Kind,
    pub owner: NodeId,
    pub epoch: u64,
    pub desired: Desired,
    pub state: State,
    pub reason: String,
    pub since_unix_ms: u64,
    pub failover: Failover,
    pub cpu_millicores: u64,
    pub memory_mb: u64,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    /// Digest of the spec ([`WorkloadSpec::digest`]).
    pub spec_digest: String,
    /// Number of spec chunks published.
    pub spec_chunks: u32,
    /// A marker of a destroyed workload (see [`Workload::destroyed_unix_ms`]).
    #[serde(default)]
    pub destroyed: bool,
    /// The tenant that owns it.
    #[serde(default)]
    pub tenant: crate::config::Tenant,
}

impl Workload {
    /// The replicated summary of this workload.
    pub fn summary(&self, spec_chunks: u32) -> WorkloadSummary {
        WorkloadSummary {
            id: self.id,
            name: self.spec.name.get().clone(),
            kind: self.spec.kind,
            owner: self.owner,
            epoch: self.epoch,
            desired: self.desired,
            state: self.state,
            reason: self.reason.clone(),
            since_unix_ms: self.since_unix_ms,
            failover: self.spec.failover,
            cpu_millicores: *self.spec.resources.cpu_millicores.get(),
            memory_mb: *self.spec.resources.memory_mb.get(),
            restarts: self.restarts,
            exit_code: self.exit_code,
            spec_digest: self.spec.digest(),
            spec_chunks,
            destroyed: self.destroyed_unix_ms.is_some(),
            tenant: self.spec.tenant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &str = r#"
name = "hello"
source = "/opt/hello.wasm"
args = ["--greet", "world"]
env = { GREETING = "hi" }

[resources]
cpu_millicores = 250
memory_mb = 32

[placement]
site = "lab"
strategy = "pack"
near = { site = "pop", within_ms = 20 }
"#;

    #[test]
    fn a_toml_spec_parses_with_defaults() {
        let s = WorkloadSpec::parse(WASM, SpecFormat::Toml).unwrap();
        assert_eq!(s.kind, Kind::Wasm);
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.failover, Failover::Reschedule);
        assert_eq!(*s.resources.cpu_millicores.get(), 250);
        assert_eq!(s.placement.strategy, Strategy::Pack);
        assert_eq!(*s.placement.near.as_ref().unwrap().within_ms.get(), 20);
        assert_eq!(*s.stop_timeout_secs.get(), 10);
        // JSON round trip gives the same spec.
        let json = String::from_utf8(s.to_json()).unwrap();
        assert_eq!(WorkloadSpec::parse(&json, SpecFormat::Json).unwrap(), s);
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let bad = WASM.replace("memory_mb = 32", "memory_mb = 0");
        let e = WorkloadSpec::parse(&bad, SpecFormat::Toml).unwrap_err();
        assert_eq!(e.path, "resources.memory_mb");
        assert_eq!(e.line, Some(9));
        assert!(e.message.contains("out of range"), "{e}");

        let e = WorkloadSpec::parse(&WASM.replace("pack", "heap"), SpecFormat::Toml).unwrap_err();
        assert_eq!(e.path, "placement.strategy");

        let e = WorkloadSpec::parse(
            r#"{"name":"x","source":"a","kind":"vmx"}"#,
            SpecFormat::Json,
        )
        .unwrap_err();
        assert_eq!(e.path, "kind");
        assert_eq!(e.line, Some(1));

        let e = WorkloadSpec::parse(r#"["x","a"]"#, SpecFormat::Json).unwrap_err();
        assert!(e.message.contains("JSON object"), "{e}");

        let e = WorkloadSpec::parse(r#"{"name":"x","source":"a","colour":1}"#, SpecFormat::Json)
            .unwrap_err();
        assert!(e.message.contains("colour"), "{e}");

        let e = WorkloadSpec::parse(
            r#"{"name":"x","source":"a","ports":[{"container":80},{"container":80}]}"#,
            SpecFormat::Json,
        )
        .unwrap_err();
        assert_eq!(e.path, "ports[1].host");

        let e =
            WorkloadSpec::parse("name = \"a b\"\nsource = \"x\"\n", SpecFormat::Toml).unwrap_err();
        assert_eq!((e.path.as_str(), e.line), ("name", Some(1)));
    }

    #[test]
    fn the_lifecycle_refuses_illegal_changes_and_bounds_history() {
        let spec = WorkloadSpec::parse("name = \"a\"\nsource = \"x\"\n", SpecFormat::Toml).unwrap();
        let mut w = Workload::new(WorkloadId([1; 8]), spec, NodeId::from_bytes([0; 10]), 0);
        assert!(w.transition(State::Running, "skip", 1).is_err());
        assert_eq!(w.state, State::Pending);
        for i in 0..20 {
            w.transition(State::Scheduled, "placed", i).unwrap();
            w.transition(State::Starting, "start", i).unwrap();
            w.transition(State::Running, "up", i).unwrap();
            w.transition(State::Stopped, "exit 0", i).unwrap();
            w.transition(State::Pending, "again", i).unwrap();
        }
        assert_eq!(w.history.len(), HISTORY_LIMIT);
        assert_eq!(w.history.last().unwrap().to, State::Pending);
    }

    #[test]
    fn the_documented_examples_parse() {
        for (name, src, format) in [
            (
                "wasm.toml",
                include_str!("../../../examples/workloads/wasm.toml"),
                SpecFormat::Toml,
            ),
            (
                "process.toml",
                include_str!("../../../examples/workloads/process.toml"),
                SpecFormat::Toml,
            ),
            (
                "container.json",
                include_str!("../../../examples/workloads/container.json"),
                SpecFormat::Json,
            ),
        ] {
            if let Err(e) = WorkloadSpec::parse(src, format) {
                panic!("examples/workloads/{name}: {e}");
            }
        }
    }

    #[test]
    fn workload_ids_round_trip() {
        let id = WorkloadId([0xab, 1, 2, 3, 4, 5, 6, 0xff]);
        assert_eq!(id.to_string().parse::<WorkloadId>().unwrap(), id);
        assert!("abc".parse::<WorkloadId>().is_err());
        assert!("ABABABABABABABAB".parse::<WorkloadId>().is_err());
    }
}

//! The `container` driver: a container on the node's Docker engine, driven
//! through the Engine API over the local unix socket (`DOCKER_HOST` when it
//! is a `unix://` address, else `/var/run/docker.sock`).
//!
//! - **Source.** A path to an existing file is a `docker save` tarball: it
//!   is streamed to the engine (`POST /images/load`) unless the engine
//!   already holds the very image it names (same tag, same image id), and
//!   the image is the tarball's `manifest.json` `RepoTags[0]` (else what the
//!   engine reports it loaded). Anything else is an image reference that
//!   must already be in the engine: nothing is ever pulled.
//! - **Container.** Named `locus-<workload id>-<epoch>`, labelled
//!   `locus.workload`, `locus.epoch` and `locus.name` (plus `locus.log-dir`
//!   and `locus.log-limit`, so that a restarted agent can pump the logs of a
//!   container it finds again). `args` replace the image's command, the
//!   spec's env is the container's env, no restart policy (the agent
//!   restarts).
//! - **Limits.** `cpu_millicores` → `NanoCpus` (CFS quota), `memory_mb` →
//!   `Memory` with `MemorySwap` equal to it (no swap on top, where the
//!   kernel accounts swap). The engine enforces both; an OOM kill is
//!   reported as `memory limit of N MiB exceeded`.
//! - **Ports** are published on `127.0.0.1` by default (a workload is not
//!   reachable from other hosts unless the node says so:
//!   [`ContainerDriver::with_publish_address`]). **Devices** that are paths
//!   under `/dev` are mapped read-write at the same path; other device
//!   references (`usb:…`, `pci:…`) are for placement only and are skipped.
//! - **Logs.** Docker's own log (json-file) is capped at two files of half
//!   the run's log limit; a task follows it into the bounded [`LogFile`].

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, DeviceMapping,
    HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, ImportImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use locus_core::workload::{Kind, Protocol, WorkloadId};
use tokio::io::AsyncReadExt;
use tokio::sync::{OnceCell, watch};
use tokio::task::AbortHandle;

use crate::{Driver, DriverError, Exit, Instance, LOG_FILE, LogFile, Observed, Run};

/// Label carrying the workload id.
pub const LABEL_WORKLOAD: &str = "locus.workload";
/// Label carrying the epoch.
pub const LABEL_EPOCH: &str = "locus.epoch";
/// Label carrying the workload's name.
pub const LABEL_NAME: &str = "locus.name";
/// Label carrying the workload's directory (where its log goes).
pub const LABEL_LOG_DIR: &str = "locus.log-dir";
/// Label carrying the run's log limit in bytes.
pub const LABEL_LOG_LIMIT: &str = "locus.log-limit";
/// Label carrying the id of the node that runs the container.
pub const LABEL_NODE: &str = "locus.node";

/// Chunk size when streaming an image tarball to the engine.
const LOAD_CHUNK: usize = 256 * 1024;
/// Largest `manifest.json` read from a tarball.
const MANIFEST_LIMIT: u64 = 1 << 20;
/// How long an observer waits for the log pump to drain after an exit.
const PUMP_DRAIN: Duration = Duration::from_secs(2);
/// How long to wait for a killed container to be reported as ended.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for a container's statistics.
pub const USAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs workloads as containers on the local Docker engine (see the module
/// docs).
pub struct ContainerDriver {
    docker: Docker,
    /// The API version is agreed with the engine on first use.
    negotiated: OnceCell<()>,
    publish_address: IpAddr,
    pumps: Arc<Mutex<HashMap<String, Pump>>>,
    /// The node whose containers these are (label `locus.node`): several
    /// agents may share one engine, and each must only ever clean up its own.
    node: Option<String>,
}

impl Drop for ContainerDriver {
    fn drop(&mut self) {
        // The containers run on; the tasks following their logs end with
        // the driver (a new one follows them again when it observes them).
        for (_, pump) in self.pumps().drain() {
            pump.abort.abort();
        }
    }
}

/// A task following a container's logs into its log file.
struct Pump {
    done: watch::Receiver<bool>,
    abort: AbortHandle,
}

fn runtime(context: impl std::fmt::Display, e: EngineError) -> DriverError {
    DriverError::Runtime(format!("{context}: {}", engine_message(&e)))
}

/// The engine's own message when it sent one.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        EngineError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn source_error(source: &str, reason: impl Into<String>) -> DriverError {
    DriverError::Source {
        source_ref: source.to_owned(),
        reason: reason.into(),
    }
}

/// The name of a run's container.
pub fn container_name(id: WorkloadId, epoch: u64) -> String {
    format!("locus-{id}-{epoch}")
}

impl ContainerDriver {
    /// A driver for the local engine. Fails (`Unavailable`) when there is no
    /// engine socket; whether the engine answers is [`Driver::probe`]'s job.
    pub fn connect() -> Result<ContainerDriver, DriverError> {
        let docker =
            Docker::connect_with_unix_defaults().map_err(|e| DriverError::Unavailable {
                kind: Kind::Container,
                reason: format!("cannot use the Docker engine socket: {e}"),
            })?;
        Ok(ContainerDriver {
            docker,
            negotiated: OnceCell::new(),
            publish_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pumps: Arc::new(Mutex::new(HashMap::new())),
            node: None,
        })
    }

    /// Label every container with this node's id, and find only this
    /// node's containers among the leftovers.
    pub fn for_node(mut self, node: impl Into<String>) -> ContainerDriver {
        self.node = Some(node.into());
        self
    }

    /// Publish ports on `address` instead of `127.0.0.1` (`0.0.0.0`: on
    /// every interface of the node).
    pub fn with_publish_address(mut self, address: IpAddr) -> ContainerDriver {
        self.publish_address = address;
        self
    }

    /// The client, once the API version is agreed with the engine (the
    /// client speaks a newer API than older engines accept).
    async fn engine(&self) -> Result<&Docker, DriverError> {
        self.negotiated
            .get_or_try_init(|| async {
                // The clone shares its version with `self.docker`.
                self.docker
                    .clone()
                    .negotiate_version()
                    .await
                    .map(drop)
                    .map_err(|e| DriverError::Unavailable {
                        kind: Kind::Container,
                        reason: format!(
                            "the Docker engine does not answer: {}",
                            engine_message(&e)
                        ),
                    })
            })
            .await?;
        Ok(&self.docker)
    }

    fn pumps(&self) -> MutexGuard<'_, HashMap<String, Pump>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.pumps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Load a `docker save` tarball into the engine, streaming it, unless
    /// the engine already holds the image it names. Returns the image to
    /// run: `RepoTags[0]` of its manifest, else what the engine loaded.
    pub async fn load_image(&self, tarball: &Path) -> Result<String, DriverError> {
        let docker = self.engine().await?;
        let shown = tarball.display().to_string();
        let path = tarball.to_owned();
        let manifest = tokio::task::spawn_blocking(move || read_manifest(&path))
            .await
            .map_err(|e| DriverError::Runtime(format!("reading {shown}: {e}")))?
            .map_err(|e| source_error(&shown, format!("not a readable image tarball: {e}")))?;
        let tag = manifest.as_ref().and_then(|m| m.repo_tags.first().cloned());
        if let (Some(tag), Some(want)) = (&tag, manifest.as_ref().and_then(Manifest::image_id))
            && let Ok(have) = docker.inspect_image(tag).await
            && have.id.as_deref() == Some(want.as_str())
        {
            tracing::debug!(%tag, "image already in the engine; not loading {shown}");
            return Ok(tag.clone());
        }

        let file = tokio::fs::File::open(tarball)
            .await
            .map_err(|e| DriverError::Io {
                path: tarball.to_owned(),
                source: e,
            })?;
        let body = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; LOAD_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf.into()), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        let options = ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut progress = docker.import_image_stream(options, body, None);
        let (mut loaded_tag, mut loaded_id) = (None, None);
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| {
                source_error(
                    &shown,
                    format!("the engine cannot load it: {}", engine_message(&e)),
                )
            })?;
            for line in info.stream.as_deref().unwrap_or("").lines() {
                if let Some(id) = line.strip_prefix("Loaded image ID: ") {
                    loaded_id = Some(id.trim().to_owned());
                } else if let Some(name) = line.strip_prefix("Loaded image: ") {
                    loaded_tag.get_or_insert_with(|| name.trim().to_owned());
                }
            }
        }
        tag.or(loaded_tag).or(loaded_id).ok_or_else(|| {
            source_error(
                &shown,
                "the engine loaded it but named no image (is it a docker save tarball?)",
            )
        })
    }

    /// The image to run for a source (see the module docs).
    async fn image_for(&self, source: &str) -> Result<String, DriverError> {
        let is_file = tokio::fs::metadata(source)
            .await
            .map(|m| m.is_file())
            .unwrap_or(false);
        if is_file {
            return self.load_image(Path::new(source)).await;
        }
        match self.engine().await?.inspect_image(source).await {
            Ok(_) => Ok(source.to_owned()),
            Err(e) if status_of(&e) == Some(404) => Err(source_error(
                source,
                format!(
                    "image {source} is not in the engine (and is not a file here); load it from a \
                     tarball (`docker save`) — locus never pulls"
                ),
            )),
            Err(e) => Err(runtime(format!("inspecting image {source}"), e)),
        }
    }

    /// Follow a container's logs into `<dir>/log` from a task (once per
    /// container); `since` in Unix seconds, 0 for everything.
    fn pump(&self, id: &str, dir: PathBuf, limit: u64, since: i32) {
        let mut pumps = self.pumps();
        if pumps.contains_key(id) {
            return;
        }
        let (tx, rx) = watch::channel(false);
        let docker = self.docker.clone();
        let container = id.to_owned();
        let task = tokio::spawn(async move {
            let mut log = match LogFile::open(&dir, limit) {
                Ok(log) => log,
                Err(e) => {
                    tracing::warn!("cannot open the log of container {container}: {e}");
                    let _ = tx.send(true);
                    return;
                }
            };
            let options = LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                since,
                tail: "all".to_owned(),
                ..Default::default()
            };
            let mut stream = docker.logs(&container, Some(options));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(out) => {
                        if let Err(e) = log.append(out.as_ref()) {
                            tracing::warn!("cannot write the log of container {container}: {e}");
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "lost the log stream of container {container}: {}",
                            engine_message(&e)
                        );
                        break;
                    }
                }
            }
            let _ = tx.send(true);
        });
        pumps.insert(
            id.to_owned(),
            Pump {
                done: rx,
                abort: task.abort_handle(),
            },
        );
    }

    /// Wait (briefly) until the pump of an ended container has written all
    /// it will.
    async fn drain(&self, id: &str) {
        let done = self.pumps().get(id).map(|p| p.done.clone());
        if let Some(mut done) = done {
            let _ = tokio::time::timeout(PUMP_DRAIN, done.wait_for(|d| *d)).await;
        }
    }

    /// Inspect a container; `None` when the engine does not know it.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>, DriverError> {
        match self.engine().await?.inspect_container(id, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(runtime(format!("inspecting container {id}"), e)),
        }
    }

    /// Pump the logs of a running container this driver did not start (a
    /// previous agent run did), from where its log file stops.
    fn adopt_logs(&self, id: &str, c: &ContainerInspectResponse) {
        let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
        let label = |k: &str| labels.and_then(|l| l.get(k));
        let (Some(dir), Some(limit)) = (
            label(LABEL_LOG_DIR),
            label(LABEL_LOG_LIMIT).and_then(|l| l.parse().ok()),
        ) else {
            return;
        };
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            return;
        }
        // From the last change of the log file: a line of that second may
        // show twice, none is lost.
        let since = std::fs::metadata(dir.join(LOG_FILE))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i32::try_from(d.as_secs()).ok())
            .unwrap_or(0);
        tracing::info!("following the logs of container {id} again (left by a previous agent run)");
        self.pump(id, dir, limit, since);
    }
}

/// How an inspected container ended, or `None` while it runs.
fn exit_of(c: &ContainerInspectResponse) -> Option<Exit> {
    let state = c.state.as_ref()?;
    match state.status {
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {}
        Some(ContainerStateStatusEnum::CREATED) => {
            // Created and never started: a start that failed.
            let error = state.error.clone().unwrap_or_default();
            return Some(Exit {
                code: None,
                failed: true,
                reason: if error.is_empty() {
                    "the container was created but never started".to_owned()
                } else {
                    format!("the container could not start: {error}")
                },
            });
        }
        _ => return None,
    }
    let code = state.exit_code.and_then(|c| i32::try_from(c).ok());
    if state.oom_killed == Some(true) {
        let limit = c
            .host_config
            .as_ref()
            .and_then(|h| h.memory)
            .filter(|m| *m > 0)
            .map(|m| format!("{} MiB", m / (1024 * 1024)))
            .unwrap_or_else(|| "the node's memory".to_owned());
        return Some(Exit {
            code,
            failed: true,
            reason: format!("memory limit of {limit} exceeded"),
        });
    }
    let error = state.error.clone().filter(|e| !e.is_empty());
    Some(match (code, error) {
        (_, Some(error)) => Exit {
            code,
            failed: true,
            reason: format!("the engine reports: {error}"),
        },
        (Some(0), None) => Exit {
            code,
            failed: false,
            reason: "exited with code 0".to_owned(),
        },
        (Some(n), None) => {
            // A process killed by a signal leaves 128 + signal.
            let signal = (129..=192)
                .contains(&n)
                .then(|| nix::sys::signal::Signal::try_from(n - 128).ok())
                .flatten()
                .map(|s| format!(" (killed by {})", s.as_str()))
                .unwrap_or_default();
            Exit {
                code,
                failed: true,
                reason: format!("exited with code {n}{signal}"),
            }
        }
        (None, None) => Exit {
            code: None,
            failed: true,
            reason: "ended without an exit code".to_owned(),
        },
    })
}

/// A container's usage from one statistics reading; `None` when it
/// reports none (the engine sends empty statistics for a container that
/// is not running).
fn usage_of(stats: &bollard::models::ContainerStatsResponse) -> Option<crate::Usage> {
    let cpu_ns = stats.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    let memory = stats.memory_stats.as_ref()?;
    let usage = memory.usage?;
    let stat = |key: &str| memory.stats.as_ref().and_then(|s| s.get(key).copied());
    // As `docker stats` does: the inactive page cache is not the
    // container's working set.
    let inactive = stat("total_inactive_file")
        .filter(|v| *v < usage)
        .or_else(|| stat("inactive_file").filter(|v| *v < usage))
        .unwrap_or(0);
    Some(crate::Usage {
        cpu_seconds: cpu_ns as f64 / 1e9,
        memory_bytes: usage - inactive,
    })
}

/// The exit reported for a container the engine no longer has.
fn vanished() -> Exit {
    Exit {
        code: None,
        failed: false,
        reason: "the container no longer exists".to_owned(),
    }
}

/// The part of a `docker save` manifest the driver uses.
#[derive(Debug, serde::Deserialize)]
struct Manifest {
    #[serde(rename = "Config", default)]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Vec<String>,
}

impl Manifest {
    /// The image id (`sha256:<config digest>`) the engine gives the image.
    fn image_id(&self) -> Option<String> {
        let last = self.config.rsplit('/').next()?;
        let hex = last.strip_suffix(".json").unwrap_or(last);
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("sha256:{hex}"))
    }
}

/// The first entry of `manifest.json` in a tar file, reading only the tar
/// headers up to it (the layers are skipped, not read). `None` when the
/// archive has no manifest.
fn read_manifest(path: &Path) -> std::io::Result<Option<Manifest>> {
    use std::io::{BufReader, Error, ErrorKind};
    let mut tar = BufReader::new(std::fs::File::open(path)?);
    let mut header = [0u8; 512];
    loop {
        match tar.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        if header.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let field = |range: std::ops::Range<usize>| {
            let raw = &header[range];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let mut name = field(0..100);
        if &header[257..262] == b"ustar" {
            let prefix = field(345..500);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size_text = field(124..136);
        let size = u64::from_str_radix(size_text.trim(), 8).map_err(|_| {
            Error::new(
                ErrorKind::InvalidData,
                format!("bad tar entry size {size_text:?} for {name:?}"),
            )
        })?;
        let regular = matches!(header[156], b'0' | 0);
        if regular && name.trim_start_matches("./") == "manifest.json" {
            if size > MANIFEST_LIMIT {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "manifest.json is too large",
                ));
            }
            let mut text = Vec::new();
            (&mut tar).take(size).read_to_end(&mut text)?;
            let mut entries: Vec<Manifest> = serde_json::from_slice(&text)
                .map_err(|e| Error::new(ErrorKind::InvalidData, format!("manifest.json: {e}")))?;
            return Ok((!entries.is_empty()).then(|| entries.swap_remove(0)));
        }
        let skip = size.div_ceil(512) * 512;
        let skip = i64::try_from(skip)
            .map_err(|_| Error::new(ErrorKind::InvalidData, "tar entry too large"))?;
        tar.seek_relative(skip)?;
    }
}

#[async_trait]
impl Driver for ContainerDriver {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    async fn probe(&self) -> Result<(), DriverError> {
        self.engine()
            .await?
            .ping()
            .await
            .map(drop)
            .map_err(|e| DriverError::Unavailable {
                kind: Kind::Container,
                reason: format!("the Docker engine does not answer: {}", engine_message(&e)),
            })
    }

    async fn start(&self, run: &Run) -> Result<Instance, DriverError> {
        let source = run.spec.source.get();
        let image = self.image_for(source).await?;
        let docker = self.engine().await?;
        let name = container_name(run.id, run.epoch);
        let spec = &run.spec;

        let labels = HashMap::from([
            (LABEL_WORKLOAD.to_owned(), run.id.to_string()),
            (LABEL_EPOCH.to_owned(), run.epoch.to_string()),
            (LABEL_NAME.to_owned(), spec.name.get().clone()),
            (LABEL_LOG_DIR.to_owned(), run.dir.display().to_string()),
            (LABEL_LOG_LIMIT.to_owned(), run.log_limit_bytes.to_string()),
        ]);
        let mut labels = labels;
        if let Some(node) = &self.node {
            labels.insert(LABEL_NODE.to_owned(), node.clone());
        }
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for port in &spec.ports {
            let proto = match port.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let key = format!("{}/{proto}", port.container);
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(self.publish_address.to_string()),
                    host_port: Some(port.host_port().to_string()),
                }]),
            );
        }
        let mut devices = Vec::new();
        for device in &spec.devices {
            let device = device.get();
            if device.starts_with("/dev/") {
                devices.push(DeviceMapping {
                    path_on_host: Some(device.clone()),
                    path_in_container: Some(device.clone()),
                    cgroup_permissions: Some("rw".to_owned()),
                });
            } else {
                tracing::debug!(%device, "not a /dev path: not mapped into the container");
            }
        }
        let memory = i64::try_from(spec.resources.memory_bytes()).unwrap_or(i64::MAX);
        let nano_cpus =
            i64::try_from(*spec.resources.cpu_millicores.get() * 1_000_000).unwrap_or(i64::MAX);
        let per_file = (run.log_limit_bytes / 2).max(1024);
        let host_config = HostConfig {
            nano_cpus: Some(nano_cpus),
            memory: Some(memory),
            memory_swap: Some(memory),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            devices: (!devices.is_empty()).then_some(devices),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), per_file.to_string()),
                    ("max-file".to_owned(), "2".to_owned()),
                ])),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: (!spec.args.is_empty())
                .then(|| spec.args.iter().map(|a| a.get().clone()).collect()),
            env: Some(
                spec.env
                    .iter()
                    .map(|(k, v)| format!("{}={}", k.get(), v.get()))
                    .collect(),
            ),
            labels: Some(labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = || CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = match docker.create_container(Some(options()), body.clone()).await {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(409) => {
                // A container of this run is left over (a start that failed
                // half-way, an instance never removed): replace it unless it
                // runs.
                if let Some(old) = self.inspect(&name).await?
                    && exit_of(&old).is_none()
                {
                    return Err(DriverError::Runtime(format!(
                        "container {name} already exists and is running"
                    )));
                }
                self.remove_container(&name).await?;
                docker
                    .create_container(Some(options()), body)
                    .await
                    .map_err(|e| runtime(format!("creating container {name} from {image}"), e))?
            }
            Err(e) => {
                return Err(runtime(
                    format!("creating container {name} from {image}"),
                    e,
                ));
            }
        };
        let id = created.id;
        for warning in created.warnings {
            tracing::warn!(container = %name, "engine warning: {warning}");
        }
        if let Err(e) = docker.start_container(&id, None).await {
            let err = runtime(format!("starting container {name}"), e);
            let _ = self.remove_container(&id).await;
            return Err(err);
        }
        self.pump(&id, run.dir.clone(), run.log_limit_bytes, 0);
        tracing::debug!(container = %name, %id, %image, "container started");
        Ok(Instance {
            id: run.id,
            epoch: run.epoch,
            kind: Kind::Container,
            handle: id,
        })
    }

    async fn observe(&self, instance: &Instance) -> Observed {
        let id = &instance.handle;
        match self.inspect(id).await {
            Ok(None) => Observed::Gone,
            Ok(Some(c)) => match exit_of(&c) {
                Some(exit) => {
                    self.drain(id).await;
                    Observed::Exited(exit)
                }
                None => {
                    self.adopt_logs(id, &c);
                    Observed::Running
                }
            },
            Err(e) => {
                // The state is unknown, not changed: report it as it was
                // (running) and look again next time.
                tracing::warn!("cannot observe container {id}: {e}");
                Observed::Running
            }
        }
    }

    async fn stop(&self, instance: &Instance, timeout: Duration) -> Result<Exit, DriverError> {
        let id = &instance.handle;
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let t = i32::try_from(secs).unwrap_or(i32::MAX);
        // The engine answers once the container is down: allow for it.
        let docker = self
            .engine()
            .await?
            .clone()
            .with_timeout(Duration::from_secs(secs + 60));
        let options = StopContainerOptions {
            t: Some(t),
            ..Default::default()
        };
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => return Ok(vanished()),
            Err(e) => return Err(runtime(format!("stopping container {id}"), e)),
        }
        self.wait_end(id).await
    }

    async fn kill(&self, instance: &Instance) -> Result<Exit, DriverError> {
        let id = &instance.handle;
        let options = KillContainerOptions {
            signal: "SIGKILL".to_owned(),
        };
        match self.engine().await?.kill_container(id, Some(options)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => return Ok(vanished()),
            // 409: not running, so already ended.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(runtime(format!("killing container {id}"), e)),
        }
        self.wait_end(id).await
    }

    async fn remove(&self, instance: &Instance) -> Result<(), DriverError> {
        self.remove_container(&instance.handle).await
    }

    /// One reading of the engine's statistics (`GET
    /// /containers/{id}/stats?stream=false&one-shot=true`, bounded by
    /// [`USAGE_TIMEOUT`]): `cpu_stats.cpu_usage.total_usage` (nanoseconds
    /// of CPU used by the container's cgroup since it started) and
    /// `memory_stats.usage` less the inactive page cache the engine
    /// reports (`inactive_file` on cgroup v2, `total_inactive_file` on
    /// v1, as `docker stats` counts it). The engine reads the container's
    /// cgroup, so every process in the container counts, ended ones
    /// included for CPU.
    ///
    /// `None` when the engine does not answer in time, does not know the
    /// container, or reports no usage (a container that is not running).
    async fn usage(&self, instance: &Instance) -> Option<crate::Usage> {
        let read = async {
            let docker = self.engine().await.ok()?;
            let options = StatsOptions {
                stream: false,
                one_shot: true,
            };
            let stats = docker
                .stats(&instance.handle, Some(options))
                .next()
                .await?
                .ok()?;
            usage_of(&stats)
        };
        tokio::time::timeout(USAGE_TIMEOUT, read)
            .await
            .ok()
            .flatten()
    }

    async fn leftovers(&self) -> Result<Vec<Instance>, DriverError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                match &self.node {
                    Some(node) => vec![LABEL_WORKLOAD.to_owned(), format!("{LABEL_NODE}={node}")],
                    None => vec![LABEL_WORKLOAD.to_owned()],
                },
            )])),
            ..Default::default()
        };
        let list = self
            .engine()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(|e| runtime("listing containers", e))?;
        let mut found = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let id = labels
                .get(LABEL_WORKLOAD)
                .and_then(|v| v.parse::<WorkloadId>().ok());
            let epoch = labels.get(LABEL_EPOCH).and_then(|v| v.parse::<u64>().ok());
            match (c.id, id, epoch) {
                (Some(handle), Some(id), Some(epoch)) => found.push(Instance {
                    id,
                    epoch,
                    kind: Kind::Container,
                    handle,
                }),
                (handle, _, _) => tracing::warn!(
                    "container {} carries invalid locus labels: {labels:?}",
                    handle.unwrap_or_default()
                ),
            }
        }
        Ok(found)
    }
}

impl ContainerDriver {
    /// Wait until a stopped or killed container is reported as ended.
    async fn wait_end(&self, id: &str) -> Result<Exit, DriverError> {
        let deadline = tokio::time::Instant::now() + KILL_GRACE;
        loop {
            let Some(c) = self.inspect(id).await? else {
                return Ok(vanished());
            };
            if let Some(exit) = exit_of(&c) {
                self.drain(id).await;
                return Ok(exit);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Runtime(format!(
                    "container {id} still runs {KILL_GRACE:?} after it was stopped"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Remove a container (by id or name) with force; a missing one is fine.
    async fn remove_container(&self, id: &str) -> Result<(), DriverError> {
        if let Some(pump) = self.pumps().remove(id) {
            pump.abort.abort();
        }
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .engine()
            .await?
            .remove_container(id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // 409 "removal already in progress" ends the same way.
            Err(e) if status_of(&e) == Some(409) && engine_message(&e).contains("in progress") => {
                Ok(())
            }
            Err(e) => Err(runtime(format!("removing container {id}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: serde_json::Value) -> bollard::models::ContainerStatsResponse {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn usage_is_cpu_time_and_memory_without_the_inactive_page_cache() {
        let v2 = stats(serde_json::json!({
            "cpu_stats": { "cpu_usage": { "total_usage": 2_500_000_000u64 } },
            "memory_stats": { "usage": 10_485_760u64, "stats": { "inactive_file": 4_194_304u64 } },
        }));
        assert_eq!(
            usage_of(&v2),
            Some(crate::Usage {
                cpu_seconds: 2.5,
                memory_bytes: 6 << 20
            })
        );
        let v1 = stats(serde_json::json!({
            "cpu_stats": { "cpu_usage": { "total_usage": 1_000_000u64 } },
            "memory_stats": { "usage": 8192u64, "stats": { "total_inactive_file": 4096u64, "inactive_file": 1u64 } },
        }));
        assert_eq!(usage_of(&v1).unwrap().memory_bytes, 4096);
        // A page cache larger than the usage is not subtracted.
        let odd = stats(serde_json::json!({
            "cpu_stats": { "cpu_usage": { "total_usage": 0u64 } },
            "memory_stats": { "usage": 4096u64, "stats": { "inactive_file": 8192u64 } },
        }));
        assert_eq!(usage_of(&odd).unwrap().memory_bytes, 4096);
    }

    #[test]
    fn a_container_that_does_not_run_reports_no_usage() {
        let stopped = stats(serde_json::json!({
            "cpu_stats": { "cpu_usage": { "total_usage": 0u64 }, "throttling_data": {} },
            "memory_stats": {},
        }));
        assert_eq!(usage_of(&stopped), None);
        assert_eq!(usage_of(&stats(serde_json::json!({}))), None);
    }
}

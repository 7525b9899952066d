//! The command line: one binary, `locus agent` runs a node, every other
//! subcommand is a client of a node's API.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default API URL of the local node.
pub const DEFAULT_API: &str = "http://127.0.0.1:7400";

#[derive(Debug, Parser)]
#[command(
    name = "locus",
    version,
    about = "locus: one decentralised cloud from scattered edge machines",
    long_about = "locus turns scattered edge machines into one cloud with no central controller.\n\
                  `locus agent` runs a node; every other command talks to a node's API.",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage or configuration error."
)]
pub struct Cli {
    /// API of the node to talk to.
    #[arg(long, global = true, env = "LOCUS_API", default_value = DEFAULT_API, value_name = "URL")]
    pub api: String,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// How to trust an `https://` API, instead of a certificate authority:
    /// `node:<hex>` (the node's key, from `locus node --json`) or
    /// `org:<hex>` (the org's key, from `locus org ls`: any node the org
    /// certified).
    #[arg(long, global = true, env = "LOCUS_PIN", value_name = "PIN")]
    pub pin: Option<String>,

    /// File holding the token to call the node with. Without it: the
    /// `LOCUS_TOKEN` variable, then what `locus login` saved for this API,
    /// then the local admin token in the data dir (`LOCUS_DATA_DIR`,
    /// default `.locus`) of an agent on this machine.
    #[arg(long, global = true, env = "LOCUS_CREDENTIAL", value_name = "FILE")]
    pub credential: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node agent (the daemon) in the foreground.
    Agent(Box<AgentArgs>),
    /// This node: identity, inventory, uptime.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Host devices (USB, PCI accelerators) that workloads can attach.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Nodes of the cluster, as the selected node sees them.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Sites of the cluster and their nodes.
    #[command(subcommand)]
    Sites(SitesCommand),
    /// Submit a workload from a spec file (TOML, or JSON for `.json`).
    Run(RunArgs),
    /// List the workloads of the cluster.
    Ps(PsArgs),
    /// One workload in full, with the history of its states.
    Inspect { workload: String },
    /// A workload's output (stdout and stderr).
    Logs(LogsArgs),
    /// Power on a stopped or failed workload.
    Start { workload: String },
    /// Power off a workload gracefully (killed after its stop timeout).
    Stop { workload: String },
    /// Force off: kill a workload at once.
    Kill { workload: String },
    /// Change a workload's resources or environment (it restarts).
    Update(UpdateArgs),
    /// Destroy a workload (it must be stopped unless --force).
    Rm(RmArgs),
    /// Content-addressed artifacts: put, get, list, pin, collect.
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// Things (IoT devices): register, list, inspect, remove, move to
    /// another manager, and command.
    #[command(subcommand)]
    Thing(ThingCommand),
    /// Check offline, with no node: an exported bundle of readings (signed
    /// checkpoints, consistency and inclusion proofs; names every reading
    /// altered, dropped, duplicated or reordered), or a signed contract
    /// (`locus verify contract FILE`). Exit 0 clean, 1 not.
    Verify(VerifyArgs),
    /// User tokens: mint or revoke one on a node; narrow one or show what
    /// one claims, offline.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Save a token for the node's API (`--api`), checked with the node;
    /// later commands use it.
    Login(TokenInput),
    /// Forget the token saved for the node's API.
    Logout,
    /// Who the token speaks for, as the node sees it.
    Whoami,
    /// The node's audit trail: every mutating call, who, allowed or refused
    /// (org admins).
    Audit(AuditArgs),
    /// The org: the orgs admitted to the cluster, join tokens.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Tenants of the org: create one or change its quota and grant, list
    /// them with what they use, remove one.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// The market between orgs: offer this node's spare resources, ask
    /// for cover of its workloads and things, see the book and the
    /// rounds, and why a record traded or not.
    #[command(subcommand)]
    Market(MarketCommand),
    /// Contracts this node signed or arbitrates: list, show (the signed
    /// form that `locus verify contract` checks).
    #[command(subcommand)]
    Contract(ContractCommand),
    /// This node's org's accounts in credits with other orgs: its balance,
    /// its position toward each org, the stakes held in escrow. `--json`
    /// includes the signed receipts `locus verify account` checks.
    Account,
    /// Run a story on this machine, printing each step with its time.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Users of a tenant: add one (prints its token), list, remove (revokes
    /// its tokens).
    #[command(subcommand)]
    User(UserCommand),
    /// Make a cluster key for `--cluster-key-file` (every node of a cluster
    /// needs the same file).
    Keygen(KeygenArgs),
    /// Print the version of this binary.
    Version,
    /// Measure locus itself; prints JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Directory for the node key, database and artifacts.
    #[arg(
        long,
        env = "LOCUS_DATA_DIR",
        default_value = ".locus",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// TOML configuration file (every key optional; see README).
    #[arg(long, short = 'c', env = "LOCUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// API listen address; overrides `[listen] api` (default 127.0.0.1:7400).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,

    /// Node name; overrides `name` (default: the host name).
    #[arg(long)]
    pub name: Option<String>,

    /// Site name; overrides `[site] name`.
    #[arg(long)]
    pub site: Option<String>,

    /// Gossip (UDP) listen address; overrides `[listen] gossip` (default 127.0.0.1:7401).
    #[arg(long, value_name = "IP:PORT")]
    pub gossip: Option<SocketAddr>,

    /// MQTT broker listen address; overrides `[listen] mqtt` (default 127.0.0.1:1883; port 0: any free port).
    #[arg(long, value_name = "IP:PORT")]
    pub mqtt: Option<SocketAddr>,

    /// Take MQTT readings from this external broker instead of running the
    /// embedded one (`mqtt://[USER:PASSWORD@]HOST:PORT`); overrides
    /// `[things] mqtt_broker`.
    #[arg(long, value_name = "URL")]
    pub mqtt_broker: Option<String>,

    /// Serve the API over TLS too, on this address; overrides `[listen]
    /// api_tls (default: off). Clients pin the node or org key (`--pin`).
    #[arg(long, value_name = "IP:PORT")]
    pub listen_tls: Option<SocketAddr>,

    /// LwM2M server (UDP) listen address; overrides `[listen] lwm2m` (default 127.0.0.1:5683).
    #[arg(long, value_name = "IP:PORT")]
    pub lwm2m: Option<SocketAddr>,

    /// LwM2M bootstrap server (UDP) listen address; overrides `[listen] lwm2m_bootstrap` (default 127.0.0.1:5783).
    #[arg(long, value_name = "IP:PORT")]
    pub lwm2m_bootstrap: Option<SocketAddr>,

    /// LwM2M server over DTLS 1.2 with PSK (coaps) listen address; overrides `[listen] lwm2m_dtls` (default 127.0.0.1:5684; port 0: any free port).
    #[arg(long, value_name = "IP:PORT")]
    pub lwm2m_dtls: Option<SocketAddr>,

    /// LwM2M bootstrap server over DTLS 1.2 with PSK (coaps) listen address; overrides `[listen] lwm2m_bootstrap_dtls` (default 127.0.0.1:5784; port 0: any free port).
    #[arg(long, value_name = "IP:PORT")]
    pub lwm2m_bootstrap_dtls: Option<SocketAddr>,

    /// File with the cluster key (from `locus keygen`); overrides `cluster_key_file`.
    #[arg(long, env = "LOCUS_CLUSTER_KEY_FILE", value_name = "FILE")]
    pub cluster_key_file: Option<PathBuf>,

    /// Join token printed by `locus org join-token` on a node of the org:
    /// the first start enrolls this node with it (later starts ignore it).
    #[arg(long, env = "LOCUS_JOIN", value_name = "TOKEN", hide_env_values = true)]
    pub join: Option<String>,

    /// Gossip address of a node to join through (repeatable); added to `seeds`.
    #[arg(long = "seed", value_name = "HOST:PORT")]
    pub seeds: Vec<String>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LOCUS_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Identity, site, resources and uptime of the node.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List known nodes with their liveness.
    Ls(NodesLsArgs),
    /// One node in full (by id, unique id prefix or name).
    Show { node: String },
    /// Estimated round-trip time between two nodes (network coordinates).
    Rtt { a: String, b: String },
}

#[derive(Debug, Args)]
pub struct NodesLsArgs {
    /// Only nodes of this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only nodes in this state: alive, suspect, dead, left.
    #[arg(long, value_parser = ["alive", "suspect", "dead", "left"])]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workload spec (see examples/workloads/).
    pub file: PathBuf,
    /// Only compute placement; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print every node's verdict and score.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only workloads on this node (id, prefix or name).
    #[arg(long)]
    pub node: Option<String>,
    /// Only workloads on nodes of this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only workloads in this state.
    #[arg(long, value_parser = ["pending", "scheduled", "starting", "running", "stopping", "stopped", "failed"])]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Workload id, prefix or name.
    pub workload: String,
    /// Keep printing new output.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Last bytes to print.
    #[arg(long, default_value_t = 65536)]
    pub tail: u64,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Workload id, prefix or name.
    pub workload: String,
    /// New CPU share, in millicores.
    #[arg(long)]
    pub cpu: Option<u64>,
    /// New memory limit, in MiB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Set an environment variable (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Workload id, prefix or name.
    pub workload: String,
    /// Kill it first if it runs.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// List sites with their nodes.
    Ls,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (mode 0600); `-` prints it.
    #[arg(long, short = 'o', default_value = "cluster.key", value_name = "FILE")]
    pub output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List attachable host devices.
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Agent start-up time, idle memory and CPU, binary size.
    Footprint(FootprintArgs),
    /// Failure detection, join convergence, false verdicts and gossip
    /// bandwidth, in the deterministic simulator.
    Fabric(FabricBenchArgs),
    /// Deploy latency per driver (local and remote), failover time after
    /// SIGKILL, and agent memory with ten Wasm workloads, on real agents.
    Workloads(WorkloadsBenchArgs),
    /// Put throughput, peer get throughput against plain file servers,
    /// fan-out to many nodes and RSS during a multi-GB transfer.
    Artifacts(ArtifactsBenchArgs),
    /// Latency of a durable put (`--replicas K`) by size and K, on real
    /// agents.
    Puts(PutsBenchArgs),
    /// MQTT ingest with durability and sealing on (readings/s, publish →
    /// PUBACK latency, bytes per reading), and proof generation and
    /// verification rates.
    Things(ThingsBenchArgs),
    /// Agent start time and idle memory by seal-log length: sealed
    /// readings written straight into fresh data dirs, then a real agent
    /// started, proofs fetched and verified, SIGKILLed and started again.
    Seal(SealBenchArgs),
    /// Token mint, attenuation and authorization (fresh, attenuated,
    /// denied), in process: µs per operation and token sizes.
    Access(AccessBenchArgs),
    /// Clearing time and efficiency against the exact optimum on random
    /// books, and signed-contract verification rate, in process.
    Market(MarketBenchArgs),
}

#[derive(Debug, Args)]
pub struct MarketBenchArgs {
    /// Book sizes: N offers and N requests each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000])]
    pub sizes: Vec<usize>,
    /// Random books per size.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub books: u32,
    /// Timed clearings per book.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Share of requests with an uptime or renewable constraint (0..=1).
    #[arg(long, default_value_t = 0.2)]
    pub constrained: f64,
    /// Orgs the traders belong to.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(3..=100_000))]
    pub orgs: u32,
    /// Signed contracts to verify.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub contracts: u32,
    /// Seed of the random books.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Agents (each its own org) of the live part on loopback: request →
    /// contract and handover times (fewer than 3 skips it).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=40))]
    pub agents: u16,
    /// Requests timed in the live part.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Customer kills timed in the live part.
    #[arg(long, default_value_t = 10)]
    pub handovers: usize,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AccessBenchArgs {
    /// Measured operations per case (after a short warm-up).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub iterations: u32,
    /// Agents of the live part: a cluster of this many on loopback for the
    /// revocation spread (0 skips the live part).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=20))]
    pub agents: u16,
    /// Revocations to time on the cluster.
    #[arg(long, default_value_t = 20)]
    pub revocations: usize,
    /// Seconds of load per throughput case (a cheap GET with and without
    /// the token check).
    #[arg(long, default_value_t = 5)]
    pub load_secs: u64,
    /// Concurrent clients of the throughput cases.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SealBenchArgs {
    /// Log lengths to measure (comma-separated); a baseline of 0 is always
    /// measured first.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 1_000_000, 10_000_000],
          value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub readings: Vec<u64>,
    /// Readings per transaction while the data dir is filled.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub per_transaction: u64,
    /// Seconds each agent is left idle before its memory is read.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub idle_secs: u64,
    /// Also measure the one-time upgrade of a store written before block
    /// roots were stored (the block roots deleted, the agent started).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub upgrade: bool,
    /// Also start this other locus binary (a build from before block roots
    /// were stored) on each log, turned back into the schema it knows, and
    /// check it serves the same proofs.
    #[arg(long)]
    pub compare_with: Option<PathBuf>,
    /// Where the data dirs live (about 250 bytes per reading, one log
    /// length at a time).
    #[arg(long, default_value = "target")]
    pub dir: PathBuf,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ThingsBenchArgs {
    /// MQTT connections, one thing each.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub publishers: u16,
    /// QoS 1 publishes in flight per connection.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub window: u16,
    /// Seconds of measured load (after a one-second warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub secs: u64,
    /// MQTT version the publishers speak.
    #[arg(long, value_enum, default_value_t = MqttVersion::V311)]
    pub mqtt_version: MqttVersion,
    /// Leaves of the in-process Merkle log the proof rates are measured on.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub proof_leaves: u64,
    /// Where the agent's data dir lives.
    #[arg(long, default_value = "target")]
    pub dir: PathBuf,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// An MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[value(name = "3.1.1")]
    V311,
    /// MQTT 5.
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Args)]
pub struct ArtifactsBenchArgs {
    /// Agents to start on loopback (all but the first fetch in the fan-out).
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u16).range(2..=32))]
    pub agents: u16,
    /// Size of the put and peer-get artifact, MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
    /// Runs of each put and get measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Size of the fan-out artifact, MiB.
    #[arg(long, default_value_t = 256)]
    pub fanout_mb: u64,
    /// Size of the transfer whose RSS is watched, GiB.
    #[arg(long, default_value_t = 4)]
    pub rss_gb: u64,
    /// Where the test files and agents live (needs about 3 × rss-gb free).
    #[arg(long, default_value = "target")]
    pub dir: PathBuf,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PutsBenchArgs {
    /// Agents to start on loopback, each on its own site.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub agents: u16,
    /// Artifact sizes, MiB.
    #[arg(long, value_delimiter = ',', default_value = "1,256")]
    pub sizes_mb: Vec<u64>,
    /// Copies asked for.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub replicas: Vec<u32>,
    /// Puts of each size and K (the median and p99 are reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where the test files and agents live.
    #[arg(long, default_value = "target")]
    pub dir: PathBuf,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WorkloadsBenchArgs {
    /// Agents to start on loopback.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=20))]
    pub agents: u16,
    /// Deploy runs per driver and per target (local, remote).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Drivers to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = ["wasm".to_owned(), "process".to_owned(), "container".to_owned()])]
    pub drivers: Vec<String>,
    /// `docker save` tarball for the container driver (scripts/test-images.sh makes one).
    #[arg(long, default_value = "target/test-assets/busybox-image.tar")]
    pub image: PathBuf,
    /// SIGKILL → running elsewhere measurements.
    #[arg(long, default_value_t = 20)]
    pub failover_runs: usize,
    /// Wasm workloads to run for the memory reading (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub memory_workloads: usize,
}

#[derive(Debug, Args)]
pub struct FabricBenchArgs {
    /// Cluster sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 100, 1000])]
    pub nodes: Vec<usize>,
    /// Packet loss rates (comma-separated, 0..1).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0f64, 0.1])]
    pub loss: Vec<f64>,
    /// Runs (seeds) per size and loss.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cluster size of the false-verdict run.
    #[arg(long, default_value_t = 100)]
    pub false_nodes: usize,
    /// Virtual seconds of the false-verdict run at 10% loss.
    #[arg(long, default_value_t = 600)]
    pub false_secs: u64,
    /// Override the SWIM probe period (ms) to explore tunings.
    #[arg(long)]
    pub probe_period_ms: Option<u64>,
    /// Override the suspicion multiplier to explore tunings.
    #[arg(long)]
    pub suspicion: Option<f64>,
}

#[derive(Debug, Args)]
pub struct FootprintArgs {
    /// Cold starts to time (each on a fresh data dir).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,

    /// Seconds to leave the agent idle before reading its memory and CPU.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Store a file on the node; prints its CID (this node's copy is pinned).
    Put(ArtifactPutArgs),
    /// Fetch an artifact to the node (from the nearest holders, verified)
    /// and write it to a file or stdout.
    Get(ArtifactGetArgs),
    /// Fetch an artifact to the node without downloading it here (prefetch).
    Fetch {
        /// The artifact's CID.
        cid: String,
    },
    /// The artifacts the node holds.
    Ls,
    /// One artifact: size, name, pin, replicas and live holders.
    Stat {
        /// The artifact's CID.
        cid: String,
    },
    /// Keep an artifact on the node whatever the budget.
    Pin {
        /// The artifact's CID.
        cid: String,
    },
    /// Let an artifact be collected again.
    Unpin {
        /// The artifact's CID.
        cid: String,
    },
    /// Collect unpinned, unused artifacts (least recently used first)
    /// until the store is within its disk budget.
    Gc {
        /// Collect every collectable artifact, not only down to the budget.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ThingCommand {
    /// Register a thing from a TOML or JSON file (see examples/things/).
    Add(ThingAddArgs),
    /// Every thing of the cluster.
    Ls {
        /// Only things of this protocol (mqtt, lwm2m, http).
        #[arg(long)]
        protocol: Option<String>,
        /// Only things managed by this node (id, prefix or name).
        #[arg(long)]
        node: Option<String>,
    },
    /// One thing: protocol, manager, resources.
    Inspect {
        /// The thing's name.
        thing: String,
    },
    /// Remove a thing from the registry (its readings stay).
    Rm {
        /// The thing's name.
        thing: String,
    },
    /// Give a thing a new manager: a node, or a workload on a node.
    Attach {
        /// The thing's name.
        thing: String,
        /// The new managing node (id, prefix or name).
        #[arg(long)]
        node: String,
        /// A workload on that node that manages the thing.
        #[arg(long)]
        workload: Option<String>,
    },
    /// Read a resource (no VALUE), write VALUE to it, or execute it (VALUE:
    /// its arguments), over the thing's protocol; prints the result.
    Cmd {
        /// The thing's name.
        thing: String,
        /// The resource's name.
        resource: String,
        /// The value to write, or the arguments of an execute.
        value: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ThingAddArgs {
    /// The thing (`.toml` or `.json`).
    pub file: PathBuf,
    /// The managing node (id, prefix or name); overrides `manager.node`.
    #[arg(long)]
    pub node: Option<String>,
    /// A workload on the managing node that manages the thing; overrides
    /// `manager.workload`.
    #[arg(long)]
    pub workload: Option<String>,
}

#[derive(Debug, Args)]
pub struct ArtifactPutArgs {
    /// The file to store.
    pub file: PathBuf,
    /// Copies the cluster keeps, on distinct sites first (0: this node
    /// only). The put answers once min(K, live nodes) copies are stored
    /// and fsynced on distinct nodes, unless --no-wait.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub replicas: u32,
    /// Answer once this node's copy is stored; the other copies follow
    /// in the background.
    #[arg(long)]
    pub no_wait: bool,
    /// A name for people (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ArtifactGetArgs {
    /// The artifact's CID.
    pub cid: String,
    /// Where to write it (default: stdout).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct VerifyArgs {
    #[command(subcommand)]
    pub what: Option<VerifyCommand>,
    /// The bundle (JSON, as a node exports it).
    #[arg(required = true)]
    pub bundle: Option<PathBuf>,
    /// The node's verifier key (`NAME+KEYID+BASE64`, signed-note format).
    #[arg(long, env = "LOCUS_VERIFIER_KEY", value_name = "KEY", required = true)]
    pub key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// A signed contract or a whole settlement (JSON as `locus contract
    /// show -o FILE` writes it, or the binary form): the terms, both
    /// parties' signatures and the org certificates of their nodes; for a
    /// settlement also the provider's statement against its witnessed
    /// evidence, the customer's countersignature or the arbitrator's
    /// ruling recomputed. Needs nothing but the file.
    Contract(VerifyContractArgs),
    /// An org's accounts (`locus account --json` output, or its `chains`):
    /// every receipt signed by both orgs, every chain linked, and the
    /// balances they prove.
    Account(VerifyAccountArgs),
}

#[derive(Debug, Args)]
pub struct VerifyContractArgs {
    /// The contract or settlement file.
    pub file: PathBuf,
    /// Witnesses a takeover needed (the agents' `[market] witnesses`).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=locus_core::config::MAX_WITNESSES))]
    pub witnesses: u64,
}

#[derive(Debug, Args)]
pub struct VerifyAccountArgs {
    /// The accounts file.
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum MarketCommand {
    /// Offer this node's spare resources (less the reserve of its rules)
    /// for its org, until it expires or a contract takes it.
    Offer(MarketOfferArgs),
    /// Ask for a provider to cover workloads and things of this node (a
    /// standby that takes them over if this node dies); their needs are
    /// measured from what they use.
    Request(MarketRequestArgs),
    /// The live offers and requests this node holds.
    Book,
    /// The clearing rounds this node received, newest first.
    Rounds,
    /// Why a record traded or did not, and what this node did about it.
    Explain {
        /// The record id (as `locus market book` shows it).
        record: String,
    },
    /// Take one of this node's records off the book.
    Withdraw {
        /// The record id.
        record: String,
    },
}

#[derive(Debug, Args)]
pub struct MarketOfferArgs {
    /// Asked per unit-hour, in millicredits (default: the rules' price).
    #[arg(long)]
    pub price: Option<u64>,
    /// Take standby-for-handover contracts (default: the rules decide by
    /// battery).
    #[arg(long)]
    pub standby: Option<bool>,
    /// Time on the book: a number and a unit (s, m, h), default 10m.
    #[arg(long, value_name = "DURATION")]
    pub lifetime: Option<String>,
    /// The unit to sell (default: the largest the spare resources fill).
    #[arg(long, value_parser = ["nano", "small", "medium", "large", "xlarge"])]
    pub tier: Option<String>,
}

#[derive(Debug, Args)]
pub struct MarketRequestArgs {
    /// A workload of this node to cover, by name or id (repeat or
    /// comma-separate); the request and its contract name it by id.
    #[arg(long = "workload", value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// A thing to cover (repeat or comma-separate).
    #[arg(long = "thing", value_delimiter = ',')]
    pub things: Vec<String>,
    /// CPU to ask for when no workload is covered: cores (1.5) or
    /// millicores (500m).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory to ask for when no workload is covered (512MiB, 1GiB).
    #[arg(long)]
    pub memory: Option<String>,
    /// Paid at most per unit-hour, in millicredits (default: the rules').
    #[arg(long)]
    pub max_price: Option<u64>,
    /// Contract length: a number and a unit (s, m, h, d), default 1h.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// The provider's site (default: this node's).
    #[arg(long)]
    pub site: Option<String>,
    /// The tenant the contract grants use of the provider (default
    /// `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Use the unit at once instead of a standby for handover.
    #[arg(long)]
    pub active: bool,
    /// Minimum measured uptime of the provider, in per mille (990 = 99 %).
    #[arg(long)]
    pub min_uptime: Option<u16>,
    /// Only a provider within this round-trip time of a site, by the RTTs
    /// its offer measured: `SITE:MS` (edge:20; at most 60000 ms).
    #[arg(long, value_name = "SITE:MS")]
    pub near: Option<String>,
    /// Only a provider on renewable power.
    #[arg(long)]
    pub renewable: bool,
    /// Covered workloads running at the provider within this many seconds
    /// of this node's death (default 3).
    #[arg(long)]
    pub handover_within: Option<u32>,
    /// Time on the book, default 10m.
    #[arg(long, value_name = "DURATION")]
    pub lifetime: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Four orgs on loopback: a customer with a service and an MQTT sensor
    /// contracts a standby; it is killed, the provider takes both over,
    /// and gives them back when it returns (about 40 s).
    Market,
}

#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// The contracts this node is a party or the arbitrator to.
    Ls,
    /// One contract and where its settlement stands; `--json` prints the
    /// signed form `locus verify contract` checks, `-o FILE` writes it
    /// (the whole settlement once it is settled).
    Show {
        /// The contract id or its first hex digits.
        id: String,
        /// Write the signed contract, or its settlement (JSON), here.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Provider: close the contract now and send the customer the usage
    /// statement (it is otherwise sent when the contract ends or the
    /// customer's credits run out).
    Settle {
        /// The contract id or its first hex digits.
        id: String,
    },
    /// Customer: countersign the usage statement awaiting an answer (with
    /// `countersign = "manual"` in the customer rules); pays what is due.
    Sign {
        /// The contract id or its first hex digits.
        id: String,
    },
    /// Customer: dispute the usage statement awaiting an answer; the
    /// contract's arbitrator rules from the evidence.
    Dispute {
        /// The contract id or its first hex digits.
        id: String,
        /// Why (given to the arbitrator).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Narrow a token offline (no node is called): add a block of checks
    /// it cannot shed. Prints the narrowed token.
    Attenuate(TokenAttenuateArgs),
    /// Show what a token claims: issuer, user, org, tenant, role, expiry
    /// and each block's checks. Signatures are not verified.
    Inspect(TokenInput),
    /// Mint a token on the node for a user (at most your own role).
    Create(TokenCreateArgs),
    /// Revoke a token, every token of a user, or a node's certificate;
    /// every node refuses it once the revocation spreads.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The user the token speaks for.
    #[arg(long)]
    pub user: String,
    /// org_admin, tenant_admin, operator or viewer.
    #[arg(long, value_parser = ["org_admin", "tenant_admin", "operator", "viewer"])]
    pub role: String,
    /// A tenant of your org (default: your token's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Lifetime: a number and a unit (s, m, h, d), default 24h, at most 30d.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "what")]
pub struct TokenRevokeArgs {
    /// The token to revoke (and every token narrowed from it).
    #[arg(long, group = "what", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Every token of this user (of `--tenant`, default yours).
    #[arg(long, group = "what")]
    pub user: Option<String>,
    /// A node (id, prefix or name): its certificate.
    #[arg(long, group = "what")]
    pub node: Option<String>,
    /// The user's tenant.
    #[arg(long, requires = "user")]
    pub tenant: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// The orgs admitted to the cluster, from the node's org log.
    Ls,
    /// Make a join token: `locus agent --join <token>` on a new machine
    /// enrolls it in this org. The token is a secret (it carries the
    /// cluster key).
    JoinToken(JoinTokenArgs),
    /// Admit another org (its public key, from `locus org ls --json` on
    /// one of its nodes): its nodes are trusted by this org's nodes.
    Admit {
        /// The org's ed25519 public key, 64 hex digits.
        #[arg(long)]
        key: String,
        /// A name for people, unique among the admitted orgs.
        #[arg(long)]
        name: String,
    },
    /// Let a tenant of an admitted org use this org's nodes (one, or all).
    Grant {
        /// The tenant's org id.
        #[arg(long)]
        org: String,
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// One node of this org (default: every node).
        #[arg(long)]
        node: Option<String>,
        /// Lifetime: a number and a unit (s, m, h, d); default: until withdrawn.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// The tenants of other orgs granted use of the node.
    Grants,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant of the org, or change its quota and grant (org
    /// admins, on a node holding the org key). A quota left out is no
    /// limit; the grant left out allows wasm, container and vm.
    Set(TenantSetArgs),
    /// The tenants you reach, with what each uses of its quota.
    Ls,
    /// Remove a tenant's record (its workloads and things stay).
    Rm {
        /// The tenant's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct TenantSetArgs {
    /// The tenant's name (1-63 letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// CPU of all its workloads: cores (`2`, `1.5`) or millicores (`500m`).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory of all its workloads: `512MiB`, `4GiB`, bytes.
    #[arg(long)]
    pub memory: Option<String>,
    /// Storage: `100GiB`, bytes.
    #[arg(long)]
    pub storage: Option<String>,
    /// How many things it may register.
    #[arg(long)]
    pub things: Option<u64>,
    /// How many workloads it may run.
    #[arg(long)]
    pub workloads: Option<u64>,
    /// Workload kinds it may run (default wasm, container, vm; `process`
    /// runs native code with the agent's rights).
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Host ports its workloads may publish: `8080` or `8000-8100`.
    #[arg(long = "host-port", value_name = "PORTS")]
    pub host_ports: Vec<String>,
    /// Host directories its workloads may mount.
    #[arg(long = "host-path", value_name = "DIR")]
    pub host_paths: Vec<String>,
    /// Host devices (inventory ids) its workloads may attach.
    #[arg(long = "device", value_name = "ID")]
    pub devices: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user to a tenant and print its first token (shown once).
    Add {
        /// The user's name (1-63 letters, digits, `.`, `_`, `-`, `@`).
        name: String,
        /// `tenant_admin`, `operator` or `viewer` (at most your own role).
        #[arg(long, default_value = "operator")]
        role: String,
        /// The tenant (default: yours; org admins name any of the org).
        #[arg(long)]
        tenant: Option<String>,
        /// The token's lifetime: a number and a unit (s, m, h, d), at most 30d.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// The users you reach.
    Ls {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a user and revoke every token of it.
    Rm {
        /// The user's name.
        name: String,
        /// Its tenant.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only the last this long: a number and a unit (s, m, h, d).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// How many machines may join with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// Lifetime: a number and a unit (s, m, h, d), at most 7d.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub ttl: String,
}

/// Where the token comes from: exactly one of `--token` or
/// `--token-file`; `-` for either reads stdin.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TokenInput {
    /// The token itself (`-`: read it from stdin). On a shared machine
    /// prefer `--token-file` or stdin: arguments are visible to others.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A file holding the token (`-`: stdin).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TokenAttenuateArgs {
    #[command(flatten)]
    pub input: TokenInput,
    /// Reads only.
    #[arg(long)]
    pub read_only: bool,
    /// Records of this tenant of the token's org only (and cluster-wide
    /// reads).
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
    /// Requests to this node only (its full id).
    #[arg(long, value_name = "NODE_ID")]
    pub node: Option<String>,
    /// This operation only (a dotted name: workload.list, thing.command, …).
    #[arg(long, value_name = "NAME")]
    pub operation: Option<String>,
    /// Expire this long from now: a number and a unit (s, m, h, d),
    /// e.g. 10m, 1h, 1h30m.
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
    pub expires_in: Option<String>,
    /// Expire at this time (unix seconds, excluded).
    #[arg(long, value_name = "UNIX_SECS")]
    pub expires_at: Option<u64>,
}

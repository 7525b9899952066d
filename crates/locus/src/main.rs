//! `locus`: the one binary. `locus agent` runs a node; every other
//! subcommand is a client of a node's API.

mod agent;
mod artifact_cli;
mod bench;
mod bench_access;
mod bench_artifacts;
mod bench_fabric;
mod bench_market;
mod bench_market_live;
mod bench_seal;
mod bench_things;
mod bench_workloads;
mod cli;
mod client;
mod demo;
mod footprint;
mod login;
mod market_cli;
mod market_verify;
mod output;
mod pin;
mod tenant_cli;
mod thing_cli;
mod token_cli;
mod workload_cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use locus_core::NodeStatus;
use locus_core::inventory::Device;

use cli::{
    BenchCommand, Cli, Command, DevicesCommand, LogFormat, NodeCommand, NodesCommand, SitesCommand,
    TokenCommand,
};
use locus_core::cluster::{ClusterNode, RttEstimate, Site};

/// A failed command, with the exit code it deserves.
pub enum Failure {
    /// Bad command line or configuration: exit 2.
    Usage(anyhow::Error),
    /// The command could not do its work: exit 1.
    Failed(anyhow::Error),
}

impl Failure {
    /// The error, whatever its exit code.
    fn into_error(self) -> anyhow::Error {
        match self {
            Failure::Usage(e) | Failure::Failed(e) => e,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Failed(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every HTTP client of this process (the agent's calls to peers, the
    // CLI's) uses ring for TLS.
    locus_trust::tls::install_default_provider();
    let result = match cli.command {
        Command::Agent(args) => agent::run(*args),
        Command::Keygen(args) => keygen(&args),
        Command::Verify(args) => verify(&args, cli.json),
        Command::Token(c @ (TokenCommand::Attenuate(_) | TokenCommand::Inspect(_))) => {
            token_cli::run(cli.json, &c)
        }
        Command::Login(input) => token_cli::read_token(&input).and_then(|token| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .map_err(Failure::Failed)?
                .block_on(login::login(&cli.api, cli.pin.as_deref(), token, cli.json))
        }),
        Command::Logout => login::logout(&cli.api),
        Command::Demo(cli::DemoCommand::Market) => demo::market(cli.json).map_err(Failure::Failed),
        Command::Bench(BenchCommand::Market(args)) => {
            bench_market::market(&args).map_err(Failure::Failed)
        }
        Command::Bench(BenchCommand::Access(args)) => {
            bench_access::access(&args).map_err(Failure::Failed)
        }
        Command::Bench(BenchCommand::Fabric(args)) => {
            bench_fabric::fabric(&args).map_err(Failure::from)
        }
        Command::Bench(BenchCommand::Artifacts(args)) => {
            bench_artifacts::artifacts(&args).map_err(Failure::Failed)
        }
        Command::Bench(BenchCommand::Puts(args)) => {
            bench_artifacts::puts(&args).map_err(Failure::Failed)
        }
        Command::Bench(BenchCommand::Things(args)) => {
            bench_things::things(&args).map_err(Failure::Failed)
        }
        Command::Bench(BenchCommand::Seal(args)) => {
            bench_seal::seal(&args).map_err(Failure::Failed)
        }
        Command::Bench(BenchCommand::Workloads(args)) => {
            bench_workloads::workloads(&args).map_err(Failure::from)
        }
        Command::Bench(BenchCommand::Footprint(args)) => {
            bench::footprint(&args).map_err(Failure::from)
        }
        other => client_command(
            &cli.api,
            cli.pin.as_deref(),
            cli.credential.as_deref(),
            cli.json,
            other,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr; `LOCUS_LOG` filters them (default `info`; a filter
/// that cannot be read falls back to `info`).
pub fn init_logging(format: LogFormat) {
    let wanted = std::env::var("LOCUS_LOG").unwrap_or_else(|_| "info".to_owned());
    // The MQTT server's runtime narrates its workers and accept loop at
    // info; keep it to warnings unless asked for by name.
    let directives = if wanted.contains("ntex") {
        wanted
    } else {
        format!("{wanted},ntex_server=warn,ntex_rt=warn,ntex_io=warn,ntex_net=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn client_command(
    api: &str,
    pin: Option<&str>,
    credential: Option<&std::path::Path>,
    json: bool,
    command: Command,
) -> Result<(), Failure> {
    if let Command::Version = command {
        if json {
            println!("{}", serde_json::json!({ "version": locus_core::VERSION }));
        } else {
            println!("locus {}", locus_core::VERSION);
        }
        return Ok(());
    }
    let token = login::discover(api, credential).map_err(Failure::Usage)?;
    let client = client::Client::new(api, pin, token).map_err(Failure::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(result) = runtime.block_on(workload_command(&client, json, &command)) {
        return result;
    }
    runtime.block_on(async {
        match command {
            Command::Whoami => login::whoami(&client, json)
                .await
                .map_err(Failure::into_error),
            Command::Audit(args) => login::audit(&client, json, &args)
                .await
                .map_err(Failure::into_error),
            Command::Org(c) => login::org(&client, json, &c)
                .await
                .map_err(Failure::into_error),
            Command::Tenant(c) => tenant_cli::tenant(&client, json, &c)
                .await
                .map_err(Failure::into_error),
            Command::Market(c) => market_cli::market(&client, json, &c)
                .await
                .map_err(Failure::into_error),
            Command::Contract(c) => market_cli::contract(&client, json, &c)
                .await
                .map_err(Failure::into_error),
            Command::Account => market_cli::account(&client, json)
                .await
                .map_err(Failure::into_error),
            Command::User(c) => tenant_cli::user(&client, json, &c)
                .await
                .map_err(Failure::into_error),
            Command::Token(TokenCommand::Create(args)) => login::token_create(&client, json, &args)
                .await
                .map_err(Failure::into_error),
            Command::Token(TokenCommand::Revoke(args)) => login::token_revoke(&client, json, &args)
                .await
                .map_err(Failure::into_error),
            Command::Node(NodeCommand::Status) => {
                let node: NodeStatus = client.get("/api/v1/node").await?;
                print(json, &node, render_node)
            }
            Command::Devices(DevicesCommand::Ls) => {
                let devices: Vec<Device> = client.get("/api/v1/devices").await?;
                print(json, &devices, |d| render_devices(d))
            }
            Command::Nodes(NodesCommand::Ls(args)) => {
                let mut query = Vec::new();
                if let Some(site) = &args.site {
                    query.push(format!("site={}", url_escape(site)));
                }
                if let Some(state) = &args.state {
                    query.push(format!("liveness={state}"));
                }
                let path = if query.is_empty() {
                    "/api/v1/nodes".to_owned()
                } else {
                    format!("/api/v1/nodes?{}", query.join("&"))
                };
                let nodes: Vec<ClusterNode> = client.get(&path).await?;
                print(json, &nodes, |n| render_nodes(n))
            }
            Command::Nodes(NodesCommand::Show { node }) => {
                let n: ClusterNode = client
                    .get(&format!("/api/v1/nodes/{}", url_escape(&node)))
                    .await?;
                print(json, &n, render_cluster_node)
            }
            Command::Nodes(NodesCommand::Rtt { a, b }) => {
                let e: RttEstimate = client
                    .get(&format!(
                        "/api/v1/nodes/{}/rtt/{}",
                        url_escape(&a),
                        url_escape(&b)
                    ))
                    .await?;
                print(json, &e, |e| {
                    format!(
                        "{} → {}: {:.2} ms (coordinate error {:.2})\n",
                        e.from, e.to, e.rtt_ms, e.error
                    )
                })
            }
            Command::Sites(SitesCommand::Ls) => {
                let sites: Vec<Site> = client.get("/api/v1/sites").await?;
                print(json, &sites, |s| render_sites(s))
            }
            _ => Ok(()),
        }
    })?;
    Ok(())
}

/// The workload commands, or `None` for another command.
async fn workload_command(
    client: &client::Client,
    json: bool,
    command: &Command,
) -> Option<Result<(), Failure>> {
    Some(match command {
        Command::Run(args) => workload_cli::run(client, json, args).await,
        Command::Ps(args) => workload_cli::ps(client, json, args).await,
        Command::Inspect { workload } => workload_cli::inspect(client, json, workload).await,
        Command::Logs(args) => workload_cli::logs(client, args).await,
        Command::Start { workload } => workload_cli::verb(client, json, workload, "start").await,
        Command::Stop { workload } => workload_cli::verb(client, json, workload, "stop").await,
        Command::Kill { workload } => workload_cli::verb(client, json, workload, "kill").await,
        Command::Update(args) => workload_cli::update(client, json, args).await,
        Command::Rm(args) => workload_cli::rm(client, json, args).await,
        Command::Artifact(c) => artifact_cli::run(client, json, c).await,
        Command::Thing(c) => thing_cli::run(client, json, c).await,
        _ => return None,
    })
}

pub(crate) fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    human: fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", human(value));
    }
    Ok(())
}

fn render_node(n: &NodeStatus) -> String {
    let inv = &n.inventory;
    let site = match (&n.site.latitude, &n.site.longitude) {
        (Some(lat), Some(lon)) => format!("{} ({}, {})", n.site.name.get(), lat.get(), lon.get()),
        _ => n.site.name.get().clone(),
    };
    let cpu = format!(
        "{}, {}, {} cores",
        inv.cpu.arch,
        inv.cpu.model.as_deref().unwrap_or("unknown model"),
        inv.cpu.online_cores
    );
    let memory = format!(
        "{} available of {}",
        output::bytes(inv.memory.available_bytes),
        output::bytes(inv.memory.total_bytes)
    );
    let disk = format!(
        "{} available of {} ({})",
        output::bytes(inv.disk.available_bytes),
        output::bytes(inv.disk.total_bytes),
        inv.disk.path
    );
    let interfaces = inv
        .interfaces
        .iter()
        .map(|i| match i.addresses.first() {
            Some(a) => format!("{} ({a})", i.name),
            None => i.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let power = if inv.power.is_empty() {
        "none reported".to_owned()
    } else {
        inv.power
            .iter()
            .map(|p| match p.capacity_percent {
                Some(c) => format!("{} {} {c}%", p.name, p.kind),
                None => format!("{} {}", p.name, p.kind),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let labels = if n.labels.is_empty() {
        "-".to_owned()
    } else {
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    output::pairs(&[
        ("id", n.id.to_string()),
        ("name", n.name.clone()),
        ("version", n.version.clone()),
        ("generation", n.generation.to_string()),
        ("site", site),
        ("labels", labels),
        ("api", n.api_addr.clone()),
        ("uptime", output::duration(n.uptime_secs)),
        ("cpu", cpu),
        ("memory", memory),
        ("disk", disk),
        ("interfaces", interfaces),
        ("power", power),
        (
            "devices",
            format!("{} USB, {} PCI", inv.usb.len(), inv.pci.len()),
        ),
    ])
}

fn render_devices(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "no attachable devices on this node\n".to_owned();
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                format!("{:?}", d.bus).to_lowercase(),
                format!("{}:{}", d.vendor_id, d.product_id),
                d.name.clone().unwrap_or_default(),
                d.detail.clone(),
            ]
        })
        .collect();
    output::table(&["ID", "BUS", "VENDOR:PRODUCT", "NAME", "DETAIL"], &rows)
}

pub(crate) use locus_core::url_escape;

/// `locus verify BUNDLE --key KEY` or `locus verify contract FILE`:
/// offline, no node needed.
fn verify(args: &cli::VerifyArgs, json: bool) -> Result<(), Failure> {
    let (bundle, key) = match (&args.what, &args.bundle, &args.key) {
        (Some(cli::VerifyCommand::Contract(c)), _, _) => {
            return market_verify::contract(&c.file, c.witnesses as usize, json);
        }
        (Some(cli::VerifyCommand::Account(a)), _, _) => {
            return market_verify::account(&a.file, json);
        }
        (None, Some(bundle), Some(key)) => (bundle, key),
        _ => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "give a bundle and --key, or `contract FILE`"
            )));
        }
    };
    let shown = bundle.display().to_string();
    let text = std::fs::read_to_string(bundle)
        .with_context(|| format!("cannot read {shown}"))
        .map_err(Failure::Usage)?;
    let bundle = locus_iot::Bundle::from_json(&text)
        .map_err(|e| Failure::Failed(anyhow::anyhow!("{shown} is not a valid bundle: {e}")))?;
    let report = locus_iot::seal::verify(&bundle, key);
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    if json {
        let v = serde_json::json!({
            "clean": report.is_clean(),
            "origin": report.origin,
            "range": { "start": report.range.start, "end": report.range.end },
            "tree_size": report.tree_size,
            "checkpoints_ok": report.checkpoints_ok,
            "entries_checked": report.entries_checked,
            "problems": problems,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?
        );
    } else if report.is_clean() {
        println!(
            "{shown}: clean — {} reading(s) seq {}..{} of {} verified against {} checkpoint(s) of a {}-leaf log",
            report.entries_checked,
            report.range.start,
            report.range.end,
            report.origin,
            bundle.checkpoints.len(),
            report.tree_size.unwrap_or(0)
        );
    } else {
        println!("{shown}: {} problem(s)", problems.len());
        for p in &problems {
            println!("  {p}");
        }
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::Failed(anyhow::anyhow!(
            "the bundle does not verify ({} problem(s))",
            problems.len()
        )))
    }
}

/// `locus verify contract FILE`: the terms and both signatures, from the
/// file alone.
fn keygen(args: &cli::KeygenArgs) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = locus_fabric::ClusterKey::generate()
        .map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    if args.output.as_os_str() == "-" {
        println!("{}", key.to_hex());
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&args.output).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::Failed(anyhow::anyhow!(
                "{} already exists; it may be the key of a running cluster (use --force to replace it)",
                args.output.display()
            ))
        } else {
            Failure::Failed(anyhow::Error::new(e).context(format!("cannot write {}", args.output.display())))
        }
    })?;
    writeln!(file, "{}", key.to_hex())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "cluster key written to {}; copy it to every node and start each with --cluster-key-file {}",
        args.output.display(),
        args.output.display()
    );
    Ok(())
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    format!(
        "{} ago",
        output::duration(now_ms.saturating_sub(at_ms) / 1000)
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn render_nodes(nodes: &[ClusterNode]) -> String {
    if nodes.is_empty() {
        return "no nodes match\n".to_owned();
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let info = n.info.as_ref();
            vec![
                format!("{}{}", n.id, if n.is_self { " *" } else { "" }),
                info.map_or("?".into(), |i| i.name.clone()),
                info.map_or("?".into(), |i| i.site.name.get().clone()),
                n.liveness.as_str().to_owned(),
                ago(now, n.since_unix_ms),
                n.generation.to_string(),
                info.map_or("?".into(), |i| i.api_addr.clone()),
                n.capacity.as_ref().map_or("?".into(), |c| {
                    format!("{:.1}", c.cpu_millicores as f64 / 1000.0)
                }),
                n.capacity
                    .as_ref()
                    .map_or("?".into(), |c| output::bytes(c.memory_bytes)),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "NAME", "SITE", "STATE", "SINCE", "GEN", "API", "CPUS", "MEMORY",
        ],
        &rows,
    )
}

fn render_cluster_node(n: &ClusterNode) -> String {
    let now = now_ms();
    let info = n.info.as_ref();
    let transitions = n
        .transitions
        .iter()
        .map(|t| format!("{} {}", t.to.as_str(), ago(now, t.at_unix_ms)))
        .collect::<Vec<_>>()
        .join(", ");
    output::pairs(&[
        ("id", n.id.to_string()),
        ("name", info.map_or("?".into(), |i| i.name.clone())),
        (
            "site",
            info.map_or("?".into(), |i| i.site.name.get().clone()),
        ),
        (
            "state",
            format!(
                "{} since {}",
                n.liveness.as_str(),
                ago(now, n.since_unix_ms)
            ),
        ),
        ("transitions", transitions),
        ("generation", n.generation.to_string()),
        ("gossip", n.gossip_addr.clone()),
        ("api", info.map_or("?".into(), |i| i.api_addr.clone())),
        ("version", info.map_or("?".into(), |i| i.version.clone())),
        (
            "capacity",
            n.capacity.as_ref().map_or("?".into(), |c| {
                format!(
                    "{:.1} cpus, {} memory, {} storage",
                    c.cpu_millicores as f64 / 1000.0,
                    output::bytes(c.memory_bytes),
                    output::bytes(c.storage_bytes)
                )
            }),
        ),
        (
            "coordinate",
            n.coordinate.as_ref().map_or("?".into(), |c| {
                format!("error {:.2}, height {:.2} ms", c.error, c.height * 1000.0)
            }),
        ),
    ])
}

fn render_sites(sites: &[Site]) -> String {
    if sites.is_empty() {
        return "no sites known yet\n".to_owned();
    }
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.nodes.len().to_string(),
                s.alive.to_string(),
                match (s.latitude, s.longitude) {
                    (Some(a), Some(o)) => format!("{a}, {o}"),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    output::table(&["SITE", "NODES", "ALIVE", "LOCATION"], &rows)
}

//! `locus agent`: load the configuration, bind the API, start the node,
//! serve until SIGINT/SIGTERM, then stop in order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use locus_agent::{HostPaths, Node, Settings};
use locus_core::Config;
use locus_core::config::{NodeName, Seed, SiteName};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Failure;
use crate::cli::AgentArgs;

/// How long in-flight requests may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Read the config file (if any) and apply command-line overrides.
pub fn load_config(args: &AgentArgs) -> Result<Config, Failure> {
    let mut config = match &args.config {
        Some(path) => {
            let src = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))
                .map_err(Failure::Usage)?;
            Config::from_toml_str(&src).map_err(|e| {
                Failure::Usage(anyhow::anyhow!(
                    "invalid config file {}: {e}",
                    path.display()
                ))
            })?
        }
        None => Config::default(),
    };
    let flag = |name: &str, e: String| Failure::Usage(anyhow::anyhow!("invalid --{name}: {e}"));
    if let Some(name) = &args.name {
        config.name = Some(NodeName::try_from(name.clone()).map_err(|e| flag("name", e))?);
    }
    if let Some(site) = &args.site {
        config.site.name = SiteName::try_from(site.clone()).map_err(|e| flag("site", e))?;
    }
    for seed in &args.seeds {
        config
            .seeds
            .push(Seed::try_from(seed.clone()).map_err(|e| flag("seed", e))?);
    }
    if let Some(addr) = args.listen {
        config.listen.api = Some(addr);
    }
    if let Some(addr) = args.gossip {
        config.listen.gossip = Some(addr);
    }
    if let Some(url) = &args.mqtt_broker {
        config.things.mqtt_broker = Some(
            locus_core::config::BrokerUrl::try_from(url.clone())
                .map_err(|e| anyhow::anyhow!("--mqtt-broker: {e}"))?,
        );
    }
    if let Some(addr) = args.mqtt {
        config.listen.mqtt = Some(addr);
    }
    if let Some(addr) = args.lwm2m {
        config.listen.lwm2m = Some(addr);
    }
    if let Some(addr) = args.lwm2m_bootstrap {
        config.listen.lwm2m_bootstrap = Some(addr);
    }
    if let Some(addr) = args.lwm2m_dtls {
        config.listen.lwm2m_dtls = Some(addr);
    }
    if let Some(addr) = args.listen_tls {
        config.listen.api_tls = Some(addr);
    }
    if let Some(addr) = args.lwm2m_bootstrap_dtls {
        config.listen.lwm2m_bootstrap_dtls = Some(addr);
    }
    if let Some(path) = &args.cluster_key_file {
        config.cluster_key_file = Some(path.clone());
    }
    Ok(config)
}

pub fn run(args: AgentArgs) -> Result<(), Failure> {
    let config = load_config(&args)?;
    crate::init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("locus-agent")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Failed)?;
    runtime
        .block_on(serve(config, &args.data_dir, args.join.clone()))
        .map_err(Failure::Failed)
}

async fn serve(config: Config, data_dir: &Path, join: Option<String>) -> anyhow::Result<()> {
    let addr = config.api_addr();
    let tls_addr = config.listen.api_tls;
    let listener = bind(addr).await?;
    let api_addr = listener.local_addr().unwrap_or(addr);
    let node = Node::start(Settings {
        data_dir: data_dir.to_owned(),
        config,
        host_paths: HostPaths::default(),
        api_addr,
        join,
    })
    .await?;
    let node = Arc::new(node);
    tracing::info!(node = %node.id(), api = %format!("http://{api_addr}"), "serving the API");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(
            signal,
            "stopping: no new connections, finishing requests in flight"
        );
        let _ = stop_tx.send(true);
    });

    let app = locus_api::router(node.clone());
    if let Some(tls) = tls_addr {
        serve_tls(&node, tls, app.clone(), stop_rx.clone()).await?;
    }
    tokio::spawn(release_startup_pages());
    let server = axum::serve(listener, app).with_graceful_shutdown(stop_asked(stop_rx.clone()));
    let deadline = async move {
        stop_asked(stop_rx).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.context("the API server failed")?,
        () = deadline => tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight after the grace period; closing anyway"),
    }
    node.shutdown()
        .await
        .context("cannot close the store cleanly")?;
    Ok(())
}

/// Resolves once the agent is asked to stop.
async fn stop_asked(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serve `app` over TLS on `addr` too, with a certificate of the node key,
/// until the agent is asked to stop.
async fn serve_tls(
    node: &Node,
    addr: SocketAddr,
    app: axum::Router,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = bind(addr).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    let mut names = vec!["localhost".to_owned()];
    if !bound.ip().is_unspecified() {
        names.push(bound.ip().to_string());
    }
    let config = node
        .access()
        .tls_server_config(&names)
        .context("cannot make the TLS certificate of the node key")?;
    let listener = locus_api::tls::TlsListener::new(listener, config)
        .with_context(|| format!("cannot serve TLS on {addr}"))?;
    tracing::info!(
        api = %format!("https://{bound}"),
        pin = %format!("node:{}", locus_core::hex(&node.access().node_key())),
        "serving the API over TLS"
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop_asked(stop))
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the TLS API server failed");
        }
    });
    Ok(())
}

/// When, after the API starts serving, the agent hands back what only
/// start-up used: at once, and again 30 s later, when every periodic loop
/// has made its first passes (the fabric's slowest, every 5 s).
const RELEASE_STARTUP_PAGES_AFTER: [Duration; 2] =
    [Duration::from_secs(1), Duration::from_secs(29)];

/// Hand back free heap and this process's mappings of start-up code
/// (`crate::footprint`); idle work maps again the few pages it uses.
async fn release_startup_pages() {
    for wait in RELEASE_STARTUP_PAGES_AFTER {
        tokio::time::sleep(wait).await;
        crate::footprint::trim_heap();
        match crate::footprint::release_startup_pages() {
            Ok(r) => tracing::debug!(
                regions = r.regions,
                bytes = r.bytes,
                "released the mappings of start-up pages"
            ),
            Err(e) => tracing::debug!(error = %e, "cannot read this process's mappings"),
        }
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "the API address {addr} is already in use (another locus agent?); \
             choose another with --listen or `[listen] api` in the config"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            anyhow::anyhow!("the API address {addr} is not an address of this machine")
        }
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("no permission to listen on {addr} (ports below 1024 need privileges)")
        }
        _ => anyhow::Error::new(e).context(format!("cannot listen on {addr}")),
    })
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

//! # locus-things
//!
//! Things (IoT devices): the registry of the things this node manages and
//! the directory of every thing in the cluster, and the doors devices come
//! through — an embedded MQTT broker (or a client of an external one), the
//! LwM2M bootstrap server and LwM2M server over CoAP and over CoAP with
//! DTLS, and commands (MQTT, LwM2M, HTTP/EdgeX) that reach a thing on its
//! own protocol.
//!
//! Owns: the `things` table of the store, the `thing/<name>` and `iot`
//! records on the fabric, MQTT sessions and LwM2M registrations, the
//! handover of a thing between managers.
//! Must never: seal or store readings itself (it hands them to the
//! [`Readings`] handle it is given and acknowledges a device only after
//! that call returns), keep a password in clear, or answer for a thing
//! another node manages (it says who does, and the API forwards).

pub mod commands;
pub mod lwm2m;
pub mod metrics;
pub mod mqtt;
pub mod registry;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;

use locus_core::config::BrokerUrl;
use locus_readings::Readings;

pub use commands::{CommandError, CommandResult, Commands};
pub use lwm2m::{Lwm2m, Lwm2mDirectory, Lwm2mResource, Lwm2mThing};
pub use metrics::ThingMetrics;
pub use mqtt::Broker;
pub use registry::{
    Endpoints, Located, NoThingStandbys, ThingEvent, ThingStandbys, Things, ThingsError,
    WorkloadHomes,
};

/// Which doors to open, and where.
#[derive(Debug, Clone)]
pub struct DoorsSetup {
    /// Client id this node uses towards an external broker.
    pub client_id: String,
    /// An external MQTT broker to subscribe to instead of the embedded one.
    pub upstream: Option<BrokerUrl>,
    /// Where the embedded MQTT broker listens; `None`: no broker.
    pub mqtt: Option<SocketAddr>,
    /// Where the LwM2M server and bootstrap server listen (CoAP and DTLS);
    /// `None`: no LwM2M.
    pub lwm2m: Option<lwm2m::Settings>,
    /// The address devices reach this node at when a door binds a wildcard.
    pub advertise: std::net::IpAddr,
}

/// Why a door could not open.
#[derive(Debug, thiserror::Error)]
pub enum DoorsError {
    #[error("cannot start the MQTT client: {0}")]
    Upstream(std::io::Error),
    #[error("cannot start the MQTT broker on {addr}: {source}")]
    Broker {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the LwM2M servers: {0}")]
    Lwm2m(#[from] lwm2m::Lwm2mError),
}

/// The device doors of a node, open: what devices reach, and the commands
/// that reach devices.
pub struct Doors {
    things: Things,
    broker: Option<Arc<Broker>>,
    commands: Commands,
    endpoints: Endpoints,
}

impl Doors {
    /// Open the doors `setup` asks for, publish where they listen, and keep
    /// LwM2M clients of things that move told of their new server.
    pub async fn open(
        setup: DoorsSetup,
        things: Things,
        readings: Readings,
        metrics: Arc<ThingMetrics>,
    ) -> Result<Doors, DoorsError> {
        let upstream = match &setup.upstream {
            Some(url) => Some(Arc::new(
                mqtt::Upstream::start(
                    url,
                    setup.client_id.clone(),
                    things.clone(),
                    readings.clone(),
                    metrics.clone(),
                )
                .map_err(DoorsError::Upstream)?,
            )),
            None => None,
        };
        let broker = match setup.mqtt {
            Some(addr) if upstream.is_none() => Some(Arc::new(
                Broker::start(addr, things.clone(), readings.clone(), metrics.clone())
                    .await
                    .map_err(|source| DoorsError::Broker { addr, source })?,
            )),
            _ => None,
        };
        let lwm2m = match setup.lwm2m {
            Some(settings) => {
                let lwm2m = Lwm2m::start(
                    settings,
                    Arc::new(things.clone()),
                    readings.clone(),
                    metrics.clone(),
                )
                .await?;
                tokio::spawn(rebootstrap_moved_things(things.subscribe(), lwm2m.clone()));
                Some(lwm2m)
            }
            None => None,
        };
        // What devices are told to reach: a wildcard bind is reached at the
        // address the node advertises.
        let reachable = |a: SocketAddr| {
            if a.ip().is_unspecified() {
                SocketAddr::new(setup.advertise, a.port()).to_string()
            } else {
                a.to_string()
            }
        };
        let endpoints = Endpoints {
            mqtt: match &upstream {
                Some(u) => Some(u.addr().to_owned()),
                None => broker.as_ref().map(|b| reachable(b.local_addr())),
            },
            lwm2m: lwm2m.as_ref().map(|l| reachable(l.server_addr())),
            bootstrap: lwm2m.as_ref().map(|l| reachable(l.bootstrap_addr())),
            lwm2m_dtls: lwm2m.as_ref().map(|l| reachable(l.server_dtls_addr())),
            bootstrap_dtls: lwm2m.as_ref().map(|l| reachable(l.bootstrap_dtls_addr())),
        };
        things.publish_endpoints(&endpoints).await;
        let commands = Commands {
            readings,
            broker: broker.clone(),
            upstream,
            lwm2m,
            http: reqwest::Client::new(),
        };
        Ok(Doors {
            things,
            broker,
            commands,
            endpoints,
        })
    }

    /// Where the doors listen, as devices reach them.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The embedded MQTT broker, when it runs.
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_deref()
    }

    /// Run a command on a thing this node manages: `value` absent reads
    /// (or executes an executable resource), present writes.
    pub async fn command(
        &self,
        thing: &str,
        resource: &str,
        value: Option<&str>,
    ) -> Result<CommandResult, CommandError> {
        let Some(t) = self.things.get_local(thing).await else {
            return Err(CommandError::Unavailable(format!(
                "thing {thing:?} is not managed by this node"
            )));
        };
        let plan = commands::plan(&t.spec, resource, value)?;
        self.commands.run(&t.spec, plan).await
    }
}

/// A thing that moved to another manager is asked to bootstrap again
/// (Execute /1/0/9 while it is still registered here), so that it learns
/// its new LwM2M server.
async fn rebootstrap_moved_things(
    mut events: tokio::sync::broadcast::Receiver<ThingEvent>,
    lwm2m: Lwm2m,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(ThingEvent::Moved { name, to }) => match lwm2m.rebootstrap(&name).await {
                Ok(()) => {
                    tracing::info!(thing = %name, %to, "thing re-bootstrapped towards its new manager")
                }
                Err(lwm2m::Lwm2mError::NotRegistered(_)) => {}
                Err(e) => {
                    tracing::warn!(thing = %name, error = %e, "cannot re-bootstrap the thing")
                }
            },
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
}

/// Milliseconds since the Unix epoch, as records and readings carry them.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

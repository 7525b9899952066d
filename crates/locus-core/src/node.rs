//! What a node says about itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::NodeId;
use crate::config::{EnergyProfile, SiteConfig};
use crate::inventory::Inventory;

/// Identity, configuration, inventory and uptime of one node, as served at
/// `/api/v1/node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    /// Stable node id, derived from the public key.
    pub id: NodeId,
    /// ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Human name of the node.
    pub name: String,
    /// locus version the node runs.
    pub version: String,
    /// Start counter of this data dir: grows by one at every start.
    pub generation: u64,
    /// Where the node stands.
    pub site: SiteConfig,
    /// Labels used by placement.
    pub labels: BTreeMap<String, String>,
    /// Address of the HTTP API.
    pub api_addr: String,
    /// Address of the gossip endpoint.
    pub gossip_addr: String,
    /// Address of the MQTT broker for things, when it runs.
    pub mqtt_addr: Option<String>,
    /// Address of the LwM2M server, when it runs.
    pub lwm2m_addr: Option<String>,
    /// Address of the LwM2M bootstrap server, when it runs.
    pub lwm2m_bootstrap_addr: Option<String>,
    /// Address of the LwM2M server over DTLS (coaps), when it runs.
    pub lwm2m_dtls_addr: Option<String>,
    /// Address of the LwM2M bootstrap server over DTLS (coaps), when it runs.
    pub lwm2m_bootstrap_dtls_addr: Option<String>,
    /// Gossip addresses of the seeds the node joins through.
    pub seeds: Vec<String>,
    /// What powers the node.
    pub energy: EnergyProfile,
    /// Unix time (ms) when the agent started.
    pub started_at_unix_ms: u64,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Host resources (the R' model: cpu, memory, storage, interfaces,
    /// devices, power).
    pub inventory: Inventory,
}

/// Health of a node, as served at `/healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the node serves its API and its store answers.
    pub status: HealthStatus,
    /// Node id.
    pub node: NodeId,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
}

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything answers.
    Ok,
    /// The node runs but a part of it does not answer.
    Degraded,
}

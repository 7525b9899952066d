//! Handlers of the node endpoints. Each is thin: read from the node, shape
//! the answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use locus_agent::Node;
use locus_core::cluster::{self, ClusterNode, Liveness, LookupError, RttEstimate, Site};
use locus_core::inventory::Device;
use locus_core::{Health, HealthStatus, NodeStatus};

use crate::error::{ApiError, ErrorBody};

/// Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Health of the node: `ok` when its API and store answer.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "observability",
    responses(
        (status = 200, description = "The node is healthy", body = Health),
        (status = 503, description = "The node runs but its store does not answer", body = Health),
    )
)]
pub(crate) async fn healthz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let health = node.health().await;
    let status = match health.status {
        HealthStatus::Ok => StatusCode::OK,
        HealthStatus::Degraded => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(health))
}

/// Metrics in the Prometheus text format: build info, process CPU and
/// memory, HTTP traffic, inventory refreshes.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observability",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let m = node.metrics();
    if let Ok(snapshot) = node.fabric().snapshot().await {
        m.observe_fabric(&snapshot, node.fabric().counters());
    }
    m.uptime_seconds.set(node.uptime().as_secs() as i64);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], m.render())
}

/// The node: identity, configuration, host inventory, uptime and version.
#[utoipa::path(
    get,
    path = "/api/v1/node",
    tag = "node",
    responses(
        (status = 200, description = "The node", body = NodeStatus),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub(crate) async fn node(State(node): State<Arc<Node>>) -> Json<NodeStatus> {
    Json(node.status())
}

/// Host devices that can be attached to a workload: USB devices, and PCI
/// display controllers and accelerators.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "node",
    responses(
        (status = 200, description = "Attachable host devices", body = Vec<Device>),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub(crate) async fn devices(State(node): State<Arc<Node>>) -> Json<Vec<Device>> {
    Json(node.inventory().devices())
}

/// Filters of the node list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NodesQuery {
    /// Only nodes of this site.
    site: Option<String>,
    /// Only nodes in this liveness state.
    liveness: Option<Liveness>,
}

pub(crate) async fn known_nodes(node: &Node) -> Result<Vec<ClusterNode>, ApiError> {
    node.fabric()
        .snapshot()
        .await
        .map(|s| s.nodes)
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "fabric_unavailable",
                e.to_string(),
            )
        })
}

pub(crate) fn lookup<'a>(
    nodes: &'a [ClusterNode],
    query: &str,
) -> Result<&'a ClusterNode, ApiError> {
    cluster::find(nodes, query).map_err(|e| match e {
        LookupError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "node_not_found", e.to_string())
                .with_details(serde_json::json!({ "node": query }))
        }
        LookupError::Ambiguous { ref candidates, .. } => {
            let candidates = candidates.clone();
            ApiError::new(StatusCode::CONFLICT, "node_ambiguous", e.to_string())
                .with_details(serde_json::json!({ "node": query, "candidates": candidates }))
        }
    })
}

/// Every node this node knows of, with its liveness (and the time of each
/// transition), what it published, and its network coordinate.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    tag = "cluster",
    params(NodesQuery),
    responses(
        (status = 200, description = "Known nodes", body = Vec<ClusterNode>),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 503, description = "The fabric is not running", body = ErrorBody),
    )
)]
pub(crate) async fn nodes(
    State(node): State<Arc<Node>>,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> Result<Json<Vec<ClusterNode>>, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let mut nodes = known_nodes(&node).await?;
    nodes.retain(|n| {
        q.liveness.is_none_or(|l| n.liveness == l)
            && q.site
                .as_ref()
                .is_none_or(|s| n.info.as_ref().is_some_and(|i| i.site.name.get() == s))
    });
    Ok(Json(nodes))
}

/// One node, by id, unique id prefix or name.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node}",
    tag = "cluster",
    params(("node" = String, Path, description = "Node id, unique id prefix (4+ hex digits) or name")),
    responses(
        (status = 200, description = "The node", body = ClusterNode),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "Several nodes match", body = ErrorBody),
        (status = 503, description = "The fabric is not running", body = ErrorBody),
    )
)]
pub(crate) async fn node_by_id(
    State(node): State<Arc<Node>>,
    Path(query): Path<String>,
) -> Result<Json<ClusterNode>, ApiError> {
    let nodes = known_nodes(&node).await?;
    lookup(&nodes, &query).cloned().map(Json)
}

/// Estimated round-trip time between two nodes, from their network
/// coordinates (Vivaldi).
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node}/rtt/{other}",
    tag = "cluster",
    params(
        ("node" = String, Path, description = "Node id, unique id prefix or name"),
        ("other" = String, Path, description = "Node id, unique id prefix or name"),
    ),
    responses(
        (status = 200, description = "The estimate", body = RttEstimate),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "Ambiguous node, or no coordinate yet", body = ErrorBody),
        (status = 503, description = "The fabric is not running", body = ErrorBody),
    )
)]
pub(crate) async fn rtt(
    State(node): State<Arc<Node>>,
    Path((a, b)): Path<(String, String)>,
) -> Result<Json<RttEstimate>, ApiError> {
    let nodes = known_nodes(&node).await?;
    let (na, nb) = (lookup(&nodes, &a)?, lookup(&nodes, &b)?);
    cluster::estimate_rtt(na, nb).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_coordinate",
            "a coordinate is not known yet for one of the nodes; retry once they have exchanged gossip",
        )
    })
}

/// Sites and their nodes.
#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "cluster",
    responses(
        (status = 200, description = "Sites", body = Vec<Site>),
        (status = 503, description = "The fabric is not running", body = ErrorBody),
    )
)]
pub(crate) async fn sites(State(node): State<Arc<Node>>) -> Result<Json<Vec<Site>>, ApiError> {
    let nodes = known_nodes(&node).await?;
    Ok(Json(cluster::sites(&nodes)))
}

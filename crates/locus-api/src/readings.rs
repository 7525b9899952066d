//! Handlers of readings: EdgeX-compatible event ingestion
//! (`POST /api/v3/event/…`, so an EdgeX device service can point at a
//! node), queries, the newest signed checkpoint and exported bundles.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use locus_agent::Node;
use locus_readings::edgex::{EDGEX_DEFAULT_LIMIT, EDGEX_MAX_LIMIT, MultiReadingsResponse};
use locus_readings::export::{ImportOriginView, ImportResult, MAX_IMPORT};
use locus_readings::{
    CheckpointView, ConsistencyProof, InclusionProof, MAX_BUNDLE, MAX_QUERY, ReadingView,
    ReadingsError,
};
use locus_things::Located;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, query_error};

fn api_error(e: ReadingsError) -> ApiError {
    match e {
        ReadingsError::Invalid(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_sealed", e.to_string())
        }
        ReadingsError::Missing { seq } => {
            ApiError::new(StatusCode::NOT_FOUND, "reading_missing", e.to_string())
                .with_details(serde_json::json!({ "seq": seq }))
        }
        ReadingsError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        ReadingsError::Pruned { first, below } => {
            ApiError::new(StatusCode::GONE, "pruned", e.to_string()).with_details(
                serde_json::json!({ "first_pruned_seq": first, "pruned_below": below }),
            )
        }
        ReadingsError::Store(_) | ReadingsError::Sign(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
        }
        // Nothing of the batch is stored: the sender may retry.
        ReadingsError::Commit(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_committed",
            e.to_string(),
        ),
    }
}

/// The EdgeX v3 `AddEventRequest` (fields locus reads; others are ignored).
#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
pub(crate) struct EdgexAddEvent {
    #[schema(pattern = "^v3$")]
    apiVersion: String,
    event: EdgexEvent,
}

#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
pub(crate) struct EdgexEvent {
    id: Option<String>,
    /// Must be the device of the path.
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$", max_length = 64)]
    deviceName: String,
    profileName: Option<String>,
    sourceName: Option<String>,
    /// Nanoseconds since the epoch.
    origin: i64,
    #[schema(min_items = 1, max_items = 4096)]
    readings: Vec<EdgexReading>,
}

#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
pub(crate) struct EdgexReading {
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$", max_length = 64)]
    resourceName: String,
    valueType: EdgexValueType,
    /// The value as text (all types but Binary).
    value: Option<String>,
    /// Base64 (Binary only).
    binaryValue: Option<String>,
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$", max_length = 64)]
    units: Option<String>,
    /// Nanoseconds; the event's when absent.
    origin: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) enum EdgexValueType {
    Bool,
    String,
    Binary,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Float32,
    Float64,
}

/// Add an event from an EdgeX device service: its readings (the thing is
/// the device) are sealed and committed to the store before the answer.
/// An http thing managed by another live node is redirected there (307,
/// the same method and body), so its readings are sealed by its manager:
/// after a failover or a market handover, a device service pointed at any
/// node reaches the new manager.
#[utoipa::path(
    post,
    path = "/api/v3/event/{service}/{profile}/{device}/{source}",
    operation_id = "add_edgex_event",
    tag = "readings",
    params(
        ("service" = String, Path, description = "Device service name"),
        ("profile" = String, Path, description = "Device profile name"),
        ("device" = String, Path, description = "Device name (the thing)"),
        ("source" = String, Path, description = "Source (command or resource) name"),
    ),
    request_body(content = EdgexAddEvent, description = "EdgeX v3 AddEventRequest"),
    responses(
        (status = 201, description = "Stored: `{apiVersion, statusCode, id}`", body = Object),
        (status = 307, description = "An http thing another live node manages: `Location` is the same path there"),
        (status = 400, description = "Not an EdgeX v3 event; `message` names the field", body = ErrorBody),
        (status = 409, description = "Fields that disagree: the path's device and the event's, a value and its valueType", body = ErrorBody),
        (status = 503, description = "The store did not commit the readings; nothing is stored, retry", body = ErrorBody),
    )
)]
pub(crate) async fn add_event(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path((_service, _profile, device, _source)): Path<(String, String, String, String)>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    if device.starts_with(locus_trust::audit::RESERVED_PREFIX) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "reserved_name",
            format!(
                "device {device:?}: names under {:?} are the node's own",
                locus_trust::audit::RESERVED_PREFIX
            ),
        ));
    }
    let located = node.things().locate(&device).await.ok();
    // A registered thing's readings are its tenant's to send.
    if let Some(Located::Local(t) | Located::Remote { thing: t, .. }) = &located
        && !caller.reaches(node.access().org(), t.spec.tenant.get())
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("thing {device} belongs to another tenant"),
        ));
    }
    if let Some(Located::Remote {
        thing,
        owner,
        api_addr,
    }) = &located
        && let Some(location) = manager_url(&node, thing, *owner, api_addr, &uri).await
    {
        return Ok((
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, location)],
        )
            .into_response());
    }
    // JSON Schema counts 5.0 as an integer: so does this endpoint.
    let body = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut v) => {
            if locus_core::workload::integral_floats_to_integers(&mut v) {
                serde_json::to_vec(&v).map(Bytes::from).unwrap_or(body)
            } else {
                body
            }
        }
        Err(_) => body,
    };
    let event = locus_iot::edgex::parse_event(&body, &device).map_err(|e| {
        // Shape errors are the body's; a field that contradicts another
        // (or the path) is a conflict.
        let conflict = e.path == "event.deviceName"
            || (e.path.starts_with("event.readings[") && !e.reason.starts_with("invalid type"));
        let status = if conflict {
            StatusCode::CONFLICT
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, "invalid_event", e.to_string())
            .with_details(serde_json::json!({ "path": e.path }))
    })?;
    let readings = node.readings();
    let resources: Vec<(String, String)> = event
        .readings
        .iter()
        .zip(&event.value_types)
        .map(|(r, t)| (r.resource().to_owned(), t.clone()))
        .collect();
    readings.ingest(event.readings).await.map_err(api_error)?;
    // The readings are stored; what EdgeX calls their profile and value
    // type only shapes EdgeX queries, so a failure here is logged.
    if let Err(e) = readings
        .record_edgex(&event.device, &event.profile, resources)
        .await
    {
        tracing::warn!(error = %e, device = %event.device, "cannot record the EdgeX profile of an event");
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "apiVersion": "v3", "statusCode": 201, "id": event.id })),
    )
        .into_response())
}

/// Where an http thing's events go instead of here: the same path and
/// query at its manager, while the fabric sees that node alive. A thing
/// of another protocol, or one whose manager is not known alive, is
/// taken here (sealed by this node) rather than sent to a dead address.
async fn manager_url(
    node: &Node,
    thing: &locus_core::thing::Thing,
    owner: locus_core::NodeId,
    api_addr: &str,
    uri: &axum::http::Uri,
) -> Option<HeaderValue> {
    if thing.spec.protocol != locus_core::thing::ThingProtocol::Http || api_addr.is_empty() {
        return None;
    }
    let alive = node
        .fabric()
        .nodes()
        .await
        .iter()
        .any(|n| n.id == owner && matches!(n.liveness, locus_core::cluster::Liveness::Alive));
    if !alive {
        return None;
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    HeaderValue::from_str(&format!("http://{api_addr}{path}")).ok()
}

/// A reading query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadingsQuery {
    /// Only this thing.
    thing: Option<String>,
    /// From this unix time (ms, inclusive).
    #[serde(default)]
    from_ms: i64,
    /// Up to this unix time (ms, exclusive).
    #[serde(default = "far_future")]
    to_ms: i64,
    /// Most readings returned (1–10000, default 1000).
    #[param(minimum = 1, maximum = 10000)]
    #[serde(default = "default_limit")]
    limit: u32,
}

fn far_future() -> i64 {
    i64::MAX
}

fn default_limit() -> u32 {
    1000
}

/// The header that tells a query's reader that retention deleted the
/// bodies of the seqs below it (absent when it deleted none).
pub(crate) const PRUNED_BELOW_HEADER: &str = "locus-pruned-below";

/// `body`, with [`PRUNED_BELOW_HEADER`] when retention deleted anything.
fn with_pruned(node: &Node, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    let below = node.readings().pruned_below();
    if below > 0 {
        r.headers_mut()
            .insert(PRUNED_BELOW_HEADER, HeaderValue::from(below));
    }
    r
}

/// Stored readings, by thing and time range, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/readings",
    operation_id = "list_readings",
    tag = "readings",
    params(ReadingsQuery),
    responses(
        (status = 200, description = "Readings with their seq in the seal log", body = Vec<ReadingView>,
            headers(("locus-pruned-below" = u64, description = "Retention deleted the bodies of every seq below this one; they are not in any answer"))),
        (status = 400, description = "Bad query", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ReadingsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    if q.limit == 0 || q.limit > MAX_QUERY {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit {} is out of range 1..={MAX_QUERY}", q.limit),
        ));
    }
    let mut found = node
        .readings()
        .query(q.thing, q.from_ms, q.to_ms, q.limit)
        .await
        .map_err(api_error)?;
    // A tenant sees the readings of its own things; an org admin all,
    // the audit trail and unregistered devices included.
    let org = node.access().org();
    let p = &caller.principal;
    if !(p.role == locus_access::Role::OrgAdmin && p.tenant.org == org) {
        let mine: std::collections::BTreeSet<String> = node
            .things()
            .directory()
            .await
            .into_iter()
            .filter(|(t, _)| caller.reaches(org, t.spec.tenant.get()))
            .map(|(t, _)| t.spec.name.get().clone())
            .collect();
        found.retain(|r| mine.contains(r.reading.thing()));
    }
    Ok(with_pruned(&node, Json(found)))
}

/// The newest signed checkpoint of the seal log, and the node's verifier
/// key.
#[utoipa::path(
    get,
    path = "/api/v1/readings/checkpoint",
    operation_id = "latest_checkpoint",
    tag = "readings",
    responses((status = 200, description = "The newest checkpoint", body = CheckpointView))
)]
pub(crate) async fn checkpoint(
    State(node): State<Arc<Node>>,
) -> Result<Json<CheckpointView>, ApiError> {
    node.readings().latest().await.map(Json).map_err(api_error)
}

/// A span of the seal log to export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct BundleQuery {
    /// First seq.
    #[serde(default)]
    start: u64,
    /// Readings from `start` (at most 100000).
    #[param(minimum = 0, maximum = 100000)]
    count: u64,
}

/// Export readings `start..start+count` as a bundle: the readings, every
/// signed checkpoint up to one that covers them (signed now if needed),
/// consistency proofs between checkpoints and an inclusion proof per
/// reading. `locus verify` checks it offline with the verifier key.
#[utoipa::path(
    get,
    path = "/api/v1/readings/bundle",
    operation_id = "export_bundle",
    tag = "readings",
    params(BundleQuery),
    responses(
        (status = 200, description = "The bundle (JSON)", body = Object),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "Those readings are not sealed (yet)", body = ErrorBody),
        (status = 410, description = "Retention deleted some of those readings; `details.first_pruned_seq` names the first", body = ErrorBody),
    )
)]
pub(crate) async fn bundle(
    State(node): State<Arc<Node>>,
    query: Result<Query<BundleQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    if q.count > MAX_BUNDLE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("count {} is over {MAX_BUNDLE}", q.count),
        ));
    }
    let end = q.start.checked_add(q.count).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_sealed",
            "start + count overflows",
        )
    })?;
    let b = node
        .readings()
        .bundle(q.start..end)
        .await
        .map_err(api_error)?;
    Ok(Json(b).into_response())
}

/// 400 for a path parameter that does not parse.
fn path_error(e: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text())
}

/// The tree to prove a reading in.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProofQuery {
    /// Tree size (default: the newest signed checkpoint, or one signed now
    /// when none covers the reading yet).
    size: Option<u64>,
}

/// The inclusion proof of one reading: the reading, its leaf hash, the
/// audit path (hex), the tree size and root, and the signed checkpoint
/// when the size is one. Verify with `locus_iot::merkle::verify_inclusion`
/// and the node's verifier key.
#[utoipa::path(
    get,
    path = "/api/v1/readings/{seq}/proof",
    operation_id = "reading_inclusion_proof",
    tag = "readings",
    params(
        ("seq" = u64, Path, description = "The reading's seq in the seal log"),
        ProofQuery,
    ),
    responses(
        (status = 200, description = "The proof", body = InclusionProof),
        (status = 400, description = "A seq or size that is not a number", body = ErrorBody),
        (status = 404, description = "The seq or the size is beyond the sealed log, or the reading's row is missing", body = ErrorBody),
        (status = 409, description = "The seq is not in the tree of that size", body = ErrorBody),
        (status = 410, description = "Retention deleted the reading (its leaf stays in the log)", body = ErrorBody),
    )
)]
pub(crate) async fn proof(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    seq: Result<Path<u64>, PathRejection>,
    query: Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    let Path(seq) = seq.map_err(path_error)?;
    let Query(q) = query.map_err(query_error)?;
    let proof = node
        .readings()
        .inclusion(seq, q.size)
        .await
        .map_err(api_error)?;
    // The reading itself is in the proof: only its thing's tenant sees it.
    if !reaches_device(&node, &caller, proof.reading.thing()).await {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no reading {seq} of a thing of yours"),
        ));
    }
    Ok(Json(proof))
}

/// Whether the caller reaches the readings of device `name`: an org admin
/// of this node's org every device's; anyone else those of the things of
/// its tenant.
async fn reaches_device(node: &Node, caller: &Caller, name: &str) -> bool {
    let org = node.access().org();
    let p = &caller.principal;
    if p.role == locus_access::Role::OrgAdmin && p.tenant.org == org {
        return true;
    }
    node.things()
        .directory()
        .await
        .iter()
        .any(|(t, _)| t.spec.name.get() == name && caller.reaches(org, t.spec.tenant.get()))
}

/// What a device answers that the caller does not reach: the same as a
/// device with no readings.
fn no_readings() -> locus_readings::edgex::MultiReadingsResponse {
    locus_readings::edgex::MultiReadingsResponse {
        api_version: "v3".to_owned(),
        status_code: 200,
        total_count: 0,
        readings: Vec::new(),
    }
}

/// Two tree sizes of the seal log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConsistencyQuery {
    /// The older tree size.
    from: u64,
    /// The newer tree size.
    to: u64,
}

/// The consistency proof between two tree sizes (hex): the newer tree
/// extends the older one. Verify with `locus_iot::merkle::verify_consistency`.
#[utoipa::path(
    get,
    path = "/api/v1/readings/consistency",
    operation_id = "readings_consistency_proof",
    tag = "readings",
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "The proof", body = ConsistencyProof),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "`to` is beyond the sealed log", body = ErrorBody),
        (status = 409, description = "`from` is larger than `to`", body = ErrorBody),
    )
)]
pub(crate) async fn consistency(
    State(node): State<Arc<Node>>,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    node.readings()
        .consistency(q.from, q.to)
        .await
        .map(Json)
        .map_err(api_error)
}

/// A page of an EdgeX reading query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EdgexPage {
    /// Readings to skip (newest first).
    #[param(minimum = 0)]
    #[serde(default)]
    offset: i64,
    /// Most readings returned (-1: the most, 1024; default 20).
    #[param(minimum = -1, maximum = 1024)]
    #[serde(default = "edgex_default_limit")]
    limit: i32,
}

fn edgex_default_limit() -> i32 {
    EDGEX_DEFAULT_LIMIT as i32
}

impl EdgexPage {
    fn offset(&self) -> Result<u64, ApiError> {
        u64::try_from(self.offset).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("offset {} is negative", self.offset),
            )
        })
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            -1 => Ok(EDGEX_MAX_LIMIT),
            n if (0..=EDGEX_MAX_LIMIT as i32).contains(&n) => Ok(n as u32),
            n => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("limit {n} is out of range -1..={EDGEX_MAX_LIMIT} (-1: the most)"),
            )),
        }
    }
}

/// EdgeX core-data: readings of a device with an origin between `start`
/// and `end` (nanoseconds since the epoch, both included), newest first.
#[utoipa::path(
    get,
    path = "/api/v3/reading/device/name/{name}/start/{start}/end/{end}",
    operation_id = "edgex_readings_by_device_and_time",
    tag = "readings",
    params(
        ("name" = String, Path, description = "Device name (the thing)"),
        ("start" = i64, Path, description = "From this origin (nanoseconds since the epoch, included)"),
        ("end" = i64, Path, description = "Up to this origin (nanoseconds since the epoch, included)"),
        EdgexPage,
    ),
    responses(
        (status = 200, description = "EdgeX MultiReadingsResponse", body = MultiReadingsResponse,
            headers(("locus-pruned-below" = u64, description = "Retention deleted the bodies of every seq below this one; they are not in any answer"))),
        (status = 400, description = "Bad path or query", body = ErrorBody),
    )
)]
pub(crate) async fn edgex_by_time(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, i64, i64)>, PathRejection>,
    query: Result<Query<EdgexPage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((name, start, end)) = path.map_err(path_error)?;
    let Query(q) = query.map_err(query_error)?;
    let (offset, limit) = (q.offset()?, q.limit()?);
    if !reaches_device(&node, &caller, &name).await {
        return Ok(with_pruned(&node, Json(no_readings())));
    }
    let found = node
        .readings()
        .edgex_readings(name, start, end, offset, limit)
        .await
        .map_err(api_error)?;
    Ok(with_pruned(&node, Json(found)))
}

/// EdgeX core-data: the newest readings of a device.
#[utoipa::path(
    get,
    path = "/api/v3/reading/device/name/{name}",
    operation_id = "edgex_readings_by_device",
    tag = "readings",
    params(
        ("name" = String, Path, description = "Device name (the thing)"),
        EdgexPage,
    ),
    responses(
        (status = 200, description = "EdgeX MultiReadingsResponse", body = MultiReadingsResponse,
            headers(("locus-pruned-below" = u64, description = "Retention deleted the bodies of every seq below this one; they are not in any answer"))),
        (status = 400, description = "Bad query", body = ErrorBody),
    )
)]
pub(crate) async fn edgex_by_device(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    query: Result<Query<EdgexPage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let (offset, limit) = (q.offset()?, q.limit()?);
    if !reaches_device(&node, &caller, &name).await {
        return Ok(with_pruned(&node, Json(no_readings())));
    }
    let found = node
        .readings()
        .edgex_readings(name, i64::MIN, i64::MAX, offset, limit)
        .await
        .map_err(api_error)?;
    Ok(with_pruned(&node, Json(found)))
}

/// A reading as a child node exports it (the JSON shape of a reading).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub(crate) struct ImportedReading {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    thing: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    resource: String,
    value: ImportedValue,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    #[serde(default)]
    unit: Option<String>,
    /// Unix milliseconds.
    time_ms: i64,
}

/// A reading's value: exactly one of the four kinds.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, max_properties = 1)]
pub(crate) struct ImportedValue {
    #[schema(nullable = false)]
    number: Option<f64>,
    #[schema(nullable = false, max_length = 65536)]
    string: Option<String>,
    #[schema(nullable = false)]
    bool: Option<bool>,
    /// Base64 (standard alphabet, padded).
    #[schema(nullable = false, pattern = "^[A-Za-z0-9+/]*={0,2}$")]
    data: Option<String>,
}

/// One sealed reading of the child.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub(crate) struct ImportedEntry {
    /// Its seq in the child's seal log.
    seq: u64,
    reading: ImportedReading,
}

/// What a child node exports: its id, its verifier key and sealed readings.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub(crate) struct ImportRequest {
    /// The child's node id.
    #[schema(pattern = "^[0-9a-f]{20}$")]
    origin: String,
    /// The child's verifier key (`locus/<origin>+KEYID+BASE64`).
    #[schema(max_length = 512)]
    verifier_key: String,
    #[schema(max_items = 1000)]
    readings: Vec<ImportedEntry>,
}

/// Why an imported entry is refused: its shape (400) or its content (409).
enum EntryError {
    Shape(String),
    Invalid(String),
}
use EntryError::{Invalid, Shape};

impl ImportedEntry {
    fn into_reading(self) -> Result<(u64, locus_iot::Reading), EntryError> {
        use base64::Engine;
        let r = self.reading;
        let value = match r.value {
            ImportedValue {
                number: Some(x),
                string: None,
                bool: None,
                data: None,
            } => locus_iot::Value::Number(x),
            ImportedValue {
                number: None,
                string: Some(v),
                bool: None,
                data: None,
            } => locus_iot::Value::String(v),
            ImportedValue {
                number: None,
                string: None,
                bool: Some(b),
                data: None,
            } => locus_iot::Value::Bool(b),
            ImportedValue {
                number: None,
                string: None,
                bool: None,
                data: Some(d),
            } => locus_iot::Value::Data(
                base64::engine::general_purpose::STANDARD
                    .decode(d)
                    .map_err(|e| Invalid(format!("value.data is not base64: {e}")))?,
            ),
            _ => {
                return Err(Shape(
                    "value must hold exactly one of number, string, bool, data".into(),
                ));
            }
        };
        locus_iot::Reading::new(r.thing, r.resource, value, r.unit, r.time_ms)
            .map(|reading| (self.seq, reading))
            .map_err(|e| Invalid(e.to_string()))
    }
}

/// Node to node: store the sealed readings a child node exports (its
/// `[readings] export_url` points here). Durable before the answer, and
/// stored once per (origin, seq): a batch sent again is answered 200 with
/// its readings counted as duplicates.
#[utoipa::path(
    post,
    path = "/api/v1/readings/import",
    operation_id = "import_readings",
    tag = "readings",
    request_body(content = ImportRequest, description = "Sealed readings of a child node"),
    responses(
        (status = 200, description = "Stored (or already stored)", body = ImportResult),
        (status = 400, description = "Not an import request; `message` names the field", body = ErrorBody),
        (status = 409, description = "The verifier key is not the origin's, the origin is this node, or a reading is not valid", body = ErrorBody),
        (status = 503, description = "The store did not commit; nothing of the batch is stored, retry", body = ErrorBody),
    )
)]
pub(crate) async fn import(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Json<ImportResult>, ApiError> {
    let req: ImportRequest = crate::error::json_body(&body, "invalid_import")?;
    if req.readings.len() > MAX_IMPORT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_import",
            format!(
                "{} readings in one import; the limit is {MAX_IMPORT}",
                req.readings.len()
            ),
        ));
    }
    let mut readings = Vec::with_capacity(req.readings.len());
    for (i, entry) in req.readings.into_iter().enumerate() {
        readings.push(entry.into_reading().map_err(|e| {
            let (status, code, why) = match e {
                Shape(why) => (StatusCode::BAD_REQUEST, "invalid_import", why),
                Invalid(why) => (StatusCode::CONFLICT, "invalid_reading", why),
            };
            ApiError::new(status, code, format!("readings[{i}]: {why}"))
                .with_details(serde_json::json!({ "path": format!("readings[{i}]") }))
        })?);
    }
    node.readings()
        .import(&req.origin, &req.verifier_key, readings)
        .await
        .map(Json)
        .map_err(|e| match e {
            ReadingsError::Store(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_committed",
                e.to_string(),
            ),
            e => api_error(e),
        })
}

/// Child nodes whose readings were imported here.
#[utoipa::path(
    get,
    path = "/api/v1/readings/imports",
    operation_id = "list_import_origins",
    tag = "readings",
    responses((status = 200, description = "Every origin with its count and next seq", body = Vec<ImportOriginView>))
)]
pub(crate) async fn import_origins(
    State(node): State<Arc<Node>>,
) -> Result<Json<Vec<ImportOriginView>>, ApiError> {
    node.readings()
        .import_origins()
        .await
        .map(Json)
        .map_err(api_error)
}

/// A page of imported readings.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ImportedQuery {
    /// From this seq of the child's log.
    #[serde(default)]
    start: u64,
    /// Most readings returned (1–10000, default 1000).
    #[param(minimum = 1, maximum = 10000)]
    #[serde(default = "default_limit")]
    limit: u32,
}

/// Readings imported from one child node, in its seq order.
#[utoipa::path(
    get,
    path = "/api/v1/readings/imports/{origin}",
    operation_id = "list_imported_readings",
    tag = "readings",
    params(
        ("origin" = String, Path, description = "The child's node id", pattern = "^[0-9a-f]{20}$"),
        ImportedQuery,
    ),
    responses(
        (status = 200, description = "Readings with their seq in the child's log", body = Vec<ReadingView>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "Nothing was imported from that node", body = ErrorBody),
    )
)]
pub(crate) async fn imported(
    State(node): State<Arc<Node>>,
    Path(origin): Path<String>,
    query: Result<Query<ImportedQuery>, QueryRejection>,
) -> Result<Json<Vec<ReadingView>>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    if q.limit == 0 || q.limit > MAX_QUERY {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit {} is out of range 1..={MAX_QUERY}", q.limit),
        ));
    }
    node.readings()
        .imported(&origin, q.start, q.limit)
        .await
        .map_err(api_error)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_imports",
                format!("nothing was imported from node {origin}"),
            )
            .with_details(serde_json::json!({ "origin": origin }))
        })
}

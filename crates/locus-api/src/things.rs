//! Handlers of `/api/v1/things` (the registry and commands) and of the
//! EdgeX command API `/api/v3/device/name/{name}/{command}`. Any node
//! accepts every call: a call on a thing another node manages is forwarded
//! to that node's API (once).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use locus_agent::Node;
use locus_core::thing::{Thing, ThingProtocol, ThingSpec, ThingView};
use locus_core::workload::SpecFormat;
use locus_things::{CommandError, CommandResult};
use locus_things::{Located, ThingsError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, json_body, query_error};
use crate::forward::{self, Call, FORWARDED, Owner, forward};
use crate::routes::{known_nodes, lookup};

fn api_error(e: ThingsError) -> ApiError {
    match e {
        ThingsError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        ThingsError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        ThingsError::Invalid(_) => ApiError::new(StatusCode::CONFLICT, "invalid", e.to_string()),
        ThingsError::Unreachable { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "unreachable", e.to_string())
        }
        ThingsError::Store(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
        }
    }
}

/// The status of a failed command. An unknown resource is a 409 on the
/// thing (its profile says no), a 404 on EdgeX's per-command paths.
fn command_error(e: CommandError) -> ApiError {
    let (status, code) = match &e {
        CommandError::NoResource { .. } => (StatusCode::CONFLICT, "no_resource"),
        CommandError::NotAllowed(_) => (StatusCode::CONFLICT, "not_allowed"),
        CommandError::BadValue { .. } => (StatusCode::CONFLICT, "bad_value"),
        CommandError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        CommandError::Failed(_) => (StatusCode::BAD_GATEWAY, "thing_failed"),
    };
    ApiError::new(status, code, e.to_string())
}

fn edgex_command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::NoResource { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "no_resource", e.to_string())
        }
        e => command_error(e),
    }
}

/// Refuse a thing of another tenant than the caller's: hidden (404) to a
/// read, forbidden (403) to a write.
fn may_touch(
    node: &Node,
    caller: &Caller,
    t: &Thing,
    method: &Method,
    name: &str,
) -> Result<(), ApiError> {
    caller.may_touch(
        node.access().org(),
        t.spec.tenant.get(),
        method,
        &format!("thing {name}"),
        || api_error(ThingsError::NotFound(name.to_owned())),
    )
}

/// The thing, or the forwarded answer of its manager.
async fn local_or_forward(
    node: &Node,
    caller: &Caller,
    name: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Result<Thing, Response>, ApiError> {
    let located = node.things().locate(name).await.map_err(api_error)?;
    let (Located::Local(t) | Located::Remote { thing: t, .. }) = &located;
    may_touch(node, caller, t, &method, name)?;
    let at = match located {
        Located::Local(t) => Owner::Here(t),
        Located::Remote {
            owner, api_addr, ..
        } => Owner::There {
            what: format!("thing {name}"),
            owner,
            url: format!("http://{api_addr}{path}"),
        },
    };
    forward::resolve(at, Call::new(node, caller.operation, method, headers, body)).await
}

/// Register a thing. The body is a thing in JSON, or in TOML with
/// `Content-Type: application/toml`. `manager.node` picks the managing
/// node (default: this one); the call is forwarded there. Only the
/// password's argon2 hash is kept.
#[utoipa::path(
    post,
    path = "/api/v1/things",
    operation_id = "add_thing",
    tag = "things",
    request_body(content = ThingSpec, description = "The thing (JSON, or TOML with Content-Type application/toml)"),
    responses(
        (status = 201, description = "Registered", body = ThingView),
        (status = 400, description = "Invalid thing; `details` names the field, line and column", body = ErrorBody),
        (status = 404, description = "No such manager node", body = ErrorBody),
        (status = 409, description = "The name is taken, two fields conflict, or the manager cannot take it", body = ErrorBody),
        (status = 502, description = "The manager node did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn add(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "the thing is not UTF-8"))?;
    let format = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) if ct.contains("toml") => SpecFormat::Toml,
        _ => SpecFormat::Json,
    };
    let mut spec = ThingSpec::parse_fields(text, format).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_thing", e.to_string())
            .with_details(serde_json::json!({ "path": e.path, "line": e.line, "column": e.column }))
    })?;
    spec.check().map_err(|e| {
        ApiError::new(StatusCode::CONFLICT, "conflicting_fields", e.to_string())
            .with_details(serde_json::json!({ "path": e.path }))
    })?;
    let tenant = crate::tenants::owning_tenant_ref(&node, &caller, &spec.tenant)?;
    spec.tenant = caller.owning_tenant(node.access().org(), &spec.tenant)?;
    if spec
        .name
        .get()
        .starts_with(locus_trust::audit::RESERVED_PREFIX)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reserved_name",
            format!(
                "thing name {:?}: names under {:?} are the node's own",
                spec.name.get(),
                locus_trust::audit::RESERVED_PREFIX
            ),
        )
        .with_details(serde_json::json!({ "path": "name" })));
    }
    // Once, where the call arrives: a forwarded call was counted there.
    if !headers.contains_key(FORWARDED) {
        crate::tenants::check_quota(
            &node,
            &tenant,
            locus_access::Usage {
                things: 1,
                ..Default::default()
            },
        )
        .await?;
    }
    if let Some(q) = &spec.manager.node {
        let nodes = known_nodes(&node).await?;
        let target = lookup(&nodes, q)?;
        if target.id != node.id() {
            if headers.contains_key(FORWARDED) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "moved",
                    format!("manager {q} is not this node"),
                ));
            }
            let api = target
                .info
                .as_ref()
                .map(|i| i.api_addr.clone())
                .unwrap_or_default();
            let mut spec = spec;
            spec.manager.node = Some(target.id.to_string());
            let json = serde_json::to_vec(&spec).unwrap_or_default();
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                "application/json".parse().map_err(|_| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "header")
                })?,
            );
            let auth = forward::narrowed_auth(&node, &headers, target.id, caller.operation)?;
            return forward(
                Method::POST,
                &format!("http://{api}/api/v1/things"),
                &h,
                auth,
                Bytes::from(json),
            )
            .await;
        }
    }
    let workload = match &spec.manager.workload {
        Some(w) => Some(managing_workload(&node, w).await?),
        None => None,
    };
    let t = node.things().add(spec, workload).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(t.view())).into_response())
}

/// The id of the workload `query` names on this node.
async fn managing_workload(node: &Node, query: &str) -> Result<String, ApiError> {
    match node.workloads().locate(query).await {
        Ok(locus_workloads::Located::Local(w)) => Ok(w.id.to_string()),
        Ok(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "workload_elsewhere",
            format!(
                "workload {query:?} does not run on the managing node {}",
                node.id()
            ),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "workload_not_found",
            e.to_string(),
        )),
    }
}

/// Filters of the thing list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only things of this protocol.
    protocol: Option<ThingProtocol>,
    /// Only things managed by this node (id, prefix or name).
    node: Option<String>,
    /// Only things of this tenant.
    tenant: Option<String>,
}

/// Every thing of the cluster, as this node sees it.
#[utoipa::path(
    get,
    path = "/api/v1/things",
    operation_id = "list_things",
    tag = "things",
    params(ListQuery),
    responses(
        (status = 200, description = "Things", body = Vec<ThingView>),
        (status = 400, description = "Bad filter", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<ThingView>>, ApiError> {
    let org = node.access().org();
    let Query(q) = query.map_err(query_error)?;
    // The managing node, as every node query names one: id, unique id
    // prefix or name.
    let nodes = node.fabric().nodes().await;
    let manager = q.node.as_ref().map(|n| {
        locus_core::cluster::find(&nodes, n)
            .ok()
            .map(|c| c.id.to_string())
    });
    let mut out: Vec<ThingView> = node
        .things()
        .directory()
        .await
        .into_iter()
        .map(|(t, _)| t.view())
        .collect();
    out.retain(|v| {
        caller.reaches(org, &v.tenant)
            && q.protocol.is_none_or(|p| v.protocol == p)
            && q.tenant.as_ref().is_none_or(|t| v.tenant == *t)
            && manager
                .as_ref()
                .is_none_or(|m| m.as_ref() == Some(&v.manager))
    });
    Ok(Json(out))
}

/// One thing.
#[utoipa::path(
    get,
    path = "/api/v1/things/{thing}",
    operation_id = "inspect_thing",
    tag = "things",
    params(("thing" = String, Path, description = "Thing name")),
    responses(
        (status = 200, description = "The thing", body = ThingView),
        (status = 404, description = "No such thing", body = ErrorBody),
    )
)]
pub(crate) async fn inspect(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<ThingView>, ApiError> {
    match node.things().locate(&name).await.map_err(api_error)? {
        Located::Local(t) | Located::Remote { thing: t, .. } => {
            may_touch(&node, &caller, &t, &Method::GET, &name)?;
            Ok(Json(t.view()))
        }
    }
}

/// Remove a thing from the registry. Its readings stay.
#[utoipa::path(
    delete,
    path = "/api/v1/things/{thing}",
    operation_id = "remove_thing",
    tag = "things",
    params(("thing" = String, Path, description = "Thing name")),
    responses(
        (status = 200, description = "Removed", body = ThingView),
        (status = 404, description = "No such thing", body = ErrorBody),
        (status = 409, description = "It moved while the call was forwarded", body = ErrorBody),
        (status = 502, description = "Its manager did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn remove(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/api/v1/things/{name}");
    match local_or_forward(
        &node,
        &caller,
        &name,
        Method::DELETE,
        &path,
        &headers,
        Bytes::new(),
    )
    .await?
    {
        Ok(_) => {
            let t = node.things().remove(&name).await.map_err(api_error)?;
            Ok(Json(t.view()).into_response())
        }
        Err(forwarded) => Ok(forwarded),
    }
}

/// A new manager for a thing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attach {
    /// Node id, unique id prefix or name.
    #[schema(max_length = 64)]
    node: String,
    /// A workload on that node that manages the thing.
    #[serde(default)]
    #[schema(max_length = 64)]
    workload: Option<String>,
}

/// Give a thing a new manager: a node, or a workload on a node. The new
/// manager stores it before the old one forgets it; an LwM2M thing is
/// re-bootstrapped towards the new manager, an MQTT thing's session is
/// closed (the new manager's broker now accepts it, the old one refuses
/// it), and its next readings are sealed by the new manager.
#[utoipa::path(
    post,
    path = "/api/v1/things/{thing}/attach",
    operation_id = "attach_thing",
    tag = "things",
    params(("thing" = String, Path, description = "Thing name")),
    request_body = Attach,
    responses(
        (status = 200, description = "Attached", body = ThingView),
        (status = 400, description = "Not an attach request", body = ErrorBody),
        (status = 404, description = "No such thing", body = ErrorBody),
        (status = 409, description = "No such node or workload, or the new manager refused it", body = ErrorBody),
        (status = 502, description = "A node did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn attach(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let a: Attach = json_body(&body, "invalid")?;
    let path = format!("/api/v1/things/{name}/attach");
    match local_or_forward(&node, &caller, &name, Method::POST, &path, &headers, body).await? {
        Ok(_) => {
            // The thing exists: a target that does not is a conflict.
            let to_conflict = |e: ApiError| e.with_status(StatusCode::CONFLICT);
            let nodes = known_nodes(&node).await?;
            let target = lookup(&nodes, &a.node).map_err(to_conflict)?;
            let api = target
                .info
                .as_ref()
                .map(|i| i.api_addr.clone())
                .unwrap_or_default();
            let workload = match (&a.workload, target.id == node.id()) {
                (Some(w), true) => Some(managing_workload(&node, w).await.map_err(to_conflict)?),
                (Some(w), false) => Some(w.clone()),
                (None, _) => None,
            };
            let t = node
                .things()
                .attach(&name, target.id, &api, workload)
                .await
                .map_err(api_error)?;
            Ok(Json(t.view()).into_response())
        }
        Err(forwarded) => Ok(forwarded),
    }
}

/// Node to node: take over a thing from its previous manager.
#[utoipa::path(
    post,
    path = "/api/v1/things/handover",
    operation_id = "thing_handover",
    tag = "things",
    request_body(content = Thing, description = "The thing as its manager stores it"),
    responses(
        (status = 201, description = "This node manages it now", body = ThingView),
        (status = 400, description = "Not a thing", body = ErrorBody),
        (status = 409, description = "Not addressed to this node, or it cannot take it", body = ErrorBody),
    )
)]
pub(crate) async fn handover(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t: Thing = json_body(&body, "invalid")?;
    let t = node.things().accept(t).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(t.view())).into_response())
}

/// A command to a thing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandRequest {
    /// The resource.
    #[schema(max_length = 63)]
    resource: String,
    /// The value to write, or the arguments of an execute; absent: read.
    #[serde(default)]
    #[schema(max_length = 4096)]
    value: Option<String>,
}

/// Run a command on a thing: read a resource, write a value, or execute
/// an action, over the thing's own protocol (MQTT publish, LwM2M
/// Read/Write/Execute, or its HTTP device service).
#[utoipa::path(
    post,
    path = "/api/v1/things/{thing}/commands",
    operation_id = "thing_command",
    tag = "things",
    params(("thing" = String, Path, description = "Thing name")),
    request_body = CommandRequest,
    responses(
        (status = 200, description = "Done", body = CommandResult),
        (status = 400, description = "Not a command", body = ErrorBody),
        (status = 404, description = "No such thing", body = ErrorBody),
        (status = 409, description = "The thing has no such resource, or its access or type refuses the command", body = ErrorBody),
        (status = 502, description = "The thing (or its manager) answered with an error", body = ErrorBody),
        (status = 503, description = "The thing cannot be reached now", body = ErrorBody),
    )
)]
pub(crate) async fn command(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c: CommandRequest = json_body(&body, "invalid")?;
    let path = format!("/api/v1/things/{name}/commands");
    match local_or_forward(&node, &caller, &name, Method::POST, &path, &headers, body).await? {
        Ok(_) => node
            .doors()
            .command(&name, &c.resource, c.value.as_deref())
            .await
            .map(|r| Json(r).into_response())
            .map_err(command_error),
        Err(forwarded) => Ok(forwarded),
    }
}

/// EdgeX `BaseResponse`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub(crate) struct EdgexBase {
    apiVersion: &'static str,
    statusCode: u16,
}

/// EdgeX `EventResponse` of a read command.
#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub(crate) struct EdgexEventResponse {
    apiVersion: &'static str,
    statusCode: u16,
    #[schema(value_type = Object)]
    event: serde_json::Value,
}

fn edgex_value_type(t: locus_core::thing::ValueType) -> &'static str {
    use locus_core::thing::ValueType::*;
    match t {
        Float => "Float64",
        Int => "Int64",
        Bool => "Bool",
        String => "String",
        Binary => "Binary",
    }
}

/// EdgeX command API: read a resource of a device (a thing), as an EdgeX
/// event with one reading.
#[utoipa::path(
    get,
    path = "/api/v3/device/name/{name}/{command}",
    operation_id = "edgex_device_read",
    tag = "edgex",
    params(
        ("name" = String, Path, description = "Device (thing) name"),
        ("command" = String, Path, description = "Resource name"),
    ),
    responses(
        (status = 200, description = "The reading", body = EdgexEventResponse),
        (status = 404, description = "No such device or resource", body = ErrorBody),
        (status = 409, description = "The resource cannot be read", body = ErrorBody),
        (status = 502, description = "The device answered with an error", body = ErrorBody),
        (status = 503, description = "The device cannot be reached now", body = ErrorBody),
    )
)]
pub(crate) async fn edgex_get(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path((name, command)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/api/v3/device/name/{name}/{command}");
    let t = match local_or_forward(
        &node,
        &caller,
        &name,
        Method::GET,
        &path,
        &headers,
        Bytes::new(),
    )
    .await?
    {
        Ok(t) => t,
        Err(forwarded) => return Ok(forwarded),
    };
    if t.spec
        .resource(&command)
        .is_some_and(|r| !r.access.readable())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_allowed",
            format!("resource {command:?} cannot be read"),
        ));
    }
    let r = node
        .doors()
        .command(&name, &command, None)
        .await
        .map_err(command_error)?;
    let origin_ns = r
        .time_ms
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
        .saturating_mul(1_000_000);
    let res = t.spec.resource(&command);
    let value = match &r.value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let event = serde_json::json!({
        "apiVersion": "v3",
        "deviceName": name,
        "profileName": name,
        "sourceName": command,
        "origin": origin_ns,
        "readings": [{
            "origin": origin_ns,
            "deviceName": name,
            "resourceName": command,
            "profileName": name,
            "valueType": res.map_or("String", |r| edgex_value_type(r.value_type)),
            "value": value,
            "units": res.and_then(|r| r.unit.as_ref()).map(|u| u.get().clone()),
        }],
    });
    Ok(Json(EdgexEventResponse {
        apiVersion: "v3",
        statusCode: 200,
        event,
    })
    .into_response())
}

/// EdgeX command API: write a resource of a device (a thing). The body
/// maps the resource name to its value as a string (`{"valve": "true"}`).
#[utoipa::path(
    put,
    path = "/api/v3/device/name/{name}/{command}",
    operation_id = "edgex_device_write",
    tag = "edgex",
    params(
        ("name" = String, Path, description = "Device (thing) name"),
        ("command" = String, Path, description = "Resource name"),
    ),
    request_body(content = Object, description = "Resource name → value, as EdgeX sends it"),
    responses(
        (status = 200, description = "Written", body = EdgexBase),
        (status = 400, description = "Not a JSON object of strings", body = ErrorBody),
        (status = 404, description = "No such device or resource", body = ErrorBody),
        (status = 409, description = "The resource cannot be written, or the value does not fit its type", body = ErrorBody),
        (status = 502, description = "The device answered with an error", body = ErrorBody),
        (status = 503, description = "The device cannot be reached now", body = ErrorBody),
    )
)]
pub(crate) async fn edgex_put(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path((name, command)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the body must be a JSON object: {e}"),
            )
        })?;
    let path = format!("/api/v3/device/name/{name}/{command}");
    if let Err(forwarded) =
        local_or_forward(&node, &caller, &name, Method::PUT, &path, &headers, body).await?
    {
        return Ok(forwarded);
    }
    let value = match map.get(&command) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_value",
                format!("the body has no value for {command:?}"),
            ));
        }
        Some(other) => other.to_string(),
    };
    node.doors()
        .command(&name, &command, Some(&value))
        .await
        .map_err(edgex_command_error)?;
    Ok(Json(EdgexBase {
        apiVersion: "v3",
        statusCode: 200,
    })
    .into_response())
}

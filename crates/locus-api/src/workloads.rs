//! Handlers of `/api/v1/workloads`. Any node accepts every call: a call on
//! a workload another node owns is forwarded to that node's API (once: a
//! forwarded call that misses is answered, never forwarded again).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use locus_access::tenant::{Role, WorkloadKind, WorkloadNeeds};
use locus_agent::Node;
use locus_core::workload::{Kind, SpecFormat, State as WState, Workload, WorkloadId, WorkloadSpec};
use locus_workloads::{
    Handover, Located, Submitted, Verb, WorkloadError, WorkloadUpdate, WorkloadView,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, json_body, query_error};
use crate::forward::{self, Call, Owner};

/// Most bytes of log returned by one call.
const MAX_LOG_BYTES: u64 = 1 << 20;
/// How often a followed log is polled.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Longest a followed log stays open; the response then ends.
const FOLLOW_MAX: Duration = Duration::from_secs(3600);

fn api_error(e: WorkloadError) -> ApiError {
    match e {
        WorkloadError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        WorkloadError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        WorkloadError::Invalid(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())
        }
        WorkloadError::Unreachable { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "owner_unreachable", e.to_string())
        }
        WorkloadError::Store(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
        }
    }
}

/// Options of a submission.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubmitQuery {
    /// Only compute placement; run nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Submit a workload. The body is a workload spec in JSON, or in TOML with
/// `Content-Type: application/toml`. The node places it over the cluster
/// and hands it to the chosen node; with no fitting node it stays pending
/// and starts as soon as one fits.
#[utoipa::path(
    post,
    path = "/api/v1/workloads",
    tag = "workloads",
    params(SubmitQuery),
    request_body(content = WorkloadSpec, description = "The spec (JSON, or TOML with Content-Type application/toml)"),
    responses(
        (status = 201, description = "Accepted: scheduled on a node, or pending with the reason", body = Submitted),
        (status = 200, description = "Dry run: every node's verdict and score", body = Submitted),
        (status = 400, description = "Invalid spec; `details` names the field, line and column", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it, or the tenant's grant does not cover the workload's kind, host ports or devices (by default only org admins run `process` workloads)", body = ErrorBody),
        (status = 409, description = "A workload with that name exists, or two fields conflict (a host port published twice)", body = ErrorBody),
    )
)]
pub(crate) async fn submit(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "the spec is not UTF-8"))?;
    let format = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) if ct.contains("toml") => SpecFormat::Toml,
        _ => SpecFormat::Json,
    };
    let spec = WorkloadSpec::parse_fields(text, format).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_spec", e.to_string())
            .with_details(serde_json::json!({ "path": e.path, "line": e.line, "column": e.column }))
    })?;
    // Fields that are each valid but contradict each other.
    spec.check().map_err(|e| {
        ApiError::new(StatusCode::CONFLICT, "conflicting_fields", e.to_string())
            .with_details(serde_json::json!({ "path": e.path }))
    })?;
    let tenant = crate::tenants::owning_tenant_ref(&node, &caller, &spec.tenant)?;
    check_grant(&node, &caller, &tenant, &spec)?;
    // A module or image by CID: one the caller's tenant may use.
    if let Some(Ok(cid)) = locus_core::ArtifactId::from_source(spec.source.get()) {
        crate::artifacts::guard(&node, &caller, &cid, axum::http::Method::POST).await?;
    }
    let mut spec = spec;
    spec.tenant = caller.owning_tenant(node.access().org(), &spec.tenant)?;
    crate::tenants::check_quota(
        &node,
        &tenant,
        locus_access::Usage {
            workloads: 1,
            cpu_millis: *spec.resources.cpu_millicores.get(),
            memory_bytes: *spec.resources.memory_mb.get() << 20,
            ..Default::default()
        },
    )
    .await?;
    let submitted = node
        .workloads()
        .submit(spec, q.dry_run)
        .await
        .map_err(api_error)?;
    let status = if q.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(submitted)).into_response())
}

/// What a workload asks of its node beyond the sandbox, as a grant sees
/// it: its kind, host ports and devices.
fn needs_of(spec: &WorkloadSpec) -> WorkloadNeeds {
    WorkloadNeeds {
        kind: Some(match spec.kind {
            Kind::Wasm => WorkloadKind::Wasm,
            Kind::Process => WorkloadKind::Process,
            Kind::Container => WorkloadKind::Container,
        }),
        host_ports: spec
            .ports
            .iter()
            .map(|p| p.host.unwrap_or(p.container))
            .collect(),
        host_paths: Vec::new(),
        devices: spec.devices.iter().map(|d| d.get().clone()).collect(),
    }
}

/// Native code is a privilege: an org admin of this node's org may run
/// anything on its org's nodes; everyone else only what the tenant's
/// grant covers (its record's, by default: sandboxed kinds, no host port
/// or device, so no `process`).
fn check_grant(
    node: &Node,
    caller: &Caller,
    tenant: &locus_access::TenantRef,
    spec: &WorkloadSpec,
) -> Result<(), ApiError> {
    let p = &caller.principal;
    if p.role == Role::OrgAdmin && p.tenant.org == node.access().org() {
        return Ok(());
    }
    let (record, _) = node.access().tenant(tenant);
    record
        .check_grant(p.role, &needs_of(spec))
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "not_granted", e.to_string()))
}

/// Filters of the workload list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only workloads owned by this node (id, prefix or name).
    node: Option<String>,
    /// Only workloads on nodes of this site.
    site: Option<String>,
    /// Only workloads in this state.
    state: Option<WState>,
}

/// Every workload of the cluster, as this node sees it.
#[utoipa::path(
    get,
    path = "/api/v1/workloads",
    tag = "workloads",
    params(ListQuery),
    responses(
        (status = 200, description = "Workloads", body = Vec<WorkloadView>),
        (status = 400, description = "Bad filter", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<WorkloadView>>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let mut all = node.workloads().list().await;
    let org = node.access().org();
    all.retain(|v| {
        caller.reaches(org, v.summary.tenant.get())
            && q.state.is_none_or(|s| v.summary.state == s)
            && q.site.as_ref().is_none_or(|s| v.site == *s)
            && q.node.as_ref().is_none_or(|n| {
                v.node_name == *n
                    || (n.len() >= 4 && v.summary.owner.to_string().starts_with(n.as_str()))
            })
    });
    Ok(Json(all))
}

/// Find the workload; `Err(response)` when the call went to its owner.
async fn local_or_forward(
    node: &Node,
    caller: &Caller,
    query: &str,
    method: Method,
    rest: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Result<WorkloadId, Response>, ApiError> {
    let at = match node.workloads().locate(query).await.map_err(api_error)? {
        Located::Local(w) => {
            caller.may_touch(
                node.access().org(),
                w.spec.tenant.get(),
                &method,
                &format!("workload {query}"),
                || api_error(WorkloadError::NotFound(query.to_owned())),
            )?;
            Owner::Here(w.id)
        }
        Located::Remote {
            id,
            owner,
            api_addr,
            tenant,
        } => {
            // Refused here as it would be there, without telling the owner.
            if let Some(t) = crate::tenants::tenant_of_record(node, tenant.get(), owner)
                && !caller.reaches_tenant(node.access().org(), &t)
            {
                return Err(if method == Method::GET {
                    api_error(WorkloadError::NotFound(query.to_owned()))
                } else {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "workload {query} belongs to another tenant than {}",
                            caller.principal.tenant
                        ),
                    )
                });
            }
            Owner::There {
                what: format!("workload {id}"),
                owner,
                url: format!("http://{api_addr}/api/v1/workloads/{id}{rest}"),
            }
        }
    };
    forward::resolve(at, Call::new(node, caller.operation, method, headers, body)).await
}

/// One workload, by id, unique id prefix or name, with its state history.
#[utoipa::path(
    get,
    path = "/api/v1/workloads/{workload}",
    tag = "workloads",
    params(("workload" = String, Path, description = "Workload id, unique id prefix (4+ hex digits) or name")),
    responses(
        (status = 200, description = "The workload", body = Workload),
        (status = 404, description = "No such workload", body = ErrorBody),
        (status = 502, description = "Its owner did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn inspect(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(query): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match local_or_forward(
        &node,
        &caller,
        &query,
        Method::GET,
        "",
        &headers,
        Bytes::new(),
    )
    .await?
    {
        Ok(id) => Ok(Json(node.workloads().get(id).await.map_err(api_error)?).into_response()),
        Err(forwarded) => Ok(forwarded),
    }
}

async fn verb(
    node: Arc<Node>,
    caller: Caller,
    query: String,
    headers: HeaderMap,
    verb: Verb,
    rest: &str,
) -> Result<Response, ApiError> {
    match local_or_forward(
        &node,
        &caller,
        &query,
        Method::POST,
        rest,
        &headers,
        Bytes::new(),
    )
    .await?
    {
        Ok(id) => {
            Ok(Json(node.workloads().act(id, verb).await.map_err(api_error)?).into_response())
        }
        Err(forwarded) => Ok(forwarded),
    }
}

/// Power on a stopped or failed workload.
#[utoipa::path(
    post,
    path = "/api/v1/workloads/{workload}/start",
    tag = "workloads",
    params(("workload" = String, Path, description = "Workload id, prefix or name")),
    responses(
        (status = 200, description = "Accepted; the workload starts", body = Workload),
        (status = 404, description = "No such workload", body = ErrorBody),
        (status = 502, description = "Its owner did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn start(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(query): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    verb(node, caller, query, headers, Verb::Start, "/start").await
}

/// Power off gracefully: the workload is asked to stop and killed after its
/// `stop_timeout_secs`.
#[utoipa::path(
    post,
    path = "/api/v1/workloads/{workload}/stop",
    tag = "workloads",
    params(("workload" = String, Path, description = "Workload id, prefix or name")),
    responses(
        (status = 200, description = "Accepted; the workload stops", body = Workload),
        (status = 404, description = "No such workload", body = ErrorBody),
        (status = 502, description = "Its owner did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn stop(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(query): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    verb(node, caller, query, headers, Verb::Stop, "/stop").await
}

/// Force off: kill at once.
#[utoipa::path(
    post,
    path = "/api/v1/workloads/{workload}/kill",
    tag = "workloads",
    params(("workload" = String, Path, description = "Workload id, prefix or name")),
    responses(
        (status = 200, description = "Killed", body = Workload),
        (status = 404, description = "No such workload", body = ErrorBody),
        (status = 502, description = "Its owner did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn kill(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(query): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    verb(node, caller, query, headers, Verb::Kill, "/kill").await
}

/// Change resources or environment; a running workload restarts with them.
#[utoipa::path(
    patch,
    path = "/api/v1/workloads/{workload}",
    tag = "workloads",
    params(("workload" = String, Path, description = "Workload id, prefix or name")),
    request_body = WorkloadUpdate,
    responses(
        (status = 200, description = "Updated", body = Workload),
        (status = 400, description = "Invalid update", body = ErrorBody),
        (status = 404, description = "No such workload", body = ErrorBody),
        (status = 502, description = "Its owner did not answer", body = ErrorBody),
        (status = 409, description = "It no longer fits on its node", body = ErrorBody),
    )
)]
pub(crate) async fn update(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(query): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parsed: WorkloadUpdate = json_body(&body, "invalid_update")?;
    match local_or_forward(&node, &caller, &query, Method::PATCH, "", &headers, body).await? {
        Ok(id) => Ok(Json(
            node.workloads()
                .update(id, parsed)
                .await
                .map_err(api_error)?,
        )
        .into_response()),
        Err(forwarded) => Ok(forwarded),
    }
}

/// Options of a destroy.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RemoveQuery {
    /// Kill it first if it runs (Epfiot's force destroy).
    #[serde(default)]
    force: bool,
}

/// Destroy a workload. Refused while it runs unless `force`.
#[utoipa::path(
    delete,
    path = "/api/v1/workloads/{workload}",
    tag = "workloads",
    params(("workload" = String, Path, description = "Workload id, prefix or name"), RemoveQuery),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 404, description = "No such workload", body = ErrorBody),
        (status = 502, description = "Its owner did not answer", body = ErrorBody),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 409, description = "It runs; stop it first or force", body = ErrorBody),
    )
)]
pub(crate) async fn remove(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(query): Path<String>,
    q: Result<Query<RemoveQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let rest = if q.force { "?force=true" } else { "" };
    match local_or_forward(
        &node,
        &caller,
        &query,
        Method::DELETE,
        rest,
        &headers,
        Bytes::new(),
    )
    .await?
    {
        Ok(id) => {
            node.workloads()
                .remove(id, q.force)
                .await
                .map_err(api_error)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(forwarded) => Ok(forwarded),
    }
}

/// Options of a log read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Last bytes to return (default 64 KiB, at most 1 MiB).
    #[param(minimum = 0, maximum = 1048576)]
    tail: Option<u32>,
    /// Keep the response open and stream new output while the workload
    /// runs; the response ends once it has stopped.
    #[serde(default)]
    follow: bool,
}

/// A workload's output (stdout and stderr, interleaved), as plain text.
#[utoipa::path(
    get,
    path = "/api/v1/workloads/{workload}/logs",
    tag = "workloads",
    params(("workload" = String, Path, description = "Workload id, prefix or name"), LogQuery),
    responses(
        (status = 200, description = "The log", content_type = "text/plain", body = String),
        (status = 404, description = "No such workload", body = ErrorBody),
        (status = 502, description = "Its owner did not answer", body = ErrorBody),
        (status = 400, description = "Bad query", body = ErrorBody),
    )
)]
pub(crate) async fn logs(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(query): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    if q.tail.is_some_and(|t| u64::from(t) > MAX_LOG_BYTES) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("tail is at most {MAX_LOG_BYTES} bytes"),
        )
        .with_details(serde_json::json!({ "path": "tail" })));
    }
    let mut rest = format!("/logs?follow={}", q.follow);
    if let Some(t) = q.tail {
        rest.push_str(&format!("&tail={t}"));
    }
    let id = match local_or_forward(
        &node,
        &caller,
        &query,
        Method::GET,
        &rest,
        &headers,
        Bytes::new(),
    )
    .await?
    {
        Ok(id) => id,
        Err(forwarded) => return Ok(forwarded),
    };
    let dir = node.workloads().dir_of(id);
    let tail = q.tail.map_or(64 * 1024, u64::from).min(MAX_LOG_BYTES);
    let (text, offset) = locus_runtime::read_log(&dir, tail).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "log",
            format!("cannot read the log: {e}"),
        )
    })?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((text_plain, text).into_response());
    }
    let workloads = node.workloads().clone();
    let first =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(text)) });
    let until = tokio::time::Instant::now() + FOLLOW_MAX;
    let more = futures_util::stream::unfold(
        (offset, workloads, dir),
        move |(offset, w, dir)| async move {
            loop {
                // Follow while it runs (like `docker logs -f`): once it
                // has ended, drain what is left and close.
                let running = match w.get(id).await {
                    Ok(wl) => matches!(
                        wl.state,
                        WState::Starting | WState::Running | WState::Stopping
                    ),
                    Err(_) => false,
                };
                match locus_runtime::logs::read_from(&dir, offset, MAX_LOG_BYTES) {
                    Ok((bytes, next)) if !bytes.is_empty() => {
                        return Some((Ok(Bytes::from(bytes)), (next, w, dir)));
                    }
                    Ok((_, next)) if next < offset => {
                        return Some((Ok(Bytes::new()), (next, w, dir)));
                    }
                    Ok(_) if !running || tokio::time::Instant::now() >= until => return None,
                    Ok(_) => tokio::time::sleep(FOLLOW_POLL).await,
                    Err(e) => return Some((Err(e), (offset, w, dir))),
                }
            }
        },
    );
    use futures_util::StreamExt;
    Ok((text_plain, Body::from_stream(first.chain(more))).into_response())
}

/// Node to node: take ownership of a workload placed here by another node
/// (a submission there, or a pending workload it held).
#[utoipa::path(
    post,
    path = "/api/v1/workloads/handover",
    tag = "workloads",
    request_body = Handover,
    responses(
        (status = 201, description = "This node owns it now", body = Workload),
        (status = 400, description = "Not a workload", body = ErrorBody),
        (status = 409, description = "Not addressed to this node, or it does not fit here", body = ErrorBody),
    )
)]
pub(crate) async fn handover(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let h: Handover = json_body(&body, "invalid")?;
    let w = node.workloads().accept(h).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(w)).into_response())
}

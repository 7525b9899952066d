//! Handlers of `/api/v1/artifacts`: streaming upload and download (with
//! HTTP range requests), the verified span encoding peers fetch from, and
//! fetch, pin, unpin and collection.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use locus_access::OrgId;
use locus_access::tenant::{Role, TenantRef};
use locus_agent::Node;
use locus_artifacts::pipe::stream_reader;
use locus_artifacts::service::{
    ArtifactView, ArtifactsError, FetchProgress, FetchReport, GcReport, MAX_REPLICAS, PutReport,
};
use locus_artifacts::{RangeError, parse_range};
use locus_core::ArtifactId;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, query_error};

/// Bytes of a refused upload read and dropped before answering.
const REFUSED_BODY_DRAIN: u64 = 64 << 20;

fn api_error(e: ArtifactsError) -> ApiError {
    let (status, code) = match &e {
        ArtifactsError::NotHere(_) => (StatusCode::NOT_FOUND, "not_here"),
        ArtifactsError::NoHolder(_) => (StatusCode::NOT_FOUND, "no_holder"),
        ArtifactsError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        ArtifactsError::Mismatch { .. } => (StatusCode::CONFLICT, "cid_mismatch"),
        ArtifactsError::Budget { .. } => (StatusCode::INSUFFICIENT_STORAGE, "over_budget"),
        ArtifactsError::Transfer { .. } => (StatusCode::BAD_GATEWAY, "fetch_failed"),
        ArtifactsError::Blob(locus_artifacts::ArtifactError::Truncated { .. })
        | ArtifactsError::Blob(locus_artifacts::ArtifactError::TooLong { .. })
        | ArtifactsError::Blob(locus_artifacts::ArtifactError::Upload(_)) => {
            (StatusCode::BAD_REQUEST, "bad_upload")
        }
        ArtifactsError::Blob(_) | ArtifactsError::Store(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "store")
        }
    };
    ApiError::new(status, code, e.to_string())
}

fn parse_cid(cid: &str) -> Result<ArtifactId, ApiError> {
    cid.parse::<ArtifactId>().map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_cid", e.to_string())
            .with_details(serde_json::json!({ "cid": cid }))
    })
}

fn body_of(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Options of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PutQuery {
    /// A name for people (1–128 characters).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    name: Option<String>,
    /// Copies the cluster keeps (0: only this node's; at most 64).
    #[serde(default)]
    #[param(minimum = 0, maximum = 64)]
    replicas: u32,
    /// Answer only once `min(replicas, live nodes)` copies are stored and
    /// fsynced on distinct nodes (default true); false answers once this
    /// node's copy is, and the others follow.
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

/// Options of a pushed copy.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CopyQuery {
    /// A name for people (1–128 characters).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    name: Option<String>,
    /// Copies the cluster keeps (at most 64).
    #[serde(default)]
    #[param(minimum = 0, maximum = 64)]
    replicas: u32,
    /// The tenants it belongs to, `name@org`, comma separated.
    #[param(max_length = 2064, pattern = "^[A-Za-z0-9._@,-]*$")]
    tenants: Option<String>,
}

fn check_replicas(replicas: u32) -> Result<(), ApiError> {
    if replicas > MAX_REPLICAS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("replicas {replicas} is out of range 0..={MAX_REPLICAS}"),
        ));
    }
    Ok(())
}

/// The declared length of a body, if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Feed an upload's body to a blocking reader while `store` runs; once it
/// answers, let the rest of a refused body drain (bounded) so the client
/// reads the answer instead of a reset connection.
async fn with_body<T>(
    body: Body,
    store: impl AsyncFnOnce(locus_artifacts::pipe::StreamReader) -> T,
) -> T {
    let (tx, reader) = stream_reader();
    let forward = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut drained = 0u64;
        let mut storing = true;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) if storing => storing = tx.send(Ok(bytes)).await.is_ok(),
                Ok(bytes) => {
                    drained += bytes.len() as u64;
                    if drained > REFUSED_BODY_DRAIN {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    break;
                }
            }
        }
    });
    let result = store(reader).await;
    if tokio::time::timeout(std::time::Duration::from_secs(30), forward)
        .await
        .is_err()
    {
        tracing::debug!("an upload body was still arriving after the answer");
    }
    result
}

/// Upload an artifact. The body is its bytes, streamed (send
/// `Content-Length` so they are hashed while they arrive; no body is the
/// empty artifact). This node's copy is pinned. With `replicas = K` the
/// cluster keeps K copies, on distinct sites first; unless `wait=false`,
/// the answer comes only once `min(K, live nodes)` copies are stored and
/// fsynced on distinct nodes, pushed by this node (`copies` lists them;
/// `failures` says why any is missing).
#[utoipa::path(
    post,
    path = "/api/v1/artifacts",
    operation_id = "put_artifact",
    tag = "artifacts",
    params(PutQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The artifact's bytes"),
    responses(
        (status = 201, description = "Stored", body = PutReport),
        (status = 400, description = "Bad query, or a body that did not match its Content-Length", body = ErrorBody),
        (status = 507, description = "It does not fit in the store's disk budget", body = ErrorBody),
    )
)]
pub(crate) async fn put(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    check_replicas(q.replicas)?;
    let declared = declared_length(&headers);
    // The uploader's tenant owns it and is charged its size (at least a
    // byte when the length is not declared: a tenant at its limit stops).
    let tenant = caller.principal.tenant.clone();
    crate::tenants::check_quota(
        &node,
        &tenant,
        locus_access::Usage {
            storage_bytes: declared.unwrap_or(1).max(1),
            ..Default::default()
        },
    )
    .await?;
    let mut report = with_body(body, async |reader| {
        node.artifacts()
            .put(
                reader,
                declared,
                q.name,
                q.replicas,
                q.wait,
                Some(tenant.to_string()),
            )
            .await
    })
    .await
    .map_err(api_error)?;
    report.artifact = shown(&caller, node.access().org(), report.artifact);
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

/// Whether the caller reaches an artifact of `tenants` (each `name@org`):
/// an org admin of this node's org those of its org's tenants and those
/// of no tenant; anyone else those of its own tenant.
fn reaches_artifact(caller: &Caller, node_org: OrgId, tenants: &[String]) -> bool {
    let p = &caller.principal;
    let admin = p.role == Role::OrgAdmin && p.tenant.org == node_org;
    (admin && tenants.is_empty()) || tenants.iter().any(|t| reaches_one(caller, node_org, t))
}

/// Whether the caller reaches tenant `tenant` (`name@org`).
fn reaches_one(caller: &Caller, node_org: OrgId, tenant: &str) -> bool {
    tenant
        .parse::<TenantRef>()
        .is_ok_and(|t| caller.reaches_tenant(node_org, &t))
}

/// An artifact as the caller may see it: of its tenants, only those it
/// reaches are named.
fn shown(caller: &Caller, node_org: OrgId, mut view: ArtifactView) -> ArtifactView {
    view.tenants.retain(|t| reaches_one(caller, node_org, t));
    view
}

/// Refuse an artifact of another tenant: a read answers the same 404 as
/// an artifact nobody holds, a write 403. An artifact nobody knows is left
/// to the handler.
pub(crate) async fn guard(
    node: &Node,
    caller: &Caller,
    id: &ArtifactId,
    method: Method,
) -> Result<(), ApiError> {
    match node.artifacts().stat(id).await {
        Ok(view) => refuse_other(node, caller, &view, method),
        Err(_) => Ok(()),
    }
}

/// [`guard`] for an artifact already looked up.
fn refuse_other(
    node: &Node,
    caller: &Caller,
    view: &ArtifactView,
    method: Method,
) -> Result<(), ApiError> {
    let id = view.cid;
    if reaches_artifact(caller, node.access().org(), &view.tenants) {
        return Ok(());
    }
    if method == Method::GET {
        Err(api_error(locus_artifacts::ArtifactsError::NoHolder(id)))
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "artifact {id} belongs to another tenant than {}",
                caller.principal.tenant
            ),
        ))
    }
}

/// Store a copy of an artifact pushed by another node's durable put. The
/// bytes must hash to `cid`; the answer comes once the copy is fsynced.
#[utoipa::path(
    put,
    path = "/api/v1/artifacts/{cid}",
    operation_id = "put_artifact_copy",
    tag = "artifacts",
    params(("cid" = ArtifactId, Path, description = "The artifact's CID"), CopyQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The artifact's bytes"),
    responses(
        (status = 201, description = "Stored", body = ArtifactView),
        (status = 400, description = "Bad CID or query, or a body that did not match its Content-Length", body = ErrorBody),
        (status = 409, description = "The bytes do not hash to the CID", body = ErrorBody),
        (status = 507, description = "It does not fit in the store's disk budget", body = ErrorBody),
    )
)]
pub(crate) async fn put_copy(
    State(node): State<Arc<Node>>,
    Path(cid): Path<String>,
    query: Result<Query<CopyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_cid(&cid)?;
    let Query(q) = query.map_err(query_error)?;
    check_replicas(q.replicas)?;
    let declared = declared_length(&headers);
    let view = with_body(body, async |reader| {
        node.artifacts()
            .receive_copy(
                id,
                reader,
                declared,
                q.name,
                q.replicas,
                q.tenants
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
            .await
    })
    .await
    .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The artifacts this node holds, least recently used first.
#[utoipa::path(
    get,
    path = "/api/v1/artifacts",
    operation_id = "list_artifacts",
    tag = "artifacts",
    responses((status = 200, description = "Held artifacts", body = Vec<ArtifactView>))
)]
pub(crate) async fn list(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<ArtifactView>>, ApiError> {
    let org = node.access().org();
    let all = node.artifacts().list().await.map_err(api_error)?;
    Ok(Json(
        all.into_iter()
            .filter(|v| reaches_artifact(&caller, org, &v.tenants))
            .map(|v| shown(&caller, org, v))
            .collect(),
    ))
}

/// One artifact: size, name, pin, replica count and its live holders.
/// Known when this node or any live node holds it.
#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{cid}",
    operation_id = "stat_artifact",
    tag = "artifacts",
    params(("cid" = ArtifactId, Path, description = "The artifact's CID")),
    responses(
        (status = 200, description = "The artifact", body = ArtifactView),
        (status = 400, description = "Not an artifact CID", body = ErrorBody),
        (status = 404, description = "No live node holds it", body = ErrorBody),
    )
)]
pub(crate) async fn stat(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(cid): Path<String>,
) -> Result<Json<ArtifactView>, ApiError> {
    let id = parse_cid(&cid)?;
    let view = node.artifacts().stat(&id).await.map_err(api_error)?;
    refuse_other(&node, &caller, &view, Method::GET)?;
    Ok(Json(shown(&caller, node.access().org(), view)))
}

/// The bytes of an artifact held on this node. Supports one HTTP range
/// (`Range: bytes=FIRST-[LAST]` or `bytes=-SUFFIX`, answered with 206; a
/// range that cannot be used, or several, is ignored as RFC 9110 allows).
/// Fetch it first (`POST …/fetch`) when another node holds it.
#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{cid}/content",
    operation_id = "artifact_content",
    tag = "artifacts",
    params(
        ("cid" = ArtifactId, Path, description = "The artifact's CID"),
        ("Range" = Option<String>, Header, description = "One byte range"),
    ),
    responses(
        (status = 200, description = "The whole artifact", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Not an artifact CID", body = ErrorBody),
        (status = 404, description = "Not held on this node", body = ErrorBody),
        (status = 416, description = "The range starts past the end", body = ErrorBody),
    )
)]
pub(crate) async fn content(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_cid(&cid)?;
    guard(&node, &caller, &id, Method::GET).await?;
    let size = node.artifacts().open(&id).await.map_err(api_error)?.1;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            match parse_range(text, size) {
                Ok(r) => Some(r),
                Err(e @ RangeError::Unsatisfiable { .. }) => {
                    return Err(ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "range_not_satisfiable",
                        e.to_string(),
                    )
                    .with_details(serde_json::json!({ "size": size })));
                }
                // RFC 9110 §14.2: a range the server cannot use is ignored,
                // and the whole representation sent.
                Err(e) => {
                    tracing::debug!(error = %e, "ignoring a Range header");
                    None
                }
            }
        }
    };
    let span = range.clone().unwrap_or(0..size);
    let rx = node
        .artifacts()
        .read(&id, span.clone())
        .await
        .map_err(api_error)?;
    let mut resp = Response::new(body_of(rx));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{id}\"")) {
        h.insert(header::ETAG, etag);
    }
    if range.is_some() {
        if let Ok(cr) =
            HeaderValue::from_str(&format!("bytes {}-{}/{size}", span.start, span.end - 1))
        {
            h.insert(header::CONTENT_RANGE, cr);
        }
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

/// A span of an artifact to encode.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SpanQuery {
    /// First byte (a multiple of 16384).
    #[param(minimum = 0)]
    start: u64,
    /// Byte after the last (at most the size).
    #[param(minimum = 1)]
    end: u64,
}

/// The verified encoding of a span, as peers fetch it: the bytes
/// interleaved with the BLAKE3 tree hashes that prove them (bao, 16 KiB
/// chunk groups), so the receiver checks every group against the CID as it
/// streams.
#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{cid}/bao",
    operation_id = "artifact_bao",
    tag = "artifacts",
    params(("cid" = ArtifactId, Path, description = "The artifact's CID"), SpanQuery),
    responses(
        (status = 200, description = "The bao encoding of the span", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Not an artifact CID, or a span outside it", body = ErrorBody),
        (status = 404, description = "Not held on this node", body = ErrorBody),
    )
)]
pub(crate) async fn bao(
    State(node): State<Arc<Node>>,
    Path(cid): Path<String>,
    query: Result<Query<SpanQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_cid(&cid)?;
    let Query(q) = query.map_err(query_error)?;
    let rx = node
        .artifacts()
        .encode(&id, q.start..q.end)
        .await
        .map_err(api_error)?;
    let mut resp = Response::new(body_of(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// Options of a fetch.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FetchQuery {
    /// Stream progress as JSON lines (one `FetchProgress` every 200 ms and
    /// at the end) instead of one answer at the end.
    #[serde(default)]
    progress: bool,
}

/// Fetch an artifact to this node from the nearest holders, verifying
/// every chunk; resumes what an interrupted fetch left. Also the prefetch
/// a provider runs before a contract starts. Answers at once when it is
/// already here.
#[utoipa::path(
    post,
    path = "/api/v1/artifacts/{cid}/fetch",
    operation_id = "fetch_artifact",
    tag = "artifacts",
    params(("cid" = ArtifactId, Path, description = "The artifact's CID"), FetchQuery),
    responses(
        (status = 200, description = "Held here now (with progress=true: JSON lines of FetchProgress)", content(
            (FetchReport = "application/json"),
            (FetchProgress = "application/x-ndjson"),
        )),
        (status = 400, description = "Not an artifact CID", body = ErrorBody),
        (status = 404, description = "No live node holds it", body = ErrorBody),
        (status = 502, description = "Every holder failed or sent corrupt data", body = ErrorBody),
        (status = 507, description = "It does not fit in the store's disk budget", body = ErrorBody),
    )
)]
pub(crate) async fn fetch(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(cid): Path<String>,
    query: Result<Query<FetchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_cid(&cid)?;
    guard(&node, &caller, &id, Method::POST).await?;
    let Query(q) = query.map_err(query_error)?;
    if !q.progress {
        let report = node
            .artifacts()
            .fetch_and_wait(id)
            .await
            .map_err(api_error)?;
        return Ok(Json(report).into_response());
    }
    let rx = node.artifacts().fetch(id).await;
    let lines = futures_util::stream::unfold((rx, false), |(mut rx, ended)| async move {
        if ended {
            return None;
        }
        let p: FetchProgress = rx.borrow_and_update().clone();
        let done = p.done.is_some();
        if !done {
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
        let mut line = serde_json::to_vec(&p).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(line)), (rx, done)))
    });
    let mut resp = Response::new(Body::from_stream(lines));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// Pin an artifact held here: it is never collected on this node.
#[utoipa::path(
    post,
    path = "/api/v1/artifacts/{cid}/pin",
    operation_id = "pin_artifact",
    tag = "artifacts",
    params(("cid" = ArtifactId, Path, description = "The artifact's CID")),
    responses(
        (status = 200, description = "Pinned", body = ArtifactView),
        (status = 400, description = "Not an artifact CID", body = ErrorBody),
        (status = 404, description = "Not held on this node", body = ErrorBody),
    )
)]
pub(crate) async fn pin(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(cid): Path<String>,
) -> Result<Json<ArtifactView>, ApiError> {
    let id = parse_cid(&cid)?;
    guard(&node, &caller, &id, Method::POST).await?;
    let view = node
        .artifacts()
        .set_pinned(&id, true)
        .await
        .map_err(api_error)?;
    Ok(Json(shown(&caller, node.access().org(), view)))
}

/// Unpin an artifact held here: it may be collected once no workload uses
/// it and enough other copies exist.
#[utoipa::path(
    post,
    path = "/api/v1/artifacts/{cid}/unpin",
    operation_id = "unpin_artifact",
    tag = "artifacts",
    params(("cid" = ArtifactId, Path, description = "The artifact's CID")),
    responses(
        (status = 200, description = "Unpinned", body = ArtifactView),
        (status = 400, description = "Not an artifact CID", body = ErrorBody),
        (status = 404, description = "Not held on this node", body = ErrorBody),
    )
)]
pub(crate) async fn unpin(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(cid): Path<String>,
) -> Result<Json<ArtifactView>, ApiError> {
    let id = parse_cid(&cid)?;
    guard(&node, &caller, &id, Method::POST).await?;
    let view = node
        .artifacts()
        .set_pinned(&id, false)
        .await
        .map_err(api_error)?;
    Ok(Json(shown(&caller, node.access().org(), view)))
}

/// Options of a collection.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GcQuery {
    /// Collect every collectable artifact, not only down to the budget.
    #[serde(default)]
    all: bool,
}

/// Collect artifacts: unpinned, used by no workload here, not needed here
/// as a replica; least recently used first, until the store is within its
/// disk budget (or all of them with `all=true`).
#[utoipa::path(
    post,
    path = "/api/v1/artifacts/gc",
    operation_id = "collect_artifacts",
    tag = "artifacts",
    params(GcQuery),
    responses(
        (status = 200, description = "What was removed", body = GcReport),
        (status = 400, description = "Bad query", body = ErrorBody),
    )
)]
pub(crate) async fn gc(
    State(node): State<Arc<Node>>,
    query: Result<Query<GcQuery>, QueryRejection>,
) -> Result<Json<GcReport>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    node.artifacts()
        .gc(q.all)
        .await
        .map(Json)
        .map_err(api_error)
}

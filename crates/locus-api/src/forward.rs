//! One path for every call on a record another node owns (a workload, a
//! thing): answer here when this node owns it, else forward the call once
//! to the owner's API and stream its answer back. A forwarded call that
//! misses (the record moved meanwhile) is answered 409 `moved`, never
//! forwarded again, so a call crosses at most one hop.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use locus_agent::Node;
use locus_core::NodeId;

use crate::error::ApiError;

/// Header set on a call forwarded to the owner.
pub(crate) const FORWARDED: &str = "x-locus-forwarded";

/// Where a record is, as its service located it.
pub(crate) enum Owner<T> {
    /// This node owns it: the call is answered here, with `T`.
    Here(T),
    /// Another node does. `what` names the record in errors ("workload
    /// 1a2b…"); `url` is the same call on the owner's API.
    There {
        what: String,
        owner: NodeId,
        url: String,
    },
}

/// The call as received: what is sent again when it is forwarded.
pub(crate) struct Call<'a> {
    node: &'a Node,
    operation: locus_access::Operation,
    method: Method,
    headers: &'a HeaderMap,
    body: Bytes,
}

impl<'a> Call<'a> {
    pub(crate) fn new(
        node: &'a Node,
        operation: locus_access::Operation,
        method: Method,
        headers: &'a HeaderMap,
        body: Bytes,
    ) -> Call<'a> {
        Call {
            node,
            operation,
            method,
            headers,
            body,
        }
    }
}

/// The caller's token narrowed to `owner` and the operation, as the
/// `Authorization` value of a forwarded call: the owner checks it as any
/// node would, and it can be replayed neither against another node nor
/// for another operation.
pub(crate) fn narrowed_auth(
    node: &Node,
    headers: &HeaderMap,
    owner: NodeId,
    operation: locus_access::Operation,
) -> Result<Option<String>, ApiError> {
    let Some(token) = crate::auth::bearer(headers) else {
        return Ok(None);
    };
    node.access()
        .narrow_for(token, owner, operation)
        .map(|t| Some(format!("Bearer {t}")))
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                format!("the token cannot be narrowed to node {owner}: {e}"),
            )
        })
}

/// The record when this node owns it (`Ok`), else the owner's answer
/// (`Err`), which the handler returns as it is.
pub(crate) async fn resolve<T>(
    owner: Owner<T>,
    call: Call<'_>,
) -> Result<Result<T, Response>, ApiError> {
    match owner {
        Owner::Here(t) => Ok(Ok(t)),
        Owner::There { what, owner, url } => {
            if call.headers.contains_key(FORWARDED) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "moved",
                    format!("{what} moved to node {owner} while the call was forwarded; retry"),
                ));
            }
            let auth = narrowed_auth(call.node, call.headers, owner, call.operation)?;
            forward(call.method, &url, call.headers, auth, call.body)
                .await
                .map(Err)
        }
    }
}

/// Send the call to `url` (marked as forwarded) and stream the answer back
/// with its status and content type.
pub(crate) async fn forward(
    method: Method,
    url: &str,
    headers: &HeaderMap,
    auth: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // One client (and its connection pool) for every forwarded call.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let mut req = CLIENT
        .get_or_init(reqwest::Client::new)
        .request(method, url)
        .header(FORWARDED, "1")
        .body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "owner_unreachable",
            format!("the node that owns it did not answer: {e}"),
        )
    })?;
    let status = resp.status();
    let mut out = Response::builder().status(status.as_u16());
    if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
        out = out.header(header::CONTENT_TYPE, ct.as_bytes());
    }
    out.body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "owner_unreachable", e.to_string()))
}

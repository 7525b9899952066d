//! Node-only routes accept only calls signed by a node of the cluster.
//!
//! The routes whose operation is node-to-node in the catalogue
//! (`locus_access::Operation::scope`: handovers, reading imports, span
//! fetches, pushed artifact copies) are checked here before their
//! handler: the five `locus-*` headers of `locus_access::request` must be
//! there, the date within ±60 s of this node's clock, the signer a node
//! of an admitted org (the certificate it published through the fabric
//! chains to an org of the org log and is not revoked), the signature
//! over method, path and
//! query, date, nonce and body digest valid, and the nonce new. A refusal
//! is a 401 naming the reason, counted in
//! `locus_node_calls_refused_total{reason}`.
//!
//! The body digest is of the body as received, read whole (these bodies
//! are bounded: JSON of at most [`MAX_SIGNED_BODY`]), except for a pushed
//! artifact copy: its body is the artifact itself, streamed and of any
//! size, and its CID already names its BLAKE3 digest, so the signature
//! must cover exactly that digest and the handler, which refuses bytes
//! that do not hash to the CID (409), checks the body against it.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ed25519_dalek::VerifyingKey;
use locus_access::request::{self, ReplayGuard, RequestError, RequestSignature};
use locus_access::{Operation, PeerError, Scope};
use locus_agent::Node;
use locus_core::{ArtifactId, NodeId};

use crate::error::ApiError;

/// Largest body of a node-only call read whole to check its digest (the
/// JSON of a handover or of an import batch); a pushed artifact copy is
/// streamed and not bounded by this.
pub(crate) const MAX_SIGNED_BODY: usize = 8 << 20;

/// What the check needs: the node (its fabric and metrics) and the nonces
/// seen within the skew window. The guard is the one piece of state the
/// API keeps: it lives as long as the router and no longer.
#[derive(Clone)]
pub(crate) struct NodeCalls {
    node: Arc<Node>,
    guard: Arc<Mutex<ReplayGuard>>,
}

impl NodeCalls {
    pub(crate) fn new(node: Arc<Node>) -> NodeCalls {
        NodeCalls {
            node,
            guard: Arc::new(Mutex::new(ReplayGuard::new())),
        }
    }
}

/// The operation of a request when it is node-to-node.
fn node_only(request: &Request) -> Option<Operation> {
    let path = request.extensions().get::<MatchedPath>()?.as_str();
    Operation::for_route(request.method().as_str(), path)
        .filter(|op| op.scope() == Scope::NodeToNode)
}

/// Why a call was refused: the label of the counter, the code and message
/// of the 401.
struct Refusal {
    reason: &'static str,
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: String) -> Refusal {
        Refusal {
            reason,
            status: StatusCode::UNAUTHORIZED,
            message,
        }
    }

    fn of(e: RequestError) -> Refusal {
        match e {
            RequestError::Replay { .. } => {
                Refusal::new("replayed_nonce", format!("replayed nonce: {e}"))
            }
            RequestError::StaleDate { .. } => Refusal::new(
                "stale_date",
                format!(
                    "date outside the ±{} s window: {e}",
                    request::CLOCK_SKEW_SECS
                ),
            ),
            RequestError::UnknownNode(node) => Refusal::new(
                "unknown_node",
                format!("unknown node {node}: not a member of this node's cluster"),
            ),
            RequestError::GuardFull => Refusal {
                reason: "busy",
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            },
            RequestError::BadHeader { .. }
            | RequestError::PathTooLong { .. }
            | RequestError::DigestMismatch
            | RequestError::BadSignature(_) => {
                Refusal::new("bad_signature", format!("bad signature: {e}"))
            }
        }
    }
}

/// Let a node-only call through only when a known node signed it; every
/// other route passes untouched.
pub(crate) async fn check(
    State(calls): State<NodeCalls>,
    request: Request,
    next: Next,
) -> Response {
    let Some(op) = node_only(&request) else {
        return next.run(request).await;
    };
    match verify(&calls, op, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => {
            calls
                .node
                .metrics()
                .node_calls_refused
                .with_label_values(&[refusal.reason])
                .inc();
            tracing::warn!(operation = %op, reason = refusal.reason, message = %refusal.message, "node-to-node call refused");
            ApiError::new(refusal.status, refusal.reason, refusal.message)
                .with_details(serde_json::json!({ "reason": refusal.reason }))
                .into_response()
        }
    }
}

async fn verify(calls: &NodeCalls, op: Operation, request: Request) -> Result<Request, Refusal> {
    let headers = request.headers();
    let Some(sig) =
        RequestSignature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
    else {
        return Err(Refusal::new(
            "unsigned",
            format!(
                "unsigned node-to-node call: {} {} is a node-only route ({op}); it needs the \
                 headers {}, {}, {}, {} and {}",
                request.method(),
                request.uri().path(),
                request::HEADER_NODE,
                request::HEADER_DATE,
                request::HEADER_NONCE,
                request::HEADER_DIGEST,
                request::HEADER_SIGNATURE,
            ),
        ));
    };
    let method = request.method().as_str().to_owned();
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    // The key the caller claims to sign with: from its certificate, as
    // the fabric brought it or as the call carries it.
    let carried = headers
        .get(request::HEADER_CERT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let key = match sig.node.parse::<NodeId>() {
        Ok(id) => known_key(&calls.node, id, carried.as_deref())?,
        Err(_) => None,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (request, digest) = if op == Operation::ArtifactReplicate {
        // The body is the artifact: its digest is the CID's.
        let id = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .and_then(|cid| cid.parse::<ArtifactId>().ok())
            .ok_or_else(|| {
                Refusal::new(
                    "bad_signature",
                    "bad signature: the path names no artifact CID the signature could cover"
                        .to_owned(),
                )
            })?;
        (request, *id.digest())
    } else {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_SIGNED_BODY)
            .await
            .map_err(|e| Refusal {
                reason: "too_large",
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the body of a node-to-node call is read whole, at most {MAX_SIGNED_BODY} bytes: {e}"
                ),
            })?;
        let digest = request::body_digest(&bytes);
        (Request::from_parts(parts, Body::from(bytes)), digest)
    };
    let mut guard = calls.guard.lock().unwrap_or_else(|e| e.into_inner());
    request::verify_request_digest(
        &sig,
        &method,
        &path_and_query,
        &digest,
        |_| key,
        now,
        &mut guard,
    )
    .map_err(Refusal::of)?;
    drop(guard);
    Ok(request)
}

/// The key of node `id` when it is a node of an admitted org: its
/// certificate, published through the fabric, chains to an org of the
/// org log and is not revoked.
fn known_key(
    node: &Node,
    id: NodeId,
    carried: Option<&str>,
) -> Result<Option<VerifyingKey>, Refusal> {
    match node.access().peer_or_carried(id, carried) {
        Ok(peer) => Ok(Some(peer.key)),
        Err(PeerError::NoCertificate(_)) => Ok(None),
        Err(e) => Err(Refusal::new(e.reason(), format!("untrusted node: {e}"))),
    }
}

/// Say in the OpenAPI document what the check does: on every node-only
/// operation, the five signature headers and the 401 (and the 503 of a
/// full replay guard).
pub(crate) fn document(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::Parameter;
    use utoipa::openapi::response::Response as ApiResponse;

    let header = |name: &str, what: &str| -> Option<Parameter> {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "in": "header",
            "required": false,
            "description": format!(
                "{what}. Node-to-node calls only: a call without all five `locus-*` \
                 signature headers, or whose signature does not verify, is refused 401."
            ),
            "schema": { "type": "string" },
        }))
        .ok()
    };
    let params: Vec<Parameter> = [
        header(request::HEADER_NODE, "Id of the calling node"),
        header(
            request::HEADER_DATE,
            "When the call was signed, unix seconds (within ±60 s of the receiver's clock)",
        ),
        header(
            request::HEADER_NONCE,
            "16 random bytes, 32 hex digits; a nonce is accepted once",
        ),
        header(
            request::HEADER_DIGEST,
            "BLAKE3 of the body, 64 hex digits (of a pushed artifact copy: the digest its CID names)",
        ),
        header(
            request::HEADER_SIGNATURE,
            "ed25519 signature by the calling node's key of `locus/request/v1`, node, method, \
             path and query, date, nonce and digest, one a line; 128 hex digits",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let error = |description: &str| -> Option<ApiResponse> {
        serde_json::from_value(serde_json::json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
        }))
        .ok()
    };
    let refused = error(
        "Not a call signed by a node of this cluster: unsigned, a replayed nonce, a date \
         outside the ±60 s window, an unknown node or a bad signature (`code` says which)",
    );
    let busy = error("Too many recent node calls to remember their nonces, or no fabric; retry");
    for (path, item) in api.paths.paths.iter_mut() {
        for (method, op) in [
            ("GET", item.get.as_mut()),
            ("PUT", item.put.as_mut()),
            ("POST", item.post.as_mut()),
            ("DELETE", item.delete.as_mut()),
            ("PATCH", item.patch.as_mut()),
        ] {
            let Some(op) = op else { continue };
            if Operation::for_route(method, path).is_none_or(|o| o.scope() != Scope::NodeToNode) {
                continue;
            }
            op.parameters
                .get_or_insert_with(Vec::new)
                .extend(params.iter().cloned().map(RefOr::T));
            if let Some(r) = &refused {
                op.responses
                    .responses
                    .insert("401".to_owned(), RefOr::T(r.clone()));
            }
            if let Some(r) = &busy {
                op.responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| RefOr::T(r.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_only_route_is_documented_as_signed() {
        let api = crate::openapi();
        let json = serde_json::to_value(&api).unwrap();
        let mut seen = 0;
        for op in Operation::ALL {
            if op.scope() != Scope::NodeToNode {
                continue;
            }
            let Some(route) = op.route() else { continue };
            let o = &json["paths"][route.path][route.method.to_ascii_lowercase()];
            assert!(
                o.is_object(),
                "{} {} is in the document",
                route.method,
                route.path
            );
            assert!(o["responses"]["401"].is_object(), "{op}: 401 documented");
            let names: Vec<&str> = o["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for h in [
                request::HEADER_NODE,
                request::HEADER_DATE,
                request::HEADER_NONCE,
                request::HEADER_DIGEST,
                request::HEADER_SIGNATURE,
            ] {
                assert!(names.contains(&h), "{op}: header {h} documented");
            }
            seen += 1;
        }
        assert_eq!(
            seen, 7,
            "handovers (2), import, span, copy, market proposal, market settlement"
        );
        // A user route takes a token instead of a signature.
        let post = &json["paths"]["/api/v1/artifacts"]["post"];
        assert!(
            post["parameters"]
                .as_array()
                .is_none_or(|p| p.iter().all(|p| p["name"] != request::HEADER_SIGNATURE))
        );
        assert_eq!(post["security"][0]["bearer"], serde_json::json!([]));
    }
}

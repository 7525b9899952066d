//! Every user call carries a token, checked here before its handler.
//!
//! The operation of the route (`locus_access::Operation::for_route`)
//! decides: public operations (health, metrics, enrollment with a join
//! token) pass; node-to-node operations are [`crate::node_calls`]'s; every
//! other one needs `Authorization: Bearer <token>`, authorized by this
//! node's trust (`locus_trust::access::Access::authorize`) offline. A
//! missing, malformed, forged, expired or revoked token, or one whose
//! issuer is not a node of an admitted org, is a 401; a valid token whose
//! role or narrowing does not allow the operation is a 403. The
//! [`Caller`] is left in the request's extensions for the handler.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use locus_access::{Denied, Operation, Principal, Scope};
use locus_agent::Node;
use locus_trust::audit::AuditEntry;

use crate::error::ApiError;

/// Who called, once authorized.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    /// The operation it called.
    pub(crate) operation: Operation,
}

impl Caller {
    /// The tenant name the caller's records carry on a node of org
    /// `node_org`: its tenant's name in its own org; for a tenant of
    /// another org (granted use of the node), the name qualified with its
    /// org (`name.orgid`), so that it never meets a tenant of the node's
    /// org of the same name.
    pub(crate) fn record_tenant(&self, node_org: locus_access::OrgId) -> String {
        let t = &self.principal.tenant;
        if t.org == node_org {
            t.name.get().clone()
        } else {
            format!("{}.{}", t.name.get(), t.org)
        }
    }

    /// Whether the caller reaches the records of tenant `tenant` on a node
    /// of org `node_org`: its own tenant's, or every tenant's of the
    /// node's org for an org admin of it.
    pub(crate) fn reaches(&self, node_org: locus_access::OrgId, tenant: &str) -> bool {
        let p = &self.principal;
        (p.role == locus_access::Role::OrgAdmin && p.tenant.org == node_org)
            || self.record_tenant(node_org) == tenant
    }

    /// Whether the caller reaches the records of `tenant` (in full) on a
    /// node of org `node_org`: its own tenant's, and every tenant's of the
    /// node's org for an org admin of it.
    pub(crate) fn reaches_tenant(
        &self,
        node_org: locus_access::OrgId,
        tenant: &locus_access::TenantRef,
    ) -> bool {
        let p = &self.principal;
        *tenant == p.tenant
            || (p.role == locus_access::Role::OrgAdmin
                && p.tenant.org == node_org
                && tenant.org == node_org)
    }

    /// Refuse a record of another tenant: a read answers `hidden`, the
    /// same 404 as a record that does not exist, a write 403.
    pub(crate) fn may_touch(
        &self,
        node_org: locus_access::OrgId,
        tenant: &str,
        method: &axum::http::Method,
        what: &str,
        hidden: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        if self.reaches(node_org, tenant) {
            return Ok(());
        }
        if *method == axum::http::Method::GET {
            Err(hidden())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{what} belongs to another tenant than {}",
                    self.principal.tenant
                ),
            ))
        }
    }

    /// The tenant a new record of the caller belongs to: the one it names
    /// when the caller is an org admin of this node's org, else its own
    /// ([`Caller::record_tenant`]).
    pub(crate) fn owning_tenant(
        &self,
        node_org: locus_access::OrgId,
        named: &locus_access::TenantName,
    ) -> Result<locus_access::TenantName, ApiError> {
        let p = &self.principal;
        if p.role == locus_access::Role::OrgAdmin && p.tenant.org == node_org {
            return Ok(named.clone());
        }
        locus_access::TenantName::try_from(self.record_tenant(node_org)).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_tenant",
                format!("tenant {} cannot own records on this node: {e}", p.tenant),
            )
        })
    }
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The status and code of a refusal.
fn refusal(denied: &Denied) -> (StatusCode, &'static str) {
    match denied {
        Denied::Malformed(_) => (StatusCode::UNAUTHORIZED, "bad_token"),
        Denied::UnknownIssuer(_) | Denied::IssuerOfAnotherOrg { .. } => {
            (StatusCode::UNAUTHORIZED, "unknown_issuer")
        }
        Denied::ForgedSignature(_) => (StatusCode::UNAUTHORIZED, "forged_token"),
        Denied::Expired { .. } => (StatusCode::UNAUTHORIZED, "expired_token"),
        Denied::Revoked(_) => (StatusCode::UNAUTHORIZED, "revoked_token"),
        Denied::Limits(_) => (StatusCode::UNAUTHORIZED, "bad_token"),
        _ => (StatusCode::FORBIDDEN, "forbidden"),
    }
}

/// Whether calls of `op` go to the audit trail: every mutating call of a
/// user, or of a machine enrolling. Not the calls between nodes (signed by
/// node keys; what they change is in the history of the workload or thing
/// they move) nor readings sent in (sealed themselves, one by one).
fn audited(op: Operation) -> bool {
    op.mutating() && op.scope() != Scope::NodeToNode && op != Operation::ReadingIngest
}

/// Who a call came from, as the audit trail records it.
struct Who {
    who: String,
    org: Option<String>,
    role: Option<String>,
    /// Refused for its credential, before its handler.
    refused: bool,
}

impl Who {
    fn anonymous(refused: bool) -> Who {
        Who {
            who: "anonymous".to_owned(),
            org: None,
            role: None,
            refused,
        }
    }

    fn of(p: &Principal) -> Who {
        Who {
            who: format!("{}@{}", p.user.get(), p.tenant.name.get()),
            org: Some(p.tenant.org.to_string()),
            role: Some(p.role.as_str().to_owned()),
            refused: false,
        }
    }
}

/// Let a user call through only with a token that allows it, and record
/// every mutating call, allowed or refused, in the audit trail.
pub(crate) async fn check(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let op = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| Operation::for_route(request.method().as_str(), p.as_str()));
    let Some(op) = op else {
        // The OpenAPI document and the docs; unknown paths are 404.
        return next.run(request).await;
    };
    let audit = audited(op).then(|| {
        (
            request.method().as_str().to_owned(),
            request.uri().path_and_query().map_or_else(
                || request.uri().path().to_owned(),
                |p| p.as_str().to_owned(),
            ),
        )
    });
    let (response, who) = admit(&node, op, request, next).await;
    if let Some((method, path)) = audit {
        let status = response.status();
        node.audit().record(AuditEntry {
            operation: op.name().to_owned(),
            who: who.who,
            org: who.org,
            role: who.role,
            method,
            path,
            outcome: if who.refused { "refused" } else { "allowed" }.to_owned(),
            status: status.as_u16(),
        });
    }
    response
}

async fn admit(
    node: &Arc<Node>,
    op: Operation,
    mut request: Request,
    next: Next,
) -> (Response, Who) {
    match op.scope() {
        // Metrics behind a token when so configured (any role reads them).
        Scope::Public if op == Operation::NodeMetrics && !node.access().public_metrics() => {}
        Scope::Public => return (next.run(request).await, Who::anonymous(false)),
        Scope::NodeToNode => {
            let signer = request
                .headers()
                .get(locus_access::request::HEADER_NODE)
                .and_then(|v| v.to_str().ok())
                .map(|n| format!("node {n}"));
            let response = next.run(request).await;
            let refused = response.status() == StatusCode::UNAUTHORIZED;
            let who = Who {
                who: signer.unwrap_or_else(|| "anonymous".to_owned()),
                org: None,
                role: None,
                refused,
            };
            return (response, who);
        }
        _ => {}
    }
    let Some(token) = bearer(request.headers()) else {
        if !node.access().requires_tokens() {
            let principal = node.access().local_admin();
            let who = Who::of(&principal);
            request.extensions_mut().insert(Caller {
                principal,
                operation: op,
            });
            return (next.run(request).await, who);
        }
        let response = deny(
            node,
            StatusCode::UNAUTHORIZED,
            "no_token",
            format!(
                "{op} needs a token: send `Authorization: Bearer <token>` (on the node's own \
                 machine `locus` finds the admin token in the data dir; elsewhere `locus login`)"
            ),
        );
        return (response, Who::anonymous(true));
    };
    match node.access().authorize(token, op, None) {
        Ok(principal) => {
            let who = Who::of(&principal);
            request.extensions_mut().insert(Caller {
                principal,
                operation: op,
            });
            (next.run(request).await, who)
        }
        Err(denied) => {
            let (status, code) = refusal(&denied);
            // Who the token says it is, for the trail: checked when the
            // refusal came after its signatures were.
            let verified = !matches!(
                denied,
                Denied::Malformed(_) | Denied::UnknownIssuer(_) | Denied::ForgedSignature(_)
            );
            let who = match locus_access::inspect(token) {
                Ok(i) => Who {
                    who: format!(
                        "{}@{}{}",
                        i.claims.user.get(),
                        i.claims.tenant.name.get(),
                        if verified { "" } else { " (claimed)" }
                    ),
                    org: Some(i.claims.tenant.org.to_string()),
                    role: None,
                    refused: true,
                },
                Err(_) => Who::anonymous(true),
            };
            (deny(node, status, code, format!("{op}: {denied}")), who)
        }
    }
}

fn deny(node: &Node, status: StatusCode, code: &'static str, message: String) -> Response {
    node.metrics().api_denied.with_label_values(&[code]).inc();
    let mut response = ApiError::new(status, code, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"locus\""),
        );
    }
    response
}

/// Say in the OpenAPI document which operations take a token: the bearer
/// scheme, and on each of them the 401 and 403 answers.
pub(crate) fn document(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{RefOr, Response as ApiResponse};

    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".to_owned(),
        RefOr::T(SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("Biscuit")
                .description(Some(
                    "A Biscuit token minted by a node of the org (`locus token create`), \
                     or narrowed from one offline (`locus token attenuate`).",
                ))
                .build(),
        )),
    );
    let error = |what: &str| -> RefOr<ApiResponse> {
        let value = serde_json::json!({
            "description": what,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        });
        serde_json::from_value(value).map_or_else(|_| RefOr::T(ApiResponse::new(what)), RefOr::T)
    };
    for (path, item) in api.paths.paths.iter_mut() {
        for (method, op) in [
            ("GET", item.get.as_mut()),
            ("POST", item.post.as_mut()),
            ("PUT", item.put.as_mut()),
            ("PATCH", item.patch.as_mut()),
            ("DELETE", item.delete.as_mut()),
        ] {
            let (Some(op), Some(operation)) = (op, Operation::for_route(method, path)) else {
                continue;
            };
            if matches!(operation.scope(), Scope::Public | Scope::NodeToNode) {
                continue;
            }
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            let responses = &mut op.responses.responses;
            responses.entry("401".to_owned()).or_insert_with(|| {
                error("No token, or a malformed, forged, expired or revoked one, or one whose issuer this node does not trust")
            });
            responses.entry("403".to_owned()).or_insert_with(|| {
                error("The token's role, tenant or narrowing does not allow this operation")
            });
        }
    }
}

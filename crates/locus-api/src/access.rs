//! Handlers of access itself: who am I, mint a token, revoke, the org
//! log, join tokens and enrollment. Each is thin: the rules are
//! `locus-access`'s, the keys and records `locus_trust::access`'s.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use locus_access::cert::NodeRole;
use locus_access::revocation::RevocationKind;
use locus_access::tenant::{Role, TenantName, TenantRef, UserName};
use locus_access::token::Claims;
use locus_access::{EnrollRequest, JoinError};
use locus_agent::Node;
use locus_core::NodeId;
use locus_trust::access::AccessError;
use locus_trust::credentials::EnrollError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, json_body};

/// Default lifetime of a minted token.
pub const DEFAULT_TOKEN_SECS: u64 = 24 * 3600;
/// Longest lifetime of a minted token: what a node cut off from the
/// fabric can miss of a revocation is bounded by it.
pub const MAX_TOKEN_SECS: u64 = 30 * 24 * 3600;
/// Default lifetime of a join token.
pub const DEFAULT_JOIN_SECS: u64 = 3600;
/// Longest lifetime of a join token.
pub const MAX_JOIN_SECS: u64 = 7 * 24 * 3600;

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who a token speaks for.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Whoami {
    user: String,
    /// The tenant's name.
    tenant: String,
    /// The tenant's org (20 hex digits).
    org: String,
    role: String,
    /// The node that minted the token.
    issuer: NodeId,
    /// The org of the node answering.
    node_org: String,
}

/// Who the token speaks for, as this node authorized it.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "access",
    operation_id = "whoami",
    responses((status = 200, description = "The caller", body = Whoami))
)]
pub(crate) async fn whoami(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
) -> Json<Whoami> {
    let p = caller.principal;
    Json(Whoami {
        user: p.user.get().to_owned(),
        tenant: p.tenant.name.get().clone(),
        org: p.tenant.org.to_string(),
        role: p.role.as_str().to_owned(),
        issuer: p.issuer,
        node_org: node.access().org().to_string(),
    })
}

/// Filters of the audit trail.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// From this time (unix ms, included; default 0).
    #[serde(default)]
    from_ms: i64,
    /// To this time (unix ms, excluded; default: no end).
    #[serde(default = "no_end")]
    to_ms: i64,
    /// At most this many entries, oldest first (1..=10000, default 1000).
    #[serde(default = "default_audit_limit")]
    #[param(minimum = 1, maximum = 10000)]
    limit: u32,
}

fn no_end() -> i64 {
    i64::MAX
}

fn default_audit_limit() -> u32 {
    1000
}

/// One audited call, with its place in the seal log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AuditView {
    /// Its seq in the node's seal log (`locus verify` checks it in an
    /// exported bundle).
    seq: u64,
    /// When the node sealed it (unix ms).
    time_ms: i64,
    operation: String,
    /// `user@tenant`, `node <id>` or `anonymous`.
    who: String,
    org: Option<String>,
    role: Option<String>,
    /// Method, path and query: `POST /api/v1/workloads`.
    request: String,
    /// `allowed` or `refused`.
    outcome: String,
    status: u16,
}

/// The audit trail: every mutating call this node answered, who made it,
/// allowed or refused, sealed into the node's signed log (export it with
/// `GET /api/v1/readings/bundle` and check it offline with `locus verify`).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "access",
    operation_id = "list_audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audited calls, oldest first", body = Vec<AuditView>),
        (status = 400, description = "Bad query", body = ErrorBody),
    )
)]
pub(crate) async fn audit(
    State(node): State<Arc<Node>>,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let axum::extract::Query(q) = query.map_err(crate::error::query_error)?;
    if q.limit == 0 || q.limit > 10_000 {
        return Err(bad(
            "invalid_query",
            format!("limit {} is out of range 1..=10000", q.limit),
        ));
    }
    let found = node
        .readings()
        .query(
            Some(locus_trust::audit::AUDIT_THING.to_owned()),
            q.from_ms,
            q.to_ms,
            q.limit,
        )
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(
        found
            .into_iter()
            .filter_map(|r| {
                let locus_iot::Value::String(body) = r.reading.value() else {
                    return None;
                };
                let e: locus_trust::audit::AuditEntry = serde_json::from_str(body).ok()?;
                Some(AuditView {
                    seq: r.seq,
                    time_ms: r.reading.time_ms(),
                    operation: e.operation,
                    who: e.who,
                    org: e.org,
                    role: e.role,
                    request: format!("{} {}", e.method, e.path),
                    outcome: e.outcome,
                    status: e.status,
                })
            })
            .collect(),
    ))
}

/// A token to mint (or a user to add, with its first token).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintRequest {
    /// The user it speaks for (1–63 letters, digits, `.`, `_`, `-`, `@`).
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,63}$")]
    pub(crate) user: String,
    /// `org_admin`, `tenant_admin`, `operator` or `viewer`; at most the
    /// caller's own role.
    #[schema(pattern = "^(org_admin|tenant_admin|operator|viewer)$")]
    pub(crate) role: String,
    /// A tenant of the caller's org (default: the caller's tenant); only
    /// an org admin mints for (or adds a user to) another tenant.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,63}$")]
    pub(crate) tenant: Option<String>,
    /// Lifetime in seconds (default 86400, at most 2592000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2592000)]
    pub(crate) ttl_secs: Option<u64>,
}

/// A minted token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Minted {
    pub(crate) token: String,
    pub(crate) user: String,
    pub(crate) tenant: String,
    pub(crate) org: String,
    pub(crate) role: String,
    /// Unix seconds, excluded.
    pub(crate) expires_at: u64,
}

pub(crate) fn bad(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

pub(crate) fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::NoOrgKey(_) => {
            ApiError::new(StatusCode::CONFLICT, "no_org_key", e.to_string())
        }
        AccessError::Enroll(EnrollError::Refused(JoinError::UsedUp { .. })) => {
            ApiError::new(StatusCode::FORBIDDEN, "join_token_used", e.to_string())
        }
        AccessError::Enroll(EnrollError::Refused(JoinError::Expired { .. })) => {
            ApiError::new(StatusCode::FORBIDDEN, "join_token_expired", e.to_string())
        }
        AccessError::Enroll(EnrollError::Refused(_)) => {
            ApiError::new(StatusCode::FORBIDDEN, "bad_join_token", e.to_string())
        }
        AccessError::Revoke(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_revocation", e.to_string())
        }
        AccessError::Publish(_) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "cannot_publish",
            e.to_string(),
        ),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// The tenant named `name` of the caller's org, which the caller must
/// reach: its own, or any of its org's for an org admin.
pub(crate) fn reachable_tenant(caller: &Caller, name: Option<&str>) -> Result<TenantRef, ApiError> {
    let p = &caller.principal;
    let Some(name) = name else {
        return Ok(p.tenant.clone());
    };
    let name = TenantName::try_from(name.to_owned())
        .map_err(|e| bad("invalid_tenant", format!("tenant: {e}")))?;
    let tenant = TenantRef::new(p.tenant.org, name);
    if tenant != p.tenant && p.role != Role::OrgAdmin {
        return Err(forbidden(format!(
            "only an org admin acts for another tenant than its own ({})",
            p.tenant
        )));
    }
    Ok(tenant)
}

/// Mint a token signed by this node for a user of the caller's tenant (or,
/// for an org admin, of any tenant of its org), with at most the caller's
/// role. Any node of the cluster that trusts this node's org checks it
/// offline.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "access",
    operation_id = "mint_token",
    request_body(content = MintRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The token", body = Minted),
        (status = 400, description = "Invalid user, role, tenant or lifetime", body = ErrorBody),
    )
)]
pub(crate) async fn mint(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<Minted>), ApiError> {
    let req: MintRequest = json_body(&body, "invalid_token_request")?;
    Ok((StatusCode::CREATED, Json(mint_for(&node, &caller, req)?)))
}

/// Mint a token for `user` of `tenant` (default: the caller's) with
/// `role`, at most the caller's.
pub(crate) fn mint_for(node: &Node, caller: &Caller, req: MintRequest) -> Result<Minted, ApiError> {
    let MintRequest {
        user,
        role,
        tenant,
        ttl_secs,
    } = req;
    let (role, tenant) = (role.as_str(), tenant.as_deref());
    let user = UserName::try_from(user).map_err(|e| bad("invalid_user", format!("user: {e}")))?;
    let role = parse_role(role, &caller.principal.role)?;
    let tenant = reachable_tenant(caller, tenant)?;
    let ttl = ttl_secs.unwrap_or(DEFAULT_TOKEN_SECS);
    if ttl == 0 || ttl > MAX_TOKEN_SECS {
        return Err(bad(
            "invalid_ttl",
            format!("ttl_secs {ttl}: 1 to {MAX_TOKEN_SECS}"),
        ));
    }
    let claims = Claims {
        user,
        tenant,
        role,
        expires_at: now() + ttl,
    };
    let token = node.access().mint(&claims).map_err(access_error)?;
    Ok(Minted {
        token,
        user: claims.user.get().to_owned(),
        tenant: claims.tenant.name.get().clone(),
        org: claims.tenant.org.to_string(),
        role: claims.role.as_str().to_owned(),
        expires_at: claims.expires_at,
    })
}

/// The role named `name`, if a caller with role `caller` may hand it out.
pub(crate) fn parse_role(name: &str, caller: &Role) -> Result<Role, ApiError> {
    let role = Role::parse(name).ok_or_else(|| {
        bad(
            "invalid_role",
            format!("role {name:?}: expected org_admin, tenant_admin, operator or viewer"),
        )
    })?;
    if role < *caller {
        return Err(forbidden(format!(
            "a {caller} cannot hand out the role {role}"
        )));
    }
    Ok(role)
}

/// What to revoke: a token, a user's tokens, or a node's certificate.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum RevokeRequest {
    Token(RevokeToken),
    User(RevokeUser),
    Node(RevokeNode),
}

/// A token (it and every token narrowed from it).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeToken {
    #[schema(min_length = 1)]
    token: String,
}

/// Every token of a user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeUser {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,63}$")]
    user: String,
    /// The user's tenant (default: the caller's).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,63}$")]
    tenant: Option<String>,
}

/// A node's current certificate (org admins only, on a node that holds
/// the org key).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeNode {
    /// Node id, id prefix or name.
    #[schema(min_length = 1)]
    node: String,
}

/// A revocation in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Revoked {
    /// What was revoked: `token`, `user` or `node_cert`.
    kind: String,
    /// Unix seconds when it was signed.
    at: u64,
    /// Unix seconds past which it is forgotten (what it revokes has
    /// expired by then); absent: never.
    until: Option<u64>,
}

/// Revoke a token, a user or a node's certificate: the signed revocation
/// is taken here at once and spreads to every node through the fabric.
#[utoipa::path(
    post,
    path = "/api/v1/revocations",
    tag = "access",
    operation_id = "revoke",
    request_body(content = RevokeRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Revoked", body = Revoked),
        (status = 400, description = "Not one of {token}, {user, tenant}, {node}; or a bad name", body = ErrorBody),
        (status = 403, description = "Not the caller's to revoke, or a token nobody can read", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
    )
)]
pub(crate) async fn revoke(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<Revoked>), ApiError> {
    let req: RevokeRequest = json_body(&body, "invalid_revocation")?;
    let p = &caller.principal;
    let (kind, until, label) = match &req {
        RevokeRequest::Token(RevokeToken { token }) => {
            // Whose token it is decides who may revoke it: one that cannot
            // be read is nobody's to revoke.
            let found = locus_access::inspect(token)
                .map_err(|e| forbidden(format!("not a token this node can revoke: {e}")))?;
            let t = &found.claims.tenant;
            let reaches = *t == p.tenant || (p.role == Role::OrgAdmin && t.org == p.tenant.org);
            if !reaches || (found.claims.user != p.user && p.role > Role::TenantAdmin) {
                return Err(forbidden(format!(
                    "a {} of tenant {} cannot revoke a token of {} in tenant {t}",
                    p.role, p.tenant, found.claims.user
                )));
            }
            let id = found.revocation_ids.last().cloned().unwrap_or_default();
            (
                RevocationKind::Token { id },
                Some(found.effective_expires_at),
                "token",
            )
        }
        RevokeRequest::User(RevokeUser { user, tenant }) => {
            let tenant = reachable_tenant(&caller, tenant.as_deref())?;
            let user = UserName::try_from(user.clone())
                .map_err(|e| bad("invalid_user", format!("user: {e}")))?;
            if p.role > Role::TenantAdmin {
                return Err(forbidden(format!("a {} cannot revoke users", p.role)));
            }
            (
                RevocationKind::User { tenant, user },
                Some(now() + MAX_TOKEN_SECS),
                "user",
            )
        }
        RevokeRequest::Node(RevokeNode { node: target }) => {
            if p.role != Role::OrgAdmin || p.tenant.org != node.access().org() {
                return Err(forbidden(
                    "only an org admin of this node's org revokes a node",
                ));
            }
            let nodes = crate::routes::known_nodes(&node).await?;
            let target = crate::routes::lookup(&nodes, target)?.id;
            let peer = node.access().peer(target).map_err(|e| {
                ApiError::new(StatusCode::CONFLICT, "untrusted_node", e.to_string())
            })?;
            (
                RevocationKind::NodeCert {
                    node: target,
                    serial: peer.serial,
                },
                Some(peer.not_after),
                "node_cert",
            )
        }
    };
    let signed = node
        .access()
        .revoke(kind, until)
        .await
        .map_err(access_error)?;
    Ok((
        StatusCode::CREATED,
        Json(Revoked {
            kind: label.to_owned(),
            at: signed.revocation.at,
            until: signed.revocation.until,
        }),
    ))
}

/// An org admitted to the cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OrgEntryView {
    seq: u64,
    /// The org's id (20 hex digits).
    org: String,
    /// The org's ed25519 public key (64 hex digits).
    key: String,
    name: String,
    /// The admitting org.
    by: String,
}

/// The org log this node holds: the orgs admitted to the cluster, in
/// order, genesis first.
#[utoipa::path(
    get,
    path = "/api/v1/orgs",
    tag = "access",
    operation_id = "list_orgs",
    responses((status = 200, description = "The admitted orgs", body = Vec<OrgEntryView>))
)]
pub(crate) async fn orgs(State(node): State<Arc<Node>>) -> Json<Vec<OrgEntryView>> {
    Json(
        node.access()
            .org_log()
            .iter()
            .map(|e| OrgEntryView {
                seq: e.entry.seq,
                org: e.entry.org.to_string(),
                key: locus_core::hex(&e.entry.org_key),
                name: e.entry.name.clone(),
                by: e.entry.by.to_string(),
            })
            .collect(),
    )
}

/// An org to admit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdmitRequest {
    /// The org's ed25519 public key (64 hex digits), as `locus org ls`
    /// shows it on one of its nodes.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    key: String,
    /// A name for people (1–63 letters, digits, `.`, `_`, `-`, spaces),
    /// unique in the log.
    #[schema(pattern = "^[A-Za-z0-9._ -]{1,63}$")]
    name: String,
}

/// Admit another org into this org's log (this node must hold the org
/// key): its nodes are then trusted here, and its tokens too on the nodes
/// that grant its tenants. The entry spreads to every node of the org.
#[utoipa::path(
    post,
    path = "/api/v1/orgs",
    tag = "access",
    operation_id = "admit_org",
    request_body(content = AdmitRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Admitted", body = OrgEntryView),
        (status = 400, description = "Not 64 hex digits, or a bad name", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key; the key is not an ed25519 point; the org or the name is admitted already", body = ErrorBody),
    )
)]
pub(crate) async fn admit(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<(StatusCode, Json<OrgEntryView>), ApiError> {
    let req: AdmitRequest = json_body(&body, "invalid_admission")?;
    let key = parse_key(&req.key)?;
    let e = node
        .access()
        .admit(&key, &req.name)
        .await
        .map_err(|e| match e {
            AccessError::Admit(m) => ApiError::new(StatusCode::CONFLICT, "not_admitted", m),
            e => access_error(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(OrgEntryView {
            seq: e.entry.seq,
            org: e.entry.org.to_string(),
            key: locus_core::hex(&e.entry.org_key),
            name: e.entry.name.clone(),
            by: e.entry.by.to_string(),
        }),
    ))
}

fn parse_key(hex: &str) -> Result<ed25519_dalek::VerifyingKey, ApiError> {
    let err = || {
        bad(
            "invalid_key",
            format!("key {hex:?}: expected 64 hex digits of an ed25519 public key"),
        )
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err());
    }
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
    }
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_key",
            format!("key {hex:?} is not an ed25519 public key"),
        )
    })
}

/// A grant to make.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantRequest {
    /// The tenant's org (20 hex digits); it must be admitted.
    #[schema(pattern = "^[0-9a-f]{20}$")]
    org: String,
    /// The tenant's name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,63}$")]
    tenant: String,
    /// One node of this org (id, prefix or name); absent: every node.
    #[serde(default)]
    #[schema(min_length = 1)]
    node: Option<String>,
    /// Lifetime in seconds; absent: until withdrawn.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315360000)]
    ttl_secs: Option<u64>,
}

/// A grant in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GrantView {
    /// The tenant's name.
    tenant: String,
    /// The tenant's org.
    org: String,
}

/// Let a tenant of another (admitted) org use this org's nodes: one of
/// them, or all. Signed by the org key (this node must hold it); it
/// spreads to every node of the org.
#[utoipa::path(
    post,
    path = "/api/v1/grants",
    tag = "access",
    operation_id = "grant_tenant",
    request_body(content = GrantRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Granted", body = GrantView),
        (status = 400, description = "Bad org, tenant or lifetime", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key, or the org is not admitted", body = ErrorBody),
    )
)]
pub(crate) async fn grant(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let req: GrantRequest = json_body(&body, "invalid_grant")?;
    let org: locus_access::OrgId = req
        .org
        .parse()
        .map_err(|e: locus_access::org::ParseOrgIdError| bad("invalid_org", e.to_string()))?;
    if !node.access().org_log().iter().any(|e| e.entry.org == org) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "org_not_admitted",
            format!("org {org} is not admitted: `locus org admit` it first"),
        ));
    }
    let name = TenantName::try_from(req.tenant)
        .map_err(|e| bad("invalid_tenant", format!("tenant: {e}")))?;
    let target = match &req.node {
        Some(q) => {
            let nodes = crate::routes::known_nodes(&node).await?;
            Some(crate::routes::lookup(&nodes, q)?.id)
        }
        None => None,
    };
    let until = match req.ttl_secs {
        Some(0) => return Err(bad("invalid_ttl", "ttl_secs must be at least 1")),
        Some(t) if t > 315_360_000 => {
            return Err(bad(
                "invalid_ttl",
                "ttl_secs is at most 315360000 (10 years)",
            ));
        }
        Some(t) => Some(now().saturating_add(t)),
        None => None,
    };
    let tenant = TenantRef::new(org, name);
    node.access()
        .grant(tenant.clone(), target, until)
        .await
        .map_err(|e| match e {
            AccessError::Admit(m) => bad("invalid_grant", m),
            e => access_error(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(GrantView {
            tenant: tenant.name.get().clone(),
            org: tenant.org.to_string(),
        }),
    ))
}

/// The tenants of other orgs granted use of this node.
#[utoipa::path(
    get,
    path = "/api/v1/grants",
    tag = "access",
    operation_id = "list_grants",
    responses((status = 200, description = "Grants in force on this node", body = Vec<GrantView>))
)]
pub(crate) async fn grants(State(node): State<Arc<Node>>) -> Json<Vec<GrantView>> {
    Json(
        node.access()
            .granted()
            .into_iter()
            .map(|t| GrantView {
                tenant: t.name.get().clone(),
                org: t.org.to_string(),
            })
            .collect(),
    )
}

/// A join token to make.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinRequest {
    /// How many machines may enroll with it (default 1, at most 1000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    uses: Option<u32>,
    /// Lifetime in seconds (default 3600, at most 604800).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    ttl_secs: Option<u64>,
    /// Roles of the new nodes: `worker`, `issuer`, `storage` (default all).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 3)]
    roles: Option<Vec<JoinRole>>,
}

/// A role of a node enrolled with a join token.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JoinRole {
    Worker,
    Issuer,
    Storage,
}

/// A join token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct JoinTokenView {
    /// The token: `locus agent --join <token>` on the new machine. It is a
    /// secret: it carries the cluster key.
    token: String,
    org: String,
    uses: u32,
    /// Unix seconds, excluded.
    expires_at: u64,
}

/// Make a join token with which new machines enroll in this node's org
/// (this node must hold the org key).
#[utoipa::path(
    post,
    path = "/api/v1/org/join-tokens",
    tag = "access",
    operation_id = "create_join_token",
    request_body(content = JoinRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The join token", body = JoinTokenView),
        (status = 400, description = "Invalid uses, lifetime or roles", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
    )
)]
pub(crate) async fn join_token(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<(StatusCode, Json<JoinTokenView>), ApiError> {
    let req: JoinRequest = if body.is_empty() {
        JoinRequest::default()
    } else {
        json_body(&body, "invalid_join_request")?
    };
    let uses = req.uses.unwrap_or(1);
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_JOIN_SECS);
    if ttl == 0 || ttl > MAX_JOIN_SECS {
        return Err(bad(
            "invalid_ttl",
            format!("ttl_secs {ttl}: 1 to {MAX_JOIN_SECS}"),
        ));
    }
    if let Some(names) = &req.roles
        && names.len() > NodeRole::ALL.len()
    {
        return Err(bad(
            "invalid_role",
            format!(
                "roles: {} named, at most {} (worker, issuer, storage, each once)",
                names.len(),
                NodeRole::ALL.len()
            ),
        ));
    }
    let roles: BTreeSet<NodeRole> = match req.roles {
        None => NodeRole::ALL.into_iter().collect(),
        Some(names) => names
            .into_iter()
            .map(|r| match r {
                JoinRole::Worker => NodeRole::Worker,
                JoinRole::Issuer => NodeRole::Issuer,
                JoinRole::Storage => NodeRole::Storage,
            })
            .collect(),
    };
    if roles.is_empty() {
        return Err(bad("invalid_role", "roles: name at least one"));
    }
    let (token, grant) = node
        .access()
        .join_token(uses, ttl, roles)
        .map_err(|e| match e {
            AccessError::Enroll(EnrollError::Refused(e)) => {
                bad("invalid_join_request", e.to_string())
            }
            e => access_error(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenView {
            token,
            org: grant.org.to_string(),
            uses: grant.uses,
            expires_at: grant.not_after,
        }),
    ))
}

/// A node's enrollment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EnrollmentView {
    /// The new node's certificate (hex), signed by the org key.
    certificate: String,
    /// The org log (hex entries, genesis first).
    org_log: Vec<String>,
}

/// The body of an enrollment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollBody {
    /// The join token.
    #[schema(pattern = "^locusjoin1\\.[A-Za-z0-9_-]{1,1024}$")]
    token: String,
    /// The new node's ed25519 public key (64 hex digits).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    node_key: String,
    /// The node key's signature over the grant id and the key (128 hex
    /// digits).
    #[schema(pattern = "^[0-9a-f]{128}$")]
    proof: String,
}

/// Enroll a new machine that presents a join token and proves it holds
/// its node key: answers its certificate. Needs no user token; the join
/// token is the credential. `locus agent --join` calls it.
#[utoipa::path(
    post,
    path = "/api/v1/org/enroll",
    tag = "access",
    operation_id = "enroll_node",
    request_body(content = EnrollBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Enrolled", body = EnrollmentView),
        (status = 400, description = "Not an enrollment", body = ErrorBody),
        (status = 403, description = "The join token is unreadable, forged, expired, used up, of another org, or the proof is wrong", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
    )
)]
pub(crate) async fn enroll(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<(StatusCode, Json<EnrollmentView>), ApiError> {
    let req: EnrollBody = json_body(&body, "invalid_enrollment")?;
    let request = EnrollRequest {
        token: req.token,
        node_key: req.node_key,
        proof: req.proof,
    };
    let access = node.access().clone();
    let answer = tokio::task::spawn_blocking(move || access.enroll(&request))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(access_error)?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentView {
            certificate: answer.certificate,
            org_log: answer.org_log,
        }),
    ))
}

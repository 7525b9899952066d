//! Handlers of access itself: who am I, mint a token, revoke, the org
//! log, join tokens and enrollment. Each is thin: the rules are
//! `locus-access`'s, the keys and records `locus_agent::access`'s.

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
use locus_agent::access::AccessError;
use locus_agent::credentials::EnrollError;
use locus_core::NodeId;
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

fn now() -> u64 {
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

/// A token to mint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintRequest {
    /// The user it speaks for (1–63 letters, digits, `.`, `_`, `-`, `@`).
    user: String,
    /// `org_admin`, `tenant_admin`, `operator` or `viewer`; at most the
    /// caller's own role.
    role: String,
    /// A tenant of the caller's org (default: the caller's tenant); only
    /// an org admin mints for another tenant.
    #[serde(default)]
    tenant: Option<String>,
    /// Lifetime in seconds (default 86400, at most 2592000).
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// A minted token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Minted {
    token: String,
    user: String,
    tenant: String,
    org: String,
    role: String,
    /// Unix seconds, excluded.
    expires_at: u64,
}

fn bad(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn access_error(e: AccessError) -> ApiError {
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
fn reachable_tenant(caller: &Caller, name: Option<&str>) -> Result<TenantRef, ApiError> {
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
    let user =
        UserName::try_from(req.user).map_err(|e| bad("invalid_user", format!("user: {e}")))?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        bad(
            "invalid_role",
            format!(
                "role {:?}: expected org_admin, tenant_admin, operator or viewer",
                req.role
            ),
        )
    })?;
    if role < caller.principal.role {
        return Err(forbidden(format!(
            "a {} cannot mint a token of role {role}",
            caller.principal.role
        )));
    }
    let tenant = reachable_tenant(&caller, req.tenant.as_deref())?;
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TOKEN_SECS);
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
    Ok((
        StatusCode::CREATED,
        Json(Minted {
            token,
            user: claims.user.get().to_owned(),
            tenant: claims.tenant.name.get().clone(),
            org: claims.tenant.org.to_string(),
            role: claims.role.as_str().to_owned(),
            expires_at: claims.expires_at,
        }),
    ))
}

/// What to revoke: exactly one of `token`, `user` or `node`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeRequest {
    /// A token (it and every token narrowed from it).
    #[serde(default)]
    token: Option<String>,
    /// A user: every token of the user in `tenant`.
    #[serde(default)]
    user: Option<String>,
    /// The user's tenant (default: the caller's).
    #[serde(default)]
    tenant: Option<String>,
    /// A node (by id): its current certificate. Org admins only, on a node
    /// that holds the org key.
    #[serde(default)]
    node: Option<String>,
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
        (status = 400, description = "Not exactly one of token, user, node; or what it names is invalid", body = ErrorBody),
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
    let (kind, until, label) = match (&req.token, &req.user, &req.node) {
        (Some(token), None, None) => {
            let found = locus_access::inspect(token)
                .map_err(|e| bad("invalid_token", format!("token: {e}")))?;
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
        (None, Some(user), None) => {
            let tenant = reachable_tenant(&caller, req.tenant.as_deref())?;
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
        (None, None, Some(target)) => {
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
        _ => {
            return Err(bad(
                "invalid_revocation",
                "name exactly one of token, user or node",
            ));
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
    key: String,
    /// A name for people (1–63 letters, digits, `.`, `_`, `-`, spaces),
    /// unique in the log.
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
        (status = 400, description = "Not a key, a bad name, or already admitted", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
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
            AccessError::Admit(m) => bad("invalid_admission", m),
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
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| err())
}

/// A grant to make.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantRequest {
    /// The tenant's org (20 hex digits); it must be admitted.
    org: String,
    /// The tenant's name.
    tenant: String,
    /// One node of this org (id, prefix or name); absent: every node.
    #[serde(default)]
    node: Option<String>,
    /// Lifetime in seconds; absent: until withdrawn.
    #[serde(default)]
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
        (status = 400, description = "Bad org, tenant or lifetime; or the org is not admitted", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
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
        return Err(bad(
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
    uses: Option<u32>,
    /// Lifetime in seconds (default 3600, at most 604800).
    #[serde(default)]
    ttl_secs: Option<u64>,
    /// Roles of the new nodes: `worker`, `issuer`, `storage` (default all).
    #[serde(default)]
    roles: Option<Vec<String>>,
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
    let roles: BTreeSet<NodeRole> = match req.roles {
        None => NodeRole::ALL.into_iter().collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                NodeRole::ALL
                    .into_iter()
                    .find(|r| r.as_str() == n)
                    .ok_or_else(|| {
                        bad(
                            "invalid_role",
                            format!("role {n:?}: expected worker, issuer or storage"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
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
    token: String,
    /// The new node's ed25519 public key (64 hex digits).
    node_key: String,
    /// The node key's signature over the grant id and the key (128 hex
    /// digits).
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
        (status = 403, description = "The join token is forged, expired, used up, of another org, or the proof is wrong", body = ErrorBody),
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
        .map_err(|e| match e {
            AccessError::Enroll(EnrollError::Refused(JoinError::Malformed(m))) => {
                bad("invalid_enrollment", format!("not a join token: {m}"))
            }
            e => access_error(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentView {
            certificate: answer.certificate,
            org_log: answer.org_log,
        }),
    ))
}

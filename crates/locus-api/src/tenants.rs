//! Tenants and users: the directory records of the node's org (signed by
//! its key, spread by the fabric), what each tenant uses of its quota
//! across the cluster, and the quota check made when a workload is
//! submitted or a thing registered.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use locus_access::revocation::RevocationKind;
use locus_access::tenant::{Grant, PortRange, Quota, Role, TenantName, TenantRef, User, UserName};
use locus_access::{OrgId, Subject, Tenant, Usage, WorkloadKind};
use locus_agent::Node;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::{MintRequest, Minted, access_error, bad, forbidden, mint_for, parse_role};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, json_body, query_error};

/// The tenant a record names on a node: `name` in the owner's org, or
/// `name.org` for a tenant of another org (see `Caller::record_tenant`).
pub(crate) fn record_tenant_ref(record: &str, owner_org: OrgId) -> Option<TenantRef> {
    if let Some((name, org)) = record.rsplit_once('.')
        && let Ok(org) = org.parse::<OrgId>()
    {
        return TenantName::try_from(name.to_owned())
            .ok()
            .map(|n| TenantRef::new(org, n));
    }
    TenantName::try_from(record.to_owned())
        .ok()
        .map(|n| TenantRef::new(owner_org, n))
}

/// The tenant in full of a record owned by node `owner`.
pub(crate) fn tenant_of_record(
    node: &Node,
    record: &str,
    owner: locus_core::NodeId,
) -> Option<TenantRef> {
    org_of(node, owner).and_then(|o| record_tenant_ref(record, o))
}

/// The org of node `node`: this node's, or the one its certificate names.
fn org_of(node: &Node, owner: locus_core::NodeId) -> Option<OrgId> {
    if owner == node.id() {
        return Some(node.access().org());
    }
    node.access().peer(owner).ok().map(|p| p.org)
}

/// Every part of a usage, for [`usage`].
const EVERYTHING: Usage = Usage {
    cpu_millis: 1,
    memory_bytes: 1,
    storage_bytes: 1,
    things: 1,
    workloads: 1,
};

/// What `tenant` uses across the cluster as this node sees it, of the
/// parts `wanted` names (non-zero): its workloads not destroyed (their
/// cpu and memory), its things, and the artifacts it uploaded that a live
/// node holds (each counted once). Each part read is a pass over the
/// cluster's records, so a part nobody asks about is not read.
pub(crate) async fn usage(node: &Node, tenant: &TenantRef, wanted: Usage) -> Usage {
    let mut usage = Usage::default();
    let mut orgs: BTreeMap<locus_core::NodeId, Option<OrgId>> = BTreeMap::new();
    let mut owned = |owner: locus_core::NodeId, record: &str| {
        let org = *orgs.entry(owner).or_insert_with(|| org_of(node, owner));
        org.and_then(|o| record_tenant_ref(record, o)).as_ref() == Some(tenant)
    };
    if wanted.workloads + wanted.cpu_millis + wanted.memory_bytes > 0 {
        for w in node.workloads().list().await {
            let s = &w.summary;
            if !s.destroyed && owned(s.owner, s.tenant.get()) {
                usage.workloads += 1;
                usage.cpu_millis += s.cpu_millicores;
                usage.memory_bytes += s.memory_mb << 20;
            }
        }
    }
    if wanted.things > 0 {
        for (t, _) in node.things().directory().await {
            if owned(t.manager, t.spec.tenant.get()) {
                usage.things += 1;
            }
        }
    }
    if wanted.storage_bytes > 0
        && let Ok(known) = node.artifacts().known().await
    {
        usage.storage_bytes = known
            .iter()
            .filter(|a| {
                a.tenants
                    .iter()
                    .any(|t| t.parse::<TenantRef>().as_ref() == Ok(tenant))
            })
            .map(|a| a.size)
            .sum();
    }
    usage
}

/// Refuse what would take `tenant` past its quota: 403 `quota_exceeded`
/// naming the quota, what is in use, asked and allowed.
pub(crate) async fn check_quota(
    node: &Node,
    tenant: &TenantRef,
    request: Usage,
) -> Result<(), ApiError> {
    let (record, _) = node.access().tenant(tenant);
    // Only what is asked and limited is counted.
    let q = &record.quota;
    let limited = |asked: u64, limit: u64| if limit == u64::MAX { 0 } else { asked };
    let wanted = Usage {
        cpu_millis: limited(request.cpu_millis, q.cpu_millis),
        memory_bytes: limited(request.memory_bytes, q.memory_bytes),
        storage_bytes: limited(request.storage_bytes, q.storage_bytes),
        things: limited(request.things, q.things),
        workloads: limited(request.workloads, q.workloads),
    };
    let used = usage(node, tenant, wanted).await;
    record.check_quota(&used, &request).map_err(|e| {
        ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", e.to_string()).with_details(
            serde_json::json!({
                "quota": e.quota.as_str(),
                "in_use": e.in_use,
                "requested": e.requested,
                "limit": e.limit,
            }),
        )
    })
}

/// The tenant a new record of the caller belongs to, in full.
pub(crate) fn owning_tenant_ref(
    node: &Node,
    caller: &Caller,
    named: &TenantName,
) -> Result<TenantRef, ApiError> {
    let org = node.access().org();
    let p = &caller.principal;
    if p.role == Role::OrgAdmin && p.tenant.org == org {
        return Ok(TenantRef::new(org, named.clone()));
    }
    // Its own tenant, checked to be a name a record can carry.
    caller.owning_tenant(org, named)?;
    Ok(p.tenant.clone())
}

/// A tenant's quota as the API takes it. An absent field is no limit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaBody {
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    cpu_millis: Option<u64>,
    /// At most 2^60.
    #[schema(minimum = 0, maximum = 1_152_921_504_606_846_976_u64)]
    memory_bytes: Option<u64>,
    /// At most 2^60.
    #[schema(minimum = 0, maximum = 1_152_921_504_606_846_976_u64)]
    storage_bytes: Option<u64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    things: Option<u64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    workloads: Option<u64>,
}

/// The largest count and millicore figure a quota takes.
const MAX_COUNT: u64 = 1_000_000_000;
/// The largest byte figure a quota takes.
const MAX_BYTES: u64 = 1 << 60;

impl QuotaBody {
    fn quota(self) -> Result<Quota, ApiError> {
        let d = Quota::UNLIMITED;
        let take = |v: Option<u64>, default: u64, max: u64, name: &str| match v {
            Some(v) if v > max => Err(bad(
                "invalid_tenant",
                format!("quota.{name}: {v} is more than the {max} allowed"),
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        Ok(Quota {
            cpu_millis: take(self.cpu_millis, d.cpu_millis, MAX_COUNT, "cpu_millis")?,
            memory_bytes: take(self.memory_bytes, d.memory_bytes, MAX_BYTES, "memory_bytes")?,
            storage_bytes: take(
                self.storage_bytes,
                d.storage_bytes,
                MAX_BYTES,
                "storage_bytes",
            )?,
            things: take(self.things, d.things, MAX_COUNT, "things")?,
            workloads: take(self.workloads, d.workloads, MAX_COUNT, "workloads")?,
        })
    }
}

/// A workload kind a grant names.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KindBody {
    Wasm,
    Container,
    Vm,
    Process,
}

impl From<KindBody> for WorkloadKind {
    fn from(k: KindBody) -> WorkloadKind {
        match k {
            KindBody::Wasm => WorkloadKind::Wasm,
            KindBody::Container => WorkloadKind::Container,
            KindBody::Vm => WorkloadKind::Vm,
            KindBody::Process => WorkloadKind::Process,
        }
    }
}

/// Host ports `first` to `last` (both included; `last` absent: one port).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortsBody {
    #[schema(minimum = 1, maximum = 65535)]
    first: u16,
    #[schema(minimum = 1, maximum = 65535)]
    last: Option<u16>,
}

/// What a tenant's workloads may use beyond the sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantBody {
    /// Workload kinds; default every kind but `process`.
    kinds: Option<Vec<KindBody>>,
    /// Host port ranges its workloads may publish.
    #[serde(default)]
    host_ports: Vec<PortsBody>,
    /// Absolute host directories its workloads may mount (kept with `.`
    /// and `..` resolved).
    #[serde(default)]
    host_paths: Vec<HostPath>,
    /// Host devices (inventory ids) its workloads may attach.
    #[serde(default)]
    devices: Vec<String>,
}

/// An absolute path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HostPath(String);

impl utoipa::PartialSchema for HostPath {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut schema = <String as utoipa::PartialSchema>::schema();
        if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o)) = &mut schema {
            o.pattern = Some("^/".into());
        }
        schema
    }
}

impl utoipa::ToSchema for HostPath {}

impl GrantBody {
    fn grant(self) -> Result<Grant, ApiError> {
        let mut grant = Grant::default();
        if let Some(kinds) = self.kinds {
            grant.kinds = kinds.into_iter().map(WorkloadKind::from).collect();
        }
        grant.host_ports = self
            .host_ports
            .iter()
            .map(|p| {
                let (a, b) = (p.first, p.last.unwrap_or(p.first));
                PortRange {
                    first: a.min(b),
                    last: a.max(b),
                }
            })
            .collect();
        for (i, p) in self.host_ports.iter().enumerate() {
            if p.first == 0 || p.last == Some(0) {
                return Err(bad(
                    "invalid_grant",
                    format!("grant.host_ports[{i}]: ports are 1 to 65535"),
                ));
            }
        }
        grant.host_paths = self
            .host_paths
            .into_iter()
            .enumerate()
            .map(|(i, HostPath(p))| {
                normal_path(&p).ok_or_else(|| {
                    bad(
                        "invalid_grant",
                        format!("grant.host_paths[{i}]: {p:?} is not an absolute path"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        grant.devices = self.devices.into_iter().collect();
        Ok(grant)
    }
}

/// `path` with `.` and `..` resolved and empty components dropped, if
/// absolute (`..` above the root stays at the root).
fn normal_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// A tenant to create or change.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantBody {
    #[serde(default)]
    quota: QuotaBody,
    #[serde(default)]
    grant: GrantBody,
}

/// A tenant's quota as the API shows it: absent (null) is no limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub(crate) struct QuotaView {
    cpu_millis: Option<u64>,
    memory_bytes: Option<u64>,
    storage_bytes: Option<u64>,
    things: Option<u64>,
    workloads: Option<u64>,
}

impl QuotaView {
    fn of(q: &Quota) -> QuotaView {
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        QuotaView {
            cpu_millis: limit(q.cpu_millis),
            memory_bytes: limit(q.memory_bytes),
            storage_bytes: limit(q.storage_bytes),
            things: limit(q.things),
            workloads: limit(q.workloads),
        }
    }
}

/// A tenant, its quota, its grant and what it uses of the quota.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TenantView {
    name: String,
    org: String,
    /// Whether its org wrote a record for it (else it has no quota and the
    /// default grant).
    recorded: bool,
    quota: QuotaView,
    #[schema(value_type = Object)]
    grant: Grant,
    #[schema(value_type = Object)]
    usage: Usage,
}

async fn view(node: &Node, tenant: Tenant, recorded: bool) -> TenantView {
    let usage = usage(node, &tenant.reference(), EVERYTHING).await;
    TenantView {
        name: tenant.name.get().clone(),
        org: tenant.org.to_string(),
        recorded,
        quota: QuotaView::of(&tenant.quota),
        grant: tenant.grant,
        usage,
    }
}

fn tenant_name(name: String) -> Result<TenantName, ApiError> {
    TenantName::try_from(name).map_err(|e| bad("invalid_tenant", format!("tenant: {e}")))
}

/// Create a tenant of this node's org, or change its quota and grant
/// (this node must hold the org key). The signed record spreads to every
/// node; quotas count the tenant's workloads and things cluster-wide.
#[utoipa::path(
    put,
    path = "/api/v1/tenants/{tenant}",
    tag = "access",
    operation_id = "set_tenant",
    params(("tenant" = String, Path, description = "The tenant's name", pattern = "^[A-Za-z0-9._-]{1,63}$")),
    request_body(content = TenantBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Set", body = TenantView),
        (status = 400, description = "A bad name, quota or grant (the field is named)", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
    )
)]
pub(crate) async fn set(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<TenantView>, ApiError> {
    let req: TenantBody = json_body(&body, "invalid_tenant")?;
    let tenant = Tenant {
        name: tenant_name(name)?,
        org: node.access().org(),
        quota: req.quota.quota()?,
        grant: req.grant.grant()?,
    };
    node.access()
        .put_directory(Subject::Tenant(tenant.clone()), false)
        .await
        .map_err(access_error)?;
    Ok(Json(view(&node, tenant, true).await))
}

/// The tenants the caller reaches: every tenant of the org for an org
/// admin (those with a record, and its own), else its own.
#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    tag = "access",
    operation_id = "list_tenants",
    responses((status = 200, description = "Tenants", body = Vec<TenantView>))
)]
pub(crate) async fn list(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
) -> Json<Vec<TenantView>> {
    let p = &caller.principal;
    let org = node.access().org();
    let mut out = Vec::new();
    let mut own_listed = false;
    for t in node.access().tenants() {
        if caller.reaches_tenant(org, &t.reference()) {
            own_listed |= t.reference() == p.tenant;
            out.push(view(&node, t, true).await);
        }
    }
    if !own_listed {
        let (t, recorded) = node.access().tenant(&p.tenant);
        out.push(view(&node, t, recorded).await);
    }
    Json(out)
}

/// Remove a tenant of this node's org: its record becomes a tombstone
/// and it has no quota and the default grant again. Its workloads and things stay.
#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant}",
    tag = "access",
    operation_id = "remove_tenant",
    params(("tenant" = String, Path, description = "The tenant's name", pattern = "^[A-Za-z0-9._-]{1,63}$")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "A bad name", body = ErrorBody),
        (status = 404, description = "No record of this tenant", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
    )
)]
pub(crate) async fn remove(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = TenantRef::new(node.access().org(), tenant_name(name)?);
    let (record, recorded) = node.access().tenant(&tenant);
    if !recorded {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("tenant {} has no record", tenant.name.get()),
        ));
    }
    node.access()
        .put_directory(Subject::Tenant(record), true)
        .await
        .map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user of a tenant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserView {
    name: String,
    tenant: String,
    org: String,
    role: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            name: u.name.get().to_owned(),
            tenant: u.tenant.name.get().clone(),
            org: u.tenant.org.to_string(),
            role: u.role.as_str().to_owned(),
        }
    }
}

/// Add a user to a tenant of this node's org (this node must hold the
/// org key) and mint its first token, handed back once.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "access",
    operation_id = "add_user",
    request_body(content = MintRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Added; the user's token", body = Minted),
        (status = 400, description = "A bad name, role, tenant or lifetime", body = ErrorBody),
        (status = 403, description = "A role above the caller's, or another tenant than the caller's", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
    )
)]
pub(crate) async fn add_user(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<Minted>), ApiError> {
    let req: MintRequest = json_body(&body, "invalid_user")?;
    let name = UserName::try_from(req.user.clone())
        .map_err(|e| bad("invalid_user", format!("user: {e}")))?;
    let role = parse_role(&req.role, &caller.principal.role)?;
    let tenant = crate::access::reachable_tenant(&caller, req.tenant.as_deref())?;
    if tenant.org != node.access().org() {
        return Err(forbidden(format!(
            "users of tenant {tenant} are added on a node of its org"
        )));
    }
    node.access()
        .put_directory(Subject::User(User { name, tenant, role }), false)
        .await
        .map_err(access_error)?;
    Ok((StatusCode::CREATED, Json(mint_for(&node, &caller, req)?)))
}

/// Filter of the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersQuery {
    /// Only the users of this tenant.
    tenant: Option<String>,
}

/// The users the caller reaches: every user of the org for an org admin,
/// else those of its tenant.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "access",
    operation_id = "list_users",
    params(UsersQuery),
    responses(
        (status = 200, description = "Users", body = Vec<UserView>),
        (status = 400, description = "Bad filter", body = ErrorBody),
    )
)]
pub(crate) async fn users(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<UsersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let org = node.access().org();
    Ok(Json(
        node.access()
            .users()
            .iter()
            .filter(|u| {
                caller.reaches_tenant(org, &u.tenant)
                    && q.tenant.as_ref().is_none_or(|t| u.tenant.name.get() == t)
            })
            .map(UserView::from)
            .collect(),
    ))
}

/// Remove a user: its record becomes a tombstone and every token of it
/// is revoked, on every node within the fabric's spread.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{tenant}/{user}",
    tag = "access",
    operation_id = "remove_user",
    params(
        ("tenant" = String, Path, description = "The user's tenant", pattern = "^[A-Za-z0-9._-]{1,63}$"),
        ("user" = String, Path, description = "The user's name", pattern = "^[A-Za-z0-9._@-]{1,63}$"),
    ),
    responses(
        (status = 204, description = "Removed and its tokens revoked"),
        (status = 400, description = "A bad name", body = ErrorBody),
        (status = 403, description = "Another tenant than the caller's", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "This node does not hold the org key", body = ErrorBody),
    )
)]
pub(crate) async fn remove_user(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = crate::access::reachable_tenant(&caller, Some(&tenant))?;
    let name = UserName::try_from(user).map_err(|e| bad("invalid_user", format!("user: {e}")))?;
    let Some(found) = node.access().user(&tenant, &name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user {name} in tenant {}", tenant.name.get()),
        ));
    };
    if found.role < caller.principal.role {
        return Err(forbidden(format!(
            "a {} cannot remove a {}",
            caller.principal.role, found.role
        )));
    }
    node.access()
        .put_directory(Subject::User(found), true)
        .await
        .map_err(access_error)?;
    node.access()
        .revoke(RevocationKind::User { tenant, user: name }, None)
        .await
        .map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_tenants_name_their_org() {
        let org = |n: u8| {
            OrgId::from_public_key(&ed25519_dalek::SigningKey::from_bytes(&[n; 32]).verifying_key())
        };
        let (a, b) = (org(1), org(2));
        assert_eq!(record_tenant_ref("acme", a).unwrap().org, a);
        let foreign = record_tenant_ref(&format!("acme.{b}"), a).unwrap();
        assert_eq!((foreign.org, foreign.name.get().as_str()), (b, "acme"));
        // A dot that is not followed by an org id is part of the name.
        let dotted = record_tenant_ref("lab.north", a).unwrap();
        assert_eq!((dotted.org, dotted.name.get().as_str()), (a, "lab.north"));
        assert!(record_tenant_ref("", a).is_none());
    }

    #[test]
    fn grant_bodies_normalise_what_they_take() {
        let body: GrantBody = serde_json::from_value(serde_json::json!({
            "kinds": ["wasm", "process"],
            "host_ports": [{"first": 8100, "last": 8000}, {"first": 22}],
            "host_paths": ["/srv/data/../logs/./x", "/"],
        }))
        .unwrap();
        let g = body.grant().unwrap();
        assert!(g.kinds.contains(&WorkloadKind::Process));
        assert_eq!(
            (
                g.host_ports[0].first,
                g.host_ports[0].last,
                g.host_ports[1].last
            ),
            (8000, 8100, 22)
        );
        assert_eq!(g.host_paths, ["/srv/logs/x", "/"]);
        assert!(
            serde_json::from_value::<GrantBody>(serde_json::json!({"kinds": ["shell"]})).is_err()
        );
        let e = serde_json::from_value::<GrantBody>(serde_json::json!({"host_paths": ["srv"]}))
            .unwrap()
            .grant()
            .unwrap_err();
        assert!(format!("{e:?}").contains("grant.host_paths[0]"), "{e:?}");
        assert_eq!(normal_path("/../.."), Some("/".to_owned()));
    }
}

//! Tenants, users, roles, grants and quotas as data, and the pure checks
//! made with them: a workload's needs against its tenant's grant, and a
//! request against the tenant's quota.
//!
//! A tenant is an org's namespace (of workloads, things, artifacts,
//! readings): its name is unique within the org, so a tenant is named in
//! full by a [`TenantRef`] (`name@org`).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::org::OrgId;

/// A tenant's name: 1–63 letters, digits, `.`, `_` or `-` (the same rule
/// as the tenant of a thing).
pub use locus_core::thing::Tenant as TenantName;

/// A tenant in full: its name within its org.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantRef {
    pub org: OrgId,
    pub name: TenantName,
}

impl TenantRef {
    pub fn new(org: OrgId, name: TenantName) -> Self {
        TenantRef { org, name }
    }
}

impl fmt::Display for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name.get(), self.org)
    }
}

impl std::str::FromStr for TenantRef {
    type Err = String;

    /// `name@org`, as [`TenantRef`] displays.
    fn from_str(s: &str) -> Result<TenantRef, String> {
        let (name, org) = s
            .rsplit_once('@')
            .ok_or_else(|| format!("tenant {s:?}: expected name@org"))?;
        let org: OrgId = org.parse().map_err(|e| format!("tenant {s:?}: {e}"))?;
        let name =
            TenantName::try_from(name.to_owned()).map_err(|e| format!("tenant {s:?}: {e}"))?;
        Ok(TenantRef::new(org, name))
    }
}

/// A user's name: 1–63 letters, digits, `.`, `_`, `-` or `@`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    /// The validated name.
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        if v.is_empty() || v.len() > 63 {
            return Err(format!("user name {v:?} must be 1 to 63 characters long"));
        }
        if let Some(c) = v
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
        {
            return Err(format!(
                "user name {v:?} contains {c:?}; use letters, digits, '.', '_', '-' and '@'"
            ));
        }
        Ok(UserName(v))
    }
}

impl From<UserName> for String {
    fn from(v: UserName) -> String {
        v.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may do. Each role includes the ones below it:
/// org admin ⊃ tenant admin ⊃ operator ⊃ viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in every tenant of its org, and the org's own records
    /// (tenants, nodes, admissions).
    OrgAdmin,
    /// Everything in its tenant, users and tokens included.
    TenantAdmin,
    /// Reads, and writes of workloads, things, artifacts and readings, in
    /// its tenant.
    Operator,
    /// Reads in its tenant.
    Viewer,
}

impl Role {
    /// Every role, strongest first.
    pub const ALL: [Role; 4] = [
        Role::OrgAdmin,
        Role::TenantAdmin,
        Role::Operator,
        Role::Viewer,
    ];

    /// The name used in tokens, records and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user of a tenant and the role it holds there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: UserName,
    pub tenant: TenantRef,
    pub role: Role,
}

/// The kinds of workload a grant can allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Wasm,
    Process,
    Container,
    Vm,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::Wasm,
        WorkloadKind::Process,
        WorkloadKind::Container,
        WorkloadKind::Vm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Wasm => "wasm",
            WorkloadKind::Process => "process",
            WorkloadKind::Container => "container",
            WorkloadKind::Vm => "vm",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl From<locus_core::Kind> for WorkloadKind {
    fn from(k: locus_core::Kind) -> Self {
        match k {
            locus_core::Kind::Wasm => WorkloadKind::Wasm,
            locus_core::Kind::Process => WorkloadKind::Process,
            locus_core::Kind::Container => WorkloadKind::Container,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of host ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// What a tenant's workloads may use on a node beyond the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Kinds any user of the tenant who may create workloads may run. An
    /// org admin may run `process` even when it is not listed.
    pub kinds: BTreeSet<WorkloadKind>,
    /// Host ports workloads may bind.
    pub host_ports: Vec<PortRange>,
    /// Host directories (absolute) workloads may mount, with everything
    /// below them.
    pub host_paths: Vec<String>,
    /// Host devices (inventory ids) workloads may attach.
    pub devices: BTreeSet<String>,
}

impl Default for Grant {
    /// Sandboxed kinds only: no process (but for org admins), no host
    /// port, path or device.
    fn default() -> Self {
        Grant {
            kinds: [
                WorkloadKind::Wasm,
                WorkloadKind::Container,
                WorkloadKind::Vm,
            ]
            .into(),
            host_ports: Vec::new(),
            host_paths: Vec::new(),
            devices: BTreeSet::new(),
        }
    }
}

/// What one workload asks of its node, to check against a grant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadNeeds {
    pub kind: Option<WorkloadKind>,
    pub host_ports: Vec<u16>,
    pub host_paths: Vec<String>,
    pub devices: Vec<String>,
}

/// Why a grant does not cover a workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("tenant {tenant} may not run {kind} workloads{}", if *.kind == WorkloadKind::Process { " (only org admins may by default)" } else { "" })]
    Kind { tenant: String, kind: WorkloadKind },
    #[error("tenant {tenant} may not bind host port {port}")]
    Port { tenant: String, port: u16 },
    #[error("tenant {tenant} may not mount host path {path:?}")]
    Path { tenant: String, path: String },
    #[error("tenant {tenant} may not attach device {device:?}")]
    Device { tenant: String, device: String },
}

/// Whether `path` is `dir` or below it, comparing whole components and
/// refusing relative paths and `..`.
fn path_within(path: &str, dir: &str) -> bool {
    let clean = |p: &str| -> Option<Vec<String>> {
        if !p.starts_with('/') {
            return None;
        }
        let parts: Vec<String> = p
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect();
        if parts.iter().any(|c| c == "..") {
            return None;
        }
        Some(parts)
    };
    match (clean(path), clean(dir)) {
        (Some(p), Some(d)) => p.starts_with(&d),
        _ => false,
    }
}

impl Grant {
    /// Check a workload's needs for a user of `role` in tenant `tenant`.
    pub fn check(&self, tenant: &str, role: Role, needs: &WorkloadNeeds) -> Result<(), GrantError> {
        let tenant = tenant.to_owned();
        if let Some(kind) = needs.kind {
            let admin_process = kind == WorkloadKind::Process && role == Role::OrgAdmin;
            if !self.kinds.contains(&kind) && !admin_process {
                return Err(GrantError::Kind { tenant, kind });
            }
        }
        if let Some(&port) = needs
            .host_ports
            .iter()
            .find(|p| !self.host_ports.iter().any(|r| r.contains(**p)))
        {
            return Err(GrantError::Port { tenant, port });
        }
        if let Some(path) = needs
            .host_paths
            .iter()
            .find(|p| !self.host_paths.iter().any(|d| path_within(p, d)))
        {
            return Err(GrantError::Path {
                tenant,
                path: path.clone(),
            });
        }
        if let Some(device) = needs.devices.iter().find(|d| !self.devices.contains(*d)) {
            return Err(GrantError::Device {
                tenant,
                device: device.clone(),
            });
        }
        Ok(())
    }
}

/// How much a tenant uses (or asks for) of each quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub things: u64,
    pub workloads: u64,
}

/// The most a tenant may use, cluster-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub things: u64,
    pub workloads: u64,
}

impl Quota {
    /// No limit on anything.
    pub const UNLIMITED: Quota = Quota {
        cpu_millis: u64::MAX,
        memory_bytes: u64::MAX,
        storage_bytes: u64::MAX,
        things: u64::MAX,
        workloads: u64::MAX,
    };
}

impl Default for Quota {
    /// No limit: a tenant is bound only by the quotas its org set.
    fn default() -> Self {
        Quota::UNLIMITED
    }
}

/// One quota, by the name used in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    CpuMillis,
    MemoryBytes,
    StorageBytes,
    Things,
    Workloads,
}

impl QuotaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::CpuMillis => "cpu_millis",
            QuotaKind::MemoryBytes => "memory_bytes",
            QuotaKind::StorageBytes => "storage_bytes",
            QuotaKind::Things => "things",
            QuotaKind::Workloads => "workloads",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that would take a tenant past one of its quotas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quota {quota} of tenant {tenant}: {in_use} in use, {requested} more requested, limit {limit}"
)]
pub struct QuotaError {
    pub tenant: String,
    pub quota: QuotaKind,
    pub in_use: u64,
    pub requested: u64,
    pub limit: u64,
}

/// Whether `request` fits beside `usage` within `quota` of tenant
/// `tenant`; the error names the first quota it would exceed.
pub fn check_quota(
    tenant: &str,
    quota: &Quota,
    usage: &Usage,
    request: &Usage,
) -> Result<(), QuotaError> {
    let rows = [
        (
            QuotaKind::CpuMillis,
            quota.cpu_millis,
            usage.cpu_millis,
            request.cpu_millis,
        ),
        (
            QuotaKind::MemoryBytes,
            quota.memory_bytes,
            usage.memory_bytes,
            request.memory_bytes,
        ),
        (
            QuotaKind::StorageBytes,
            quota.storage_bytes,
            usage.storage_bytes,
            request.storage_bytes,
        ),
        (
            QuotaKind::Things,
            quota.things,
            usage.things,
            request.things,
        ),
        (
            QuotaKind::Workloads,
            quota.workloads,
            usage.workloads,
            request.workloads,
        ),
    ];
    for (kind, limit, in_use, requested) in rows {
        if requested > 0 && in_use.saturating_add(requested) > limit {
            return Err(QuotaError {
                tenant: tenant.to_owned(),
                quota: kind,
                in_use,
                requested,
                limit,
            });
        }
    }
    Ok(())
}

/// A tenant: its org, its quota and its grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: TenantName,
    pub org: OrgId,
    #[serde(default)]
    pub quota: Quota,
    #[serde(default)]
    pub grant: Grant,
}

impl Tenant {
    /// The tenant in full.
    pub fn reference(&self) -> TenantRef {
        TenantRef::new(self.org, self.name.clone())
    }

    /// [`check_quota`] with this tenant's quota.
    pub fn check_quota(&self, usage: &Usage, request: &Usage) -> Result<(), QuotaError> {
        check_quota(self.name.get(), &self.quota, usage, request)
    }

    /// [`Grant::check`] with this tenant's grant.
    pub fn check_grant(&self, role: Role, needs: &WorkloadNeeds) -> Result<(), GrantError> {
        self.grant.check(self.name.get(), role, needs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Tenant {
        Tenant {
            name: TenantName::try_from("acme".to_owned()).unwrap(),
            org: OrgId::from_bytes([1; 10]),
            quota: Quota {
                workloads: 10,
                memory_bytes: 8 << 30,
                ..Quota::default()
            },
            grant: Grant::default(),
        }
    }

    #[test]
    fn a_tenant_in_full_reads_back_from_its_text() {
        let t = acme().reference();
        assert_eq!(t.to_string().parse::<TenantRef>(), Ok(t.clone()));
        assert!("acme".parse::<TenantRef>().is_err());
        assert!("acme@zz".parse::<TenantRef>().is_err());
        assert!(format!("@{}", t.org).parse::<TenantRef>().is_err());
    }

    #[test]
    fn quota_errors_name_the_quota_and_tenant() {
        let t = acme();
        let usage = Usage {
            workloads: 10,
            ..Usage::default()
        };
        let one = Usage {
            workloads: 1,
            ..Usage::default()
        };
        let err = t.check_quota(&usage, &one).unwrap_err();
        assert_eq!(err.quota, QuotaKind::Workloads);
        assert_eq!(
            err.to_string(),
            "quota workloads of tenant acme: 10 in use, 1 more requested, limit 10"
        );
        assert!(
            t.check_quota(
                &Usage {
                    workloads: 9,
                    ..usage
                },
                &one
            )
            .is_ok()
        );
        // Asking for nothing never fails, even over the limit.
        assert!(
            t.check_quota(
                &Usage {
                    workloads: 11,
                    ..usage
                },
                &Usage::default()
            )
            .is_ok()
        );
        // No overflow.
        let huge = Usage {
            memory_bytes: u64::MAX,
            ..Usage::default()
        };
        let err = t.check_quota(&huge, &huge).unwrap_err();
        assert_eq!(err.quota, QuotaKind::MemoryBytes);
    }

    #[test]
    fn by_default_only_org_admins_run_processes() {
        let t = acme();
        let process = WorkloadNeeds {
            kind: Some(WorkloadKind::Process),
            ..WorkloadNeeds::default()
        };
        let err = t.check_grant(Role::TenantAdmin, &process).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant acme may not run process workloads (only org admins may by default)"
        );
        assert!(t.check_grant(Role::OrgAdmin, &process).is_ok());
        let wasm = WorkloadNeeds {
            kind: Some(WorkloadKind::Wasm),
            ..WorkloadNeeds::default()
        };
        assert!(t.check_grant(Role::Operator, &wasm).is_ok());
    }

    #[test]
    fn ports_paths_and_devices_must_be_granted() {
        let mut t = acme();
        t.grant.host_ports.push(PortRange {
            first: 8000,
            last: 8099,
        });
        t.grant.host_paths.push("/srv/acme".into());
        t.grant.devices.insert("usb-1a86".into());
        let needs = |ports: &[u16], paths: &[&str], devices: &[&str]| WorkloadNeeds {
            kind: None,
            host_ports: ports.to_vec(),
            host_paths: paths.iter().map(|p| p.to_string()).collect(),
            devices: devices.iter().map(|d| d.to_string()).collect(),
        };
        assert!(
            t.check_grant(
                Role::Operator,
                &needs(
                    &[8000, 8099],
                    &["/srv/acme", "/srv/acme/data/"],
                    &["usb-1a86"]
                )
            )
            .is_ok()
        );
        assert!(matches!(
            t.check_grant(Role::Operator, &needs(&[8100], &[], &[])),
            Err(GrantError::Port { port: 8100, .. })
        ));
        for bad in ["/srv/acme2", "/srv/acme/../other", "srv/acme", "/srv"] {
            assert!(
                matches!(
                    t.check_grant(Role::Operator, &needs(&[], &[bad], &[])),
                    Err(GrantError::Path { .. })
                ),
                "{bad} accepted"
            );
        }
        assert!(matches!(
            t.check_grant(Role::OrgAdmin, &needs(&[], &[], &["gpu0"])),
            Err(GrantError::Device { .. })
        ));
    }

    #[test]
    fn names_and_roles_parse() {
        assert!(UserName::try_from("alice@acme".to_owned()).is_ok());
        assert!(UserName::try_from("al ice".to_owned()).is_err());
        assert!(UserName::try_from(String::new()).is_err());
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(
            WorkloadKind::from(locus_core::Kind::Process),
            WorkloadKind::Process
        );
        let t = acme().reference();
        assert_eq!(
            t.to_string(),
            format!("acme@{}", OrgId::from_bytes([1; 10]))
        );
    }
}

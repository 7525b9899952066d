//! The catalogue of operations: one stable dotted name per API route (and
//! per access-control operation the API will have), whether it changes
//! anything, and what its resource belongs to.
//!
//! Tokens, policies, audit records and error messages name operations by
//! [`Operation::name`]; the API maps a route to its operation with
//! [`Operation::for_route`].

use std::fmt;

use crate::tenant::Role;

/// What an operation's resource belongs to, which decides whose tokens
/// may perform it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Anyone, without a token (liveness).
    Public,
    /// Any authenticated user, read-only views of the cluster (nodes,
    /// sites, host devices, signed checkpoints).
    Cluster,
    /// A record of one tenant: the token's tenant (or an org admin of the
    /// tenant's org), on a node of the tenant's org or one granted to it.
    Tenant,
    /// A record of the node's org (the node itself, its maintenance, the
    /// org's tenants and admissions): org admins of that org.
    Org,
    /// Calls between nodes, authenticated by node keys, never by a user
    /// token.
    NodeToNode,
}

impl Scope {
    /// The name used in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Public => "public",
            Scope::Cluster => "cluster",
            Scope::Tenant => "tenant",
            Scope::Org => "org",
            Scope::NodeToNode => "node",
        }
    }
}

/// How much an operation changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Changes nothing.
    Read,
    /// Changes workloads, things, artifacts or readings.
    Write,
    /// Changes who may do what: users, tokens, tenants, orgs, nodes.
    Admin,
}

impl Access {
    /// The name used in policies (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// One route of the API: method, path template (as in the OpenAPI
/// document) and its `operationId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
}

macro_rules! operations {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $access:ident, $scope:ident $(, $method:literal $path:literal $op_id:literal)? ;)*) => {
        /// Every operation locus authorizes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Operation {
            $( $(#[$doc])* $variant, )*
        }

        impl Operation {
            /// Every operation, in catalogue order.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant),*];

            /// The stable dotted name.
            pub fn name(self) -> &'static str {
                match self { $(Operation::$variant => $name,)* }
            }

            /// How much it changes.
            pub fn access(self) -> Access {
                match self { $(Operation::$variant => Access::$access,)* }
            }

            /// What its resource belongs to.
            pub fn scope(self) -> Scope {
                match self { $(Operation::$variant => Scope::$scope,)* }
            }

            /// The API route it is, if the API has it yet.
            pub fn route(self) -> Option<Route> {
                match self {
                    $(Operation::$variant => operations!(@route $($method $path $op_id)?),)*
                }
            }
        }
    };
    (@route) => { None };
    (@route $method:literal $path:literal $op_id:literal) => {
        Some(Route { method: $method, path: $path, operation_id: $op_id })
    };
}

operations! {
    // The node and the cluster.
    NodeHealth => "node.health", Read, Public, "GET" "/healthz" "healthz";
    NodeMetrics => "node.metrics", Read, Public, "GET" "/metrics" "metrics";
    NodeStatus => "node.status", Read, Cluster, "GET" "/api/v1/node" "node";
    NodeDevices => "node.devices", Read, Cluster, "GET" "/api/v1/devices" "devices";
    NodeList => "node.list", Read, Cluster, "GET" "/api/v1/nodes" "nodes";
    NodeRead => "node.read", Read, Cluster, "GET" "/api/v1/nodes/{node}" "node_by_id";
    NodeRtt => "node.rtt", Read, Cluster, "GET" "/api/v1/nodes/{node}/rtt/{other}" "rtt";
    SiteList => "site.list", Read, Cluster, "GET" "/api/v1/sites" "sites";
    // Workloads.
    WorkloadCreate => "workload.create", Write, Tenant, "POST" "/api/v1/workloads" "submit";
    WorkloadList => "workload.list", Read, Tenant, "GET" "/api/v1/workloads" "list";
    WorkloadRead => "workload.read", Read, Tenant, "GET" "/api/v1/workloads/{workload}" "inspect";
    WorkloadStart => "workload.start", Write, Tenant, "POST" "/api/v1/workloads/{workload}/start" "start";
    WorkloadStop => "workload.stop", Write, Tenant, "POST" "/api/v1/workloads/{workload}/stop" "stop";
    WorkloadKill => "workload.kill", Write, Tenant, "POST" "/api/v1/workloads/{workload}/kill" "kill";
    WorkloadUpdate => "workload.update", Write, Tenant, "PATCH" "/api/v1/workloads/{workload}" "update";
    WorkloadDelete => "workload.delete", Write, Tenant, "DELETE" "/api/v1/workloads/{workload}" "remove";
    WorkloadLogs => "workload.logs", Read, Tenant, "GET" "/api/v1/workloads/{workload}/logs" "logs";
    /// A node hands a workload it placed to the chosen node.
    WorkloadHandover => "workload.handover", Write, NodeToNode, "POST" "/api/v1/workloads/handover" "handover";
    // Artifacts.
    ArtifactPut => "artifact.put", Write, Tenant, "POST" "/api/v1/artifacts" "put_artifact";
    /// A node pushes a replica of a durable put to another.
    ArtifactReplicate => "artifact.replicate", Write, NodeToNode, "PUT" "/api/v1/artifacts/{cid}" "put_artifact_copy";
    ArtifactList => "artifact.list", Read, Tenant, "GET" "/api/v1/artifacts" "list_artifacts";
    ArtifactRead => "artifact.read", Read, Tenant, "GET" "/api/v1/artifacts/{cid}" "stat_artifact";
    ArtifactContent => "artifact.content", Read, Tenant, "GET" "/api/v1/artifacts/{cid}/content" "artifact_content";
    /// A node fetches verified spans from a holder.
    ArtifactSpan => "artifact.span", Read, NodeToNode, "GET" "/api/v1/artifacts/{cid}/bao" "artifact_bao";
    ArtifactFetch => "artifact.fetch", Write, Tenant, "POST" "/api/v1/artifacts/{cid}/fetch" "fetch_artifact";
    ArtifactPin => "artifact.pin", Write, Tenant, "POST" "/api/v1/artifacts/{cid}/pin" "pin_artifact";
    ArtifactUnpin => "artifact.unpin", Write, Tenant, "POST" "/api/v1/artifacts/{cid}/unpin" "unpin_artifact";
    /// Collection of the node's store: node maintenance.
    ArtifactCollect => "artifact.collect", Write, Org, "POST" "/api/v1/artifacts/gc" "collect_artifacts";
    // Readings.
    ReadingIngest => "reading.ingest", Write, Tenant, "POST" "/api/v3/event/{service}/{profile}/{device}/{source}" "add_edgex_event";
    ReadingList => "reading.list", Read, Tenant, "GET" "/api/v1/readings" "list_readings";
    /// The node's signed checkpoint: hashes only.
    ReadingCheckpoint => "reading.checkpoint", Read, Cluster, "GET" "/api/v1/readings/checkpoint" "latest_checkpoint";
    /// A span of the node's seal log, every tenant's readings in it.
    ReadingBundle => "reading.bundle", Read, Org, "GET" "/api/v1/readings/bundle" "export_bundle";
    ReadingProof => "reading.proof", Read, Tenant, "GET" "/api/v1/readings/{seq}/proof" "reading_inclusion_proof";
    /// Consistency of two checkpoints: hashes only.
    ReadingConsistency => "reading.consistency", Read, Cluster, "GET" "/api/v1/readings/consistency" "readings_consistency_proof";
    ReadingDeviceRange => "reading.device_range", Read, Tenant, "GET" "/api/v3/reading/device/name/{name}/start/{start}/end/{end}" "edgex_readings_by_device_and_time";
    ReadingDeviceLatest => "reading.device_latest", Read, Tenant, "GET" "/api/v3/reading/device/name/{name}" "edgex_readings_by_device";
    /// A child node exports its sealed readings to its parent.
    ReadingImport => "reading.import", Write, NodeToNode, "POST" "/api/v1/readings/import" "import_readings";
    ReadingImportOrigins => "reading.import_origins", Read, Org, "GET" "/api/v1/readings/imports" "list_import_origins";
    ReadingImported => "reading.imported", Read, Org, "GET" "/api/v1/readings/imports/{origin}" "list_imported_readings";
    // Things.
    ThingCreate => "thing.create", Write, Tenant, "POST" "/api/v1/things" "add_thing";
    ThingList => "thing.list", Read, Tenant, "GET" "/api/v1/things" "list_things";
    ThingRead => "thing.read", Read, Tenant, "GET" "/api/v1/things/{thing}" "inspect_thing";
    ThingDelete => "thing.delete", Write, Tenant, "DELETE" "/api/v1/things/{thing}" "remove_thing";
    ThingAttach => "thing.attach", Write, Tenant, "POST" "/api/v1/things/{thing}/attach" "attach_thing";
    /// A manager hands a thing to its new manager.
    ThingHandover => "thing.handover", Write, NodeToNode, "POST" "/api/v1/things/handover" "thing_handover";
    ThingCommand => "thing.command", Write, Tenant, "POST" "/api/v1/things/{thing}/commands" "thing_command";
    ThingDeviceRead => "thing.device_read", Read, Tenant, "GET" "/api/v3/device/name/{name}/{command}" "edgex_device_read";
    ThingDeviceWrite => "thing.device_write", Write, Tenant, "PUT" "/api/v3/device/name/{name}/{command}" "edgex_device_write";
    // Access control itself.
    OrgList => "org.list", Read, Cluster, "GET" "/api/v1/orgs" "list_orgs";
    OrgAdmit => "org.admit", Admin, Org, "POST" "/api/v1/orgs" "admit_org";
    /// The org lets a tenant of another org use its nodes.
    TenantGrant => "tenant.grant", Admin, Org, "POST" "/api/v1/grants" "grant_tenant";
    GrantList => "grant.list", Read, Org, "GET" "/api/v1/grants" "list_grants";
    /// An org admin makes a join token.
    NodeEnroll => "node.enroll", Admin, Org, "POST" "/api/v1/org/join-tokens" "create_join_token";
    /// A new machine enrolls: its join token, not a user token, is checked.
    NodeJoin => "node.join", Admin, Public, "POST" "/api/v1/org/enroll" "enroll_node";
    NodeRevoke => "node.revoke", Admin, Org;
    /// An org admin creates a tenant of its org or changes its quota and
    /// grant.
    TenantSet => "tenant.set", Admin, Org, "PUT" "/api/v1/tenants/{tenant}" "set_tenant";
    /// The tenants the caller reaches, with their quota and usage.
    TenantList => "tenant.list", Read, Tenant, "GET" "/api/v1/tenants" "list_tenants";
    TenantDelete => "tenant.delete", Admin, Org, "DELETE" "/api/v1/tenants/{tenant}" "remove_tenant";
    /// A tenant admin adds a user to its tenant and gets the user's token.
    UserCreate => "user.create", Admin, Tenant, "POST" "/api/v1/users" "add_user";
    UserList => "user.list", Read, Tenant, "GET" "/api/v1/users" "list_users";
    /// Removing a user revokes every token of it.
    UserDelete => "user.delete", Admin, Tenant, "DELETE" "/api/v1/users/{tenant}/{user}" "remove_user";
    /// The audit trail of the node's mutating calls.
    AuditList => "audit.list", Read, Org, "GET" "/api/v1/audit" "list_audit";
    /// Who the token speaks for.
    TokenWhoami => "token.whoami", Read, Cluster, "GET" "/api/v1/whoami" "whoami";
    TokenMint => "token.mint", Admin, Tenant, "POST" "/api/v1/tokens" "mint_token";
    TokenRevoke => "token.revoke", Admin, Tenant, "POST" "/api/v1/revocations" "revoke";
    // The market between orgs.
    MarketBook => "market.book", Read, Cluster, "GET" "/api/v1/market/book" "market_book";
    /// An org's node offers its spare resources: the org's commitment.
    MarketOffer => "market.offer", Write, Org, "POST" "/api/v1/market/offers" "market_offer";
    MarketRequest => "market.request", Write, Org, "POST" "/api/v1/market/requests" "market_request";
    MarketWithdraw => "market.withdraw", Write, Org, "DELETE" "/api/v1/market/book/{record}" "market_withdraw";
    MarketRounds => "market.rounds", Read, Cluster, "GET" "/api/v1/market/rounds" "market_rounds";
    MarketExplain => "market.explain", Read, Cluster, "GET" "/api/v1/market/explain/{record}" "market_explain";
    /// A customer's node proposes a contract to the provider's.
    MarketPropose => "market.propose", Write, NodeToNode, "POST" "/api/v1/market/proposals" "market_propose";
    ContractList => "contract.list", Read, Org, "GET" "/api/v1/market/contracts" "list_contracts";
    ContractRead => "contract.read", Read, Org, "GET" "/api/v1/market/contracts/{contract}" "inspect_contract";
    ContractSettle => "contract.settle", Write, Org, "POST" "/api/v1/market/contracts/{contract}/settlement" "settle_contract";
    MarketSettlement => "market.settlement", Write, NodeToNode, "POST" "/api/v1/market/settlement" "market_settlement";
    MarketAccount => "market.account", Read, Org, "GET" "/api/v1/market/account" "market_account";
}

impl Operation {
    /// Whether it changes anything.
    pub fn mutating(self) -> bool {
        self.access() != Access::Read
    }

    /// The operation named `name`.
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|o| o.name() == name)
    }

    /// The operation of the route `method path` (`path` as the template of
    /// the OpenAPI document, `/api/v1/workloads/{workload}`).
    pub fn for_route(method: &str, path: &str) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|o| {
            o.route()
                .is_some_and(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
        })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a user holding `role` may perform `op` on a resource it may
/// reach (which tenant and node it may reach is the token policy's part):
/// viewers read their tenant; operators also write its workloads, things,
/// artifacts and readings; tenant admins do everything in their tenant,
/// users and tokens included; org admins everything in their org's
/// tenants and the org's own records. Public operations need no role;
/// node-to-node operations are for nodes only.
pub fn role_allows(role: Role, op: Operation) -> bool {
    match op.scope() {
        Scope::Public => true,
        Scope::NodeToNode => false,
        Scope::Cluster => op.access() == Access::Read,
        Scope::Org => role == Role::OrgAdmin,
        Scope::Tenant => match role {
            Role::OrgAdmin | Role::TenantAdmin => true,
            Role::Operator => op.access() <= Access::Write,
            Role::Viewer => op.access() == Access::Read,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every `#[utoipa::path]` of locus-api, as (method, path,
    /// operationId): a test of the API can cross-check its OpenAPI
    /// document against [`Operation::for_route`] with the same list.
    const API_ROUTES: &[(&str, &str, &str)] = &[
        ("GET", "/healthz", "healthz"),
        ("GET", "/metrics", "metrics"),
        ("GET", "/api/v1/node", "node"),
        ("GET", "/api/v1/devices", "devices"),
        ("GET", "/api/v1/nodes", "nodes"),
        ("GET", "/api/v1/nodes/{node}", "node_by_id"),
        ("GET", "/api/v1/nodes/{node}/rtt/{other}", "rtt"),
        ("GET", "/api/v1/sites", "sites"),
        ("POST", "/api/v1/workloads", "submit"),
        ("GET", "/api/v1/workloads", "list"),
        ("GET", "/api/v1/workloads/{workload}", "inspect"),
        ("POST", "/api/v1/workloads/{workload}/start", "start"),
        ("POST", "/api/v1/workloads/{workload}/stop", "stop"),
        ("POST", "/api/v1/workloads/{workload}/kill", "kill"),
        ("PATCH", "/api/v1/workloads/{workload}", "update"),
        ("DELETE", "/api/v1/workloads/{workload}", "remove"),
        ("GET", "/api/v1/workloads/{workload}/logs", "logs"),
        ("POST", "/api/v1/workloads/handover", "handover"),
        ("POST", "/api/v1/artifacts", "put_artifact"),
        ("PUT", "/api/v1/artifacts/{cid}", "put_artifact_copy"),
        ("GET", "/api/v1/artifacts", "list_artifacts"),
        ("GET", "/api/v1/artifacts/{cid}", "stat_artifact"),
        ("GET", "/api/v1/artifacts/{cid}/content", "artifact_content"),
        ("GET", "/api/v1/artifacts/{cid}/bao", "artifact_bao"),
        ("POST", "/api/v1/artifacts/{cid}/fetch", "fetch_artifact"),
        ("POST", "/api/v1/artifacts/{cid}/pin", "pin_artifact"),
        ("POST", "/api/v1/artifacts/{cid}/unpin", "unpin_artifact"),
        ("POST", "/api/v1/artifacts/gc", "collect_artifacts"),
        (
            "POST",
            "/api/v3/event/{service}/{profile}/{device}/{source}",
            "add_edgex_event",
        ),
        ("GET", "/api/v1/readings", "list_readings"),
        ("GET", "/api/v1/readings/checkpoint", "latest_checkpoint"),
        ("GET", "/api/v1/readings/bundle", "export_bundle"),
        (
            "GET",
            "/api/v1/readings/{seq}/proof",
            "reading_inclusion_proof",
        ),
        (
            "GET",
            "/api/v1/readings/consistency",
            "readings_consistency_proof",
        ),
        (
            "GET",
            "/api/v3/reading/device/name/{name}/start/{start}/end/{end}",
            "edgex_readings_by_device_and_time",
        ),
        (
            "GET",
            "/api/v3/reading/device/name/{name}",
            "edgex_readings_by_device",
        ),
        ("POST", "/api/v1/readings/import", "import_readings"),
        ("GET", "/api/v1/readings/imports", "list_import_origins"),
        (
            "GET",
            "/api/v1/readings/imports/{origin}",
            "list_imported_readings",
        ),
        ("POST", "/api/v1/things", "add_thing"),
        ("GET", "/api/v1/things", "list_things"),
        ("GET", "/api/v1/things/{thing}", "inspect_thing"),
        ("DELETE", "/api/v1/things/{thing}", "remove_thing"),
        ("POST", "/api/v1/things/{thing}/attach", "attach_thing"),
        ("POST", "/api/v1/things/handover", "thing_handover"),
        ("POST", "/api/v1/things/{thing}/commands", "thing_command"),
        (
            "GET",
            "/api/v3/device/name/{name}/{command}",
            "edgex_device_read",
        ),
        (
            "PUT",
            "/api/v3/device/name/{name}/{command}",
            "edgex_device_write",
        ),
        ("GET", "/api/v1/orgs", "list_orgs"),
        ("POST", "/api/v1/orgs", "admit_org"),
        ("POST", "/api/v1/grants", "grant_tenant"),
        ("GET", "/api/v1/grants", "list_grants"),
        ("POST", "/api/v1/org/join-tokens", "create_join_token"),
        ("POST", "/api/v1/org/enroll", "enroll_node"),
        ("GET", "/api/v1/whoami", "whoami"),
        ("GET", "/api/v1/audit", "list_audit"),
        ("POST", "/api/v1/tokens", "mint_token"),
        ("POST", "/api/v1/revocations", "revoke"),
        ("GET", "/api/v1/market/book", "market_book"),
        ("POST", "/api/v1/market/offers", "market_offer"),
        ("POST", "/api/v1/market/requests", "market_request"),
        ("DELETE", "/api/v1/market/book/{record}", "market_withdraw"),
        ("GET", "/api/v1/market/rounds", "market_rounds"),
        ("GET", "/api/v1/market/explain/{record}", "market_explain"),
        ("POST", "/api/v1/market/proposals", "market_propose"),
        ("GET", "/api/v1/market/contracts", "list_contracts"),
        (
            "GET",
            "/api/v1/market/contracts/{contract}",
            "inspect_contract",
        ),
        (
            "POST",
            "/api/v1/market/contracts/{contract}/settlement",
            "settle_contract",
        ),
        ("POST", "/api/v1/market/settlement", "market_settlement"),
        ("GET", "/api/v1/market/account", "market_account"),
        ("PUT", "/api/v1/tenants/{tenant}", "set_tenant"),
        ("GET", "/api/v1/tenants", "list_tenants"),
        ("DELETE", "/api/v1/tenants/{tenant}", "remove_tenant"),
        ("POST", "/api/v1/users", "add_user"),
        ("GET", "/api/v1/users", "list_users"),
        ("DELETE", "/api/v1/users/{tenant}/{user}", "remove_user"),
    ];

    #[test]
    fn every_api_route_has_exactly_one_operation() {
        let mut seen = BTreeSet::new();
        for &(method, path, op_id) in API_ROUTES {
            let op = Operation::for_route(method, path)
                .unwrap_or_else(|| panic!("{method} {path} has no operation"));
            assert_eq!(
                op.route().map(|r| r.operation_id),
                Some(op_id),
                "{method} {path}"
            );
            assert!(seen.insert(op), "{op} maps two routes");
            // Reads are GETs and GETs are reads.
            assert_eq!(method == "GET", !op.mutating(), "{op}: {method}");
        }
        let routed: Vec<Operation> = Operation::ALL
            .iter()
            .copied()
            .filter(|o| o.route().is_some())
            .collect();
        assert_eq!(
            routed.len(),
            API_ROUTES.len(),
            "operations with a route the list lacks"
        );
    }

    #[test]
    fn names_are_unique_dotted_and_stable() {
        let names: BTreeSet<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), Operation::ALL.len());
        for op in Operation::ALL {
            let (noun, verb) = op.name().split_once('.').expect("dotted");
            assert!(
                !noun.is_empty() && !verb.is_empty() && !verb.contains('.'),
                "{op}"
            );
            assert!(
                op.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{op}"
            );
            assert_eq!(Operation::from_name(op.name()), Some(*op));
        }
        assert_eq!(Operation::WorkloadCreate.name(), "workload.create");
        assert_eq!(Operation::ThingRead.name(), "thing.read");
        assert_eq!(Operation::ArtifactPut.name(), "artifact.put");
        assert_eq!(Operation::from_name("workload.explode"), None);
    }

    #[test]
    fn roles_nest() {
        for &op in Operation::ALL {
            for pair in Role::ALL.windows(2) {
                // A stronger role may do all a weaker one may.
                assert!(
                    !role_allows(pair[1], op) || role_allows(pair[0], op),
                    "{} may {op} but {} may not",
                    pair[1],
                    pair[0]
                );
            }
        }
    }

    #[test]
    fn what_each_role_may_do() {
        use Operation::*;
        assert!(role_allows(Role::Viewer, WorkloadList));
        assert!(!role_allows(Role::Viewer, WorkloadCreate));
        assert!(role_allows(Role::Operator, WorkloadCreate));
        assert!(role_allows(Role::Operator, ThingCommand));
        assert!(!role_allows(Role::Operator, UserCreate));
        assert!(!role_allows(Role::Operator, TokenMint));
        assert!(role_allows(Role::TenantAdmin, UserCreate));
        assert!(role_allows(Role::TenantAdmin, TokenRevoke));
        assert!(!role_allows(Role::TenantAdmin, TenantSet));
        assert!(!role_allows(Role::TenantAdmin, ArtifactCollect));
        assert!(role_allows(Role::OrgAdmin, TenantSet));
        assert!(role_allows(Role::OrgAdmin, NodeEnroll));
        assert!(role_allows(Role::Viewer, NodeList));
        assert!(role_allows(Role::Viewer, NodeHealth));
        for role in Role::ALL {
            assert!(!role_allows(role, WorkloadHandover), "{role}");
            assert!(!role_allows(role, ArtifactSpan), "{role}");
        }
    }
}

use super::*;
use crate::revocation::{Revocation, RevocationKind, Revoker};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn node(n: u8) -> NodeId {
    NodeId::from_public_key(&key(n).verifying_key())
}

fn org(n: u8) -> OrgId {
    OrgId::from_public_key(&key(n).verifying_key())
}

/// Org A is key 1, org B key 2. Issuer nodes: 10 (org A), 11 (org B).
/// Nodes answering: 20 (org A), 21 (org B).
fn issuers(n: &NodeId, _cert: Option<&str>) -> Option<Issuer> {
    [(10, 1), (11, 2)].into_iter().find_map(|(k, o)| {
        (*n == node(k)).then(|| Issuer {
            key: key(k).verifying_key().to_bytes(),
            org: org(o),
        })
    })
}

fn tenant(o: u8, name: &str) -> TenantRef {
    TenantRef::new(org(o), TenantName::try_from(name.to_owned()).unwrap())
}

fn claims(role: Role) -> Claims {
    Claims {
        user: UserName::try_from("alice".to_owned()).unwrap(),
        tenant: tenant(1, "acme"),
        role,
        expires_at: NOW + 3600,
    }
}

fn token(role: Role) -> String {
    mint(&key(10), &claims(role), [42; 32]).unwrap()
}

fn none() -> BTreeSet<TenantRef> {
    BTreeSet::new()
}

/// A request for `op` on records of `resource` at node 20 (org A).
fn req<'a>(
    op: Operation,
    resource: Option<&'a TenantRef>,
    granted: &'a BTreeSet<TenantRef>,
) -> Request<'a> {
    Request {
        operation: op,
        resource_tenant: resource,
        target_node: node(20),
        node_org: org(1),
        granted_tenants: granted,
        now: NOW,
    }
}

fn check(token: &str, r: &Request<'_>) -> Result<Principal, Denied> {
    authorize(token, issuers, r, &RevocationSet::new())
}

#[test]
fn an_operator_works_in_its_tenant() {
    let acme = tenant(1, "acme");
    let g = none();
    let p = check(
        &token(Role::Operator),
        &req(Operation::WorkloadCreate, Some(&acme), &g),
    )
    .unwrap();
    assert_eq!(p.user.get(), "alice");
    assert_eq!(p.tenant, acme);
    assert_eq!(p.role, Role::Operator);
    assert_eq!(p.issuer, node(10));
    assert_eq!(p.revocation_ids.len(), 1);
    assert!(
        check(
            &token(Role::Operator),
            &req(Operation::ThingRead, Some(&acme), &g)
        )
        .is_ok()
    );
    // Cluster-wide reads and public operations need no tenant.
    assert!(check(&token(Role::Viewer), &req(Operation::NodeList, None, &g)).is_ok());
    assert!(check(&token(Role::Viewer), &req(Operation::NodeHealth, None, &g)).is_ok());
}

#[test]
fn expired_tokens_are_refused() {
    let acme = tenant(1, "acme");
    let g = none();
    let mut r = req(Operation::WorkloadList, Some(&acme), &g);
    r.now = NOW + 3600;
    let err = check(&token(Role::Viewer), &r).unwrap_err();
    assert!(
        matches!(err, Denied::Expired { now, .. } if now == NOW + 3600),
        "{err}"
    );
    assert!(err.to_string().starts_with("token expired"), "{err}");
    r.now = NOW + 3599;
    assert!(check(&token(Role::Viewer), &r).is_ok());
}

#[test]
fn a_signature_by_another_key_is_forged() {
    let acme = tenant(1, "acme");
    let g = none();
    // Names issuer 10 but is signed by key 99.
    let forged = mint_as(
        &key(99).to_bytes(),
        node(10),
        None,
        &claims(Role::OrgAdmin),
        [1; 32],
    )
    .unwrap();
    let err = check(&forged, &req(Operation::WorkloadCreate, Some(&acme), &g)).unwrap_err();
    assert_eq!(err, Denied::ForgedSignature(node(10)));
    // A node nobody knows as an issuer.
    let stranger = mint(&key(99), &claims(Role::OrgAdmin), [1; 32]).unwrap();
    assert_eq!(
        check(&stranger, &req(Operation::WorkloadCreate, Some(&acme), &g)).unwrap_err(),
        Denied::UnknownIssuer(node(99))
    );
    // A lookup that answers a key which is not the node's.
    let wrong_key = |_: &NodeId, _: Option<&str>| {
        Some(Issuer {
            key: key(99).verifying_key().to_bytes(),
            org: org(1),
        })
    };
    assert_eq!(
        authorize(
            &token(Role::Viewer),
            wrong_key,
            &req(Operation::WorkloadList, Some(&acme), &g),
            &RevocationSet::new()
        ),
        Err(Denied::UnknownIssuer(node(10)))
    );
}

#[test]
fn an_issuer_speaks_for_its_own_org_only() {
    let acme = tenant(1, "acme");
    let g = none();
    // Issuer 11 belongs to org B and claims a user of org A's tenant.
    let t = mint(&key(11), &claims(Role::OrgAdmin), [1; 32]).unwrap();
    let err = check(&t, &req(Operation::WorkloadCreate, Some(&acme), &g)).unwrap_err();
    assert_eq!(
        err,
        Denied::IssuerOfAnotherOrg {
            issuer: node(11),
            issuer_org: org(2),
            claimed: org(1)
        }
    );
}

#[test]
fn revoked_tokens_users_and_their_narrowings_are_refused() {
    let acme = tenant(1, "acme");
    let g = none();
    let t = token(Role::Operator);
    let r = req(Operation::WorkloadList, Some(&acme), &g);
    let p = check(&t, &r).unwrap();
    let by = Revoker::Org(org(1));
    let mut set = RevocationSet::new();
    set.insert(&Revocation {
        kind: RevocationKind::Token {
            id: p.revocation_ids[0].clone(),
        },
        by,
        at: NOW,
        until: None,
    })
    .unwrap();
    let err = authorize(&t, issuers, &r, &set).unwrap_err();
    assert!(matches!(err, Denied::Revoked(_)), "{err}");
    // A token narrowed from a revoked one is revoked with it.
    let narrowed = attenuate(
        &t,
        &Narrowing {
            read_only: true,
            ..Narrowing::default()
        },
        [3; 32],
    )
    .unwrap();
    assert!(matches!(
        authorize(&narrowed, issuers, &r, &set),
        Err(Denied::Revoked(_))
    ));
    // A revoked user's tokens are refused, whichever token.
    let mut set = RevocationSet::new();
    set.insert(&Revocation {
        kind: RevocationKind::User {
            tenant: acme.clone(),
            user: UserName::try_from("alice".to_owned()).unwrap(),
        },
        by,
        at: NOW,
        until: None,
    })
    .unwrap();
    let err = authorize(&token(Role::Viewer), issuers, &r, &set).unwrap_err();
    assert!(
        err.to_string().contains("user alice of tenant acme@"),
        "{err}"
    );
}

#[test]
fn other_tenants_are_out_of_reach() {
    let beta = tenant(1, "beta");
    let g = none();
    let err = check(
        &token(Role::TenantAdmin),
        &req(Operation::WorkloadList, Some(&beta), &g),
    )
    .unwrap_err();
    assert!(matches!(err, Denied::WrongTenant { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("may not workload.list in tenant beta@"),
        "{err}"
    );
    // A tenant-scoped operation that names no tenant acts in the token's own.
    check(
        &token(Role::Viewer),
        &req(Operation::WorkloadList, None, &g),
    )
    .unwrap();
    let err = check(
        &token(Role::Viewer),
        &req(Operation::WorkloadCreate, None, &g),
    )
    .unwrap_err();
    assert!(matches!(err, Denied::RoleDoesNotAllow { .. }), "{err}");
}

#[test]
fn viewers_cannot_write_and_operators_cannot_administer() {
    let acme = tenant(1, "acme");
    let g = none();
    let err = check(
        &token(Role::Viewer),
        &req(Operation::WorkloadCreate, Some(&acme), &g),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Denied::RoleDoesNotAllow {
            role: Role::Viewer,
            op: Operation::WorkloadCreate
        }
    );
    assert_eq!(
        err.to_string(),
        "role viewer does not allow workload.create"
    );
    assert!(matches!(
        check(
            &token(Role::Operator),
            &req(Operation::UserCreate, Some(&acme), &g)
        ),
        Err(Denied::RoleDoesNotAllow { .. })
    ));
    assert!(
        check(
            &token(Role::TenantAdmin),
            &req(Operation::UserCreate, Some(&acme), &g)
        )
        .is_ok()
    );
    assert!(matches!(
        check(
            &token(Role::TenantAdmin),
            &req(Operation::ArtifactCollect, None, &g)
        ),
        Err(Denied::RoleDoesNotAllow { .. })
    ));
}

#[test]
fn org_admins_reach_every_tenant_of_their_org_and_its_nodes() {
    let beta = tenant(1, "beta");
    let gamma = tenant(2, "gamma");
    let g = none();
    let t = token(Role::OrgAdmin);
    assert!(check(&t, &req(Operation::WorkloadDelete, Some(&beta), &g)).is_ok());
    assert!(check(&t, &req(Operation::ArtifactCollect, None, &g)).is_ok());
    assert!(matches!(
        check(&t, &req(Operation::WorkloadDelete, Some(&gamma), &g)),
        Err(Denied::WrongTenant { .. })
    ));
    // Org operations on a node of another org.
    let mut r = req(Operation::ArtifactCollect, None, &g);
    r.target_node = node(21);
    r.node_org = org(2);
    assert!(matches!(check(&t, &r), Err(Denied::OtherOrg { .. })));
}

#[test]
fn another_orgs_tenant_needs_a_grant_on_the_node() {
    // A user of gamma (org B) with a token from org B's issuer, on node 20
    // of org A.
    let gamma = tenant(2, "gamma");
    let c = Claims {
        tenant: gamma.clone(),
        ..claims(Role::Operator)
    };
    let t = mint(&key(11), &c, [5; 32]).unwrap();
    let g = none();
    let err = check(&t, &req(Operation::WorkloadCreate, Some(&gamma), &g)).unwrap_err();
    assert!(matches!(err, Denied::NotGranted { .. }), "{err}");
    let granted: BTreeSet<TenantRef> = [gamma.clone()].into();
    assert!(check(&t, &req(Operation::WorkloadCreate, Some(&gamma), &granted)).is_ok());
    // The grant is for the tenant, not for its org's other tenants.
    let delta = tenant(2, "delta");
    let admin = mint(
        &key(11),
        &Claims {
            tenant: delta.clone(),
            ..claims(Role::OrgAdmin)
        },
        [5; 32],
    )
    .unwrap();
    assert!(matches!(
        check(
            &admin,
            &req(Operation::WorkloadCreate, Some(&delta), &granted)
        ),
        Err(Denied::NotGranted { .. })
    ));
    assert!(
        check(
            &admin,
            &req(Operation::WorkloadCreate, Some(&gamma), &granted)
        )
        .is_ok()
    );
}

#[test]
fn node_to_node_calls_take_no_token() {
    let acme = tenant(1, "acme");
    let g = none();
    assert_eq!(
        check(
            &token(Role::OrgAdmin),
            &req(Operation::WorkloadHandover, Some(&acme), &g)
        )
        .unwrap_err(),
        Denied::NodeOnly {
            op: Operation::WorkloadHandover
        }
    );
}

#[test]
fn a_read_only_narrowing_reads_but_cannot_write() {
    let acme = tenant(1, "acme");
    let g = none();
    let t = attenuate(
        &token(Role::TenantAdmin),
        &Narrowing {
            read_only: true,
            ..Narrowing::default()
        },
        [7; 32],
    )
    .unwrap();
    let p = check(&t, &req(Operation::WorkloadList, Some(&acme), &g)).unwrap();
    assert_eq!(p.revocation_ids.len(), 2);
    assert_eq!(
        check(&t, &req(Operation::WorkloadCreate, Some(&acme), &g)).unwrap_err(),
        Denied::ReadOnly {
            op: Operation::WorkloadCreate
        }
    );
    assert_eq!(
        check(&t, &req(Operation::UserCreate, Some(&acme), &g)).unwrap_err(),
        Denied::ReadOnly {
            op: Operation::UserCreate
        }
    );
}

#[test]
fn a_node_narrowing_is_refused_elsewhere() {
    let acme = tenant(1, "acme");
    let g = none();
    let t = attenuate(
        &token(Role::Operator),
        &Narrowing {
            node: Some(node(30)),
            ..Narrowing::default()
        },
        [7; 32],
    )
    .unwrap();
    assert_eq!(
        check(&t, &req(Operation::WorkloadList, Some(&acme), &g)).unwrap_err(),
        Denied::NarrowedToNode { node: node(20) }
    );
    let mut r = req(Operation::WorkloadList, Some(&acme), &g);
    r.target_node = node(30);
    assert!(check(&t, &r).is_ok());
}

#[test]
fn an_operation_narrowing_allows_that_operation_only() {
    let acme = tenant(1, "acme");
    let g = none();
    let t = attenuate(
        &token(Role::Operator),
        &Narrowing {
            operation: Some(Operation::WorkloadStop),
            ..Narrowing::default()
        },
        [7; 32],
    )
    .unwrap();
    assert!(check(&t, &req(Operation::WorkloadStop, Some(&acme), &g)).is_ok());
    assert_eq!(
        check(&t, &req(Operation::WorkloadDelete, Some(&acme), &g)).unwrap_err(),
        Denied::NarrowedToOperation {
            op: Operation::WorkloadDelete
        }
    );
}

#[test]
fn a_tenant_narrowing_keeps_an_org_admin_to_one_tenant() {
    let acme = tenant(1, "acme");
    let beta = tenant(1, "beta");
    let g = none();
    let t = attenuate(
        &token(Role::OrgAdmin),
        &Narrowing {
            tenant: Some(beta.clone()),
            ..Narrowing::default()
        },
        [7; 32],
    )
    .unwrap();
    assert!(check(&t, &req(Operation::WorkloadCreate, Some(&beta), &g)).is_ok());
    assert!(check(&t, &req(Operation::NodeList, None, &g)).is_ok());
    assert_eq!(
        check(&t, &req(Operation::WorkloadCreate, Some(&acme), &g)).unwrap_err(),
        Denied::NarrowedToTenant {
            op: Operation::WorkloadCreate
        }
    );
    assert!(matches!(
        check(&t, &req(Operation::ArtifactCollect, None, &g)),
        Err(Denied::NarrowedToTenant { .. })
    ));
}

#[test]
fn a_shorter_expiry_and_narrowings_stack() {
    let acme = tenant(1, "acme");
    let g = none();
    let once = attenuate(
        &token(Role::Operator),
        &Narrowing {
            expires_at: Some(NOW + 60),
            ..Narrowing::default()
        },
        [7; 32],
    )
    .unwrap();
    let twice = attenuate(
        &once,
        &Narrowing {
            read_only: true,
            ..Narrowing::default()
        },
        [8; 32],
    )
    .unwrap();
    assert!(check(&twice, &req(Operation::WorkloadList, Some(&acme), &g)).is_ok());
    assert!(matches!(
        check(&twice, &req(Operation::WorkloadCreate, Some(&acme), &g)),
        Err(Denied::ReadOnly { .. })
    ));
    let mut later = req(Operation::WorkloadList, Some(&acme), &g);
    later.now = NOW + 60;
    assert!(matches!(check(&twice, &later), Err(Denied::Expired { .. })));
    assert_eq!(
        attenuate(&once, &Narrowing::default(), [9; 32]),
        Err(MintError::EmptyNarrowing)
    );
}

#[test]
fn an_appended_block_cannot_widen_a_token() {
    let acme = tenant(1, "acme");
    let g = none();
    let t = UnverifiedBiscuit::from_base64(token(Role::Viewer)).unwrap();
    let widened = t
        .append_with_keypair(
            &keypair(&[9; 32]).unwrap(),
            BlockBuilder::new()
                .code(r#"role("org_admin"); user("mallory"); role_may("viewer"); scope("public");"#)
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    let err = check(&widened, &req(Operation::WorkloadCreate, Some(&acme), &g)).unwrap_err();
    assert_eq!(
        err,
        Denied::RoleDoesNotAllow {
            role: Role::Viewer,
            op: Operation::WorkloadCreate
        }
    );
    let p = check(&widened, &req(Operation::WorkloadList, Some(&acme), &g)).unwrap();
    assert_eq!((p.user.get(), p.role), ("alice", Role::Viewer));
}

#[test]
fn malformed_tokens_are_refused_with_a_reason() {
    let acme = tenant(1, "acme");
    let g = none();
    let r = req(Operation::WorkloadList, Some(&acme), &g);
    for bad in ["", "not a token", "AAAA", &"A".repeat(MAX_TOKEN_CHARS + 1)] {
        assert!(
            matches!(check(bad, &r), Err(Denied::Malformed(_))),
            "{bad:.20}"
        );
    }
    // Any single changed character is refused.
    let t = token(Role::Operator);
    for i in (0..t.len()).step_by(7) {
        let mut bytes = t.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        if changed != t {
            assert!(check(&changed, &r).is_err(), "changed at {i}");
        }
    }
    // Too many blocks.
    let mut t = token(Role::Operator);
    for i in 1..MAX_TOKEN_BLOCKS {
        t = attenuate(
            &t,
            &Narrowing {
                read_only: true,
                ..Narrowing::default()
            },
            [i as u8; 32],
        )
        .unwrap();
    }
    assert!(check(&t, &r).is_ok());
    assert_eq!(
        attenuate(
            &t,
            &Narrowing {
                read_only: true,
                ..Narrowing::default()
            },
            [0; 32]
        ),
        Err(MintError::TooManyBlocks(MAX_TOKEN_BLOCKS + 1))
    );
}

fn any_role() -> impl Strategy<Value = Role> {
    proptest::sample::select(Role::ALL.to_vec())
}

fn any_op() -> impl Strategy<Value = Operation> {
    proptest::sample::select(Operation::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_refused_without_panic(s in "[A-Za-z0-9_=-]{0,300}") {
        let acme = tenant(1, "acme");
        let g = none();
        prop_assert!(check(&s, &req(Operation::WorkloadList, Some(&acme), &g)).is_err());
        let _ = attenuate(&s, &Narrowing { read_only: true, ..Narrowing::default() }, [0; 32]);
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let acme = tenant(1, "acme");
        let g = none();
        let s = biscuit_base64(&bytes);
        prop_assert!(check(&s, &req(Operation::WorkloadList, Some(&acme), &g)).is_err());
    }

    /// The Datalog policy and its explanation in words agree on every
    /// role, operation, tenant, node and grant.
    #[test]
    fn the_policy_and_its_explanation_agree(
        role in any_role(),
        op in any_op(),
        token_tenant in 0usize..3,
        resource in proptest::option::of(0usize..3),
        node_of_b in any::<bool>(),
        grant in any::<bool>(),
        read_only in any::<bool>(),
    ) {
        let tenants = [tenant(1, "acme"), tenant(1, "beta"), tenant(2, "gamma")];
        let token_tenant = &tenants[token_tenant];
        let issuer = if token_tenant.org == org(1) { 10 } else { 11 };
        let t = mint(&key(issuer), &Claims { tenant: token_tenant.clone(), ..claims(role) }, [1; 32]).unwrap();
        let t = if read_only {
            attenuate(&t, &Narrowing { read_only: true, ..Narrowing::default() }, [2; 32]).unwrap()
        } else {
            t
        };
        let resource = resource.map(|i| &tenants[i]);
        let granted: BTreeSet<TenantRef> = if grant { tenants.iter().cloned().collect() } else { BTreeSet::new() };
        let mut r = req(op, resource, &granted);
        if node_of_b {
            r.target_node = node(21);
            r.node_org = org(2);
        }
        let verdict = check(&t, &r);
        let expected = explain(token_tenant, role, &r);
        match (&verdict, &expected) {
            // A failed check of the token speaks before the policy.
            (Err(Denied::ReadOnly { .. }), _) => prop_assert!(read_only && op.mutating()),
            (Ok(_), None) => prop_assert!(!(read_only && op.mutating())),
            (Err(got), Some(want)) => prop_assert_eq!(got, want),
            _ => prop_assert!(false, "datalog {:?}, explanation {:?}", verdict, expected),
        }
    }
}

/// Base64url of raw bytes, as tokens are written.
fn biscuit_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

#[test]
fn inspect_reads_the_claims_and_every_block_without_a_key() {
    let t = token(Role::Operator);
    let seen = inspect(&t).unwrap();
    assert_eq!(seen.issuer, node(10));
    assert_eq!(seen.claims, claims(Role::Operator));
    assert_eq!(seen.effective_expires_at, NOW + 3600);
    assert_eq!(seen.blocks.len(), 1);
    assert!(
        seen.blocks[0].contains("role(\"operator\")"),
        "{}",
        seen.blocks[0]
    );

    let narrowed = attenuate(
        &t,
        &Narrowing {
            read_only: true,
            expires_at: Some(NOW + 60),
            ..Narrowing::default()
        },
        [7; 32],
    )
    .unwrap();
    let seen = inspect(&narrowed).unwrap();
    assert_eq!(seen.claims.expires_at, NOW + 3600);
    assert_eq!(seen.effective_expires_at, NOW + 60);
    assert_eq!(seen.blocks.len(), 2);
    assert!(
        seen.blocks[1].contains("access(\"read\")"),
        "{}",
        seen.blocks[1]
    );
    assert_eq!(seen.revocation_ids.len(), 2);

    assert!(matches!(
        inspect("not a token"),
        Err(MintError::Malformed(_))
    ));
}

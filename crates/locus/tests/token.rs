//! `locus token attenuate|inspect` on tokens minted here, checked with the
//! same `authorize` every node runs: a token narrowed to read-only reads
//! and may not write, one narrowed to another node is refused on this
//! one, and what is not a token is refused with the reason (exit 2).
//! And `locus bench access` answers the JSON it documents.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use ed25519_dalek::SigningKey;
use locus_access::{
    Claims, Denied, Issuer, Operation, OrgId, Principal, Request, RevocationSet, Role, TenantName,
    TenantRef, UserName, authorize, mint,
};
use locus_core::NodeId;
use locus_testkit::{bin, locus};
use serde_json::Value;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn node(n: u8) -> NodeId {
    NodeId::from_public_key(&key(n).verifying_key())
}

fn org() -> OrgId {
    OrgId::from_public_key(&key(1).verifying_key())
}

fn tenant(name: &str) -> TenantRef {
    TenantRef::new(org(), TenantName::try_from(name.to_owned()).unwrap())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An operator token of tenant acme, issued by node 10 (org key 1).
fn token() -> String {
    let claims = Claims {
        user: UserName::try_from("alice".to_owned()).unwrap(),
        tenant: tenant("acme"),
        role: Role::Operator,
        expires_at: now() + 3600,
    };
    mint(&key(10), &claims, [42; 32]).unwrap()
}

/// `token` asked for `op` on acme's records at `target`.
fn check(token: &str, op: Operation, target: NodeId) -> Result<Principal, Denied> {
    let acme = tenant("acme");
    let none = BTreeSet::new();
    let req = Request {
        operation: op,
        resource_tenant: Some(&acme),
        target_node: target,
        node_org: org(),
        granted_tenants: &none,
        now: now(),
    };
    let issuers = |n: &NodeId, _: Option<&str>| {
        (*n == node(10)).then(|| Issuer {
            key: key(10).verifying_key().to_bytes(),
            org: org(),
        })
    };
    authorize(token, issuers, &req, &RevocationSet::new())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `locus ARGS` with `input` on stdin.
fn with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_token_narrowed_to_read_only_reads_and_may_not_write() {
    let t = token();
    assert!(check(&t, Operation::WorkloadCreate, node(20)).is_ok());

    let out = locus(&["token", "attenuate", "--token", &t, "--read-only"]);
    assert!(out.status.success(), "{}", text(&out));
    let narrowed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_ne!(narrowed, t);

    let p = check(&narrowed, Operation::WorkloadList, node(20)).unwrap();
    assert_eq!(p.user.get(), "alice");
    assert_eq!(p.revocation_ids.len(), 2);
    assert!(
        matches!(
            check(&narrowed, Operation::WorkloadCreate, node(20)),
            Err(Denied::ReadOnly { .. })
        ),
        "a read-only token wrote"
    );

    // The same from stdin, as JSON, with an expiry too.
    let out = with_stdin(
        &[
            "token",
            "attenuate",
            "--token-file",
            "-",
            "--read-only",
            "--expires-in",
            "10m",
            "--json",
        ],
        &format!("{t}\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["narrowing"]["read_only"], true);
    let at = v["narrowing"]["expires_at"].as_u64().unwrap();
    assert!((now() + 590..=now() + 610).contains(&at), "{v}");
    let narrowed = v["token"].as_str().unwrap();
    assert!(check(narrowed, Operation::WorkloadList, node(20)).is_ok());

    // inspect shows both blocks, and says it verified nothing.
    let out = locus(&["token", "inspect", "--token", narrowed]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.starts_with("not verified:"), "{shown}");
    for needle in ["alice", "acme", "operator", "access(\"read\")", "block 1"] {
        assert!(shown.contains(needle), "{needle} missing: {shown}");
    }
    let out = locus(&["token", "inspect", "--token", narrowed, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["issuer"], node(10).to_string());
    assert_eq!(v["user"], "alice");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["org"], org().to_string());
    assert_eq!(v["role"], "operator");
    assert_eq!(v["blocks"].as_array().unwrap().len(), 2);
    assert_eq!(v["effective_expires_at"].as_u64(), Some(at));
}

#[test]
fn a_token_narrowed_to_another_node_is_refused_here() {
    let t = token();
    let elsewhere = node(21).to_string();
    let out = locus(&["token", "attenuate", "--token", &t, "--node", &elsewhere]);
    assert!(out.status.success(), "{}", text(&out));
    let narrowed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(check(&narrowed, Operation::WorkloadList, node(21)).is_ok());
    assert!(
        matches!(
            check(&narrowed, Operation::WorkloadList, node(20)),
            Err(Denied::NarrowedToNode { .. })
        ),
        "a token narrowed to node 21 was taken by node 20"
    );

    // Narrowed to tenant acme: acme's records still, in its own org.
    let out = locus(&["token", "attenuate", "--token", &t, "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out));
    let narrowed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(check(&narrowed, Operation::WorkloadCreate, node(20)).is_ok());
}

#[test]
fn what_is_not_a_token_or_a_narrowing_is_refused_with_the_reason() {
    let out = locus(&["token", "attenuate", "--token", "garbage", "--read-only"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid token"), "{}", text(&out));

    let out = locus(&["token", "inspect", "--token", "garbage"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid token"), "{}", text(&out));

    let t = token();
    let out = locus(&["token", "attenuate", "--token", &t]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nothing to narrow"), "{}", text(&out));

    let out = locus(&["token", "attenuate", "--token", &t, "--expires-in", "10x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("\"10x\""), "{}", text(&out));

    let out = locus(&["token", "attenuate", "--token", &t, "--node", "n1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--node"), "{}", text(&out));

    let out = locus(&["token", "attenuate", "--read-only"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_access_bench_answers_its_json() {
    // A small live part: two agents, two revocations, a second of load.
    let out = locus(&[
        "bench",
        "access",
        "--iterations",
        "20",
        "--agents",
        "2",
        "--revocations",
        "2",
        "--load-secs",
        "1",
        "--clients",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["benchmark"], "access");
    assert_eq!(v["iterations"], 20);
    assert!(v["token_bytes"]["fresh"].as_u64().unwrap() > 0);
    assert!(
        v["token_bytes"]["attenuated"].as_u64().unwrap()
            > v["token_bytes"]["fresh"].as_u64().unwrap()
    );
    let cases: Vec<&str> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            for field in ["us_p50", "us_p99", "us_max", "ops_per_sec"] {
                assert!(c[field].is_number(), "{field} of {c}");
            }
            c["case"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        cases,
        [
            "mint",
            "attenuate",
            "authorize_fresh",
            "authorize_attenuated",
            "authorize_denied"
        ]
    );
    let live = &v["live"];
    assert!(
        live["throughput"]["with_token_check_rps"].as_f64().unwrap() > 0.0,
        "{live}"
    );
    assert!(
        live["throughput"]["without_token_check_rps"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{live}"
    );
    assert_eq!(live["revocation"]["nodes"], 2);
    let p99 = live["revocation"]["all_nodes_refuse_ms_p99"]
        .as_f64()
        .unwrap();
    assert!(p99 > 0.0, "{live}");
}

//! Access end to end on live agents: zero setup on one machine, one join
//! token for the next, the authorization matrix of every operation of
//! the OpenAPI document, and nodes of an org that was never admitted
//! refused on node-only routes.

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use locus_access::{Operation, Role, Scope, role_allows};
use locus_testkit::*;
use serde_json::{Value, json};

/// The CLI run in `cwd` with nothing set: no token, no login, no data dir.
fn bare_cli(cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("LOCUS_API")
        .env_remove("LOCUS_TOKEN")
        .env_remove("LOCUS_DATA_DIR")
        .env_remove("LOCUS_CREDENTIAL")
        .env("LOCUS_LOGIN_FILE", cwd.join("login.json"))
        .stdin(Stdio::null())
        .output()
        .expect("run locus")
}

#[test]
fn a_fresh_data_dir_then_the_cli_on_the_same_machine_needs_no_other_step() {
    let dir = tempfile::tempdir().unwrap();
    // The default data dir, `.locus` in the working directory.
    let agent = Agent::start(&dir.path().join(".locus"), &[]);
    let api = agent.api();
    let out = bare_cli(dir.path(), &["--api", &api, "ps"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me = ok(&bare_cli(dir.path(), &["--api", &api, "--json", "whoami"]));
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["role"], "org_admin");
    assert_eq!(me["user"], "admin");
    // The credential is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    for f in ["admin.token", "org.key", "node.key"] {
        let mode = std::fs::metadata(dir.path().join(".locus").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // From elsewhere, without a token: refused, and told why.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = bare_cli(elsewhere.path(), &["--api", &api, "ps"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a token") && err.contains("no_token"),
        "{err}"
    );
    // `locus login` there saves a token; then it works, until logout.
    let token = agent.token().unwrap();
    ok(&bare_cli(
        elsewhere.path(),
        &["--api", &api, "login", "--token", &token],
    ));
    ok(&bare_cli(elsewhere.path(), &["--api", &api, "ps"]));
    ok(&bare_cli(elsewhere.path(), &["--api", &api, "logout"]));
    assert!(
        !bare_cli(elsewhere.path(), &["--api", &api, "ps"])
            .status
            .success()
    );
    // Health and metrics stay open.
    assert_eq!(
        anonymous()
            .get(agent.url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        anonymous()
            .get(agent.url("/metrics"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn a_second_node_joins_with_the_join_token_alone_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = Agent::start(&dir.path().join("first"), &[]);
    let token = ok(&cli(&first, &["org", "join-token"])).trim().to_owned();
    assert!(token.starts_with("locusjoin1."), "{token}");
    // No seed, no key, no certificate given: the token carries them.
    let second = Agent::start(&dir.path().join("second"), &["--join", &token]);
    wait_until(
        "the first node knows the second",
        Duration::from_secs(20),
        || {
            let nodes: Value = first
                .http()
                .get(first.url("/api/v1/nodes"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            nodes.as_array().is_some_and(|n| n.len() == 2)
        },
    );
    // The second node trusts tokens the first minted: same org.
    let me: Value = first
        .http()
        .get(second.url("/api/v1/whoami"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["user"], "admin", "{me}");
    let orgs: Value = first
        .http()
        .get(second.url("/api/v1/orgs"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(orgs.as_array().unwrap().len(), 1);
    assert_eq!(orgs[0]["org"], me["org"]);
    // Single use: a third machine with the same token is refused.
    let (code, stderr) = agent_fails(&dir.path().join("third"), &["--join", &token]);
    assert_ne!(code, 0);
    assert!(stderr.contains("already used 1 times of 1"), "{stderr}");
    // A forged token (another org's key) is refused by name.
    let other = Agent::start(&dir.path().join("other"), &[]);
    let foreign = ok(&cli(&other, &["org", "join-token"])).trim().to_owned();
    let r = anonymous()
        .post(first.url("/api/v1/org/enroll"))
        .json(&json!({"token": foreign, "node_key": "00".repeat(32), "proof": "00".repeat(64)}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("join token of org"),
        "{body}"
    );
}

/// Mint a token on `agent` as its admin.
fn mint(agent: &Agent, user: &str, role: &str, ttl: u64) -> String {
    let r = agent
        .http()
        .post(agent.url("/api/v1/tokens"))
        .json(&json!({"user": user, "role": role, "ttl_secs": ttl}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A token whose last signature byte is flipped.
fn forge(token: &str) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    URL_SAFE_NO_PAD.encode(bytes)
}

fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let name = &rest[start + 1..end];
        out.push_str(match name {
            "cid" => "bafkr4ihkr4ld3m4gqkjf4reryxsy2s5tkbxprqkow6fin2iiyvreuzzab4",
            "seq" | "start" | "end" => "1",
            _ => "nope",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_operation_of_the_openapi_document_is_authorized_as_its_entry_says() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    let stranger = Agent::start(&dir.path().join("b"), &[]);
    let admin = agent.token().unwrap();
    let expired = mint(&agent, "short", "viewer", 1);
    let revoked = mint(&agent, "gone", "operator", 3600);
    let r = agent
        .http()
        .post(agent.url("/api/v1/revocations"))
        .json(&json!({"token": revoked}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let creds: Vec<(&str, Option<String>, Option<Role>)> = vec![
        ("no token", None, None),
        ("expired", Some(expired), None),
        ("forged", Some(forge(&admin)), None),
        ("revoked", Some(revoked), None),
        ("another org", stranger.token(), None),
        (
            "viewer",
            Some(mint(&agent, "v", "viewer", 3600)),
            Some(Role::Viewer),
        ),
        (
            "operator",
            Some(mint(&agent, "o", "operator", 3600)),
            Some(Role::Operator),
        ),
        (
            "tenant admin",
            Some(mint(&agent, "t", "tenant_admin", 3600)),
            Some(Role::TenantAdmin),
        ),
        ("org admin", Some(admin), Some(Role::OrgAdmin)),
    ];
    std::thread::sleep(Duration::from_millis(1100));
    let doc: Value = anonymous()
        .get(agent.url("/api/v1/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let op = Operation::for_route(&method, path).unwrap_or_else(|| {
                panic!("{method} {path} has no operation: add it to the catalogue")
            });
            for (who, token, role) in &creds {
                let mut req = anonymous()
                    .request(
                        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                        agent.url(&concrete(path)),
                    )
                    .header("content-type", "application/json");
                if method != "GET" && method != "DELETE" {
                    req = req.body("{}");
                }
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let r = req.send().unwrap();
                let status = r.status().as_u16();
                let body = r.text().unwrap_or_default();
                let expected = match (op.scope(), role) {
                    (Scope::Public, _) => None,
                    (Scope::NodeToNode, _) => Some(401),
                    (_, None) => Some(401),
                    (_, Some(role)) if !role_allows(*role, op) => Some(403),
                    _ => None,
                };
                match expected {
                    Some(e) => assert_eq!(status, e, "{method} {path} ({op}) with {who}: {body}"),
                    None => assert!(
                        status != 401 && status != 403,
                        "{method} {path} ({op}) with {who} was refused: {status} {body}"
                    ),
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 54 * creds.len(), "{checked} checks");
    // Every refusal was counted by its code.
    let text = anonymous()
        .get(agent.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for code in [
        "no_token",
        "expired_token",
        "forged_token",
        "revoked_token",
        "unknown_issuer",
        "forbidden",
    ] {
        assert!(
            sum_metric(&text, &format!("locus_api_denied_total{{code=\"{code}\"}}")) > 0.0,
            "{code} counted"
        );
    }
}

#[test]
fn a_token_narrowed_offline_to_read_only_reads_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    let token = agent.token().unwrap();
    // The CLI narrows it without calling any node (no --api is reachable).
    let narrowed = ok(&locus(&[
        "--api",
        "http://127.0.0.1:9",
        "token",
        "attenuate",
        "--token",
        &token,
        "--read-only",
    ]))
    .trim()
    .to_owned();
    let read = anonymous()
        .get(agent.url("/api/v1/workloads"))
        .bearer_auth(&narrowed)
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = anonymous()
        .post(agent.url("/api/v1/artifacts"))
        .bearer_auth(&narrowed)
        .body("x")
        .send()
        .unwrap();
    assert_eq!(write.status(), 403);
    let body: Value = write.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{body}"
    );
}

#[test]
fn a_node_of_an_org_never_admitted_is_refused_on_node_only_routes() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(dir.path(), 170, "a", &[]);
    // A stranger gossips with the cluster (no cluster key) but founded its
    // own org: the fabric knows it, the org log does not.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = member(stranger_dir.path(), 171, "s", &[a.gossip]);
    wait_cluster(&[&a, &stranger], 2);
    let key = node_key(&stranger.agent.data_dir);
    let body = br#"{"workloads":[]}"#.to_vec();
    let digest = *blake3::hash(&body).as_bytes();
    wait_until(
        "the stranger's certificate reached a",
        Duration::from_secs(20),
        || {
            let headers = sign_call(
                &key,
                "POST",
                "/api/v1/workloads/handover",
                digest,
                unix_now(),
            );
            let mut req = anonymous()
                .post(a.agent.url("/api/v1/workloads/handover"))
                .header("content-type", "application/json")
                .body(body.clone());
            for (n, v) in &headers {
                req = req.header(*n, v);
            }
            let r = req.send().unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().unwrap_or(Value::Null);
            status == 401 && v["error"]["code"] == "unknown_org"
        },
    );
    let text = anonymous()
        .get(a.agent.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        sum_metric(
            &text,
            "locus_node_calls_refused_total{reason=\"unknown_org\"}"
        ) > 0.0
    );
}

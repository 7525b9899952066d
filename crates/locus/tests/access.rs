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
            // The callers' own tenant: what a role may do there is the
            // question, not whether it reaches another tenant.
            "tenant" => "default",
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
    for code in [
        "no_token",
        "expired_token",
        "forged_token",
        "revoked_token",
        "unknown_issuer",
        "forbidden",
    ] {
        assert!(
            metric(
                &agent,
                &format!("locus_api_denied_total{{code=\"{code}\"}}")
            ) > 0.0,
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
    // Narrowed to one operation: that one only.
    let one = ok(&locus(&[
        "token",
        "attenuate",
        "--token",
        &token,
        "--operation",
        "workload.list",
    ]))
    .trim()
    .to_owned();
    let get = |path: &str| {
        anonymous()
            .get(agent.url(path))
            .bearer_auth(&one)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(get("/api/v1/workloads"), 200);
    assert_eq!(get("/api/v1/things"), 403);
    let out = locus(&[
        "token",
        "attenuate",
        "--token",
        &token,
        "--operation",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
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
    assert!(
        metric(
            &a.agent,
            "locus_node_calls_refused_total{reason=\"unknown_org\"}"
        ) > 0.0
    );
}

#[test]
fn only_an_org_admin_runs_native_processes_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    let operator = mint(&agent, "ops", "operator", 3600);
    let spec =
        json!({"name": "sh", "kind": "process", "source": "/bin/sh", "args": ["-c", "true"]});
    let submit = |token: &str, spec: &Value| {
        anonymous()
            .post(agent.url("/api/v1/workloads?dry_run=true"))
            .bearer_auth(token)
            .json(spec)
            .send()
            .unwrap()
    };
    let r = submit(&operator, &spec);
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "not_granted", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not run process workloads (only org admins may by default)"),
        "{body}"
    );
    // A host port is not granted either; a sandboxed module is.
    let ported = json!({"name": "web", "kind": "container", "source": "busybox", "ports": [{"container": 80, "host": 8080}]});
    let r = submit(&operator, &ported);
    assert_eq!(r.status(), 403);
    let wasm = json!({"name": "m", "source": "/nonexistent.wasm"});
    assert_ne!(submit(&operator, &wasm).status(), 403);
    // The org admin may.
    assert_eq!(submit(&agent.token().unwrap(), &spec).status(), 200);
}

/// Mint on `agent`, as its admin, a token of `role` in tenant `tenant`.
fn mint_in(agent: &Agent, user: &str, role: &str, tenant: &str) -> String {
    let r = agent
        .http()
        .post(agent.url("/api/v1/tokens"))
        .json(&json!({"user": user, "role": role, "tenant": tenant}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    assert_eq!(v["tenant"], tenant);
    v["token"].as_str().unwrap().to_owned()
}

#[test]
fn tenants_see_only_their_own_records() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    let acme = mint_in(&agent, "ann", "operator", "acme");
    let globex = mint_in(&agent, "gus", "tenant_admin", "globex");
    let thing = |name: &str, tenant: &str| {
        json!({"name": name, "protocol": "mqtt", "tenant": tenant,
               "credentials": {"password": "pw-0123456789"},
               "resources": [{"name": "t"}]})
    };
    let base = agent.api();
    let as_user = |token: &str| {
        let token = token.to_owned();
        let base = base.clone();
        move |method: reqwest::Method, path: &str| {
            anonymous()
                .request(method, format!("{base}{path}"))
                .bearer_auth(&token)
        }
    };
    let ann = as_user(&acme);
    let gus = as_user(&globex);
    // Ann registers a thing; whatever tenant it names, it is acme's.
    let r = ann(reqwest::Method::POST, "/api/v1/things")
        .json(&thing("a-1", "globex"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = gus(reqwest::Method::POST, "/api/v1/things")
        .json(&thing("g-1", "default"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let names = |list: Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["name"].as_str().unwrap(),
                    t["tenant"].as_str().unwrap()
                )
            })
            .collect()
    };
    let listed: Value = ann(reqwest::Method::GET, "/api/v1/things")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(names(listed), ["a-1:acme"]);
    let listed: Value = gus(reqwest::Method::GET, "/api/v1/things")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(names(listed), ["g-1:globex"]);
    // The org admin sees both.
    let listed: Value = agent
        .http()
        .get(agent.url("/api/v1/things"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(names(listed).len(), 2);
    // Another tenant's thing: a read is a 404 like a missing one, a write 403.
    let hidden = gus(reqwest::Method::GET, "/api/v1/things/a-1")
        .send()
        .unwrap();
    assert_eq!(hidden.status(), 404);
    let missing = gus(reqwest::Method::GET, "/api/v1/things/nothing")
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let (h, m): (Value, Value) = (hidden.json().unwrap(), missing.json().unwrap());
    assert_eq!(h["error"]["code"], m["error"]["code"]);
    let write = gus(reqwest::Method::DELETE, "/api/v1/things/a-1")
        .send()
        .unwrap();
    assert_eq!(write.status(), 403);
    assert_eq!(
        ann(reqwest::Method::GET, "/api/v1/things/a-1")
            .send()
            .unwrap()
            .status(),
        200
    );
    // Workloads too: a module of acme is not globex's to see or stop.
    let wasm = json!({"name": "m", "source": "/nonexistent.wasm"});
    let r = ann(reqwest::Method::POST, "/api/v1/workloads")
        .json(&wasm)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let listed: Value = gus(reqwest::Method::GET, "/api/v1/workloads")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    let listed: Value = ann(reqwest::Method::GET, "/api/v1/workloads")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        gus(reqwest::Method::GET, "/api/v1/workloads/m")
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        gus(reqwest::Method::POST, "/api/v1/workloads/m/stop")
            .send()
            .unwrap()
            .status(),
        403
    );
    // Readings of acme's thing: in acme's EdgeX queries and proofs, not
    // globex's, which get what a device with no readings gets.
    let event = json!({
        "apiVersion": "v3",
        "event": {
            "apiVersion": "v3", "id": "7d3b1e2a-0f0c-4a4e-9a43-1c0e2b3d4f5a",
            "deviceName": "a-1", "profileName": "p", "sourceName": "t", "origin": 1_700_000_000_000_000_000i64,
            "readings": [{"resourceName": "t", "valueType": "Float64", "value": "21.5", "origin": 1_700_000_000_000_000_000i64}],
        }
    });
    let r = ann(reqwest::Method::POST, "/api/v3/event/s/p/a-1/t")
        .json(&event)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let edgex = |who: &dyn Fn(reqwest::Method, &str) -> reqwest::blocking::RequestBuilder,
                 path: &str|
     -> Value {
        who(reqwest::Method::GET, path)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    for path in [
        "/api/v3/reading/device/name/a-1",
        "/api/v3/reading/device/name/a-1/start/0/end/9000000000000000000",
    ] {
        assert_eq!(edgex(&ann, path)["totalCount"], 1, "{path}");
        assert_eq!(edgex(&gus, path)["totalCount"], 0, "{path}");
        assert_eq!(
            edgex(&gus, path),
            edgex(&gus, &path.replace("a-1", "nothing"))
        );
    }
    let mine: Value = ann(reqwest::Method::GET, "/api/v1/readings?thing=a-1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let seq = mine[0]["seq"].as_u64().unwrap_or_else(|| panic!("{mine}"));
    let proof = |who: &dyn Fn(reqwest::Method, &str) -> reqwest::blocking::RequestBuilder| {
        who(
            reqwest::Method::GET,
            &format!("/api/v1/readings/{seq}/proof"),
        )
        .send()
        .unwrap()
        .status()
    };
    wait_until(
        "the reading is in a checkpoint",
        Duration::from_secs(10),
        || proof(&ann) == 200,
    );
    assert_eq!(proof(&gus), 404);
    // Artifacts are their uploader's tenant's.
    let r = ann(reqwest::Method::POST, "/api/v1/artifacts?name=acme-module")
        .header("content-type", "application/octet-stream")
        .body(b"acme's bytes".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let put: Value = r.json().unwrap();
    let cid = put["cid"].as_str().unwrap().to_owned();
    assert_eq!(put["tenants"].as_array().unwrap().len(), 1, "{put}");
    let count = |who: &dyn Fn(reqwest::Method, &str) -> reqwest::blocking::RequestBuilder| {
        let all: Value = who(reqwest::Method::GET, "/api/v1/artifacts")
            .send()
            .unwrap()
            .json()
            .unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["cid"] == cid.as_str())
            .count()
    };
    assert_eq!(count(&ann), 1);
    assert_eq!(count(&gus), 0);
    for path in [
        format!("/api/v1/artifacts/{cid}"),
        format!("/api/v1/artifacts/{cid}/content"),
    ] {
        assert_eq!(
            ann(reqwest::Method::GET, &path).send().unwrap().status(),
            200,
            "{path}"
        );
        let hidden = gus(reqwest::Method::GET, &path).send().unwrap();
        assert_eq!(hidden.status(), 404, "{path}");
    }
    assert_eq!(
        gus(
            reqwest::Method::POST,
            &format!("/api/v1/artifacts/{cid}/pin")
        )
        .send()
        .unwrap()
        .status(),
        403
    );
    let r = gus(reqwest::Method::POST, "/api/v1/workloads?dry_run=true")
        .json(&json!({"name": "borrowed", "source": format!("cid:{cid}")}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().unwrap());
    let all: Value = agent
        .http()
        .get(agent.url("/api/v1/artifacts"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|a| a["cid"] == cid.as_str()),
        "the org admin sees it"
    );
    // A tenant admin cannot mint for another tenant, nor above its role.
    let r = gus(reqwest::Method::POST, "/api/v1/tokens")
        .json(&json!({"user": "x", "role": "viewer", "tenant": "acme"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = gus(reqwest::Method::POST, "/api/v1/tokens")
        .json(&json!({"user": "x", "role": "org_admin"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn a_token_of_org_a_is_taken_by_org_b_only_where_b_granted_its_tenant_and_a_revocation_reaches_all()
{
    // Org B: b1 founds it, b2 joins it. Org A: a1, gossiping with B.
    let b_dir = tempfile::tempdir().unwrap();
    let b1 = member(b_dir.path(), 180, "b", &[]);
    let b2 = member(b_dir.path(), 181, "b", &[b1.gossip]);
    let a_dir = tempfile::tempdir().unwrap();
    let a1 = member(a_dir.path(), 182, "a", &[b1.gossip]);
    wait_cluster(&[&b1, &b2, &a1], 3);
    let get = |agent: &Agent, path: &str, token: &str| -> (u16, Value) {
        let r = anonymous()
            .get(agent.url(path))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    };
    // A viewer of A's default tenant, minted by a1.
    let token = mint(&a1.agent, "ada", "viewer", 3600);
    // Before B admits A, a1 is not an issuer B trusts.
    let (status, body) = get(&b1.agent, "/api/v1/workloads", &token);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unknown_issuer");
    // B admits A and grants A's default tenant the use of b1 only.
    let orgs: Value = a1
        .agent
        .http()
        .get(a1.agent.url("/api/v1/orgs"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let (a_org, a_key) = (
        orgs[0]["org"].as_str().unwrap(),
        orgs[0]["key"].as_str().unwrap(),
    );
    ok(&cli(
        &b1.agent,
        &["org", "admit", "--key", a_key, "--name", "org a"],
    ));
    let b1_id = get_json(&b1.agent, "/api/v1/node")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&cli(
        &b1.agent,
        &[
            "org", "grant", "--org", a_org, "--tenant", "default", "--node", &b1_id,
        ],
    ));
    wait_until("b1 takes A's token", Duration::from_secs(20), || {
        get(&b1.agent, "/api/v1/workloads", &token).0 == 200
    });
    // B's own `default` tenant is not A's `default`: its records stay hidden.
    let r = b1
        .agent
        .http()
        .post(b1.agent.url("/api/v1/workloads"))
        .json(&json!({"name": "b-own", "source": "/nonexistent.wasm"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, listed) = get(&b1.agent, "/api/v1/workloads", &token);
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(get(&b1.agent, "/api/v1/workloads/b-own", &token).0, 404);
    // b2 learns the admission through the fabric, but was not granted.
    wait_until(
        "b2 knows org A and refuses A's tenant",
        Duration::from_secs(20),
        || {
            let (status, body) = get(&b2.agent, "/api/v1/workloads", &token);
            status == 403
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not granted"))
        },
    );
    let orgs: Value = b2
        .agent
        .http()
        .get(b2.agent.url("/api/v1/orgs"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(orgs.as_array().unwrap().len(), 2, "{orgs}");
    // A's own node takes it, of course.
    assert_eq!(get(&a1.agent, "/api/v1/workloads", &token).0, 200);
    // Revoked on a1: every node refuses it.
    let start = std::time::Instant::now();
    let r = a1
        .agent
        .http()
        .post(a1.agent.url("/api/v1/revocations"))
        .json(&json!({"token": token}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    for agent in [&a1.agent, &b1.agent, &b2.agent] {
        wait_until(
            "the node refuses the revoked token",
            Duration::from_secs(30),
            || {
                let (status, body) = get(agent, "/api/v1/workloads", &token);
                status == 401 && body["error"]["code"] == "revoked_token"
            },
        );
    }
    eprintln!(
        "every node of the three refuses the revoked token {} ms after the revocation",
        start.elapsed().as_millis()
    );
}

#[test]
fn every_mutating_call_is_in_the_signed_audit_trail_and_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    let viewer = mint(&agent, "vic", "viewer", 3600);
    // Allowed, refused for its role, refused for no token.
    let r = agent
        .http()
        .post(agent.url("/api/v1/artifacts"))
        .body("audited")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = anonymous()
        .post(agent.url("/api/v1/artifacts"))
        .bearer_auth(&viewer)
        .body("nope")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = anonymous()
        .post(agent.url("/api/v1/artifacts"))
        .body("nope")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // The node's own names are reserved: no thing, no EdgeX device.
    let r = agent
        .http()
        .post(agent.url("/api/v1/things"))
        .json(&json!({"name": "locus.audit", "protocol": "mqtt",
                      "credentials": {"password": "pw-0123456789"}, "resources": [{"name": "t"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = agent
        .http()
        .post(agent.url("/api/v3/event/s/p/locus.audit/workload.create"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut trail = Value::Null;
    wait_until(
        "the calls are in the audit trail",
        Duration::from_secs(10),
        || {
            trail = get_json(&agent, "/api/v1/audit");
            trail.as_array().is_some_and(|a| {
                a.iter()
                    .filter(|e| e["operation"] == "artifact.put")
                    .count()
                    == 3
            })
        },
    );
    let puts: Vec<&Value> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "artifact.put")
        .collect();
    assert_eq!(puts[0]["outcome"], "allowed");
    assert_eq!(puts[0]["who"], "admin@default");
    assert_eq!(puts[0]["role"], "org_admin");
    assert_eq!(puts[0]["status"], 201);
    assert_eq!(puts[1]["outcome"], "refused");
    assert_eq!(puts[1]["who"], "vic@default");
    assert_eq!(puts[1]["status"], 403);
    assert_eq!(puts[2]["who"], "anonymous");
    assert_eq!(puts[2]["status"], 401);
    // Only org admins read it; a tenant's readings never show it.
    let r = anonymous()
        .get(agent.url("/api/v1/audit"))
        .bearer_auth(&viewer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let readings: Value = anonymous()
        .get(agent.url("/api/v1/readings"))
        .bearer_auth(&viewer)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(readings.as_array().unwrap().len(), 0, "{readings}");
    // The CLI shows it.
    let text = ok(&cli(&agent, &["audit"]));
    assert!(
        text.contains("artifact.put") && text.contains("refused"),
        "{text}"
    );
    // Exported and checked offline.
    let last = puts[2]["seq"].as_u64().unwrap();
    let bundle = agent
        .http()
        .get(agent.url(&format!(
            "/api/v1/readings/bundle?start=0&count={}",
            last + 1
        )))
        .send()
        .unwrap();
    assert_eq!(bundle.status(), 200);
    let file = dir.path().join("audit.json");
    std::fs::write(&file, bundle.bytes().unwrap()).unwrap();
    let key = get_json(&agent, "/api/v1/readings/checkpoint")["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = locus(&["verify", file.to_str().unwrap(), "--key", &key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An entry altered in the file is named.
    let mut b: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let entries = b["entries"].as_array_mut().unwrap();
    let entry = entries
        .iter_mut()
        .find(|e| e["reading"]["resource"] == "artifact.put")
        .unwrap();
    let value = &mut entry["reading"]["value"]["string"];
    let forged = value.as_str().unwrap().replace("admin@", "eve@");
    *value = Value::String(forged);
    std::fs::write(&file, serde_json::to_vec(&b).unwrap()).unwrap();
    let out = locus(&["verify", file.to_str().unwrap(), "--key", &key]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn tenants_and_users_are_org_records_and_quotas_bind_cluster_wide() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(&dir.path().join("a"), &[]);
    // The org admin makes tenant acme: one workload, one thing, half a CPU,
    // and native processes allowed.
    let set = ok(&cli(
        &a,
        &[
            "tenant",
            "set",
            "acme",
            "--workloads",
            "1",
            "--things",
            "1",
            "--cpu",
            "500m",
            "--kind",
            "wasm",
            "--kind",
            "process",
        ],
    ));
    assert!(set.contains("tenant acme set"), "{set}");
    let bad = cli(&a, &["tenant", "set", "acme", "--host-port", "9-1"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--host-port"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // A tenant admin, then (by the tenant admin) an operator.
    let ann = ok(&cli(
        &a,
        &[
            "user",
            "add",
            "ann",
            "--tenant",
            "acme",
            "--role",
            "tenant_admin",
        ],
    ))
    .trim()
    .to_owned();
    let as_user = |token: &str, method: reqwest::Method, path: &str| {
        anonymous().request(method, a.url(path)).bearer_auth(token)
    };
    let r = as_user(&ann, reqwest::Method::POST, "/api/v1/users")
        .json(&json!({"user": "bob", "role": "operator"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let bob: Value = r.json().unwrap();
    assert_eq!(
        (bob["tenant"].as_str(), bob["role"].as_str()),
        (Some("acme"), Some("operator"))
    );
    let bob = bob["token"].as_str().unwrap().to_owned();
    // Nobody hands out more than they hold.
    let r = as_user(&ann, reqwest::Method::POST, "/api/v1/users")
        .json(&json!({"user": "eve", "role": "org_admin"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = as_user(&bob, reqwest::Method::POST, "/api/v1/users")
        .json(&json!({"user": "eve", "role": "viewer"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // The grant of the record applies: bob may run a process (dry run).
    let submit = |token: &str, spec: Value, dry: bool| {
        as_user(
            token,
            reqwest::Method::POST,
            if dry {
                "/api/v1/workloads?dry_run=true"
            } else {
                "/api/v1/workloads"
            },
        )
        .json(&spec)
        .send()
        .unwrap()
    };
    let process =
        json!({"name": "sh", "kind": "process", "source": "/bin/sh", "args": ["-c", "sleep 60"]});
    let r = submit(&bob, process.clone(), true);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    // Quotas name what they refuse.
    let big = json!({"name": "big", "source": "/nonexistent.wasm", "resources": {"cpu_millicores": 1000}});
    let r = submit(&bob, big, true);
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(body["error"]["details"]["quota"], "cpu_millis", "{body}");
    let r = submit(
        &bob,
        json!({"name": "m1", "source": "/nonexistent.wasm"}),
        false,
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = submit(
        &bob,
        json!({"name": "m2", "source": "/nonexistent.wasm"}),
        false,
    );
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(
        body["error"]["message"],
        "quota workloads of tenant acme: 1 in use, 1 more requested, limit 1",
        "{body}"
    );
    let thing = |name: &str| {
        json!({"name": name, "protocol": "mqtt",
               "credentials": {"password": "pw-0123456789"},
               "resources": [{"name": "t"}]})
    };
    let r = as_user(&bob, reqwest::Method::POST, "/api/v1/things")
        .json(&thing("t-1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = as_user(&bob, reqwest::Method::POST, "/api/v1/things")
        .json(&thing("t-2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["details"]["quota"], "things", "{body}");
    // Another tenant of the org is not bound by acme's quota.
    let other = mint_in(&a, "olga", "operator", "globex");
    assert_eq!(
        submit(
            &other,
            json!({"name": "g1", "source": "/nonexistent.wasm"}),
            false
        )
        .status(),
        201
    );
    // The org admin sees every tenant with its usage; ann only acme.
    let all: Value = serde_json::from_str(&ok(&cli(&a, &["--json", "tenant", "ls"]))).unwrap();
    let acme = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(acme["usage"]["workloads"], 1, "{acme}");
    assert_eq!(acme["usage"]["things"], 1, "{acme}");
    assert_eq!(acme["quota"]["cpu_millis"], 500, "{acme}");
    let mine: Value = as_user(&ann, reqwest::Method::GET, "/api/v1/tenants")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["name"], "acme");
    let users: Value =
        serde_json::from_str(&ok(&cli(&a, &["--json", "user", "ls", "--tenant", "acme"]))).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "bob"]);
    // Storage: what a tenant uploaded counts, once per artifact.
    ok(&cli(&a, &["tenant", "set", "lab", "--storage", "100"]));
    let lou = ok(&cli(&a, &["user", "add", "lou", "--tenant", "lab"]))
        .trim()
        .to_owned();
    let upload = |bytes: &[u8]| {
        as_user(&lou, reqwest::Method::POST, "/api/v1/artifacts")
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .unwrap()
    };
    assert_eq!(upload(&[1u8; 64]).status(), 201);
    let r = upload(&[2u8; 64]);
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["details"]["quota"], "storage_bytes", "{body}");
    assert_eq!(body["error"]["details"]["in_use"], 64, "{body}");
    // A second node of the org takes the signed records from the fabric;
    // it does not hold the org key, so it cannot write them.
    let token = ok(&cli(&a, &["org", "join-token"])).trim().to_owned();
    let b = Agent::start(&dir.path().join("b"), &["--join", &token]);
    wait_until(
        "b knows tenant acme and its users",
        Duration::from_secs(20),
        || {
            let t: Value = a
                .http()
                .get(b.url("/api/v1/tenants"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let u: Value = a
                .http()
                .get(b.url("/api/v1/users"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            t.as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "acme" && t["quota"]["workloads"] == 1)
                && u.as_array().unwrap().len() == 3
        },
    );
    // acme's workload counts on b too.
    let r = anonymous()
        .post(b.url("/api/v1/workloads?dry_run=true"))
        .bearer_auth(&bob)
        .json(&json!({"name": "m3", "source": "/nonexistent.wasm"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = a
        .http()
        .put(b.url("/api/v1/tenants/lab"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "no_org_key", "{body}");
    // Removing bob revokes his tokens.
    ok(&cli(&a, &["user", "rm", "bob", "--tenant", "acme"]));
    wait_until("b refuses bob's token", Duration::from_secs(20), || {
        anonymous()
            .get(b.url("/api/v1/whoami"))
            .bearer_auth(&bob)
            .send()
            .unwrap()
            .status()
            == 401
    });
    let r = as_user(&bob, reqwest::Method::GET, "/api/v1/whoami")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let users: Value = serde_json::from_str(&ok(&cli(&a, &["--json", "user", "ls"]))).unwrap();
    assert!(
        users.as_array().unwrap().iter().all(|u| u["name"] != "bob"),
        "{users}"
    );
    // Removing the tenant's record brings back the defaults.
    ok(&cli(&a, &["tenant", "rm", "acme"]));
    let r = submit(
        &ann,
        json!({"name": "m4", "source": "/nonexistent.wasm"}),
        true,
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

#[test]
fn the_api_serves_tls_with_the_node_key_and_the_cli_pins_the_node_or_its_org() {
    let dir = tempfile::tempdir().unwrap();
    let tls = free_addr();
    let a = Agent::start(&dir.path().join("a"), &["--listen-tls", &tls.to_string()]);
    let other = Agent::start(&dir.path().join("b"), &[]);
    let node_key = get_json(&a, "/api/v1/node")["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let org_key = get_json(&a, "/api/v1/orgs")[0]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_org = get_json(&other, "/api/v1/orgs")[0]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let https = format!("https://{tls}");
    let run = |args: &[&str]| {
        let mut v = vec!["--api", https.as_str()];
        v.extend_from_slice(args);
        Command::new(bin())
            .args(&v)
            .env_remove("LOCUS_API")
            .env_remove("LOCUS_TOKEN")
            .env_remove("LOCUS_PIN")
            .env("LOCUS_DATA_DIR", &a.data_dir)
            .env("LOCUS_LOGIN_FILE", dir.path().join("login.json"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    wait_until("the TLS listener answers", Duration::from_secs(10), || {
        std::net::TcpStream::connect(tls).is_ok()
    });
    // Pinned by the node key, then by the org key: the same API.
    for pin in [format!("node:{node_key}"), format!("org:{org_key}")] {
        let out = ok(&run(&["--pin", &pin, "--json", "whoami"]));
        let me: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(me["user"], "admin", "{pin}: {me}");
    }
    // Another key, another org, no pin at all: refused, and said why.
    let refused = |pin: Option<&str>, why: &str, code: i32| {
        let mut args = vec!["whoami"];
        if let Some(p) = pin {
            args = vec!["--pin", p, "whoami"];
        }
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
    };
    refused(
        Some(&format!("node:{}", "00".repeat(32))),
        "is not the pinned node key",
        1,
    );
    refused(
        Some(&format!("org:{other_org}")),
        "not of the pinned org",
        1,
    );
    refused(None, "say which node or org to trust with --pin", 2);
    refused(Some("ca:letsencrypt"), "--pin", 2);
    // The plain loopback API is still there, and a pin is no use to it.
    let out = Command::new(bin())
        .args([
            "--api",
            &a.api(),
            "--pin",
            &format!("node:{node_key}"),
            "whoami",
        ])
        .env("LOCUS_DATA_DIR", &a.data_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A TLS client nobody here wrote (Python's ssl, on OpenSSL) completes
    // the handshake with the ed25519 certificate and speaks HTTP/1.1
    // through it; the certificate's key is the node key.
    let script = format!(
        r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("{ip}", {port}), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        der = s.getpeercert(binary_form=True)
        version = s.version()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
print(version, der.hex(), answer.split(b"\r\n")[0].decode())
"#,
        ip = tls.ip(),
        port = tls.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(fields[0], "TLSv1.3", "{said}");
    assert!(
        fields[1].contains(&format!("032100{node_key}")),
        "the SPKI is the node key: {said}"
    );
    assert_eq!(&fields[2..], ["HTTP/1.1", "200", "OK"], "{said}");
    // A client that does no TLS gets no answer from the TLS port, and the
    // agent keeps serving.
    let mut plain = std::net::TcpStream::connect(tls).unwrap();
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut plain, &mut buf).unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"HTTP/1.1 200"),
        "plain HTTP on the TLS port"
    );
    ok(&run(&["--pin", &format!("node:{node_key}"), "whoami"]));
}

#[test]
fn metrics_can_be_put_behind_a_token_and_health_never_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("locus.toml");
    std::fs::write(&config, "[access]\npublic_metrics = false\n").unwrap();
    let a = Agent::start(
        &dir.path().join("a"),
        &["--config", config.to_str().unwrap()],
    );
    let status = |path: &str, token: Option<&str>| {
        let mut r = anonymous().get(a.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(status("/metrics", None), 401);
    assert_eq!(status("/healthz", None), 200);
    let viewer = mint(&a, "scraper", "viewer", 3600);
    assert_eq!(status("/metrics", Some(&viewer)), 200);
    // By default both answer anyone.
    let b = Agent::start(&dir.path().join("b"), &[]);
    assert_eq!(
        anonymous().get(b.url("/metrics")).send().unwrap().status(),
        200
    );
}

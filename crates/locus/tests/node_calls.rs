//! Node-only routes accept only calls signed by a node of the cluster:
//! each of them refuses an unsigned call, a replayed one, one dated
//! outside ±60 s, one signed by a key the cluster does not know and one
//! whose signature does not cover what is sent, each with a 401 naming
//! why and counted; a call signed by a member passes on to its handler.

use std::time::Duration;

use locus_testkit::*;
use serde_json::Value;

/// One node-only route and the answer of its handler to the call below.
struct Case {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    /// The digest the signature covers (the body's, or the CID's).
    digest: [u8; 32],
    /// Status once the signature is accepted.
    handled: u16,
}

fn send(
    agent: &Agent,
    c: &Case,
    path: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
    let mut req = http()
        .request(method, agent.url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn refused(got: (u16, Value), code: &str, says: &str, what: &str) {
    let (status, body) = got;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(says), "{what}: {message:?} says {says:?}");
}

/// One call to each node-only route, and the pushed copy's CID.
fn cases() -> (Vec<Case>, locus_core::ArtifactId) {
    let content = b"a copy pushed by a node".to_vec();
    let cid = locus_core::ArtifactId::of(&content);
    let absent = locus_core::ArtifactId::of(b"held nowhere");
    let json = |body: &str| {
        let body = body.as_bytes().to_vec();
        let digest = *blake3::hash(&body).as_bytes();
        (body, digest)
    };
    let (handover, handover_digest) = json("{}");
    let cases = vec![
        Case {
            method: "POST",
            path: "/api/v1/workloads/handover".into(),
            body: handover.clone(),
            digest: handover_digest,
            handled: 400,
        },
        Case {
            method: "POST",
            path: "/api/v1/things/handover".into(),
            body: handover.clone(),
            digest: handover_digest,
            handled: 400,
        },
        Case {
            method: "POST",
            path: "/api/v1/readings/import".into(),
            body: handover.clone(),
            digest: handover_digest,
            handled: 400,
        },
        Case {
            method: "GET",
            path: format!("/api/v1/artifacts/{absent}/bao?start=0&end=12"),
            body: Vec::new(),
            digest: *blake3::hash(b"").as_bytes(),
            handled: 404,
        },
        Case {
            method: "PUT",
            path: format!("/api/v1/artifacts/{cid}?replicas=1"),
            body: content.clone(),
            digest: *cid.digest(),
            handled: 201,
        },
    ];
    (cases, cid)
}

#[test]
fn node_only_routes_take_only_calls_signed_by_a_known_node() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(dir.path(), 160, "a", &[]);
    let b = member(dir.path(), 161, "b", &[a.gossip]);
    wait_cluster(&[&a, &b], 2);
    let member_key = node_key(&a.agent.data_dir);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);

    let (cases, cid) = cases();
    let refused_before = metric(&b.agent, "locus_node_calls_refused_total");
    for c in &cases {
        let what = format!("{} {}", c.method, c.path);
        let sign = |key, date| sign_call(key, c.method, &c.path, c.digest, date);

        // Unsigned.
        refused(
            send(&b.agent, c, &c.path, &c.body, &[]),
            "unsigned",
            "unsigned node-to-node call",
            &what,
        );
        // Signed by a member: the handler answers.
        let headers = sign(&member_key, unix_now());
        let (status, body) = send(&b.agent, c, &c.path, &c.body, &headers);
        assert_eq!(status, c.handled, "{what} signed by a member: {body}");
        // The same call again.
        refused(
            send(&b.agent, c, &c.path, &c.body, &headers),
            "replayed_nonce",
            "replayed nonce",
            &what,
        );
        // Dated outside the window, either way.
        for date in [unix_now() - 120, unix_now() + 120] {
            refused(
                send(&b.agent, c, &c.path, &c.body, &sign(&member_key, date)),
                "stale_date",
                "date outside the ±60 s window",
                &what,
            );
        }
        // Signed by a key the cluster does not know.
        refused(
            send(&b.agent, c, &c.path, &c.body, &sign(&stranger, unix_now())),
            "unknown_node",
            "unknown node",
            &what,
        );
        // Signed by a member, but not what is sent: another query, and a
        // forged signature claiming the member.
        let other_path = if c.path.contains('?') {
            format!("{}&x=1", c.path)
        } else {
            format!("{}?x=1", c.path)
        };
        refused(
            send(
                &b.agent,
                c,
                &other_path,
                &c.body,
                &sign(&member_key, unix_now()),
            ),
            "bad_signature",
            "bad signature",
            &what,
        );
        let mut forged = sign(&stranger, unix_now());
        let claimed = sign(&member_key, unix_now());
        forged[0] = claimed[0].clone();
        refused(
            send(&b.agent, c, &c.path, &c.body, &forged),
            "bad_signature",
            "bad signature",
            &what,
        );
        if !c.body.is_empty() && c.method == "POST" {
            // Another body under the member's signature of this one.
            refused(
                send(
                    &b.agent,
                    c,
                    &c.path,
                    b"{\"x\":1}",
                    &sign(&member_key, unix_now()),
                ),
                "bad_signature",
                "bad signature",
                &what,
            );
        }
    }
    // The copy pushed by the member is stored.
    let held: Value = get_json(&b.agent, "/api/v1/artifacts");
    assert!(
        held.as_array()
            .unwrap()
            .iter()
            .any(|v| v["cid"] == cid.to_string().as_str()),
        "{held}"
    );
    // Every refusal is counted by its reason.
    let text = http()
        .get(b.agent.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for (reason, at_least) in [
        ("unsigned", 5.0),
        ("replayed_nonce", 5.0),
        ("stale_date", 10.0),
        ("unknown_node", 5.0),
        ("bad_signature", 13.0),
    ] {
        let n = sum_metric(
            &text,
            &format!("locus_node_calls_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= at_least, "{reason}: {n} refusals counted");
    }
    assert!(metric(&b.agent, "locus_node_calls_refused_total") - refused_before >= 38.0);

    // User routes stay unsigned: an upload and a stat.
    let r = http()
        .post(b.agent.url("/api/v1/artifacts"))
        .body("a user upload")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = http()
        .get(b.agent.url(&format!("/api/v1/artifacts/{cid}")))
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn a_node_whose_certificate_was_revoked_is_refused_everywhere_and_gets_no_work() {
    let dir = tempfile::tempdir().unwrap();
    let a = member(dir.path(), 162, "a", &[]);
    let b = member(dir.path(), 163, "b", &[a.gossip]);
    let c = member(dir.path(), 164, "c", &[a.gossip]);
    wait_cluster(&[&a, &b, &c], 3);
    let c_key = node_key(&c.agent.data_dir);
    let c_id = locus_core::NodeId::from_public_key(&c_key.verifying_key()).to_string();
    let (cases, _) = cases();
    // Before: b takes c's signed call.
    let handover = &cases[0];
    let handover_by_c = || {
        let h = sign_call(
            &c_key,
            handover.method,
            &handover.path,
            handover.digest,
            unix_now(),
        );
        send(&b.agent, handover, &handover.path, &handover.body, &h).0
    };
    wait_until("b knows c's certificate", Duration::from_secs(20), || {
        handover_by_c() == handover.handled
    });
    // a holds the org key: it revokes c's certificate.
    let r = a
        .agent
        .http()
        .post(a.agent.url("/api/v1/revocations"))
        .json(&serde_json::json!({"node": c_id}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    wait_until("b refuses c", Duration::from_secs(20), || {
        handover_by_c() == 401
    });
    for case in &cases {
        let h = sign_call(&c_key, case.method, &case.path, case.digest, unix_now());
        refused(
            send(&b.agent, case, &case.path, &case.body, &h),
            "revoked_certificate",
            "revoked",
            &format!("{} {} signed by a revoked node", case.method, case.path),
        );
    }
    // No work goes to c any more: of a dozen workloads placed by a, none
    // is c's (spread over three nodes, about a third would be).
    for i in 0..12 {
        let r = a
            .agent
            .http()
            .post(a.agent.url("/api/v1/workloads"))
            .json(&serde_json::json!({
                "name": format!("w{i}"), "kind": "process",
                "source": "/bin/sleep", "args": ["300"]
            }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    }
    wait_until("every workload placed", Duration::from_secs(30), || {
        let all: Value = get_json(&a.agent, "/api/v1/workloads");
        all.as_array().unwrap().len() == 12
            && all
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["state"] == "running")
    });
    let all: Value = get_json(&a.agent, "/api/v1/workloads");
    let owners: std::collections::BTreeSet<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["owner"].as_str().unwrap())
        .collect();
    assert!(!owners.contains(c_id.as_str()), "{owners:?}");
    assert!(owners.len() >= 2, "spread over a and b: {owners:?}");
}

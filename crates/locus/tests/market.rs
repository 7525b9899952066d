//! The market between orgs on real agents: nodes of three and four orgs
//! on loopback, offers and requests on the shared book, rounds every
//! node rechecks, contracts signed by both orgs over the node-to-node
//! call, checked offline with `locus verify contract`, and a negotiation
//! that restarts elsewhere after the provider's rules reject the customer.

use std::path::Path;
use std::time::Duration;

use locus_testkit::*;
use serde_json::Value;

/// Every org admits every other, each on its own log (a node trusts the
/// nodes of the orgs its org admitted).
fn admit_each_other(orgs: &[&Member]) {
    let keys: Vec<(String, String)> = orgs
        .iter()
        .map(|m| {
            let v = get_json(&m.agent, "/api/v1/orgs");
            (
                v[0]["org"].as_str().unwrap().to_owned(),
                v[0]["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (i, m) in orgs.iter().enumerate() {
        for (j, (_, key)) in keys.iter().enumerate() {
            if i != j {
                ok(&cli(
                    &m.agent,
                    &["org", "admit", "--key", key, "--name", &format!("org {j}")],
                ));
            }
        }
    }
    // Every node of each org takes the admissions before going on.
    wait_until(
        "every org admits the others",
        Duration::from_secs(20),
        || {
            orgs.iter().all(|m| {
                get_json(&m.agent, "/api/v1/orgs")
                    .as_array()
                    .map_or(0, Vec::len)
                    == orgs.len()
            })
        },
    );
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

fn contracts(m: &Member) -> Vec<Value> {
    json_of(&cli(&m.agent, &["--json", "contract", "ls"]))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn node_id(m: &Member) -> String {
    get_json(&m.agent, "/api/v1/node")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn org_id(m: &Member) -> String {
    get_json(&m.agent, "/api/v1/orgs")[0]["org"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn rules_config(dir: &Path, rules: &str) -> String {
    let rules_path = dir.join("rules.toml");
    std::fs::write(&rules_path, rules).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("[market]\nrules = {:?}\n", rules_path.display().to_string()),
    )
    .unwrap();
    config.display().to_string()
}

#[test]
fn a_request_meets_an_offer_and_both_orgs_sign_a_contract_anyone_verifies() {
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a1 = member(a_dir.path(), 190, "lab", &[]);
    let b1 = member(b_dir.path(), 191, "lab", &[a1.gossip]);
    let c1 = member(c_dir.path(), 192, "lab", &[a1.gossip]);
    wait_cluster(&[&a1, &b1, &c1], 3);
    admit_each_other(&[&a1, &b1, &c1]);

    let offer = json_of(&cli(
        &b1.agent,
        &["--json", "market", "offer", "--price", "300"],
    ));
    assert_eq!(offer["kind"], "offer");
    assert!(
        offer["class"].as_str().unwrap().contains("@lab standby"),
        "{offer}"
    );
    // Each provider measured its own site at 0 ms.
    assert_eq!(offer["site_rtt_ms"]["lab"], 0, "{offer}");
    ok(&cli(&c1.agent, &["market", "offer", "--price", "600"]));

    // A request near a site no offer measured wins its class and stays
    // unmatched: no winning seller is near it.
    let far = json_of(&cli(
        &a1.agent,
        &[
            "--json",
            "market",
            "request",
            "--cpu",
            "500m",
            "--memory",
            "256MiB",
            "--max-price",
            "800",
            "--near",
            "nowhere:50",
        ],
    ));
    assert_eq!(far["near"]["site"], "nowhere", "{far}");
    let far_id = far["id"].as_str().unwrap().to_owned();
    wait_until(
        "a round clears the far request, unmatched",
        Duration::from_secs(20),
        || {
            let e = json_of(&cli(&a1.agent, &["--json", "market", "explain", &far_id]));
            e["clearing"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("within 50 ms of nowhere"))
        },
    );
    let explained = ok(&cli(&a1.agent, &["market", "explain", &far_id]));
    assert!(
        explained.contains("near: within 50 ms of nowhere"),
        "{explained}"
    );
    assert!(contracts(&a1).is_empty());
    ok(&cli(&a1.agent, &["market", "withdraw", &far_id]));
    let bad = cli(&a1.agent, &["market", "request", "--near", "lab"]);
    assert!(!bad.status.success(), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--near: \"lab\""),
        "{bad:?}"
    );

    // Near a site its providers are in: it trades.
    let request = json_of(&cli(
        &a1.agent,
        &[
            "--json",
            "market",
            "request",
            "--cpu",
            "500m",
            "--memory",
            "256MiB",
            "--max-price",
            "800",
            "--duration",
            "1h",
            "--near",
            "lab:50",
        ],
    ));
    let request_id = request["id"].as_str().unwrap().to_owned();

    let took = wait_until(
        "the customer holds a contract",
        Duration::from_secs(20),
        || contracts(&a1).len() == 1,
    );
    eprintln!("request → signed contract in {took:?}");
    let c = &contracts(&a1)[0];
    assert_eq!(c["role"], "customer");
    assert_eq!(
        c["provider"],
        node_id(&b1).as_str(),
        "the cheapest offer wins"
    );
    assert_eq!(
        c["buyer_pays"], 600,
        "at the first losing seller's cost, not its own"
    );
    assert_eq!(
        c["arbitrator_org"],
        org_id(&c1).as_str(),
        "the only node of a third org"
    );
    let id = c["id"].as_str().unwrap().to_owned();
    wait_until(
        "the provider and the arbitrator hold it",
        Duration::from_secs(20),
        || {
            contracts(&b1)
                .iter()
                .any(|x| x["id"] == id.as_str() && x["role"] == "provider")
                && contracts(&c1)
                    .iter()
                    .any(|x| x["id"] == id.as_str() && x["role"] == "arbitrator")
        },
    );
    // The matched records leave the book; the other offer stays.
    wait_until(
        "the book holds only c1's offer",
        Duration::from_secs(10),
        || {
            let book = json_of(&cli(&c1.agent, &["--json", "market", "book"]));
            let book = book.as_array().unwrap();
            book.len() == 1 && book[0]["node"] == node_id(&c1).as_str()
        },
    );
    // Every node rechecks the rounds (one that lists a record a node never
    // received before it left the book stays refused there).
    for m in [&a1, &b1, &c1] {
        wait_until(
            &format!("{} checks a round", m.name),
            Duration::from_secs(10),
            || {
                let rounds = json_of(&cli(&m.agent, &["--json", "market", "rounds"]));
                rounds
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["refused"].is_null())
            },
        );
    }
    let explained = ok(&cli(&a1.agent, &["market", "explain", &request_id]));
    assert!(explained.contains("contract"), "{explained}");

    // The signed contract checks offline, and a changed price does not.
    let file = a_dir.path().join("contract.json");
    ok(&cli(
        &a1.agent,
        &["contract", "show", &id[..12], "-o", file.to_str().unwrap()],
    ));
    let out = locus(&["verify", "contract", file.to_str().unwrap()]);
    let text = ok(&out);
    assert!(text.contains("valid"), "{text}");
    let out = locus(&["--json", "verify", "contract", file.to_str().unwrap()]);
    assert_eq!(json_of(&out)["valid"], true);
    let mut tampered: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    tampered["terms"]["buyer_pays"] = Value::from(650);
    std::fs::write(&file, tampered.to_string()).unwrap();
    let out = locus(&["verify", "contract", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("signature"),
        "{out:?}"
    );
    std::fs::write(&file, "not a contract").unwrap();
    let out = locus(&["verify", "contract", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither a contract nor a settlement"),
        "{out:?}"
    );
}

/// The contract's settlement as `m` sees it.
fn settlement(m: &Member, id: &str) -> Value {
    // (A node that has not taken the contract from the fabric yet: null.)
    m.agent
        .http()
        .get(m.agent.url(&format!("/api/v1/market/contracts/{id}")))
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.json::<Value>().ok())
        .map_or(Value::Null, |c| c["settlement"].clone())
}

/// `m`'s org's accounts.
fn account(m: &Member) -> Value {
    json_of(&cli(&m.agent, &["--json", "account"]))
}

/// Both parties' stakes are held by the arbitrator.
fn wait_stakes_held(arbitrator: &Member, id: &str) {
    wait_until(
        "both stakes are held by the arbitrator",
        Duration::from_secs(20),
        || {
            settlement(arbitrator, id)["held"]
                .as_object()
                .is_some_and(|h| h.len() == 2)
        },
    );
}

/// The settlement checks offline, and so does every account; a changed
/// figure does not.
fn verify_offline(dir: &Path, m: &Member, id: &str, orgs: &[&Member]) {
    let file = dir.join("settlement.json");
    ok(&cli(
        &m.agent,
        &["contract", "show", id, "-o", file.to_str().unwrap()],
    ));
    let v = json_of(&locus(&[
        "--json",
        "verify",
        "contract",
        file.to_str().unwrap(),
    ]));
    assert_eq!(v["valid"], true, "{v}");
    assert!(v["settlement"].is_object(), "{v}");
    let mut tampered: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let due = tampered["statement"]["body"]["due"].as_u64().unwrap();
    tampered["statement"]["body"]["due"] = Value::from(due + 1000);
    std::fs::write(&file, tampered.to_string()).unwrap();
    let out = locus(&["verify", "contract", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Credits are conserved: every org's balance as its receipts prove
    // it, summed over the orgs, is 0 once the receipts reached each org
    // (the last release reaches its party by gossip), and each node's view
    // agrees.
    wait_until(
        "the receipts reach every org",
        Duration::from_secs(20),
        || {
            orgs.iter()
                .map(|o| account(o)["balance"].as_i64().unwrap_or(i64::MAX / 4))
                .sum::<i64>()
                == 0
        },
    );
    let mut sum = 0;
    for o in orgs {
        let a = account(o);
        let file = dir.join("account.json");
        std::fs::write(&file, a.to_string()).unwrap();
        let v = json_of(&locus(&[
            "--json",
            "verify",
            "account",
            file.to_str().unwrap(),
        ]));
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(
            v["balances"][a["org"].as_str().unwrap()]
                .as_i64()
                .unwrap_or(0),
            a["balance"].as_i64().unwrap(),
            "the receipts prove the balance shown"
        );
        sum += a["balance"].as_i64().unwrap();
    }
    assert_eq!(sum, 0, "credits are conserved");
}

#[test]
fn a_disputed_statement_is_ruled_by_the_arbitrator_and_the_stakes_follow() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // The customer answers statements by hand.
    let manual = rules_config(dirs[0].path(), "[customer]\ncountersign = \"manual\"\n");
    let a1 = member_with(dirs[0].path(), 205, "lab", &[], &["--config", &manual]);
    let b1 = member(dirs[1].path(), 206, "lab", &[a1.gossip]);
    let c1 = member(dirs[2].path(), 207, "lab", &[a1.gossip]);
    wait_cluster(&[&a1, &b1, &c1], 3);
    admit_each_other(&[&a1, &b1, &c1]);
    ok(&cli(&b1.agent, &["market", "offer", "--price", "300"]));
    ok(&cli(&c1.agent, &["market", "offer", "--price", "600"]));
    ok(&cli(
        &a1.agent,
        &["market", "request", "--cpu", "500m", "--max-price", "800"],
    ));
    wait_until("a contract", Duration::from_secs(20), || {
        contracts(&a1).len() == 1
    });
    let id = contracts(&a1)[0]["id"].as_str().unwrap().to_owned();
    wait_stakes_held(&c1, &id);
    assert_eq!(settlement(&a1, &id)["state"], "open");

    // Only the provider settles; the customer has nothing to answer yet.
    let out = cli(&a1.agent, &["contract", "settle", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only the provider"),
        "{out:?}"
    );
    let out = cli(&a1.agent, &["contract", "sign", &id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no statement"),
        "{out:?}"
    );

    std::thread::sleep(Duration::from_secs(2));
    ok(&cli(&b1.agent, &["contract", "settle", &id]));
    wait_until(
        "the statement awaits the customer",
        Duration::from_secs(15),
        || settlement(&a1, &id)["state"] == "awaiting_answer",
    );
    let due = settlement(&a1, &id)["due"].as_u64().unwrap();
    assert!(due > 0, "standby time costs something");
    ok(&cli(
        &a1.agent,
        &["contract", "dispute", &id, "--reason", "I never needed it"],
    ));
    // The statement is sound: the arbitrator rules against the customer,
    // whose stake pays what is due; the rest comes back.
    wait_until("the arbitrator ruled", Duration::from_secs(20), || {
        [&a1, &b1, &c1]
            .iter()
            .all(|m| settlement(m, &id)["state"] == "ruled")
    });
    let s = settlement(&b1, &id);
    assert_eq!(s["lost_by"], org_id(&a1).as_str(), "{s}");
    assert_eq!(s["due"], due);
    wait_until("the stakes are released", Duration::from_secs(20), || {
        settlement(&c1, &id)["held"]
            .as_object()
            .is_some_and(|h| h.is_empty())
            && account(&b1)["balance"].as_i64() == Some(due as i64)
    });
    assert_eq!(account(&a1)["balance"].as_i64(), Some(-(due as i64)));
    assert_eq!(
        account(&c1)["balance"].as_i64(),
        Some(0),
        "the arbitrator keeps nothing"
    );
    verify_offline(dirs[0].path(), &a1, &id, &[&a1, &b1, &c1]);
    // The lost dispute counts against the customer's reputation, as every
    // org computes it from the signed settlement.
    wait_until(
        "b1 counts the lost dispute",
        Duration::from_secs(10),
        || {
            account(&b1)["reputation"][org_id(&a1)]["score_permille"]
                .as_u64()
                .is_some_and(|s| s < 500)
        },
    );
    // A settled contract is not settled twice.
    let out = cli(&b1.agent, &["contract", "settle", &id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already closed"),
        "{out:?}"
    );
}

#[test]
fn a_rejected_negotiation_restarts_in_the_next_round_with_another_provider() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a1 = member(dirs[0].path(), 194, "lab", &[]);
    // B's rules want customers of a better reputation than a stranger's.
    let picky = rules_config(
        dirs[1].path(),
        "[provider]\nmin_customer_reputation = 600\n",
    );
    let b1 = member_with(
        dirs[1].path(),
        195,
        "lab",
        &[a1.gossip],
        &["--config", &picky],
    );
    // C1 promises no handover faster than 10 s: it counters the 3 s the
    // request asks, and the customer's rules (up to 30 s) take it.
    let slow = rules_config(dirs[2].path(), "[provider]\nmin_handover_secs = 10\n");
    let c1 = member_with(
        dirs[2].path(),
        196,
        "lab",
        &[a1.gossip],
        &["--config", &slow],
    );
    let c2 = member(dirs[2].path(), 197, "lab", &[a1.gossip]);
    wait_cluster(&[&a1, &b1, &c1, &c2], 4);
    admit_each_other(&[&a1, &b1, &c1]);

    ok(&cli(&b1.agent, &["market", "offer", "--price", "300"]));
    ok(&cli(&c1.agent, &["market", "offer", "--price", "500"]));
    ok(&cli(&c2.agent, &["market", "offer", "--price", "700"]));
    let request = json_of(&cli(
        &a1.agent,
        &[
            "--json",
            "market",
            "request",
            "--cpu",
            "500m",
            "--max-price",
            "800",
        ],
    ));
    let request_id = request["id"].as_str().unwrap().to_owned();

    wait_until(
        "a contract with another provider",
        Duration::from_secs(30),
        || contracts(&a1).len() == 1,
    );
    let c = &contracts(&a1)[0];
    assert_eq!(
        c["provider"],
        node_id(&c1).as_str(),
        "the next cheapest after the one that rejected"
    );
    assert_eq!(
        c["buyer_pays"], 700,
        "priced by the first losing seller left"
    );
    assert_eq!(c["arbitrator_org"], org_id(&b1).as_str());
    assert_eq!(c["revision"], 1, "signed after the provider's counter");
    assert_eq!(c["handover_within_secs"], 10, "the provider's limit");
    let explained = ok(&cli(&a1.agent, &["market", "explain", &request_id]));
    assert!(
        explained.contains("rejects") && explained.contains("re-listed"),
        "{explained}"
    );
    // The counter is the re-listed request's story.
    let relisted = c["contract"]["terms"]["request"].as_str().unwrap();
    let explained = ok(&cli(&a1.agent, &["market", "explain", relisted]));
    assert!(
        explained.contains("counters (handover within 10 s instead of 3 s)"),
        "{explained}"
    );
    // Both signed the countered terms: the contract checks offline.
    let file = dirs[0].path().join("countered.json");
    ok(&cli(
        &a1.agent,
        &[
            "contract",
            "show",
            c["id"].as_str().unwrap(),
            "-o",
            file.to_str().unwrap(),
        ],
    ));
    assert!(ok(&locus(&["verify", "contract", file.to_str().unwrap()])).contains("valid"));
    // b1's offer stays on the book, unsold.
    let book = json_of(&cli(&a1.agent, &["--json", "market", "book"]));
    assert!(
        book.as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"] == node_id(&b1).as_str()),
        "{book}"
    );
}

const PASSWORD: &str = "sensor-password-1";

/// One QoS 1 publish of thing `user` to `m`'s broker (mosquitto_pub exits
/// 0 only after the PUBACK).
fn publish(m: &Member, user: &str, msg: &str) -> bool {
    let node = get_json(&m.agent, "/api/v1/node");
    let (h, p) = node["mqtt_addr"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    std::process::Command::new("mosquitto_pub")
        .args(["-h", h, "-p", p, "-u", user, "-P", PASSWORD, "-q", "1"])
        .args([
            "-i",
            &format!("pub-{user}"),
            "-t",
            &format!("things/{user}/readings"),
            "-m",
            msg,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn workload_on(m: &Member, name: &str) -> Option<Value> {
    let list = get_json(&m.agent, "/api/v1/workloads");
    list.as_array()?.iter().find(|w| w["name"] == name).cloned()
}

fn running_at(m: &Member, name: &str, node: &str) -> bool {
    workload_on(m, name).is_some_and(|w| w["owner"] == node && w["state"] == "running")
}

/// Processes of this test's service still alive on the machine (each agent
/// runs it in a session of its own).
fn copies_running(marker: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_provider_takes_over_a_dead_customers_service_once_witnessed_and_hands_it_back() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // The customer's service, placed on a1 while it is alone: a process
    // only org admins may run.
    let a1 = member(dirs[0].path(), 200, "lab", &[]);
    let a_id = node_id(&a1);
    let marker = format!("locus-market-takeover-{}", std::process::id());
    let _cleanup = locus_testkit::KillMarked(marker.clone());
    let spec = serde_json::json!({
        "name": "svc", "kind": "process", "source": "/bin/sh",
        "args": ["-c", format!("while :; do sleep 1; done # {marker}")],
    });
    let r = a1
        .agent
        .http()
        .post(a1.agent.url("/api/v1/workloads"))
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    wait_until("svc runs on a1", Duration::from_secs(20), || {
        running_at(&a1, "svc", &a_id)
    });
    // And its sensor, an MQTT thing.
    let thing = dirs[0].path().join("t1.toml");
    std::fs::write(
        &thing,
        format!("name = \"t1\"\nprotocol = \"mqtt\"\ncredentials = {{ password = \"{PASSWORD}\" }}\n[[resources]]\nname = \"temperature\"\n"),
    )
    .unwrap();
    ok(&cli(&a1.agent, &["thing", "add", thing.to_str().unwrap()]));
    assert!(publish(&a1, "t1", r#"{"temperature": 20.5}"#));
    let b1 = member(dirs[1].path(), 201, "lab", &[a1.gossip]);
    let c1 = member(dirs[2].path(), 202, "lab", &[a1.gossip]);
    let c2 = member(dirs[2].path(), 203, "lab", &[a1.gossip]);
    wait_cluster(&[&a1, &b1, &c1, &c2], 4);
    admit_each_other(&[&a1, &b1, &c1]);
    let b_id = node_id(&b1);
    // And an LwM2M sensor, t2, whose bootstrap server is the provider's:
    // it answers with the server of t2's manager, a1 for now.
    let t2 = dirs[0].path().join("t2.toml");
    std::fs::write(
        &t2,
        "name = \"t2\"\nprotocol = \"lwm2m\"\n[[resources]]\nname = \"temperature\"\npath = \"3303/0/5700\"\nunit = \"Cel\"\n",
    )
    .unwrap();
    ok(&cli(&a1.agent, &["thing", "add", t2.to_str().unwrap()]));
    let lwm2m_of = |m: &Member| {
        get_json(&m.agent, "/api/v1/node")["lwm2m_addr"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a_lwm2m, b_lwm2m) = (lwm2m_of(&a1), lwm2m_of(&b1));
    let b_bootstrap = get_json(&b1.agent, "/api/v1/node")["lwm2m_bootstrap_addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let sensor = Lwm2mClient::start(
        &format!("coap://{b_bootstrap}"),
        "t2",
        &["--update-every", "0.5"],
    );
    let registered_at =
        |addr: &str| sensor.last("registered")["server_uri"] == format!("coap://{addr}").as_str();
    wait_until("t2 registers at a1", Duration::from_secs(20), || {
        registered_at(&a_lwm2m)
    });

    ok(&cli(
        &b1.agent,
        &["market", "offer", "--price", "300", "--tier", "nano"],
    ));
    ok(&cli(
        &c1.agent,
        &["market", "offer", "--price", "600", "--tier", "nano"],
    ));
    // The request covers svc; its needs are measured, so wait until they are.
    wait_until(
        "svc is measured and requested",
        Duration::from_secs(30),
        || {
            cli(
                &a1.agent,
                &[
                    "market",
                    "request",
                    "--workload",
                    "svc",
                    "--thing",
                    "t1",
                    "--thing",
                    "t2",
                    "--max-price",
                    "800",
                ],
            )
            .status
            .success()
        },
    );
    wait_until("a contract covers svc", Duration::from_secs(20), || {
        contracts(&a1).len() == 1
    });
    let id = contracts(&a1)[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(contracts(&a1)[0]["provider"], b_id.as_str());
    // Pinned by id: a workload of the provider's named svc is not covered.
    let svc_id = workload_on(&a1, "svc").unwrap()["id"].clone();
    assert_eq!(contracts(&a1)[0]["workloads"], serde_json::json!([svc_id]));
    assert_eq!(contracts(&a1)[0]["things"], serde_json::json!(["t1", "t2"]));
    wait_until(
        "everyone knows the contract",
        Duration::from_secs(10),
        || contracts(&b1).len() == 1 && contracts(&c1).len() == 1,
    );
    wait_until(
        "svc's spec is on the fabric",
        Duration::from_secs(20),
        || workload_on(&b1, "svc").is_some_and(|w| w["spec_replicated"] == true),
    );
    assert_eq!(copies_running(&marker), 1);

    // The customer dies: only the provider takes svc over, once c1 and c2
    // (another org) have signed that they see a1 dead.
    let (a_gossip, a_api) = (a1.gossip, a1.agent.addr);
    let mut a1 = a1;
    // The machine dies: the agent and the service it ran.
    let pids = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    a1.agent.signal(nix::sys::signal::Signal::SIGKILL);
    for pid in String::from_utf8_lossy(&pids.stdout).lines() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.trim().parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = a1.agent.wait_exit(Duration::from_secs(5));
    drop(a1);
    let killed = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !running_at(&b1, "svc", &b_id) {
        if std::time::Instant::now() > deadline {
            for m in [&b1, &c1, &c2] {
                eprintln!("--- {}", m.name);
                for l in m
                    .agent
                    .logs()
                    .lines()
                    .filter(|l| !l.contains("DEBUG"))
                    .rev()
                    .take(25)
                {
                    eprintln!("{l}");
                }
            }
            eprintln!("{:?}", workload_on(&b1, "svc"));
            panic!("svc does not run at the provider");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "customer SIGKILL → covered workload running at the provider: {:?}",
        killed.elapsed()
    );
    for m in [&c1, &c2] {
        assert!(
            m.agent.logs().contains("witnessed a customer's death"),
            "{} signed no observation",
            m.name
        );
    }
    assert!(
        !c1.agent.logs().contains("adopting"),
        "a node that is not the standby adopted"
    );
    // The sensor is managed by the provider now: it logs in there and its
    // readings are stored and sealed there.
    wait_until("the provider manages t1", Duration::from_secs(10), || {
        manager_of(&b1, "t1").as_deref() == Some(b_id.as_str())
    });
    assert!(
        publish(&b1, "t1", r#"{"temperature": 21.5}"#),
        "t1 cannot log in at the provider"
    );
    assert!(
        readings(&b1.agent, "t1")
            .iter()
            .any(|r| r["reading"]["value"]["number"] == 21.5),
        "{:?}",
        readings(&b1.agent, "t1")
    );
    // The LwM2M sensor's Update fails at the dead server: it registers
    // again, falls back to its bootstrap server, which now answers with the
    // provider's server; its notifications are stored there.
    wait_until(
        "t2 registers at the provider",
        Duration::from_secs(30),
        || registered_at(&b_lwm2m),
    );
    eprintln!(
        "customer SIGKILL → LwM2M t2 registered at the provider: {:?}",
        killed.elapsed()
    );
    assert!(
        sensor.count("fallback-to-bootstrap") >= 1,
        "{}",
        sensor.said()
    );
    let before = readings(&b1.agent, "t2").len();
    wait_until(
        "t2's readings go on at the provider",
        Duration::from_secs(10),
        || readings(&b1.agent, "t2").len() > before,
    );
    let n = copies_running(&marker);
    if n != 1 {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,sid,etimes,args"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        panic!(
            "{n} copies run:\n{}\n{:?}",
            ps.lines()
                .filter(|l| l.contains(&marker) || l.contains("locus agent"))
                .collect::<Vec<_>>()
                .join("\n"),
            workload_on(&b1, "svc")
        );
    }

    // The customer returns: the provider stops its copy, then hands it back.
    let a1 = member_on(dirs[0].path(), 200, "lab", &[b1.gossip], a_gossip, a_api);
    let back = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !running_at(&b1, "svc", &a_id) {
        if std::time::Instant::now() > deadline {
            eprintln!("--- b1");
            for l in b1
                .agent
                .logs()
                .lines()
                .filter(|l| {
                    l.contains("WARN")
                        || l.contains("hand")
                        || l.contains("adopt")
                        || l.contains("yield")
                })
                .take(30)
            {
                eprintln!("{l}");
            }
            eprintln!("--- a1");
            for l in a1
                .agent
                .logs()
                .lines()
                .filter(|l| {
                    l.contains("WARN")
                        || l.contains("hand")
                        || l.contains("adopt")
                        || l.contains("yield")
                        || l.contains("newer")
                })
                .take(30)
            {
                eprintln!("{l}");
            }
            panic!(
                "svc is not back on a1: b1 sees {:?}, a1 sees {:?}",
                workload_on(&b1, "svc"),
                workload_on(&a1, "svc")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "customer back → svc running there again: {:?}",
        back.elapsed()
    );
    let mut max = 0;
    wait_until("one copy, on a1", Duration::from_secs(10), || {
        max = max.max(copies_running(&marker));
        running_at(&a1, "svc", &a_id) && copies_running(&marker) == 1
    });
    assert!(max <= 1, "two copies ran at once");
    wait_until("t1 is back with a1", Duration::from_secs(15), || {
        manager_of(&b1, "t1").as_deref() == Some(a_id.as_str())
    });
    assert!(publish(&a1, "t1", r#"{"temperature": 22.5}"#));
    // The provider hands t2 back too: it asks the sensor to bootstrap
    // again, and the bootstrap server answers with a1's server.
    // (a1 listens on a new LwM2M port since its restart.)
    let a_lwm2m = lwm2m_of(&a1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !registered_at(&a_lwm2m) {
        assert!(
            std::time::Instant::now() < deadline,
            "t2 is not back at a1 (managed by {:?}):\n{}",
            manager_of(&b1, "t2"),
            sensor.said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The provider hands back the readings it took on a1's behalf, with
    // their proofs: a1 checks them against b1's signed log and keeps them.
    let handed_back = || {
        // 404 until the first hand back, 3 s after the takeover ends.
        let r = a1
            .agent
            .http()
            .get(a1.agent.url(&format!("/api/v1/readings/imports/{b_id}")))
            .send()
            .unwrap();
        if r.status() == 404 {
            return (false, 0);
        }
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        let all = v.as_array().cloned().unwrap_or_default();
        let of = |t: &str| all.iter().filter(|r| r["reading"]["thing"] == t).count();
        let t1_there = all
            .iter()
            .any(|r| r["reading"]["thing"] == "t1" && r["reading"]["value"]["number"] == 21.5);
        (t1_there, of("t2"))
    };
    wait_until(
        "a1 holds the readings taken on its behalf",
        Duration::from_secs(30),
        || {
            let (t1, t2) = handed_back();
            t1 && t2 > 0
        },
    );
    let notes = get_json(&a1.agent, &format!("/api/v1/market/contracts/{id}"))["notes"].to_string();
    assert!(notes.contains("proofs checked"), "{notes}");

    // Settle: the provider meters the witnessed takeover as active time,
    // the customer countersigns (its rules check the evidence), pays, and
    // both stakes come back.
    let before = std::time::Instant::now();
    ok(&cli(&b1.agent, &["contract", "settle", &id]));
    wait_until(
        "the customer countersigned",
        Duration::from_secs(20),
        || {
            settlement(&a1, &id)["state"] == "countersigned"
                && settlement(&b1, &id)["state"] == "countersigned"
        },
    );
    eprintln!("settle → countersigned: {:?}", before.elapsed());
    let s = settlement(&b1, &id);
    assert!(s["active_secs"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        s["handovers_done"].as_u64().unwrap() + s["handovers_missed"].as_u64().unwrap(),
        1,
        "{s}"
    );
    let due = s["due"].as_i64().unwrap() - s["penalty"].as_i64().unwrap();
    wait_until(
        "the stakes are back and the provider paid",
        Duration::from_secs(20),
        || {
            settlement(&c1, &id)["held"]
                .as_object()
                .is_some_and(|h| h.is_empty())
                && account(&b1)["balance"].as_i64() == Some(due)
        },
    );
    verify_offline(dirs[0].path(), &a1, &id, &[&a1, &b1, &c1]);
    // The contract is closed: the provider no longer stands by.
    assert_eq!(settlement(&a1, &id)["state"], "countersigned");
}

#[test]
fn the_demo_tells_the_whole_story() {
    let out = locus(&["--json", "demo", "market"]);
    let v = json_of(&out);
    let steps: Vec<String> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "contract",
        "verifies offline",
        "would run here",
        "is killed",
        "the provider runs svc",
        "the provider manages t1",
        "stored and sealed there",
        "handed svc back",
        "managed by A again",
        "countersigned",
        "stakes released",
        "settlement verifies offline",
        "checked each one's proof",
    ] {
        assert!(
            steps.iter().any(|s| s.contains(expected)),
            "no step says {expected:?}: {steps:#?}"
        );
    }
}

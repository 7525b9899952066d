//! `locus demo market`: the market's whole story on this machine, the
//! first thing to run. Four agents of four orgs on loopback: a customer
//! with a service and an MQTT sensor, two providers, a fourth org that
//! witnesses and arbitrates. The customer asks for a standby, the book
//! clears, both orgs sign, the provider prepares; the customer is killed,
//! the provider takes the service and the sensor over, the readings go on
//! there; the customer returns and gets them back, with the readings
//! taken on its behalf and their proofs; the contract is settled
//! (metered, countersigned, stakes released). Each step is printed with
//! its time.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench_market_live::{Orgs, kill_marked, manager_of};
use crate::bench_things::publish_once;

const SENSOR_PASSWORD: &str = "demo-sensor-password";

struct Story {
    start: Instant,
    json: bool,
    steps: Vec<Value>,
}

impl Story {
    fn say(&mut self, what: impl Into<String>) {
        let what = what.into();
        let t = self.start.elapsed().as_secs_f64();
        if self.json {
            self.steps.push(json!({"at_secs": t, "step": what}));
        } else {
            println!("[{t:7.2} s] {what}");
        }
    }
}

fn mqtt_of(orgs: &Orgs, i: usize) -> anyhow::Result<String> {
    orgs.get(i, "/api/v1/node")?["mqtt_addr"]
        .as_str()
        .map(str::to_owned)
        .context("the node runs no MQTT broker")
}

pub fn market(json: bool) -> anyhow::Result<()> {
    crate::bench_workloads::in_scratch_dir(&std::env::temp_dir(), |root| run(json, root))
}

fn run(json: bool, root: &std::path::Path) -> anyhow::Result<()> {
    let mut s = Story {
        start: Instant::now(),
        json,
        steps: Vec::new(),
    };
    let (a, b, c, d) = (0, 1, 2, 3);
    let mut orgs = Orgs::new(4, 96, root)?;
    orgs.spawn(a)?;
    s.say("org A's node is up: the customer");
    let marker = format!("locus-demo-market-{}", std::process::id());
    let svc = json!({"name": "svc", "kind": "process", "source": "/bin/sh",
        "args": ["-c", format!("while :; do sleep 1; done # {marker}")]});
    orgs.call(a, reqwest::Method::POST, "/api/v1/workloads", Some(&svc))?;
    let sensor = json!({"name": "t1", "protocol": "mqtt", "credentials": {"password": SENSOR_PASSWORD},
        "resources": [{"name": "temperature", "unit": "Cel"}]});
    orgs.call(a, reqwest::Method::POST, "/api/v1/things", Some(&sensor))?;
    let ids: Vec<String> = vec![orgs.node_id(a)?];
    orgs.wait("svc runs on A", || orgs.running_at(a, "svc", &ids[0]))?;
    publish_once(
        &mqtt_of(&orgs, a)?,
        "t1",
        SENSOR_PASSWORD,
        "things/t1/readings",
        r#"{"temperature": 20.5}"#,
    )?;
    s.say("A runs service svc and manages sensor t1 (MQTT); t1's first reading is stored and sealed at A");

    for i in [b, c, d] {
        orgs.spawn(i)?;
    }
    let ids: Vec<String> = (0..4)
        .map(|i| orgs.node_id(i))
        .collect::<anyhow::Result<_>>()?;
    orgs.wait_converged()?;
    orgs.admit_each_other()?;
    s.say("orgs B, C and D joined by gossip; each org admits the others");

    orgs.call(
        b,
        reqwest::Method::POST,
        "/api/v1/market/offers",
        Some(&json!({"price": 300, "tier": "nano"})),
    )?;
    orgs.call(
        c,
        reqwest::Method::POST,
        "/api/v1/market/offers",
        Some(&json!({"price": 600, "tier": "nano"})),
    )?;
    s.say("B offers a nano unit at 300 millicredits per hour, C at 600");

    s.say("A asks for a standby for svc and t1, at most 800 (svc's needs measured from what it uses)…");
    orgs.wait("svc is measured", || {
        orgs.call(
            a,
            reqwest::Method::POST,
            "/api/v1/market/requests",
            Some(&json!({"workloads": ["svc"], "things": ["t1"], "max_price": 800})),
        )
        .is_ok()
    })?;
    orgs.wait("a contract", || orgs.contracts(a) == 1)?;
    let contract = orgs.get(a, "/api/v1/market/contracts")?[0].clone();
    let provider = ids
        .iter()
        .position(|id| contract["provider"] == id.as_str())
        .context("the provider is not one of the demo's nodes")?;
    s.say(format!(
        "round cleared: contract {} signed by A and {} at {} per hour (the second-lowest ask), arbitrated by org {}",
        &contract["id"].as_str().unwrap_or("?")[..12],
        ["A", "B", "C", "D"][provider],
        contract["buyer_pays"],
        contract["arbitrator_org"].as_str().unwrap_or("?")
    ));
    let file = root.join("contract.json");
    std::fs::write(&file, contract["contract"].to_string())?;
    let signed: locus_market::Contract = serde_json::from_value(contract["contract"].clone())?;
    match signed.verify() {
        Ok(_) => s.say(format!(
            "the contract verifies offline from its own bytes ({} bytes of JSON)",
            contract["contract"].to_string().len()
        )),
        Err(e) => bail!("the contract does not verify: {e}"),
    }
    let mut prepared = String::new();
    orgs.wait("the provider prepared", || {
        let notes = orgs
            .get(provider, "/api/v1/market/contracts")
            .map(|v| v[0]["notes"].clone());
        if let Some(line) = notes.ok().and_then(|n| {
            n.as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|l| l.starts_with("svc (") && l.contains("): would"))
                .map(str::to_owned)
        }) {
            prepared = line;
            return true;
        }
        false
    })?;
    s.say(format!(
        "the provider prepared (placement dry run): {prepared}"
    ));

    let watcher = d;
    orgs.wait("svc's spec spreads", || {
        orgs.get(watcher, "/api/v1/workloads").is_ok_and(|l| {
            l.as_array().is_some_and(|v| {
                v.iter()
                    .any(|w| w["name"] == "svc" && w["spec_replicated"] == true)
            })
        })
    })?;
    if let Some(mut child) = orgs.agents[a].child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    kill_marked(&marker);
    let killed = Instant::now();
    s.say("A is killed (SIGKILL of the agent and its service)");
    orgs.wait("svc runs at the provider", || {
        orgs.running_at(watcher, "svc", &ids[provider])
    })?;
    s.say(format!(
        "C and D signed that they see A dead; the provider runs svc {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    ));
    orgs.wait("the provider manages t1", || {
        manager_of(&orgs, watcher, "t1").as_deref() == Some(ids[provider].as_str())
    })?;
    s.say(format!(
        "the provider manages t1 {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    ));
    publish_once(
        &mqtt_of(&orgs, provider)?,
        "t1",
        SENSOR_PASSWORD,
        "things/t1/readings",
        r#"{"temperature": 21.5}"#,
    )?;
    let there = orgs.get(provider, "/api/v1/readings?thing=t1&limit=10")?;
    s.say(format!(
        "t1 logs in at the provider; its reading is stored and sealed there ({} reading(s) of t1 at the provider)",
        there.as_array().map_or(0, Vec::len)
    ));

    orgs.spawn(a)?;
    let back = Instant::now();
    s.say("A is back");
    orgs.wait("svc runs on A again", || {
        orgs.running_at(watcher, "svc", &ids[a])
    })?;
    s.say(format!(
        "the provider stopped its copy and handed svc back: running on A {:.2} s after A's return",
        back.elapsed().as_secs_f64()
    ));
    orgs.wait("t1 is back with A", || {
        manager_of(&orgs, watcher, "t1").as_deref() == Some(ids[a].as_str())
    })?;
    publish_once(
        &mqtt_of(&orgs, a)?,
        "t1",
        SENSOR_PASSWORD,
        "things/t1/readings",
        r#"{"temperature": 22.5}"#,
    )?;
    s.say("t1 is managed by A again and its readings go there");

    let id = contract["id"].as_str().unwrap_or_default().to_owned();
    orgs.call(
        provider,
        reqwest::Method::POST,
        &format!("/api/v1/market/contracts/{id}/settlement"),
        Some(&json!({"action": "settle"})),
    )?;
    let settled = |i: usize| {
        orgs.get(i, &format!("/api/v1/market/contracts/{id}"))
            .map(|c| c["settlement"].clone())
            .unwrap_or_default()
    };
    orgs.wait("A countersigned", || settled(a)["state"] == "countersigned")?;
    let st = settled(provider);
    s.say(format!(
        "settled: the provider metered {} s standby and {} s active ({} handover within the SLA), signed the statement; A checked it against C's and D's signed observations and countersigned: {} millicredits due, penalty {}",
        st["standby_secs"], st["active_secs"], st["handovers_done"], st["due"], st["penalty"]
    ));
    let arbitrator = ids
        .iter()
        .position(|id| contract["arbitrator"] == id.as_str())
        .context("the arbitrator is not one of the demo's nodes")?;
    orgs.wait("the stakes come back", || {
        settled(arbitrator)["held"]
            .as_object()
            .is_some_and(|h| h.is_empty())
    })?;
    let balance = |i: usize| {
        orgs.get(i, "/api/v1/market/account")
            .map(|v| v["balance"].as_i64().unwrap_or(0))
            .unwrap_or(0)
    };
    s.say(format!(
        "both stakes released by the arbitrator; balances by receipts both orgs signed: A {}, {} {}, arbitrator {} (they sum to 0)",
        balance(a),
        ["A", "B", "C", "D"][provider],
        balance(provider),
        balance(arbitrator)
    ));
    let signed: locus_market::Settlement = serde_json::from_value(settled(a)["signed"].clone())?;
    match signed.verify(2) {
        Ok(o) => s.say(format!(
            "the settlement verifies offline: contract, statement against its witnessed evidence, countersignature ({} mc, SLA met: {})",
            o.value, o.sla_met
        )),
        Err(e) => bail!("the settlement does not verify: {e}"),
    }
    let origin = &ids[provider];
    let mut handed = 0;
    orgs.wait("A holds the readings taken on its behalf", || {
        handed = orgs
            .get(a, &format!("/api/v1/readings/imports/{origin}"))
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0);
        handed > 0
    })?;
    s.say(format!(
        "the provider handed back the {handed} reading(s) of t1 it took on A's behalf; A checked each one's proof against the provider's signed log and keeps them"
    ));
    kill_marked(&marker);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"demo": "market", "steps": s.steps}))?
        );
    }
    Ok(())
}

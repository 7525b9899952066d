//! `locus market offer|request|book|rounds|explain|withdraw` and `locus
//! contract ls|show`: this node's part in the market between orgs.

use anyhow::anyhow;
use serde_json::{Map, Value, json};

use crate::Failure;
use crate::cli::{ContractCommand, MarketCommand, MarketOfferArgs, MarketRequestArgs};
use crate::client::Client;
use crate::output::table;
use crate::tenant_cli::{parse_cpu, parse_size};
use crate::token_cli::parse_duration;

fn usage(flag: &str, e: String) -> Failure {
    Failure::Usage(anyhow!("{flag}: {e}"))
}

fn duration(flag: &str, text: &Option<String>) -> Result<Option<u64>, Failure> {
    text.as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| usage(flag, e))
}

fn offer_body(a: &MarketOfferArgs) -> Result<Value, Failure> {
    let mut body = Map::new();
    if let Some(p) = a.price {
        body.insert("price".into(), p.into());
    }
    if let Some(s) = a.standby {
        body.insert("standby".into(), s.into());
    }
    if let Some(l) = duration("--lifetime", &a.lifetime)? {
        body.insert("lifetime_secs".into(), l.into());
    }
    if let Some(t) = &a.tier {
        body.insert("tier".into(), t.clone().into());
    }
    Ok(Value::Object(body))
}

fn request_body(a: &MarketRequestArgs) -> Result<Value, Failure> {
    let mut body = Map::new();
    body.insert("workloads".into(), json!(a.workloads));
    body.insert("things".into(), json!(a.things));
    if let Some(c) = &a.cpu {
        body.insert(
            "cpu_millis".into(),
            parse_cpu(c).map_err(|e| usage("--cpu", e))?.into(),
        );
    }
    if let Some(m) = &a.memory {
        let bytes = parse_size(m).map_err(|e| usage("--memory", e))?;
        body.insert("memory_mb".into(), bytes.div_ceil(1 << 20).into());
    }
    if let Some(p) = a.max_price {
        body.insert("max_price".into(), p.into());
    }
    if let Some(d) = duration("--duration", &a.duration)? {
        body.insert("duration_secs".into(), d.into());
    }
    if let Some(l) = duration("--lifetime", &a.lifetime)? {
        body.insert("lifetime_secs".into(), l.into());
    }
    if let Some(s) = &a.site {
        body.insert("site".into(), s.clone().into());
    }
    if let Some(t) = &a.tenant {
        body.insert("tenant".into(), t.clone().into());
    }
    if let Some(u) = a.min_uptime {
        body.insert("min_uptime_permille".into(), u.into());
    }
    if let Some(n) = &a.near {
        let (site, max_rtt_ms) = parse_near(n).map_err(|e| usage("--near", e))?;
        body.insert(
            "near".into(),
            json!({ "site": site, "max_rtt_ms": max_rtt_ms }),
        );
    }
    if let Some(h) = a.handover_within {
        body.insert("handover_within_secs".into(), h.into());
    }
    body.insert("standby".into(), (!a.active).into());
    body.insert("renewable".into(), a.renewable.into());
    Ok(Value::Object(body))
}

/// Largest `--near` bound, ms (the book's `MAX_RTT_MS`).
const MAX_NEAR_MS: u32 = 60_000;

/// `SITE:MS` of `--near`: a site name and a round-trip time in ms, at
/// most [`MAX_NEAR_MS`].
fn parse_near(text: &str) -> Result<(String, u32), String> {
    let wrong = || {
        format!(
            "{text:?} must be SITE:MS, a site name and a round-trip time of at most {MAX_NEAR_MS} ms (edge:20)"
        )
    };
    let (site, ms) = text.rsplit_once(':').ok_or_else(wrong)?;
    let ms: u32 = ms.trim().parse().map_err(|_| wrong())?;
    let site = site.trim();
    if site.is_empty() || ms > MAX_NEAR_MS {
        return Err(wrong());
    }
    Ok((site.to_owned(), ms))
}

/// A record's latency terms as `locus market book|explain` show them: an
/// offer's measured RTT per site (`lab 0 ms, edge 12 ms`), a request's
/// bound (`within 20 ms of edge`); `-` when it has none.
fn latency(e: &Value) -> String {
    if let Some(n) = e["near"].as_object() {
        return format!(
            "within {} ms of {}",
            n.get("max_rtt_ms")
                .map_or_else(|| "?".to_owned(), Value::to_string),
            n.get("site").and_then(Value::as_str).unwrap_or("?")
        );
    }
    let rtts: Vec<String> = e["site_rtt_ms"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(site, ms)| format!("{site} {ms} ms"))
        .collect();
    if rtts.is_empty() {
        "-".to_owned()
    } else {
        rtts.join(", ")
    }
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A class as `locus market book` shows it: `tier@site[ standby]`.
fn class(c: &Value) -> String {
    format!(
        "{}@{}{}",
        c["tier"].as_str().unwrap_or("?"),
        c["site"].as_str().unwrap_or("?"),
        if c["standby"].as_bool() == Some(true) {
            " standby"
        } else {
            ""
        }
    )
}

fn short(id: &str) -> String {
    id.chars().take(16).collect()
}

fn print_entry(e: &Value, verb: &str) {
    println!(
        "{} {} {} in class {} at {} mc/unit-hour, until {}",
        verb,
        s(e, "kind"),
        s(e, "id"),
        s(e, "class"),
        s(e, "price"),
        s(e, "expires_at")
    );
}

/// Post an offer or a request and show the record on the book.
async fn post_entry(
    client: &Client,
    json: bool,
    path: &str,
    body: &Value,
    verb: &str,
) -> Result<(), Failure> {
    let e: Value = client.call_json(reqwest::Method::POST, path, body).await?;
    if json {
        println!("{e}");
    } else {
        print_entry(&e, verb);
    }
    Ok(())
}

/// One table row per element of a JSON array.
fn rows(all: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    all.as_array().into_iter().flatten().map(row).collect()
}

pub async fn market(client: &Client, json: bool, command: &MarketCommand) -> Result<(), Failure> {
    match command {
        MarketCommand::Offer(a) => {
            post_entry(
                client,
                json,
                "/api/v1/market/offers",
                &offer_body(a)?,
                "offered:",
            )
            .await?;
        }
        MarketCommand::Request(a) => {
            post_entry(
                client,
                json,
                "/api/v1/market/requests",
                &request_body(a)?,
                "requested:",
            )
            .await?;
        }
        MarketCommand::Book => {
            let all: Value = client.get("/api/v1/market/book").await?;
            if json {
                println!("{all}");
            } else {
                let rows = rows(&all, |e| {
                    vec![
                        short(&s(e, "id")),
                        s(e, "kind"),
                        s(e, "class"),
                        s(e, "price"),
                        short(&s(e, "org")),
                        short(&s(e, "node")),
                        if e["mine"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            ""
                        }
                        .to_owned(),
                        latency(e),
                    ]
                });
                print!(
                    "{}",
                    table(
                        &[
                            "ID", "KIND", "CLASS", "PRICE", "ORG", "NODE", "MINE", "LATENCY"
                        ],
                        &rows
                    )
                );
            }
        }
        MarketCommand::Rounds => {
            let all: Value = client.get("/api/v1/market/rounds").await?;
            if json {
                println!("{all}");
            } else {
                let rows = rows(&all, |r| {
                    vec![
                        s(r, "number"),
                        short(&s(r, "clearer")),
                        s(r, "records"),
                        r["matches"].as_array().map_or(0, Vec::len).to_string(),
                        r["refused"]
                            .as_str()
                            .map_or_else(|| "checked".to_owned(), |w| format!("refused: {w}")),
                    ]
                });
                print!(
                    "{}",
                    table(&["ROUND", "CLEARER", "RECORDS", "MATCHES", "HERE"], &rows)
                );
            }
        }
        MarketCommand::Explain { record } => {
            let e: Value = client
                .get(&format!("/api/v1/market/explain/{record}"))
                .await?;
            if json {
                println!("{e}");
            } else {
                let c = &e["clearing"];
                match e["round"].as_u64() {
                    Some(n) if !c.is_null() => {
                        let o = &c["outcome"];
                        println!(
                            "round {n}: {} {} in class {}",
                            c["side"].as_str().unwrap_or("?"),
                            short(record),
                            class(&c["class"])
                        );
                        println!(
                            "  rank {} of {} buyers / {} sellers; {} efficient pairs; price rule {}",
                            s(c, "rank"),
                            s(o, "buyers"),
                            s(o, "sellers"),
                            s(o, "k"),
                            s(o, "rule")
                        );
                        println!("  {}", s(c, "reason"));
                    }
                    _ => println!("{}: in no checked round yet", short(record)),
                }
                if e["entry"].is_object() {
                    let what = if e["entry"]["kind"] == "request" {
                        "near"
                    } else {
                        "measured RTT"
                    };
                    println!("  {what}: {}", latency(&e["entry"]));
                }
                for n in e["notes"].as_array().into_iter().flatten() {
                    println!("  - {}", n.as_str().unwrap_or_default());
                }
            }
        }
        MarketCommand::Withdraw { record } => {
            client
                .call::<()>(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/market/book/{record}"),
                    None,
                )
                .await?;
            if !json {
                println!("withdrawn: {record}");
            }
        }
    }
    Ok(())
}

pub async fn contract(
    client: &Client,
    json: bool,
    command: &ContractCommand,
) -> Result<(), Failure> {
    match command {
        ContractCommand::Ls => {
            let all: Value = client.get("/api/v1/market/contracts").await?;
            if json {
                println!("{all}");
            } else {
                let rows = rows(&all, |c| {
                    vec![
                        short(&s(c, "id")),
                        s(c, "role"),
                        short(&s(c, "customer_org")),
                        short(&s(c, "provider_org")),
                        short(&s(c, "arbitrator_org")),
                        s(c, "class"),
                        s(c, "buyer_pays"),
                        s(c, "end"),
                    ]
                });
                print!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "ROLE",
                            "CUSTOMER",
                            "PROVIDER",
                            "ARBITRATOR",
                            "CLASS",
                            "PRICE",
                            "ENDS"
                        ],
                        &rows
                    )
                );
            }
        }
        ContractCommand::Settle { id } => {
            settle(client, json, id, serde_json::json!({"action": "settle"})).await?;
        }
        ContractCommand::Sign { id } => {
            settle(client, json, id, serde_json::json!({"action": "sign"})).await?;
        }
        ContractCommand::Dispute { id, reason } => {
            let body = serde_json::json!({"action": "dispute", "reason": reason});
            settle(client, json, id, body).await?;
        }
        ContractCommand::Show { id, output } => {
            let c: Value = client
                .get(&format!("/api/v1/market/contracts/{id}"))
                .await?;
            let settled = &c["settlement"]["signed"];
            let signed = if settled.is_null() {
                &c["contract"]
            } else {
                settled
            };
            if let Some(path) = output {
                let text =
                    serde_json::to_string_pretty(signed).map_err(|e| Failure::Failed(e.into()))?;
                std::fs::write(path, text + "\n").map_err(|e| {
                    Failure::Failed(anyhow!("cannot write {}: {e}", path.display()))
                })?;
            }
            if json {
                println!("{signed}");
            } else {
                println!("contract {} ({})", s(&c, "id"), s(&c, "role"));
                println!(
                    "  customer   node {} of org {}, tenant {}",
                    s(&c, "customer"),
                    s(&c, "customer_org"),
                    s(&c, "tenant")
                );
                println!(
                    "  provider   node {} of org {}",
                    s(&c, "provider"),
                    s(&c, "provider_org")
                );
                println!(
                    "  arbitrator node {} of org {}",
                    s(&c, "arbitrator"),
                    s(&c, "arbitrator_org")
                );
                println!(
                    "  class {}, customer pays {} and provider gets {} mc/unit-hour, from {} to {}",
                    s(&c, "class"),
                    s(&c, "buyer_pays"),
                    s(&c, "seller_gets"),
                    s(&c, "start"),
                    s(&c, "end")
                );
                println!(
                    "  covers workloads {} and things {}; handover within {} s or a penalty of {} mc",
                    c["workloads"],
                    c["things"],
                    s(&c, "handover_within_secs"),
                    s(&c, "penalty")
                );
                if c["revision"].as_u64().is_some_and(|r| r > 0) {
                    println!("  signed after {} counter-proposal(s)", s(&c, "revision"));
                }
                print_settlement(&c["settlement"]);
                if let Some(path) = output {
                    println!(
                        "  written to {} (check it with `locus verify contract {}`)",
                        path.display(),
                        path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Act on a contract's settlement and show where it stands.
async fn settle(client: &Client, json: bool, id: &str, body: Value) -> Result<(), Failure> {
    let c: Value = client
        .call_json(
            reqwest::Method::POST,
            &format!("/api/v1/market/contracts/{id}/settlement"),
            &body,
        )
        .await?;
    if json {
        println!("{}", c["settlement"]);
    } else {
        println!("contract {}", s(&c, "id"));
        print_settlement(&c["settlement"]);
    }
    Ok(())
}

/// The lines of `locus contract show` about the settlement.
fn print_settlement(v: &Value) {
    let n = |k: &str| {
        v[k].as_u64()
            .map_or_else(|| "-".to_owned(), |x| x.to_string())
    };
    println!("  settlement: {}", s(v, "state"));
    if !v["close"].is_null() {
        println!(
            "    closed because {}; {} s standby, {} s active; handovers {} done, {} missed",
            s(v, "close"),
            n("standby_secs"),
            n("active_secs"),
            n("handovers_done"),
            n("handovers_missed")
        );
        println!(
            "    due {} mc from the customer, penalty {} mc from the provider",
            n("due"),
            n("penalty")
        );
    }
    if !v["lost_by"].is_null() {
        println!("    the arbitrator ruled against org {}", s(v, "lost_by"));
        for r in v["reasons"].as_array().into_iter().flatten() {
            println!("      {}", r.as_str().unwrap_or_default());
        }
    }
    for (org, held) in v["held"].as_object().into_iter().flatten() {
        println!(
            "    stake of org {} held by the arbitrator: {held} mc",
            short(org)
        );
    }
}

/// `locus account`: this node's org's balance and positions.
pub async fn account(client: &Client, json: bool) -> Result<(), Failure> {
    let a: Value = client.get("/api/v1/market/account").await?;
    if json {
        println!("{a}");
        return Ok(());
    }
    println!(
        "org {}: balance {} mc (credit limit {} mc)",
        s(&a, "org"),
        s(&a, "balance"),
        s(&a, "credit_limit")
    );
    let pairs = rows(&a["pairs"], |p| {
        vec![short(&s(p, "org")), s(p, "balance"), s(p, "receipts")]
    });
    if !pairs.is_empty() {
        print!(
            "{}",
            table(&["WITH ORG", "BALANCE (mc)", "RECEIPTS"], &pairs)
        );
    }
    let reputation: Vec<Vec<String>> = a["reputation"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(org, r)| {
            vec![
                short(org),
                format!("{} ‰", s(r, "score_permille")),
                s(r, "contracts"),
                format!("{} ‰", s(r, "weight_permille")),
            ]
        })
        .collect();
    if !reputation.is_empty() {
        println!("reputation as this org sees it:");
        print!(
            "{}",
            table(&["ORG", "SCORE", "CONTRACTS", "WEIGHT"], &reputation)
        );
    }
    let escrow = rows(&a["escrow"], |e| {
        vec![
            short(&s(e, "contract")),
            short(&s(e, "arbitrator_org")),
            short(&s(e, "org")),
            s(e, "held"),
        ]
    });
    if !escrow.is_empty() {
        println!("stakes held in escrow:");
        print!(
            "{}",
            table(&["CONTRACT", "ARBITRATOR", "OF ORG", "HELD (mc)"], &escrow)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_is_a_site_and_a_bounded_round_trip_time() {
        assert_eq!(parse_near("edge:20"), Ok(("edge".to_owned(), 20)));
        assert_eq!(parse_near("lab:0"), Ok(("lab".to_owned(), 0)));
        assert_eq!(parse_near("edge:60000"), Ok(("edge".to_owned(), 60_000)));
        for bad in ["edge", "edge:", ":20", "edge:-1", "edge:20ms", "edge:60001"] {
            let e = parse_near(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("SITE:MS"),
                "{e}"
            );
        }
        let Failure::Usage(e) = usage("--near", parse_near("edge").unwrap_err()) else {
            panic!("a usage error")
        };
        assert!(e.to_string().starts_with("--near: \"edge\""), "{e}");
    }

    #[test]
    fn latency_shows_an_offers_rtts_and_a_requests_bound() {
        let offer = json!({ "site_rtt_ms": { "edge": 12, "lab": 0 }, "near": null });
        assert_eq!(latency(&offer), "edge 12 ms, lab 0 ms");
        let request = json!({ "site_rtt_ms": {}, "near": { "site": "edge", "max_rtt_ms": 20 } });
        assert_eq!(latency(&request), "within 20 ms of edge");
        assert_eq!(latency(&json!({ "site_rtt_ms": {}, "near": null })), "-");
    }
}

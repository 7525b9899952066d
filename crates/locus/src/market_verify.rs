//! `locus verify contract FILE` and `locus verify account FILE`: the
//! market's signed records checked offline, with nothing but the file.

use std::path::Path;

use anyhow::{Context, anyhow};
use locus_market::{Contract, PairChain, Settlement, prove_balances};
use serde_json::{Value, json};

use crate::Failure;

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(Failure::Usage)
}

fn print_json(v: &Value) -> Result<(), Failure> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(anyhow::Error::from)?
    );
    Ok(())
}

/// A contract or a whole settlement, as JSON (what `locus contract show
/// -o` writes) or in binary form.
pub fn contract(path: &Path, witnesses: usize, json: bool) -> Result<(), Failure> {
    let shown = path.display().to_string();
    let bytes = read(path)?;
    let settlement = serde_json::from_slice::<Settlement>(&bytes)
        .ok()
        .or_else(|| Settlement::from_bytes(&bytes).ok());
    let contract = match &settlement {
        Some(s) => s.contract.clone(),
        None => match serde_json::from_slice::<Contract>(&bytes) {
            Ok(c) => c,
            Err(json_error) => Contract::from_bytes(&bytes).map_err(|_| {
                Failure::Failed(anyhow!(
                    "{shown} is neither a contract nor a settlement (as JSON: {json_error})"
                ))
            })?,
        },
    };
    let verdict = contract.verify().map_err(|e| e.to_string());
    let settled = settlement
        .as_ref()
        .map(|s| s.verify(witnesses).map_err(|e| e.to_string()));
    let problem = verdict
        .as_ref()
        .err()
        .cloned()
        .or_else(|| settled.as_ref().and_then(|r| r.as_ref().err().cloned()));
    let t = &contract.terms;
    if json {
        let outcome = settled.as_ref().and_then(|r| r.as_ref().ok());
        print_json(&json!({
            "valid": problem.is_none(),
            "problem": problem,
            "id": t.id().to_string(),
            "customer": { "org": t.customer_org, "node": t.customer, "tenant": t.tenant },
            "provider": { "org": t.provider_org, "node": t.provider },
            "arbitrator": { "org": t.arbitrator_org, "node": t.arbitrator },
            "class": t.class.to_string(),
            "buyer_pays": t.buyer_pays,
            "seller_gets": t.seller_gets,
            "start": t.start,
            "end": t.end,
            "cover": t.cover,
            "settlement": settlement.as_ref().map(|s| json!({
                "standby_secs": s.statement.body.standby_secs,
                "active_secs": s.statement.body.active_secs,
                "due": s.statement.body.due,
                "penalty": s.statement.body.penalty,
                "outcome": outcome,
                "transfers": locus_market::settle::transfers(s),
            })),
        }))?;
    } else {
        match &verdict {
            Ok(id) => println!(
                "{shown}: contract {} signed by both — customer org {} (node {}, tenant {}), provider org {} (node {}), arbitrator org {}; {} at {} mc/h for {} s; covers {} workload(s), {} thing(s)",
                id.short(),
                t.customer_org,
                t.customer,
                t.tenant,
                t.provider_org,
                t.provider,
                t.arbitrator_org,
                t.class,
                t.buyer_pays,
                t.end.saturating_sub(t.start),
                t.cover.workloads.len(),
                t.cover.things.len()
            ),
            Err(e) => println!("{shown}: the contract is not valid — {e}"),
        }
        if let (Some(s), Some(r)) = (&settlement, &settled) {
            let u = &s.statement.body;
            match r {
                Ok(o) => println!(
                    "  settled ({}): {} s standby, {} s active, {} handover(s) done, {} missed; {} millicredits; {}",
                    u.close,
                    u.standby_secs,
                    u.active_secs,
                    u.handovers_done,
                    u.handovers_missed,
                    o.value,
                    match o.dispute_lost_by {
                        None => "countersigned by the customer".to_owned(),
                        Some(org) => format!("ruled by the arbitrator against org {org}"),
                    }
                ),
                Err(e) => println!("  the settlement is not valid — {e}"),
            }
        }
        if problem.is_none() {
            println!("{shown}: valid");
        }
    }
    match problem {
        None => Ok(()),
        Some(p) => Err(Failure::Failed(anyhow!("{shown} does not verify: {p}"))),
    }
}

/// The chains of receipts of an org's pairs (`locus account --json`, or
/// just its `chains`): every balance they prove.
pub fn account(path: &Path, json: bool) -> Result<(), Failure> {
    let shown = path.display().to_string();
    let v: Value = serde_json::from_slice(&read(path)?)
        .map_err(|e| Failure::Failed(anyhow!("{shown} is not JSON: {e}")))?;
    let chains = v.get("chains").cloned().unwrap_or(v);
    let chains: Vec<PairChain> = serde_json::from_value(chains).map_err(|e| {
        Failure::Failed(anyhow!(
            "{shown}: `chains` is not a list of pair chains: {e}"
        ))
    })?;
    let receipts: usize = chains.iter().map(|c| c.receipts.len()).sum();
    match prove_balances(chains.iter()) {
        Ok(balances) => {
            if json {
                print_json(&json!({ "valid": true, "receipts": receipts, "balances": balances }))?;
            } else {
                println!(
                    "{shown}: valid — {} pair chain(s), {receipts} receipt(s) signed by both orgs prove:",
                    chains.len()
                );
                for (org, b) in &balances {
                    println!("  org {org}: {b:+} millicredits");
                }
            }
            Ok(())
        }
        Err(e) => {
            if json {
                print_json(&json!({ "valid": false, "problem": e.to_string() }))?;
            } else {
                println!("{shown}: not valid — {e}");
            }
            Err(Failure::Failed(anyhow!("{shown} does not verify: {e}")))
        }
    }
}

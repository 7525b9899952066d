//! `locus bench access`: what a token costs, in process. Mints, attenuates
//! (read-only, one block) and authorizes (a fresh token, an attenuated one
//! of two blocks, and a request the policy denies) N times each, timing
//! every operation alone with a monotonic clock after a short warm-up.
//! Every answer is checked, so a case that stops allowing or denying what
//! it should fails the bench instead of timing an error path.
//! Prints one JSON object on stdout; progress goes to stderr.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, anyhow, ensure};
use ed25519_dalek::SigningKey;
use locus_access::{
    Claims, Denied, Issuer, Narrowing, Operation, OrgId, RevocationSet, Role, TenantName,
    TenantRef, UserName, attenuate, authorize, mint,
};
use locus_core::NodeId;
use serde_json::{Value, json};

use crate::cli::AccessBenchArgs;

/// Warm-up runs per case, at most.
const WARM_UP: u32 = 100;

pub fn access(args: &AccessBenchArgs) -> anyhow::Result<()> {
    let mut key_bytes = [0u8; 32];
    let mut seed = [0u8; 32];
    getrandom::fill(&mut key_bytes).map_err(|e| anyhow!("no randomness available: {e}"))?;
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness available: {e}"))?;
    let issuer_key = SigningKey::from_bytes(&key_bytes);
    let issuer_id = NodeId::from_public_key(&issuer_key.verifying_key());
    // The org key never signs here: only its id is a claim.
    let org = OrgId::from_public_key(&SigningKey::from_bytes(&seed).verifying_key());
    let issuer = Issuer {
        key: issuer_key.verifying_key().to_bytes(),
        org,
    };
    let issuers = |n: &NodeId| (*n == issuer_id).then_some(issuer);
    let tenant = |name: &str| -> anyhow::Result<TenantRef> {
        Ok(TenantRef::new(
            org,
            TenantName::try_from(name.to_owned()).map_err(|e| anyhow!(e))?,
        ))
    };
    let acme = tenant("acme")?;
    let other = tenant("globex")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = Claims {
        user: UserName::try_from("bench".to_owned()).map_err(|e| anyhow!(e))?,
        tenant: acme.clone(),
        role: Role::Operator,
        expires_at: now + 3600,
    };
    let narrowing = Narrowing {
        read_only: true,
        ..Narrowing::default()
    };
    // The answering node: another node of the same org.
    let target = NodeId::from_public_key(&SigningKey::from_bytes(&[7; 32]).verifying_key());
    let none = BTreeSet::new();
    let revoked = RevocationSet::new();
    let base = locus_access::Request {
        operation: Operation::WorkloadList,
        resource_tenant: Some(&acme),
        target_node: target,
        node_org: org,
        granted_tenants: &none,
        now,
    };
    let seed_for = |i: u32| {
        let mut s = seed;
        s[..4].copy_from_slice(&i.to_le_bytes());
        s
    };

    let fresh = mint(&issuer_key, &claims, seed_for(0)).map_err(|e| anyhow!("mint: {e}"))?;
    let narrowed =
        attenuate(&fresh, &narrowing, seed_for(1)).map_err(|e| anyhow!("attenuate: {e}"))?;
    let n = args.iterations;
    let mut cases = Vec::new();

    cases.push(measure("mint", n, |i| {
        mint(&issuer_key, &claims, seed_for(i))
            .map(drop)
            .map_err(|e| anyhow!("mint: {e}"))
    })?);
    cases.push(measure("attenuate", n, |i| {
        attenuate(&fresh, &narrowing, seed_for(i))
            .map(drop)
            .map_err(|e| anyhow!("attenuate: {e}"))
    })?);
    let write = locus_access::Request {
        operation: Operation::WorkloadCreate,
        ..base.clone()
    };
    cases.push(measure("authorize_fresh", n, |_| {
        authorize(&fresh, issuers, &write, &revoked)
            .map(drop)
            .map_err(|e| anyhow!("a fresh token was refused: {e}"))
    })?);
    let read = base.clone();
    cases.push(measure("authorize_attenuated", n, |_| {
        authorize(&narrowed, issuers, &read, &revoked)
            .map(drop)
            .map_err(|e| anyhow!("a read-only token was refused a read: {e}"))
    })?);
    let elsewhere = locus_access::Request {
        operation: Operation::WorkloadCreate,
        resource_tenant: Some(&other),
        ..base.clone()
    };
    cases.push(measure("authorize_denied", n, |_| {
        match authorize(&fresh, issuers, &elsewhere, &revoked) {
            Err(Denied::WrongTenant { .. }) => Ok(()),
            other => Err(anyhow!(
                "a write in another tenant should be WrongTenant: {other:?}"
            )),
        }
    })?);

    let out = json!({
        "benchmark": "access",
        "version": locus_core::VERSION,
        "release_build": !cfg!(debug_assertions),
        "iterations": n,
        "token_bytes": {
            "fresh": fresh.len(),
            "attenuated": narrowed.len(),
        },
        "cases": cases,
    });
    crate::bench::emit(&out, args.out.as_deref())
}

/// Run `op` a few times to warm up, then `n` times, each timed alone.
fn measure(
    name: &str,
    n: u32,
    mut op: impl FnMut(u32) -> anyhow::Result<()>,
) -> anyhow::Result<Value> {
    for i in 0..WARM_UP.min(n) {
        op(i)?;
    }
    let mut micros = Vec::with_capacity(n as usize);
    let total = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i)?;
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let secs = total.elapsed().as_secs_f64();
    ensure!(!micros.is_empty(), "no iterations");
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let report = json!({
        "case": name,
        "iterations": n,
        "us_p50": round(at(0.5)),
        "us_p99": round(at(0.99)),
        "us_max": round(micros[micros.len() - 1]),
        "ops_per_sec": (f64::from(n) / secs).round(),
    });
    eprintln!("{name}: p50 {:.1} µs, p99 {:.1} µs", at(0.5), at(0.99));
    Ok(report)
}

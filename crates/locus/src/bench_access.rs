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
    let issuers = |n: &NodeId, _: Option<&str>| (*n == issuer_id).then_some(issuer);
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
        "live": if args.agents > 0 {
            crate::bench_workloads::in_scratch_value(|root| live(args, root))?
        } else {
            Value::Null
        },
    });
    crate::bench::emit(&out, args.out.as_deref())
}

/// Percentile `q` of sorted `v`.
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    (v[((v.len() - 1) as f64 * q).round() as usize] * 10.0).round() / 10.0
}

/// Requests per second of `GET url` by `clients` keep-alive clients for
/// `secs`, each answer checked to be 200.
fn throughput(url: &str, token: Option<&str>, clients: usize, secs: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    let start = Instant::now();
    let counts = std::thread::scope(|s| -> anyhow::Result<u64> {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<u64> {
                    let http = reqwest::blocking::Client::new();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let mut req = http.get(url);
                        if let Some(t) = token {
                            req = req.bearer_auth(t);
                        }
                        let r = req.send()?;
                        ensure!(r.status() == 200, "GET {url}: {}", r.status());
                        let _ = r.bytes()?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().map_err(|_| anyhow!("a load thread panicked"))??;
        }
        Ok(total)
    })?;
    Ok((counts as f64 / start.elapsed().as_secs_f64()).round())
}

/// The live part: a cheap GET's throughput with and without the token
/// check (two agents, same binary, same run), and how long a revocation
/// takes until every node of a cluster refuses the token.
fn live(args: &AccessBenchArgs, root: &std::path::Path) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let n = usize::from(args.agents.max(1));
    eprintln!("starting {n} agents…");
    let c = crate::bench_workloads::Cluster::start(&exe, root, n)?;
    let open = crate::bench_workloads::Cluster::start_open(&exe, &root.join("open"))?;
    let path = "/api/v1/node";
    // Warm both up.
    throughput(&open.url(0, path), None, 1, 1)?;
    let token = c.token();
    throughput(&c.url(0, path), Some(&token), 1, 1)?;
    eprintln!(
        "throughput of GET {path}, {} clients, {} s each…",
        args.clients, args.load_secs
    );
    let with_auth = throughput(&c.url(0, path), Some(&token), args.clients, args.load_secs)?;
    let without = throughput(&open.url(0, path), None, args.clients, args.load_secs)?;
    eprintln!("  with the token check {with_auth} req/s, without {without} req/s");

    // Revocations: mint on node 0, wait until every node accepts the
    // token, revoke it on node i, poll every node until each refuses it.
    let whoami = |i: usize, t: &str| -> anyhow::Result<u16> {
        Ok(c.http
            .get(c.url(i, "/api/v1/whoami"))
            .bearer_auth(t)
            .send()?
            .status()
            .as_u16())
    };
    let mut all_ms = Vec::new();
    let mut per_node_ms = Vec::new();
    for run in 0..args.revocations {
        let minted: Value = c
            .http
            .post(c.url(0, "/api/v1/tokens"))
            .json(&json!({"user": format!("r{run}"), "role": "viewer", "ttl_secs": 3600}))
            .send()?
            .error_for_status()?
            .json()?;
        let t = minted["token"]
            .as_str()
            .context("no token minted")?
            .to_owned();
        let accept_by = Instant::now() + std::time::Duration::from_secs(20);
        for i in 0..n {
            while whoami(i, &t)? != 200 {
                ensure!(
                    Instant::now() < accept_by,
                    "node {i} never accepted the token"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let revoker = run % n;
        let start = Instant::now();
        c.http
            .post(c.url(revoker, "/api/v1/revocations"))
            .json(&json!({"token": t}))
            .send()?
            .error_for_status()?;
        let mut refused_at: Vec<Option<f64>> = vec![None; n];
        let give_up = start + std::time::Duration::from_secs(30);
        while refused_at.iter().any(Option::is_none) {
            ensure!(
                Instant::now() < give_up,
                "a node still accepts a revoked token after 30 s"
            );
            for (i, at) in refused_at.iter_mut().enumerate() {
                if at.is_none() && whoami(i, &t)? == 401 {
                    *at = Some(start.elapsed().as_secs_f64() * 1000.0);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let times: Vec<f64> = refused_at.into_iter().flatten().collect();
        let last = times.iter().copied().fold(0.0, f64::max);
        eprintln!("revocation {run} on node {revoker}: every node refuses it after {last:.0} ms");
        all_ms.push(last);
        per_node_ms.extend(times);
    }
    all_ms.sort_by(f64::total_cmp);
    per_node_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "throughput": {
            "path": path,
            "clients": args.clients,
            "secs": args.load_secs,
            "with_token_check_rps": with_auth,
            "without_token_check_rps": without,
            "ratio": ((with_auth / without) * 1000.0).round() / 1000.0,
            "target_ratio": 0.9,
        },
        "revocation": {
            "nodes": n,
            "runs": args.revocations,
            "all_nodes_refuse_ms_p50": pct(&all_ms, 0.5),
            "all_nodes_refuse_ms_p99": pct(&all_ms, 0.99),
            "all_nodes_refuse_ms_max": pct(&all_ms, 1.0),
            "one_node_refuses_ms_p50": pct(&per_node_ms, 0.5),
            "target_p99_ms": 3000,
        },
    }))
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

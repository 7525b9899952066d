//! `locus bench market`: the market's pure parts at scale, in process.
//! Clears random books of N offers × N requests (signed records, a dozen
//! classes, some requests with uptime or renewable constraints), timing
//! [`locus_market::clear`] and comparing its gains from trade with the
//! exact optimum (a maximum-weight matching per class, Hungarian method,
//! with every constraint); then verifies signed contracts on one thread,
//! each alone (both certificates and both signatures), with the
//! certificates of known parties remembered, and in batches of 64
//! ([`Verifier::verify_many`]). Prints one JSON object on stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, ensure};
use ed25519_dalek::SigningKey;
use locus_access::{NodeCertificate, NodeRole, OrgId};
use locus_market::clearing::{Trader, by_class, clear};
use locus_market::contract::{Proposal, Side, Terms, Verifier};
use locus_market::{
    Class, Contract, Cover, EnergySource, Entry, Offer, Party, Request, Signed, Sla, Tier,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

use crate::cli::MarketBenchArgs;

struct Member {
    key: SigningKey,
    party: Party,
}

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let org_key = SigningKey::from_bytes(&blake3::hash(&(i as u64).to_le_bytes()).into());
            let key =
                SigningKey::from_bytes(&blake3::hash(&(i as u64 + 1_000_000).to_le_bytes()).into());
            let cert = NodeCertificate::new(
                &key.verifying_key(),
                OrgId::from_public_key(&org_key.verifying_key()),
                BTreeSet::from([NodeRole::Worker]),
                1,
                0,
                u64::MAX,
            )
            .sign(&org_key);
            Member {
                party: Party::new(&org_key.verifying_key(), cert),
                key,
            }
        })
        .collect()
}

const TIERS: [Tier; 3] = [Tier::Nano, Tier::Small, Tier::Medium];
const SITES: [&str; 2] = ["north", "south"];

fn book(n: usize, constrained: f64, who: &[Member], rng: &mut StdRng, now: u64) -> Vec<Entry> {
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let m = &who[rng.random_range(0..who.len() as u64) as usize];
        let tier = TIERS[rng.random_range(0..3) as usize];
        let mut offer = Offer {
            provider: m.party.node(),
            org: m.party.org(),
            seq: i as u64,
            spare: tier.resources(),
            tier,
            interfaces: BTreeSet::new(),
            uptime_permille: 900 + rng.random_range(0..101) as u16,
            energy: if rng.random_bool(0.3) {
                EnergySource::SolarBattery
            } else {
                EnergySource::Grid
            },
            battery_percent: None,
            price: 100 + rng.random_range(0..901),
            max_duration_secs: 3600,
            standby: rng.random_bool(0.5),
            site: SITES[rng.random_range(0..2) as usize].to_owned(),
            issued_at: now,
            expires_at: now + 600,
            site_rtt_ms: BTreeMap::new(),
        };
        offer.site_rtt_ms.insert(offer.site.clone(), 0);
        out.push(Entry::Offer(Signed::sign(offer, m.party.clone(), &m.key)));
    }
    for i in 0..n {
        let m = &who[rng.random_range(0..who.len() as u64) as usize];
        let tier = TIERS[rng.random_range(0..3) as usize];
        let constrained = rng.random_bool(constrained.clamp(0.0, 1.0));
        let request = Request {
            customer: m.party.node(),
            org: m.party.org(),
            seq: i as u64,
            tenant: "default".into(),
            needs: tier.resources(),
            cover: Cover::default(),
            site: SITES[rng.random_range(0..2) as usize].to_owned(),
            min_uptime_permille: if constrained && rng.random_bool(0.5) {
                950
            } else {
                0
            },
            renewable: constrained && rng.random_bool(0.5),
            standby: rng.random_bool(0.5),
            max_price: 100 + rng.random_range(0..901),
            duration_secs: 3600,
            sla: Sla {
                handover_within_secs: 3,
                penalty: 1000,
            },
            exclude: BTreeSet::new(),
            issued_at: now,
            expires_at: now + 600,
            near: None,
        };
        out.push(Entry::Request(Signed::sign(
            request,
            m.party.clone(),
            &m.key,
        )));
    }
    out
}

/// The best gains from trade of one class: a maximum-weight matching of
/// buyers to sellers where a pair is worth `b − s` if the buyer accepts
/// the seller and values it at least at its cost (Hungarian method,
/// O(n³) on the square matrix).
fn optimum(buyers: &[Trader], sellers: &[Trader]) -> u64 {
    let n = buyers.len().max(sellers.len());
    if n == 0 {
        return 0;
    }
    let gain = |i: usize, j: usize| -> i64 {
        match (buyers.get(i), sellers.get(j)) {
            (Some(b), Some(s)) if b.price >= s.price && b.accepts(s) => (b.price - s.price) as i64,
            _ => 0,
        }
    };
    // Minimise cost = −gain; rows 1..=n, columns 1..=n (e-maxx).
    let inf = i64::MAX / 4;
    let (mut u, mut v) = (vec![0i64; n + 1], vec![0i64; n + 1]);
    let (mut p, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = -gain(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=n).map(|j| gain(p[j] - 1, j - 1) as u64).sum()
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    json!({ "min": at(0.0), "p50": at(0.5), "p95": at(0.95), "max": at(1.0) })
}

fn clearing_case(
    n: usize,
    args: &MarketBenchArgs,
    who: &[Member],
    now: u64,
) -> anyhow::Result<Value> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ (n as u64));
    let mut times = Vec::new();
    let mut ratios = Vec::new();
    let mut ratios_unconstrained = Vec::new();
    let (mut trades, mut classes) = (0usize, 0usize);
    for b in 0..args.books {
        eprintln!("market: book {}/{} of {n} × {n}", b + 1, args.books);
        let entries = book(n, args.constrained, who, &mut rng, now);
        let mut best = None;
        let mut result = None;
        for _ in 0..args.runs {
            let t = Instant::now();
            let r = clear(&entries);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            best = Some(best.map_or(ms, |b: f64| b.min(ms)));
            times.push(ms);
            result = Some(r);
        }
        let r = result.context("no run")?;
        let exact: u64 = by_class(&entries)
            .values()
            .map(|(buyers, sellers)| optimum(buyers, sellers))
            .sum();
        ensure!(
            r.gains() <= exact,
            "clearing gains {} above the optimum {exact}",
            r.gains()
        );
        if exact > 0 {
            ratios.push(r.gains() as f64 / exact as f64);
        }
        if r.optimal_gains() > 0 {
            // Without constraints the sorted pairs are the optimum.
            let unconstrained: u64 = r.classes.iter().map(|c| c.optimal_gains).sum();
            ratios_unconstrained.push(mcafee_gains(&entries) as f64 / unconstrained as f64);
        }
        trades += r.matches.len();
        classes += r.classes.len();
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Ok(json!({
        "offers": n,
        "requests": n,
        "books": args.books,
        "runs_per_book": args.runs,
        "clear_ms": summary(times),
        "efficiency": {
            "mean": mean(&ratios),
            "min": ratios.iter().copied().fold(f64::INFINITY, f64::min),
            "mean_without_constraints": mean(&ratios_unconstrained),
        },
        "trades_per_book": trades as f64 / args.books as f64,
        "classes_per_book": classes as f64 / args.books as f64,
    }))
}

/// Gains of the same book with every constraint dropped: the one-good
/// mechanism's own efficiency.
fn mcafee_gains(entries: &[Entry]) -> u64 {
    by_class(entries)
        .into_iter()
        .map(|(class, (mut b, mut s))| {
            for t in b.iter_mut().chain(s.iter_mut()) {
                t.uptime_permille = 0;
                t.renewable = false;
                t.exclude.clear();
            }
            // Each trader of an org of its own, as in the mechanism's model.
            for (i, t) in b.iter_mut().chain(s.iter_mut()).enumerate() {
                let mut id = [0u8; 10];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                t.org = OrgId::from_bytes(id);
            }
            locus_market::clearing::clear_class(&class, &b, &s).0.gains
        })
        .sum()
}

fn contracts_case(args: &MarketBenchArgs, who: &[Member], now: u64) -> anyhow::Result<Value> {
    ensure!(who.len() >= 3, "contracts need three orgs");
    let class = Class {
        tier: Tier::Small,
        site: "north".into(),
        standby: true,
    };
    let mut contracts: Vec<Contract> = Vec::with_capacity(args.contracts as usize);
    let mut rng = StdRng::seed_from_u64(args.seed);
    for i in 0..args.contracts as usize {
        let c = &who[i % who.len()];
        let p = &who[(i + 1) % who.len()];
        let a = &who[(i + 2) % who.len()];
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let terms = Terms {
            round: 1,
            request: locus_market::RecordId(id),
            offer: locus_market::RecordId(*blake3::hash(&id).as_bytes()),
            customer: c.party.node(),
            customer_org: c.party.org(),
            tenant: "default".into(),
            provider: p.party.node(),
            provider_org: p.party.org(),
            arbitrator: a.party.node(),
            arbitrator_org: a.party.org(),
            class: class.clone(),
            buyer_pays: 500 + rng.random_range(0..100),
            seller_gets: 500,
            standby_permille: 100,
            start: now,
            end: now + 3600,
            cover: Cover {
                workloads: ["web".to_owned()].into(),
                things: ["sensor-1".to_owned()].into(),
            },
            sla: Sla {
                handover_within_secs: 3,
                penalty: 1000,
            },
            stakes: locus_market::contract::Stakes {
                customer: 50,
                provider: 1000,
            },
            revision: 0,
            proposed_at: now,
        };
        let proposal = Proposal::sign(terms, Side::Customer, c.party.clone(), &c.key);
        contracts.push(proposal.accept(p.party.clone(), &p.key));
    }
    let bytes = contracts.first().map_or(0, |c| c.to_bytes().len());
    // Contracts verified per second on this thread, `chunk` at a time,
    // and the share of that time the thread was on a core.
    let rate = |chunk: usize,
                f: &mut dyn FnMut(&[Contract]) -> bool|
     -> anyhow::Result<(f64, Option<f64>)> {
        let cpu = thread_cpu_ns();
        let t = Instant::now();
        let mut n = 0usize;
        while t.elapsed().as_secs_f64() < 1.0 || n < contracts.len() {
            for c in contracts.chunks(chunk) {
                ensure!(f(c), "a contract did not verify");
                n += c.len();
            }
        }
        let wall = t.elapsed().as_secs_f64();
        let share = cpu
            .zip(thread_cpu_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9 / wall);
        Ok((n as f64 / wall, share))
    };
    // Every rate runs on this one thread: verification spawns none.
    let cold = rate(1, &mut |c| c.iter().all(|c| c.verify().is_ok()))?;
    let mut verifier = Verifier::default();
    let warm = rate(1, &mut |c| {
        c.iter().all(|c| c.verify_with(&mut verifier).is_ok())
    })?;
    let mut verifier = Verifier::default();
    let batched = rate(BATCH, &mut |c| {
        verifier.verify_many(c).iter().all(Result::is_ok)
    })?;
    Ok(json!({
        "contracts": contracts.len(),
        "parties": who.len(),
        "contract_bytes": bytes,
        "batch": BATCH,
        "verify_per_sec_one_core": {
            "each_alone": cold.0,
            "known_parties": warm.0,
            "batched": batched.0,
        },
        "thread_on_core_share": {
            "each_alone": cold.1,
            "known_parties": warm.1,
            "batched": batched.1,
        },
    }))
}

/// Contracts per [`Verifier::verify_many`] call in the batched rate.
const BATCH: usize = 64;

/// Time this thread has spent on a core, ns (Linux's
/// `/proc/thread-self/schedstat`); `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn market(args: &MarketBenchArgs) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let who = members(args.orgs as usize);
    let mut clearing = Vec::new();
    for &n in &args.sizes {
        clearing.push(clearing_case(n, args, &who, now)?);
    }
    eprintln!("market: verifying {} contracts", args.contracts);
    let contracts = contracts_case(args, &who, now)?;
    let live = if args.agents >= 3 {
        crate::bench_workloads::in_scratch_value(|root| {
            crate::bench_market_live::live(
                usize::from(args.agents),
                args.requests,
                args.handovers,
                root,
            )
        })?
    } else {
        Value::Null
    };
    let out = json!({
        "benchmark": "market",
        "version": env!("CARGO_PKG_VERSION"),
        "release_build": !cfg!(debug_assertions),
        "seed": args.seed,
        "constrained_share": args.constrained,
        "orgs": args.orgs,
        "clearing": clearing,
        "contracts": contracts,
        "live": live,
    });
    let text = serde_json::to_string_pretty(&out)?;
    println!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hungarian_optimum_matches_hand_cases() {
        let t = |org: u8, price: u64| Trader {
            id: locus_market::RecordId([org; 32]),
            org: OrgId::from_bytes([org; 10]),
            price,
            exclude: BTreeSet::new(),
            uptime_permille: 0,
            renewable: false,
            near: None,
            site_rtt_ms: BTreeMap::new(),
        };
        assert_eq!(
            optimum(&[t(1, 9), t(2, 8), t(3, 3)], &[t(4, 1), t(5, 2), t(6, 5)]),
            8 + 6
        );
        // A buyer that needs renewable power only gains with the green seller.
        let mut green_only = t(1, 10);
        green_only.renewable = true;
        let mut green = t(5, 6);
        green.renewable = true;
        assert_eq!(optimum(&[green_only, t(2, 10)], &[t(4, 1), green]), 4 + 9);
        assert_eq!(optimum(&[], &[t(4, 1)]), 0);
    }
}

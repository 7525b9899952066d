//! Reputation per org from settled contracts, as one org sees it, resisting
//! Sybil orgs.
//!
//! # What this module owns
//!
//! [`reputation`]: from the outcomes of settled contracts ([`Outcome`],
//! which the service derives from signed settlement records) and the org
//! that asks (`own`), a score per org, the number of contracts it is based
//! on and how much the evidence behind it is trusted ([`Reputation`]).
//!
//! # What it must never do
//!
//! Depend on the order of its input, on floating point or on anything but
//! its arguments (no I/O, no clock: `now` is an argument, no randomness);
//! let a group of orgs raise one another's reputation by settling
//! contracts only among themselves; give an org without trusted evidence
//! anything but the prior; grow beyond [`MAX_OUTCOMES`].
//!
//! # The rule
//!
//! **Beta reputation.** An org's score is the mean `α / (α + β)` of a
//! Beta distribution with prior `α = β = 1` (500 ‰), `α − 1` being the good
//! and `β − 1` the bad evidence about it. Each outcome is evidence about
//! both parties, produced by the other one:
//! - about the provider, produced by the customer: a dispute the provider
//!   lost is bad ([`DISPUTE_LOST_FACTOR`] pieces); otherwise half a piece
//!   for the SLA (good if met) and half split between handovers done
//!   (good) and missed (bad), or a whole piece for the SLA when there was
//!   no handover;
//! - about the customer, produced by the provider: a dispute it lost is
//!   bad ([`DISPUTE_LOST_FACTOR`] pieces), otherwise one good piece.
//!
//! A piece weighs `log2(1 + value / VALUE_UNIT)` (value settled, so a big
//! contract counts more, but not in proportion) times `2^(−age /
//! HALF_LIFE_SECS)` (piecewise linear between half-lives).
//!
//! **Trust of the producer.** The evidence a producer gives about one
//! subject is capped at [`PAIR_EVIDENCE_CAP`] pieces (many contracts
//! between the same two orgs are one relation, not many witnesses), then
//! multiplied by the producer's trust: its personalised PageRank from
//! `own` (restart [`RESTART_PERMILLE`] to `own`, [`PAGERANK_ITERATIONS`]
//! steps) over the graph of settled contracts, an edge weighing the value
//! settled between two orgs, decayed like the evidence; trust is that mass
//! relative to `own`'s, at most 1 (`own`'s own experience counts fully).
//!
//! **Why Sybils gain little** (the SybilRank argument): PageRank mass only
//! enters a region of orgs along its edges, so the mass of a clique of
//! Sybil orgs is bounded by the flow along the contracts honest orgs
//! settled with it, divided by the restart probability — whatever the
//! value and number of the contracts inside the clique and however many
//! Sybils there are. The evidence about any one subject from that region
//! is at most `PAIR_EVIDENCE_CAP ×` (the region's mass relative to
//! `own`'s), a fraction of one piece when the region hangs on one small
//! contract. Buying trust costs real credits settled with honest orgs.
//!
//! **Weight.** `weight_permille` is the share of evidence against the
//! prior, `E / (E + 2)` for `E` trusted pieces (the belief mass of
//! subjective logic for Beta evidence): 0 without trusted evidence.
//!
//! # Invariants (tested in `reputation/tests.rs`)
//!
//! - The result depends on the multiset of outcomes, not their order:
//!   outcomes are sorted canonically (newest first, then by every field),
//!   one per contract is kept, and every sum is of integers.
//! - `score_permille` and `weight_permille` are within `0..=1000`; an org
//!   without trusted evidence has 500 ‰ and weight 0.
//! - Outcomes that cannot be (a provider that is its own customer, a
//!   dispute lost by a third org) and outcomes settled after `now` (beyond
//!   the clock skew of [`crate::book::MAX_CLOCK_SKEW_SECS`]) are ignored.

use std::collections::{BTreeMap, BTreeSet};

use locus_access::OrgId;
use serde::{Deserialize, Serialize};

use crate::book::MAX_CLOCK_SKEW_SECS;
use crate::signed::RecordId;

/// Most outcomes considered, newest first.
pub const MAX_OUTCOMES: usize = 10_000;
/// PageRank steps (with restart 0.15, 40 steps leave less than 0.2 % of
/// the mass unconverged).
pub const PAGERANK_ITERATIONS: usize = 40;
/// Chance per step that the walk returns to `own`, per mille.
pub const RESTART_PERMILLE: u128 = 150;
/// Evidence (and the weight of a contract in the graph) halves every
/// 60 days.
pub const HALF_LIFE_SECS: u64 = 60 * 24 * 3600;
/// Millicredits per unit of value in the log scale (one credit).
pub const VALUE_UNIT: u64 = 1_000;
/// How many pieces of bad evidence a lost dispute is.
pub const DISPUTE_LOST_FACTOR: u128 = 2;
/// Most pieces of evidence one producer gives about one subject.
pub const PAIR_EVIDENCE_CAP: u128 = 16;
/// The score of an org without evidence.
pub const PRIOR_PERMILLE: u16 = 500;

/// Fixed-point scales (all arithmetic is on integers).
const LOG_ONE: u128 = 1 << 16;
const DECAY_ONE: u128 = 1 << 20;
const TRUST_ONE: u128 = 1 << 20;
/// One piece of evidence before trust.
const PIECE: u128 = LOG_ONE * DECAY_ONE;
/// One piece of evidence after trust (the prior's α and β are one each).
const TRUSTED_PIECE: u128 = PIECE * TRUST_ONE;
/// The PageRank mass in total.
const MASS: u128 = 1 << 48;

/// The outcome of one settled contract.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Outcome {
    pub contract: RecordId,
    pub provider: OrgId,
    pub customer: OrgId,
    /// Credits settled, millicredits.
    pub value: u64,
    pub sla_met: bool,
    pub handovers_done: u32,
    pub handovers_missed: u32,
    /// The party that lost a dispute over the contract, if any.
    pub dispute_lost_by: Option<OrgId>,
    pub settled_at: u64,
}

impl Outcome {
    /// Two distinct parties, and a dispute lost by one of them if any.
    pub fn is_consistent(&self) -> bool {
        self.provider != self.customer
            && self
                .dispute_lost_by
                .is_none_or(|o| o == self.provider || o == self.customer)
    }

    /// (good, bad) about the provider, for a piece weighing `piece`.
    fn about_provider(&self, piece: u128) -> (u128, u128) {
        if self.dispute_lost_by == Some(self.provider) {
            return (0, piece * DISPUTE_LOST_FACTOR);
        }
        let handovers = u128::from(self.handovers_done) + u128::from(self.handovers_missed);
        let sla = if handovers == 0 { piece } else { piece / 2 };
        let (mut good, mut bad) = if self.sla_met { (sla, 0) } else { (0, sla) };
        let rest = piece - sla;
        if let Some(done) = (rest * u128::from(self.handovers_done)).checked_div(handovers) {
            good += done;
            bad += rest - done;
        }
        (good, bad)
    }

    /// (good, bad) about the customer, for a piece weighing `piece`.
    fn about_customer(&self, piece: u128) -> (u128, u128) {
        if self.dispute_lost_by == Some(self.customer) {
            (0, piece * DISPUTE_LOST_FACTOR)
        } else {
            (piece, 0)
        }
    }
}

/// One org's reputation as `own` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    /// The Beta mean of good against bad evidence, per mille.
    pub score_permille: u16,
    /// Contracts of the org among the outcomes considered (trusted or not).
    pub contracts: u32,
    /// How much trusted evidence there is against the prior, per mille.
    pub weight_permille: u16,
}

impl Reputation {
    /// No evidence.
    pub const PRIOR: Reputation = Reputation {
        score_permille: PRIOR_PERMILLE,
        contracts: 0,
        weight_permille: 0,
    };
}

/// The reputation of every org named by an outcome (and `own`), as `own`
/// sees it at `now`.
pub fn reputation(own: OrgId, outcomes: &[Outcome], now: u64) -> BTreeMap<OrgId, Reputation> {
    let considered = considered(outcomes, now);
    let orgs: BTreeSet<OrgId> = considered
        .iter()
        .flat_map(|o| [o.provider, o.customer])
        .chain([own])
        .collect();
    let ids: Vec<OrgId> = orgs.into_iter().collect();
    let index: BTreeMap<OrgId, usize> = ids.iter().enumerate().map(|(i, o)| (*o, i)).collect();
    let ix = |org: &OrgId| index.get(org).copied().unwrap_or(0);
    let n = ids.len();

    let mut edges: Vec<BTreeMap<usize, u128>> = vec![BTreeMap::new(); n];
    let mut contracts = vec![0u32; n];
    // (producer, subject) → (good, bad), in PIECE units.
    let mut evidence: BTreeMap<(usize, usize), (u128, u128)> = BTreeMap::new();
    for o in &considered {
        let (p, c) = (ix(&o.provider), ix(&o.customer));
        let decay = decay(now.saturating_sub(o.settled_at));
        let edge = u128::from(o.value) * decay;
        if edge > 0 {
            *edges[p].entry(c).or_insert(0) += edge;
            *edges[c].entry(p).or_insert(0) += edge;
        }
        contracts[p] = contracts[p].saturating_add(1);
        contracts[c] = contracts[c].saturating_add(1);
        let piece = value_weight(o.value) * decay;
        for (key, (good, bad)) in [
            ((c, p), o.about_provider(piece)),
            ((p, c), o.about_customer(piece)),
        ] {
            let e = evidence.entry(key).or_insert((0, 0));
            e.0 += good;
            e.1 += bad;
        }
    }

    let own_ix = ix(&own);
    let mass = personalised_pagerank(own_ix, &edges);
    let own_mass = mass[own_ix].max(1);
    let trust = |org: usize| (mass[org] * TRUST_ONE / own_mass).min(TRUST_ONE);

    let mut good = vec![0u128; n];
    let mut bad = vec![0u128; n];
    let cap = PAIR_EVIDENCE_CAP * PIECE;
    for (&(producer, subject), &(g, b)) in &evidence {
        let total = g + b;
        let (g, b) = if total > cap {
            (g * cap / total, b * cap / total)
        } else {
            (g, b)
        };
        let t = trust(producer);
        good[subject] += g * t;
        bad[subject] += b * t;
    }

    ids.iter()
        .enumerate()
        .map(|(i, org)| {
            let (g, b) = (good[i], bad[i]);
            let score = 1000 * (TRUSTED_PIECE + g) / (2 * TRUSTED_PIECE + g + b);
            let weight = 1000 * (g + b) / (g + b + 2 * TRUSTED_PIECE);
            let rep = Reputation {
                score_permille: permille(score),
                contracts: contracts[i],
                weight_permille: permille(weight),
            };
            (*org, rep)
        })
        .collect()
}

fn permille(x: u128) -> u16 {
    u16::try_from(x.min(1000)).unwrap_or(1000)
}

/// The outcomes that count, in canonical order: consistent, settled by
/// `now` (give or take the clock skew), newest first and then by every
/// field, one per contract, at most [`MAX_OUTCOMES`].
fn considered(outcomes: &[Outcome], now: u64) -> Vec<&Outcome> {
    let horizon = now.saturating_add(MAX_CLOCK_SKEW_SECS);
    let mut v: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.is_consistent() && o.settled_at <= horizon)
        .collect();
    v.sort_by(|x, y| y.settled_at.cmp(&x.settled_at).then_with(|| x.cmp(y)));
    let mut seen = BTreeSet::new();
    v.retain(|o| seen.insert(o.contract));
    v.truncate(MAX_OUTCOMES);
    v
}

/// `2^(−age / HALF_LIFE_SECS)` in `DECAY_ONE` units, exact at whole
/// half-lives and linear between them.
fn decay(age: u64) -> u128 {
    let halvings = age / HALF_LIFE_SECS;
    let Some(whole) = u32::try_from(halvings)
        .ok()
        .and_then(|h| DECAY_ONE.checked_shr(h))
    else {
        return 0;
    };
    let rest = u128::from(age % HALF_LIFE_SECS);
    whole - whole * rest / (2 * u128::from(HALF_LIFE_SECS))
}

/// `log2(1 + value / VALUE_UNIT)` in `LOG_ONE` units.
fn value_weight(value: u64) -> u128 {
    let unit = u128::from(VALUE_UNIT);
    log2_fixed(unit + u128::from(value)).saturating_sub(log2_fixed(unit))
}

/// `log2(x)` in `LOG_ONE` units (16 fractional bits) for `x ≥ 1`, by
/// repeated squaring of the mantissa; 0 for 0.
fn log2_fixed(x: u128) -> u128 {
    if x == 0 {
        return 0;
    }
    const FRAC: u32 = 62;
    let int = 127 - x.leading_zeros();
    // The mantissa in [1, 2) with FRAC fractional bits.
    let mut y = if int >= FRAC {
        x >> (int - FRAC)
    } else {
        x << (FRAC - int)
    };
    let mut frac = 0u128;
    for bit in (0..16).rev() {
        y = (y * y) >> FRAC;
        if y >= 2 << FRAC {
            y >>= 1;
            frac |= 1 << bit;
        }
    }
    (u128::from(int) << 16) | frac
}

/// PageRank personalised to `own`: the walk restarts at `own` with
/// [`RESTART_PERMILLE`], else follows an edge in proportion to its weight;
/// an org without edges sends its mass back to `own`, as does the rounding
/// of each step, so the total stays [`MASS`] exactly.
fn personalised_pagerank(own: usize, edges: &[BTreeMap<usize, u128>]) -> Vec<u128> {
    let n = edges.len();
    // Scale each org's weights so their sum fits 64 bits (mass × weight
    // then fits 128).
    let scaled: Vec<(Vec<(usize, u128)>, u128)> = edges
        .iter()
        .map(|out| {
            let total: u128 = out.values().sum();
            let shift = (128 - total.leading_zeros()).saturating_sub(64);
            let ws: Vec<(usize, u128)> = out.iter().map(|(v, w)| (*v, w >> shift)).collect();
            let sum = ws.iter().map(|(_, w)| w).sum();
            (ws, sum)
        })
        .collect();
    let mut mass = vec![0u128; n];
    if let Some(m) = mass.get_mut(own) {
        *m = MASS;
    }
    for _ in 0..PAGERANK_ITERATIONS {
        let mut next = vec![0u128; n];
        let mut back = 0u128;
        for (u, (out, total)) in scaled.iter().enumerate() {
            let walk = mass[u] * (1000 - RESTART_PERMILLE) / 1000;
            back += mass[u] - walk;
            if *total == 0 {
                back += walk;
                continue;
            }
            let mut given = 0;
            for &(v, w) in out {
                let share = walk * w / total;
                next[v] += share;
                given += share;
            }
            back += walk - given;
        }
        if let Some(m) = next.get_mut(own) {
            *m += back;
        }
        mass = next;
    }
    mass
}

#[cfg(test)]
mod tests;

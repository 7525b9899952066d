//! Clearing: one round of the market as a pure function of its book.
//!
//! # The mechanism: McAfee's trade reduction, per class
//!
//! Each class (see [`crate::class`]) is cleared as a market of one good
//! with unit demand and unit supply. Buyers (requests) are sorted by value
//! (`max_price`) from high to low, sellers (offers) by cost (`price`) from
//! low to high, ties broken by record id, so the order is the same on
//! every node whatever order the records came in. Let `k` be the largest
//! index with `b_k ≥ s_k`: the first `k` pairs are the efficient trades.
//! The price comes from the first reports that do not trade, never from
//! a trader's own:
//!
//! - both a `(k+1)`-th buyer and a `(k+1)`-th seller: with
//!   `p = ⌊(b_{k+1} + s_{k+1}) / 2⌋`, if `s_k ≤ p ≤ b_k` all `k` pairs
//!   trade at `p` (McAfee's midpoint);
//! - every buyer wins (no `(k+1)`-th buyer, as with one customer and
//!   several providers): if `s_{k+1} ≤ b_k`, all `k` pairs trade at
//!   `s_{k+1}`, the first losing seller's cost (a reverse Vickrey auction);
//! - every seller wins: symmetrically, at `b_{k+1}` if `b_{k+1} ≥ s_k`;
//! - otherwise the `k`-th pair is left out and `k − 1` pairs trade,
//!   buyers paying `b_k` and sellers getting `s_k` (trade reduction); the
//!   difference is the round's surplus, paid to each contract's
//!   arbitrator.
//!
//! Properties (McAfee, "A dominant strategy double auction", JET 1992;
//! the one-sided cases are the `(k+1)`-th price auctions of the side that
//! has losers): **truthful** — a trader's price is set by reports of
//! traders that do not trade, so misreporting cannot gain;
//! **individually rational** — a buyer never pays more than its value
//! nor a seller gets less than its cost; **weakly budget balanced** —
//! buyers pay at least what sellers get (exactly, except under trade
//! reduction); **efficient up to one trade** — gains are at least
//! `(1 − 1/k)` of the optimum, the optimum itself unless reduced. One
//! buyer and one seller alone never trade: no truthful, individually
//! rational, budget-balanced rule can price them from the book alone.
//! Integer prices keep every node's result identical.
//!
//! Winning buyers and sellers of a class are then paired where a buyer
//! may contract with a seller ([`Trader::accepts`]: not its own org, not
//! an org it excludes, at least its minimum uptime, renewable power if it
//! requires it, within its bound on round-trip time to a site by the
//! seller's measured RTTs if it has one), by a maximum matching grown one buyer at a time, best
//! buyer first, each taking the cheapest seller it can; a buyer left
//! without one does not trade. Individual rationality and budget balance
//! hold whatever the constraints (one price per class); truthfulness and
//! the `(1 − 1/k)` bound are those of the one-good market, so they hold
//! exactly for requests without constraints — a constrained request may
//! win and stay unpaired. `locus bench market` measures the efficiency
//! with constraints against the exact optimum.
//!
//! A request that excludes orgs (it re-entered the book after a rejected
//! negotiation) does not take part in its class's main market: after it,
//! the requests with the same exclusions form a market of their own
//! against the class's unsold sellers not of those orgs, by the same
//! rule. Otherwise the provider it just left would win it again every
//! round and leave it unpaired.
//!
//! A **round** is a number and a cutoff time: its book is every record
//! issued at or before the cutoff and live at it. The round is signed by
//! a clearing node chosen by rendezvous hashing on the round number over
//! the live nodes ([`clearer`]); any node recomputes [`clear`] over the
//! records the round lists and refuses a result that differs
//! ([`check_round`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use locus_access::OrgId;
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::book::{Entry, Near, Offer, Request};
use crate::class::Class;
use crate::signed::{Authored, RecordId, Signed};

/// A buyer or a seller as the mechanism sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trader {
    pub id: RecordId,
    pub org: OrgId,
    /// Value (buyer) or cost (seller) per unit-hour, millicredits.
    pub price: u64,
    /// Orgs this trader will not contract with (buyers only).
    pub exclude: BTreeSet<OrgId>,
    /// Measured uptime per mille (a seller) or the minimum asked (a buyer).
    pub uptime_permille: u16,
    /// Renewable power: had (a seller) or required (a buyer).
    pub renewable: bool,
    /// A bound on the seller's RTT to a site (buyers only).
    pub near: Option<Near>,
    /// Measured RTT to each site it knows, ms (sellers only).
    pub site_rtt_ms: BTreeMap<String, u32>,
}

impl Trader {
    /// Whether this buyer may be paired with `seller`.
    pub fn accepts(&self, seller: &Trader) -> bool {
        seller.org != self.org
            && !self.exclude.contains(&seller.org)
            && seller.uptime_permille >= self.uptime_permille
            && (seller.renewable || !self.renewable)
            && self
                .near
                .as_ref()
                .is_none_or(|near| near.met_by(&seller.site_rtt_ms))
    }
}

/// How a class's price was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceRule {
    /// Nobody trades: no buyer values a unit at or above a seller's cost.
    NoTrade,
    /// All `k` efficient pairs trade at the midpoint of the `(k+1)`-th
    /// reports.
    Midpoint,
    /// Every buyer wins; all trade at the first losing seller's cost.
    NextSeller,
    /// Every seller wins; all trade at the first losing buyer's value.
    NextBuyer,
    /// The `k`-th pair is left out; buyers pay `b_k`, sellers get `s_k`.
    TradeReduction,
}

/// One trade: a request met by an offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub class: Class,
    pub request: RecordId,
    pub offer: RecordId,
    /// Paid by the customer per unit-hour, millicredits.
    pub buyer_pays: u64,
    /// Got by the provider per unit-hour, millicredits.
    pub seller_gets: u64,
}

/// The result of one class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassOutcome {
    pub class: Class,
    pub buyers: usize,
    pub sellers: usize,
    /// Number of efficient pairs.
    pub k: usize,
    pub rule: PriceRule,
    pub buyer_pays: u64,
    pub seller_gets: u64,
    /// Gains from trade of the efficient pairs (Σ b_i − s_i, i ≤ k).
    pub optimal_gains: u64,
    /// Gains from trade of the pairs that trade.
    pub gains: u64,
    /// The orgs its buyers exclude: empty for the class's main market,
    /// else the market of the requests re-listed without them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub excluded: BTreeSet<OrgId>,
}

/// What a round decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearing {
    pub matches: Vec<Match>,
    pub classes: Vec<ClassOutcome>,
}

impl Clearing {
    pub fn gains(&self) -> u64 {
        self.classes.iter().map(|c| c.gains).sum()
    }
    pub fn optimal_gains(&self) -> u64 {
        self.classes.iter().map(|c| c.optimal_gains).sum()
    }
}

/// Clear one class. Buyers and sellers in any order; the answer does not
/// depend on it.
pub fn clear_class(
    class: &Class,
    buyers: &[Trader],
    sellers: &[Trader],
) -> (ClassOutcome, Vec<Match>) {
    let mut b: Vec<&Trader> = buyers.iter().collect();
    let mut s: Vec<&Trader> = sellers.iter().collect();
    b.sort_by(|x, y| y.price.cmp(&x.price).then(x.id.cmp(&y.id)));
    s.sort_by(|x, y| x.price.cmp(&y.price).then(x.id.cmp(&y.id)));
    let k = b
        .iter()
        .zip(&s)
        .take_while(|(b, s)| b.price >= s.price)
        .count();
    let optimal_gains = b
        .iter()
        .zip(&s)
        .take(k)
        .map(|(b, s)| b.price - s.price)
        .sum();
    let mut outcome = ClassOutcome {
        class: class.clone(),
        buyers: b.len(),
        sellers: s.len(),
        k,
        rule: PriceRule::NoTrade,
        buyer_pays: 0,
        seller_gets: 0,
        optimal_gains,
        gains: 0,
        excluded: BTreeSet::new(),
    };
    if k == 0 {
        return (outcome, Vec::new());
    }
    let (bk, sk) = (b[k - 1].price, s[k - 1].price);
    let priced = match (b.get(k), s.get(k)) {
        (Some(bn), Some(sn)) => {
            let p = ((bn.price as u128 + sn.price as u128) / 2) as u64;
            (sk <= p && p <= bk).then_some((PriceRule::Midpoint, p))
        }
        (None, Some(sn)) => (sn.price <= bk).then_some((PriceRule::NextSeller, sn.price)),
        (Some(bn), None) => (bn.price >= sk).then_some((PriceRule::NextBuyer, bn.price)),
        (None, None) => None,
    };
    let trading = match priced {
        Some((rule, p)) => {
            outcome.rule = rule;
            outcome.buyer_pays = p;
            outcome.seller_gets = p;
            k
        }
        None => {
            outcome.rule = PriceRule::TradeReduction;
            outcome.buyer_pays = bk;
            outcome.seller_gets = sk;
            k - 1
        }
    };
    let (b, s) = (&b[..trading], &s[..trading]);
    let mut matches = Vec::with_capacity(trading);
    for (buyer, seller) in pair(b, s) {
        let (buyer, seller) = (b[buyer], s[seller]);
        outcome.gains += buyer.price - seller.price;
        matches.push(Match {
            class: class.clone(),
            request: buyer.id,
            offer: seller.id,
            buyer_pays: outcome.buyer_pays,
            seller_gets: outcome.seller_gets,
        });
    }
    (outcome, matches)
}

/// Pair winning buyers (best first) with winning sellers (cheapest first)
/// where [`Trader::accepts`] allows: a maximum matching grown one buyer
/// at a time in order (Kuhn's augmenting paths), so a better buyer is
/// never left out for a worse one, and a buyer whose only acceptable
/// seller went to a buyer that could take another still trades. Each
/// buyer first takes the cheapest free seller it accepts, as a first-fit
/// pairing would. Answers (buyer, seller) indices in buyer order.
fn pair(buyers: &[&Trader], sellers: &[&Trader]) -> Vec<(usize, usize)> {
    // owner[s]: the buyer seller s is paired with.
    let mut owner: Vec<Option<usize>> = vec![None; sellers.len()];
    let mut seen = vec![false; sellers.len()];
    for b in 0..buyers.len() {
        let free =
            (0..sellers.len()).find(|&s| owner[s].is_none() && buyers[b].accepts(sellers[s]));
        if let Some(s) = free {
            owner[s] = Some(b);
            continue;
        }
        seen.iter_mut().for_each(|v| *v = false);
        augment(b, buyers, sellers, &mut owner, &mut seen);
    }
    let mut pairs: Vec<(usize, usize)> = owner
        .iter()
        .enumerate()
        .filter_map(|(s, b)| b.map(|b| (b, s)))
        .collect();
    pairs.sort_unstable();
    pairs
}

/// Find seller for buyer `b` along an augmenting path: a seller it
/// accepts that is free, or whose buyer can move to another. The depth is
/// at most the number of buyers already paired.
fn augment(
    b: usize,
    buyers: &[&Trader],
    sellers: &[&Trader],
    owner: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for s in 0..sellers.len() {
        if seen[s] || !buyers[b].accepts(sellers[s]) {
            continue;
        }
        seen[s] = true;
        let moved = match owner[s] {
            None => true,
            Some(other) => augment(other, buyers, sellers, owner, seen),
        };
        if moved {
            owner[s] = Some(b);
            return true;
        }
    }
    false
}

/// The traders of a book, by class. Records that have no class are left
/// out (the book refuses them anyway).
pub fn by_class<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> BTreeMap<Class, (Vec<Trader>, Vec<Trader>)> {
    let mut classes: BTreeMap<Class, (Vec<Trader>, Vec<Trader>)> = BTreeMap::new();
    for entry in entries {
        let id = entry.id();
        match entry {
            Entry::Request(r) => {
                if let Ok(class) = r.body.class() {
                    classes.entry(class).or_default().0.push(buyer(id, &r.body));
                }
            }
            Entry::Offer(o) => {
                if let Ok(class) = o.body.class() {
                    classes
                        .entry(class)
                        .or_default()
                        .1
                        .push(seller(id, &o.body));
                }
            }
        }
    }
    classes
}

fn buyer(id: RecordId, r: &Request) -> Trader {
    Trader {
        id,
        org: r.org,
        price: r.max_price,
        exclude: r.exclude.clone(),
        uptime_permille: r.min_uptime_permille,
        renewable: r.renewable,
        near: r.near.clone(),
        site_rtt_ms: BTreeMap::new(),
    }
}

fn seller(id: RecordId, o: &Offer) -> Trader {
    Trader {
        id,
        org: o.org,
        price: o.price,
        exclude: BTreeSet::new(),
        uptime_permille: o.uptime_permille,
        renewable: o.energy.renewable(),
        near: None,
        site_rtt_ms: o.site_rtt_ms.clone(),
    }
}

/// The markets of one class, in the order they clear: the main market
/// (requests without exclusions), then one per set of excluded orgs.
fn markets(buyers: &[Trader]) -> Vec<(BTreeSet<OrgId>, Vec<Trader>)> {
    let mut groups: BTreeMap<BTreeSet<OrgId>, Vec<Trader>> = BTreeMap::new();
    groups.insert(BTreeSet::new(), Vec::new());
    for b in buyers {
        groups.entry(b.exclude.clone()).or_default().push(b.clone());
    }
    groups.into_iter().collect()
}

/// Clear one class: its main market, then the markets of re-listed
/// requests against the sellers still unsold. Answers each market's
/// outcome (main first) and every match.
pub fn clear_class_markets(
    class: &Class,
    buyers: &[Trader],
    sellers: &[Trader],
) -> (Vec<ClassOutcome>, Vec<Match>) {
    let mut unsold: Vec<Trader> = sellers.to_vec();
    let mut outcomes = Vec::new();
    let mut all = Vec::new();
    for (excluded, group) in markets(buyers) {
        if !excluded.is_empty() && group.is_empty() {
            continue;
        }
        let eligible: Vec<Trader> = unsold
            .iter()
            .filter(|s| !excluded.contains(&s.org))
            .cloned()
            .collect();
        let (mut outcome, matches) = clear_class(class, &group, &eligible);
        outcome.excluded = excluded;
        unsold.retain(|s| !matches.iter().any(|m| m.offer == s.id));
        outcomes.push(outcome);
        all.extend(matches);
    }
    (outcomes, all)
}

/// Clear a whole book: every class on its own, classes in order.
pub fn clear<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Clearing {
    let mut out = Clearing::default();
    for (class, (buyers, sellers)) in by_class(entries) {
        let (outcomes, matches) = clear_class_markets(&class, &buyers, &sellers);
        out.classes.extend(outcomes);
        out.matches.extend(matches);
    }
    out
}

/// Why a record of a book traded or did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub record: RecordId,
    /// `buyer` (a request) or `seller` (an offer).
    pub side: String,
    pub class: Class,
    /// Its place in its class's order (1 is the best report).
    pub rank: usize,
    /// Its report: value (buyer) or cost (seller), per unit-hour.
    pub report: u64,
    pub outcome: ClassOutcome,
    pub matched: Option<Match>,
    pub reason: String,
}

/// Explain record `id` of `entries` as [`clear`] treats it.
pub fn explain<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    id: &RecordId,
) -> Option<Explanation> {
    let entries: Vec<&Entry> = entries.into_iter().collect();
    let me = entries.iter().find(|e| e.id() == *id)?;
    let class = match me {
        Entry::Request(r) => r.body.class().ok()?,
        Entry::Offer(o) => o.body.class().ok()?,
    };
    let classes = by_class(entries.iter().copied());
    let (buyers, sellers) = classes.get(&class)?;
    let buyer = matches!(me, Entry::Request(_));
    // The market of the class the record is in, and its sellers then.
    let (outcomes, all_matches) = clear_class_markets(&class, buyers, sellers);
    let (excluded, near) = match me {
        Entry::Request(r) => (r.body.exclude.clone(), r.body.near.clone()),
        Entry::Offer(_) => (BTreeSet::new(), None),
    };
    let outcome = outcomes.iter().find(|o| o.excluded == excluded)?.clone();
    let matches: Vec<Match> = all_matches;
    let mut order: Vec<&Trader> = if buyer {
        buyers.iter().filter(|b| b.exclude == excluded).collect()
    } else {
        sellers.iter().collect()
    };
    if buyer {
        order.sort_by(|x, y| y.price.cmp(&x.price).then(x.id.cmp(&y.id)));
    } else {
        order.sort_by(|x, y| x.price.cmp(&y.price).then(x.id.cmp(&y.id)));
    }
    let rank = order.iter().position(|t| t.id == *id)? + 1;
    let report = order[rank - 1].price;
    let matched = matches
        .iter()
        .find(|m| m.request == *id || m.offer == *id)
        .cloned();
    let k = outcome.k;
    let trading = if outcome.rule == PriceRule::TradeReduction {
        k.saturating_sub(1)
    } else {
        k
    };
    let reason = match (&matched, outcome.rule) {
        (Some(m), PriceRule::Midpoint) => format!(
            "traded at {} per unit-hour: the midpoint of the first reports that do not trade, so no trader's own report sets its price",
            if buyer { m.buyer_pays } else { m.seller_gets }
        ),
        (Some(m), PriceRule::NextSeller) => format!(
            "traded at {} per unit-hour: every buyer wins, at the cost of the first seller that does not trade",
            m.buyer_pays
        ),
        (Some(m), PriceRule::NextBuyer) => format!(
            "traded at {} per unit-hour: every seller wins, at the value of the first buyer that does not trade",
            m.seller_gets
        ),
        (Some(m), _) => format!(
            "traded; {} {} per unit-hour: the reports of the pair left out by trade reduction",
            if buyer { "pays" } else { "gets" },
            if buyer { m.buyer_pays } else { m.seller_gets }
        ),
        (None, PriceRule::NoTrade) => format!(
            "no trade in class {class}: no buyer values a unit at or above a seller's cost ({} buyers, {} sellers)",
            outcome.buyers, outcome.sellers
        ),
        (None, _) if rank > k => {
            if buyer {
                format!("outbid: its value {report} is below those of the {k} buyers that meet a seller's cost")
            } else {
                format!("undercut: its cost {report} is above those of the {k} sellers that meet a buyer's value")
            }
        }
        (None, _) if rank > trading => format!(
            "left out by trade reduction: the {k}th pair gives way so that the others' price ({} / {}) does not depend on their own reports",
            outcome.buyer_pays, outcome.seller_gets
        ),
        (None, _) if outcome.excluded.is_empty() && !buyer => "won, but no winning buyer accepts it (its own org, uptime, renewable power or latency to a site)".to_owned(),
        (None, _) => format!(
            "won, but no winner of the other side meets its constraints (own org, excluded orgs, uptime, renewable power{})",
            near.as_ref().map_or_else(String::new, |n| format!(", {n}"))
        ),
    };
    Some(Explanation {
        record: *id,
        side: if buyer { "buyer" } else { "seller" }.to_owned(),
        class,
        rank,
        report,
        outcome,
        matched,
        reason,
    })
}

/// The nodes that may clear round `round`, best first: the authors of its
/// records ranked by the rendezvous weight of `(round, node)`. The first
/// clears; the next ones stand in, in order, when it is silent.
pub fn clearers(round: u64, authors: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let weight = |n: &NodeId| {
        let mut h = blake3::Hasher::new();
        h.update(b"locus/market/clearer\0");
        h.update(&round.to_le_bytes());
        h.update(n.as_bytes());
        *h.finalize().as_bytes()
    };
    let mut nodes: Vec<NodeId> = authors
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    nodes.sort_by_cached_key(|n| std::cmp::Reverse(weight(n)));
    nodes
}

/// How many of [`clearers`] may sign a round.
pub const CLEARERS: usize = 3;

/// Domain of the clearing node's signature over a round.
pub const ROUND_DOMAIN: &[u8] = b"locus/market/round/v1\0";
/// Most records one round lists.
pub const MAX_ROUND_RECORDS: usize = 20_000;

/// A round as its clearing node signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub number: u64,
    /// Records issued at or before, and live at, this time.
    pub cutoff: u64,
    pub clearer: NodeId,
    pub clearer_org: OrgId,
    /// The records cleared, sorted.
    pub book: Vec<RecordId>,
    pub matches: Vec<Match>,
}

impl Authored for Round {
    const DOMAIN: &'static [u8] = ROUND_DOMAIN;
    fn author(&self) -> NodeId {
        self.clearer
    }
    fn author_org(&self) -> OrgId {
        self.clearer_org
    }
    fn signed_at(&self) -> u64 {
        self.cutoff
    }
}

/// Why a signed round is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Signature(#[from] crate::signed::SignatureError),
    #[error("round {round} is not node {actual}'s to clear (its clearers are {expected:?})")]
    NotTheClearer {
        round: u64,
        expected: Vec<NodeId>,
        actual: NodeId,
    },
    #[error(
        "round {round} leaves out record {id}, issued at {issued_at}, before its cutoff {cutoff}"
    )]
    Omitted {
        round: u64,
        id: RecordId,
        issued_at: u64,
        cutoff: u64,
    },
    #[error("round {round} lists record {id}, which this node does not hold")]
    UnknownRecord { round: u64, id: RecordId },
    #[error("round {round} lists record {id}, which was not live at its cutoff {cutoff}")]
    NotLive {
        round: u64,
        id: RecordId,
        cutoff: u64,
    },
    #[error("round {round} lists {0} records, more than {MAX_ROUND_RECORDS}", round = .1)]
    TooBig(usize, u64),
    #[error("round {round} lists its book unsorted or twice")]
    Unsorted { round: u64 },
    #[error("round {round}: the matches signed are not those of its book ({detail})")]
    WrongMatches { round: u64, detail: String },
}

/// Build a round from the records of `book` live at `cutoff`.
pub fn round(
    number: u64,
    cutoff: u64,
    clearer: NodeId,
    clearer_org: OrgId,
    book: &[&Entry],
) -> Round {
    let live: Vec<&Entry> = book
        .iter()
        .copied()
        .filter(|e| e.issued_at() <= cutoff && e.expires_at() > cutoff)
        .collect();
    let mut ids: Vec<RecordId> = live.iter().map(|e| e.id()).collect();
    ids.sort();
    ids.dedup();
    Round {
        number,
        cutoff,
        clearer,
        clearer_org,
        book: ids,
        matches: clear(live).matches,
    }
}

/// Check a signed round against the records this node holds (`known`,
/// each checked when taken): every record it lists is known and live at
/// the cutoff; no known record issued `settle_secs` or more before the
/// cutoff and live at it is left out; the signer is one of the round's
/// first [`CLEARERS`] clearers; and its matches are exactly [`clear`] of
/// its book.
pub fn check_round<E: std::borrow::Borrow<Entry>>(
    signed: &Signed<Round>,
    known: &HashMap<RecordId, E>,
    settle_secs: u64,
) -> Result<(), RoundError> {
    let r = &signed.body;
    let round = r.number;
    if r.book.len() > MAX_ROUND_RECORDS {
        return Err(RoundError::TooBig(r.book.len(), round));
    }
    if r.book.windows(2).any(|w| w[0] >= w[1]) {
        return Err(RoundError::Unsorted { round });
    }
    let mut entries = Vec::with_capacity(r.book.len());
    for id in &r.book {
        let entry: &Entry = known
            .get(id)
            .ok_or(RoundError::UnknownRecord { round, id: *id })?
            .borrow();
        if entry.issued_at() > r.cutoff || entry.expires_at() <= r.cutoff {
            return Err(RoundError::NotLive {
                round,
                id: *id,
                cutoff: r.cutoff,
            });
        }
        entries.push(entry);
    }
    for (id, entry) in known {
        let entry: &Entry = entry.borrow();
        if entry.issued_at().saturating_add(settle_secs) <= r.cutoff
            && entry.expires_at() > r.cutoff
            && r.book.binary_search(id).is_err()
        {
            return Err(RoundError::Omitted {
                round,
                id: *id,
                issued_at: entry.issued_at(),
                cutoff: r.cutoff,
            });
        }
    }
    let mut ranked = clearers(round, entries.iter().map(|e| e.author()));
    ranked.truncate(CLEARERS);
    if !ranked.contains(&r.clearer) {
        return Err(RoundError::NotTheClearer {
            round,
            expected: ranked,
            actual: r.clearer,
        });
    }
    signed.verify()?;
    let expected = clear(entries).matches;
    if expected != r.matches {
        let detail = match expected.iter().zip(&r.matches).position(|(a, b)| a != b) {
            Some(i) => format!("match {i} differs"),
            None => format!(
                "{} matches expected, {} signed",
                expected.len(),
                r.matches.len()
            ),
        };
        return Err(RoundError::WrongMatches { round, detail });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

use super::*;
use crate::book::BookError;
use crate::book::testing::{offer, request};
use crate::book::{MAX_RECORD_BYTES, MAX_RTT_MS, MAX_SITE_RTTS, Near};
use crate::class::Tier;
use crate::signed::testing::{TestNode, node};
use proptest::prelude::*;

fn class() -> Class {
    Class {
        tier: Tier::Small,
        site: "lab".into(),
        standby: true,
    }
}

fn id(n: usize) -> RecordId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    RecordId(b)
}

fn org(n: usize) -> OrgId {
    let mut b = [0u8; 10];
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    OrgId::from_bytes(b)
}

/// Buyers then sellers, each of an org of its own.
fn traders(buyers: &[u64], sellers: &[u64]) -> (Vec<Trader>, Vec<Trader>) {
    let t = |i: usize, price: u64| Trader {
        id: id(i),
        org: org(i),
        price,
        exclude: BTreeSet::new(),
        uptime_permille: 0,
        renewable: false,
        near: None,
        site_rtt_ms: BTreeMap::new(),
    };
    let b = buyers.iter().enumerate().map(|(i, &p)| t(i, p)).collect();
    let s = sellers
        .iter()
        .enumerate()
        .map(|(i, &p)| t(1000 + i, p))
        .collect();
    (b, s)
}

/// What a trader gains: value − payment for a buyer, payment − cost for
/// a seller, 0 if it does not trade.
fn utility(matches: &[Match], who: RecordId, true_price: u64, buyer: bool) -> i128 {
    for m in matches {
        if buyer && m.request == who {
            return true_price as i128 - m.buyer_pays as i128;
        }
        if !buyer && m.offer == who {
            return m.seller_gets as i128 - true_price as i128;
        }
    }
    0
}

/// The best gains from trade over every matching, by brute force.
fn optimum(buyers: &[Trader], sellers: &[Trader]) -> u64 {
    fn go(buyers: &[Trader], sellers: &mut Vec<Option<&Trader>>) -> u64 {
        let Some((b, rest)) = buyers.split_first() else {
            return 0;
        };
        let mut best = go(rest, sellers);
        for i in 0..sellers.len() {
            if let Some(s) = sellers[i]
                && b.price >= s.price
                && b.accepts(s)
            {
                sellers[i] = None;
                best = best.max(b.price - s.price + go(rest, sellers));
                sellers[i] = Some(s);
            }
        }
        best
    }
    go(buyers, &mut sellers.iter().map(Some).collect())
}

fn prices(max: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(1u64..1000, 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn individually_rational_and_budget_balanced(b in prices(20), s in prices(20)) {
        let (buyers, sellers) = traders(&b, &s);
        let (outcome, matches) = clear_class(&class(), &buyers, &sellers);
        for m in &matches {
            let buyer = buyers.iter().find(|t| t.id == m.request).unwrap();
            let seller = sellers.iter().find(|t| t.id == m.offer).unwrap();
            prop_assert!(m.buyer_pays <= buyer.price, "a buyer pays more than its value");
            prop_assert!(m.seller_gets >= seller.price, "a seller gets less than its cost");
            prop_assert!(m.buyer_pays >= m.seller_gets, "the market pays out more than it takes");
        }
        prop_assert!(matches.len() == outcome.k || matches.len() + 1 == outcome.k);
    }

    #[test]
    fn efficient_up_to_one_trade(b in prices(7), s in prices(7)) {
        let (buyers, sellers) = traders(&b, &s);
        let (outcome, _) = clear_class(&class(), &buyers, &sellers);
        let best = optimum(&buyers, &sellers);
        prop_assert_eq!(outcome.optimal_gains, best);
        prop_assert!(outcome.gains <= best);
        if outcome.k > 0 {
            // gains ≥ (1 − 1/k) · optimum
            prop_assert!(outcome.gains as u128 * outcome.k as u128 >= best as u128 * (outcome.k as u128 - 1));
        }
    }

    /// No sampled unilateral misreport gains a trader anything.
    #[test]
    fn truthful(b in prices(12), s in prices(12), who in any::<prop::sample::Index>(), lie in 0u64..1200) {
        prop_assume!(!b.is_empty() || !s.is_empty());
        let (buyers, sellers) = traders(&b, &s);
        let i = who.index(b.len() + s.len());
        let is_buyer = i < b.len();
        let (target, true_price) = if is_buyer {
            (buyers[i].id, buyers[i].price)
        } else {
            (sellers[i - b.len()].id, sellers[i - b.len()].price)
        };
        let honest = utility(&clear_class(&class(), &buyers, &sellers).1, target, true_price, is_buyer);
        let (mut lb, mut ls) = (buyers.clone(), sellers.clone());
        if is_buyer { lb[i].price = lie } else { ls[i - b.len()].price = lie }
        let lying = utility(&clear_class(&class(), &lb, &ls).1, target, true_price, is_buyer);
        prop_assert!(lying <= honest, "reporting {lie} instead of {true_price} gains {lying} > {honest}");
    }

    #[test]
    fn order_independent(b in prices(15), s in prices(15), seed in any::<u64>()) {
        let (buyers, sellers) = traders(&b, &s);
        let reference = clear_class(&class(), &buyers, &sellers);
        let (mut rb, mut rs) = (buyers.clone(), sellers.clone());
        let mut x = seed | 1;
        let mut next = |n: usize| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x % n.max(1) as u64) as usize };
        for i in (1..rb.len()).rev() { let j = next(i + 1); rb.swap(i, j); }
        for i in (1..rs.len()).rev() { let j = next(i + 1); rs.swap(i, j); }
        prop_assert_eq!(clear_class(&class(), &rb, &rs), reference);
    }

    /// Pairing never puts a buyer with its own org or one it excludes.
    #[test]
    fn pairs_respect_orgs_and_exclusions(b in prices(10), s in prices(10), same in prop::collection::vec(any::<bool>(), 10)) {
        let (mut buyers, mut sellers) = traders(&b, &s);
        for (i, t) in sellers.iter_mut().enumerate() {
            if same.get(i).copied().unwrap_or(false) { t.org = org(0); }
        }
        if let Some(first) = buyers.first_mut() { first.exclude.insert(org(1000)); }
        let (outcome, matches) = clear_class(&class(), &buyers, &sellers);
        for m in &matches {
            let buyer = buyers.iter().find(|t| t.id == m.request).unwrap();
            let seller = sellers.iter().find(|t| t.id == m.offer).unwrap();
            prop_assert_ne!(buyer.org, seller.org);
            prop_assert!(!buyer.exclude.contains(&seller.org));
        }
        prop_assert!(outcome.gains <= optimum(&buyers, &sellers));
    }
}

/// Size of a maximum matching of `buyers` with `sellers` where the buyer
/// accepts, by brute force.
fn most_pairs(buyers: &[&Trader], sellers: &[&Trader]) -> usize {
    fn go(buyers: &[&Trader], sellers: &[&Trader], used: &mut Vec<bool>) -> usize {
        let Some((first, rest)) = buyers.split_first() else {
            return 0;
        };
        let mut best = go(rest, sellers, used);
        for (i, s) in sellers.iter().enumerate() {
            if !used[i] && first.accepts(s) {
                used[i] = true;
                best = best.max(1 + go(rest, sellers, used));
                used[i] = false;
            }
        }
        best
    }
    go(buyers, sellers, &mut vec![false; sellers.len()])
}

proptest! {
    /// Winners are paired by a maximum matching grown best buyer first:
    /// every pair is allowed, no seller sold twice, and for every prefix
    /// of the buyers as many of them trade as possibly could, so a better
    /// buyer is never left out for a worse one.
    #[test]
    fn winners_are_paired_by_a_maximum_matching_best_buyer_first(
        b in prop::collection::vec((0u16..1000, any::<bool>(), 0usize..4, prop::option::of(0u32..100)), 1..7),
        s in prop::collection::vec((0u16..1000, any::<bool>(), 0usize..4, prop::option::of(0u32..100)), 1..7),
    ) {
        // The fourth part: a buyer's bound on the RTT to site `edge`, a
        // seller's measured RTT to it (none: it does not know the site).
        let t = |i: usize, (uptime, renewable, o, rtt): (u16, bool, usize, Option<u32>)| Trader {
            id: id(i),
            org: org(o),
            price: 0,
            exclude: BTreeSet::new(),
            uptime_permille: uptime,
            renewable,
            near: (i < 100).then_some(()).and(rtt).map(|max_rtt_ms| Near {
                site: "edge".into(),
                max_rtt_ms,
            }),
            site_rtt_ms: (i >= 100)
                .then_some(())
                .and(rtt)
                .map(|ms| ("edge".to_owned(), ms))
                .into_iter()
                .collect(),
        };
        let buyers: Vec<Trader> = b.iter().enumerate().map(|(i, &x)| t(i, x)).collect();
        let sellers: Vec<Trader> = s.iter().enumerate().map(|(i, &x)| t(100 + i, x)).collect();
        let (b, s): (Vec<&Trader>, Vec<&Trader>) = (buyers.iter().collect(), sellers.iter().collect());
        let pairs = pair(&b, &s);
        let mut sold = BTreeSet::new();
        for &(i, j) in &pairs {
            prop_assert!(b[i].accepts(s[j]));
            prop_assert!(sold.insert(j), "seller {} sold twice", j);
        }
        for n in 1..=b.len() {
            let paired = pairs.iter().filter(|(i, _)| *i < n).count();
            prop_assert_eq!(paired, most_pairs(&b[..n], &s), "the first {} buyers", n);
        }
    }
}

#[test]
fn a_constrained_buyer_trades_when_a_better_buyer_can_take_another_seller() {
    // Two buyers win; the second needs renewable power, which only the
    // cheapest seller has. Paired first-fit, the first buyer would take
    // it and leave the second without a seller.
    let (mut b, mut s) = traders(&[100, 90], &[10, 20, 50]);
    b[1].renewable = true;
    s[0].renewable = true;
    let (o, m) = clear_class(&class(), &b, &s);
    assert_eq!((o.rule, o.buyer_pays), (PriceRule::NextSeller, 50));
    let pairs: Vec<(RecordId, RecordId)> = m.iter().map(|m| (m.request, m.offer)).collect();
    assert_eq!(pairs, vec![(id(0), id(1001)), (id(1), id(1000))]);
    assert_eq!(o.gains, o.optimal_gains);
}

#[test]
fn midpoint_and_trade_reduction_by_hand() {
    // b = 9 8 3, s = 1 2 5: k = 2, p = (3 + 5) / 2 = 4 ∈ [2, 8] → 2 trades at 4.
    let (b, s) = traders(&[9, 8, 3], &[1, 2, 5]);
    let (o, m) = clear_class(&class(), &b, &s);
    assert_eq!(
        (o.k, o.rule, m.len(), o.buyer_pays, o.seller_gets),
        (2, PriceRule::Midpoint, 2, 4, 4)
    );
    // b = 9 8 7, s = 1 2 9: k = 2, p = 8 ∉ [2, 8]? 8 ≤ 8 → midpoint at 8.
    let (b, s) = traders(&[9, 8, 7], &[1, 2, 9]);
    assert_eq!(clear_class(&class(), &b, &s).0.rule, PriceRule::Midpoint);
    // b = 9 4, s = 1 3 (no third): k = 2, no (k+1)-th → one trade, pays 4, gets 3.
    let (b, s) = traders(&[9, 4], &[1, 3]);
    let (o, m) = clear_class(&class(), &b, &s);
    assert_eq!(
        (o.k, o.rule, m.len(), o.buyer_pays, o.seller_gets),
        (2, PriceRule::TradeReduction, 1, 4, 3)
    );
    assert_eq!(m[0].request, id(0));
    assert_eq!(m[0].offer, id(1000));
    // One customer, several providers: every buyer wins, at the first
    // losing seller's cost.
    let (b, s) = traders(&[10], &[3, 6]);
    let (o, m) = clear_class(&class(), &b, &s);
    assert_eq!(
        (o.rule, m.len(), o.buyer_pays, o.seller_gets),
        (PriceRule::NextSeller, 1, 6, 6)
    );
    // Every seller wins, at the first losing buyer's value.
    let (b, s) = traders(&[10, 5], &[3]);
    let (o, m) = clear_class(&class(), &b, &s);
    assert_eq!(
        (o.rule, m.len(), o.buyer_pays),
        (PriceRule::NextBuyer, 1, 5)
    );
    let (b, s) = traders(&[10, 2], &[3]);
    assert_eq!(
        clear_class(&class(), &b, &s).1.len(),
        0,
        "the losing buyer's value is below the cost"
    );
    // One buyer and one seller alone never trade.
    let (b, s) = traders(&[10], &[3]);
    assert_eq!(
        clear_class(&class(), &b, &s).0.rule,
        PriceRule::TradeReduction
    );
    // Nobody meets: no trade.
    let (b, s) = traders(&[1], &[5]);
    assert_eq!(clear_class(&class(), &b, &s).0.rule, PriceRule::NoTrade);
}

// ---- signed rounds ----

struct Market {
    nodes: Vec<TestNode>,
    entries: Vec<Entry>,
}

fn market() -> Market {
    let nodes: Vec<TestNode> = (1..=6).map(|o| node(o, 1)).collect();
    let entries = vec![
        request(&nodes[0], 1, 900, 100),
        request(&nodes[1], 1, 700, 100),
        request(&nodes[2], 1, 200, 100),
        offer(&nodes[3], 1, 100, 100),
        offer(&nodes[4], 1, 300, 100),
        offer(&nodes[5], 1, 800, 100),
    ];
    Market { nodes, entries }
}

fn known(entries: &[Entry]) -> HashMap<RecordId, Entry> {
    entries.iter().map(|e| (e.id(), e.clone())).collect()
}

fn signed_round(m: &Market, number: u64, book: &[&Entry]) -> (Signed<Round>, usize) {
    let ranked = clearers(number, book.iter().map(|e| e.author()));
    let who = m.nodes.iter().position(|n| n.node() == ranked[0]).unwrap();
    let n = &m.nodes[who];
    let r = round(number, 200, n.node(), n.org(), book);
    (Signed::sign(r, n.party.clone(), &n.key), who)
}

#[test]
fn a_round_checks_and_every_record_is_checked_when_taken() {
    let m = market();
    for e in &m.entries {
        e.check(150).unwrap();
    }
    let book: Vec<&Entry> = m.entries.iter().collect();
    let (signed, _) = signed_round(&m, 7, &book);
    // b = 900 700 200, s = 100 300 800: k = 2, p = 500 → two trades at 500.
    assert_eq!(signed.body.matches.len(), 2);
    assert!(
        signed
            .body
            .matches
            .iter()
            .all(|x| x.buyer_pays == 500 && x.seller_gets == 500)
    );
    check_round(&signed, &known(&m.entries), 10).unwrap();
}

#[test]
fn a_clearing_node_signing_a_wrong_match_is_refused() {
    let m = market();
    let book: Vec<&Entry> = m.entries.iter().collect();
    let (mut signed, who) = signed_round(&m, 7, &book);
    signed.body.matches[0].seller_gets += 100;
    let n = &m.nodes[who];
    let forged = Signed::sign(signed.body, n.party.clone(), &n.key);
    let err = check_round(&forged, &known(&m.entries), 10).unwrap_err();
    assert!(matches!(err, RoundError::WrongMatches { .. }), "{err}");
}

#[test]
fn a_round_leaving_out_a_record_or_signed_by_another_node_is_refused() {
    let m = market();
    // Leaving out the highest buyer changes who trades.
    let book: Vec<&Entry> = m.entries.iter().skip(1).collect();
    let (signed, _) = signed_round(&m, 7, &book);
    let err = check_round(&signed, &known(&m.entries), 10).unwrap_err();
    assert!(matches!(err, RoundError::Omitted { .. }), "{err}");
    // A record issued just before the cutoff may still be missing.
    check_round(&signed, &known(&m.entries), 150).unwrap();
    let late: Vec<Entry> = m.entries.iter().skip(1).cloned().collect();
    check_round(&signed, &known(&late), 10).unwrap();

    // A node that is not among the round's clearers.
    let all: Vec<&Entry> = m.entries.iter().collect();
    let ranked = clearers(7, all.iter().map(|e| e.author()));
    let outsider = m
        .nodes
        .iter()
        .find(|n| n.node() == *ranked.last().unwrap())
        .unwrap();
    let r = round(7, 200, outsider.node(), outsider.org(), &all);
    let signed = Signed::sign(r, outsider.party.clone(), &outsider.key);
    let err = check_round(&signed, &known(&m.entries), 10).unwrap_err();
    assert!(matches!(err, RoundError::NotTheClearer { .. }), "{err}");

    // A signature that is not the clearer's.
    let (mut signed, who) = signed_round(&m, 7, &all);
    let other = &m.nodes[(who + 1) % m.nodes.len()];
    signed.by = Signed::sign(signed.body.clone(), other.party.clone(), &other.key).by;
    assert!(matches!(
        check_round(&signed, &known(&m.entries), 10),
        Err(RoundError::Signature(_))
    ));
}

#[test]
fn a_forged_offer_is_refused_when_taken() {
    let m = market();
    let Entry::Offer(mut o) = m.entries[3].clone() else {
        unreachable!()
    };
    o.body.price = 1;
    let err = Entry::Offer(o).check(150).unwrap_err();
    assert!(matches!(err, BookError::Signature(_)), "{err}");
    // Signed by a node of another org in its name.
    let Entry::Offer(o) = m.entries[3].clone() else {
        unreachable!()
    };
    let thief = &m.nodes[0];
    let stolen = Entry::Offer(Signed::sign(o.body, thief.party.clone(), &thief.key));
    assert!(matches!(stolen.check(150), Err(BookError::Signature(_))));
    // Expired, or from the future.
    assert!(matches!(
        m.entries[3].check(700),
        Err(BookError::Expired { .. })
    ));
    assert!(matches!(
        m.entries[3].check(10),
        Err(BookError::FromTheFuture { .. })
    ));
}

proptest! {
    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Entry::from_bytes(&bytes);
        let _ = Signed::<Round>::from_bytes(&bytes, 4096);
    }
}

#[test]
fn every_record_is_explained() {
    let m = market();
    let all: Vec<&Entry> = m.entries.iter().collect();
    // b = 900 700 200, s = 100 300 800: k = 2, two trades at 500.
    let e = explain(all.iter().copied(), &m.entries[0].id()).unwrap();
    assert_eq!((e.side.as_str(), e.rank, e.outcome.k), ("buyer", 1, 2));
    assert!(
        e.matched.is_some() && e.reason.contains("traded at 500"),
        "{}",
        e.reason
    );
    let e = explain(all.iter().copied(), &m.entries[2].id()).unwrap();
    assert!(
        e.matched.is_none() && e.reason.starts_with("outbid"),
        "{}",
        e.reason
    );
    let e = explain(all.iter().copied(), &m.entries[5].id()).unwrap();
    assert!(e.reason.starts_with("undercut"), "{}", e.reason);
    // Without the third pair: trade reduction leaves the second out.
    let two: Vec<&Entry> = [0, 1, 3, 4].iter().map(|&i| &m.entries[i]).collect();
    let e = explain(two.iter().copied(), &m.entries[1].id()).unwrap();
    assert!(
        e.reason.starts_with("left out by trade reduction"),
        "{}",
        e.reason
    );
    assert!(explain(two.iter().copied(), &m.entries[2].id()).is_none());
}

#[test]
fn a_request_relisted_without_an_org_trades_with_the_next_sellers() {
    // Sellers 300 (org 1000), 500, 700; one buyer at 800 that excludes
    // the cheapest seller's org.
    let (mut b, s) = traders(&[800], &[300, 500, 700]);
    b[0].exclude.insert(org(1000));
    let (outcomes, matches) = clear_class_markets(&class(), &b, &s);
    assert_eq!(outcomes.len(), 2, "the main market, then the re-listed one");
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].offer, id(1001));
    assert_eq!(matches[0].buyer_pays, 700, "the first losing seller's cost");
    // In one book: the main market sells first.
    let (mut b, s) = traders(&[800, 900], &[300, 500, 700]);
    b[0].exclude.insert(org(1000));
    let (_, matches) = clear_class_markets(&class(), &b, &s);
    let main = matches.iter().find(|m| m.request == id(1)).unwrap();
    assert_eq!(
        main.offer,
        id(1000),
        "the buyer without exclusions takes the cheapest"
    );
    assert!(
        matches
            .iter()
            .all(|m| m.request != id(0) || m.offer != id(1000))
    );
}

/// `n`'s offer of `testing::offer`, re-signed with `rtt` as its measured
/// round-trip times.
fn offer_with_rtts(n: &TestNode, seq: u64, price: u64, rtt: &[(&str, u32)]) -> Entry {
    let Entry::Offer(o) = offer(n, seq, price, 100) else {
        unreachable!()
    };
    let mut body = o.body;
    body.site_rtt_ms
        .extend(rtt.iter().map(|(s, ms)| ((*s).to_owned(), *ms)));
    Entry::Offer(Signed::sign(body, n.party.clone(), &n.key))
}

/// `n`'s request of `testing::request`, re-signed with `near`.
fn request_near(n: &TestNode, max_price: u64, near: Option<(&str, u32)>) -> Entry {
    let Entry::Request(r) = request(n, 1, max_price, 100) else {
        unreachable!()
    };
    let mut body = r.body;
    body.near = near.map(|(site, max_rtt_ms)| Near {
        site: site.to_owned(),
        max_rtt_ms,
    });
    Entry::Request(Signed::sign(body, n.party.clone(), &n.key))
}

#[test]
fn a_request_near_a_site_meets_only_an_offer_measured_near_it() {
    let n: Vec<TestNode> = (1..=5).map(|o| node(o, 1)).collect();
    // Sellers 100 (35 ms from `edge`), 200 (12 ms), 300 (edge unknown);
    // buyers 900 (near `edge`) and 800 (anywhere in `lab`): k = 2, every
    // buyer wins at the first losing seller's cost, 300.
    let offers = [
        offer_with_rtts(&n[2], 1, 100, &[("edge", 35)]),
        offer_with_rtts(&n[3], 1, 200, &[("edge", 12)]),
        offer_with_rtts(&n[4], 1, 300, &[]),
    ];
    let book = |near: Option<(&str, u32)>| -> Vec<Entry> {
        let mut all = vec![
            request_near(&n[0], 900, near),
            request_near(&n[1], 800, None),
        ];
        all.extend(offers.iter().cloned());
        all
    };
    let paired = |entries: &[Entry]| -> Vec<(RecordId, RecordId)> {
        clear(entries)
            .matches
            .iter()
            .map(|m| (m.request, m.offer))
            .collect()
    };

    // Within 20 ms: the near buyer takes the 12 ms seller, not the
    // cheaper one 35 ms away, which goes to the other buyer.
    let entries = book(Some(("edge", 20)));
    assert_eq!(
        paired(&entries),
        vec![
            (entries[0].id(), entries[3].id()),
            (entries[1].id(), entries[2].id())
        ]
    );
    // Within 12 ms is still met (the bound is inclusive); 11 ms is not,
    // and a site no offer measured is never met.
    let entries = book(Some(("edge", 12)));
    assert!(paired(&entries).contains(&(entries[0].id(), entries[3].id())));
    for near in [("edge", 11), ("nowhere", MAX_RTT_MS)] {
        let entries = book(Some(near));
        let pairs = paired(&entries);
        assert!(
            pairs.iter().all(|(r, _)| *r != entries[0].id()),
            "{near:?}: {pairs:?}"
        );
        assert_eq!(pairs, vec![(entries[1].id(), entries[2].id())], "{near:?}");
        let e = explain(entries.iter(), &entries[0].id()).unwrap();
        assert!(
            e.reason
                .contains(&format!("within {} ms of {}", near.1, near.0)),
            "{}",
            e.reason
        );
    }
    // Its own site is 0 ms from every provider in it.
    let entries = book(Some(("lab", 0)));
    assert_eq!(paired(&entries).len(), 2);
}

#[test]
fn site_rtts_and_near_are_bounded_and_named_when_refused() {
    let n = node(1, 1);
    let Entry::Offer(o) = offer(&n, 1, 100, 100) else {
        unreachable!()
    };
    let mut body = o.body;
    body.site_rtt_ms = (0..MAX_SITE_RTTS)
        .map(|i| (format!("site-{i}"), MAX_RTT_MS))
        .collect();
    body.validate().unwrap();
    body.site_rtt_ms.insert("one-more".into(), 1);
    let err = body.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("site_rtt_ms:") && err.contains("17 sites, more than 16"),
        "{err}"
    );
    body.site_rtt_ms = [("far".to_owned(), MAX_RTT_MS + 1)].into();
    let err = body.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("site_rtt_ms:") && err.contains("far"),
        "{err}"
    );
    body.site_rtt_ms = [("bad\nname".to_owned(), 1)].into();
    assert!(
        body.validate()
            .unwrap_err()
            .to_string()
            .starts_with("site_rtt_ms:")
    );

    let Entry::Request(r) = request(&n, 1, 100, 100) else {
        unreachable!()
    };
    let mut body = r.body;
    for (site, max_rtt_ms, ok) in [
        ("edge", MAX_RTT_MS, true),
        ("edge", MAX_RTT_MS + 1, false),
        ("", 10, false),
    ] {
        body.near = Some(Near {
            site: site.into(),
            max_rtt_ms,
        });
        match body.validate() {
            Ok(()) => assert!(ok, "{site:?} {max_rtt_ms}"),
            Err(e) => assert!(!ok && e.to_string().starts_with("near:"), "{e}"),
        }
    }
}

#[test]
fn the_largest_offer_fits_a_record() {
    let n = node(1, 1);
    let Entry::Offer(o) = offer(&n, 1, 100, 100) else {
        unreachable!()
    };
    let mut body = o.body;
    let name = |i: usize| format!("{i:0>128}");
    body.site = name(99);
    body.interfaces = (0..16).map(name).collect();
    body.site_rtt_ms = (0..MAX_SITE_RTTS)
        .map(|i| (name(100 + i), MAX_RTT_MS))
        .collect();
    body.validate().unwrap();
    let entry = Entry::Offer(Signed::sign(body, n.party.clone(), &n.key));
    let bytes = entry.to_bytes();
    assert!(bytes.len() <= MAX_RECORD_BYTES, "{} bytes", bytes.len());
    assert_eq!(Entry::from_bytes(&bytes).unwrap(), entry);
    entry.check(150).unwrap();
}

//! A deterministic simulation of the market over many rounds and seeds:
//! orgs post signed offers and requests, nodes see the book partially
//! (records still on their way), clearing nodes sign rounds, customers and
//! providers sign contracts, stake with the arbitrator, fail, take over
//! and settle — while liars forge offers, replay contracts, sign wrong
//! matches, claim failures nobody witnessed (and bill them) and refuse to
//! countersign. Settlement is `settle`'s: metering, statements, replies,
//! rulings and the transfers each ending calls for.
//! Every lie must be detected and refused by every honest node, and the
//! credits between orgs must be conserved after every step.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::book::Entry;
use crate::book::testing::{offer, request};
use crate::clearing::{RoundError, check_round, clearers, round};
use crate::contract::{ContractError, Contracts, Proposal, Side, Terms, arbitrator};
use crate::ledger::{Accounts, LedgerError, Reason, SignedReceipt, prove_balances};
use crate::settle::{self, Activation, Answer, Close, Ending, Reply, Settlement};
use crate::signed::testing::{TestNode, node};
use crate::signed::{RecordId, Signed};
use crate::witness::{Observation, witnessed};

/// The seeded generator of a run: the same seed, the same world.
trait Draw {
    fn below(&mut self, n: u64) -> u64;
    fn chance(&mut self, permille: u64) -> bool;
}

impl Draw for StdRng {
    fn below(&mut self, n: u64) -> u64 {
        self.random_range(0..n.max(1))
    }
    fn chance(&mut self, permille: u64) -> bool {
        self.random_range(0..1000) < permille
    }
}

/// What every seed counts; each lie tried must be refused.
#[derive(Debug, Default)]
struct Tally {
    rounds_accepted: usize,
    contracts: usize,
    forged_offers: usize,
    forged_refused: usize,
    wrong_rounds: usize,
    wrong_rounds_refused: usize,
    replays: usize,
    replays_refused: usize,
    unwitnessed_claims: usize,
    unwitnessed_refused: usize,
    takeovers: usize,
    unsigned_usage: usize,
    unsigned_refused: usize,
    disputes_ruled: usize,
    inflated_refused: usize,
}

/// Take a receipt signed by both orgs' nodes; conservation checked after.
fn pay(
    accounts: &mut Accounts,
    from: &TestNode,
    to: &TestNode,
    amount: u64,
    reason: Reason,
    at: u64,
) {
    let r = accounts.draft(from.org(), to.org(), amount, reason, at);
    let signed = SignedReceipt::sign(
        r,
        (from.party.clone(), &from.key),
        (to.party.clone(), &to.key),
    );
    accounts.apply(&signed).expect("an honest receipt is taken");
    assert_eq!(
        accounts.balances().values().sum::<i64>(),
        0,
        "credits conserved"
    );
}

fn run(seed: u64, rounds: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let nodes: Vec<TestNode> = (1..=6u8).map(|o| node(o, 1)).collect();
    let by_node = |id: locus_core::NodeId| {
        nodes
            .iter()
            .find(|n| n.node() == id)
            .expect("a node of the world")
    };
    let mut t = Tally::default();
    let mut accounts = Accounts::new();
    let mut registers: Vec<Contracts> = nodes.iter().map(|_| Contracts::default()).collect();
    let mut seq = 0u64;
    for r in 1..=rounds {
        let now = 1_000_000 + r * 10;
        // Posting: each org offers or asks (or neither); a liar forges.
        let mut posted = Vec::new();
        for n in &nodes {
            seq += 1;
            match rng.below(3) {
                0 => posted.push(offer(n, seq, 100 + rng.below(900), now)),
                1 => posted.push(request(n, seq, 100 + rng.below(900), now)),
                _ => {}
            }
            if rng.chance(100) {
                t.forged_offers += 1;
                let Entry::Offer(mut o) = offer(n, seq, 500, now) else {
                    unreachable!()
                };
                o.body.price = 1;
                if Entry::Offer(o).check(now).is_err() {
                    t.forged_refused += 1;
                }
            }
        }
        for e in &posted {
            e.check(now).expect("an honest record checks");
        }
        // Every node sees its own records and what others posted, less
        // records still on their way.
        let views: Vec<HashMap<RecordId, Entry>> = nodes
            .iter()
            .map(|n| {
                posted
                    .iter()
                    .filter(|e| e.author() == n.node() || !rng.chance(50))
                    .map(|e| (e.id(), e.clone()))
                    .collect()
            })
            .collect();
        // The clearer signs the round over what it sees; a liar changes a
        // price. Every other node checks it against its own view.
        let Some(&clearer_id) = clearers(r, posted.iter().map(Entry::author)).first() else {
            continue;
        };
        let ci = nodes
            .iter()
            .position(|n| n.node() == clearer_id)
            .expect("clearer");
        let seen: Vec<&Entry> = views[ci].values().collect();
        let mut body = round(r, now, clearer_id, nodes[ci].org(), &seen);
        let lying = !body.matches.is_empty() && rng.chance(150);
        if lying {
            body.matches[0].seller_gets += 1 + rng.below(50);
            t.wrong_rounds += 1;
        }
        let signed = Signed::sign(body, nodes[ci].party.clone(), &nodes[ci].key);
        let verdicts: Vec<Result<(), RoundError>> =
            views.iter().map(|v| check_round(&signed, v, 0)).collect();
        if lying {
            // Every node refuses: by recomputing it, or because it cannot.
            assert!(
                verdicts.iter().all(Result::is_err),
                "seed {seed} round {r}: a wrong round accepted"
            );
            if verdicts
                .iter()
                .any(|v| matches!(v, Err(RoundError::WrongMatches { .. })))
            {
                t.wrong_rounds_refused += 1;
            }
            continue;
        }
        for (v, view) in verdicts.iter().zip(&views) {
            // An honest round fails only where a listed record is missing.
            if let Err(e) = v {
                assert!(
                    matches!(
                        e,
                        RoundError::UnknownRecord { .. } | RoundError::Omitted { .. }
                    ),
                    "seed {seed} round {r}: an honest round refused: {e}"
                );
                let _ = view;
            }
        }
        t.rounds_accepted += 1;
        // Each match of the checked round becomes a contract.
        let entries: Vec<Entry> = signed
            .body
            .book
            .iter()
            .filter_map(|id| views[ci].get(id).cloned())
            .collect();
        for m in &signed.body.matches {
            let find = |id: &RecordId| entries.iter().find(|e| e.id() == *id);
            let (Some(Entry::Request(req)), Some(Entry::Offer(off))) =
                (find(&m.request), find(&m.offer))
            else {
                panic!("a match of records the round does not list");
            };
            let (customer, provider) = (by_node(req.body.customer), by_node(off.body.provider));
            let Some(arb) = arbitrator(
                &m.request,
                &m.offer,
                customer.org(),
                provider.org(),
                entries.iter().map(|e| (e.author(), e.org())),
            ) else {
                continue;
            };
            let terms = Terms::from_match(r, m, &req.body, &off.body, arb, now);
            let proposal =
                Proposal::sign(terms, Side::Customer, customer.party.clone(), &customer.key);
            let contract = proposal.accept(provider.party.clone(), &provider.key);
            let id = contract.verify().expect("both signed");
            for reg in registers.iter_mut() {
                reg.admit(contract.clone(), now)
                    .expect("a new contract is taken");
            }
            t.contracts += 1;
            // A replay is refused by every node.
            t.replays += 1;
            if registers.iter_mut().all(|reg| {
                matches!(
                    reg.admit(contract.clone(), now),
                    Err(ContractError::Replayed(_))
                )
            }) {
                t.replays_refused += 1;
            }
            // Stakes go to the arbitrator.
            let arbiter = by_node(arb.0);
            for st in settle::stakes(&contract) {
                let from = if st.from == customer.org() {
                    customer
                } else {
                    provider
                };
                pay(&mut accounts, from, arbiter, st.amount, st.reason, now);
            }

            // The customer may fail; the provider needs two witnesses of
            // other orgs. A lying provider claims with its own org only.
            let observe = |by: &TestNode| {
                Signed::sign(
                    Observation {
                        observer: by.node(),
                        observer_org: by.org(),
                        subject: customer.node(),
                        dead_since_ms: now * 1000,
                        at: now,
                    },
                    by.party.clone(),
                    &by.key,
                )
            };
            let mut activations = Vec::new();
            let mut lied = false;
            if rng.chance(300) {
                let from_ms = now * 1000 + rng.below(5000);
                let evidence: Vec<_> = if rng.chance(400) {
                    t.unwitnessed_claims += 1;
                    lied = true;
                    vec![observe(provider)]
                } else {
                    t.takeovers += 1;
                    nodes
                        .iter()
                        .filter(|n| n.org() != provider.org() && n.node() != customer.node())
                        .take(2)
                        .map(observe)
                        .collect()
                };
                if lied
                    && !witnessed(
                        &evidence,
                        customer.node(),
                        provider.org(),
                        now * 1000,
                        2,
                        from_ms,
                    )
                {
                    t.unwitnessed_refused += 1;
                }
                activations.push(Activation {
                    from_ms,
                    to_ms: from_ms + 1000 * (1 + rng.below(600)),
                    dead_since_ms: now * 1000,
                    evidence,
                });
            }
            // Settlement: the provider meters and signs; a lying one bills
            // its unwitnessed activation as active time anyway.
            let end = (now + 1 + rng.below(3600)).min(contract.terms.end);
            let (mut usage, refused) =
                settle::meter(&contract.terms, id, Close::Early, end, &activations, 2);
            if lied {
                assert_eq!(
                    refused.len(),
                    1,
                    "seed {seed}: an unwitnessed activation counted"
                );
                let secs = activations[0].to_ms.div_ceil(1000) - activations[0].from_ms / 1000;
                usage.active_secs += secs;
                usage.due += contract.terms.active_cost(secs);
            }
            let statement = Signed::sign(usage, provider.party.clone(), &provider.key);
            let sound = settle::check_statement(&contract, &statement, 2).is_ok();
            if lied && !sound {
                t.inflated_refused += 1;
            }
            let reply = |answer| {
                Signed::sign(
                    Reply {
                        contract: id,
                        statement: statement.id(),
                        customer: customer.node(),
                        customer_org: customer.org(),
                        answer,
                        at: now,
                    },
                    customer.party.clone(),
                    &customer.key,
                )
            };
            let ruled = |reply: Option<Signed<Reply>>| {
                let r = settle::rule(
                    &contract,
                    &statement,
                    reply.as_ref(),
                    2,
                    (arbiter.node(), now),
                );
                Ending::Ruled(Signed::sign(r, arbiter.party.clone(), &arbiter.key))
            };
            // An honest customer countersigns a sound statement, or refuses
            // to (and loses); it disputes an unsound one (and wins).
            let ending = if !sound {
                ruled(Some(reply(Answer::Dispute {
                    reason: "not witnessed".into(),
                })))
            } else if rng.chance(200) {
                t.unsigned_usage += 1;
                // The provider signs the customer's line itself: refused.
                let draft = accounts.draft(
                    customer.org(),
                    provider.org(),
                    1,
                    Reason::Usage {
                        contract: id,
                        from_secs: now,
                        to_secs: end,
                    },
                    now,
                );
                let forged = SignedReceipt::sign(
                    draft,
                    (provider.party.clone(), &provider.key),
                    (provider.party.clone(), &provider.key),
                );
                let before = accounts.clone();
                if matches!(accounts.apply(&forged), Err(LedgerError::Signature { .. })) {
                    t.unsigned_refused += 1;
                }
                assert_eq!(accounts, before, "a refused receipt changes nothing");
                ruled(None)
            } else {
                Ending::Countersigned(reply(Answer::Countersign))
            };
            let settlement = Settlement {
                contract: contract.clone(),
                statement,
                ending,
            };
            let outcome = settlement.verify(2).expect("an honest settlement verifies");
            if outcome.dispute_lost_by.is_some() {
                t.disputes_ruled += 1;
            }
            if lied {
                assert_eq!(
                    outcome.dispute_lost_by,
                    Some(provider.org()),
                    "seed {seed}: the liar loses"
                );
            }
            let of = |org| {
                [customer, provider, arbiter]
                    .into_iter()
                    .find(|n| n.org() == org)
            };
            for tr in settle::transfers(&settlement) {
                let (Some(from), Some(to)) = (of(tr.from), of(tr.to)) else {
                    panic!("seed {seed}: a transfer to a stranger");
                };
                pay(&mut accounts, from, to, tr.amount, tr.reason, now);
            }
            assert_eq!(
                accounts.stakes(id).count(),
                0,
                "seed {seed}: the escrow is emptied"
            );
        }
    }
    // Every balance is provable from the signed chains alone.
    let proven = prove_balances(accounts.chains()).expect("the chains verify");
    let held: std::collections::BTreeMap<_, _> = accounts
        .balances()
        .iter()
        .map(|(k, v)| (*k, *v))
        .filter(|(_, v)| *v != 0)
        .collect();
    let proven: std::collections::BTreeMap<_, _> =
        proven.into_iter().filter(|(_, v)| *v != 0).collect();
    assert_eq!(
        proven, held,
        "seed {seed}: balances provable from the chains"
    );
    t
}

#[test]
fn every_lie_is_refused_and_credits_are_conserved_across_seeds() {
    let mut total = Tally::default();
    for seed in 1..=12 {
        let t = run(seed, 40);
        assert_eq!(
            t.forged_refused, t.forged_offers,
            "seed {seed}: a forged offer taken"
        );
        assert_eq!(
            t.replays_refused, t.replays,
            "seed {seed}: a replayed contract taken"
        );
        assert_eq!(
            t.unwitnessed_refused, t.unwitnessed_claims,
            "seed {seed}: an unwitnessed takeover"
        );
        assert_eq!(
            t.unsigned_refused, t.unsigned_usage,
            "seed {seed}: a receipt the customer did not sign"
        );
        assert_eq!(
            t.inflated_refused, t.unwitnessed_claims,
            "seed {seed}: a statement billing an unwitnessed failure"
        );
        total.rounds_accepted += t.rounds_accepted;
        total.contracts += t.contracts;
        total.forged_offers += t.forged_offers;
        total.forged_refused += t.forged_refused;
        total.replays_refused += t.replays_refused;
        total.unwitnessed_refused += t.unwitnessed_refused;
        total.unsigned_refused += t.unsigned_refused;
        total.wrong_rounds += t.wrong_rounds;
        total.wrong_rounds_refused += t.wrong_rounds_refused;
        total.replays += t.replays;
        total.unwitnessed_claims += t.unwitnessed_claims;
        total.takeovers += t.takeovers;
        total.unsigned_usage += t.unsigned_usage;
        total.disputes_ruled += t.disputes_ruled;
        total.inflated_refused += t.inflated_refused;
    }
    eprintln!("{total:?}");
    // The simulation exercised every path.
    assert!(
        total.contracts > 20 && total.forged_offers > 5 && total.wrong_rounds > 3,
        "{total:?}"
    );
    assert!(
        total.wrong_rounds_refused > 0 && total.replays > 20,
        "{total:?}"
    );
    assert!(
        total.unwitnessed_claims > 0 && total.takeovers > 0,
        "{total:?}"
    );
    assert!(
        total.unsigned_usage > 0 && total.disputes_ruled > 0,
        "{total:?}"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let a = format!("{:?}", run(7, 15));
    let b = format!("{:?}", run(7, 15));
    assert_eq!(a, b);
}

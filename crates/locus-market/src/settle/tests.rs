use super::*;
use crate::contract::tests::{Deal, deal, signed_contract};
use crate::ledger::{Accounts, SignedReceipt};
use crate::signed::testing::{TestNode, node};
use proptest::prelude::*;

/// An observation of the deal's customer by `by`, dead since `since_ms`.
fn seen(by: &TestNode, d: &Deal, since_ms: u64, at: u64) -> Signed<Observation> {
    Signed::sign(
        Observation {
            observer: by.node(),
            observer_org: by.org(),
            subject: d.customer.node(),
            dead_since_ms: since_ms,
            at,
        },
        by.party.clone(),
        &by.key,
    )
}

/// A takeover `delay_ms` after a death at `dead_s`, lasting `secs`,
/// witnessed by nodes of orgs 3 and 4.
fn activation(d: &Deal, dead_s: u64, delay_ms: u64, secs: u64) -> Activation {
    let from_ms = dead_s * 1000 + delay_ms;
    Activation {
        from_ms,
        to_ms: from_ms + secs * 1000,
        dead_since_ms: dead_s * 1000,
        evidence: vec![
            seen(&node(3, 2), d, dead_s * 1000, dead_s + 1),
            seen(&node(4, 1), d, dead_s * 1000, dead_s + 1),
        ],
    }
}

fn statement(d: &Deal, c: &Contract, to: u64, acts: &[Activation]) -> Signed<Usage> {
    let (u, refused) = meter(&c.terms, c.id(), Close::Expired, to, acts, 2);
    assert!(refused.is_empty(), "{refused:?}");
    Signed::sign(u, d.provider.party.clone(), &d.provider.key)
}

fn reply(d: &Deal, c: &Contract, s: &Signed<Usage>, answer: Answer) -> Signed<Reply> {
    Signed::sign(
        Reply {
            contract: c.id(),
            statement: s.id(),
            customer: d.customer.node(),
            customer_org: d.customer.org(),
            answer,
            at: s.body.at + 1,
        },
        d.customer.party.clone(),
        &d.customer.key,
    )
}

#[test]
fn metering_counts_standby_and_witnessed_active_time() {
    let d = deal();
    let c = signed_contract(&d);
    let t = &c.terms;
    // One hour window from 200; the customer dies at 1000 and the provider
    // runs its work for 600 s from 1.5 s later.
    let a = activation(&d, 1000, 1500, 600);
    let (u, refused) = meter(t, c.id(), Close::Expired, t.end, &[a], 2);
    assert!(refused.is_empty());
    assert_eq!((u.active_secs, u.standby_secs), (600, 3000));
    assert_eq!(u.due, t.active_cost(600) + t.standby_cost(3000));
    assert_eq!((u.handovers_done, u.handovers_missed, u.penalty), (1, 0, 0));

    // Too late for the SLA (3 s): a missed handover and its penalty.
    let late = activation(&d, 1000, 5000, 600);
    let (u, _) = meter(t, c.id(), Close::Expired, t.end, &[late], 2);
    assert_eq!((u.handovers_done, u.handovers_missed), (0, 1));
    assert_eq!(u.penalty, t.sla.penalty);

    // Witnessed only by the provider's own org: not active time.
    let mut own = activation(&d, 1000, 1500, 600);
    own.evidence = vec![
        seen(&node(2, 2), &d, 1_000_000, 1001),
        seen(&node(2, 3), &d, 1_000_000, 1001),
    ];
    let (u, refused) = meter(t, c.id(), Close::Expired, t.end, &[own], 2);
    assert_eq!(u.active_secs, 0);
    assert_eq!(refused.len(), 1, "{refused:?}");

    // Overlapping activations count once; the window clips them.
    let a1 = activation(&d, 1000, 1000, 600);
    let a2 = activation(&d, 1300, 1000, 600);
    let (u, _) = meter(t, c.id(), Close::Expired, t.end, &[a1, a2], 2);
    assert_eq!(u.active_secs, 900);
    let tail = activation(&d, t.end - 100, 1000, 600);
    let (u, _) = meter(t, c.id(), Close::Expired, t.end, &[tail], 2);
    assert_eq!(u.active_secs, 99);
}

#[test]
fn a_countersigned_settlement_verifies_and_pays_the_net() {
    let d = deal();
    let c = signed_contract(&d);
    let s = statement(&d, &c, c.terms.end, &[activation(&d, 1000, 1500, 600)]);
    check_statement(&c, &s, 2).unwrap();
    let r = reply(&d, &c, &s, Answer::Countersign);
    let settled = Settlement {
        contract: c.clone(),
        statement: s.clone(),
        ending: Ending::Countersigned(r),
    };
    let outcome = settled.verify(2).unwrap();
    assert_eq!(outcome.value, s.body.due);
    assert!(outcome.sla_met);
    assert_eq!(outcome.dispute_lost_by, None);
    let ts = transfers(&settled);
    assert_eq!(ts.len(), 3, "usage and both stakes back: {ts:?}");
    assert_eq!(
        (ts[0].from, ts[0].to, ts[0].amount),
        (d.customer.org(), d.provider.org(), s.body.due)
    );
    assert!(
        releases(&settled)
            .iter()
            .all(|t| t.from == d.arbitrator.org())
    );
    // A round trip through bytes keeps it valid.
    let back = Settlement::from_bytes(&settled.to_bytes()).unwrap();
    assert_eq!(back.verify(2).unwrap(), outcome);
    // A countersignature by someone else is refused.
    let mut forged = settled.clone();
    let other = node(1, 9);
    let mut fake = reply(&d, &c, &s, Answer::Countersign);
    fake.by = PartySignatureOf::of(&other, &fake.body);
    forged.ending = Ending::Countersigned(fake);
    assert!(forged.verify(2).is_err());
}

/// Re-sign `body` as `by` (a forgery: the body names another node).
struct PartySignatureOf;
impl PartySignatureOf {
    fn of<T: serde::Serialize + Authored>(
        by: &TestNode,
        body: &T,
    ) -> crate::signed::PartySignature {
        crate::signed::PartySignature::sign(by.party.clone(), &by.key, T::DOMAIN, body)
    }
}

#[test]
fn an_inflated_statement_loses_and_forfeits_the_provider_stake() {
    let d = deal();
    let c = signed_contract(&d);
    let t = &c.terms;
    // The provider claims an activation nobody witnessed (it invented the
    // failure) by signing numbers its evidence does not give.
    let honest = activation(&d, 1000, 1500, 600);
    let mut invented = activation(&d, 2000, 1500, 600);
    invented.evidence.clear();
    let acts = vec![honest.clone(), invented];
    let (mut u, refused) = meter(t, c.id(), Close::Expired, t.end, &acts, 2);
    assert_eq!(refused.len(), 1);
    u.active_secs = 1200;
    u.standby_secs = 2400;
    u.due = t.active_cost(1200) + t.standby_cost(2400);
    let s = Signed::sign(u, d.provider.party.clone(), &d.provider.key);
    assert!(matches!(
        check_statement(&c, &s, 2),
        Err(SettleError::Mismatch(_))
    ));
    let dispute = reply(
        &d,
        &c,
        &s,
        Answer::Dispute {
            reason: "I was alive at 2000".into(),
        },
    );
    let ruling = rule(&c, &s, Some(&dispute), 2, (d.arbitrator.node(), t.end + 10));
    assert_eq!(ruling.lost_by, d.provider.org());
    // What is due is what the witnessed activation gives.
    let (fair, _) = meter(t, c.id(), Close::Expired, t.end, &[honest], 2);
    assert_eq!(ruling.due, fair.due);
    assert_eq!(ruling.awards.provider_to_customer, t.stakes.provider);
    assert_eq!(ruling.awards.provider_back, 0);
    assert_eq!(
        ruling.awards.customer_to_provider + ruling.awards.customer_back,
        t.stakes.customer
    );
    let signed = Signed::sign(ruling, d.arbitrator.party.clone(), &d.arbitrator.key);
    let settled = Settlement {
        contract: c.clone(),
        statement: s,
        ending: Ending::Ruled(signed.clone()),
    };
    let outcome = settled.verify(2).unwrap();
    assert_eq!(outcome.dispute_lost_by, Some(d.provider.org()));
    assert!(!outcome.sla_met);
    // A ruling by another node than the contract's arbitrator is refused,
    // and so is one that awards differently from the evidence.
    let mut by_other = settled.clone();
    let other = node(3, 7);
    let mut body = signed.body.clone();
    body.arbitrator = other.node();
    by_other.ending = Ending::Ruled(Signed::sign(body, other.party.clone(), &other.key));
    assert!(by_other.verify(2).is_err());
    let mut wrong = settled.clone();
    let mut body = signed.body.clone();
    body.awards.provider_to_customer = 0;
    body.awards.provider_back = t.stakes.provider;
    wrong.ending = Ending::Ruled(Signed::sign(
        body,
        d.arbitrator.party.clone(),
        &d.arbitrator.key,
    ));
    assert!(matches!(wrong.verify(2), Err(SettleError::Mismatch(_))));
}

#[test]
fn a_customer_that_refuses_to_countersign_a_sound_statement_pays_from_its_stake() {
    let d = deal();
    let c = signed_contract(&d);
    let t = &c.terms;
    let s = statement(&d, &c, t.end, &[activation(&d, 1000, 1500, 600)]);
    for r in [
        None,
        Some(reply(
            &d,
            &c,
            &s,
            Answer::Dispute {
                reason: "too dear".into(),
            },
        )),
    ] {
        let ruling = rule(&c, &s, r.as_ref(), 2, (d.arbitrator.node(), t.end + 10));
        assert_eq!(ruling.lost_by, d.customer.org());
        assert_eq!(ruling.due, s.body.due);
        assert_eq!(
            ruling.awards.customer_to_provider,
            s.body.due.min(t.stakes.customer)
        );
        assert_eq!(ruling.awards.provider_back, t.stakes.provider);
    }
}

#[test]
fn the_largest_settlement_fits_its_bound() {
    let d = deal();
    let c = signed_contract(&d);
    let t = &c.terms;
    // Witnesses of orgs 3 to 6, each observation from a node of its own.
    let witnesses: Vec<TestNode> = (0..MAX_EVIDENCE as u8).map(|i| node(3 + i, 9)).collect();
    let acts: Vec<Activation> = (0..MAX_ACTIVATIONS as u64)
        .map(|i| {
            let dead_s = t.start + 10 + i * 20;
            let from_ms = dead_s * 1000 + 1500;
            Activation {
                from_ms,
                to_ms: from_ms + 5000,
                dead_since_ms: dead_s * 1000,
                evidence: witnesses
                    .iter()
                    .map(|w| seen(w, &d, dead_s * 1000, u64::MAX / 2))
                    .collect(),
            }
        })
        .collect();
    let (mut usage, _) = meter(&c.terms, c.id(), Close::Expired, t.end, &acts, 2);
    usage.due = u64::MAX / 2;
    usage.penalty = u64::MAX / 2;
    usage.at = u64::MAX / 2;
    let s = Signed::sign(usage, d.provider.party.clone(), &d.provider.key);
    assert_eq!(s.body.activations.len(), MAX_ACTIVATIONS);
    let r = reply(
        &d,
        &c,
        &s,
        Answer::Dispute {
            reason: "x".repeat(MAX_REASON),
        },
    );
    let mut ruling = rule(&c, &s, Some(&r), 2, (d.arbitrator.node(), u64::MAX / 2));
    ruling.reasons = vec!["y".repeat(MAX_REASON); 4];
    let settled = Settlement {
        contract: c.clone(),
        statement: s,
        ending: Ending::Ruled(Signed::sign(
            ruling,
            d.arbitrator.party.clone(),
            &d.arbitrator.key,
        )),
    };
    let bytes = settled.to_bytes().len();
    eprintln!("largest settlement: {bytes} bytes");
    assert!(
        bytes <= MAX_SETTLEMENT_BYTES,
        "{bytes} > {MAX_SETTLEMENT_BYTES}"
    );
}

#[test]
fn contracts_close_at_their_end_or_when_credits_run_out() {
    let d = deal();
    let c = signed_contract(&d);
    let t = &c.terms;
    assert_eq!(close_due(t, 10, 100, t.start + 1), None);
    assert_eq!(
        close_due(t, 100, 100, t.start + 1),
        Some(Close::CreditsExhausted)
    );
    assert_eq!(close_due(t, 0, 100, t.end), Some(Close::Expired));
}

/// Apply every transfer of a settlement as receipts signed by the orgs
/// that pay and are paid, after the stakes.
fn settle_in(accounts: &mut Accounts, d: &Deal, s: &Settlement, at: u64) {
    let signer = |org: OrgId| {
        [&d.customer, &d.provider, &d.arbitrator]
            .into_iter()
            .find(|n| n.org() == org)
            .unwrap()
    };
    for t in stakes(&s.contract).into_iter().chain(transfers(s)) {
        let r = accounts.draft(t.from, t.to, t.amount, t.reason, at);
        let (f, to) = (signer(r.from), signer(r.to));
        let signed = SignedReceipt::sign(r, (f.party.clone(), &f.key), (to.party.clone(), &to.key));
        accounts.apply(&signed).unwrap();
    }
}

proptest! {
    /// Whatever happened (activations, lateness, witnesses, the reply),
    /// the settlement's transfers conserve credits, empty the escrow,
    /// and never move more than the stakes and the due.
    #[test]
    fn settlements_conserve_credits_and_empty_the_escrow(
        acts in proptest::collection::vec((300u64..3500, 0u64..6000, 1u64..900, any::<bool>()), 0..4),
        answer in 0u8..3,
    ) {
        let d = deal();
        let c = signed_contract(&d);
        let t = &c.terms;
        let acts: Vec<Activation> = acts
            .into_iter()
            .map(|(dead, delay, secs, witnessed)| {
                let mut a = activation(&d, dead, delay, secs);
                if !witnessed { a.evidence.truncate(1); }
                a
            })
            .collect();
        let (u, _) = meter(t, c.id(), Close::Expired, t.end, &acts, 2);
        let s = Signed::sign(u, d.provider.party.clone(), &d.provider.key);
        let ending = match answer {
            0 if check_statement(&c, &s, 2).is_ok() => Ending::Countersigned(reply(&d, &c, &s, Answer::Countersign)),
            1 => {
                let r = reply(&d, &c, &s, Answer::Dispute { reason: "no".into() });
                Ending::Ruled(Signed::sign(rule(&c, &s, Some(&r), 2, (d.arbitrator.node(), t.end)), d.arbitrator.party.clone(), &d.arbitrator.key))
            }
            _ => Ending::Ruled(Signed::sign(rule(&c, &s, None, 2, (d.arbitrator.node(), t.end)), d.arbitrator.party.clone(), &d.arbitrator.key)),
        };
        let settled = Settlement { contract: c.clone(), statement: s, ending };
        prop_assert!(settled.verify(2).is_ok());
        let mut accounts = Accounts::new();
        settle_in(&mut accounts, &d, &settled, t.end + 5);
        prop_assert_eq!(accounts.balances().values().sum::<i64>(), 0);
        prop_assert_eq!(accounts.stakes(c.id()).count(), 0, "escrow emptied");
        prop_assert_eq!(accounts.balance(d.arbitrator.org()), 0, "the arbitrator keeps nothing");
    }
}

#[test]
fn a_receipt_a_settlement_does_not_call_for_is_not_a_release() {
    let d = deal();
    let c = signed_contract(&d);
    let s = statement(&d, &c, c.terms.end, &[]);
    let settled = Settlement {
        contract: c.clone(),
        ending: Ending::Countersigned(reply(&d, &c, &s, Answer::Countersign)),
        statement: s,
    };
    let rel = releases(&settled);
    let bigger = Transfer {
        amount: rel[0].amount + 1,
        ..rel[0]
    };
    assert!(!rel.contains(&bigger));
}

use super::*;
use crate::book::{EnergySource, Entry};
use crate::class::{Resources, Tier};
use crate::clearing::clear;
use crate::signed::Signed;
use crate::signed::testing::{TestNode, node};
use proptest::prelude::*;

pub(crate) struct Deal {
    pub customer: TestNode,
    pub provider: TestNode,
    pub arbitrator: TestNode,
    pub request: Signed<Request>,
    pub offer: Signed<Offer>,
}

pub(crate) fn deal() -> Deal {
    let (customer, provider, arbitrator) = (node(1, 1), node(2, 1), node(3, 1));
    let request = Signed::sign(
        Request {
            customer: customer.node(),
            org: customer.org(),
            seq: 1,
            tenant: "default".into(),
            needs: Resources {
                cpu_millis: 500,
                ..Default::default()
            },
            cover: Cover {
                workloads: ["web".to_owned()].into(),
                things: ["t1".to_owned()].into(),
            },
            site: "lab".into(),
            min_uptime_permille: 900,
            renewable: false,
            standby: true,
            max_price: 1000,
            duration_secs: 7200,
            sla: Sla {
                handover_within_secs: 3,
                penalty: 5000,
            },
            exclude: Default::default(),
            issued_at: 100,
            expires_at: 700,
            near: None,
        },
        customer.party.clone(),
        &customer.key,
    );
    let offer = Signed::sign(
        Offer {
            provider: provider.node(),
            org: provider.org(),
            seq: 1,
            spare: Tier::Small.resources(),
            tier: Tier::Small,
            interfaces: Default::default(),
            uptime_permille: 950,
            energy: EnergySource::SolarBattery,
            battery_percent: Some(80),
            price: 400,
            max_duration_secs: 3600,
            standby: true,
            site: "lab".into(),
            issued_at: 100,
            expires_at: 700,
            site_rtt_ms: Default::default(),
        },
        provider.party.clone(),
        &provider.key,
    );
    Deal {
        customer,
        provider,
        arbitrator,
        request,
        offer,
    }
}

fn first_terms(d: &Deal) -> Terms {
    let entries = [
        Entry::Request(d.request.clone()),
        Entry::Offer(d.offer.clone()),
    ];
    let clearing = clear(&entries);
    // One buyer, one seller: k = 1 and no (k+1)-th pair, so the trade is
    // reduced away. Clear with a second pair to get a trade.
    assert!(clearing.matches.is_empty());
    let m = Match {
        class: d.offer.body.class().unwrap(),
        request: d.request.id(),
        offer: d.offer.id(),
        buyer_pays: 700,
        seller_gets: 600,
    };
    let arb = arbitrator(
        &m.request,
        &m.offer,
        d.customer.org(),
        d.provider.org(),
        [
            (d.customer.node(), d.customer.org()),
            (d.provider.node(), d.provider.org()),
            (d.arbitrator.node(), d.arbitrator.org()),
        ],
    )
    .unwrap();
    assert_eq!(arb, (d.arbitrator.node(), d.arbitrator.org()));
    Terms::from_match(3, &m, &d.request.body, &d.offer.body, arb, 200)
}

pub(crate) fn signed_contract(d: &Deal) -> Contract {
    let proposal = Proposal::sign(
        first_terms(d),
        Side::Customer,
        d.customer.party.clone(),
        &d.customer.key,
    );
    proposal.accept(d.provider.party.clone(), &d.provider.key)
}

#[test]
fn terms_follow_the_match_and_the_records() {
    let d = deal();
    let t = first_terms(&d);
    assert_eq!(
        (t.start, t.end),
        (200, 200 + 3600),
        "the shorter of 2 h asked and 1 h offered"
    );
    assert_eq!(t.standby_permille, STANDBY_PERMILLE);
    assert_eq!(t.stakes.provider, 5000);
    // 1 h of standby at 10 % of 700 = 70.
    assert_eq!(t.stakes.customer, 70);
    assert_eq!(t.active_cost(1800), 350);
    t.validate().unwrap();
}

#[test]
fn a_contract_signed_by_both_verifies_offline_and_tampering_is_refused() {
    let d = deal();
    let c = signed_contract(&d);
    let id = c.verify().unwrap();
    assert_eq!(id, c.id());
    let bytes = c.to_bytes();
    assert_eq!(Contract::from_bytes(&bytes).unwrap().verify().unwrap(), id);
    // Through JSON, as `locus verify contract` reads it.
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        serde_json::from_str::<Contract>(&json)
            .unwrap()
            .verify()
            .unwrap(),
        id
    );

    let mut cheaper = c.clone();
    cheaper.terms.buyer_pays -= 1;
    let err = cheaper.verify().unwrap_err();
    assert!(
        matches!(
            err,
            ContractError::Signature {
                side: "customer",
                ..
            }
        ),
        "{err}"
    );

    let mut one_sided = c.clone();
    one_sided.provider = one_sided.customer.clone();
    assert!(matches!(
        one_sided.verify(),
        Err(ContractError::Signature {
            side: "provider",
            ..
        })
    ));

    // The arbitrator of a party's org is refused before any signature.
    let mut t = first_terms(&d);
    t.arbitrator_org = t.provider_org;
    assert!(matches!(
        t.validate(),
        Err(ContractError::Invalid {
            field: "arbitrator_org",
            ..
        })
    ));
}

#[test]
fn the_verifier_reuses_certificates_and_agrees() {
    let d = deal();
    let c = signed_contract(&d);
    let mut v = Verifier::default();
    for _ in 0..3 {
        assert_eq!(c.verify_with(&mut v).unwrap(), c.id());
    }
    let mut bad = c.clone();
    bad.terms.seller_gets += 1;
    assert!(bad.verify_with(&mut v).is_err());
    let mut forged = c.clone();
    forged.provider.signature[0] ^= 1;
    assert!(forged.verify_with(&mut v).is_err());
}

#[test]
fn negotiation_is_bounded_changes_only_what_may_change_and_restarts() {
    let d = deal();
    let first = Proposal::sign(
        first_terms(&d),
        Side::Customer,
        d.customer.party.clone(),
        &d.customer.key,
    );
    let mut n = Negotiation::start(first.clone()).unwrap();
    let mut latest = first.terms.clone();
    let mut side = Side::Provider;
    for r in 1..=MAX_REVISIONS {
        let mut t = latest.clone();
        t.revision = r;
        t.sla.handover_within_secs += 1;
        let signer = if side == Side::Customer {
            &d.customer
        } else {
            &d.provider
        };
        n = n
            .counter(Proposal::sign(
                t.clone(),
                side,
                signer.party.clone(),
                &signer.key,
            ))
            .unwrap();
        latest = t;
        side = side.other();
    }
    let mut t = latest.clone();
    t.revision += 1;
    let signer = if side == Side::Customer {
        &d.customer
    } else {
        &d.provider
    };
    let err = n
        .clone()
        .counter(Proposal::sign(t, side, signer.party.clone(), &signer.key))
        .unwrap_err();
    assert_eq!(err, ContractError::TooManyRevisions);
    let Negotiation::Open(p) = n.clone() else {
        panic!()
    };
    let agreed = n
        .agree(p.accept(signer.party.clone(), &signer.key))
        .unwrap();
    assert!(matches!(agreed, Negotiation::Agreed(_)));

    // A counter that changes the price is refused.
    let mut t = first.terms.clone();
    t.revision = 1;
    t.buyer_pays = 1;
    assert_eq!(
        check_counter(&first.terms, &t),
        Err(ContractError::Immutable("prices"))
    );
    // Nor may a side counter itself.
    let mut t = first.terms.clone();
    t.revision = 1;
    let own = Proposal::sign(t, Side::Customer, d.customer.party.clone(), &d.customer.key);
    assert!(
        Negotiation::start(first.clone())
            .unwrap()
            .counter(own)
            .is_err()
    );

    // Rejected: the request re-lists without that provider and can match again.
    let rejected = Negotiation::start(first)
        .unwrap()
        .reject(Side::Provider, "reputation".into())
        .unwrap();
    assert!(matches!(
        rejected,
        Negotiation::Rejected {
            by: Side::Provider,
            ..
        }
    ));
    let again = d.request.body.after_rejection(d.provider.org(), 300);
    assert!(again.exclude.contains(&d.provider.org()));
    assert_eq!(again.seq, 2);
    again.validate().unwrap();
}

#[test]
fn a_replayed_or_second_contract_is_refused() {
    let d = deal();
    let c = signed_contract(&d);
    let mut register = Contracts::default();
    let id = register.admit(c.clone(), 300).unwrap();
    assert_eq!(
        register.admit(c.clone(), 300),
        Err(ContractError::Replayed(id))
    );
    // Another revision of the same match is a second contract for the same request.
    let mut t = c.terms.clone();
    t.revision = 1;
    t.sla.penalty += 1;
    let second = Proposal::sign(t, Side::Provider, d.provider.party.clone(), &d.provider.key)
        .accept(d.customer.party.clone(), &d.customer.key);
    assert!(matches!(
        register.admit(second, 300),
        Err(ContractError::DoubleContract {
            what: "request",
            ..
        })
    ));
    assert_eq!(register.of_org(d.arbitrator.org(), 300).len(), 1);
    // An ended contract is not taken; ended ones are forgotten.
    let mut late = Contracts::default();
    assert!(matches!(
        late.admit(c, 5000),
        Err(ContractError::Ended { .. })
    ));
    assert_eq!(register.expire(5000), 1);
}

proptest! {
    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(c) = Contract::from_bytes(&bytes) {
            let _ = c.verify();
        }
    }
}

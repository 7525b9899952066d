use super::*;
use crate::book::{EnergySource, Entry};
use crate::class::{Resources, Tier};
use crate::clearing::clear;
use crate::signed::PartySignature;
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

pub(crate) fn first_terms(d: &Deal) -> Terms {
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

/// `n` contracts of the deal's customer with two providers, each its own
/// terms.
fn many(d: &Deal, n: u64) -> Vec<Contract> {
    let other = node(4, 1);
    (0..n)
        .map(|i| {
            let provider = if i % 3 == 2 { &other } else { &d.provider };
            let mut t = first_terms(d);
            t.buyer_pays += i;
            t.provider = provider.node();
            t.provider_org = provider.org();
            Proposal::sign(t, Side::Customer, d.customer.party.clone(), &d.customer.key)
                .accept(provider.party.clone(), &provider.key)
        })
        .collect()
}

fn each_alone(contracts: &[Contract]) -> Vec<Result<RecordId, ContractError>> {
    contracts.iter().map(Contract::verify).collect()
}

/// A scalar of the type of `like` (curve25519's, which this crate does
/// not name) from an integer.
fn scalar<S: From<u64>>(_like: &S, v: u64) -> S {
    S::from(v)
}

/// Little-endian `bytes` reduced modulo ℓ.
fn reduce<S>(like: &S, bytes: &[u8]) -> S
where
    S: From<u64> + Copy + std::ops::Mul<Output = S> + std::ops::Add<Output = S>,
{
    bytes.iter().rev().fold(scalar(like, 0), |acc, &b| {
        acc * scalar(like, 256) + scalar(like, u64::from(b))
    })
}

/// A signature of `key` over `message` whose R is `nonce`'s public point
/// plus the point encoded by `torsion` (R is that point alone without a
/// nonce): `s = r + k·a`, so `[s]B − [k]A` is R less the torsion.
fn crafted(
    key: &SigningKey,
    nonce: Option<&SigningKey>,
    torsion: &[u8; 32],
    message: &[u8],
) -> [u8; 64] {
    use ed25519_dalek::{Digest, Sha512};
    let t = VerifyingKey::from_bytes(torsion).unwrap().to_edwards();
    let a = key.to_scalar();
    let (r, point) = match nonce {
        Some(n) => (n.to_scalar(), n.verifying_key().to_edwards() + t),
        None => (scalar(&a, 0), t),
    };
    let r_bytes = point.compress().to_bytes();
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(key.verifying_key().as_bytes());
    h.update(message);
    let k = reduce(&a, &h.finalize());
    let s = r + k * a;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&r_bytes);
    signature[32..].copy_from_slice(&s.to_bytes());
    signature
}

/// The encoding of the identity (order 1) and of a point of order 4.
const IDENTITY: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
};
const ORDER_4: [u8; 32] = [0u8; 32];

#[test]
fn the_batch_agrees_with_each_alone_on_valid_contracts() {
    let d = deal();
    let contracts = many(&d, 2 * MAX_BATCH as u64 + 7);
    let alone = each_alone(&contracts);
    assert!(alone.iter().all(Result::is_ok));
    assert_eq!(
        alone,
        contracts.iter().map(|c| Ok(c.id())).collect::<Vec<_>>()
    );
    let mut v = Verifier::default();
    // Cold (parties learned on the way), then every party known.
    assert_eq!(v.verify_many(&contracts), alone);
    assert_eq!(v.verify_many(&contracts), alone);
    assert_eq!(v.verify_many(&[]), vec![]);
}

#[test]
fn one_bad_contract_among_many_is_the_only_one_refused_and_for_its_own_reason() {
    let d = deal();
    let mut contracts = many(&d, 100);
    // A tampered price.
    contracts[5].terms.buyer_pays += 1000;
    // Signed by another node of the provider's org, and by another org.
    for (i, by) in [(40, node(2, 2)), (41, node(5, 1))] {
        let c = &mut contracts[i];
        c.provider = PartySignature::sign(by.party.clone(), &by.key, CONTRACT_DOMAIN, &c.terms);
    }
    // A forged signature.
    contracts[60].provider.signature[40] ^= 1;
    // The same signature with s + ℓ (not canonical).
    {
        let s = &mut contracts[70].customer.signature[32..];
        let mut carry = 0u16;
        for (b, l) in s.iter_mut().zip(GROUP_ORDER) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
    }
    // Terms out of bounds, refused before any signature.
    contracts[80].terms.end = contracts[80].terms.start;
    let alone = each_alone(&contracts);
    let refused: Vec<usize> = (0..alone.len()).filter(|&i| alone[i].is_err()).collect();
    assert_eq!(refused, vec![5, 40, 41, 60, 70, 80]);
    assert!(matches!(
        alone[5],
        Err(ContractError::Signature {
            side: "customer",
            source: SignatureError::BadSignature(_)
        })
    ));
    assert!(matches!(
        alone[41],
        Err(ContractError::Signature {
            side: "provider",
            source: SignatureError::WrongSigner { .. }
        })
    ));

    let mut warm = Verifier::default();
    assert!(warm.verify_many(&many(&d, 3)).iter().all(Result::is_ok));
    assert_eq!(warm.verify_many(&contracts), alone);
    // Alone through a verifier, and in batches cold.
    let mut v = Verifier::default();
    let with: Vec<_> = contracts.iter().map(|c| c.verify_with(&mut v)).collect();
    assert_eq!(with, alone);
    assert_eq!(Verifier::default().verify_many(&contracts), alone);
}

#[test]
fn what_a_raw_batch_takes_from_a_small_order_r_or_weak_key_verify_many_refuses() {
    let d = deal();
    let mut v = Verifier::default();
    let good = many(&d, 4);
    assert!(v.verify_many(&good).iter().all(Result::is_ok));

    // R the identity and s = k·a: [s]B − [k]A = R holds exactly.
    let mut small_r = good[0].clone();
    small_r.terms.buyer_pays += 7;
    let message = signed_message(&small_r.terms);
    small_r.customer = PartySignature::sign(
        d.customer.party.clone(),
        &d.customer.key,
        CONTRACT_DOMAIN,
        &small_r.terms,
    );
    small_r.provider.signature = crafted(&d.provider.key, None, &IDENTITY, &message);
    let sig = Signature::from_bytes(&small_r.provider.signature);
    let a = d.provider.key.verifying_key();
    assert!(ed25519_dalek::verify_batch(&[&message], &[sig], &[a]).is_ok());
    assert!(a.verify_strict(&message, &sig).is_err());
    assert!(!batchable_signature(&small_r.provider.signature));

    // A node key of small order (the identity), certified by its org: R
    // the identity and s = 0 pass the batch equation for any message.
    let org_key = SigningKey::from_bytes(&[2; 32]);
    let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
    assert!(weak.is_weak());
    let cert = locus_access::NodeCertificate::new(
        &weak,
        OrgId::from_public_key(&org_key.verifying_key()),
        [locus_access::NodeRole::Worker].into(),
        1,
        0,
        u64::MAX,
    )
    .sign(&org_key);
    let weak_party = Party::new(&org_key.verifying_key(), cert);
    let mut weak_key = good[1].clone();
    weak_key.terms.provider = weak_party.node();
    let message = signed_message(&weak_key.terms);
    weak_key.customer = PartySignature::sign(
        d.customer.party.clone(),
        &d.customer.key,
        CONTRACT_DOMAIN,
        &weak_key.terms,
    );
    let mut zero = [0u8; 64];
    zero[..32].copy_from_slice(&IDENTITY);
    weak_key.provider = PartySignature {
        party: weak_party,
        signature: zero,
    };
    let sig = Signature::from_bytes(&zero);
    assert!(ed25519_dalek::verify_batch(&[&message], &[sig], &[weak]).is_ok());

    let batch = [good[2].clone(), small_r, weak_key, good[3].clone()];
    let alone = each_alone(&batch);
    assert!(alone[0].is_ok() && alone[3].is_ok());
    for bad in &alone[1..3] {
        assert!(
            matches!(
                bad,
                Err(ContractError::Signature {
                    side: "provider",
                    source: SignatureError::BadSignature(_)
                })
            ),
            "{bad:?}"
        );
    }
    for _ in 0..2 {
        assert_eq!(v.verify_many(&batch), alone);
    }
}

#[test]
fn a_torsion_component_of_r_is_the_difference_a_batch_keeps() {
    // As documented on `verify_many`: R = [r]B + T with T of order 4 is
    // not of small order and is canonical, so it joins a batch; the check
    // alone refuses it, the batch takes it when its weight is a multiple
    // of 4.
    let d = deal();
    let mut v = Verifier::default();
    let base = many(&d, 1);
    assert!(v.verify_many(&base).iter().all(Result::is_ok));
    let mut taken = 0;
    for i in 0..32u64 {
        let mut c = base[0].clone();
        c.terms.buyer_pays += 1 + i;
        c.customer = PartySignature::sign(
            d.customer.party.clone(),
            &d.customer.key,
            CONTRACT_DOMAIN,
            &c.terms,
        );
        let nonce = SigningKey::from_bytes(&[i as u8 + 50; 32]);
        let message = signed_message(&c.terms);
        c.provider.signature = crafted(&d.provider.key, Some(&nonce), &ORDER_4, &message);
        assert!(batchable_signature(&c.provider.signature));
        assert!(c.verify().is_err());
        if v.verify_many(std::slice::from_ref(&c))[0].is_ok() {
            taken += 1;
        }
    }
    assert!(0 < taken && taken < 32, "{taken} of 32 taken");
}

#[test]
fn the_precheck_knows_the_canonical_encodings() {
    let a = node(1, 1).key.to_scalar();
    assert_eq!(reduce(&a, &GROUP_ORDER), scalar(&a, 0), "GROUP_ORDER is ℓ");
    let mut below = GROUP_ORDER;
    below[0] -= 1;
    assert!(canonical_scalar(&below));
    assert!(canonical_scalar(&[0; 32]));
    assert!(!canonical_scalar(&GROUP_ORDER));
    assert!(!canonical_scalar(&[0xff; 32]));
    // p = 2²⁵⁵ − 19 and p + 1 (y = 0 and y = 1 again), either sign.
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    for sign in [0, 0x80] {
        for low in [0xec, 0xed, 0xee] {
            let mut y = p;
            y[0] = low;
            y[31] |= sign;
            assert_eq!(canonical_y(&y), low == 0xec, "{y:02x?}");
        }
    }
    assert!(canonical_y(&IDENTITY) && canonical_y(&ORDER_4));
    // Small order R, whatever s.
    for r in [IDENTITY, ORDER_4] {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        assert!(!batchable_signature(&sig));
    }
}

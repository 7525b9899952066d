use super::*;
use crate::signed::testing::{TestNode, node};
use proptest::prelude::*;

/// Node 0 of org `i` for `i` in `0..n`, and a second node of each.
struct World {
    first: Vec<TestNode>,
    second: Vec<TestNode>,
}

impl World {
    fn new(n: u8) -> Self {
        World {
            first: (1..=n).map(|o| node(o, 0)).collect(),
            second: (1..=n).map(|o| node(o, 1)).collect(),
        }
    }

    fn org(&self, i: usize) -> OrgId {
        self.first[i].org()
    }

    /// Sign `r` by node 0 of its payer and node 1 of its payee.
    fn sign(&self, r: Receipt) -> SignedReceipt {
        let from = self.by_org(r.from, false);
        let to = self.by_org(r.to, true);
        SignedReceipt::sign(
            r,
            (from.party.clone(), &from.key),
            (to.party.clone(), &to.key),
        )
    }

    fn by_org(&self, org: OrgId, second: bool) -> &TestNode {
        let nodes = if second { &self.second } else { &self.first };
        nodes
            .iter()
            .find(|n| n.org() == org)
            .expect("an org of the world")
    }

    fn sign_checkpoint(&self, c: Checkpoint) -> SignedCheckpoint {
        let a = self.by_org(c.a, false);
        let b = self.by_org(c.b, true);
        SignedCheckpoint::sign(c, (a.party.clone(), &a.key), (b.party.clone(), &b.key))
    }

    /// Draft, sign and apply the next receipt of the pair.
    fn pay(
        &self,
        acc: &mut Accounts,
        from: usize,
        to: usize,
        amount: u64,
        reason: Reason,
    ) -> Result<SignedReceipt, LedgerError> {
        let r = self.sign(acc.draft(self.org(from), self.org(to), amount, reason, 100));
        acc.apply(&r).map(|()| r)
    }
}

fn contract(k: u8) -> RecordId {
    RecordId([k; 32])
}

fn sum(acc: &Accounts) -> i128 {
    acc.balances().values().map(|b| i128::from(*b)).sum()
}

/// Conservation and provability, checked together.
fn assert_invariants(acc: &Accounts) {
    assert_eq!(sum(acc), 0, "credits are conserved");
    let proven = prove_balances(acc.chains()).expect("chains verify");
    assert_eq!(
        &proven,
        acc.balances(),
        "balances are provable from the chains"
    );
    let floor = -i64::try_from(acc.credit_limit()).expect("limit fits");
    assert!(acc.balances().values().all(|b| *b >= floor));
}

#[test]
fn a_receipt_moves_credits_and_links_the_pair_chain() {
    let w = World::new(3);
    let mut acc = Accounts::new();
    let first = w
        .pay(&mut acc, 0, 1, 500, Reason::Opening)
        .expect("opening");
    let usage = Reason::Usage {
        contract: contract(1),
        from_secs: 0,
        to_secs: 3600,
    };
    let second = w.pay(&mut acc, 1, 0, 200, usage).expect("usage");
    w.pay(
        &mut acc,
        2,
        0,
        50,
        Reason::Fee {
            contract: contract(1),
        },
    )
    .expect("fee");
    assert_eq!(acc.balance(w.org(0)), -500 + 200 + 50);
    assert_eq!(acc.balance(w.org(1)), 300);
    assert_eq!(acc.balance(w.org(2)), -50);
    assert_eq!(second.receipt.seq, 1);
    assert_eq!(second.receipt.prev, first.hash());
    let chain = acc.pair(w.org(1), w.org(0)).expect("pair");
    let p = chain.verify().expect("chain verifies");
    assert_eq!(p.balance_of(w.org(0)), Some(-300));
    assert_eq!(p.balance_of(w.org(1)), Some(300));
    assert_eq!(p.balance_of(w.org(2)), None);
    assert_eq!(p.seq, 2);
    assert_invariants(&acc);
}

#[test]
fn bad_receipts_are_refused_and_change_nothing() {
    let w = World::new(3);
    let mut acc = Accounts::new();
    let ok = w.pay(&mut acc, 0, 1, 10, Reason::Opening).expect("opening");
    let before = acc.clone();

    let zero = w.sign(acc.draft(w.org(0), w.org(1), 0, Reason::Opening, 100));
    assert_eq!(acc.apply(&zero), Err(LedgerError::ZeroAmount));

    let mut own = acc.draft(w.org(0), w.org(0), 5, Reason::Opening, 100);
    own.to = own.from;
    let own = w.sign(own);
    assert_eq!(acc.apply(&own), Err(LedgerError::SelfTransfer(w.org(0))));

    assert!(matches!(
        acc.apply(&ok),
        Err(LedgerError::WrongSeq {
            expected: 1,
            got: 0,
            ..
        })
    ));

    let mut gap = acc.draft(w.org(0), w.org(1), 5, Reason::Opening, 100);
    gap.seq += 1;
    assert!(matches!(
        acc.apply(&w.sign(gap)),
        Err(LedgerError::WrongSeq { .. })
    ));

    let mut unlinked = acc.draft(w.org(0), w.org(1), 5, Reason::Opening, 100);
    unlinked.prev = [7; 32];
    assert!(matches!(
        acc.apply(&w.sign(unlinked)),
        Err(LedgerError::WrongPrev { .. })
    ));

    let big = w.sign(acc.draft(
        w.org(0),
        w.org(1),
        DEFAULT_CREDIT_LIMIT,
        Reason::Opening,
        100,
    ));
    assert!(matches!(
        acc.apply(&big),
        Err(LedgerError::Overdraft { .. })
    ));

    let too_big = w.sign(acc.draft(w.org(0), w.org(1), u64::MAX, Reason::Opening, 100));
    assert_eq!(
        acc.apply(&too_big),
        Err(LedgerError::AmountTooLarge(u64::MAX))
    );

    let empty_usage = Reason::Usage {
        contract: contract(1),
        from_secs: 10,
        to_secs: 10,
    };
    let r = w.sign(acc.draft(w.org(0), w.org(1), 5, empty_usage, 100));
    assert!(matches!(acc.apply(&r), Err(LedgerError::Invalid { .. })));

    assert_eq!(acc, before);
    // Exactly down to the limit is allowed.
    w.pay(&mut acc, 0, 1, DEFAULT_CREDIT_LIMIT - 10, Reason::Opening)
        .expect("down to the limit");
    assert_eq!(
        acc.balance(w.org(0)),
        -i64::try_from(DEFAULT_CREDIT_LIMIT).expect("fits")
    );
    assert_invariants(&acc);
}

#[test]
fn balances_that_would_overflow_are_refused() {
    let w = World::new(3);
    let mut acc = Accounts::with_credit_limit(u64::MAX);
    assert_eq!(acc.credit_limit(), MAX_AMOUNT);
    w.pay(&mut acc, 0, 1, MAX_AMOUNT, Reason::Opening)
        .expect("to the limit");
    let before = acc.clone();
    assert_eq!(
        w.pay(&mut acc, 2, 1, 1, Reason::Opening),
        Err(LedgerError::Overflow(w.org(1)))
    );
    assert!(matches!(
        w.pay(&mut acc, 0, 2, 1, Reason::Opening),
        Err(LedgerError::Overflow(_) | LedgerError::Overdraft { .. })
    ));
    assert_eq!(acc, before);
    assert_invariants(&acc);
}

#[test]
fn tampered_receipts_are_detected() {
    let w = World::new(3);
    let mut acc = Accounts::new();
    let mut chain = Vec::new();
    for amount in [10, 20, 30, 40] {
        chain.push(w.pay(&mut acc, 0, 1, amount, Reason::Opening).expect("pay"));
    }
    let proven = verify_pair(None, &chain).expect("the chain verifies");
    assert_eq!(proven.balance_of(w.org(0)), Some(-100));
    assert_eq!(proven.seq, 4);
    assert_eq!(proven.head, chain[3].hash());

    // A flipped amount breaks both signatures.
    let mut flipped = chain.clone();
    flipped[2].receipt.amount = 3;
    assert!(matches!(
        verify_pair(None, &flipped),
        Err(LedgerError::Signature { .. })
    ));

    // Reordered, dropped or replayed receipts break seq continuity.
    let mut reordered = chain.clone();
    reordered.swap(1, 2);
    assert!(matches!(
        verify_pair(None, &reordered),
        Err(LedgerError::WrongSeq { .. })
    ));
    let mut dropped = chain.clone();
    dropped.remove(1);
    assert!(matches!(
        verify_pair(None, &dropped),
        Err(LedgerError::WrongSeq { .. })
    ));
    let mut first_dropped = chain.clone();
    first_dropped.remove(0);
    assert!(matches!(
        verify_pair(None, &first_dropped),
        Err(LedgerError::WrongSeq { .. })
    ));
    let mut replayed = chain.clone();
    replayed.push(chain[3].clone());
    assert!(matches!(
        verify_pair(None, &replayed),
        Err(LedgerError::WrongSeq { .. })
    ));

    // A receipt re-signed with another seq but the old prev: the link breaks.
    let mut relinked = chain.clone();
    let mut r = chain[3].receipt.clone();
    r.seq = 2;
    relinked.truncate(2);
    relinked.push(w.sign(r));
    assert!(matches!(
        verify_pair(None, &relinked),
        Err(LedgerError::WrongPrev { .. })
    ));

    // A receipt of another pair in the chain.
    let mut mixed = chain.clone();
    mixed.push(w.sign(Receipt {
        to: w.org(2),
        ..acc.draft(w.org(0), w.org(1), 5, Reason::Opening, 100)
    }));
    assert!(matches!(
        verify_pair(None, &mixed),
        Err(LedgerError::NotOfPair { .. })
    ));
    assert_eq!(verify_pair(None, &[]), Err(LedgerError::EmptyChain));

    let before = acc.clone();
    let next = acc.draft(w.org(0), w.org(1), 5, Reason::Opening, 100);

    // Signed by a node of the wrong org (org 2 signs as the payee).
    let stranger = &w.first[2];
    let mut wrong_org = w.sign(next.clone());
    wrong_org.by_to = next.sign(stranger.party.clone(), &stranger.key);
    assert!(matches!(
        acc.apply(&wrong_org),
        Err(LedgerError::Signature {
            signer: "payee",
            error: SignatureError::WrongSigner { .. },
            ..
        })
    ));

    // A node claiming another node's certificate.
    let mut stolen = w.sign(next.clone());
    stolen.by_to = next.sign(w.second[1].party.clone(), &w.first[1].key);
    assert!(matches!(
        acc.apply(&stolen),
        Err(LedgerError::Signature {
            error: SignatureError::BadSignature(_),
            ..
        })
    ));

    // A single signature: the payer's, twice.
    let mut single = w.sign(next.clone());
    single.by_to = single.by_from.clone();
    assert!(matches!(
        acc.apply(&single),
        Err(LedgerError::Signature {
            signer: "payee",
            ..
        })
    ));
    let mut single = w.sign(next.clone());
    single.by_from = single.by_to.clone();
    assert!(matches!(
        acc.apply(&single),
        Err(LedgerError::Signature {
            signer: "payer",
            ..
        })
    ));

    // The payee's signature over another receipt.
    let mut other = w.sign(next.clone());
    other.by_to = Receipt {
        amount: 6,
        ..next.clone()
    }
    .sign(w.second[1].party.clone(), &w.second[1].key);
    assert!(matches!(
        acc.apply(&other),
        Err(LedgerError::Signature {
            signer: "payee",
            ..
        })
    ));

    // A receipt signed under another domain (a checkpoint's).
    let mut domain = w.sign(next.clone());
    domain.by_to = PartySignature::sign(
        w.second[1].party.clone(),
        &w.second[1].key,
        CHECKPOINT_DOMAIN,
        &next,
    );
    assert!(matches!(
        acc.apply(&domain),
        Err(LedgerError::Signature { .. })
    ));

    assert_eq!(acc, before);
    acc.apply(&w.sign(next)).expect("the untampered receipt");
    assert_invariants(&acc);
}

#[test]
fn stakes_are_held_and_only_their_arbitrator_releases_them() {
    let w = World::new(4);
    let (customer, provider, arbitrator, other) = (0, 1, 2, 3);
    let c = contract(9);
    let mut acc = Accounts::new();
    w.pay(
        &mut acc,
        customer,
        arbitrator,
        100,
        Reason::Stake { contract: c },
    )
    .expect("customer stakes");
    w.pay(
        &mut acc,
        provider,
        arbitrator,
        300,
        Reason::Stake { contract: c },
    )
    .expect("provider stakes");
    assert_eq!(acc.held(c, w.org(customer)), 100);
    assert_eq!(acc.held(c, w.org(provider)), 300);
    assert_eq!(acc.arbitrator(c), Some(w.org(arbitrator)));
    assert_eq!(acc.stakes(c).count(), 2);
    let before = acc.clone();

    // Staking the same contract with another arbitrator.
    assert!(matches!(
        w.pay(&mut acc, customer, other, 10, Reason::Stake { contract: c }),
        Err(LedgerError::WrongArbitrator { .. })
    ));
    // A release by an org that did not receive the stakes.
    assert!(matches!(
        w.pay(
            &mut acc,
            other,
            customer,
            10,
            Reason::StakeReturn { contract: c }
        ),
        Err(LedgerError::WrongArbitrator { .. })
    ));
    // More than held.
    assert!(matches!(
        w.pay(
            &mut acc,
            arbitrator,
            customer,
            101,
            Reason::StakeReturn { contract: c }
        ),
        Err(LedgerError::NotHeld {
            held: 100,
            amount: 101,
            ..
        })
    ));
    // A stake of a contract nobody staked for.
    assert!(matches!(
        w.pay(
            &mut acc,
            arbitrator,
            customer,
            1,
            Reason::StakeReturn {
                contract: contract(8)
            }
        ),
        Err(LedgerError::NotHeld { held: 0, .. })
    ));
    // An award of more than the losing party staked.
    let award = Reason::StakeAward {
        contract: c,
        from_party: w.org(customer),
    };
    assert!(matches!(
        w.pay(&mut acc, arbitrator, provider, 150, award),
        Err(LedgerError::NotHeld { .. })
    ));
    // An award of a party's stake to itself, or of the arbitrator's own.
    assert!(matches!(
        w.pay(&mut acc, arbitrator, customer, 10, award),
        Err(LedgerError::Invalid { .. })
    ));
    let own = Reason::StakeAward {
        contract: c,
        from_party: w.org(arbitrator),
    };
    assert!(matches!(
        w.pay(&mut acc, arbitrator, provider, 10, own),
        Err(LedgerError::Invalid { .. })
    ));
    assert_eq!(acc, before);

    // The provider's stake is returned in two parts; the customer's is
    // awarded to the provider.
    w.pay(
        &mut acc,
        arbitrator,
        provider,
        200,
        Reason::StakeReturn { contract: c },
    )
    .expect("return part");
    assert_eq!(acc.held(c, w.org(provider)), 100);
    w.pay(
        &mut acc,
        arbitrator,
        provider,
        100,
        Reason::StakeReturn { contract: c },
    )
    .expect("return the rest");
    assert_eq!(acc.held(c, w.org(provider)), 0);
    w.pay(&mut acc, arbitrator, provider, 100, award)
        .expect("award");
    assert_eq!(acc.held(c, w.org(customer)), 0);
    assert_eq!(acc.arbitrator(c), None);
    assert!(matches!(
        w.pay(&mut acc, arbitrator, provider, 1, award),
        Err(LedgerError::NotHeld { .. })
    ));
    assert_eq!(acc.balance(w.org(customer)), -100);
    assert_eq!(acc.balance(w.org(provider)), 100);
    assert_eq!(acc.balance(w.org(arbitrator)), 0);
    assert_invariants(&acc);
}

#[test]
fn checkpoints_compact_pairs_and_keep_balances() {
    let w = World::new(3);
    let mut acc = Accounts::new();
    for i in 0..6 {
        w.pay(&mut acc, i % 2, 1 - i % 2, 10 + i as u64, Reason::Opening)
            .expect("pay");
        w.pay(&mut acc, 2, i % 2, 1, Reason::Opening).expect("pay");
    }
    let (a, b) = (w.org(0), w.org(1));
    let balances = acc.balances().clone();
    let cp = acc.checkpoint(a, b, 200).expect("pair known");
    assert_eq!(cp.seq, 6);
    assert_eq!(acc.checkpoint(a, a, 200), None);

    // Refused: a wrong balance, a wrong head, another pair, one signature,
    // a pair never seen.
    let before = acc.clone();
    let wrong = w.sign_checkpoint(Checkpoint {
        balance_a: cp.balance_a + 1,
        ..cp.clone()
    });
    assert!(matches!(
        acc.compact(a, b, &wrong),
        Err(LedgerError::CheckpointMismatch { .. })
    ));
    let wrong = w.sign_checkpoint(Checkpoint {
        head: [1; 32],
        ..cp.clone()
    });
    assert!(matches!(
        acc.compact(b, a, &wrong),
        Err(LedgerError::CheckpointMismatch { .. })
    ));
    let beyond = w.sign_checkpoint(Checkpoint {
        seq: 7,
        ..cp.clone()
    });
    assert!(matches!(
        acc.compact(a, b, &beyond),
        Err(LedgerError::CheckpointMismatch { .. })
    ));
    let signed = w.sign_checkpoint(cp.clone());
    assert!(matches!(
        acc.compact(a, w.org(2), &signed),
        Err(LedgerError::CheckpointMismatch { .. })
    ));
    let mut single = signed.clone();
    single.by_b = single.by_a.clone();
    assert!(matches!(
        acc.compact(a, b, &single),
        Err(LedgerError::Signature { .. })
    ));
    let unordered = Checkpoint {
        a: cp.b,
        b: cp.a,
        ..cp.clone()
    };
    assert!(matches!(
        unordered.validate(),
        Err(LedgerError::Invalid { .. })
    ));
    assert_eq!(acc, before);

    // A checkpoint in the middle of the chain drops what it covers.
    let mid = {
        let chain = acc.pair(a, b).expect("pair");
        let p = verify_pair(None, &chain.receipts[..4]).expect("prefix");
        w.sign_checkpoint(p.checkpoint(150))
    };
    assert_eq!(acc.compact(a, b, &mid), Ok(4));
    assert_eq!(acc.pair(a, b).expect("pair").receipts.len(), 2);
    assert_eq!(acc.balances(), &balances);
    assert_invariants(&acc);
    // An older checkpoint than the one kept is refused.
    let old = {
        let p = verify_pair(None, &before.pair(a, b).expect("pair").receipts[..2]).expect("prefix");
        w.sign_checkpoint(p.checkpoint(150))
    };
    assert!(matches!(
        acc.compact(a, b, &old),
        Err(LedgerError::CheckpointMismatch { .. })
    ));

    assert_eq!(acc.compact(b, a, &signed), Ok(2));
    assert!(acc.pair(a, b).expect("pair").receipts.is_empty());
    assert_eq!(acc.balances(), &balances);
    assert_invariants(&acc);

    // The pair goes on after its checkpoint.
    let after = w
        .pay(&mut acc, 0, 1, 5, Reason::Opening)
        .expect("pay after");
    assert_eq!(after.receipt.seq, 6);
    assert_eq!(after.receipt.prev, cp.head);
    assert_invariants(&acc);
    // A chain without its checkpoint does not verify from scratch.
    assert!(matches!(
        verify_pair(None, &[after]),
        Err(LedgerError::WrongSeq { .. })
    ));

    // Proving needs each pair once.
    let chains: Vec<PairChain> = acc.chains().cloned().collect();
    let twice = chains.iter().chain(chains.iter().take(1));
    assert!(matches!(
        prove_balances(twice),
        Err(LedgerError::DuplicatePair { .. })
    ));
    assert_eq!(
        acc.compact(
            a,
            w.org(2),
            &w.sign_checkpoint(PairBalance::empty(a, w.org(2)).checkpoint(1))
        ),
        Ok(0)
    );
}

#[test]
fn wire_forms_round_trip_and_are_bounded() {
    let w = World::new(2);
    let mut acc = Accounts::new();
    let r = w.pay(&mut acc, 0, 1, 10, Reason::Opening).expect("pay");
    let bytes = r.to_bytes();
    assert!(bytes.len() < MAX_RECEIPT_BYTES / 2, "{} bytes", bytes.len());
    assert_eq!(SignedReceipt::from_bytes(&bytes), Ok(r.clone()));
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        SignedReceipt::from_bytes(&long),
        Err(LedgerError::Malformed(_))
    ));
    assert!(matches!(
        SignedReceipt::from_bytes(&vec![0; MAX_RECEIPT_BYTES + 1]),
        Err(LedgerError::Malformed(_))
    ));
    let cp = w.sign_checkpoint(acc.checkpoint(w.org(0), w.org(1), 5).expect("pair"));
    assert_eq!(SignedCheckpoint::from_bytes(&cp.to_bytes()), Ok(cp));
    // Reasons read as snake_case in JSON.
    let json = serde_json::to_string(&Reason::StakeReturn {
        contract: contract(1),
    })
    .expect("json");
    assert!(json.starts_with("{\"stake_return\""), "{json}");
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Kind {
    Opening,
    Usage,
    Fee,
    Penalty,
    Stake,
    Return,
    Award,
    Compact,
}

#[derive(Clone, Debug)]
enum Tamper {
    None,
    ZeroAmount,
    Replay,
    Gap,
    WrongPrev,
    FlipAmount,
    WrongOrgSigner,
    SingleSignature,
}

#[derive(Clone, Debug)]
struct Op {
    from: usize,
    to: usize,
    amount: u64,
    kind: Kind,
    contract: u8,
    /// Aim a release at the actual arbitrator and a holder.
    aim: bool,
    tamper: Tamper,
}

fn op(orgs: usize) -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        3 => Just(Kind::Opening),
        2 => Just(Kind::Usage),
        1 => Just(Kind::Fee),
        1 => Just(Kind::Penalty),
        2 => Just(Kind::Stake),
        2 => Just(Kind::Return),
        2 => Just(Kind::Award),
        1 => Just(Kind::Compact),
    ];
    let tamper = prop_oneof![
        12 => Just(Tamper::None),
        1 => Just(Tamper::ZeroAmount),
        1 => Just(Tamper::Replay),
        1 => Just(Tamper::Gap),
        1 => Just(Tamper::WrongPrev),
        1 => Just(Tamper::FlipAmount),
        1 => Just(Tamper::WrongOrgSigner),
        1 => Just(Tamper::SingleSignature),
    ];
    (
        0..orgs,
        0..orgs,
        1u64..300_000,
        kind,
        0u8..3,
        any::<bool>(),
        tamper,
    )
        .prop_map(|(from, to, amount, kind, contract, aim, tamper)| Op {
            from,
            to,
            amount,
            kind,
            contract,
            aim,
            tamper,
        })
}

fn history() -> impl Strategy<Value = (u8, Vec<Op>)> {
    (2u8..=6).prop_flat_map(|n| (Just(n), prop::collection::vec(op(n as usize), 0..200)))
}

/// Run one op; answers whether it was meant to be valid (untampered).
fn step(
    w: &World,
    acc: &mut Accounts,
    last: &mut Option<SignedReceipt>,
    op: &Op,
) -> (bool, Result<(), LedgerError>) {
    let c = contract(op.contract);
    let (mut from, mut to) = (w.org(op.from), w.org(op.to));
    let mut amount = op.amount;
    let reason = match op.kind {
        Kind::Compact => {
            let Some(cp) = acc.checkpoint(from, to, 300) else {
                return (false, Err(LedgerError::EmptyChain));
            };
            let signed = w.sign_checkpoint(cp);
            return (true, acc.compact(from, to, &signed).map(|_| ()));
        }
        Kind::Opening => Reason::Opening,
        Kind::Usage => Reason::Usage {
            contract: c,
            from_secs: 0,
            to_secs: 60,
        },
        Kind::Fee => Reason::Fee { contract: c },
        Kind::Penalty => Reason::Penalty { contract: c },
        Kind::Stake => Reason::Stake { contract: c },
        Kind::Return | Kind::Award => {
            let holder = acc.stakes(c).next();
            if let (true, Some(arb), Some((party, held))) = (op.aim, acc.arbitrator(c), holder) {
                from = arb;
                amount = amount.min(held);
                if matches!(op.kind, Kind::Return) {
                    to = party;
                } else if to == party || to == arb {
                    // Award to some third org when there is one.
                    match (0..w.first.len())
                        .map(|i| w.org(i))
                        .find(|o| *o != party && *o != arb)
                    {
                        Some(o) => to = o,
                        None => return (false, Err(LedgerError::EmptyChain)),
                    }
                }
                if matches!(op.kind, Kind::Return) {
                    Reason::StakeReturn { contract: c }
                } else {
                    Reason::StakeAward {
                        contract: c,
                        from_party: party,
                    }
                }
            } else if matches!(op.kind, Kind::Return) {
                Reason::StakeReturn { contract: c }
            } else {
                Reason::StakeAward {
                    contract: c,
                    from_party: w.org((op.from + 1) % w.first.len()),
                }
            }
        }
    };
    let mut r = acc.draft(from, to, amount, reason, 100);
    let signed = match op.tamper {
        Tamper::None => w.sign(r),
        Tamper::ZeroAmount => {
            r.amount = 0;
            w.sign(r)
        }
        Tamper::Replay => match last {
            Some(l) => l.clone(),
            None => return (false, Err(LedgerError::EmptyChain)),
        },
        Tamper::Gap => {
            r.seq += 1;
            w.sign(r)
        }
        Tamper::WrongPrev => {
            r.prev[0] ^= 1;
            w.sign(r)
        }
        Tamper::FlipAmount => {
            let mut s = w.sign(r);
            s.receipt.amount ^= 1;
            s
        }
        Tamper::WrongOrgSigner => {
            let stranger = w
                .first
                .iter()
                .find(|n| n.org() != r.to)
                .expect("two orgs at least");
            let mut s = w.sign(r.clone());
            s.by_to = r.sign(stranger.party.clone(), &stranger.key);
            s
        }
        Tamper::SingleSignature => {
            let mut s = w.sign(r);
            s.by_to = s.by_from.clone();
            s
        }
    };
    let result = acc.apply(&signed);
    if result.is_ok() {
        *last = Some(signed);
    }
    (matches!(op.tamper, Tamper::None), result)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_histories_conserve_credits_and_stay_provable((n, ops) in history()) {
        let w = World::new(n);
        let mut acc = Accounts::with_credit_limit(500_000);
        let mut last = None;
        // Per (contract, party): what was staked, and what was released.
        let mut staked: BTreeMap<(RecordId, OrgId), u64> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            if i % 25 == 24 {
                assert_invariants(&acc);
            }
            let before = acc.clone();
            let (untampered, result) = step(&w, &mut acc, &mut last, op);
            match &result {
                Ok(()) => {
                    if let Some(r) = last.as_ref().filter(|_| !matches!(op.kind, Kind::Compact)) {
                        let r = &r.receipt;
                        let amount = i64::try_from(r.amount).expect("bounded");
                        prop_assert_eq!(acc.balance(r.from), before.balance(r.from) - amount);
                        prop_assert_eq!(acc.balance(r.to), before.balance(r.to) + amount);
                        if let Reason::Stake { contract } = r.reason {
                            *staked.entry((contract, r.from)).or_insert(0) += r.amount;
                        }
                    } else {
                        prop_assert_eq!(acc.balances(), before.balances());
                    }
                }
                Err(_) => prop_assert_eq!(&acc, &before, "a refusal changed the accounts"),
            }
            if untampered && matches!(op.kind, Kind::Compact) {
                prop_assert!(result.is_ok(), "a checkpoint of the current state: {:?}", result);
            }
            if !untampered {
                prop_assert!(result.is_err() || matches!(op.kind, Kind::Compact));
            }
            prop_assert_eq!(sum(&acc), 0);
            for c in 0..3 {
                for (party, held) in acc.stakes(contract(c)) {
                    prop_assert!(held <= staked.get(&(contract(c), party)).copied().unwrap_or(0));
                }
            }
        }
        assert_invariants(&acc);
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = SignedReceipt::from_bytes(&bytes);
        let _ = SignedCheckpoint::from_bytes(&bytes);
    }

    #[test]
    fn decoding_mutated_receipts_never_panics(i in 0usize..2048, b in any::<u8>(), cut in 0usize..2048) {
        let w = World::new(2);
        let acc = Accounts::new();
        let r = w.sign(acc.draft(w.org(0), w.org(1), 10, Reason::Opening, 100));
        let mut bytes = r.to_bytes();
        let i = i % bytes.len();
        bytes[i] = b;
        bytes.truncate(cut.max(1));
        if let Ok(decoded) = SignedReceipt::from_bytes(&bytes) {
            // Whatever decodes is either the receipt or refused.
            let mut acc = Accounts::new();
            prop_assert!(decoded == r || acc.apply(&decoded).is_err());
        }
    }
}

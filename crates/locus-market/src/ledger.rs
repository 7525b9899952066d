//! Accounts between orgs, provable from signed records alone.
//!
//! # What this module owns
//!
//! Credits (whole millicredits) move between orgs only by **receipts**: a
//! [`Receipt`] says who pays whom, how much and why, and is signed by a
//! node of the payer *and* a node of the payee ([`SignedReceipt`]), over
//! `RECEIPT_DOMAIN ‖ postcard(receipt)`. The receipts of one (unordered)
//! org pair form a hash-linked chain: `seq` counts the pair's receipts from
//! 0 and `prev` is the BLAKE3 hash of the previous receipt of the pair
//! (zeros for the first), so neither side can drop, reorder or replay one
//! without the other seeing it. A [`Checkpoint`], signed by both orgs of a
//! pair, states the pair's position after `seq` receipts, so the receipts
//! before it can be dropped ([`Accounts::compact`]): a pair's balance is
//! proven by its latest checkpoint plus the receipts after it
//! ([`verify_pair`]), by anyone, with nothing but those records.
//!
//! [`Accounts`] is one node's view of many orgs: it takes receipts in each
//! pair's order, refuses what breaks a rule, keeps each pair's chain for
//! export ([`Accounts::pair`]) and the stakes an arbitrator holds in escrow
//! per contract and party ([`Accounts::held`]).
//!
//! # What it must never do
//!
//! Mint or burn credits; take a receipt that both orgs did not sign; let a
//! payer go below its credit limit; let an arbitrator release more of a
//! stake than it holds for that contract and party, or release a stake it
//! did not receive; change any state when it refuses a receipt; grow
//! without a bound (orgs, receipts per pair, open escrows); panic on bytes
//! from outside. It does no I/O and reads no clock: a record's time is in
//! the record.
//!
//! # Invariants (tested in `ledger/tests.rs`)
//!
//! 1. **Credits are conserved**: every receipt moves its amount from one
//!    org to another and none is minted, so the sum of all balances is
//!    always 0.
//! 2. **Balances are provable**: every org's [`Accounts::balance`] equals
//!    the sum of its positions that [`verify_pair`] proves from the
//!    exported chains alone ([`prove_balances`]).
//! 3. **Credit**: every balance is at least `-credit_limit`.
//! 4. **Escrow**: what an arbitrator holds for a (contract, party) is what
//!    that party staked with it less what it returned or awarded; it never
//!    goes below 0, and only the arbitrator that received a contract's
//!    stakes releases them.
//! 5. **Chains**: the receipts of a pair, after its checkpoint, have
//!    consecutive `seq` and each `prev` is the hash of the one before.
//! 6. **Atomic refusal**: a refused receipt or checkpoint leaves the
//!    accounts unchanged.
//!
//! Escrow is bookkeeping of the node that applied the stakes: a pair's
//! checkpoint carries the pair's balance, not the stakes behind it, so the
//! held amounts survive compaction in [`Accounts`] but are not proven by a
//! compacted chain.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use locus_access::OrgId;
use locus_access::encoding::{self, decode, encode};
use serde::{Deserialize, Serialize};

use crate::signed::{Party, PartySignature, RecordId, SignatureError};

/// Domain of the signatures over a receipt.
pub const RECEIPT_DOMAIN: &[u8] = b"locus/market/receipt/v1\0";
/// Domain of the signatures over a checkpoint.
pub const CHECKPOINT_DOMAIN: &[u8] = b"locus/market/checkpoint/v1\0";
/// Largest encoded signed receipt accepted (two parties with their
/// certificates, of at most 1 KiB each, and the receipt).
pub const MAX_RECEIPT_BYTES: usize = 4 * 1024;
/// Largest encoded signed checkpoint accepted.
pub const MAX_CHECKPOINT_BYTES: usize = 4 * 1024;
/// How far below 0 an org's balance may go unless told otherwise
/// (1000 credits).
pub const DEFAULT_CREDIT_LIMIT: u64 = 1_000_000;
/// Largest amount of one receipt (a balance is an `i64`).
pub const MAX_AMOUNT: u64 = i64::MAX as u64;
/// Most orgs one [`Accounts`] knows.
pub const MAX_ORGS: usize = 10_000;
/// Most receipts a pair keeps after its checkpoint; beyond, the pair must
/// be compacted by a checkpoint before it takes more.
pub const MAX_RECEIPTS_PER_PAIR: usize = 10_000;
/// Most contracts with stakes held at once.
pub const MAX_ESCROWS: usize = 100_000;

/// Why credits move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A party of `contract` stakes credits with its arbitrator (payer:
    /// the party, payee: the arbitrator, which holds them in escrow).
    Stake { contract: RecordId },
    /// The arbitrator returns (part of) a stake to the party that staked.
    StakeReturn { contract: RecordId },
    /// The arbitrator gives (part of) `from_party`'s stake to the other
    /// party of the contract (the payee).
    StakeAward {
        contract: RecordId,
        from_party: OrgId,
    },
    /// The customer pays the provider for the use in `[from_secs, to_secs)`.
    Usage {
        contract: RecordId,
        from_secs: u64,
        to_secs: u64,
    },
    /// The customer pays the arbitrator's fee.
    Fee { contract: RecordId },
    /// The provider pays the customer a penalty (a missed handover).
    Penalty { contract: RecordId },
    /// An org pair's agreed opening transfer (a prepayment, say).
    Opening,
}

impl Reason {
    /// The contract it is about, if any.
    pub fn contract(&self) -> Option<RecordId> {
        match *self {
            Reason::Stake { contract }
            | Reason::StakeReturn { contract }
            | Reason::StakeAward { contract, .. }
            | Reason::Usage { contract, .. }
            | Reason::Fee { contract }
            | Reason::Penalty { contract } => Some(contract),
            Reason::Opening => None,
        }
    }
}

/// One transfer of credits from one org to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The payer.
    pub from: OrgId,
    /// The payee.
    pub to: OrgId,
    /// Millicredits, at least 1 and at most [`MAX_AMOUNT`].
    pub amount: u64,
    pub reason: Reason,
    /// The number of this receipt in its org pair's chain (first is 0).
    pub seq: u64,
    /// The hash of the previous receipt of the pair (zeros for the first).
    #[serde(with = "encoding::bytes")]
    pub prev: [u8; 32],
    /// When both signed it (their certificates must be valid then).
    pub at: u64,
}

/// The org pair `(a, b)` with `a < b`.
pub fn ordered(x: OrgId, y: OrgId) -> (OrgId, OrgId) {
    if x <= y { (x, y) } else { (y, x) }
}

impl Receipt {
    /// BLAKE3 of the postcard of the receipt (signatures not included).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&encode(self)).as_bytes()
    }

    /// Its org pair, ordered.
    pub fn pair(&self) -> (OrgId, OrgId) {
        ordered(self.from, self.to)
    }

    /// The fields on their own: a positive amount within bounds, two
    /// distinct orgs, a reason consistent with them.
    pub fn validate(&self) -> Result<(), LedgerError> {
        if self.amount == 0 {
            return Err(LedgerError::ZeroAmount);
        }
        if self.amount > MAX_AMOUNT {
            return Err(LedgerError::AmountTooLarge(self.amount));
        }
        if self.from == self.to {
            return Err(LedgerError::SelfTransfer(self.from));
        }
        match self.reason {
            Reason::Usage {
                from_secs, to_secs, ..
            } if from_secs >= to_secs => Err(invalid(
                "reason",
                format!("usage period [{from_secs}, {to_secs}) is empty"),
            )),
            Reason::StakeAward { from_party, .. } if from_party == self.from => Err(invalid(
                "reason",
                format!("arbitrator {from_party} awards a stake of its own"),
            )),
            Reason::StakeAward { from_party, .. } if from_party == self.to => Err(invalid(
                "reason",
                format!("{from_party}'s stake is awarded to {from_party} itself (a return)"),
            )),
            _ => Ok(()),
        }
    }

    /// One org's signature of it, by node `party` holding `node_key`.
    pub fn sign(&self, party: Party, node_key: &SigningKey) -> PartySignature {
        PartySignature::sign(party, node_key, RECEIPT_DOMAIN, self)
    }
}

/// A receipt signed by a node of the payer and a node of the payee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// By a node of `receipt.from`.
    pub by_from: PartySignature,
    /// By a node of `receipt.to`.
    pub by_to: PartySignature,
}

impl SignedReceipt {
    /// Sign `receipt` with a node of each org.
    pub fn sign(receipt: Receipt, from: (Party, &SigningKey), to: (Party, &SigningKey)) -> Self {
        SignedReceipt {
            by_from: receipt.sign(from.0, from.1),
            by_to: receipt.sign(to.0, to.1),
            receipt,
        }
    }

    /// The fields, and both signatures: each by the node its party names,
    /// certified by the org expected (payer, payee) at `receipt.at`.
    pub fn verify(&self) -> Result<(), LedgerError> {
        let r = &self.receipt;
        r.validate()?;
        let body = encode(r);
        check_signature(&self.by_from, RECEIPT_DOMAIN, &body, "payer", r.from, r.at)?;
        check_signature(&self.by_to, RECEIPT_DOMAIN, &body, "payee", r.to, r.at)
    }

    /// The receipt's hash (what the next receipt of the pair links to).
    pub fn hash(&self) -> [u8; 32] {
        self.receipt.hash()
    }

    /// The wire form (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode at most [`MAX_RECEIPT_BYTES`]; the result is not checked yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        decode(bytes, MAX_RECEIPT_BYTES).map_err(LedgerError::Malformed)
    }
}

/// Both orgs of a pair agree on its position after `seq` receipts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The smaller org id of the pair.
    pub a: OrgId,
    /// The larger org id of the pair.
    pub b: OrgId,
    /// How many receipts of the pair it covers (the next one has this seq).
    pub seq: u64,
    /// The hash of the last receipt covered (zeros when `seq` is 0).
    #[serde(with = "encoding::bytes")]
    pub head: [u8; 32],
    /// `a`'s net position toward `b`, millicredits (`b`'s is the opposite).
    pub balance_a: i64,
    /// When both signed it.
    pub at: u64,
}

impl Checkpoint {
    /// The fields on their own: an ordered pair of two orgs, and nothing
    /// claimed before the first receipt.
    pub fn validate(&self) -> Result<(), LedgerError> {
        if self.a >= self.b {
            return Err(invalid(
                "checkpoint",
                format!("orgs {} and {} are not in increasing order", self.a, self.b),
            ));
        }
        if self.seq == 0 && (self.head != [0; 32] || self.balance_a != 0) {
            return Err(invalid(
                "checkpoint",
                "covers no receipt but has a head or a balance",
            ));
        }
        Ok(())
    }

    /// One org's signature of it.
    pub fn sign(&self, party: Party, node_key: &SigningKey) -> PartySignature {
        PartySignature::sign(party, node_key, CHECKPOINT_DOMAIN, self)
    }

    /// The state it states.
    pub fn state(&self) -> PairBalance {
        PairBalance {
            a: self.a,
            b: self.b,
            seq: self.seq,
            head: self.head,
            balance_a: self.balance_a,
        }
    }
}

/// A checkpoint signed by a node of each org of the pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// By a node of `checkpoint.a`.
    pub by_a: PartySignature,
    /// By a node of `checkpoint.b`.
    pub by_b: PartySignature,
}

impl SignedCheckpoint {
    /// Sign `checkpoint` with a node of each org (`a` first).
    pub fn sign(checkpoint: Checkpoint, a: (Party, &SigningKey), b: (Party, &SigningKey)) -> Self {
        SignedCheckpoint {
            by_a: checkpoint.sign(a.0, a.1),
            by_b: checkpoint.sign(b.0, b.1),
            checkpoint,
        }
    }

    /// The fields and both signatures.
    pub fn verify(&self) -> Result<(), LedgerError> {
        let c = &self.checkpoint;
        c.validate()?;
        let body = encode(c);
        check_signature(&self.by_a, CHECKPOINT_DOMAIN, &body, "org a", c.a, c.at)?;
        check_signature(&self.by_b, CHECKPOINT_DOMAIN, &body, "org b", c.b, c.at)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode at most [`MAX_CHECKPOINT_BYTES`]; the result is not checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        decode(bytes, MAX_CHECKPOINT_BYTES).map_err(LedgerError::Malformed)
    }
}

/// Why a receipt, a checkpoint or a chain is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("not a ledger record: {0}")]
    Malformed(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the {signer}'s signature (org {org}) is refused: {error}")]
    Signature {
        signer: &'static str,
        org: OrgId,
        error: SignatureError,
    },
    #[error("a receipt of 0 millicredits")]
    ZeroAmount,
    #[error("amount {0} is more than the {MAX_AMOUNT} allowed")]
    AmountTooLarge(u64),
    #[error("org {0} pays itself")]
    SelfTransfer(OrgId),
    #[error("receipt {seq} ({from} → {to}) is not of the pair {a}, {b}")]
    NotOfPair {
        seq: u64,
        from: OrgId,
        to: OrgId,
        a: OrgId,
        b: OrgId,
    },
    #[error("pair {a}, {b}: expected receipt {expected}, got {got} (a replay or a gap)")]
    WrongSeq {
        a: OrgId,
        b: OrgId,
        expected: u64,
        got: u64,
    },
    #[error("pair {a}, {b}: receipt {seq} does not link to the previous one")]
    WrongPrev { a: OrgId, b: OrgId, seq: u64 },
    #[error("the balance of org {0} would overflow")]
    Overflow(OrgId),
    #[error("org {org} would overdraw: balance {balance}, paying {amount}, credit limit {limit}")]
    Overdraft {
        org: OrgId,
        balance: i64,
        amount: u64,
        limit: u64,
    },
    #[error("contract {contract}: its stakes are held by {arbitrator}, not {got}")]
    WrongArbitrator {
        contract: RecordId,
        arbitrator: OrgId,
        got: OrgId,
    },
    #[error("contract {contract}: {amount} released, but only {held} of {party}'s stake is held")]
    NotHeld {
        contract: RecordId,
        party: OrgId,
        held: u64,
        amount: u64,
    },
    #[error("more than {MAX_ORGS} orgs")]
    TooManyOrgs,
    #[error("more than {MAX_ESCROWS} contracts with stakes held")]
    TooManyEscrows,
    #[error("pair {a}, {b} holds {MAX_RECEIPTS_PER_PAIR} receipts: compact it with a checkpoint")]
    ChainFull { a: OrgId, b: OrgId },
    #[error("a chain with neither a checkpoint nor a receipt")]
    EmptyChain,
    #[error("pair {a}, {b} appears twice")]
    DuplicatePair { a: OrgId, b: OrgId },
    #[error("no receipt of pair {a}, {b} is known")]
    UnknownPair { a: OrgId, b: OrgId },
    #[error("checkpoint of pair {a}, {b} does not match the chain: {reason}")]
    CheckpointMismatch { a: OrgId, b: OrgId, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> LedgerError {
    LedgerError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Check `sig` over `domain ‖ body`: by the node its party names, of
/// `org`, certified at `at`.
fn check_signature(
    sig: &PartySignature,
    domain: &[u8],
    body: &[u8],
    signer: &'static str,
    org: OrgId,
    at: u64,
) -> Result<(), LedgerError> {
    sig.verify_bytes(domain, body, sig.party.node(), org, at)
        .map_err(|error| LedgerError::Signature { signer, org, error })
}

/// The position of an org pair after `seq` receipts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairBalance {
    pub a: OrgId,
    pub b: OrgId,
    /// Receipts covered (the next one has this seq).
    pub seq: u64,
    /// Hash of the last receipt (zeros before the first).
    #[serde(with = "encoding::bytes")]
    pub head: [u8; 32],
    /// `a`'s net position toward `b`.
    pub balance_a: i64,
}

impl PairBalance {
    /// A pair before its first receipt.
    pub fn empty(x: OrgId, y: OrgId) -> Self {
        let (a, b) = ordered(x, y);
        PairBalance {
            a,
            b,
            seq: 0,
            head: [0; 32],
            balance_a: 0,
        }
    }

    /// `org`'s net position toward the other org, if it is of the pair.
    pub fn balance_of(&self, org: OrgId) -> Option<i64> {
        if org == self.a {
            Some(self.balance_a)
        } else if org == self.b {
            self.balance_a.checked_neg()
        } else {
            None
        }
    }

    /// The position after `r` (not its signatures): `r` must be of the
    /// pair, next in seq and linked to the head.
    pub fn advance(&self, r: &Receipt) -> Result<PairBalance, LedgerError> {
        let (a, b) = (self.a, self.b);
        if r.pair() != (a, b) || r.from == r.to {
            return Err(LedgerError::NotOfPair {
                seq: r.seq,
                from: r.from,
                to: r.to,
                a,
                b,
            });
        }
        if r.seq != self.seq {
            return Err(LedgerError::WrongSeq {
                a,
                b,
                expected: self.seq,
                got: r.seq,
            });
        }
        if r.prev != self.head {
            return Err(LedgerError::WrongPrev { a, b, seq: r.seq });
        }
        let amount = i64::try_from(r.amount).map_err(|_| LedgerError::AmountTooLarge(r.amount))?;
        let balance_a = if r.from == a {
            self.balance_a.checked_sub(amount)
        } else {
            self.balance_a.checked_add(amount)
        }
        .ok_or(LedgerError::Overflow(a))?;
        Ok(PairBalance {
            seq: self.seq.checked_add(1).ok_or(LedgerError::Overflow(a))?,
            head: r.hash(),
            balance_a,
            ..*self
        })
    }

    /// The unsigned checkpoint of this position.
    pub fn checkpoint(&self, at: u64) -> Checkpoint {
        Checkpoint {
            a: self.a,
            b: self.b,
            seq: self.seq,
            head: self.head,
            balance_a: self.balance_a,
            at,
        }
    }
}

/// What proves a pair's position: its latest checkpoint (if any) and the
/// receipts after it, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairChain {
    pub checkpoint: Option<SignedCheckpoint>,
    pub receipts: Vec<SignedReceipt>,
}

impl PairChain {
    /// [`verify_pair`] of this chain.
    pub fn verify(&self) -> Result<PairBalance, LedgerError> {
        verify_pair(self.checkpoint.as_ref(), &self.receipts)
    }
}

/// Check a pair's chain from its records alone: the checkpoint's and every
/// receipt's signatures, that every receipt is of the pair, consecutive
/// seqs from the checkpoint's and each `prev` linking to the one before.
/// Answers the pair's position after the last receipt.
pub fn verify_pair(
    checkpoint: Option<&SignedCheckpoint>,
    receipts: &[SignedReceipt],
) -> Result<PairBalance, LedgerError> {
    let mut state = match (checkpoint, receipts.first()) {
        (Some(c), _) => {
            c.verify()?;
            c.checkpoint.state()
        }
        (None, Some(first)) => PairBalance::empty(first.receipt.from, first.receipt.to),
        (None, None) => return Err(LedgerError::EmptyChain),
    };
    if receipts.len() > MAX_RECEIPTS_PER_PAIR {
        return Err(LedgerError::ChainFull {
            a: state.a,
            b: state.b,
        });
    }
    for r in receipts {
        r.verify()?;
        state = state.advance(&r.receipt)?;
    }
    Ok(state)
}

/// Every org's balance from pair chains alone: each chain is verified, no
/// pair may appear twice, and an org's balance is the sum of its positions.
pub fn prove_balances<'a>(
    chains: impl IntoIterator<Item = &'a PairChain>,
) -> Result<BTreeMap<OrgId, i64>, LedgerError> {
    let mut seen = BTreeSet::new();
    let mut balances: BTreeMap<OrgId, i64> = BTreeMap::new();
    for chain in chains {
        let p = chain.verify()?;
        if !seen.insert((p.a, p.b)) {
            return Err(LedgerError::DuplicatePair { a: p.a, b: p.b });
        }
        for (org, delta) in [(p.a, Some(p.balance_a)), (p.b, p.balance_a.checked_neg())] {
            let entry = balances.entry(org).or_insert(0);
            *entry = delta
                .and_then(|d| entry.checked_add(d))
                .ok_or(LedgerError::Overflow(org))?;
        }
    }
    Ok(balances)
}

/// Stakes held for one contract.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Escrow {
    /// The org that received the contract's stakes.
    arbitrator: OrgId,
    /// Held per party that staked (never 0: released stakes are removed).
    held: BTreeMap<OrgId, u64>,
}

/// What a receipt does to an escrow, checked before anything changes.
struct EscrowChange {
    contract: RecordId,
    arbitrator: OrgId,
    party: OrgId,
    held: u64,
}

/// One pair as an [`Accounts`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PairState {
    chain: PairChain,
    state: PairBalance,
}

/// One node's view of the accounts between many orgs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accounts {
    credit_limit: u64,
    balances: BTreeMap<OrgId, i64>,
    pairs: BTreeMap<(OrgId, OrgId), PairState>,
    escrow: BTreeMap<RecordId, Escrow>,
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts::with_credit_limit(DEFAULT_CREDIT_LIMIT)
    }
}

impl Accounts {
    /// Empty accounts with the [`DEFAULT_CREDIT_LIMIT`].
    pub fn new() -> Self {
        Accounts::default()
    }

    /// Empty accounts where a balance may go down to `-credit_limit`
    /// (at most [`MAX_AMOUNT`]).
    pub fn with_credit_limit(credit_limit: u64) -> Self {
        Accounts {
            credit_limit: credit_limit.min(MAX_AMOUNT),
            balances: BTreeMap::new(),
            pairs: BTreeMap::new(),
            escrow: BTreeMap::new(),
        }
    }

    pub fn credit_limit(&self) -> u64 {
        self.credit_limit
    }

    /// Take a receipt, or refuse it and change nothing. Refused: a bad or
    /// missing signature, a zero or too large amount, a self transfer, a
    /// receipt out of its pair's order (a replay or a gap) or not linked to
    /// the previous one, an overflow, an overdraft beyond the payer's
    /// credit limit, a stake release beyond what its arbitrator holds or by
    /// another org, and growth beyond the bounds.
    pub fn apply(&mut self, signed: &SignedReceipt) -> Result<(), LedgerError> {
        signed.verify()?;
        let r = &signed.receipt;
        let key = r.pair();
        let (current, len) = match self.pairs.get(&key) {
            Some(p) => (p.state, p.chain.receipts.len()),
            None => (PairBalance::empty(r.from, r.to), 0),
        };
        let next = current.advance(r)?;
        if len >= MAX_RECEIPTS_PER_PAIR {
            return Err(LedgerError::ChainFull { a: key.0, b: key.1 });
        }
        let new_orgs = [r.from, r.to]
            .iter()
            .filter(|o| !self.balances.contains_key(o))
            .count();
        if self.balances.len() + new_orgs > MAX_ORGS {
            return Err(LedgerError::TooManyOrgs);
        }
        let change = self.escrow_change(r)?;
        let amount = i64::try_from(r.amount).map_err(|_| LedgerError::AmountTooLarge(r.amount))?;
        let payer = self.balance(r.from);
        let payer_after = payer
            .checked_sub(amount)
            .ok_or(LedgerError::Overflow(r.from))?;
        // `credit_limit` is at most `i64::MAX`, so its negation fits.
        let floor = i64::try_from(self.credit_limit).map_or(-i64::MAX, |l| -l);
        if payer_after < floor {
            return Err(LedgerError::Overdraft {
                org: r.from,
                balance: payer,
                amount: r.amount,
                limit: self.credit_limit,
            });
        }
        let payee_after = self
            .balance(r.to)
            .checked_add(amount)
            .ok_or(LedgerError::Overflow(r.to))?;

        // Every check passed: commit.
        self.balances.insert(r.from, payer_after);
        self.balances.insert(r.to, payee_after);
        let pair = self.pairs.entry(key).or_insert_with(|| PairState {
            chain: PairChain::default(),
            state: current,
        });
        pair.chain.receipts.push(signed.clone());
        pair.state = next;
        if let Some(c) = change {
            let escrow = self.escrow.entry(c.contract).or_insert_with(|| Escrow {
                arbitrator: c.arbitrator,
                held: BTreeMap::new(),
            });
            if c.held == 0 {
                escrow.held.remove(&c.party);
            } else {
                escrow.held.insert(c.party, c.held);
            }
            if escrow.held.is_empty() {
                self.escrow.remove(&c.contract);
            }
        }
        Ok(())
    }

    /// The escrow a receipt changes and what it holds after, or why the
    /// receipt may not move it.
    fn escrow_change(&self, r: &Receipt) -> Result<Option<EscrowChange>, LedgerError> {
        let (contract, arbitrator, party, stake) = match r.reason {
            Reason::Stake { contract } => (contract, r.to, r.from, true),
            Reason::StakeReturn { contract } => (contract, r.from, r.to, false),
            Reason::StakeAward {
                contract,
                from_party,
            } => (contract, r.from, from_party, false),
            _ => return Ok(None),
        };
        let escrow = self.escrow.get(&contract);
        if let Some(e) = escrow
            && e.arbitrator != arbitrator
        {
            return Err(LedgerError::WrongArbitrator {
                contract,
                arbitrator: e.arbitrator,
                got: arbitrator,
            });
        }
        let held = self.held(contract, party);
        let held = if stake {
            if escrow.is_none() && self.escrow.len() >= MAX_ESCROWS {
                return Err(LedgerError::TooManyEscrows);
            }
            held.checked_add(r.amount)
                .ok_or(LedgerError::Overflow(arbitrator))?
        } else {
            held.checked_sub(r.amount).ok_or(LedgerError::NotHeld {
                contract,
                party,
                held,
                amount: r.amount,
            })?
        };
        Ok(Some(EscrowChange {
            contract,
            arbitrator,
            party,
            held,
        }))
    }

    /// `org`'s net balance (0 for an org never seen).
    pub fn balance(&self, org: OrgId) -> i64 {
        self.balances.get(&org).copied().unwrap_or(0)
    }

    /// Every known org's balance.
    pub fn balances(&self) -> &BTreeMap<OrgId, i64> {
        &self.balances
    }

    /// What the arbitrator of `contract` holds of `party`'s stake.
    pub fn held(&self, contract: RecordId, party: OrgId) -> u64 {
        self.escrow
            .get(&contract)
            .and_then(|e| e.held.get(&party))
            .copied()
            .unwrap_or(0)
    }

    /// Every stake held: (contract, arbitrator, party, amount).
    pub fn escrows(&self) -> impl Iterator<Item = (RecordId, OrgId, OrgId, u64)> + '_ {
        self.escrow
            .iter()
            .flat_map(|(c, e)| e.held.iter().map(move |(o, h)| (*c, e.arbitrator, *o, *h)))
    }

    /// The org holding `contract`'s stakes, while it holds any.
    pub fn arbitrator(&self, contract: RecordId) -> Option<OrgId> {
        self.escrow.get(&contract).map(|e| e.arbitrator)
    }

    /// The stakes held for `contract`, per party.
    pub fn stakes(&self, contract: RecordId) -> impl Iterator<Item = (OrgId, u64)> + '_ {
        self.escrow
            .get(&contract)
            .into_iter()
            .flat_map(|e| e.held.iter().map(|(o, h)| (*o, *h)))
    }

    /// The chain of the pair `x`, `y` (either order), to export.
    pub fn pair(&self, x: OrgId, y: OrgId) -> Option<&PairChain> {
        self.pairs.get(&ordered(x, y)).map(|p| &p.chain)
    }

    /// Every pair's chain.
    pub fn chains(&self) -> impl Iterator<Item = &PairChain> {
        self.pairs.values().map(|p| &p.chain)
    }

    /// The current position of the pair `x`, `y`.
    pub fn pair_balance(&self, x: OrgId, y: OrgId) -> PairBalance {
        self.pairs
            .get(&ordered(x, y))
            .map_or_else(|| PairBalance::empty(x, y), |p| p.state)
    }

    /// The next receipt of the pair, unsigned: `seq` and `prev` filled in.
    pub fn draft(&self, from: OrgId, to: OrgId, amount: u64, reason: Reason, at: u64) -> Receipt {
        let state = self.pair_balance(from, to);
        Receipt {
            from,
            to,
            amount,
            reason,
            seq: state.seq,
            prev: state.head,
            at,
        }
    }

    /// The unsigned checkpoint of the pair's current position, if the pair
    /// has any receipt.
    pub fn checkpoint(&self, x: OrgId, y: OrgId, at: u64) -> Option<Checkpoint> {
        self.pairs
            .get(&ordered(x, y))
            .map(|p| p.state.checkpoint(at))
    }

    /// Drop the receipts of the pair `x`, `y` that `signed` covers, after
    /// checking it: both signatures, the pair, and that the chain reaches
    /// exactly its head and balance after its `seq` receipts. Answers how
    /// many receipts were dropped; a refused checkpoint changes nothing.
    pub fn compact(
        &mut self,
        x: OrgId,
        y: OrgId,
        signed: &SignedCheckpoint,
    ) -> Result<usize, LedgerError> {
        signed.verify()?;
        let (a, b) = ordered(x, y);
        let c = &signed.checkpoint;
        let mismatch = |reason: String| LedgerError::CheckpointMismatch { a, b, reason };
        if (c.a, c.b) != (a, b) {
            return Err(mismatch(format!("it is of the pair {}, {}", c.a, c.b)));
        }
        let pair = self
            .pairs
            .get_mut(&(a, b))
            .ok_or(LedgerError::UnknownPair { a, b })?;
        let mut state = pair
            .chain
            .checkpoint
            .as_ref()
            .map_or_else(|| PairBalance::empty(a, b), |c| c.checkpoint.state());
        if c.seq < state.seq || c.seq > pair.state.seq {
            return Err(mismatch(format!(
                "it covers {} receipts; the chain holds {} to {}",
                c.seq, state.seq, pair.state.seq
            )));
        }
        let mut dropped = 0;
        for r in &pair.chain.receipts {
            if state.seq == c.seq {
                break;
            }
            state = state.advance(&r.receipt)?;
            dropped += 1;
        }
        if state.head != c.head {
            let last = c.seq.saturating_sub(1);
            return Err(mismatch(format!(
                "its head is not the hash of receipt {last}"
            )));
        }
        if state.balance_a != c.balance_a {
            return Err(mismatch(format!(
                "the chain proves {} for {a}, the checkpoint says {}",
                state.balance_a, c.balance_a
            )));
        }
        pair.chain.receipts.drain(..dropped);
        pair.chain.checkpoint = Some(signed.clone());
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests;

//! Settlement: what a contract's use cost, who agrees, who rules, and
//! which credits move.
//!
//! When a contract closes ([`close_due`]: its window ended, the customer's
//! credits ran out, or a party settles early), the provider meters it
//! ([`meter`]): seconds standing by at the standby share of the price,
//! seconds active at the full price, and the SLA penalty for every
//! handover that came later than the contract allows. Active time counts
//! only for an [`Activation`] backed by signed observations of the
//! customer's death by enough nodes of other orgs than the provider's
//! ([`crate::witnessed`]), taken at the moment the provider took over: a
//! provider cannot bill for a failure nobody saw.
//!
//! The provider signs the [`Usage`] (a *statement*). The customer answers
//! with a signed [`Reply`]: it countersigns (and signs the receipt that
//! pays, [`transfers`]) or disputes. A dispute, or no answer within
//! [`ANSWER_WITHIN_SECS`], goes to the contract's arbitrator, who rules
//! from the evidence alone ([`rule`]): the contract, the statement with
//! its observations, and the reply. The ruling says what is due and which
//! stakes go where ([`Awards`]); the arbitrator signs it. Stakes go back
//! or to the other party only by receipts the arbitrator signs and that
//! match [`releases`] exactly.
//!
//! A [`Settlement`] bundles the contract, the statement, the reply or the
//! ruling, so anyone verifies it offline ([`Settlement::verify`]) and
//! derives the reputation [`Outcome`] from it.
//!
//! Must never: count active time that is not witnessed, let a party's
//! signature stand for another's, release a stake the settlement does not
//! name, or panic on bytes from outside.

use locus_access::OrgId;
use locus_access::encoding::{decode, encode};
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::contract::{Contract, ContractError, Terms};
use crate::ledger::Reason;
use crate::reputation::Outcome;
use crate::signed::{Authored, RecordId, Signed};
use crate::witness::{Observation, witnessed};

/// Domain of a provider's signature over a usage statement.
pub const USAGE_DOMAIN: &[u8] = b"locus/market/usage/v1\0";
/// Domain of a customer's reply to a statement.
pub const REPLY_DOMAIN: &[u8] = b"locus/market/reply/v1\0";
/// Domain of an arbitrator's ruling.
pub const RULING_DOMAIN: &[u8] = b"locus/market/ruling/v1\0";
/// How long a customer has to answer a statement before the provider
/// takes it to the arbitrator.
pub const ANSWER_WITHIN_SECS: u64 = 60;
/// Most activations one statement lists.
pub const MAX_ACTIVATIONS: usize = 32;
/// Most observations kept as evidence of one activation: the most
/// witnesses a node may ask for (`[market] witnesses`).
pub const MAX_EVIDENCE: usize = locus_core::config::MAX_WITNESSES as usize;
/// Largest encoded statement, reply, ruling or settlement accepted. A
/// settlement of [`MAX_ACTIVATIONS`] activations of [`MAX_EVIDENCE`]
/// observations each, disputed with the longest reason, fits (tested):
/// it must, since settlements cross the fabric as documents of at most
/// this size.
pub const MAX_SETTLEMENT_BYTES: usize = 48 * 1024;
/// Longest reason a reply or ruling gives.
pub const MAX_REASON: usize = 512;

/// A stretch during which the provider ran the customer's covered work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// When the provider took over (unix ms).
    pub from_ms: u64,
    /// When it handed back or the contract closed (unix ms).
    pub to_ms: u64,
    /// Since when the provider's failure detector saw the customer dead.
    pub dead_since_ms: u64,
    /// The observations of other orgs it acted on.
    pub evidence: Vec<Signed<Observation>>,
}

/// Why a contract closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Close {
    /// Its window ended.
    Expired,
    /// What it cost reached what the customer can pay.
    CreditsExhausted,
    /// A party settled before the end.
    Early,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Close::Expired => "its window ended",
            Close::CreditsExhausted => "the customer's credits ran out",
            Close::Early => "a party settled early",
        })
    }
}

/// What a contract's use cost, as metered by its provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub contract: RecordId,
    pub provider: NodeId,
    pub provider_org: OrgId,
    pub customer_org: OrgId,
    /// The metered window, unix seconds: the contract's start to its close.
    pub from_secs: u64,
    pub to_secs: u64,
    pub close: Close,
    pub activations: Vec<Activation>,
    pub standby_secs: u64,
    pub active_secs: u64,
    pub handovers_done: u32,
    pub handovers_missed: u32,
    /// What the customer owes for the window, millicredits.
    pub due: u64,
    /// What the provider owes for missed handovers, millicredits.
    pub penalty: u64,
    /// When the provider signed (unix seconds).
    pub at: u64,
}

impl Authored for Usage {
    const DOMAIN: &'static [u8] = USAGE_DOMAIN;
    fn author(&self) -> NodeId {
        self.provider
    }
    fn author_org(&self) -> OrgId {
        self.provider_org
    }
    fn signed_at(&self) -> u64 {
        self.at
    }
}

/// A customer's answer to a statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Countersign,
    Dispute { reason: String },
}

/// A customer's signed answer to one statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub contract: RecordId,
    /// The id of the statement answered.
    pub statement: RecordId,
    pub customer: NodeId,
    pub customer_org: OrgId,
    pub answer: Answer,
    pub at: u64,
}

impl Authored for Reply {
    const DOMAIN: &'static [u8] = REPLY_DOMAIN;
    fn author(&self) -> NodeId {
        self.customer
    }
    fn author_org(&self) -> OrgId {
        self.customer_org
    }
    fn signed_at(&self) -> u64 {
        self.at
    }
}

/// Which stakes go where after a ruling, millicredits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awards {
    /// Of the customer's stake, to the provider.
    pub customer_to_provider: u64,
    /// Of the customer's stake, back to the customer.
    pub customer_back: u64,
    /// Of the provider's stake, to the customer.
    pub provider_to_customer: u64,
    /// Of the provider's stake, back to the provider.
    pub provider_back: u64,
}

/// An arbitrator's decision over one statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruling {
    pub contract: RecordId,
    pub statement: RecordId,
    pub arbitrator: NodeId,
    pub arbitrator_org: OrgId,
    /// What the evidence supports: owed by the customer, and by the
    /// provider for missed handovers.
    pub due: u64,
    pub penalty: u64,
    /// The party whose position the evidence does not support.
    pub lost_by: OrgId,
    pub awards: Awards,
    /// Why, one line per finding.
    pub reasons: Vec<String>,
    pub at: u64,
}

impl Authored for Ruling {
    const DOMAIN: &'static [u8] = RULING_DOMAIN;
    fn author(&self) -> NodeId {
        self.arbitrator
    }
    fn author_org(&self) -> OrgId {
        self.arbitrator_org
    }
    fn signed_at(&self) -> u64 {
        self.at
    }
}

/// Why a statement, a reply, a ruling or a settlement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error("not a settlement record: {0}")]
    Malformed(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("contract: {0}")]
    Contract(#[from] ContractError),
    #[error("{what} signature: {reason}")]
    Signature { what: &'static str, reason: String },
    #[error("the statement does not match its evidence: {0}")]
    Mismatch(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SettleError {
    SettleError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Whether a contract must close at `now` (unix seconds), having cost
/// `accrued` so far when the customer can pay `available` in all (its
/// stake and its credit left).
pub fn close_due(terms: &Terms, accrued: u64, available: u64, now: u64) -> Option<Close> {
    if now >= terms.end {
        Some(Close::Expired)
    } else if accrued >= available {
        Some(Close::CreditsExhausted)
    } else {
        None
    }
}

/// Meter a contract over `[terms.start, to_secs)` from the provider's
/// activations: only the witnessed ones count as active time (each
/// clipped to the window, overlaps counted once); the rest of the window
/// is standby. `needed` is the number of witnesses a takeover requires.
/// Returns the usage (unsigned; `at` is `to_secs`) and one line per
/// activation that did not count.
pub fn meter(
    terms: &Terms,
    contract: RecordId,
    close: Close,
    to_secs: u64,
    activations: &[Activation],
    needed: usize,
) -> (Usage, Vec<String>) {
    let from_ms = terms.start.saturating_mul(1000);
    let to_secs = to_secs.clamp(terms.start, terms.end);
    let to_ms = to_secs.saturating_mul(1000);
    let mut refused = Vec::new();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let (mut done, mut missed) = (0u32, 0u32);
    for (i, a) in activations.iter().enumerate().take(MAX_ACTIVATIONS) {
        let (start, end) = (a.from_ms.max(from_ms), a.to_ms.min(to_ms));
        if end <= start {
            refused.push(format!("activation {i} lies outside the window"));
            continue;
        }
        if !witnessed(
            a.evidence.iter().take(MAX_EVIDENCE),
            terms.customer,
            terms.provider_org,
            a.dead_since_ms,
            needed,
            a.from_ms,
        ) {
            refused.push(format!(
                "activation {i} at {} ms is not witnessed by {needed} nodes of other orgs",
                a.from_ms
            ));
            continue;
        }
        let late = a.from_ms.saturating_sub(a.dead_since_ms)
            > u64::from(terms.sla.handover_within_secs) * 1000;
        if late {
            missed = missed.saturating_add(1);
        } else {
            done = done.saturating_add(1);
        }
        spans.push((start, end));
    }
    spans.sort_unstable();
    let mut active_ms = 0u64;
    let mut reach = 0u64;
    for (s, e) in spans {
        let s = s.max(reach);
        if e > s {
            active_ms += e - s;
            reach = e;
        }
    }
    let total = to_secs - terms.start;
    let active_secs = active_ms.div_ceil(1000).min(total);
    let standby_secs = total - active_secs;
    let due = terms
        .standby_cost(standby_secs)
        .saturating_add(terms.active_cost(active_secs));
    let usage = Usage {
        contract,
        provider: terms.provider,
        provider_org: terms.provider_org,
        customer_org: terms.customer_org,
        from_secs: terms.start,
        to_secs,
        close,
        activations: activations.iter().take(MAX_ACTIVATIONS).cloned().collect(),
        standby_secs,
        active_secs,
        handovers_done: done,
        handovers_missed: missed,
        due,
        penalty: terms.sla.penalty.saturating_mul(u64::from(missed)),
        at: to_secs,
    };
    (usage, refused)
}

/// Check a signed statement against its contract and its own evidence:
/// the signature is the provider's, the numbers are what [`meter`] makes
/// of the activations it lists, and every activation counted.
pub fn check_statement(
    contract: &Contract,
    statement: &Signed<Usage>,
    needed: usize,
) -> Result<(), SettleError> {
    let id = contract.id();
    let u = &statement.body;
    if u.contract != id {
        return Err(invalid("contract", "names another contract"));
    }
    let t = &contract.terms;
    if u.provider != t.provider || u.provider_org != t.provider_org {
        return Err(invalid("provider", "is not the contract's provider"));
    }
    if u.customer_org != t.customer_org {
        return Err(invalid("customer_org", "is not the contract's customer"));
    }
    if u.activations.len() > MAX_ACTIVATIONS
        || u.activations
            .iter()
            .any(|a| a.evidence.len() > MAX_EVIDENCE)
    {
        return Err(invalid(
            "activations",
            format!("more than {MAX_ACTIVATIONS} or more than {MAX_EVIDENCE} observations each"),
        ));
    }
    statement.verify().map_err(|e| SettleError::Signature {
        what: "provider",
        reason: e.to_string(),
    })?;
    let (fair, refused) = meter(t, id, u.close, u.to_secs, &u.activations, needed);
    if let Some(first) = refused.first() {
        return Err(SettleError::Mismatch(first.clone()));
    }
    let claimed = (
        u.from_secs,
        u.to_secs,
        u.standby_secs,
        u.active_secs,
        u.due,
        u.penalty,
    );
    let metered = (
        fair.from_secs,
        fair.to_secs,
        fair.standby_secs,
        fair.active_secs,
        fair.due,
        fair.penalty,
    );
    if claimed != metered
        || (u.handovers_done, u.handovers_missed) != (fair.handovers_done, fair.handovers_missed)
    {
        return Err(SettleError::Mismatch(format!(
            "claimed {} s standby, {} s active, due {}, penalty {}; the evidence gives {} s, {} s, {}, {}",
            u.standby_secs,
            u.active_secs,
            u.due,
            u.penalty,
            fair.standby_secs,
            fair.active_secs,
            fair.due,
            fair.penalty
        )));
    }
    Ok(())
}

/// Check a customer's signed reply to `statement` under `contract`.
pub fn check_reply(
    contract: &Contract,
    statement: &Signed<Usage>,
    reply: &Signed<Reply>,
) -> Result<(), SettleError> {
    let r = &reply.body;
    let t = &contract.terms;
    if r.contract != contract.id() || r.statement != statement.id() {
        return Err(invalid("reply", "answers another contract or statement"));
    }
    if r.customer != t.customer || r.customer_org != t.customer_org {
        return Err(invalid("reply.customer", "is not the contract's customer"));
    }
    if let Answer::Dispute { reason } = &r.answer
        && reason.len() > MAX_REASON
    {
        return Err(invalid("reply.reason", format!("longer than {MAX_REASON}")));
    }
    reply.verify().map_err(|e| SettleError::Signature {
        what: "customer",
        reason: e.to_string(),
    })
}

/// An arbitrator's ruling over `statement` (with the customer's `reply`,
/// or none if it never answered), from the evidence alone. The evidence
/// decides what is due; the party whose position it contradicts loses:
/// a provider whose statement claims more than its evidence supports
/// forfeits its stake to the customer; a customer that disputed a sound
/// statement, or never answered it, pays what is due from its stake.
pub fn rule(
    contract: &Contract,
    statement: &Signed<Usage>,
    reply: Option<&Signed<Reply>>,
    needed: usize,
    (arbitrator, at): (NodeId, u64),
) -> Ruling {
    let t = &contract.terms;
    let id = contract.id();
    let u = &statement.body;
    let mut reasons = Vec::new();
    let sound = match check_statement(contract, statement, needed) {
        Ok(()) => {
            reasons.push("the statement matches its evidence".to_string());
            true
        }
        Err(e) => {
            reasons.push(format!("the statement is refused: {e}"));
            false
        }
    };
    let reply = reply.filter(|r| match check_reply(contract, statement, r) {
        Ok(()) => true,
        Err(e) => {
            reasons.push(format!("the reply is refused: {e}"));
            false
        }
    });
    match reply.map(|r| &r.body.answer) {
        None => reasons.push("the customer did not answer in time".to_string()),
        Some(Answer::Countersign) => reasons.push("the customer countersigned".to_string()),
        Some(Answer::Dispute { reason }) => {
            reasons.push(format!("the customer disputes: {reason}"));
        }
    }
    // What the evidence supports: `meter` counts only the witnessed
    // activations.
    let (fair, _) = meter(t, id, u.close, u.to_secs, &u.activations, needed);
    let (due, penalty) = (fair.due, fair.penalty);
    let (mut awards, lost_by) = if sound {
        (Awards::default(), t.customer_org)
    } else {
        // The provider forfeits its whole stake to the customer.
        (
            Awards {
                provider_to_customer: t.stakes.provider,
                ..Awards::default()
            },
            t.provider_org,
        )
    };
    // What one side owes the other, net, is paid from its stake.
    let net_due = due.saturating_sub(penalty);
    let net_penalty = penalty.saturating_sub(due);
    awards.customer_to_provider = net_due.min(t.stakes.customer);
    awards.customer_back = t.stakes.customer - awards.customer_to_provider;
    if sound {
        awards.provider_to_customer = net_penalty.min(t.stakes.provider);
    }
    awards.provider_back = t.stakes.provider - awards.provider_to_customer;
    reasons.push(format!(
        "due {due}, penalty {penalty}; the {} loses",
        if sound { "customer" } else { "provider" }
    ));
    Ruling {
        contract: id,
        statement: statement.id(),
        arbitrator,
        arbitrator_org: t.arbitrator_org,
        due,
        penalty,
        lost_by,
        awards,
        reasons,
        at,
    }
}

/// A transfer a settlement calls for; a receipt must match one exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub from: OrgId,
    pub to: OrgId,
    pub amount: u64,
    pub reason: Reason,
}

/// How a statement ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The customer countersigned it.
    Countersigned(Signed<Reply>),
    /// The arbitrator ruled over it.
    Ruled(Signed<Ruling>),
}

/// A contract's whole settlement: what anyone needs to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub contract: Contract,
    pub statement: Signed<Usage>,
    pub ending: Ending,
}

impl Settlement {
    /// Check every signature and rule: the contract, the statement (which
    /// must match its evidence when countersigned), the countersignature
    /// or the ruling (which must be the one [`rule`] gives, signed by the
    /// contract's arbitrator). Returns the outcome for reputation.
    pub fn verify(&self, needed: usize) -> Result<Outcome, SettleError> {
        let id = self.contract.verify()?;
        let t = &self.contract.terms;
        let u = &self.statement.body;
        match &self.ending {
            Ending::Countersigned(reply) => {
                check_reply(&self.contract, &self.statement, reply)?;
                if reply.body.answer != Answer::Countersign {
                    return Err(invalid(
                        "ending",
                        "the reply is a dispute, not a countersignature",
                    ));
                }
                // Signed by both: the provider's evidence is the customer's
                // to check, but a countersigned statement must still be one
                // by the contract's provider.
                if u.contract != id || u.provider != t.provider {
                    return Err(invalid("statement", "is not of this contract's provider"));
                }
                self.statement
                    .verify()
                    .map_err(|e| SettleError::Signature {
                        what: "provider",
                        reason: e.to_string(),
                    })?;
                Ok(Outcome {
                    contract: id,
                    provider: t.provider_org,
                    customer: t.customer_org,
                    value: u.due,
                    sla_met: u.handovers_missed == 0,
                    handovers_done: u.handovers_done,
                    handovers_missed: u.handovers_missed,
                    dispute_lost_by: None,
                    settled_at: reply.body.at,
                })
            }
            Ending::Ruled(ruling) => {
                let r = &ruling.body;
                if r.arbitrator != t.arbitrator || r.arbitrator_org != t.arbitrator_org {
                    return Err(invalid("ruling", "is not by the contract's arbitrator"));
                }
                ruling.verify().map_err(|e| SettleError::Signature {
                    what: "arbitrator",
                    reason: e.to_string(),
                })?;
                // The ruling is a pure function of the evidence: recompute
                // it without the reply (whose absence or content only
                // changes the reasons given, not the decision).
                let again = rule(
                    &self.contract,
                    &self.statement,
                    None,
                    needed,
                    (r.arbitrator, r.at),
                );
                if (again.due, again.penalty, again.lost_by, again.awards)
                    != (r.due, r.penalty, r.lost_by, r.awards)
                    || r.statement != self.statement.id()
                    || r.contract != id
                {
                    return Err(SettleError::Mismatch(
                        "the ruling is not what the evidence gives".into(),
                    ));
                }
                Ok(Outcome {
                    contract: id,
                    provider: t.provider_org,
                    customer: t.customer_org,
                    value: r.due,
                    sla_met: u.handovers_missed == 0 && r.lost_by != t.provider_org,
                    handovers_done: u.handovers_done,
                    handovers_missed: u.handovers_missed,
                    dispute_lost_by: Some(r.lost_by),
                    settled_at: r.at,
                })
            }
        }
    }

    /// The wire form (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode at most [`MAX_SETTLEMENT_BYTES`]; not checked yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Settlement, SettleError> {
        decode(bytes, MAX_SETTLEMENT_BYTES).map_err(SettleError::Malformed)
    }
}

/// The transfers a settlement calls for: when countersigned, the net of
/// what is due and the penalty between the parties, and both stakes back
/// in full; when ruled, the stakes as the ruling awards them.
pub fn transfers(s: &Settlement) -> Vec<Transfer> {
    let t = &s.contract.terms;
    let id = s.contract.id();
    let (c, p, a) = (t.customer_org, t.provider_org, t.arbitrator_org);
    let mut out = Vec::new();
    let mut push = |from, to, amount, reason| {
        if amount > 0 {
            out.push(Transfer {
                from,
                to,
                amount,
                reason,
            });
        }
    };
    match &s.ending {
        Ending::Countersigned(_) => {
            let u = &s.statement.body;
            let usage = Reason::Usage {
                contract: id,
                from_secs: u.from_secs,
                to_secs: u.to_secs,
            };
            push(c, p, u.due.saturating_sub(u.penalty), usage);
            push(
                p,
                c,
                u.penalty.saturating_sub(u.due),
                Reason::Penalty { contract: id },
            );
            push(
                a,
                c,
                t.stakes.customer,
                Reason::StakeReturn { contract: id },
            );
            push(
                a,
                p,
                t.stakes.provider,
                Reason::StakeReturn { contract: id },
            );
        }
        Ending::Ruled(r) => {
            let w = r.body.awards;
            let award = |from_party| Reason::StakeAward {
                contract: id,
                from_party,
            };
            push(a, p, w.customer_to_provider, award(c));
            push(a, c, w.customer_back, Reason::StakeReturn { contract: id });
            push(a, c, w.provider_to_customer, award(p));
            push(a, p, w.provider_back, Reason::StakeReturn { contract: id });
        }
    }
    out
}

/// The transfers the arbitrator makes: those of [`transfers`] it pays.
pub fn releases(s: &Settlement) -> Vec<Transfer> {
    let a = s.contract.terms.arbitrator_org;
    transfers(s).into_iter().filter(|t| t.from == a).collect()
}

/// The stakes a contract's parties place with its arbitrator.
pub fn stakes(contract: &Contract) -> Vec<Transfer> {
    let t = &contract.terms;
    let id = contract.id();
    [
        (t.customer_org, t.stakes.customer),
        (t.provider_org, t.stakes.provider),
    ]
    .into_iter()
    .filter(|(_, amount)| *amount > 0)
    .map(|(from, amount)| Transfer {
        from,
        to: t.arbitrator_org,
        amount,
        reason: Reason::Stake { contract: id },
    })
    .collect()
}

#[cfg(test)]
mod tests;

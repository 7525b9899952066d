//! # locus-market
//!
//! The rules of the market between orgs, as plain functions over data:
//! any node (or a third party with nothing but the records) recomputes
//! and checks every step.
//!
//! This crate owns:
//! - records signed by a node on behalf of its org, carrying the org key
//!   and the node certificate so they check offline ([`signed`]);
//! - resource classes, which reduce a multi-dimensional need or offer to
//!   one good ([`class`]);
//! - offers and requests, the expiring records of the book ([`book`]);
//! - what a node measures of a provider from its fabric view: uptime from
//!   liveness transitions, the customer's check of a claimed uptime, RTTs
//!   to sites ([`measure`]);
//! - clearing: McAfee's trade reduction per class, the choice of the
//!   clearing node, and the check of a signed round ([`clearing`]);
//! - each side's decision rules, read from TOML, with the reasons of each
//!   verdict ([`dmu`]);
//! - contracts: terms from a match, a bounded negotiation, both orgs'
//!   signatures, the arbitrator by rule, offline verification
//!   ([`contract`]);
//! - accounts in credits between orgs, provable from double-signed
//!   receipts, and stakes held by an arbitrator ([`ledger`]);
//! - settlement: metering from witnessed activations, the customer's
//!   countersignature or dispute, the arbitrator's ruling from the
//!   evidence, and the transfers each ending calls for ([`settle`]);
//! - reputation per org from settled contracts ([`reputation`]);
//! - witnessed failures: signed observations of a dead customer by nodes
//!   of other orgs than the provider's ([`witness`]).
//!
//! It must never do I/O, read a clock or draw randomness: "now" is always
//! an argument. Nothing here panics on bytes from outside; every decoder
//! answers an error that names what is wrong, and every collection that
//! input can grow has a named bound.

pub mod book;
pub mod class;
pub mod clearing;
pub mod contract;
pub mod dmu;
pub mod ledger;
pub mod measure;
pub mod reputation;
pub mod settle;
pub mod signed;
pub mod witness;

#[cfg(test)]
mod simulation;

pub use book::{Book, BookError, Cover, EnergySource, Entry, Near, Offer, Request, Sla};
pub use class::{Class, Resources, Tier};
pub use clearing::{
    Clearing, Explanation, Match, PriceRule, Round, RoundError, check_round, clear, clearers,
    explain,
};
pub use contract::{Contract, ContractError, Contracts, Negotiation, Proposal, Side, Terms};
pub use dmu::{Rules, Verdict};
pub use ledger::{
    Accounts, Checkpoint, LedgerError, PairBalance, PairChain, Reason, Receipt, SignedCheckpoint,
    SignedReceipt, prove_balances, verify_pair,
};
pub use measure::{Uptime, UptimeOverclaimed, check_claimed_uptime};
pub use reputation::{Outcome, Reputation, reputation};
pub use settle::{
    Activation, Answer, Awards, Close, Ending, Reply, Ruling, SettleError, Settlement, Transfer,
    Usage, check_statement, close_due, meter, rule,
};
pub use signed::{
    Authored, KeyParty, Party, PartySignature, PartySigner, RecordId, SignatureError, Signed,
};
pub use witness::{Observation, witnessed, witnesses};

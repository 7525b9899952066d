//! Settlement as one node takes part in it: stakes placed with the
//! arbitrator when a contract is signed, the provider's meter of what it
//! ran, its signed statement when the contract closes, the customer's
//! answer, the arbitrator's ruling, the releases of the stakes, and the
//! accounts every node keeps from the receipts on the fabric.
//!
//! Every decision is `locus_market::settle`'s: this module only carries
//! records between nodes and keeps them. A receipt is drafted by the node
//! that asks for it (from its view of the pair's chain), half-signed, and
//! completed by the other org's node, which publishes it
//! (`mkt/l/<hash>`); a settlement is published by the node that completes
//! it (`mkt/s/<contract>`).

use std::collections::{BTreeMap, BTreeSet};

use locus_access::OrgId;
use locus_access::encoding::{decode, encode};
use locus_core::NodeId;
use locus_core::cluster::Liveness;
use locus_market::ledger::ordered;
use locus_market::settle::{self, Ending, Reply, Transfer};
use locus_market::{
    Accounts, Activation, Answer, Close, Contract, Outcome, PartySignature, Receipt, RecordId,
    Settlement, Signed, SignedReceipt, Usage,
};
use serde::{Deserialize, Serialize};

use crate::documents::{RECEIPT_PREFIX, SETTLEMENT_PREFIX};
use crate::table::{Kind, MarketTable};
use crate::{Market, MarketError, SPREAD_SECS, State, now_ms, now_secs};

/// The node-to-node route of every settlement message.
pub(crate) const SETTLEMENT_PATH: &str = "/api/v1/market/settlement";
/// A call that failed is tried again after this long.
const RETRY_SECS: u64 = 3;
/// Receipts held until the ones before them arrive, at most.
const MAX_PENDING_RECEIPTS: usize = 1024;
/// Settlements kept (for reputation and views), at most.
pub(crate) const MAX_SETTLEMENTS: usize = 4096;
/// A receipt drafted this far from the completer's clock is refused.
const RECEIPT_SKEW_SECS: u64 = 120;

/// What one node sends another about a settlement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettleMsg {
    /// Provider → customer: the usage of a closed contract.
    Statement { statement: Signed<Usage> },
    /// Customer → provider: its answer, and the receipt it signed when it
    /// countersigns and owes.
    Reply {
        reply: Signed<Reply>,
        receipt: Option<Half>,
    },
    /// Party → arbitrator: a stake to hold, or a stake to release as a
    /// settlement says.
    Escrow {
        contract: Box<Contract>,
        settlement: Option<Box<Settlement>>,
        receipt: Half,
    },
    /// Provider → customer: the readings of a covered thing it took on the
    /// customer's behalf, sealed in its log, with their proofs.
    Readings {
        contract: RecordId,
        verifier_key: String,
        bundle: Box<locus_iot::Bundle>,
    },
    /// Party → arbitrator: a statement to rule over.
    Case {
        contract: Box<Contract>,
        statement: Signed<Usage>,
        reply: Option<Signed<Reply>>,
    },
}

/// A receipt signed by one of its two orgs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Half {
    pub receipt: Receipt,
    pub signature: PartySignature,
}

/// What a node answers a settlement message.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettleAnswer {
    /// The customer's reply to a statement (JSON of
    /// `locus_market::settle::Reply`, signed).
    #[schema(value_type = Option<Object>)]
    pub reply: Option<Signed<Reply>>,
    /// A receipt signed by both orgs.
    #[schema(value_type = Option<Object>)]
    pub receipt: Option<SignedReceipt>,
    /// A receipt the customer signed, for the provider to complete.
    #[schema(value_type = Option<Object>)]
    pub half: Option<Half>,
    /// The settlement, once it is complete.
    #[schema(value_type = Option<Object>)]
    pub settlement: Option<Settlement>,
    /// Kept for later (a statement awaiting `locus contract sign`).
    pub pending: bool,
    /// Readings handed back that were new here.
    pub imported: Option<u64>,
}

/// What a user asks of a contract's settlement.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum SettleAction {
    /// Provider: close the contract now and send the statement.
    Settle,
    /// Customer: countersign the statement waiting for an answer.
    Sign,
    /// Customer: dispute it; the arbitrator rules.
    Dispute { reason: String },
}

/// The provider's meter of one contract (kept in the store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Meter {
    pub activations: Vec<Activation>,
    /// The activation running now.
    pub open: Option<Activation>,
    pub closed: Option<(Close, u64)>,
    pub statement: Option<Signed<Usage>>,
    /// When the customer's answer is due (unix seconds).
    pub answer_by: u64,
    /// The customer's reply, once it answered.
    pub reply: Option<Signed<Reply>>,
    /// When the last activation ended (unix ms), and how many times the
    /// readings taken since it began were sent back since.
    #[serde(default)]
    pub ended: Option<(u64, u8)>,
}

/// The calls a settlement retries, each at its own pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Call {
    Stake,
    Release,
    Case,
    Statement,
}

/// After an activation ends, the readings taken since it began are sent
/// back this long after (ms): once the things are home, and again in
/// case a reading was still on its way (the customer keeps each once).
const READINGS_BACK_AFTER_MS: [u64; 3] = [3_000, 10_000, 30_000];

/// Accounts as this node sees them, from every receipt it received.
#[derive(Default)]
pub(crate) struct Ledger {
    pub accounts: Accounts,
    /// Receipts ahead of their pair's chain, by (pair, seq).
    pending: BTreeMap<(OrgId, OrgId, u64), SignedReceipt>,
    known: BTreeSet<[u8; 32]>,
}

impl Ledger {
    /// Take a receipt (and any held one it unblocks). `Ok(true)` when it
    /// is new and applied, `Ok(false)` when known or held for later.
    fn take(&mut self, r: SignedReceipt) -> Result<bool, String> {
        let hash = r.hash();
        if self.known.contains(&hash) {
            return Ok(false);
        }
        let (a, b) = r.receipt.pair();
        let next = self.accounts.pair_balance(a, b).seq;
        if r.receipt.seq > next {
            r.verify().map_err(|e| e.to_string())?;
            if self.pending.len() < MAX_PENDING_RECEIPTS {
                self.pending.insert((a, b, r.receipt.seq), r);
            }
            return Ok(false);
        }
        self.accounts.apply(&r).map_err(|e| e.to_string())?;
        self.known.insert(hash);
        let mut seq = r.receipt.seq + 1;
        while let Some(p) = self.pending.remove(&(a, b, seq)) {
            let h = p.hash();
            if self.accounts.apply(&p).is_ok() {
                self.known.insert(h);
            }
            seq += 1;
        }
        Ok(true)
    }

    /// Whether a receipt for exactly this transfer is in the accounts.
    pub fn has(&self, t: &Transfer) -> bool {
        self.accounts.pair(t.from, t.to).is_some_and(|c| {
            c.receipts.iter().any(|r| {
                let r = &r.receipt;
                (r.from, r.to, r.amount, r.reason) == (t.from, t.to, t.amount, t.reason)
            })
        })
    }
}

impl State {
    /// Whether contract `id` is closed: metered to its end here, or
    /// settled anywhere.
    pub(crate) fn is_closed(&self, id: &RecordId) -> bool {
        self.settlements.contains_key(id) || self.meters.get(id).is_some_and(|m| m.closed.is_some())
    }

    /// The observations, of other orgs than the provider's, that a takeover
    /// of `c`'s customer rests on now; `None` while the customer is not
    /// dead or not witnessed enough.
    pub(crate) fn takeover_evidence(
        &self,
        c: &Contract,
        needed: usize,
        now_ms: u64,
    ) -> Option<(u64, Vec<Signed<locus_market::Observation>>)> {
        let customer = c.terms.customer;
        let Some((Liveness::Dead | Liveness::Left, since)) = self.since.get(&customer) else {
            return None;
        };
        let evidence: Vec<_> = locus_market::witnesses(
            self.observations.values(),
            customer,
            c.terms.provider_org,
            *since,
            now_ms,
        )
        .into_iter()
        .take(settle::MAX_EVIDENCE)
        .cloned()
        .collect();
        (evidence.len() >= needed).then_some((*since, evidence))
    }
}

impl Market {
    /// `org`'s reputation, per mille, from every settlement this node
    /// knows, as this node's org sees it.
    pub(crate) fn reputation_of(&self, org: OrgId) -> u16 {
        let Some(own) = self.inner.party.party().map(|p| p.org()) else {
            return locus_market::reputation::PRIOR_PERMILLE;
        };
        let outcomes: Vec<Outcome> = self.state().outcomes.values().cloned().collect();
        locus_market::reputation(own, &outcomes, now_secs())
            .get(&org)
            .map_or(locus_market::reputation::PRIOR_PERMILLE, |r| {
                r.score_permille
            })
    }

    /// Load the meters, receipts and settlements kept in the store.
    pub(crate) async fn load_settlement(&self) -> Result<(), MarketError> {
        let mut receipts = Vec::new();
        for (id, body) in self.inner.store.market(Kind::Receipt).await? {
            match SignedReceipt::from_bytes(&body) {
                Ok(r) => receipts.push(r),
                Err(e) => tracing::error!(%id, error = %e, "unreadable receipt left in the store"),
            }
        }
        receipts.sort_by_key(|r| (r.receipt.pair(), r.receipt.seq));
        {
            let mut st = self.state();
            for r in receipts {
                if let Err(e) = st.ledger.take(r) {
                    tracing::warn!(error = %e, "stored receipt not taken");
                }
            }
        }
        for (id, body) in self.inner.store.market(Kind::Meter).await? {
            match (id.parse::<RecordId>(), decode::<Meter>(&body, usize::MAX)) {
                (Ok(id), Ok(m)) => {
                    self.state().meters.insert(id, m);
                }
                _ => tracing::error!(%id, "unreadable meter left in the store"),
            }
        }
        for (id, body) in self.inner.store.market(Kind::Settlement).await? {
            match Settlement::from_bytes(&body) {
                Ok(s) => {
                    self.admit_settlement(s);
                }
                Err(e) => {
                    tracing::error!(%id, error = %e, "unreadable settlement left in the store")
                }
            }
        }
        // Republish what this node completed.
        let published: Vec<Settlement> = {
            let st = self.state();
            st.settlements
                .values()
                .filter(|s| completer(s) == self.inner.me)
                .cloned()
                .collect()
        };
        for s in published {
            self.publish_settlement(&s).await;
        }
        Ok(())
    }

    /// Keep a verified settlement in memory (for views and reputation).
    fn admit_settlement(&self, s: Settlement) -> bool {
        let id = s.contract.id();
        if self.state().settlements.contains_key(&id) {
            return false;
        }
        match s.verify(self.inner.witnesses) {
            Ok(outcome) => {
                let mut st = self.state();
                if st.settlements.len() >= MAX_SETTLEMENTS
                    && let Some((old, _)) = st.settlements.pop_first()
                {
                    st.outcomes.remove(&old);
                }
                st.outcomes.insert(id, outcome);
                st.settlements.insert(id, s);
                true
            }
            Err(e) => {
                tracing::warn!(contract = %id.short(), error = %e, "settlement refused");
                false
            }
        }
    }

    /// Store, keep and (when this node completed it) publish a settlement.
    async fn keep_settlement(&self, s: Settlement) -> Result<(), MarketError> {
        let id = s.contract.id();
        let party = {
            let t = &s.contract.terms;
            [t.customer, t.provider, t.arbitrator].contains(&self.inner.me)
        };
        if party {
            self.inner
                .store
                .put_market(Kind::Settlement, id.to_string(), s.to_bytes(), now_ms())
                .await?;
        }
        let fresh = self.admit_settlement(s.clone());
        if fresh {
            self.state().note(id, describe(&s));
            if completer(&s) == self.inner.me {
                self.publish_settlement(&s).await;
            }
        }
        Ok(())
    }

    async fn publish_settlement(&self, s: &Settlement) {
        let key = format!("{SETTLEMENT_PREFIX}{}", s.contract.id().short());
        let completed = match &s.ending {
            Ending::Countersigned(r) => r.body.at,
            Ending::Ruled(r) => r.body.at,
        };
        self.publish_until(key, &s.to_bytes(), completed.saturating_add(SPREAD_SECS))
            .await;
    }

    /// Take a receipt: the accounts, then the store; published when this
    /// node completed it.
    async fn keep_receipt(&self, r: SignedReceipt, publish: bool) -> Result<(), MarketError> {
        let fresh = self
            .state()
            .ledger
            .take(r.clone())
            .map_err(MarketError::Conflict)?;
        if !fresh {
            return Ok(());
        }
        let hash = blake3::Hash::from(r.hash()).to_hex().to_string();
        self.inner
            .store
            .put_market(Kind::Receipt, hash.clone(), r.to_bytes(), now_ms())
            .await?;
        if publish {
            let key = format!("{RECEIPT_PREFIX}{}", &hash[..16]);
            self.publish_until(key, &r.to_bytes(), now_secs().saturating_add(SPREAD_SECS))
                .await;
        }
        Ok(())
    }

    /// Receipts and settlements another node published.
    pub(crate) async fn take_published(&self, receipts: Vec<Vec<u8>>, settlements: Vec<Vec<u8>>) {
        for bytes in receipts {
            match SignedReceipt::from_bytes(&bytes) {
                Ok(r) => {
                    // Known receipts cost nothing; new ones are verified by
                    // the accounts.
                    let _ = self.keep_receipt(r, false).await;
                }
                Err(e) => tracing::debug!(error = %e, "undecodable receipt"),
            }
        }
        for bytes in settlements {
            match Settlement::from_bytes(&bytes) {
                Ok(s) => {
                    let known = self.state().settlements.contains_key(&s.contract.id());
                    if !known && let Err(e) = self.keep_settlement(s).await {
                        tracing::warn!(error = %e, "cannot keep a settlement");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "undecodable settlement"),
            }
        }
    }

    /// One step of every settlement this node takes part in: stakes to
    /// place, activations to meter, contracts to close, statements to
    /// send again or take to the arbitrator, stakes to get back.
    pub(crate) async fn settle_tick(&self) {
        let Some(party) = self.inner.party.party() else {
            return;
        };
        let me = self.inner.me;
        let my_org = party.org();
        let now = now_secs();
        let now_ms = now_ms();
        let contracts: Vec<Contract> = self
            .state()
            .contracts
            .iter()
            .map(|(_, c)| c.clone())
            .filter(|c| c.terms.customer == me || c.terms.provider == me)
            .collect();
        for c in contracts {
            let id = c.id();
            let t = &c.terms;
            let (closed, staked) = {
                let st = self.state();
                let staked = settle::stakes(&c)
                    .iter()
                    .filter(|s| s.from == my_org)
                    .all(|s| st.ledger.has(s));
                (st.is_closed(&id), staked)
            };
            if !closed && !staked && self.may_try(id, Call::Stake, now) {
                self.stake(&c).await;
            }
            if t.provider == me {
                self.meter_tick(&c, now, now_ms).await;
            }
            let settlement = self.state().settlements.get(&id).cloned();
            if let Some(s) = settlement {
                let owed: Vec<Transfer> = {
                    let st = self.state();
                    settle::releases(&s)
                        .into_iter()
                        .filter(|r| r.to == my_org && !st.ledger.has(r))
                        .collect()
                };
                if !owed.is_empty() && self.may_try(id, Call::Release, now) {
                    for r in owed {
                        self.release(&s, r).await;
                    }
                }
            }
        }
    }

    /// Whether call `what` about contract `id` may be tried at `now` (not
    /// more often than every [`RETRY_SECS`]).
    fn may_try(&self, id: RecordId, what: Call, now: u64) -> bool {
        let mut st = self.state();
        let last = st.tries.get(&(id, what)).copied();
        if last.is_some_and(|l| now < l + RETRY_SECS) {
            return false;
        }
        if st.tries.len() >= crate::MAX_WATCHED {
            st.tries.pop_first();
        }
        st.tries.insert((id, what), now);
        true
    }

    /// The provider's meter of `c`: open or close an activation as the
    /// customer's witnessed death begins or ends, close the contract when
    /// it must, and carry its statement to an end.
    async fn meter_tick(&self, c: &Contract, now: u64, now_ms: u64) {
        let id = c.id();
        let t = &c.terms;
        let (mut meter, evidence, available, requested, settled) = {
            let st = self.state();
            let settled = st.settlements.contains_key(&id);
            let meter = st.meters.get(&id).cloned().unwrap_or_default();
            let evidence = if meter.closed.is_none() && t.start <= now && now < t.end {
                st.takeover_evidence(c, self.inner.witnesses, now_ms)
            } else {
                None
            };
            let a = &st.ledger.accounts;
            let headroom = i128::from(a.credit_limit()) + i128::from(a.balance(t.customer_org));
            let available = u64::try_from(headroom.max(0))
                .unwrap_or(u64::MAX)
                .saturating_add(t.stakes.customer);
            (
                meter,
                evidence,
                available,
                st.settle_now.contains(&id),
                settled,
            )
        };
        // Whether the meter changed (and must be stored).
        let mut changed = false;
        if meter.closed.is_none() {
            match (&meter.open, evidence) {
                (None, Some((since, evidence))) => {
                    changed = true;
                    meter.open = Some(Activation {
                        from_ms: now_ms,
                        to_ms: now_ms,
                        dead_since_ms: since,
                        evidence,
                    });
                    self.state().note(
                        id,
                        format!(
                            "contract {}: active, the customer's death is witnessed",
                            id.short()
                        ),
                    );
                }
                // Still active: its end is set when it ends.
                (Some(_), Some(_)) => {}
                (Some(_), None) => {
                    changed = true;
                    if let Some(mut a) = meter.open.take() {
                        a.to_ms = now_ms;
                        meter.activations.push(a);
                        meter.ended = Some((now_ms, 0));
                    }
                    self.state()
                        .note(id, format!("contract {}: standing by again", id.short()));
                }
                (None, None) => {}
            }
            let so_far: Vec<Activation> = meter
                .activations
                .iter()
                .cloned()
                .chain(meter.open.iter().map(|a| Activation {
                    to_ms: now_ms,
                    ..a.clone()
                }))
                .collect();
            let (accrued, _) =
                settle::meter(t, id, Close::Early, now, &so_far, self.inner.witnesses);
            let close = if requested {
                Some(Close::Early)
            } else {
                settle::close_due(t, accrued.due, available, now)
            };
            if let Some(close) = close {
                changed = true;
                if let Some(mut a) = meter.open.take() {
                    a.to_ms = now_ms.min(t.end.saturating_mul(1000));
                    meter.activations.push(a);
                    meter.ended = Some((now_ms, 0));
                }
                meter.closed = Some((close, now.min(t.end)));
                self.state()
                    .note(id, format!("contract {} closed: {close}", id.short()));
            }
        }
        if let Some((close, at)) = meter.closed
            && meter.statement.is_none()
        {
            let (mut usage, _) =
                settle::meter(t, id, close, at, &meter.activations, self.inner.witnesses);
            usage.at = now;
            if let Some(s) = Signed::sign_with(usage, self.inner.party.as_ref()) {
                changed = true;
                meter.statement = Some(s);
                meter.answer_by = now + self.inner.answer_secs;
            }
        }
        let readings_due = match meter.ended {
            Some((at, sent))
                if !t.cover.things.is_empty()
                    && READINGS_BACK_AFTER_MS
                        .get(usize::from(sent))
                        .is_some_and(|after| now_ms >= at + after) =>
            {
                changed = true;
                meter.ended = Some((at, sent + 1));
                meter.activations.first().map(|a| a.from_ms)
            }
            _ => None,
        };
        if changed {
            if let Err(e) = self
                .inner
                .store
                .put_market(Kind::Meter, id.to_string(), encode(&meter), now_ms)
                .await
            {
                tracing::warn!(error = %e, "cannot store a meter");
                return;
            }
            self.state().meters.insert(id, meter.clone());
        }
        if let Some(since) = readings_due {
            let me = self.clone();
            let c = c.clone();
            tokio::spawn(async move { me.hand_readings_back(&c, since).await });
        }
        let Some(statement) = meter.statement.clone().filter(|_| !settled) else {
            return;
        };
        match &meter.reply {
            // Answered with a dispute: the arbitrator rules.
            Some(r) if r.body.answer != Answer::Countersign => {
                if self.may_try(id, Call::Case, now) {
                    self.take_to_arbitrator(c, &statement, Some(r.clone()))
                        .await;
                }
            }
            Some(_) => {}
            None if now >= meter.answer_by => {
                if self.may_try(id, Call::Case, now) {
                    self.take_to_arbitrator(c, &statement, None).await;
                }
            }
            None => {
                if self.may_try(id, Call::Statement, now) {
                    let msg = SettleMsg::Statement { statement };
                    match self.call(t.customer, &msg).await {
                        Ok(a) => self.take_answer(c, a).await,
                        Err(e) => tracing::debug!(error = %e, "statement not delivered yet"),
                    }
                }
            }
        }
    }

    /// The provider takes the customer's answer to its statement.
    async fn take_answer(&self, c: &Contract, a: SettleAnswer) {
        let Some(reply) = a.reply else {
            return; // kept by the customer for a manual answer
        };
        if let Err(e) = self.on_reply((reply, a.half)).await {
            self.state()
                .note(c.id(), format!("the customer's answer is refused: {e}"));
        }
    }

    async fn take_to_arbitrator(
        &self,
        c: &Contract,
        statement: &Signed<Usage>,
        reply: Option<Signed<Reply>>,
    ) {
        let msg = SettleMsg::Case {
            contract: Box::new(c.clone()),
            statement: statement.clone(),
            reply,
        };
        match self.call(c.terms.arbitrator, &msg).await {
            Ok(SettleAnswer {
                settlement: Some(s),
                ..
            }) => {
                if let Err(e) = self.keep_settlement(s).await {
                    tracing::warn!(error = %e, "cannot keep the ruling");
                }
            }
            Ok(_) => {}
            Err(e) => self
                .state()
                .note(c.id(), format!("cannot reach the arbitrator: {e}")),
        }
    }

    /// Provider: send the customer the readings of the covered things
    /// stored here since `since_ms`, with their proofs.
    async fn hand_readings_back(&self, c: &Contract, since_ms: u64) {
        let id = c.id();
        let (key, bundles) = match self
            .inner
            .cover
            .readings_taken(&c.terms.cover.things, since_ms)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.state().note(
                    id,
                    format!("cannot gather the readings taken for the customer: {e}"),
                );
                return;
            }
        };
        for bundle in bundles {
            let n = bundle.entries.len();
            let msg = SettleMsg::Readings {
                contract: id,
                verifier_key: key.clone(),
                bundle: Box::new(bundle),
            };
            let line = match self.call(c.terms.customer, &msg).await {
                Ok(a) => format!(
                    "{n} reading(s) taken on the customer's behalf handed back with their proofs ({} new there)",
                    a.imported.unwrap_or(0)
                ),
                Err(e) => format!("cannot hand {n} reading(s) back: {e}"),
            };
            self.state().note(id, line);
        }
    }

    /// Customer: readings the provider took on this node's behalf.
    async fn on_readings(
        &self,
        contract: RecordId,
        verifier_key: String,
        bundle: locus_iot::Bundle,
    ) -> Result<SettleAnswer, MarketError> {
        let c = self.own_contract(&contract, |c| c.terms.customer)?;
        let things: std::collections::BTreeSet<String> = bundle
            .entries
            .iter()
            .map(|e| e.reading.thing().to_owned())
            .collect();
        if let Some(other) = things.iter().find(|t| !c.terms.cover.things.contains(*t)) {
            return Err(MarketError::Invalid(format!(
                "thing {other} is not covered by contract {}",
                contract.short()
            )));
        }
        let n = bundle.entries.len();
        let new = self
            .inner
            .cover
            .take_readings(c.terms.provider, &verifier_key, bundle)
            .await
            .map_err(MarketError::Invalid)?;
        self.state().note(
            contract,
            format!(
                "the provider handed back {n} reading(s) of {} taken on this node's behalf: proofs checked, {new} new",
                things.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
        Ok(SettleAnswer {
            imported: Some(new),
            ..Default::default()
        })
    }

    /// Place this node's org's stake for `c` with its arbitrator.
    async fn stake(&self, c: &Contract) {
        let Some(party) = self.inner.party.party() else {
            return;
        };
        for s in settle::stakes(c)
            .into_iter()
            .filter(|s| s.from == party.org())
        {
            let Some(half) = self.draft(&s) else {
                return;
            };
            let msg = SettleMsg::Escrow {
                contract: Box::new(c.clone()),
                settlement: None,
                receipt: half,
            };
            self.escrow_call(c, msg, "stake held by the arbitrator")
                .await;
        }
    }

    /// Ask the arbitrator for a release the settlement calls for.
    async fn release(&self, s: &Settlement, r: Transfer) {
        let Some(half) = self.draft(&r) else {
            return;
        };
        let msg = SettleMsg::Escrow {
            contract: Box::new(s.contract.clone()),
            settlement: Some(Box::new(s.clone())),
            receipt: half,
        };
        self.escrow_call(&s.contract, msg, "stake released by the arbitrator")
            .await;
    }

    async fn escrow_call(&self, c: &Contract, msg: SettleMsg, done: &str) {
        match self.call(c.terms.arbitrator, &msg).await {
            Ok(SettleAnswer {
                receipt: Some(r), ..
            }) => {
                let what = format!("{done}: {} millicredits", r.receipt.amount);
                match self.keep_receipt(r, false).await {
                    Ok(()) => self.state().note(c.id(), what),
                    Err(e) => tracing::warn!(error = %e, "the arbitrator's receipt is refused"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "escrow call failed"),
        }
    }

    /// A receipt for transfer `t`, at the pair's next position as this
    /// node sees it, signed by this node (the payer or the payee).
    fn draft(&self, t: &Transfer) -> Option<Half> {
        let receipt =
            self.state()
                .ledger
                .accounts
                .draft(t.from, t.to, t.amount, t.reason, now_secs());
        let signature = PartySignature::sign_with(
            self.inner.party.as_ref(),
            locus_market::ledger::RECEIPT_DOMAIN,
            &receipt,
        )?;
        Some(Half { receipt, signature })
    }

    /// Complete a receipt the other org's node signed: this node signs as
    /// the other side, the accounts take it, and it is published.
    async fn complete(
        &self,
        half: Half,
        expected: &Transfer,
    ) -> Result<SignedReceipt, MarketError> {
        let r = &half.receipt;
        if (r.from, r.to, r.amount, r.reason)
            != (expected.from, expected.to, expected.amount, expected.reason)
        {
            return Err(MarketError::Invalid(format!(
                "the receipt moves {} from {} to {}, not what the settlement calls for",
                r.amount, r.from, r.to
            )));
        }
        let now = now_secs();
        if r.at.abs_diff(now) > RECEIPT_SKEW_SECS {
            return Err(MarketError::Invalid(format!(
                "the receipt is dated {}, it is {now}",
                r.at
            )));
        }
        let mine = PartySignature::sign_with(
            self.inner.party.as_ref(),
            locus_market::ledger::RECEIPT_DOMAIN,
            r,
        )
        .ok_or(MarketError::NoCertificate)?;
        let my_org = mine.party.org();
        let (by_from, by_to) = if my_org == r.from {
            (mine, half.signature.clone())
        } else {
            (half.signature.clone(), mine)
        };
        let signed = SignedReceipt {
            receipt: half.receipt,
            by_from,
            by_to,
        };
        self.keep_receipt(signed.clone(), true).await?;
        Ok(signed)
    }

    /// A settlement message from another node.
    pub async fn on_settlement(&self, msg: SettleMsg) -> Result<SettleAnswer, MarketError> {
        match msg {
            SettleMsg::Statement { statement } => self.on_statement(statement).await,
            SettleMsg::Reply { reply, receipt } => self.on_reply((reply, receipt)).await,
            SettleMsg::Escrow {
                contract,
                settlement,
                receipt,
            } => {
                self.on_escrow(*contract, settlement.map(|s| *s), receipt)
                    .await
            }
            SettleMsg::Case {
                contract,
                statement,
                reply,
            } => self.on_case(*contract, statement, reply).await,
            SettleMsg::Readings {
                contract,
                verifier_key,
                bundle,
            } => self.on_readings(contract, verifier_key, *bundle).await,
        }
    }

    /// A contract this node holds, as `role` (customer or provider).
    fn own_contract(
        &self,
        id: &RecordId,
        node: impl Fn(&Contract) -> NodeId,
    ) -> Result<Contract, MarketError> {
        let st = self.state();
        let c = st
            .contracts
            .get(id)
            .ok_or_else(|| MarketError::NotFound(format!("no contract {} here", id.short())))?;
        if node(c) != self.inner.me {
            return Err(MarketError::Invalid(format!(
                "this node is not the contract's {}",
                if node(c) == c.terms.customer {
                    "customer"
                } else {
                    "provider"
                }
            )));
        }
        Ok(c.clone())
    }

    /// Customer: a provider's statement. Countersigned or disputed at once
    /// by the rules, or kept for a manual answer.
    async fn on_statement(&self, statement: Signed<Usage>) -> Result<SettleAnswer, MarketError> {
        let c = self.own_contract(&statement.body.contract, |c| c.terms.customer)?;
        if statement.verify().is_err() {
            return Err(MarketError::Invalid(
                "the statement's signature is not the provider's".into(),
            ));
        }
        if let Some(s) = self.state().settlements.get(&c.id()) {
            return Ok(SettleAnswer {
                settlement: Some(s.clone()),
                ..Default::default()
            });
        }
        if self.inner.rules.customer.countersign == locus_market::dmu::Countersign::Manual {
            self.state().note(
                c.id(),
                format!(
                    "statement for contract {}: due {}, penalty {}; waiting for `locus contract sign` or `dispute`",
                    c.id().short(),
                    statement.body.due,
                    statement.body.penalty
                ),
            );
            self.state().awaiting.insert(c.id(), statement);
            return Ok(SettleAnswer {
                pending: true,
                ..Default::default()
            });
        }
        let answer = match settle::check_statement(&c, &statement, self.inner.witnesses) {
            Ok(()) => Answer::Countersign,
            Err(e) => Answer::Dispute {
                reason: e.to_string(),
            },
        };
        self.answer(&c, statement, answer).await
    }

    /// Customer: sign an answer to `statement` (and, when countersigning
    /// and owing, the receipt that pays); a dispute goes to the arbitrator.
    async fn answer(
        &self,
        c: &Contract,
        statement: Signed<Usage>,
        answer: Answer,
    ) -> Result<SettleAnswer, MarketError> {
        let reply = Reply {
            contract: c.id(),
            statement: statement.id(),
            customer: self.inner.me,
            customer_org: c.terms.customer_org,
            answer: answer.clone(),
            at: now_secs(),
        };
        let reply = Signed::sign_with(reply, self.inner.party.as_ref())
            .ok_or(MarketError::NoCertificate)?;
        let half = if answer == Answer::Countersign {
            let s = Settlement {
                contract: c.clone(),
                statement: statement.clone(),
                ending: Ending::Countersigned(reply.clone()),
            };
            settle::transfers(&s)
                .into_iter()
                .find(|t| t.from != c.terms.arbitrator_org && t.to != c.terms.arbitrator_org)
                .and_then(|t| self.draft(&t))
        } else {
            None
        };
        self.state().note(
            c.id(),
            match &answer {
                Answer::Countersign => format!(
                    "statement for contract {} countersigned: due {}",
                    c.id().short(),
                    statement.body.due
                ),
                Answer::Dispute { reason } => {
                    format!(
                        "statement for contract {} disputed: {reason}",
                        c.id().short()
                    )
                }
            },
        );
        self.state().awaiting.remove(&c.id());
        if answer != Answer::Countersign {
            let (me, c2, s2, r2) = (self.clone(), c.clone(), statement.clone(), reply.clone());
            tokio::spawn(async move { me.take_to_arbitrator(&c2, &s2, Some(r2)).await });
        }
        Ok(SettleAnswer {
            reply: Some(reply),
            half,
            ..Default::default()
        })
    }

    /// Provider: the customer's answer. A countersignature completes the
    /// settlement (and the receipt that pays); a dispute waits for the
    /// arbitrator.
    async fn on_reply(
        &self,
        (reply, half): (Signed<Reply>, Option<Half>),
    ) -> Result<SettleAnswer, MarketError> {
        let c = self.own_contract(&reply.body.contract, |c| c.terms.provider)?;
        let id = c.id();
        let statement = self
            .state()
            .meters
            .get(&id)
            .and_then(|m| m.statement.clone())
            .ok_or_else(|| {
                MarketError::Conflict("no statement of this contract was sent".into())
            })?;
        settle::check_reply(&c, &statement, &reply)
            .map_err(|e| MarketError::Invalid(e.to_string()))?;
        if let Some(s) = self.state().settlements.get(&id) {
            return Ok(SettleAnswer {
                settlement: Some(s.clone()),
                ..Default::default()
            });
        }
        let countersigned = reply.body.answer == Answer::Countersign;
        let (settlement, receipt) = if countersigned {
            let s = Settlement {
                contract: c.clone(),
                statement,
                ending: Ending::Countersigned(reply.clone()),
            };
            let owed = settle::transfers(&s)
                .into_iter()
                .find(|t| t.from != c.terms.arbitrator_org && t.to != c.terms.arbitrator_org);
            // The receipt first: one out of its pair's order is refused
            // (409) and nothing is kept, so the customer answers again.
            let receipt = match (owed, half) {
                (Some(t), Some(h)) => Some(self.complete(h, &t).await?),
                (Some(_), None) => {
                    return Err(MarketError::Invalid(
                        "a countersignature without the receipt that pays".into(),
                    ));
                }
                (None, _) => None,
            };
            (Some(s), receipt)
        } else {
            (None, None)
        };
        let meter = {
            let mut st = self.state();
            st.meters.get_mut(&id).map(|m| {
                m.reply = Some(reply.clone());
                m.clone()
            })
        };
        if let Some(m) = meter {
            self.inner
                .store
                .put_market(Kind::Meter, id.to_string(), encode(&m), now_ms())
                .await?;
        }
        let Some(s) = settlement else {
            self.state().note(
                id,
                format!(
                    "contract {}: the customer disputes; the arbitrator rules",
                    id.short()
                ),
            );
            return Ok(SettleAnswer::default());
        };
        self.keep_settlement(s.clone()).await?;
        Ok(SettleAnswer {
            receipt,
            settlement: Some(s),
            ..Default::default()
        })
    }

    /// Arbitrator: a stake to hold or release.
    async fn on_escrow(
        &self,
        contract: Contract,
        settlement: Option<Settlement>,
        half: Half,
    ) -> Result<SettleAnswer, MarketError> {
        let id = self.arbitrated(&contract)?;
        let r = &half.receipt;
        let calls_for: Vec<Transfer> = match &settlement {
            None => settle::stakes(&contract),
            Some(s) => {
                if s.contract.id() != id {
                    return Err(MarketError::Invalid(
                        "the settlement is of another contract".into(),
                    ));
                }
                s.verify(self.inner.witnesses)
                    .map_err(|e| MarketError::Invalid(format!("settlement: {e}")))?;
                settle::releases(s)
            }
        };
        let t = calls_for
            .into_iter()
            .find(|t| (t.from, t.to, t.amount, t.reason) == (r.from, r.to, r.amount, r.reason))
            .ok_or_else(|| {
                MarketError::Invalid(
                    "the contract or its settlement does not call for this receipt".into(),
                )
            })?;
        if self.state().ledger.has(&t) {
            return Err(MarketError::Conflict(
                "this transfer is already made".into(),
            ));
        }
        if let Some(s) = settlement {
            self.keep_settlement(s).await?;
        }
        let receipt = self.complete(half, &t).await?;
        Ok(SettleAnswer {
            receipt: Some(receipt),
            ..Default::default()
        })
    }

    /// Arbitrator: rule over a statement (once per contract).
    async fn on_case(
        &self,
        contract: Contract,
        statement: Signed<Usage>,
        reply: Option<Signed<Reply>>,
    ) -> Result<SettleAnswer, MarketError> {
        let id = self.arbitrated(&contract)?;
        if let Some(s) = self.state().settlements.get(&id) {
            return Ok(SettleAnswer {
                settlement: Some(s.clone()),
                ..Default::default()
            });
        }
        if statement.body.contract != id {
            return Err(MarketError::Invalid(
                "the statement is of another contract".into(),
            ));
        }
        if statement.verify().is_err() {
            return Err(MarketError::Invalid(
                "the statement's signature is not the provider's".into(),
            ));
        }
        let ruling = settle::rule(
            &contract,
            &statement,
            reply.as_ref(),
            self.inner.witnesses,
            (self.inner.me, now_secs()),
        );
        let ruling = Signed::sign_with(ruling, self.inner.party.as_ref())
            .ok_or(MarketError::NoCertificate)?;
        let s = Settlement {
            contract,
            statement,
            ending: Ending::Ruled(ruling),
        };
        self.keep_settlement(s.clone()).await?;
        Ok(SettleAnswer {
            settlement: Some(s),
            ..Default::default()
        })
    }

    /// The id of a contract this node arbitrates (verified).
    fn arbitrated(&self, c: &Contract) -> Result<RecordId, MarketError> {
        let id = c
            .verify()
            .map_err(|e| MarketError::Invalid(format!("contract: {e}")))?;
        if c.terms.arbitrator != self.inner.me {
            return Err(MarketError::Invalid(format!(
                "this node is not the arbitrator of contract {}",
                id.short()
            )));
        }
        Ok(id)
    }

    /// A user's action on a contract's settlement.
    pub async fn settle_action(
        &self,
        id: &str,
        action: SettleAction,
    ) -> Result<crate::ContractView, MarketError> {
        let c = self.find_contract(id)?;
        let cid = c.id();
        match action {
            SettleAction::Settle => {
                if c.terms.provider != self.inner.me {
                    return Err(MarketError::Conflict(
                        "only the provider settles a contract early (it meters it)".into(),
                    ));
                }
                if self.state().is_closed(&cid) {
                    return Err(MarketError::Conflict(format!(
                        "contract {} is already closed",
                        cid.short()
                    )));
                }
                self.state().settle_now.insert(cid);
                self.meter_tick(&c, now_secs(), now_ms()).await;
            }
            SettleAction::Sign | SettleAction::Dispute { .. } => {
                if c.terms.customer != self.inner.me {
                    return Err(MarketError::Conflict(
                        "only the customer answers a statement".into(),
                    ));
                }
                let statement = self.state().awaiting.get(&cid).cloned().ok_or_else(|| {
                    MarketError::Conflict(format!(
                        "no statement of contract {} awaits an answer",
                        cid.short()
                    ))
                })?;
                let answer = match action {
                    SettleAction::Dispute { reason } => {
                        if reason.is_empty() || reason.len() > settle::MAX_REASON {
                            return Err(MarketError::Invalid(format!(
                                "reason: 1 to {} bytes",
                                settle::MAX_REASON
                            )));
                        }
                        Answer::Dispute { reason }
                    }
                    _ => Answer::Countersign,
                };
                let a = self.answer(&c, statement.clone(), answer).await?;
                let msg = SettleMsg::Reply {
                    reply: a.reply.ok_or(MarketError::NoCertificate)?,
                    receipt: a.half,
                };
                let answer = match self.call(c.terms.provider, &msg).await {
                    Ok(a) => a,
                    Err(e) => {
                        // Still this node's to answer: try again later.
                        self.state().awaiting.insert(cid, statement);
                        return Err(MarketError::Conflict(format!(
                            "the provider did not take the answer: {e}"
                        )));
                    }
                };
                if let Some(s) = answer.settlement {
                    self.keep_settlement(s).await?;
                }
                if let Some(r) = answer.receipt {
                    self.keep_receipt(r, false).await?;
                }
            }
        }
        self.contract(&cid.to_string())
    }

    /// Call another node's settlement route, signed.
    async fn call(&self, node: NodeId, msg: &SettleMsg) -> Result<SettleAnswer, String> {
        let body = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        let text = self.call_node(node, SETTLEMENT_PATH, body).await?;
        serde_json::from_str(&text).map_err(|e| format!("bad answer: {e}"))
    }
}

/// The node that completed a settlement (and publishes it).
fn completer(s: &Settlement) -> NodeId {
    match &s.ending {
        Ending::Countersigned(_) => s.contract.terms.provider,
        Ending::Ruled(r) => r.body.arbitrator,
    }
}

/// One line about a settlement.
pub(crate) fn describe(s: &Settlement) -> String {
    let u = &s.statement.body;
    match &s.ending {
        Ending::Countersigned(_) => format!(
            "contract {} settled: {} s standby, {} s active, due {}, penalty {}, countersigned",
            s.contract.id().short(),
            u.standby_secs,
            u.active_secs,
            u.due,
            u.penalty
        ),
        Ending::Ruled(r) => format!(
            "contract {} settled by the arbitrator: due {}, penalty {}, lost by org {}",
            s.contract.id().short(),
            r.body.due,
            r.body.penalty,
            r.body.lost_by
        ),
    }
}

/// Pairs of this node's org, with the other org, for the account view.
pub(crate) fn pairs_of(accounts: &Accounts, org: OrgId) -> Vec<(OrgId, i64, u64)> {
    accounts
        .chains()
        .filter_map(|c| {
            let first = c.receipts.first()?;
            let (a, b) = ordered(first.receipt.from, first.receipt.to);
            let other = if a == org {
                b
            } else if b == org {
                a
            } else {
                return None;
            };
            let p = accounts.pair_balance(a, b);
            Some((other, p.balance_of(org).unwrap_or(0), p.seq))
        })
        .collect()
}

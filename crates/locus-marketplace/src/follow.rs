//! From the fabric to the book: each owner's market records, re-read
//! when one of them changes, checked, and taken or dropped.

use std::collections::{BTreeMap, HashMap};

use locus_core::NodeId;
use std::time::Instant;

use locus_market::witness::MAX_OBSERVATION_BYTES;
use locus_market::{
    Contract, Entry, Observation, RecordId, Round, RoundError, Signed, check_round,
};

use crate::documents::{
    self, CONTRACT_PREFIX, ENTRY_PREFIX, OBSERVATION_PREFIX, RECEIPT_PREFIX, ROUND_KEY,
    SETTLEMENT_PREFIX,
};
use crate::{
    Held, MAX_ROUNDS, MAX_WATCHED, Market, ROUND_WAIT, SETTLE_SECS, Seen, State, now_secs,
};

/// Largest signed round read from the fabric.
const MAX_ROUND_BYTES: usize = documents::CHUNK * documents::MAX_CHUNKS;

impl Market {
    /// Read `owner`'s market records again and take what changed.
    pub(crate) async fn rescan(&self, owner: NodeId) {
        if owner == self.inner.me {
            return;
        }
        let Ok(records) = self.inner.fabric.records_of(owner).await else {
            return;
        };
        let records: BTreeMap<String, Vec<u8>> =
            records.into_iter().map(|(k, _, v)| (k, v)).collect();
        let now = now_secs();
        let mut entries = BTreeMap::new();
        for (key, bytes) in documents::assemble(&records, ENTRY_PREFIX) {
            let e = match Entry::from_bytes(&bytes) {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(%key, %owner, error = %e, "undecodable market record");
                    continue;
                }
            };
            if e.author() != owner {
                tracing::debug!(%key, author = %e.author(), %owner, "a market record republished by another node; ignored");
                continue;
            }
            // A record already taken was checked then (its id is the hash
            // of these very bytes): only new ones pay for the signatures.
            let id = e.id();
            let taken = self.state().book.get(&id).is_some_and(|h| h.owner == owner);
            if !taken && let Err(err) = e.check(now) {
                tracing::debug!(%key, %owner, error = %err, "market record refused");
                continue;
            }
            entries.insert(id, e);
        }
        {
            let mut st = self.state();
            st.book
                .retain(|id, h| h.owner != owner || entries.contains_key(id));
            for (id, entry) in entries {
                st.book.entry(id).or_insert(Held { entry, owner });
            }
        }
        for (_, bytes) in documents::assemble(&records, ROUND_KEY) {
            match Signed::<Round>::from_bytes(&bytes, MAX_ROUND_BYTES) {
                Ok(r) if r.body.clearer == owner => self.take_round(r),
                Ok(_) => {}
                Err(e) => tracing::debug!(%owner, error = %e, "undecodable round"),
            }
        }
        let mut published = Vec::new();
        for (key, bytes) in documents::assemble(&records, CONTRACT_PREFIX) {
            match Contract::from_bytes(&bytes) {
                Ok(c) => published.push(c),
                Err(e) => tracing::debug!(%key, error = %e, "undecodable contract"),
            }
        }
        self.take_published_contracts(published).await;
        let mut seen = BTreeMap::new();
        for (key, bytes) in documents::assemble(&records, OBSERVATION_PREFIX) {
            match Signed::<Observation>::from_bytes(&bytes, MAX_OBSERVATION_BYTES) {
                Ok(o) if o.body.observer == owner => {
                    seen.insert((owner, o.body.subject), o);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(%key, error = %e, "undecodable observation"),
            }
        }
        {
            let mut st = self.state();
            st.observations
                .retain(|(observer, _), _| *observer != owner);
            st.observations.extend(seen);
        }
        let receipts = documents::assemble(&records, RECEIPT_PREFIX)
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        let settlements = documents::assemble(&records, SETTLEMENT_PREFIX)
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        self.take_published(receipts, settlements).await;
    }

    /// Contracts another node published. Those of other pairs are
    /// watched, so this node can witness for them: the new ones are
    /// checked together. One naming this node is kept when this node
    /// arbitrates it (or is a party and lost it).
    async fn take_published_contracts(&self, contracts: Vec<Contract>) {
        let me = self.inner.me;
        let (mine, others): (Vec<Contract>, Vec<Contract>) = contracts.into_iter().partition(|c| {
            let t = &c.terms;
            [t.arbitrator, t.customer, t.provider].contains(&me)
        });
        let new: Vec<Contract> = {
            let st = self.state();
            others
                .into_iter()
                .filter(|c| !st.watched.contains_key(&c.id()))
                .collect()
        };
        if !new.is_empty() {
            // Checked without holding the state; a rescan running at the
            // same time checks with a verifier of its own.
            let mut verifier = std::mem::take(&mut self.state().verifier);
            let checked = verifier.verify_many(&new);
            let mut st = self.state();
            st.verifier = verifier;
            for (c, checked) in new.into_iter().zip(checked) {
                match checked {
                    Ok(id) => {
                        if st.watched.len() >= MAX_WATCHED {
                            st.watched.pop_first();
                        }
                        st.watched.insert(id, c);
                    }
                    Err(e) => {
                        tracing::debug!(contract = %c.id().short(), error = %e, "published contract refused")
                    }
                }
            }
        }
        for c in mine {
            self.take_published_contract(c).await;
        }
    }

    /// A published contract naming this node: kept when this node
    /// arbitrates it (or is a party and lost it).
    async fn take_published_contract(&self, c: Contract) {
        let me = self.inner.me;
        let t = &c.terms;
        let known = self.state().contracts.get(&c.id()).is_some();
        if known {
            return;
        }
        match self.keep_contract(&c).await {
            Ok(id) => {
                let role = if t.arbitrator == me {
                    "arbitrator"
                } else {
                    "party"
                };
                self.state().note(
                    t.request,
                    format!("contract {} taken from the fabric as {role}", id.short()),
                );
            }
            Err(e) => tracing::warn!(error = %e, "a contract naming this node refused"),
        }
    }

    /// A signed round: recomputed over the records this node holds; acted
    /// on only when it checks. One that lists records not here yet is
    /// kept and checked again (see [`Market::recheck`]).
    pub(crate) fn take_round(&self, signed: Signed<Round>) {
        let number = signed.body.number;
        let seen = {
            let st = self.state();
            if st.rounds.iter().any(|s| {
                s.signed.body.number == number && s.signed.body.clearer == signed.body.clearer
            }) {
                return;
            }
            check(&st, signed)
        };
        let seen = {
            let mut st = self.state();
            if st.rounds.len() >= MAX_ROUNDS {
                st.rounds.pop_front();
            }
            st.rounds.push_back(seen.clone());
            seen
        };
        self.after_check(&seen);
    }

    /// Check again the rounds that listed records this node did not hold.
    pub(crate) fn recheck(&self) {
        let now = Instant::now();
        let checked: Vec<Seen> = {
            let mut st = self.state();
            let waiting: Vec<usize> = st
                .rounds
                .iter()
                .enumerate()
                .filter(|(_, s)| s.retry_until.is_some_and(|t| t > now))
                .map(|(i, _)| i)
                .collect();
            let mut out = Vec::new();
            for i in waiting {
                let again = check(&st, st.rounds[i].signed.clone());
                if again.verdict.is_ok() || again.retry_until.is_none() {
                    out.push(again.clone());
                }
                let retry_until = st.rounds[i].retry_until;
                st.rounds[i] = Seen {
                    retry_until: again.retry_until.and(retry_until),
                    ..again
                };
            }
            out
        };
        for seen in checked {
            self.after_check(&seen);
        }
    }

    fn after_check(&self, seen: &Seen) {
        match &seen.verdict {
            Ok(()) => self.act(seen),
            Err(e) if seen.retry_until.is_none() => {
                tracing::warn!(round = seen.signed.body.number, clearer = %seen.signed.body.clearer, "round refused: {e}");
            }
            Err(_) => {}
        }
    }
}

/// Check a round against the records held now.
fn check(st: &State, signed: Signed<Round>) -> Seen {
    // The records of live authors, borrowed: only the round's own are
    // cloned, into what is kept of it.
    let known: HashMap<RecordId, &Entry> = st
        .book
        .iter()
        .filter(|(_, h)| st.alive.contains(&h.owner))
        .map(|(id, h)| (*id, &h.entry))
        .collect();
    let verdict = check_round(&signed, &known, SETTLE_SECS);
    let retry_until = matches!(verdict, Err(RoundError::UnknownRecord { .. }))
        .then(|| Instant::now() + ROUND_WAIT);
    let entries = signed
        .body
        .book
        .iter()
        .filter_map(|id| known.get(id).map(|e| (*e).clone()))
        .collect();
    Seen {
        signed,
        verdict: verdict.map_err(|e| e.to_string()),
        entries,
        retry_until,
    }
}

//! Standing by: which node a contract names to take a customer's work
//! over, when the customer's death is witnessed enough for it to act,
//! and when the work goes back. This node also witnesses: it signs what
//! it sees of every customer under a contract it knows.

use locus_core::NodeId;
use locus_core::cluster::Liveness;
use locus_core::workload::WorkloadSummary;
use locus_market::{Contract, Observation, Signed};

use crate::documents::{self, OBSERVATION_PREFIX};
use crate::{HAND_BACK_AFTER_MS, Market, OBSERVATION_REFRESH_SECS, State, now_ms, now_secs};

/// Whether contract `c` covers workload `w` (at any time): by its id, which
/// the customer pinned when it asked, so a provider's own workload of the
/// same name is never taken for the customer's.
fn covers(c: &Contract, w: &WorkloadSummary) -> bool {
    c.terms.cover.workloads.contains(&w.id.to_string())
}

/// Whether contract `c` covers thing `name` (at any time).
fn covers_thing(c: &Contract, name: &str) -> bool {
    c.terms.cover.things.contains(name)
}

/// Whether contract `c` is in force at `now` (its window; not closed).
fn in_force(st: &State, c: &Contract, now: u64) -> bool {
    c.terms.start <= now && now < c.terms.end && !st.is_closed(&c.id())
}

impl State {
    /// Every contract this node knows: its own and the watched ones.
    fn all_contracts(&self) -> impl Iterator<Item = &Contract> {
        self.contracts
            .iter()
            .map(|(_, c)| c)
            .chain(self.watched.values())
    }
}

impl Market {
    /// The standby of workload copy `w`: the provider of a contract in
    /// force covering it with `w`'s owner as customer; `witnessed` only on
    /// that provider, once enough nodes of other orgs signed the death.
    pub fn standby(&self, w: &WorkloadSummary) -> Option<locus_sched::Standby> {
        self.standby_where(w.owner, |c| covers(c, w))
    }

    /// The standby of thing `name` managed by `manager`, as for workloads.
    pub fn thing_standby(&self, manager: NodeId, name: &str) -> Option<locus_sched::Standby> {
        self.standby_where(manager, |c| covers_thing(c, name))
    }

    fn standby_where(
        &self,
        customer: NodeId,
        covered: impl Fn(&Contract) -> bool,
    ) -> Option<locus_sched::Standby> {
        let now = now_secs();
        let st = self.state();
        let c = st
            .all_contracts()
            .find(|c| c.terms.customer == customer && covered(c) && in_force(&st, c, now))?;
        let provider = c.terms.provider;
        let witnessed = provider == self.inner.me
            && st
                .takeover_evidence(c, self.inner.witnesses, now_ms())
                .is_some();
        Some(locus_sched::Standby {
            node: provider,
            witnessed,
        })
    }

    /// The customer to give `w` (owned here) back to: a contract names
    /// this node its provider for `w`, and the customer has been alive
    /// again for [`HAND_BACK_AFTER_MS`], or the contract is no longer in
    /// force (ended, closed: no lease outlives its contract).
    pub fn hand_back(&self, w: &WorkloadSummary) -> Option<NodeId> {
        if w.owner != self.inner.me {
            return None;
        }
        self.hand_back_where(|c| covers(c, w))
    }

    /// The customer to give thing `name` (managed here) back to.
    pub fn thing_hand_back(&self, name: &str) -> Option<NodeId> {
        self.hand_back_where(|c| covers_thing(c, name))
    }

    fn hand_back_where(&self, covered: impl Fn(&Contract) -> bool) -> Option<NodeId> {
        let now = now_secs();
        let st = self.state();
        let mine = || {
            st.contracts
                .iter()
                .map(|(_, c)| c)
                .filter(|c| c.terms.provider == self.inner.me && covered(c))
        };
        // A contract in force decides; only when none is does an ended or
        // closed one send the work home.
        let c = mine()
            .find(|c| in_force(&st, c, now))
            .or_else(|| mine().next())?;
        if !in_force(&st, c, now) {
            return Some(c.terms.customer);
        }
        match st.since.get(&c.terms.customer) {
            Some((Liveness::Alive, since))
                if now_ms().saturating_sub(*since) >= HAND_BACK_AFTER_MS =>
            {
                Some(c.terms.customer)
            }
            _ => None,
        }
    }

    /// Sign and publish what this node sees of each customer under a
    /// contract in force: dead (an observation) or not (none).
    pub(crate) async fn observe(&self) {
        let now = now_secs();
        let Some(party) = self.inner.party.party() else {
            return;
        };
        let (publish, withdraw) = {
            let st = self.state();
            let customers: std::collections::BTreeSet<NodeId> = st
                .all_contracts()
                .filter(|c| c.terms.start <= now && now < c.terms.end)
                .map(|c| c.terms.customer)
                .filter(|c| *c != self.inner.me)
                .collect();
            let mut publish = Vec::new();
            for c in &customers {
                if let Some((Liveness::Dead | Liveness::Left, since)) = st.since.get(c)
                    && st
                        .observed
                        .get(c)
                        .is_none_or(|(_, at)| now >= at + OBSERVATION_REFRESH_SECS)
                {
                    publish.push((*c, *since));
                }
            }
            let withdraw: Vec<(NodeId, usize)> = st
                .observed
                .iter()
                .filter(|(c, _)| {
                    !customers.contains(c)
                        || !matches!(st.since.get(c), Some((Liveness::Dead | Liveness::Left, _)))
                })
                .map(|(c, (n, _))| (*c, *n))
                .collect();
            (publish, withdraw)
        };
        for (subject, since) in publish {
            let o = Observation {
                observer: self.inner.me,
                observer_org: party.org(),
                subject,
                dead_since_ms: since,
                at: now,
            };
            let Some(signed) = Signed::sign_with(o, self.inner.party.as_ref()) else {
                return;
            };
            let key = format!("{OBSERVATION_PREFIX}{subject}");
            let old = self.state().observed.get(&subject).map_or(0, |(n, _)| *n);
            if let Some(n) =
                documents::publish(&self.inner.fabric, &key, &signed.to_bytes(), old).await
            {
                if old == 0 {
                    tracing::info!(%subject, "witnessed a customer's death");
                }
                let mut st = self.state();
                st.observed.insert(subject, (n, now));
                st.observations.insert((self.inner.me, subject), signed);
            }
        }
        for (subject, chunks) in withdraw {
            documents::unpublish(
                &self.inner.fabric,
                &format!("{OBSERVATION_PREFIX}{subject}"),
                chunks,
            )
            .await;
            let mut st = self.state();
            st.observed.remove(&subject);
            st.observations.remove(&(self.inner.me, subject));
        }
    }
}

//! Witnessed failures: a provider takes a customer's work over only when
//! nodes of orgs other than its own have signed that they see the
//! customer dead, so a provider cannot invent a failure to bill for it.
//!
//! An [`Observation`] is a node's signed statement "I see node S dead
//! since T". [`witnessed`] counts the distinct observers that are not of
//! the provider's org, not the subject itself, and observed it recently
//! enough to be about the failure at hand.

use std::collections::BTreeSet;

use locus_access::OrgId;
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::signed::{Authored, Signed};

/// Domain of an observer's signature.
pub const OBSERVATION_DOMAIN: &[u8] = b"locus/market/observation/v1\0";
/// Largest encoded observation accepted.
pub const MAX_OBSERVATION_BYTES: usize = 2048;
/// Witnesses a takeover needs unless the contract's node says otherwise.
pub const DEFAULT_WITNESSES: usize = 2;
/// An observation older than this, at the time it is counted, is stale
/// (observers sign theirs again while the subject stays dead).
pub const MAX_OBSERVATION_AGE_MS: u64 = 60_000;
/// Observers detect a death at different times: one that saw it up to
/// this much earlier than the provider still speaks of the same failure.
pub const DETECTION_SKEW_MS: u64 = 30_000;

/// One node's statement that it sees another dead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub observer: NodeId,
    pub observer_org: OrgId,
    pub subject: NodeId,
    /// Since when the observer's failure detector says dead (unix ms).
    pub dead_since_ms: u64,
    /// When it signed (unix seconds).
    pub at: u64,
}

impl Authored for Observation {
    const DOMAIN: &'static [u8] = OBSERVATION_DOMAIN;
    fn author(&self) -> NodeId {
        self.observer
    }
    fn author_org(&self) -> OrgId {
        self.observer_org
    }
    fn signed_at(&self) -> u64 {
        self.at
    }
}

/// Whether `subject`'s death is witnessed for a takeover by a node of
/// `provider_org` at `now_ms`: at least `needed` distinct observers, none
/// of the provider's org nor the subject, each with a valid signature and
/// an observation at most [`MAX_OBSERVATION_AGE_MS`] old, of a death since
/// `since_ms` (less [`DETECTION_SKEW_MS`]) or later: the failure at hand,
/// not an earlier one.
pub fn witnessed<'a>(
    observations: impl IntoIterator<Item = &'a Signed<Observation>>,
    subject: NodeId,
    provider_org: OrgId,
    since_ms: u64,
    needed: usize,
    now_ms: u64,
) -> bool {
    witnesses(observations, subject, provider_org, since_ms, now_ms).len() >= needed
}

/// The observations that count for a takeover of `subject` by a node of
/// `provider_org` at `now_ms` (see [`witnessed`]): one per observer, the
/// first valid one of each, in the order given.
pub fn witnesses<'a>(
    observations: impl IntoIterator<Item = &'a Signed<Observation>>,
    subject: NodeId,
    provider_org: OrgId,
    since_ms: u64,
    now_ms: u64,
) -> Vec<&'a Signed<Observation>> {
    let mut observers = BTreeSet::new();
    let mut counted = Vec::new();
    for o in observations {
        let b = &o.body;
        if b.subject != subject
            || b.observer == subject
            || b.observer_org == provider_org
            || b.dead_since_ms.saturating_add(DETECTION_SKEW_MS) < since_ms
            || now_ms.saturating_sub(b.at.saturating_mul(1000)) > MAX_OBSERVATION_AGE_MS
            || observers.contains(&b.observer)
            || o.verify().is_err()
        {
            continue;
        }
        observers.insert(b.observer);
        counted.push(o);
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::testing::{TestNode, node};

    fn seen(by: &TestNode, subject: NodeId, since: u64, at: u64) -> Signed<Observation> {
        Signed::sign(
            Observation {
                observer: by.node(),
                observer_org: by.org(),
                subject,
                dead_since_ms: since,
                at,
            },
            by.party.clone(),
            &by.key,
        )
    }

    #[test]
    fn a_provider_cannot_witness_for_itself() {
        let customer = node(1, 1);
        let (p1, p2) = (node(2, 1), node(2, 2));
        let (c1, c2) = (node(3, 1), node(3, 2));
        let s = customer.node();
        let now = 1_000_000;
        let by_provider = [seen(&p1, s, 900_000, 990), seen(&p2, s, 900_000, 990)];
        assert!(
            !witnessed(&by_provider, s, p1.org(), 900_000, 2, now),
            "the provider's own org"
        );
        let by_third = [seen(&c1, s, 900_000, 990), seen(&c2, s, 900_000, 990)];
        assert!(witnessed(&by_third, s, p1.org(), 900_000, 2, now));
        assert!(
            !witnessed(&by_third[..1], s, p1.org(), 900_000, 2, now),
            "one witness is not two"
        );
        // The same observer twice counts once.
        let twice = [seen(&c1, s, 900_000, 990), seen(&c1, s, 900_001, 991)];
        assert!(!witnessed(&twice, s, p1.org(), 900_000, 2, now));
        // Observers that detected it a little earlier than the provider
        // still count; an earlier failure or a stale statement does not.
        assert!(witnessed(&by_third, s, p1.org(), 910_000, 2, now));
        assert!(!witnessed(&by_third, s, p1.org(), 950_000, 2, now));
        assert!(!witnessed(
            &by_third,
            s,
            p1.org(),
            900_000,
            2,
            now + 120_000
        ));
        // A forged statement: signed by c1 in c2's name.
        let mut forged = seen(&c1, s, 900_000, 990);
        forged.body.observer = c2.node();
        assert!(!witnessed(
            &[seen(&c1, s, 900_000, 990), forged],
            s,
            p1.org(),
            900_000,
            2,
            now
        ));
        // The subject cannot witness its own death.
        assert!(!witnessed(
            &[seen(&customer, s, 900_000, 990), seen(&c1, s, 900_000, 990)],
            s,
            p1.org(),
            900_000,
            2,
            now
        ));
    }
}

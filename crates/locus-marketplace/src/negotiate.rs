//! Negotiation: the customer proposes the terms of a checked match, the
//! provider finds the same match, applies its rules and countersigns.
//! A refusal re-lists the request without that provider's org, so the
//! next round can match it elsewhere; a provider that cannot answer yet
//! (the round has not reached it) is proposed to again in a later round.
//! A provider whose rules allow less than the terms ask (a slower
//! handover, a smaller penalty, a shorter window) counters with the terms
//! moved to its limits; the customer's rules take the counter, proposed
//! back and countersigned, or walk away as from a refusal.

use std::time::{Duration, Instant};

use locus_market::contract::{Negotiation, Proposal, Side, Terms, arbitrator};
use locus_market::dmu::{ProviderView, Response};
use locus_market::{Contract, Entry, Match, RecordId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{MAX_NOT_YET, Market, MarketError, ROUND_WAIT, Seen, now_ms, now_secs};

/// The provider's answer to a proposal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Answer {
    /// The contract, countersigned (JSON of `locus_market::Contract`).
    #[schema(value_type = Object)]
    pub contract: Option<Contract>,
    /// Why the provider does not sign.
    pub rejected: Option<String>,
    /// The refusal holds for now only: the round had not reached the
    /// provider, or its offer was in another negotiation. The customer
    /// proposes again in a later round instead of re-listing without the
    /// provider's org.
    #[serde(default)]
    pub not_yet: bool,
    /// The provider's counter-proposal (JSON of
    /// `locus_market::Proposal`): terms it signs, moved to its rules'
    /// limits. Proposed back by the customer, it is countersigned.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub counter: Option<Proposal>,
}

impl Answer {
    fn refused(why: String) -> Answer {
        Answer {
            contract: None,
            rejected: Some(why),
            not_yet: false,
            counter: None,
        }
    }

    fn not_yet(why: String) -> Answer {
        Answer {
            contract: None,
            rejected: Some(why),
            not_yet: true,
            counter: None,
        }
    }
}

const PROPOSAL_PATH: &str = "/api/v1/market/proposals";

impl Market {
    /// Act on a checked round: propose every match of one of our requests
    /// that is not already being negotiated.
    pub(crate) fn act(&self, seen: &Seen) {
        let mine: Vec<Match> = {
            let mut st = self.state();
            let ours: Vec<Match> = seen
                .signed
                .body
                .matches
                .iter()
                .filter(|m| st.mine.contains_key(&m.request) && !st.busy.contains(&m.request))
                .cloned()
                .collect();
            for m in &ours {
                st.busy.insert(m.request);
            }
            ours
        };
        for m in mine {
            let me = self.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let request = m.request;
                me.propose(&seen, &m).await;
                me.state().busy.remove(&request);
            });
        }
    }

    /// The customer's side of one match.
    async fn propose(&self, seen: &Seen, m: &Match) {
        let round = &seen.signed.body;
        let find = |id: &RecordId| seen.entries.iter().find(|e| e.id() == *id).cloned();
        let (Some(Entry::Request(request)), Some(Entry::Offer(offer))) =
            (find(&m.request), find(&m.offer))
        else {
            return;
        };
        let candidates = seen.entries.iter().map(|e| (e.author(), e.org()));
        let Some(arb) = arbitrator(
            &m.request,
            &m.offer,
            request.body.org,
            offer.body.org,
            candidates,
        ) else {
            self.state().note(
                m.request,
                format!("round {}: matched offer {}, but no node of a third org is in the round's book to arbitrate", round.number, m.offer.short()),
            );
            return;
        };
        // The offer's uptime against what this node saw of its provider.
        let nodes = self.inner.fabric.nodes().await;
        let provider = nodes.iter().find(|n| n.id == offer.body.provider);
        let transitions = provider.map_or(&[][..], |n| &n.transitions[..]);
        if let Err(e) = locus_market::check_claimed_uptime(&offer.body, transitions, now_ms()) {
            self.relist(
                m.request,
                offer.body.org,
                format!(
                    "round {}: offer {} is refused: {e}",
                    round.number,
                    m.offer.short()
                ),
            )
            .await;
            return;
        }
        let terms = Terms::from_match(round.number, m, &request.body, &offer.body, arb, now_secs());
        let view = ProviderView {
            reputation: self.reputation_of(offer.body.org),
            rtt_ms: self.rtt_ms_to(&nodes, provider),
            renewable: offer.body.energy.renewable(),
        };
        let verdict = self.inner.rules.customer.judge(&terms, &view);
        if !verdict.accept {
            let why = verdict.refusal().unwrap_or_default();
            self.relist(
                m.request,
                offer.body.org,
                format!(
                    "round {}: this node's rules refuse offer {} ({why})",
                    round.number,
                    m.offer.short()
                ),
            )
            .await;
            return;
        }
        let Some(proposal) = Proposal::sign_with(terms, Side::Customer, self.inner.party.as_ref())
        else {
            return;
        };
        let mut proposal = proposal;
        let mut answer = self.call_provider(offer.body.provider, &proposal).await;
        if let Ok(Answer {
            counter: Some(counter),
            ..
        }) = &answer
        {
            let change = describe_counter(&proposal.terms, &counter.terms);
            match self.take_counter(&proposal, counter, &view) {
                Ok(back) => {
                    self.state().note(
                        m.request,
                        format!(
                            "round {}: provider {} counters ({change}); this node's rules take it",
                            round.number, offer.body.provider
                        ),
                    );
                    proposal = back;
                    answer = self.call_provider(offer.body.provider, &proposal).await;
                }
                Err(why) => {
                    self.relist(
                        m.request,
                        offer.body.org,
                        format!(
                            "round {}: provider {} counters ({change}), and this node's rules refuse: {why}",
                            round.number, offer.body.provider
                        ),
                    )
                    .await;
                    return;
                }
            }
        }
        match answer {
            Ok(Answer {
                contract: Some(c), ..
            }) if c.terms == proposal.terms => match self.keep_contract(&c).await {
                Ok(id) => {
                    self.state().note(
                        m.request,
                        format!(
                            "round {}: contract {} signed with provider {} (org {}) at {} per unit-hour",
                            round.number,
                            id.short(),
                            offer.body.provider,
                            offer.body.org,
                            c.terms.buyer_pays
                        ),
                    );
                    if let Err(e) = self.withdraw_entry(m.request).await {
                        tracing::warn!(error = %e, "cannot withdraw a contracted request");
                    }
                }
                Err(e) => self.state().note(
                    m.request,
                    format!("the provider's contract is not kept: {e}"),
                ),
            },
            Ok(Answer {
                rejected: Some(why),
                not_yet: true,
                ..
            }) if self.not_yet(m.request) <= MAX_NOT_YET => {
                self.state().note(
                    m.request,
                    format!(
                        "round {}: provider {} cannot answer yet ({why}): proposing again in a later round",
                        round.number, offer.body.provider
                    ),
                );
            }
            Ok(Answer {
                counter: Some(_), ..
            }) => {
                self.relist(
                    m.request,
                    offer.body.org,
                    format!(
                        "round {}: provider {} counters its own counter-proposal",
                        round.number, offer.body.provider
                    ),
                )
                .await;
            }
            Ok(Answer {
                rejected: Some(why),
                ..
            }) => {
                self.relist(
                    m.request,
                    offer.body.org,
                    format!(
                        "round {}: provider {} rejects: {why}",
                        round.number, offer.body.provider
                    ),
                )
                .await;
            }
            Ok(_) => self.state().note(
                m.request,
                "the provider answered a contract that is not the proposal".to_owned(),
            ),
            Err(e) => self.state().note(
                m.request,
                format!(
                    "round {}: cannot reach provider {}: {e}",
                    round.number, offer.body.provider
                ),
            ),
        }
    }

    /// Check a provider's counter to `mine` and judge it by this node's
    /// rules: the customer's proposal of the countered terms, or why not.
    fn take_counter(
        &self,
        mine: &Proposal,
        counter: &Proposal,
        view: &ProviderView,
    ) -> Result<Proposal, String> {
        Negotiation::start(mine.clone())
            .and_then(|n| n.counter(counter.clone()))
            .map_err(|e| format!("not a valid counter-proposal: {e}"))?;
        let verdict = self
            .inner
            .rules
            .customer
            .judge_counter(&counter.terms, view);
        if !verdict.accept {
            return Err(verdict.refusal().unwrap_or_default());
        }
        Proposal::sign_with(
            counter.terms.clone(),
            Side::Customer,
            self.inner.party.as_ref(),
        )
        .ok_or_else(|| "this node has no certificate to sign with".to_owned())
    }

    /// The round trip to `them` (one of `nodes`, this node's view) the
    /// fabric's coordinates estimate, once both have one.
    fn rtt_ms_to(
        &self,
        nodes: &[locus_core::cluster::ClusterNode],
        them: Option<&locus_core::cluster::ClusterNode>,
    ) -> Option<u32> {
        let me = nodes.iter().find(|n| n.id == self.inner.me)?;
        locus_core::cluster::estimate_rtt(me, them?)
            .map(|e| e.rtt_ms.ceil().clamp(0.0, f64::from(u32::MAX)) as u32)
    }

    async fn call_provider(
        &self,
        provider: locus_core::NodeId,
        proposal: &Proposal,
    ) -> Result<Answer, String> {
        let body = serde_json::to_vec(proposal).map_err(|e| e.to_string())?;
        let text = self.call_node(provider, PROPOSAL_PATH, body).await?;
        serde_json::from_str(&text).map_err(|e| format!("bad answer: {e}"))
    }

    /// Count one more "not yet" for `request`; answers the count.
    fn not_yet(&self, request: RecordId) -> u32 {
        let mut st = self.state();
        st.mine.get_mut(&request).map_or(u32::MAX, |m| {
            m.not_yet += 1;
            m.not_yet
        })
    }

    /// Re-list a request without `org`: the same need, a new number.
    async fn relist(&self, request: RecordId, org: locus_access::OrgId, why: String) {
        let old = self.state().mine.get(&request).map(|m| m.entry.clone());
        self.state().note(request, why);
        let Some(Entry::Request(r)) = old else { return };
        let next = r.body.after_rejection(org, now_secs());
        let Some(signed) = locus_market::Signed::sign_with(next, self.inner.party.as_ref()) else {
            return;
        };
        let new_id = signed.id();
        if let Err(e) = self.withdraw_entry(request).await {
            tracing::warn!(error = %e, "cannot withdraw a rejected request");
        }
        match self.publish_entry(Entry::Request(signed)).await {
            Ok(_) => self.state().note(
                request,
                format!("re-listed as {} without org {org}", new_id.short()),
            ),
            Err(e) => tracing::warn!(error = %e, "cannot re-list a request"),
        }
    }

    /// The provider's side: a customer's proposal, answered once the
    /// contract is stored, or with the reason for refusing.
    pub async fn consider(&self, proposal: Proposal) -> Result<Answer, MarketError> {
        proposal
            .verify()
            .map_err(|e| MarketError::Invalid(format!("proposal: {e}")))?;
        let t = &proposal.terms;
        if proposal.by != Side::Customer || t.provider != self.inner.me {
            return Err(MarketError::Invalid(format!(
                "the proposal is not a customer's to node {}",
                self.inner.me
            )));
        }
        {
            let mut st = self.state();
            if !st.mine.contains_key(&t.offer) {
                return Ok(Answer::refused(format!(
                    "offer {} is no longer on the book",
                    t.offer.short()
                )));
            }
            if !st.busy.insert(t.offer) {
                return Ok(Answer::not_yet(format!(
                    "offer {} is being negotiated with another customer",
                    t.offer.short()
                )));
            }
        }
        let answer = self.consider_held(&proposal).await;
        self.state().busy.remove(&proposal.terms.offer);
        answer
    }

    async fn consider_held(&self, proposal: &Proposal) -> Result<Answer, MarketError> {
        let reject = |why: String| Ok(Answer::refused(why));
        let t = &proposal.terms;
        // Two nodes that each believe they clear first sign two rounds of
        // one number: any of them that checks here and holds the match will
        // do, and one that has not arrived yet may still come.
        let Some(seen) = self.wait_for_match(t).await else {
            return Ok(Answer::not_yet(format!(
                "no round {} holding this match at these prices has reached this node and checked here",
                t.round
            )));
        };
        let candidates = seen.entries.iter().map(|e| (e.author(), e.org()));
        let expected = arbitrator(
            &t.request,
            &t.offer,
            t.customer_org,
            t.provider_org,
            candidates,
        );
        if expected != Some((t.arbitrator, t.arbitrator_org)) {
            return reject("the arbitrator is not the one the rule names".to_owned());
        }
        let battery = match self.state().mine.get(&t.offer).map(|m| m.entry.clone()) {
            Some(Entry::Offer(o)) => o.body.battery_percent,
            _ => None,
        };
        match self.inner.rules.provider.respond(
            t,
            self.reputation_of(t.customer_org),
            battery,
            now_secs(),
        ) {
            Response::Accept(_) => {}
            Response::Refuse(verdict) => {
                let why = verdict.refusal().unwrap_or_default();
                self.state().note(
                    t.offer,
                    format!("refused request {}: {why}", t.request.short()),
                );
                return reject(format!("the provider's rules refuse: {why}"));
            }
            Response::Counter { terms, verdict } => {
                let why = verdict.refusal().unwrap_or_default();
                let Some(counter) =
                    Proposal::sign_with(*terms, Side::Provider, self.inner.party.as_ref())
                else {
                    return Err(MarketError::NoCertificate);
                };
                self.state().note(
                    t.offer,
                    format!(
                        "countered request {} ({why}): {}",
                        t.request.short(),
                        describe_counter(t, &counter.terms)
                    ),
                );
                return Ok(Answer {
                    contract: None,
                    rejected: None,
                    not_yet: false,
                    counter: Some(counter),
                });
            }
        }
        let Some(contract) = proposal.accept_with(self.inner.party.as_ref()) else {
            return Err(MarketError::NoCertificate);
        };
        let id = self.keep_contract(&contract).await?;
        self.state().note(
            t.offer,
            format!(
                "contract {} signed with customer {} (org {})",
                id.short(),
                t.customer,
                t.customer_org
            ),
        );
        self.prepare(&contract);
        if let Err(e) = self.withdraw_entry(t.offer).await {
            tracing::warn!(error = %e, "cannot withdraw a contracted offer");
        }
        Ok(Answer {
            contract: Some(contract),
            rejected: None,
            not_yet: false,
            counter: None,
        })
    }

    /// Validate and migrate, in the background: a placement dry run of
    /// each covered workload here and a prefetch of its sources; what it
    /// found is noted on the contract.
    pub(crate) fn prepare(&self, contract: &Contract) {
        let me = self.clone();
        let (id, customer, workloads) = (
            contract.id(),
            contract.terms.customer,
            contract.terms.cover.workloads.clone(),
        );
        tokio::spawn(async move {
            // The customer's specs may still be spreading: a few tries.
            for attempt in 0..10u32 {
                let lines = me.inner.cover.prepare(customer, &workloads).await;
                let pending = lines.iter().any(|l| l.contains("not here yet"));
                {
                    let mut st = me.state();
                    for l in &lines {
                        st.note(id, l.clone());
                    }
                }
                if !pending {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt + 1))).await;
            }
        });
    }

    /// A round numbered as the terms say, checked here, holding their
    /// match at their prices; waiting a little for it to arrive.
    async fn wait_for_match(&self, t: &Terms) -> Option<Seen> {
        let until = Instant::now() + ROUND_WAIT;
        let holds = |s: &Seen| {
            s.signed.body.number == t.round
                && s.verdict.is_ok()
                && s.signed.body.matches.iter().any(|m| {
                    m.request == t.request
                        && m.offer == t.offer
                        && m.buyer_pays == t.buyer_pays
                        && m.seller_gets == t.seller_gets
                        && m.class == t.class
                })
        };
        loop {
            let found = self.state().rounds.iter().rev().find(|s| holds(s)).cloned();
            if found.is_some() || Instant::now() >= until {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a counter-proposal changed, in words.
fn describe_counter(asked: &Terms, countered: &Terms) -> String {
    let mut changes = Vec::new();
    let (a, c) = (&asked.sla, &countered.sla);
    if a.handover_within_secs != c.handover_within_secs {
        changes.push(format!(
            "handover within {} s instead of {} s",
            c.handover_within_secs, a.handover_within_secs
        ));
    }
    if a.penalty != c.penalty {
        changes.push(format!("penalty {} instead of {}", c.penalty, a.penalty));
    }
    let (da, dc) = (
        asked.end.saturating_sub(asked.start),
        countered.end.saturating_sub(countered.start),
    );
    if da != dc {
        changes.push(format!("{dc} s long instead of {da} s"));
    }
    if changes.is_empty() {
        "the same terms".to_owned()
    } else {
        changes.join(", ")
    }
}

//! The decision unit of each side (DMU), as data: rules read from TOML and
//! pure functions that apply them, each verdict listing every rule it
//! checked with the value seen and the limit.
//!
//! ```toml
//! [provider]
//! price = 400                    # asked per unit-hour, millicredits
//! min_price = 200                # never offered below
//! reserve = { cpu_millis = 500, memory_mb = 256, storage_mb = 1024 }
//! min_customer_reputation = 300  # per mille
//! standby_min_battery = 40       # percent; no standby offer below
//! max_duration_secs = 86400
//! min_handover_secs = 0          # fastest handover promised
//! # max_penalty = 5000           # largest penalty per missed handover
//!
//! [customer]
//! max_price = 1000
//! min_provider_reputation = 400
//! max_rtt_ms = 50
//! min_score = 0.5
//! max_handover_secs = 30         # slowest handover taken in a counter
//! min_penalty = 0
//! weights = { price = 1.0, latency = 1.0, reputation = 1.0, renewable = 0.5 }
//! ```
//!
//! A provider's rules decide what it offers ([`ProviderRules::offer`]:
//! its spare resources less the reserve it keeps for its own workloads, at
//! no less than its minimum price, standby only with battery enough) and
//! whether it signs with a customer ([`ProviderRules::judge`]). A
//! customer's rules score a matched provider on price, latency,
//! reputation and renewable power, with hard limits on each
//! ([`CustomerRules::judge`]).
//!
//! Price, reputation and battery are not negotiable: the clearing set the
//! price, and the others are facts. The SLA and the window are: terms
//! that ask a faster handover, a larger penalty or a longer contract than
//! the provider's rules allow get a counter-proposal
//! ([`ProviderRules::respond`]) that moves each to the provider's limit
//! and no further. The customer takes it or walks away
//! ([`CustomerRules::judge_counter`]); countering back could only ask for
//! terms the provider's rules refuse, so an exchange ends after one
//! counter, well within [`crate::contract::MAX_REVISIONS`].

use std::collections::BTreeSet;

use locus_access::OrgId;
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::book::{EnergySource, Offer};
use crate::class::{Resources, Tier};
use crate::contract::Terms;

/// Both sides' rules, as read from one TOML document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub provider: ProviderRules,
    #[serde(default)]
    pub customer: CustomerRules,
}

/// Why rules do not parse: the field path and line, from the TOML parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("market rules: {0}")]
pub struct RulesError(String);

impl Rules {
    pub fn from_toml(text: &str) -> Result<Rules, RulesError> {
        let rules: Rules = toml::from_str(text).map_err(|e| RulesError(e.to_string()))?;
        rules.validate()?;
        Ok(rules)
    }

    fn validate(&self) -> Result<(), RulesError> {
        let p = &self.provider;
        if p.price < p.min_price {
            return Err(RulesError(format!(
                "provider.price {} is below provider.min_price {}",
                p.price, p.min_price
            )));
        }
        if p.min_customer_reputation > 1000 || self.customer.min_provider_reputation > 1000 {
            return Err(RulesError("reputations are per mille: at most 1000".into()));
        }
        if p.standby_min_battery > 100 {
            return Err(RulesError(format!(
                "provider.standby_min_battery {} is more than 100 %",
                p.standby_min_battery
            )));
        }
        let w = &self.customer.weights;
        for (name, v) in [
            ("price", w.price),
            ("latency", w.latency),
            ("reputation", w.reputation),
            ("renewable", w.renewable),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(RulesError(format!(
                    "customer.weights.{name} {v} is not within 0..=100"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.customer.min_score) {
            return Err(RulesError(format!(
                "customer.min_score {} is not within 0..=1",
                self.customer.min_score
            )));
        }
        Ok(())
    }
}

/// Resources a provider keeps for its own workloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    #[serde(default)]
    pub cpu_millis: u32,
    #[serde(default)]
    pub memory_mb: u64,
    #[serde(default)]
    pub storage_mb: u64,
}

impl Reserve {
    pub fn resources(&self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_mb.saturating_mul(1 << 20),
            storage_bytes: self.storage_mb.saturating_mul(1 << 20),
            bandwidth_kbps: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderRules {
    pub price: u64,
    pub min_price: u64,
    pub reserve: Reserve,
    pub min_customer_reputation: u16,
    pub standby_min_battery: u8,
    pub max_duration_secs: u64,
    /// The fastest handover this node promises, seconds (0: any).
    pub min_handover_secs: u32,
    /// The largest penalty per missed handover it accepts, millicredits
    /// (none: any).
    pub max_penalty: Option<u64>,
}

impl Default for ProviderRules {
    fn default() -> Self {
        ProviderRules {
            price: 500,
            min_price: 100,
            reserve: Reserve {
                cpu_millis: 250,
                memory_mb: 128,
                storage_mb: 1024,
            },
            min_customer_reputation: 0,
            standby_min_battery: 30,
            max_duration_secs: 24 * 3600,
            min_handover_secs: 0,
            max_penalty: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub price: f64,
    pub latency: f64,
    pub reputation: f64,
    pub renewable: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            price: 1.0,
            latency: 1.0,
            reputation: 1.0,
            renewable: 0.5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerRules {
    pub max_price: u64,
    pub min_provider_reputation: u16,
    pub max_rtt_ms: u32,
    pub min_score: f64,
    /// The slowest handover this node takes in a provider's counter.
    pub max_handover_secs: u32,
    /// The smallest penalty per missed handover it takes in a counter.
    pub min_penalty: u64,
    pub weights: Weights,
    /// How this node answers a provider's usage statement.
    pub countersign: Countersign,
}

/// How a customer answers a usage statement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Countersign {
    /// Countersign a statement that matches its evidence, dispute one
    /// that does not.
    #[default]
    Auto,
    /// Wait for `locus contract sign` or `locus contract dispute`; a
    /// statement not answered in time goes to the arbitrator.
    Manual,
}

impl Default for CustomerRules {
    fn default() -> Self {
        CustomerRules {
            max_price: 1000,
            min_provider_reputation: 0,
            max_rtt_ms: 100,
            min_score: 0.0,
            max_handover_secs: 30,
            min_penalty: 0,
            weights: Weights::default(),
            countersign: Countersign::Auto,
        }
    }
}

/// One rule as applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub rule: String,
    pub value: String,
    pub limit: String,
    pub ok: bool,
}

fn check(rule: &str, value: impl ToString, limit: impl ToString, ok: bool) -> Check {
    Check {
        rule: rule.to_owned(),
        value: value.to_string(),
        limit: limit.to_string(),
        ok,
    }
}

/// A decision and every rule behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub accept: bool,
    /// The weighted score (customer side), 0..=1.
    pub score: Option<f64>,
    pub checks: Vec<Check>,
}

impl Verdict {
    fn of(checks: Vec<Check>, score: Option<f64>) -> Verdict {
        Verdict {
            accept: checks.iter().all(|c| c.ok),
            score,
            checks,
        }
    }

    /// The first rule that refused, as a sentence.
    pub fn refusal(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {} (limit {})", c.rule, c.value, c.limit))
    }
}

/// What a provider node knows of itself when it offers.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    pub node: NodeId,
    pub org: OrgId,
    pub site: String,
    /// What the node has in all.
    pub capacity: Resources,
    /// What its workloads (and contracts in force) hold.
    pub used: Resources,
    pub interfaces: BTreeSet<String>,
    pub uptime_permille: u16,
    pub energy: EnergySource,
    pub battery_percent: Option<u8>,
}

impl ProviderRules {
    /// The offer these rules make for a node in `state`, or the verdict
    /// that says why none.
    pub fn offer(
        &self,
        state: &NodeState,
        seq: u64,
        now: u64,
        lifetime_secs: u64,
    ) -> Result<Offer, Verdict> {
        let spare = state
            .capacity
            .minus(&state.used)
            .minus(&self.reserve.resources());
        let filled = Tier::filled_by(&spare);
        let battery_ok = state
            .battery_percent
            .is_none_or(|b| b >= self.standby_min_battery);
        let checks = vec![check(
            "spare after reserve fills a tier",
            format!(
                "{} m cpu, {} MiB",
                spare.cpu_millis,
                spare.memory_bytes >> 20
            ),
            "nano: 250 m cpu, 256 MiB, 2 GiB, 1 Mbit/s",
            filled.is_some(),
        )];
        let Some(tier) = filled else {
            return Err(Verdict::of(checks, None));
        };
        Ok(Offer {
            provider: state.node,
            org: state.org,
            seq,
            spare,
            tier,
            interfaces: state.interfaces.clone(),
            uptime_permille: state.uptime_permille,
            energy: state.energy,
            battery_percent: state.battery_percent,
            price: self.price.max(self.min_price),
            max_duration_secs: self.max_duration_secs.max(1),
            standby: battery_ok,
            site: state.site.clone(),
            issued_at: now,
            expires_at: now.saturating_add(lifetime_secs.clamp(1, crate::book::MAX_LIFETIME_SECS)),
            site_rtt_ms: Default::default(),
        })
    }

    /// Whether to sign `terms` with a customer of `reputation` (per
    /// mille), the node's battery being at `battery_percent`.
    pub fn judge(&self, terms: &Terms, reputation: u16, battery_percent: Option<u8>) -> Verdict {
        let mut checks = vec![
            check(
                "price ≥ min_price",
                terms.seller_gets,
                self.min_price,
                terms.seller_gets >= self.min_price,
            ),
            check(
                "customer reputation ≥ min_customer_reputation",
                reputation,
                self.min_customer_reputation,
                reputation >= self.min_customer_reputation,
            ),
            check(
                "duration ≤ max_duration_secs",
                terms.end.saturating_sub(terms.start),
                self.max_duration_secs,
                terms.end.saturating_sub(terms.start) <= self.max_duration_secs,
            ),
            check(
                "handover_within_secs ≥ min_handover_secs",
                terms.sla.handover_within_secs,
                self.min_handover_secs,
                terms.sla.handover_within_secs >= self.min_handover_secs,
            ),
        ];
        if let Some(max) = self.max_penalty {
            checks.push(check(
                "penalty ≤ max_penalty",
                terms.sla.penalty,
                max,
                terms.sla.penalty <= max,
            ));
        }
        if terms.class.standby {
            let b = battery_percent.map_or("none".to_owned(), |b| format!("{b} %"));
            checks.push(check(
                "battery ≥ standby_min_battery",
                b,
                format!("{} %", self.standby_min_battery),
                battery_percent.is_none_or(|b| b >= self.standby_min_battery),
            ));
        }
        Verdict::of(checks, None)
    }

    /// The terms moved to these rules' limits: the handover no faster than
    /// `min_handover_secs`, the penalty no larger than `max_penalty`, the
    /// window no longer than `max_duration_secs`, stakes to match. `None`
    /// when nothing needs to move.
    pub fn limit(&self, terms: &Terms) -> Option<Terms> {
        let mut t = terms.clone();
        t.sla.handover_within_secs = t.sla.handover_within_secs.max(self.min_handover_secs);
        if let Some(max) = self.max_penalty {
            t.sla.penalty = t.sla.penalty.min(max);
        }
        let longest = self.max_duration_secs.max(1);
        if t.end.saturating_sub(t.start) > longest {
            t.end = t.start.saturating_add(longest);
        }
        t.restake();
        (t != *terms).then_some(t)
    }

    /// The answer to `terms` at `now`: sign them, counter with the terms
    /// moved to these rules' limits (only when that alone makes them
    /// acceptable, and revisions are left), or refuse.
    pub fn respond(
        &self,
        terms: &Terms,
        reputation: u16,
        battery_percent: Option<u8>,
        now: u64,
    ) -> Response {
        let verdict = self.judge(terms, reputation, battery_percent);
        if verdict.accept {
            return Response::Accept(verdict);
        }
        let Some(mut counter) = self.limit(terms) else {
            return Response::Refuse(verdict);
        };
        counter.revision = terms.revision + 1;
        counter.proposed_at = now.max(terms.proposed_at);
        if counter.revision > crate::contract::MAX_REVISIONS
            || !self.judge(&counter, reputation, battery_percent).accept
        {
            return Response::Refuse(verdict);
        }
        Response::Counter {
            terms: Box::new(counter),
            verdict,
        }
    }
}

/// A side's answer to proposed terms.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// Sign them.
    Accept(Verdict),
    /// Sign these instead; `verdict` says what the proposal broke.
    Counter { terms: Box<Terms>, verdict: Verdict },
    /// Walk away.
    Refuse(Verdict),
}

/// What the customer knows of a matched provider.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderView {
    pub reputation: u16,
    /// Measured round trip to the provider, where known.
    pub rtt_ms: Option<u32>,
    pub renewable: bool,
}

impl CustomerRules {
    /// Whether to sign `terms` with a provider seen as `view`.
    pub fn judge(&self, terms: &Terms, view: &ProviderView) -> Verdict {
        let w = &self.weights;
        let price = if self.max_price == 0 {
            0.0
        } else {
            (1.0 - terms.buyer_pays as f64 / self.max_price as f64).clamp(0.0, 1.0)
        };
        let latency = match view.rtt_ms {
            Some(rtt) if self.max_rtt_ms > 0 => {
                (1.0 - rtt as f64 / self.max_rtt_ms as f64).clamp(0.0, 1.0)
            }
            _ => 0.5,
        };
        let reputation = f64::from(view.reputation.min(1000)) / 1000.0;
        let renewable = if view.renewable { 1.0 } else { 0.0 };
        let total = w.price + w.latency + w.reputation + w.renewable;
        let score = if total > 0.0 {
            (w.price * price
                + w.latency * latency
                + w.reputation * reputation
                + w.renewable * renewable)
                / total
        } else {
            1.0
        };
        let checks = vec![
            check(
                "price ≤ max_price",
                terms.buyer_pays,
                self.max_price,
                terms.buyer_pays <= self.max_price,
            ),
            check(
                "provider reputation ≥ min_provider_reputation",
                view.reputation,
                self.min_provider_reputation,
                view.reputation >= self.min_provider_reputation,
            ),
            check(
                "rtt ≤ max_rtt_ms",
                view.rtt_ms
                    .map_or("unknown".to_owned(), |r| format!("{r} ms")),
                format!("{} ms", self.max_rtt_ms),
                view.rtt_ms.is_none_or(|r| r <= self.max_rtt_ms),
            ),
            check(
                "score ≥ min_score",
                format!(
                    "{score:.3} (price {price:.2}, latency {latency:.2}, reputation {reputation:.2}, renewable {renewable:.0})"
                ),
                format!("{:.3}", self.min_score),
                score >= self.min_score,
            ),
        ];
        Verdict::of(checks, Some(score))
    }

    /// Whether to sign a provider's counter-proposal: the checks of
    /// [`CustomerRules::judge`] and this side's limits on the SLA.
    pub fn judge_counter(&self, countered: &Terms, view: &ProviderView) -> Verdict {
        let mut verdict = self.judge(countered, view);
        verdict.checks.push(check(
            "handover_within_secs ≤ max_handover_secs",
            countered.sla.handover_within_secs,
            self.max_handover_secs,
            countered.sla.handover_within_secs <= self.max_handover_secs,
        ));
        verdict.checks.push(check(
            "penalty ≥ min_penalty",
            countered.sla.penalty,
            self.min_penalty,
            countered.sla.penalty >= self.min_penalty,
        ));
        verdict.accept = verdict.checks.iter().all(|c| c.ok);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(used_cpu: u32, battery: Option<u8>) -> NodeState {
        NodeState {
            node: NodeId::from_bytes([1; 10]),
            org: OrgId::from_bytes([2; 10]),
            site: "lab".into(),
            capacity: Tier::Medium
                .resources()
                .plus(&ProviderRules::default().reserve.resources()),
            used: Resources {
                cpu_millis: used_cpu,
                ..Default::default()
            },
            interfaces: ["ethernet".to_owned()].into(),
            uptime_permille: 990,
            energy: EnergySource::SolarBattery,
            battery_percent: battery,
        }
    }

    #[test]
    fn the_example_rules_are_the_defaults() {
        let text = include_str!("../../../examples/market-rules.toml");
        assert_eq!(Rules::from_toml(text).unwrap(), Rules::default());
    }

    #[test]
    fn rules_parse_with_defaults_and_errors_name_the_field() {
        let r =
            Rules::from_toml("[provider]\nprice = 300\nreserve = { cpu_millis = 1000 }\n").unwrap();
        assert_eq!(r.provider.price, 300);
        assert_eq!(r.provider.reserve.cpu_millis, 1000);
        assert_eq!(r.customer, CustomerRules::default());
        let e = Rules::from_toml("[provider]\nprise = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prise"), "{e}");
        let e = Rules::from_toml("[customer]\nmax_price = \"cheap\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_price") && e.contains("line 2"), "{e}");
        let e = Rules::from_toml("[provider]\nprice = 1\nmin_price = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("provider.price 1"), "{e}");
        let e = Rules::from_toml("[customer.weights]\nprice = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("weights.price"), "{e}");
    }

    #[test]
    fn a_provider_counters_terms_beyond_its_limits_once_and_the_customer_takes_or_leaves_it() {
        use crate::contract::tests::{deal, first_terms};
        use crate::contract::{Negotiation, Proposal, Side, check_counter};
        let d = deal();
        let asked = first_terms(&d);
        assert_eq!(asked.sla.handover_within_secs, 3);
        assert_eq!(asked.sla.penalty, 5000);
        assert_eq!(asked.end - asked.start, 3600);
        let rules = ProviderRules {
            min_handover_secs: 10,
            max_penalty: Some(2000),
            max_duration_secs: 1800,
            ..ProviderRules::default()
        };
        let Response::Counter { terms, verdict } = rules.respond(&asked, 500, Some(80), 250) else {
            panic!("{:?}", rules.respond(&asked, 500, Some(80), 250))
        };
        assert!(
            verdict.refusal().unwrap().contains("duration"),
            "{verdict:?}"
        );
        let countered = *terms;
        assert_eq!(countered.sla.handover_within_secs, 10);
        assert_eq!(countered.sla.penalty, 2000);
        assert_eq!(countered.end - countered.start, 1800);
        assert_eq!((countered.revision, countered.proposed_at), (1, 250));
        assert_eq!(countered.stakes.provider, 2000);
        assert_eq!(
            countered.stakes.customer,
            countered.standby_cost(1800).max(1)
        );
        check_counter(&asked, &countered).unwrap();
        // The counter meets the rules: proposed back, it is signed.
        assert!(matches!(
            rules.respond(&countered, 500, Some(80), 260),
            Response::Accept(_)
        ));
        // Terms already within the limits are signed as they are.
        assert!(matches!(
            ProviderRules::default().respond(&asked, 500, Some(80), 250),
            Response::Accept(_)
        ));
        // What is not negotiable is refused, not countered.
        let strict = ProviderRules {
            min_customer_reputation: 600,
            ..rules.clone()
        };
        assert!(matches!(
            strict.respond(&asked, 500, Some(80), 250),
            Response::Refuse(_)
        ));
        let dear = ProviderRules {
            min_price: asked.seller_gets + 1,
            price: asked.seller_gets + 1,
            ..rules.clone()
        };
        assert!(matches!(
            dear.respond(&asked, 500, Some(80), 250),
            Response::Refuse(_)
        ));
        // No revisions left: refused.
        let mut late = asked.clone();
        late.revision = crate::contract::MAX_REVISIONS;
        assert!(matches!(
            rules.respond(&late, 500, Some(80), 250),
            Response::Refuse(_)
        ));

        // The customer's side: its limits on the SLA decide.
        let view = ProviderView {
            reputation: 500,
            rtt_ms: Some(1),
            renewable: false,
        };
        assert!(
            CustomerRules::default()
                .judge_counter(&countered, &view)
                .accept
        );
        let hurried = CustomerRules {
            max_handover_secs: 5,
            ..CustomerRules::default()
        };
        let v = hurried.judge_counter(&countered, &view);
        assert!(!v.accept);
        assert!(v.refusal().unwrap().contains("max_handover_secs"), "{v:?}");
        let Response::Accept(_) = ProviderRules::default().respond(&asked, 500, None, 250) else {
            panic!()
        };

        // The whole exchange through the negotiation's state machine.
        let first = Proposal::sign(
            asked.clone(),
            Side::Customer,
            d.customer.party.clone(),
            &d.customer.key,
        );
        let counter = Proposal::sign(
            countered.clone(),
            Side::Provider,
            d.provider.party.clone(),
            &d.provider.key,
        );
        let n = Negotiation::start(first)
            .unwrap()
            .counter(counter.clone())
            .unwrap();
        let contract = counter.accept(d.customer.party.clone(), &d.customer.key);
        assert!(matches!(
            n.agree(contract.clone()),
            Ok(Negotiation::Agreed(_))
        ));
        contract.verify().unwrap();
        assert_eq!(contract.terms.revision, 1);
    }

    #[test]
    fn a_provider_keeps_its_reserve_and_offers_standby_only_with_battery() {
        let rules = ProviderRules::default();
        let offer = rules.offer(&state(0, Some(80)), 1, 100, 60).unwrap();
        assert_eq!(offer.class().unwrap().tier, Tier::Medium);
        assert!(offer.standby);
        assert_eq!(offer.expires_at, 160);
        offer.validate().unwrap();
        // Its own workloads use a core: the offer drops a tier.
        let offer = rules.offer(&state(1000, Some(10)), 2, 100, 60).unwrap();
        assert_eq!(offer.class().unwrap().tier, Tier::Small);
        assert!(!offer.standby, "battery 10 % is below 30 %");
        // Nothing left: no offer, and the verdict says why.
        let v = rules.offer(&state(4000, None), 3, 100, 60).unwrap_err();
        assert!(!v.accept);
        assert!(
            v.refusal().unwrap().contains("spare after reserve"),
            "{v:?}"
        );
    }
}

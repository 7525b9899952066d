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
//!
//! [customer]
//! max_price = 1000
//! min_provider_reputation = 400
//! max_rtt_ms = 50
//! min_score = 0.5
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
        ];
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

//! Resource classes: how a multi-dimensional need or offer is reduced to
//! one class, so that the market clears each class as a market of one
//! good.
//!
//! A class is a size **tier** (a fixed bundle of cpu, memory, storage and
//! bandwidth), a **site**, and whether the unit is held as a **standby**
//! for handover. An offer is listed in the largest tier its spare
//! resources fill; a request in the smallest tier that covers its needs.
//! So every unit sold in a class gives every buyer of that class at least
//! the resources it asked, and the classes partition the book: each
//! record trades in exactly one class.
//!
//! Qualities that are "at least" (measured uptime, renewable power) are
//! not part of the class: a class per quality level would keep a 99.9 %
//! provider away from the buyer who asks for nothing. They are checked
//! when the winners of a class are paired (see the clearing module).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Resources in the units the rest of locus uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    /// Kilobits per second.
    pub bandwidth_kbps: u32,
}

impl Resources {
    /// Whether every dimension of `self` is at least `other`'s.
    pub fn covers(&self, other: &Resources) -> bool {
        self.cpu_millis >= other.cpu_millis
            && self.memory_bytes >= other.memory_bytes
            && self.storage_bytes >= other.storage_bytes
            && self.bandwidth_kbps >= other.bandwidth_kbps
    }

    /// Dimension-wise sum, saturating.
    pub fn plus(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            storage_bytes: self.storage_bytes.saturating_add(other.storage_bytes),
            bandwidth_kbps: self.bandwidth_kbps.saturating_add(other.bandwidth_kbps),
        }
    }

    /// Dimension-wise difference, floored at zero.
    pub fn minus(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            storage_bytes: self.storage_bytes.saturating_sub(other.storage_bytes),
            bandwidth_kbps: self.bandwidth_kbps.saturating_sub(other.bandwidth_kbps),
        }
    }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A size tier: one unit of it is the bundle [`Tier::resources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Nano,
    Small,
    Medium,
    Large,
    Xlarge,
}

impl Tier {
    /// Every tier, smallest first.
    pub const ALL: [Tier; 5] = [
        Tier::Nano,
        Tier::Small,
        Tier::Medium,
        Tier::Large,
        Tier::Xlarge,
    ];

    /// The bundle one unit of the tier gives.
    pub const fn resources(self) -> Resources {
        let (cpu_millis, memory_bytes, storage_bytes, bandwidth_kbps) = match self {
            Tier::Nano => (250, 256 * MIB, 2 * GIB, 1_000),
            Tier::Small => (1_000, GIB, 10 * GIB, 10_000),
            Tier::Medium => (2_000, 4 * GIB, 50 * GIB, 50_000),
            Tier::Large => (4_000, 8 * GIB, 200 * GIB, 100_000),
            Tier::Xlarge => (8_000, 32 * GIB, 1024 * GIB, 1_000_000),
        };
        Resources {
            cpu_millis,
            memory_bytes,
            storage_bytes,
            bandwidth_kbps,
        }
    }

    /// The smallest tier that covers `needs`, if any does.
    pub fn covering(needs: &Resources) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.resources().covers(needs))
    }

    /// The largest tier that `spare` fills, if any.
    pub fn filled_by(spare: &Resources) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|t| spare.covers(&t.resources()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Nano => "nano",
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
            Tier::Xlarge => "xlarge",
        }
    }
}

/// One good of the market.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Class {
    pub tier: Tier,
    pub site: String,
    pub standby: bool,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}{}",
            self.tier.as_str(),
            self.site,
            if self.standby { " standby" } else { "" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resources() -> impl Strategy<Value = Resources> {
        (
            0u32..10_000,
            0u64..40 * GIB,
            0u64..2048 * GIB,
            0u32..2_000_000,
        )
            .prop_map(
                |(cpu_millis, memory_bytes, storage_bytes, bandwidth_kbps)| Resources {
                    cpu_millis,
                    memory_bytes,
                    storage_bytes,
                    bandwidth_kbps,
                },
            )
    }

    proptest! {
        /// Whatever an offer fills covers whatever a request of the same
        /// tier needs.
        #[test]
        fn a_unit_sold_in_a_tier_covers_every_buyer_of_it(spare in resources(), needs in resources()) {
            if let (Some(s), Some(n)) = (Tier::filled_by(&spare), Tier::covering(&needs))
                && s == n
            {
                prop_assert!(spare.covers(&needs));
            }
        }
    }

    #[test]
    fn tiers_are_ordered_and_named() {
        let one_core = Resources {
            cpu_millis: 1000,
            memory_bytes: 512 * MIB,
            ..Default::default()
        };
        assert_eq!(Tier::covering(&one_core), Some(Tier::Small));
        assert_eq!(Tier::filled_by(&one_core), None);
        assert_eq!(
            Tier::filled_by(&Tier::Large.resources().plus(&one_core)),
            Some(Tier::Large)
        );
        let huge = Resources {
            cpu_millis: 64_000,
            ..Default::default()
        };
        assert_eq!(Tier::covering(&huge), None);
    }
}

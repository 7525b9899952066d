//! Retention: the bodies of the oldest readings are deleted, their leaves
//! never.
//!
//! Age counts from when the node accepted a reading, not from the
//! device's timestamp (which may be anything): every seq below the size of
//! a checkpoint signed at or before `now - retention_days` was accepted at
//! least that long ago. Deletion always takes a prefix of the log, oldest
//! seq first, so what is gone is one number, the watermark `pruned_below`,
//! stored with the deletions in one transaction. The seal leaves stay, so
//! the log rebuilds the same, every checkpoint still verifies, and a proof
//! of a reading kept is unchanged; a bundle or proof that needs a pruned
//! body answers that it is gone (410) instead of exporting it as dropped.
//! A reading its parent has not acknowledged (see `export`) is never
//! deleted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Readings, ReadingsError};
use crate::table::ReadingsTable;

/// How often the retention pass runs (the first runs at start).
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Bodies deleted per transaction, so a pass never holds the store long.
pub const PRUNE_CHUNK: u64 = 10_000;

/// What retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Keep bodies this long after acceptance (`None`: forever).
    pub(crate) max_age_ms: Option<u64>,
    /// Keep at most this many bodies (`None`: no limit).
    pub(crate) max_count: Option<u64>,
}

impl Policy {
    pub(crate) fn from_config(c: &locus_core::config::ReadingsConfig) -> Policy {
        let days = u64::from(*c.retention_days.get());
        let max = *c.max_readings.get();
        Policy {
            max_age_ms: (days > 0).then(|| days * 86_400_000),
            max_count: (max > 0).then_some(max),
        }
    }
}

/// The new watermark: bodies of seqs below it may go. `sealed` is the log
/// size, `old_enough` the size of the newest checkpoint signed before the
/// age cutoff, `export_floor` the first seq the parent has not
/// acknowledged, `current` the watermark now. Pure.
pub(crate) fn prune_target(
    policy: Policy,
    sealed: u64,
    old_enough: u64,
    export_floor: Option<u64>,
    current: u64,
) -> u64 {
    let by_age = if policy.max_age_ms.is_some() {
        old_enough
    } else {
        0
    };
    let by_count = policy.max_count.map_or(0, |m| sealed.saturating_sub(m));
    let mut target = by_age.max(by_count).min(sealed);
    if let Some(floor) = export_floor {
        target = target.min(floor);
    }
    target.max(current)
}

impl Readings {
    /// Bodies of seqs below this were deleted by retention.
    pub fn pruned_below(&self) -> u64 {
        self.inner.pruned_below.load(Ordering::Acquire)
    }

    /// Fail with [`ReadingsError::Pruned`] when `start..end` (non-empty)
    /// reaches below the watermark.
    pub(crate) fn check_not_pruned(&self, start: u64, end: u64) -> Result<(), ReadingsError> {
        let below = self.pruned_below();
        if start < end && start < below {
            return Err(ReadingsError::Pruned {
                first: start,
                below,
            });
        }
        Ok(())
    }

    /// One retention pass at `now_ms`; returns the watermark.
    pub async fn prune(&self, now_ms: u64) -> Result<u64, ReadingsError> {
        let store = &self.inner.store;
        let current = store.readings_pruned_below().await?;
        let sealed = self.size().await;
        let old_enough = match self.inner.policy.max_age_ms {
            Some(age) => {
                store
                    .checkpoint_size_signed_by(now_ms.saturating_sub(age))
                    .await?
            }
            None => 0,
        };
        let floor = self.export_floor().await?;
        let target = prune_target(self.inner.policy, sealed, old_enough, floor, current);
        if target <= current {
            self.inner.pruned_below.store(current, Ordering::Release);
            return Ok(current);
        }
        // Announce first: a reader that checks the watermark after reading
        // rows sees every row it missed as pruned, never as dropped.
        self.inner.pruned_below.store(target, Ordering::Release);
        let mut at = current;
        while at < target {
            let (next, deleted) = store.prune_readings(target, PRUNE_CHUNK).await?;
            self.inner.metrics.readings_pruned.inc_by(deleted);
            at = next;
        }
        tracing::info!(
            below = at,
            "reading bodies deleted by retention; their leaves stay"
        );
        Ok(at)
    }
}

/// Run a retention pass now and every [`RETENTION_EVERY`].
pub(crate) async fn run(readings: Readings) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = readings.prune(crate::unix_ms()).await {
            tracing::warn!(error = %e, "retention pass failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Policy = Policy {
        max_age_ms: None,
        max_count: None,
    };

    #[test]
    fn the_target_is_the_stricter_limit_within_what_may_go() {
        let age = Policy {
            max_age_ms: Some(1),
            ..NONE
        };
        let count = Policy {
            max_count: Some(10),
            ..NONE
        };
        let both = Policy {
            max_age_ms: Some(1),
            max_count: Some(10),
        };
        // Keep forever, no limit: nothing goes.
        assert_eq!(prune_target(NONE, 100, 60, None, 0), 0);
        // Age: what a checkpoint before the cutoff covers.
        assert_eq!(prune_target(age, 100, 60, None, 0), 60);
        // Count: all but the newest 10.
        assert_eq!(prune_target(count, 100, 60, None, 0), 90);
        assert_eq!(prune_target(count, 5, 0, None, 0), 0);
        // Both: the stricter.
        assert_eq!(prune_target(both, 100, 95, None, 0), 95);
        assert_eq!(prune_target(both, 100, 20, None, 0), 90);
        // Never what the parent has not acknowledged.
        assert_eq!(prune_target(both, 100, 95, Some(42), 0), 42);
        // Never backwards, never past the log.
        assert_eq!(prune_target(both, 100, 20, Some(42), 50), 50);
        assert_eq!(prune_target(age, 100, 500, None, 0), 100);
    }
}

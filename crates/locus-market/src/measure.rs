//! What a node measures of a provider from its own fabric view: uptime
//! from the liveness transitions its failure detector recorded, and the
//! round-trip time to each site from the network coordinates.
//!
//! A provider puts both in its offer ([`Offer::uptime_permille`],
//! [`Offer::site_rtt_ms`]); a customer holds the claimed uptime against
//! its own view of the provider ([`check_claimed_uptime`]) before it
//! proposes a contract. Everything here is a function of its arguments:
//! the transitions, "now" and the estimates are taken by the shell.
//!
//! # What the fabric's history holds
//!
//! Each node keeps, per node it knows, the last 16 liveness changes it
//! observed (`locus_fabric::view::HISTORY`), oldest first, stamped with
//! its own clock, across restarts of the observed node (a restart is a
//! `dead` → `alive` pair). Its entry for **itself** starts `alive` when
//! its agent started and never changes: a node cannot observe itself
//! down. So uptime is only measured over what the history covers — from
//! its first kept transition or the start of the window, whichever is
//! later — and time before that counts neither up nor down.

use std::collections::BTreeMap;

use locus_core::cluster::{Liveness, Transition};

use crate::book::{MAX_NAME, MAX_RTT_MS, MAX_SITE_RTTS, Offer};

/// The span uptime is measured over: the last 24 hours.
pub const UPTIME_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Least span a customer must have observed a provider over before it
/// holds the provider's claimed uptime against it: shorter, a single
/// suspicion would weigh too much.
pub const MIN_OBSERVED_MS: u64 = 60 * 1000;
/// How far a claimed uptime may exceed what the customer observed, per
/// mille: views of one node differ by when each observer noticed a
/// change (a suspicion lasts seconds), and the provider's claim may cover
/// a longer span than the customer saw.
pub const UPTIME_TOLERANCE_PERMILLE: u16 = 50;

/// Uptime as one node observed another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uptime {
    /// Time up over time observed, per mille.
    pub permille: u16,
    /// The span observed, ms: from the start of the window or the first
    /// transition kept, whichever is later, to now.
    pub observed_ms: u64,
}

/// Whether a liveness counts as up: `alive`, and `suspect` (a probe
/// failed, the node has not been declared down). `dead` and `left` are
/// down.
fn is_up(l: Liveness) -> bool {
    matches!(l, Liveness::Alive | Liveness::Suspect)
}

/// Uptime over the last `window_ms` before `now_ms` from `transitions`
/// (a node's liveness changes, each the liveness from its time on), or
/// `None` for an empty history. Time before the first transition is not
/// observed and does not count; transitions stamped after `now_ms` are
/// taken as at `now_ms`. A span of 0 ms (first seen just now) is up 1000
/// or 0 by the liveness it was seen in. The order of `transitions` does
/// not matter (equal times keep their order).
pub fn uptime(transitions: &[Transition], now_ms: u64, window_ms: u64) -> Option<Uptime> {
    let mut ordered: Vec<(u64, Liveness)> = transitions
        .iter()
        .map(|t| (t.at_unix_ms.min(now_ms), t.to))
        .collect();
    ordered.sort_by_key(|(at, _)| *at);
    let first = ordered.first()?.0;
    let start = first.max(now_ms.saturating_sub(window_ms));
    let mut up_ms: u64 = 0;
    for (i, (at, liveness)) in ordered.iter().enumerate() {
        let until = ordered.get(i + 1).map_or(now_ms, |next| next.0);
        if is_up(*liveness) {
            up_ms += until.saturating_sub((*at).max(start));
        }
    }
    let observed_ms = now_ms - start;
    let permille = if observed_ms == 0 {
        let last = ordered.last().map(|(_, l)| *l);
        if last.is_some_and(is_up) { 1000 } else { 0 }
    } else {
        (u128::from(up_ms.min(observed_ms)) * 1000 / u128::from(observed_ms)) as u16
    };
    Some(Uptime {
        permille,
        observed_ms,
    })
}

/// Why a customer refuses a matched offer's uptime.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the offer claims {claimed} ‰ uptime, but this node observed its provider up {observed} ‰ of the last {observed_secs} s (more than {tolerance} ‰ apart)"
)]
pub struct UptimeOverclaimed {
    pub claimed: u16,
    pub observed: u16,
    pub observed_secs: u64,
    pub tolerance: u16,
}

/// The customer's check of a matched offer's claimed uptime against its
/// own fabric view of the provider (`provider_transitions`: the
/// provider's liveness changes as this node recorded them): refused when
/// the claim exceeds the uptime observed over [`UPTIME_WINDOW_MS`] by
/// more than [`UPTIME_TOLERANCE_PERMILLE`]. Answers what was observed,
/// or `None` when this node has observed the provider for less than
/// [`MIN_OBSERVED_MS`] (nothing to hold the claim against: taken).
pub fn check_claimed_uptime(
    offer: &Offer,
    provider_transitions: &[Transition],
    now_ms: u64,
) -> Result<Option<Uptime>, UptimeOverclaimed> {
    let Some(seen) = uptime(provider_transitions, now_ms, UPTIME_WINDOW_MS)
        .filter(|u| u.observed_ms >= MIN_OBSERVED_MS)
    else {
        return Ok(None);
    };
    if offer.uptime_permille > seen.permille.saturating_add(UPTIME_TOLERANCE_PERMILLE) {
        return Err(UptimeOverclaimed {
            claimed: offer.uptime_permille,
            observed: seen.permille,
            observed_secs: seen.observed_ms / 1000,
            tolerance: UPTIME_TOLERANCE_PERMILLE,
        });
    }
    Ok(Some(seen))
}

/// A provider's round-trip time to each site, ms, for its offer:
/// `own_site` at 0, and for every other site the least of `estimates`
/// (the site of an alive node and the RTT its coordinates estimate to
/// it, ms), rounded up. Estimates that are not finite, negative, above
/// [`MAX_RTT_MS`] or of a site whose name a record would refuse are left
/// out; of the rest, the [`MAX_SITE_RTTS`] nearest sites are kept (ties
/// by name), its own first.
pub fn site_rtts<'a>(
    own_site: &str,
    estimates: impl IntoIterator<Item = (&'a str, f64)>,
) -> BTreeMap<String, u32> {
    let named = |s: &str| !s.is_empty() && s.len() <= MAX_NAME && !s.chars().any(char::is_control);
    let mut least: BTreeMap<&str, u32> = BTreeMap::new();
    for (site, rtt_ms) in estimates {
        if site == own_site
            || !named(site)
            || !rtt_ms.is_finite()
            || rtt_ms < 0.0
            || rtt_ms > f64::from(MAX_RTT_MS)
        {
            continue;
        }
        let ms = rtt_ms.ceil() as u32;
        least
            .entry(site)
            .and_modify(|m| *m = (*m).min(ms))
            .or_insert(ms);
    }
    let mut nearest: Vec<(u32, &str)> = least.into_iter().map(|(s, ms)| (ms, s)).collect();
    nearest.sort();
    let mut out = BTreeMap::new();
    if named(own_site) {
        out.insert(own_site.to_owned(), 0);
    }
    for (ms, site) in nearest {
        if out.len() >= MAX_SITE_RTTS {
            break;
        }
        out.insert(site.to_owned(), ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Entry;
    use crate::book::testing::offer;
    use crate::signed::testing::node;

    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;

    fn t(to: Liveness, at_unix_ms: u64) -> Transition {
        Transition { to, at_unix_ms }
    }

    #[test]
    fn an_empty_history_has_no_uptime() {
        assert_eq!(uptime(&[], 10 * HOUR, UPTIME_WINDOW_MS), None);
    }

    #[test]
    fn a_node_never_down_is_up_1000_over_what_was_seen() {
        let now = 48 * HOUR;
        // Seen 30 h ago: measured over the window only.
        let u = uptime(
            &[t(Liveness::Alive, now - 30 * HOUR)],
            now,
            UPTIME_WINDOW_MS,
        )
        .unwrap();
        assert_eq!(
            u,
            Uptime {
                permille: 1000,
                observed_ms: UPTIME_WINDOW_MS
            }
        );
        // Suspected for a moment and refuted: still up.
        let h = [
            t(Liveness::Alive, now - 2 * HOUR),
            t(Liveness::Suspect, now - HOUR),
            t(Liveness::Alive, now - HOUR + 3_000),
        ];
        assert_eq!(uptime(&h, now, UPTIME_WINDOW_MS).unwrap().permille, 1000);
    }

    #[test]
    fn a_node_seen_only_recently_is_measured_since_then() {
        let now = 48 * HOUR;
        let h = [t(Liveness::Alive, now - 10 * MIN)];
        let u = uptime(&h, now, UPTIME_WINDOW_MS).unwrap();
        assert_eq!(
            u,
            Uptime {
                permille: 1000,
                observed_ms: 10 * MIN
            }
        );
        // First seen this very millisecond: by the liveness it was seen in.
        assert_eq!(
            uptime(&[t(Liveness::Alive, now)], now, UPTIME_WINDOW_MS),
            Some(Uptime {
                permille: 1000,
                observed_ms: 0
            })
        );
        assert_eq!(
            uptime(&[t(Liveness::Dead, now + 5)], now, UPTIME_WINDOW_MS),
            Some(Uptime {
                permille: 0,
                observed_ms: 0
            })
        );
    }

    #[test]
    fn a_flapping_node_is_up_the_share_of_time_it_was_alive() {
        let now = 48 * HOUR;
        // Seen 4 h ago; alive 1 h, dead 1 h, twice: 500 ‰.
        let h = [
            t(Liveness::Alive, now - 4 * HOUR),
            t(Liveness::Dead, now - 3 * HOUR),
            t(Liveness::Alive, now - 2 * HOUR),
            t(Liveness::Dead, now - HOUR),
        ];
        let u = uptime(&h, now, UPTIME_WINDOW_MS).unwrap();
        assert_eq!(
            u,
            Uptime {
                permille: 500,
                observed_ms: 4 * HOUR
            }
        );
        // In any order.
        let mut shuffled = h.to_vec();
        shuffled.reverse();
        assert_eq!(uptime(&shuffled, now, UPTIME_WINDOW_MS), Some(u));
        // A window that starts inside the first dead hour: 1 h up of 2.5 h.
        let u = uptime(&h, now, 2 * HOUR + 30 * MIN).unwrap();
        assert_eq!(
            u,
            Uptime {
                permille: 400,
                observed_ms: 2 * HOUR + 30 * MIN
            }
        );
        // Left counts as down.
        let h = [
            t(Liveness::Alive, now - 2 * HOUR),
            t(Liveness::Left, now - HOUR),
        ];
        assert_eq!(uptime(&h, now, UPTIME_WINDOW_MS).unwrap().permille, 500);
    }

    fn offer_claiming(permille: u16) -> crate::book::Offer {
        let Entry::Offer(o) = offer(&node(1, 1), 1, 100, 0) else {
            unreachable!()
        };
        crate::book::Offer {
            uptime_permille: permille,
            ..o.body
        }
    }

    #[test]
    fn a_customer_refuses_an_uptime_claimed_above_what_it_observed() {
        let now = 48 * HOUR;
        let flapping = [
            t(Liveness::Alive, now - 4 * HOUR),
            t(Liveness::Dead, now - 3 * HOUR),
            t(Liveness::Alive, now - 2 * HOUR),
            t(Liveness::Dead, now - HOUR),
        ];
        let err = check_claimed_uptime(&offer_claiming(995), &flapping, now).unwrap_err();
        assert_eq!(
            (err.claimed, err.observed, err.observed_secs),
            (995, 500, 4 * 3600)
        );
        assert!(err.to_string().contains("claims 995 ‰ uptime"), "{err}");
        // Within the tolerance, or below what was observed: taken.
        let seen = check_claimed_uptime(&offer_claiming(550), &flapping, now).unwrap();
        assert_eq!(seen.map(|u| u.permille), Some(500));
        assert!(check_claimed_uptime(&offer_claiming(551), &flapping, now).is_err());
        // Observed too briefly, or not at all: nothing to hold it against.
        let brief = [t(Liveness::Dead, now - MIN + 1)];
        assert_eq!(
            check_claimed_uptime(&offer_claiming(1000), &brief, now),
            Ok(None)
        );
        assert_eq!(
            check_claimed_uptime(&offer_claiming(1000), &[], now),
            Ok(None)
        );
    }

    #[test]
    fn site_rtts_keep_the_least_estimate_per_site_and_the_nearest_sites() {
        let rtts = site_rtts(
            "lab",
            [("edge", 12.2), ("edge", 30.0), ("lab", 4.0), ("far", 80.0)],
        );
        assert_eq!(
            rtts,
            BTreeMap::from([
                ("edge".to_owned(), 13),
                ("far".to_owned(), 80),
                ("lab".to_owned(), 0)
            ])
        );
        // Nonsense estimates and names a record refuses are left out.
        let rtts = site_rtts(
            "lab",
            [
                ("nan", f64::NAN),
                ("neg", -1.0),
                ("beyond", f64::from(MAX_RTT_MS) + 1.0),
                ("", 1.0),
                ("bad\nname", 1.0),
            ],
        );
        assert_eq!(rtts, BTreeMap::from([("lab".to_owned(), 0)]));
        // At most MAX_SITE_RTTS: its own, then the nearest.
        let names: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
        let rtts = site_rtts(
            "lab",
            names
                .iter()
                .enumerate()
                .map(|(i, s)| (s.as_str(), 100.0 - i as f64)),
        );
        assert_eq!(rtts.len(), MAX_SITE_RTTS);
        assert_eq!(rtts.get("lab"), Some(&0));
        assert_eq!(rtts.get("s39"), Some(&61));
        assert_eq!(rtts.get("s25"), Some(&75));
        assert_eq!(rtts.get("s24"), None);
    }
}

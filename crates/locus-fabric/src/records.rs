//! Owned records: every node writes its own typed keys (`node/info`,
//! `workload/42`, …) and every other node holds a read-only replica.
//!
//! Versions are per owner and per generation: a record `(owner, key)` moves
//! only forward in `(generation, version)`. A new generation of an owner
//! replaces everything known of its older generations (the owner republishes
//! what it still has at start). Deletions are tombstones, kept for
//! [`TOMBSTONE_TTL_MS`] so that late replicas learn them too.
//!
//! Updates travel as foca custom broadcasts. Now and then each node also
//! sends one random peer a digest of the heads it knows ([`Summary`] per
//! owner, a bounded random sample), so a replica that missed an update
//! notices and pulls what it lacks from the owner (see `Fabric`). Digests go
//! to one peer, never by epidemic broadcast: their cost stays constant per
//! node whatever the cluster size.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use locus_core::NodeId;
use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 96;
/// Largest value, in bytes: an update must fit in one gossip packet.
pub const MAX_VALUE_LEN: usize = 900;
/// Most live records one owner may hold.
pub const MAX_RECORDS_PER_OWNER: usize = 1024;
/// How long a tombstone is kept.
pub const TOMBSTONE_TTL_MS: u64 = 3_600_000;
/// Events kept for subscribers that fall behind, at most.
pub const EVENT_BACKLOG: usize = 4096;

/// Why a record cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record key {0:?} must be 1 to {MAX_KEY_LEN} bytes of [a-z0-9._/:-]")]
    BadKey(String),
    #[error("record {key:?} is {len} bytes; the limit is {MAX_VALUE_LEN}")]
    TooLarge { key: String, len: usize },
    #[error("this node already owns {MAX_RECORDS_PER_OWNER} records")]
    TooMany,
}

/// Check a record key.
pub fn check_key(key: &str) -> Result<(), RecordError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'/' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RecordError::BadKey(key.to_owned()))
    }
}

/// One write of a record, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub owner: NodeId,
    pub generation: u64,
    pub key: String,
    pub version: u64,
    /// `None` is a deletion (tombstone).
    pub value: Option<Vec<u8>>,
}

/// An owner's head: the highest version it has written in a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub owner: NodeId,
    pub generation: u64,
    pub version: u64,
}

/// What the fabric disseminates as a foca custom broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Update(Update),
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: u64,
    pub value: Option<Vec<u8>>,
    /// Local time (unix ms) when this replica learned the version.
    pub stored_at_ms: u64,
}

/// A change to a record, for subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEvent {
    pub owner: NodeId,
    pub key: String,
    pub version: u64,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Owner {
    generation: u64,
    /// Watermark: every live record with a version up to this one is held.
    /// It moves with contiguous updates and with complete sync ranges, never
    /// past a gap (an update may arrive before an older one it skipped).
    applied: u64,
    /// Highest version the owner has announced (from summaries).
    head: u64,
    records: BTreeMap<String, Versioned>,
}

/// Every record this node knows, its own included.
#[derive(Debug, Default)]
pub struct Records {
    owners: BTreeMap<NodeId, Owner>,
    events: VecDeque<RecordEvent>,
    /// Events dropped because no one read them in time.
    pub events_dropped: u64,
}

/// What applying an item changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing new.
    Stale,
    /// A summary told us the owner is ahead of our replica.
    Behind {
        owner: NodeId,
        generation: u64,
        since: u64,
    },
    /// A summary that matches what we hold.
    UpToDate,
}

impl Records {
    /// Apply an update; true if it was new.
    pub fn apply(&mut self, u: Update, now_ms: u64) -> bool {
        if check_key(&u.key).is_err() || u.value.as_ref().is_some_and(|v| v.len() > MAX_VALUE_LEN) {
            return false;
        }
        let owner = self.owners.entry(u.owner).or_default();
        if u.generation < owner.generation {
            return false;
        }
        if u.generation > owner.generation {
            // A new incarnation of the owner: forget the old one's records.
            *owner = Owner {
                generation: u.generation,
                ..Owner::default()
            };
        }
        if let Some(existing) = owner.records.get(&u.key)
            && existing.version >= u.version
        {
            return false;
        }
        let live = owner.records.values().filter(|r| r.value.is_some()).count();
        if u.value.is_some() && live >= MAX_RECORDS_PER_OWNER && !owner.records.contains_key(&u.key)
        {
            return false;
        }
        if u.version == owner.applied + 1 {
            owner.applied = u.version;
        }
        owner.head = owner.head.max(u.version);
        owner.records.insert(
            u.key.clone(),
            Versioned {
                version: u.version,
                value: u.value.clone(),
                stored_at_ms: now_ms,
            },
        );
        if self.events.len() >= EVENT_BACKLOG {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(RecordEvent {
            owner: u.owner,
            key: u.key,
            version: u.version,
            value: u.value,
        });
        true
    }

    /// Apply the updates of one sync response, which hold every record of
    /// their owner with a version in `(after, min(highest, complete_to)]`:
    /// when that range starts at or below the watermark, the watermark moves
    /// to its end. Returns how many updates were new.
    pub fn apply_range(
        &mut self,
        after: u64,
        complete_to: u64,
        updates: Vec<Update>,
        now_ms: u64,
    ) -> u64 {
        let Some(first) = updates.first() else {
            return 0;
        };
        let (owner, generation) = (first.owner, first.generation);
        let highest = updates.iter().map(|u| u.version).max().unwrap_or(0);
        let complete = highest.min(complete_to);
        let coherent = updates
            .iter()
            .all(|u| u.owner == owner && u.generation == generation && u.version > after);
        let mut new = 0;
        for u in updates {
            if self.apply(u, now_ms) {
                new += 1;
            }
        }
        if coherent
            && let Some(o) = self.owners.get_mut(&owner)
            && o.generation == generation
            && after <= o.applied
        {
            o.applied = o.applied.max(complete);
            o.head = o.head.max(highest);
        }
        new
    }

    /// Take note of an owner's head.
    pub fn note_summary(&mut self, s: &Summary) -> Applied {
        let owner = self.owners.entry(s.owner).or_default();
        if s.generation < owner.generation {
            return Applied::Stale;
        }
        if s.generation > owner.generation {
            *owner = Owner {
                generation: s.generation,
                ..Owner::default()
            };
        }
        owner.head = owner.head.max(s.version);
        if owner.applied < owner.head {
            Applied::Behind {
                owner: s.owner,
                generation: owner.generation,
                since: owner.applied,
            }
        } else {
            Applied::UpToDate
        }
    }

    /// Updates of `owner` newer than `since`, in version order (what a
    /// replica that is behind asks for), and this node's watermark for that
    /// owner: the answer is complete up to it, and holds whatever else this
    /// node has (a replica with a gap still passes on what it holds).
    pub fn since(&self, owner: NodeId, generation: u64, since: u64) -> (Vec<Update>, u64) {
        let Some(o) = self.owners.get(&owner) else {
            return (Vec::new(), 0);
        };
        if o.generation != generation {
            return (Vec::new(), 0);
        }
        let mut out: Vec<Update> = o
            .records
            .iter()
            .filter(|(_, r)| r.version > since)
            .map(|(k, r)| Update {
                owner,
                generation,
                key: k.clone(),
                version: r.version,
                value: r.value.clone(),
            })
            .collect();
        out.sort_by_key(|u| u.version);
        (out, o.applied)
    }

    /// The live value of a record.
    pub fn get(&self, owner: NodeId, key: &str) -> Option<&[u8]> {
        self.owners.get(&owner)?.records.get(key)?.value.as_deref()
    }

    /// The live records of `owner`, by key.
    pub fn of(&self, owner: NodeId) -> impl Iterator<Item = (&str, &Versioned)> {
        self.owners
            .get(&owner)
            .into_iter()
            .flat_map(|o| o.records.iter())
            .filter(|(_, r)| r.value.is_some())
            .map(|(k, r)| (k.as_str(), r))
    }

    /// Generation and head version known for `owner`.
    pub fn head(&self, owner: NodeId) -> Option<(u64, u64)> {
        self.owners.get(&owner).map(|o| (o.generation, o.applied))
    }

    /// What this replica holds of every owner, as summaries.
    pub fn summaries(&self) -> Vec<Summary> {
        self.owners
            .iter()
            .map(|(owner, o)| Summary {
                owner: *owner,
                generation: o.generation,
                version: o.applied,
            })
            .collect()
    }

    /// Drop tombstones older than the TTL.
    pub fn expire_tombstones(&mut self, now_ms: u64) {
        for owner in self.owners.values_mut() {
            owner.records.retain(|_, r| {
                r.value.is_some() || now_ms.saturating_sub(r.stored_at_ms) < TOMBSTONE_TTL_MS
            });
        }
    }

    /// Take the pending events, oldest first.
    pub fn drain_events(&mut self) -> Vec<RecordEvent> {
        self.events.drain(..).collect()
    }

    /// Number of owners with at least one record.
    pub fn owners(&self) -> usize {
        self.owners.len()
    }
}

/// The records, shared between the fabric and foca's broadcast handler.
#[derive(Clone, Default)]
pub struct SharedRecords {
    inner: Arc<Mutex<Records>>,
    clock_ms: Arc<std::sync::atomic::AtomicU64>,
    /// This node: only it writes its own records.
    local: Arc<Mutex<Option<NodeId>>>,
}

impl SharedRecords {
    /// Lock the records (never poisoned in practice: no code panics while
    /// holding the lock; a poisoned lock is recovered).
    pub fn lock(&self) -> MutexGuard<'_, Records> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_local(&self, id: NodeId) {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
    }

    /// Whether `owner` is this node.
    pub fn is_local(&self, owner: NodeId) -> bool {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) == Some(owner)
    }

    pub(crate) fn set_clock(&self, now_ms: u64) {
        self.clock_ms
            .store(now_ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Key of a broadcast in foca's queue: a newer item for the same record
/// replaces the older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemKey {
    owner: NodeId,
    key: String,
}

impl foca::Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

/// Why a broadcast item was refused.
#[derive(Debug, thiserror::Error)]
#[error("undecodable record broadcast: {0}")]
pub struct ItemError(String);

impl<T> foca::BroadcastHandler<T> for SharedRecords {
    type Key = ItemKey;
    type Error = ItemError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&T>,
    ) -> Result<Option<ItemKey>, ItemError> {
        let item: Item = postcard::from_bytes(data).map_err(|e| ItemError(e.to_string()))?;
        // Only this node writes its own records: ignore claims from peers.
        let Item::Update(u) = item;
        if sender.is_some() && self.is_local(u.owner) {
            return Ok(None);
        }
        let now = self.clock_ms.load(std::sync::atomic::Ordering::Relaxed);
        let key = ItemKey {
            owner: u.owner,
            key: u.key.clone(),
        };
        Ok(self.lock().apply(u, now).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 10])
    }

    fn up(owner: u8, generation: u64, key: &str, version: u64, value: Option<&str>) -> Update {
        Update {
            owner: id(owner),
            generation,
            key: key.into(),
            version,
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn versions_only_move_forward_and_tombstones_delete() {
        let mut r = Records::default();
        assert!(r.apply(up(1, 1, "a", 1, Some("one")), 0));
        assert!(r.apply(up(1, 1, "a", 2, Some("two")), 0));
        assert!(
            !r.apply(up(1, 1, "a", 1, Some("one")), 0),
            "older version ignored"
        );
        assert!(
            !r.apply(up(1, 1, "a", 2, Some("two")), 0),
            "duplicate ignored"
        );
        assert_eq!(r.get(id(1), "a"), Some(&b"two"[..]));
        assert!(r.apply(up(1, 1, "a", 3, None), 0));
        assert_eq!(r.get(id(1), "a"), None);
        assert_eq!(
            r.since(id(1), 1, 2).0.len(),
            1,
            "the tombstone is served to late replicas"
        );
        r.expire_tombstones(TOMBSTONE_TTL_MS + 1);
        assert!(r.since(id(1), 1, 0).0.is_empty());
    }

    #[test]
    fn an_update_past_a_gap_does_not_hide_the_gap() {
        let mut r = Records::default();
        // Version 5 arrives first (a broadcast overtook versions 1..=4).
        assert!(r.apply(up(1, 1, "w", 5, Some("late")), 0));
        assert_eq!(r.head(id(1)), Some((1, 0)));
        let digest = Summary {
            owner: id(1),
            generation: 1,
            version: 5,
        };
        assert_eq!(
            r.note_summary(&digest),
            Applied::Behind {
                owner: id(1),
                generation: 1,
                since: 0
            }
        );
        // A replica serves what it holds, with its watermark.
        let (held, watermark) = r.since(id(1), 1, 0);
        assert_eq!((held.len(), watermark), (1, 0));
        // A complete range from the owner fills the gap.
        let range = vec![
            up(1, 1, "info", 1, Some("i")),
            up(1, 1, "w", 5, Some("late")),
        ];
        assert_eq!(r.apply_range(0, 5, range, 0), 1);
        assert_eq!(r.head(id(1)), Some((1, 5)));
        assert_eq!(r.note_summary(&digest), Applied::UpToDate);
        // A range that starts above the watermark does not move it.
        let mut r2 = Records::default();
        r2.apply_range(3, 9, vec![up(1, 1, "x", 4, Some("x"))], 0);
        assert_eq!(r2.head(id(1)), Some((1, 0)));
        // A replica with a gap passes on what it holds and says how far it
        // is complete: the receiver gets the records, not a false watermark.
        let mut r3 = Records::default();
        let partial = vec![up(1, 1, "a", 1, Some("a")), up(1, 1, "w", 5, Some("late"))];
        assert_eq!(r3.apply_range(0, 1, partial, 0), 2);
        assert_eq!(r3.get(id(1), "w"), Some(&b"late"[..]));
        assert_eq!(r3.head(id(1)), Some((1, 1)));
    }

    #[test]
    fn a_new_generation_replaces_the_old_records() {
        let mut r = Records::default();
        r.apply(up(1, 1, "a", 5, Some("old")), 0);
        r.apply(up(1, 1, "b", 6, Some("old")), 0);
        assert!(r.apply(up(1, 2, "a", 1, Some("new")), 0));
        assert_eq!(r.get(id(1), "a"), Some(&b"new"[..]));
        assert_eq!(r.get(id(1), "b"), None);
        assert!(
            !r.apply(up(1, 1, "c", 9, Some("stale")), 0),
            "an old generation is ignored"
        );
    }

    #[test]
    fn summaries_reveal_a_replica_that_is_behind() {
        let mut r = Records::default();
        r.apply(up(1, 1, "a", 1, Some("x")), 0);
        let s = Summary {
            owner: id(1),
            generation: 1,
            version: 4,
        };
        assert_eq!(
            r.note_summary(&s),
            Applied::Behind {
                owner: id(1),
                generation: 1,
                since: 1
            }
        );
        for v in 2..=4 {
            r.apply(up(1, 1, &format!("k{v}"), v, Some("y")), 0);
        }
        assert_eq!(r.note_summary(&s), Applied::UpToDate);
    }

    #[test]
    fn limits_are_enforced_on_replicas_too() {
        let mut r = Records::default();
        assert!(!r.apply(up(1, 1, "BAD KEY", 1, Some("x")), 0));
        let big = "x".repeat(MAX_VALUE_LEN + 1);
        assert!(!r.apply(up(1, 1, "a", 1, Some(&big)), 0));
        for i in 0..MAX_RECORDS_PER_OWNER {
            assert!(r.apply(up(2, 1, &format!("k{i}"), i as u64 + 1, Some("v")), 0));
        }
        assert!(!r.apply(up(2, 1, "one-too-many", 5000, Some("v")), 0));
    }

    #[test]
    fn peers_cannot_write_this_nodes_records() {
        use foca::BroadcastHandler;
        let mut shared = SharedRecords::default();
        shared.set_local(id(1));
        let mine = postcard::to_allocvec(&Item::Update(up(1, 1, "a", 1, Some("mine")))).unwrap();
        assert!(
            <SharedRecords as BroadcastHandler<u8>>::receive_item(&mut shared, &mine, None)
                .unwrap()
                .is_some()
        );
        let forged =
            postcard::to_allocvec(&Item::Update(up(1, 9, "a", 9, Some("forged")))).unwrap();
        assert!(
            <SharedRecords as BroadcastHandler<u8>>::receive_item(&mut shared, &forged, Some(&7))
                .unwrap()
                .is_none()
        );
        assert_eq!(shared.lock().get(id(1), "a"), Some(&b"mine"[..]));
    }

    proptest! {
        #[test]
        fn replicas_converge_whatever_the_order(mut versions in proptest::collection::vec(1u64..50, 1..40)) {
            let updates: Vec<Update> = versions.iter().map(|v| up(1, 1, &format!("k{}", v % 5), *v, Some(&v.to_string()))).collect();
            let mut a = Records::default();
            for u in &updates { a.apply(u.clone(), 0); }
            versions.reverse();
            let mut b = Records::default();
            for u in updates.iter().rev() { b.apply(u.clone(), 0); }
            for k in 0..5 {
                let key = format!("k{k}");
                prop_assert_eq!(a.get(id(1), &key), b.get(id(1), &key));
            }
        }

        #[test]
        fn decoding_garbage_items_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut shared = SharedRecords::default();
            let _ = <SharedRecords as foca::BroadcastHandler<()>>::receive_item(&mut shared, &bytes, None);
        }
    }
}

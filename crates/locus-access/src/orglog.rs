//! The org admission log: the set of orgs of the cluster as an
//! append-only chain of signed entries any node can verify alone.
//!
//! Entry 0 is the genesis org, signed by its own key (`by` is itself).
//! Entry `i` admits one more org: it names the hash of entry `i - 1`, its
//! seq is `i`, and it is signed by the key of `by`, an org admitted by an
//! earlier entry. The signed bytes are `b"locus/org-admit/v1\0" ‖
//! postcard(entry)`; the hash an entry is chained by is
//! `BLAKE3(b"locus/org-entry/v1\0" ‖ postcard(signed entry))`.
//!
//! Two copies of the log merge when one extends the other; two copies that
//! differ at some seq are a fork, reported with that seq and never merged.

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::encoding::{self, decode, encode};
use crate::org::{self, OrgId, verifying_key};

/// Domain separation of the bytes an admitting org signs.
pub const ADMIT_DOMAIN: &[u8] = b"locus/org-admit/v1\0";

/// Domain separation of the hash that chains entries.
pub const ENTRY_HASH_DOMAIN: &[u8] = b"locus/org-entry/v1\0";

/// Most entries (orgs) a log holds.
pub const MAX_ORG_LOG_ENTRIES: usize = 1024;

/// Largest encoded entry accepted from outside.
pub const MAX_ORG_ENTRY_BYTES: usize = 512;

/// Longest org name, in bytes.
pub const MAX_ORG_NAME_BYTES: usize = 63;

/// One admission: `by` admits `org` (whose key is `org_key`) under `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Hash of the previous signed entry; all zeros for the genesis.
    #[serde(with = "encoding::bytes")]
    pub prev: [u8; 32],
    /// The admitted org, derived from `org_key`.
    pub org: OrgId,
    /// The admitted org's ed25519 public key.
    #[serde(with = "encoding::bytes")]
    pub org_key: [u8; 32],
    /// A name for people: 1–63 letters, digits, `.`, `_`, `-` or spaces,
    /// unique in the log.
    pub name: String,
    /// The admitting org (the org itself for the genesis).
    pub by: OrgId,
}

/// An entry with the admitting org's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOrgEntry {
    pub entry: OrgEntry,
    #[serde(with = "encoding::bytes")]
    pub signature: [u8; 64],
}

impl SignedOrgEntry {
    /// The hash the next entry chains to.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(ENTRY_HASH_DOMAIN);
        h.update(&encode(self));
        *h.finalize().as_bytes()
    }

    /// The wire form: postcard of the signed entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode the wire form (at most [`MAX_ORG_ENTRY_BYTES`]); not checked yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OrgLogError> {
        decode(bytes, MAX_ORG_ENTRY_BYTES).map_err(|e| OrgLogError::Entry {
            index: 0,
            fault: EntryFault::Malformed(e),
        })
    }
}

/// One admitted org, as the log proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgMember {
    pub org: OrgId,
    pub key: VerifyingKey,
    pub name: String,
    /// Who admitted it (itself for the genesis).
    pub admitted_by: OrgId,
    /// Its entry's seq.
    pub seq: u64,
}

/// The orgs a valid log admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgSet {
    members: BTreeMap<OrgId, OrgMember>,
}

impl OrgSet {
    /// Whether `org` is admitted.
    pub fn contains(&self, org: &OrgId) -> bool {
        self.members.contains_key(org)
    }

    /// The admitted org's public key.
    pub fn key(&self, org: &OrgId) -> Option<&VerifyingKey> {
        self.members.get(org).map(|m| &m.key)
    }

    /// The admitted org.
    pub fn get(&self, org: &OrgId) -> Option<&OrgMember> {
        self.members.get(org)
    }

    /// Every admitted org, by id.
    pub fn iter(&self) -> impl Iterator<Item = &OrgMember> {
        self.members.values()
    }

    /// How many orgs are admitted.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no org is admitted (never for a verified log).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// What is wrong with one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryFault {
    #[error("not an org log entry: {0}")]
    Malformed(String),
    #[error("seq is {found}, expected {expected}")]
    Seq { found: u64, expected: u64 },
    #[error("prev is not the hash of the entry before it")]
    Prev,
    #[error("the genesis entry must be admitted by the org itself, not by {by}")]
    GenesisBy { by: OrgId },
    #[error("org id {claimed} is not the id of its key ({actual})")]
    KeyMismatch { claimed: OrgId, actual: OrgId },
    #[error("org key: {0}")]
    BadKey(String),
    #[error("admitted by {by}, which is not an admitted org")]
    UnknownAdmitter { by: OrgId },
    #[error("org {org} is already admitted (seq {seq})")]
    Duplicate { org: OrgId, seq: u64 },
    #[error("org name {name:?} is already taken by {org}")]
    NameTaken { name: String, org: OrgId },
    #[error("org name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("the signature is not {by}'s")]
    BadSignature { by: OrgId },
}

/// Why a log (or an entry for it) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgLogError {
    #[error("org log entry {index}: {fault}")]
    Entry { index: usize, fault: EntryFault },
    #[error("an org log has at least its genesis entry")]
    Empty,
    #[error("org log of {len} entries: at most {MAX_ORG_LOG_ENTRIES} are allowed")]
    TooLong { len: usize },
    #[error("the two copies of the org log fork at seq {seq}")]
    Fork { seq: u64 },
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_ORG_NAME_BYTES {
        return Err(format!("must be 1 to {MAX_ORG_NAME_BYTES} bytes long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ')))
    {
        return Err(format!(
            "contains {c:?}; use letters, digits, '.', '_', '-' and spaces"
        ));
    }
    Ok(())
}

/// A verified org log: its entries and the orgs they admit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgLog {
    entries: Vec<SignedOrgEntry>,
    set: OrgSet,
}

impl OrgLog {
    /// A new log whose genesis is the org holding `key`.
    pub fn genesis(key: &SigningKey, name: &str) -> Result<Self, OrgLogError> {
        let org = OrgId::from_public_key(&key.verifying_key());
        let entry = OrgEntry {
            seq: 0,
            prev: [0; 32],
            org,
            org_key: key.verifying_key().to_bytes(),
            name: name.to_owned(),
            by: org,
        };
        let signed = sign_entry(entry, key);
        Self::verify(std::slice::from_ref(&signed)).map(|set| OrgLog {
            entries: vec![signed],
            set,
        })
    }

    /// Check a whole log: the genesis, then each entry against those
    /// before it. Answers the orgs it admits, or the first bad entry.
    pub fn verify(entries: &[SignedOrgEntry]) -> Result<OrgSet, OrgLogError> {
        if entries.is_empty() {
            return Err(OrgLogError::Empty);
        }
        if entries.len() > MAX_ORG_LOG_ENTRIES {
            return Err(OrgLogError::TooLong { len: entries.len() });
        }
        let mut set = OrgSet::default();
        let mut prev = None;
        for (index, signed) in entries.iter().enumerate() {
            check_entry(&set, prev.as_ref(), index, signed)
                .map_err(|fault| OrgLogError::Entry { index, fault })?;
            add(&mut set, signed);
            prev = Some(signed.hash());
        }
        Ok(set)
    }

    /// A verified log from entries read from outside.
    pub fn from_entries(entries: Vec<SignedOrgEntry>) -> Result<Self, OrgLogError> {
        let set = Self::verify(&entries)?;
        Ok(OrgLog { entries, set })
    }

    /// The entries, genesis first.
    pub fn entries(&self) -> &[SignedOrgEntry] {
        &self.entries
    }

    /// The admitted orgs.
    pub fn orgs(&self) -> &OrgSet {
        &self.set
    }

    /// The genesis org.
    pub fn genesis_org(&self) -> OrgId {
        self.entries[0].entry.org
    }

    /// The hash of the last entry (what the next one chains to).
    pub fn head(&self) -> [u8; 32] {
        // A log always holds its genesis entry.
        self.entries.last().map_or([0; 32], SignedOrgEntry::hash)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: a log holds at least its genesis.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The admitted org `by_key` admits the org holding `org_key` as
    /// `name`: signs the next entry and appends it.
    pub fn admit(
        &mut self,
        by_key: &SigningKey,
        org_key: &VerifyingKey,
        name: &str,
    ) -> Result<&SignedOrgEntry, OrgLogError> {
        let entry = OrgEntry {
            seq: self.entries.len() as u64,
            prev: self.head(),
            org: OrgId::from_public_key(org_key),
            org_key: org_key.to_bytes(),
            name: name.to_owned(),
            by: OrgId::from_public_key(&by_key.verifying_key()),
        };
        self.append(sign_entry(entry, by_key))
    }

    /// Append an entry made elsewhere, after checking it extends this log.
    pub fn append(&mut self, signed: SignedOrgEntry) -> Result<&SignedOrgEntry, OrgLogError> {
        let index = self.entries.len();
        if index >= MAX_ORG_LOG_ENTRIES {
            return Err(OrgLogError::TooLong { len: index + 1 });
        }
        let prev = self.head();
        check_entry(&self.set, Some(&prev), index, &signed)
            .map_err(|fault| OrgLogError::Entry { index, fault })?;
        add(&mut self.set, &signed);
        self.entries.push(signed);
        Ok(&self.entries[index])
    }

    /// Merge another copy: the longer valid log wins when it extends the
    /// shorter one. Answers how many entries this log gained; a copy that
    /// differs at some seq is a fork, and this log is left as it was.
    pub fn merge(&mut self, other: &[SignedOrgEntry]) -> Result<usize, OrgLogError> {
        let common = self.entries.len().min(other.len());
        if let Some(seq) = (0..common).find(|&i| self.entries[i] != other[i]) {
            return Err(OrgLogError::Fork { seq: seq as u64 });
        }
        if other.len() <= self.entries.len() {
            return Ok(0);
        }
        let mut merged = self.clone();
        for signed in &other[self.entries.len()..] {
            merged.append(signed.clone())?;
        }
        let added = merged.entries.len() - self.entries.len();
        *self = merged;
        Ok(added)
    }
}

fn sign_entry(entry: OrgEntry, key: &SigningKey) -> SignedOrgEntry {
    let signature = org::sign(key, ADMIT_DOMAIN, &encode(&entry));
    SignedOrgEntry { entry, signature }
}

fn add(set: &mut OrgSet, signed: &SignedOrgEntry) {
    let e = &signed.entry;
    if let Ok(key) = verifying_key(&e.org_key) {
        set.members.insert(
            e.org,
            OrgMember {
                org: e.org,
                key,
                name: e.name.clone(),
                admitted_by: e.by,
                seq: e.seq,
            },
        );
    }
}

/// Check entry `index` against the orgs admitted before it and the hash of
/// the entry before it (`None` for the genesis).
fn check_entry(
    set: &OrgSet,
    prev: Option<&[u8; 32]>,
    index: usize,
    signed: &SignedOrgEntry,
) -> Result<(), EntryFault> {
    let e = &signed.entry;
    if e.seq != index as u64 {
        return Err(EntryFault::Seq {
            found: e.seq,
            expected: index as u64,
        });
    }
    if e.prev != prev.copied().unwrap_or([0; 32]) {
        return Err(EntryFault::Prev);
    }
    let key = verifying_key(&e.org_key).map_err(EntryFault::BadKey)?;
    let actual = OrgId::from_public_key(&key);
    if actual != e.org {
        return Err(EntryFault::KeyMismatch {
            claimed: e.org,
            actual,
        });
    }
    check_name(&e.name).map_err(|reason| EntryFault::BadName {
        name: e.name.clone(),
        reason,
    })?;
    if let Some(m) = set.get(&e.org) {
        return Err(EntryFault::Duplicate {
            org: e.org,
            seq: m.seq,
        });
    }
    if let Some(m) = set.iter().find(|m| m.name == e.name) {
        return Err(EntryFault::NameTaken {
            name: e.name.clone(),
            org: m.org,
        });
    }
    let signer = if prev.is_none() {
        if e.by != e.org {
            return Err(EntryFault::GenesisBy { by: e.by });
        }
        key
    } else {
        *set.key(&e.by)
            .ok_or(EntryFault::UnknownAdmitter { by: e.by })?
    };
    if !org::verify(&signer, ADMIT_DOMAIN, &encode(e), &signed.signature) {
        return Err(EntryFault::BadSignature { by: e.by });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn id(n: u8) -> OrgId {
        OrgId::from_public_key(&key(n).verifying_key())
    }

    /// Genesis org 1, which admits 2, which admits 3.
    fn log3() -> OrgLog {
        let mut log = OrgLog::genesis(&key(1), "one").unwrap();
        log.admit(&key(1), &key(2).verifying_key(), "two").unwrap();
        log.admit(&key(2), &key(3).verifying_key(), "three")
            .unwrap();
        log
    }

    #[test]
    fn a_chain_of_admissions_verifies() {
        let log = log3();
        let set = OrgLog::verify(log.entries()).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.get(&id(3)).unwrap().admitted_by, id(2));
        assert_eq!(set.key(&id(2)), Some(&key(2).verifying_key()));
        assert_eq!(log.genesis_org(), id(1));
        assert!(!set.contains(&id(4)));
    }

    #[test]
    fn only_admitted_orgs_admit() {
        let mut log = log3();
        let err = log
            .admit(&key(9), &key(4).verifying_key(), "four")
            .unwrap_err();
        assert_eq!(
            err,
            OrgLogError::Entry {
                index: 3,
                fault: EntryFault::UnknownAdmitter { by: id(9) }
            }
        );
        assert!(
            err.to_string().starts_with("org log entry 3: admitted by"),
            "{err}"
        );
        assert_eq!(log.len(), 3, "a refused entry is not appended");
    }

    #[test]
    fn duplicates_and_taken_names_are_refused() {
        let mut log = log3();
        assert!(matches!(
            log.admit(&key(1), &key(2).verifying_key(), "again"),
            Err(OrgLogError::Entry {
                fault: EntryFault::Duplicate { seq: 1, .. },
                ..
            })
        ));
        assert!(matches!(
            log.admit(&key(1), &key(4).verifying_key(), "two"),
            Err(OrgLogError::Entry {
                fault: EntryFault::NameTaken { .. },
                ..
            })
        ));
        assert!(matches!(
            log.admit(&key(1), &key(4).verifying_key(), "bad\nname"),
            Err(OrgLogError::Entry {
                fault: EntryFault::BadName { .. },
                ..
            })
        ));
    }

    #[test]
    fn tampering_names_the_entry() {
        let log = log3();
        let mut entries = log.entries().to_vec();
        entries[1].entry.name = "deux".into();
        // Entry 1's signature breaks, and so would entry 2's prev.
        assert_eq!(
            OrgLog::verify(&entries).unwrap_err(),
            OrgLogError::Entry {
                index: 1,
                fault: EntryFault::BadSignature { by: id(1) }
            }
        );
        let mut entries = log.entries().to_vec();
        entries.swap(1, 2);
        assert!(matches!(
            OrgLog::verify(&entries),
            Err(OrgLogError::Entry {
                index: 1,
                fault: EntryFault::Seq {
                    found: 2,
                    expected: 1
                }
            })
        ));
        let mut entries = log.entries().to_vec();
        entries[2].entry.prev = [7; 32];
        assert!(matches!(
            OrgLog::verify(&entries),
            Err(OrgLogError::Entry {
                index: 2,
                fault: EntryFault::Prev
            })
        ));
        assert_eq!(OrgLog::verify(&[]), Err(OrgLogError::Empty));
    }

    #[test]
    fn the_genesis_is_self_signed() {
        let log = log3();
        let mut entries = log.entries().to_vec();
        entries[0].entry.by = id(2);
        assert!(matches!(
            OrgLog::verify(&entries[..1]),
            Err(OrgLogError::Entry {
                index: 0,
                fault: EntryFault::GenesisBy { .. }
            })
        ));
    }

    #[test]
    fn merge_takes_the_longer_chain_and_reports_forks() {
        let full = log3();
        let mut short = OrgLog::from_entries(full.entries()[..1].to_vec()).unwrap();
        assert_eq!(short.merge(full.entries()), Ok(2));
        assert_eq!(short, full);
        // The shorter copy changes nothing.
        let mut same = full.clone();
        assert_eq!(same.merge(&full.entries()[..2]), Ok(0));
        assert_eq!(same, full);
        // A different admission at seq 2 is a fork.
        let mut other = OrgLog::from_entries(full.entries()[..2].to_vec()).unwrap();
        other
            .admit(&key(1), &key(5).verifying_key(), "five")
            .unwrap();
        let mut mine = full.clone();
        let err = mine.merge(other.entries()).unwrap_err();
        assert_eq!(err, OrgLogError::Fork { seq: 2 });
        assert_eq!(
            err.to_string(),
            "the two copies of the org log fork at seq 2"
        );
        assert_eq!(mine, full);
        // Another cluster forks at its genesis.
        let alien = OrgLog::genesis(&key(8), "eight").unwrap();
        assert_eq!(
            mine.clone().merge(alien.entries()),
            Err(OrgLogError::Fork { seq: 0 })
        );
        // A longer copy with a bad tail is refused whole.
        let mut bad = full.entries().to_vec();
        let mut ext = full.clone();
        ext.admit(&key(3), &key(6).verifying_key(), "six").unwrap();
        let mut tail = ext.entries()[3].clone();
        tail.entry.name = "sixty".into();
        bad.push(tail);
        let mut mine = OrgLog::from_entries(full.entries()[..1].to_vec()).unwrap();
        assert!(matches!(
            mine.merge(&bad),
            Err(OrgLogError::Entry { index: 3, .. })
        ));
        assert_eq!(mine.len(), 1);
    }

    #[test]
    fn the_log_is_bounded() {
        let log = log3();
        let many = vec![log.entries()[0].clone(); MAX_ORG_LOG_ENTRIES + 1];
        assert_eq!(
            OrgLog::verify(&many),
            Err(OrgLogError::TooLong {
                len: MAX_ORG_LOG_ENTRIES + 1
            })
        );
    }

    #[test]
    fn entries_round_trip_through_bytes() {
        for e in log3().entries() {
            assert_eq!(&SignedOrgEntry::from_bytes(&e.to_bytes()).unwrap(), e);
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(e) = SignedOrgEntry::from_bytes(&bytes) {
                let _ = OrgLog::verify(&[e]);
            }
        }
    }

    proptest! {
        // Signing and verifying are slow in unoptimised builds.
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn admissions_verify(seeds in proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 1..8)) {
            let mut log = OrgLog::genesis(&key(1), "genesis").unwrap();
            let mut admitted = vec![key(1)];
            for (i, seed) in seeds.iter().enumerate() {
                let new = SigningKey::from_bytes(seed);
                if log.orgs().contains(&OrgId::from_public_key(&new.verifying_key())) {
                    continue;
                }
                let by = &admitted[i % admitted.len()];
                log.admit(by, &new.verifying_key(), &format!("org-{i}")).unwrap();
                admitted.push(new);
            }
            prop_assert_eq!(OrgLog::verify(log.entries()).unwrap().len(), admitted.len());
        }
    }
}

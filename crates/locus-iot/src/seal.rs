//! The seal log: every reading a node accepts, numbered and sealed into its
//! append-only Merkle log, and an offline verifier of exported bundles that
//! says which reading was altered, dropped, duplicated or reordered.
//!
//! # Sealed leaf bytes (format 1)
//!
//! Leaf `seq` of the log is `merkle::leaf_hash` of:
//!
//! ```text
//! 0x01                  seal format version
//! u64 big-endian        seq: the leaf's index in the log
//! reading leaf bytes    Reading::leaf_bytes (its own format byte first)
//! ```
//!
//! Nothing follows the reading. Because `seq` is inside the hashed bytes, a
//! reading cannot be given another number without changing its leaf: an
//! entry moved to another place in an export no longer proves at that
//! place, and one left at its own number shows the gap or the disorder.
//!
//! # Bundle (JSON, version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "origin": "locus.example/node/abc",
//!   "checkpoints": ["<signed note>", "<signed note>"],
//!   "consistency": [["<hex hash>", "..."]],
//!   "range": { "start": 10, "end": 20 },
//!   "entries": [
//!     { "seq": 10, "reading": { "thing": "...", ... }, "proof": ["<hex hash>", "..."] }
//!   ]
//! }
//! ```
//!
//! - `checkpoints`: signed checkpoint notes ([`crate::checkpoint`]), oldest
//!   first, sizes never decreasing;
//! - `consistency[i]`: the RFC 6962 consistency proof from checkpoint `i`
//!   to checkpoint `i + 1` (one fewer than the checkpoints);
//! - `range`: the seqs exported, `start` included, `end` excluded; every seq
//!   in it has one entry, in ascending order;
//! - `entries[k].proof`: the inclusion proof of leaf `seq` in the tree of
//!   the **last** checkpoint, from the leaf's sibling upwards;
//! - hashes are 32 bytes as 64 lowercase hex digits (upper case is read);
//! - `reading` has the JSON shape of [`Reading`].
//!
//! The range is what the exporter claims to cover: an auditor who asked for
//! a given range compares it with [`Report::range`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::merkle::{self, BlockLogError, Hash, MerkleError, MerkleLog, ProofError, Proofs};
use crate::reading::{Reading, ReadingError};

/// The format version byte that starts [`Sealed::leaf_bytes`].
pub const SEAL_FORMAT: u8 = 1;
/// The [`Bundle::version`] this code writes and reads.
pub const BUNDLE_VERSION: u32 = 1;

/// What is wrong with a sealed leaf, an export or a bundle's JSON.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SealError {
    #[error("sealed leaf is {len} bytes, at least 9 are needed for the format and the seq")]
    LeafTruncated { len: usize },
    #[error("sealed leaf format {got} is not known (this is format {SEAL_FORMAT})")]
    LeafFormat { got: u8 },
    #[error("the reading in the sealed leaf: {0}")]
    Reading(#[from] ReadingError),
    #[error("an export needs at least one checkpoint")]
    NoCheckpoint,
    #[error("checkpoint {index}: {source}")]
    Checkpoint {
        index: usize,
        source: CheckpointError,
    },
    #[error("checkpoint {index} has origin {got:?}, checkpoint 0 has {want:?}")]
    OriginMismatch {
        index: usize,
        got: String,
        want: String,
    },
    #[error("checkpoint {index} has size {size}, smaller than the previous one ({previous})")]
    SizeDecreases {
        index: usize,
        size: u64,
        previous: u64,
    },
    #[error("checkpoint {index} (size {size}) does not match the log's root at that size")]
    RootMismatch { index: usize, size: u64 },
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// The log could not answer (its stored leaves could not be read, or
    /// are not what it sealed).
    #[error("the log cannot answer: {0}")]
    Log(String),
    #[error("range {start}..{end} is not within the last checkpoint's {size} leaves")]
    Range { start: u64, end: u64, size: u64 },
    #[error("{got} readings given for the {want} seqs of the range")]
    ReadingCount { got: usize, want: u64 },
    #[error("the reading given for seq {seq} does not hash to the log's leaf {seq}")]
    ReadingMismatch { seq: u64 },
    #[error("bundle JSON is not valid: {0}")]
    Json(String),
}

impl<E: fmt::Display> From<BlockLogError<E>> for SealError {
    fn from(e: BlockLogError<E>) -> Self {
        match e {
            BlockLogError::Merkle(e) => SealError::Merkle(e),
            e => SealError::Log(e.to_string()),
        }
    }
}

/// A reading and its place in the log: what a leaf holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    /// The leaf's index in the log.
    pub seq: u64,
    /// The reading.
    pub reading: Reading,
}

impl Sealed {
    /// The leaf bytes (see the module documentation).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let reading = self.reading.leaf_bytes();
        let mut out = Vec::with_capacity(9 + reading.len());
        out.push(SEAL_FORMAT);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&reading);
        out
    }

    /// `merkle::leaf_hash(self.leaf_bytes())`.
    pub fn leaf_hash(&self) -> Hash {
        sealed_leaf_hash(self.seq, &self.reading.leaf_bytes())
    }

    /// Read a sealed leaf back from its bytes; refuses an unknown format and
    /// any byte after the reading.
    pub fn from_leaf_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let Some((&format, rest)) = bytes.split_first() else {
            return Err(SealError::LeafTruncated { len: 0 });
        };
        if format != SEAL_FORMAT {
            return Err(SealError::LeafFormat { got: format });
        }
        let Some((seq, reading)) = rest.split_first_chunk::<8>() else {
            return Err(SealError::LeafTruncated { len: bytes.len() });
        };
        Ok(Self {
            seq: u64::from_be_bytes(*seq),
            reading: Reading::from_leaf_bytes(reading)?,
        })
    }
}

/// The leaf hash of the reading whose canonical bytes
/// ([`Reading::leaf_bytes`]) are `reading_bytes`, sealed at `seq`: the same
/// as [`Sealed::leaf_hash`], for a caller that already holds the bytes and
/// must not encode the reading again.
pub fn sealed_leaf_hash(seq: u64, reading_bytes: &[u8]) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([0x00, SEAL_FORMAT]);
    h.update(seq.to_be_bytes());
    h.update(reading_bytes);
    h.finalize().into()
}

/// A seal log held whole in memory: a [`MerkleLog`] of sealed leaves,
/// numbered from 0 (64 bytes per reading). A pure state machine; the caller
/// stores the readings and the leaf hashes. Offline tools and tests use it;
/// a node keeps a [`merkle::BlockLog`] of the same leaves instead, whose
/// memory does not grow with the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealLog {
    log: MerkleLog,
}

impl SealLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log holding these leaf hashes, in seq order (after a restart).
    /// The hashes are taken as they are: leaf `i` must be the hash of the
    /// sealed leaf of seq `i`.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        Self {
            log: MerkleLog::from_leaf_hashes(leaves),
        }
    }

    /// Seal `reading` as the next leaf.
    pub fn append(&mut self, reading: Reading) -> Sealed {
        let sealed = Sealed {
            seq: self.log.size(),
            reading,
        };
        self.log.append(sealed.leaf_hash());
        sealed
    }

    /// Append the leaf hash of the next seq, computed by the caller (with
    /// [`sealed_leaf_hash`] at seq [`SealLog::size`]); returns its seq. The
    /// hash is taken as it is, as in [`SealLog::from_leaves`].
    pub fn append_leaf(&mut self, leaf: Hash) -> u64 {
        self.log.append(leaf)
    }

    /// The number of leaves, which is also the next seq.
    pub fn size(&self) -> u64 {
        self.log.size()
    }

    /// The leaf hash of `seq`, if the log holds it.
    pub fn leaf(&self, seq: u64) -> Option<Hash> {
        self.log.leaf(seq)
    }

    /// The root of the tree over the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, MerkleError> {
        self.log.root(size)
    }

    /// The checkpoint of the whole log, to be signed.
    pub fn checkpoint(&self, origin: &str) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size: self.log.size(),
            root: self.log.current_root(),
        }
    }

    /// The checkpoint of the first `size` leaves.
    pub fn checkpoint_at(&self, origin: &str, size: u64) -> Result<Checkpoint, MerkleError> {
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root: self.log.root(size)?,
        })
    }

    /// The inclusion proof of leaf `seq` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.log.inclusion_proof(seq, size)
    }

    /// The consistency proof from the tree of `old` leaves to that of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, MerkleError> {
        self.log.consistency_proof(old, new)
    }
}

/// The checkpoints of a node's seal log, held as a [`merkle::BlockLog`].
impl merkle::BlockLog {
    /// The checkpoint of the whole log, to be signed.
    pub fn checkpoint(&self, origin: &str) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size: self.size(),
            root: self.current_root(),
        }
    }

    /// The checkpoint of the first `size` leaves, from memory alone (see
    /// [`merkle::BlockLog::root`]).
    pub fn checkpoint_at(
        &self,
        origin: &str,
        size: u64,
    ) -> Result<Checkpoint, BlockLogError<merkle::Unloaded>> {
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root: self.root(size)?,
        })
    }
}

impl Proofs for &SealLog {
    type Error = MerkleError;
    fn root(&mut self, size: u64) -> Result<Hash, MerkleError> {
        self.log.root(size)
    }
    fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.log.inclusion_proof(index, size)
    }
    fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, MerkleError> {
        self.log.consistency_proof(old, new)
    }
}

/// An exported, offline-verifiable slice of a seal log (see the module
/// documentation for the JSON shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// [`BUNDLE_VERSION`].
    pub version: u32,
    /// The log's origin, as in every checkpoint.
    pub origin: String,
    /// Signed checkpoint notes, oldest first.
    pub checkpoints: Vec<String>,
    /// `consistency[i]`: from checkpoint `i` to `i + 1`, hex hashes.
    pub consistency: Vec<Vec<String>>,
    /// The exported seqs.
    pub range: Range<u64>,
    /// One entry per seq of `range`, ascending.
    pub entries: Vec<Entry>,
}

/// One exported reading and its inclusion proof in the last checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The reading's leaf index.
    pub seq: u64,
    /// The reading.
    pub reading: Reading,
    /// Inclusion proof of leaf `seq` in the last checkpoint, hex hashes.
    pub proof: Vec<String>,
}

fn to_hex(h: &Hash) -> String {
    crate::checkpoint::hex(h)
}

fn from_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Decode a list of hex hashes, naming the first bad one.
fn decode_proof(proof: &[String]) -> Result<Vec<Hash>, String> {
    proof
        .iter()
        .enumerate()
        .map(|(i, s)| {
            from_hex(s).ok_or_else(|| format!("proof hash {i} is not 64 hex digits: {s:?}"))
        })
        .collect()
}

/// The checkpoint body of a signed note, not verified: the text before the
/// blank line that starts the signatures.
fn unverified_checkpoint(note: &str) -> Result<Checkpoint, CheckpointError> {
    let split = note.rfind("\n\n").ok_or(CheckpointError::Malformed {
        line: 1,
        why: "no blank line before the signatures".into(),
    })?;
    Checkpoint::parse_body(&note[..split + 1])
}

impl Bundle {
    /// Export `readings` (seqs `range`, in order) against signed checkpoint
    /// notes of this log (oldest first). Origin and sizes are read from the
    /// notes, and every note's root must be the log's root at its size, so
    /// a bundle is only made of what the log holds. Every reading must hash
    /// to its leaf.
    pub fn export(
        log: &SealLog,
        checkpoints: &[String],
        range: Range<u64>,
        readings: &[Reading],
    ) -> Result<Self, SealError> {
        let want = range.end.saturating_sub(range.start);
        if readings.len() as u64 != want {
            return Err(SealError::ReadingCount {
                got: readings.len(),
                want,
            });
        }
        for (seq, reading) in range.clone().zip(readings) {
            let sealed = Sealed {
                seq,
                reading: reading.clone(),
            };
            if log.leaf(seq) != Some(sealed.leaf_hash()) {
                return Err(SealError::ReadingMismatch { seq });
            }
        }
        Self::export_stored(
            log,
            checkpoints,
            range.clone(),
            range.zip(readings.iter().cloned()),
        )
    }

    /// Export what a store holds for `range`, as it holds it: `stored` is
    /// `(seq, reading)` in seq order, a seq the store lost is simply absent
    /// and no reading is checked against its leaf. The proofs come from the
    /// log, so a verifier sees exactly which stored reading was altered or
    /// is missing. Checkpoints are checked as in [`Bundle::export`]. `log`
    /// is any holder of the log's roots and proofs (a [`SealLog`], or a
    /// node's [`merkle::BlockLog`] with its stored leaves).
    pub fn export_stored<P>(
        mut log: P,
        checkpoints: &[String],
        range: Range<u64>,
        stored: impl IntoIterator<Item = (u64, Reading)>,
    ) -> Result<Self, SealError>
    where
        P: Proofs,
        SealError: From<P::Error>,
    {
        let mut cps = Vec::with_capacity(checkpoints.len());
        for (index, note) in checkpoints.iter().enumerate() {
            let cp = unverified_checkpoint(note)
                .map_err(|source| SealError::Checkpoint { index, source })?;
            if let Some(first) = cps.first().map(|c: &Checkpoint| &c.origin)
                && *first != cp.origin
            {
                return Err(SealError::OriginMismatch {
                    index,
                    got: cp.origin,
                    want: first.clone(),
                });
            }
            if let Some(prev) = cps.last().map(|c: &Checkpoint| c.size)
                && cp.size < prev
            {
                return Err(SealError::SizeDecreases {
                    index,
                    size: cp.size,
                    previous: prev,
                });
            }
            if log.root(cp.size)? != cp.root {
                return Err(SealError::RootMismatch {
                    index,
                    size: cp.size,
                });
            }
            cps.push(cp);
        }
        let Some(last) = cps.last() else {
            return Err(SealError::NoCheckpoint);
        };
        let size = last.size;
        if range.start > range.end || range.end > size {
            return Err(SealError::Range {
                start: range.start,
                end: range.end,
                size,
            });
        }
        let mut consistency = Vec::with_capacity(cps.len().saturating_sub(1));
        for pair in cps.windows(2) {
            let proof = log.consistency_proof(pair[0].size, pair[1].size)?;
            consistency.push(proof.iter().map(to_hex).collect());
        }
        let mut entries = Vec::new();
        for (seq, reading) in stored {
            if !range.contains(&seq) {
                continue;
            }
            let proof = log.inclusion_proof(seq, size)?;
            entries.push(Entry {
                seq,
                reading,
                proof: proof.iter().map(to_hex).collect(),
            });
        }
        Ok(Self {
            version: BUNDLE_VERSION,
            origin: last.origin.clone(),
            checkpoints: checkpoints.to_vec(),
            consistency,
            range,
            entries,
        })
    }

    /// Parse a bundle from JSON (untrusted input; never panics).
    pub fn from_json(json: &str) -> Result<Self, SealError> {
        serde_json::from_str(json).map_err(|e| SealError::Json(e.to_string()))
    }

    /// The bundle as JSON.
    pub fn to_json(&self) -> Result<String, SealError> {
        serde_json::to_string(self).map_err(|e| SealError::Json(e.to_string()))
    }
}

/// One thing [`verify`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bundle's version is not [`BUNDLE_VERSION`]; nothing else is read.
    Unsupported { version: u32 },
    /// The verifier key string does not parse; no checkpoint can be opened.
    BadKey { reason: String },
    /// The bundle's shape is wrong: no checkpoint, a consistency proof
    /// missing or extra, a range that is empty-reversed or beyond the tree.
    Malformed { reason: String },
    /// Checkpoint `index` does not open under the key or has another origin.
    BadCheckpoint { index: usize, reason: String },
    /// Checkpoint `index + 1` is not an extension of checkpoint `index`.
    Inconsistent { index: usize, reason: String },
    /// The entry cannot be checked: its seq is not in the tree, or its
    /// proof is malformed (not hex, wrong length).
    WrongSize {
        seq: u64,
        position: usize,
        reason: String,
    },
    /// The entry's seq is not in the bundle's range.
    OutsideRange {
        seq: u64,
        position: usize,
        range: Range<u64>,
    },
    /// The entry's inclusion proof does not verify at its own seq: the
    /// reading (or its seq, or its proof) was changed.
    Altered { seq: u64, position: usize },
    /// No entry has a seq in `first..=last`, inside the range.
    Dropped { first: u64, last: u64 },
    /// The entry's seq was already seen at `first_position`.
    Duplicated {
        seq: u64,
        position: usize,
        first_position: usize,
    },
    /// A valid entry not where ascending seq order puts it; `after` and
    /// `before` are its neighbours in that order.
    Reordered {
        seq: u64,
        position: usize,
        after: Option<u64>,
        before: Option<u64>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported { version } => write!(
                f,
                "bundle version {version} is not supported (this verifier reads version {BUNDLE_VERSION})"
            ),
            Self::BadKey { reason } => write!(f, "the verifier key is not valid: {reason}"),
            Self::Malformed { reason } => write!(f, "the bundle is malformed: {reason}"),
            Self::BadCheckpoint { index, reason } => {
                write!(f, "checkpoint {index} is not valid: {reason}")
            }
            Self::Inconsistent { index, reason } => write!(
                f,
                "checkpoint {} is not an extension of checkpoint {index}: {reason}",
                index + 1
            ),
            Self::WrongSize {
                seq,
                position,
                reason,
            } => write!(
                f,
                "reading seq {seq} (position {position}) cannot be checked: {reason}"
            ),
            Self::OutsideRange {
                seq,
                position,
                range,
            } => write!(
                f,
                "reading seq {seq} (position {position}) is outside the exported range {}..{}",
                range.start, range.end
            ),
            Self::Altered { seq, position } => write!(
                f,
                "reading seq {seq} (position {position}) was altered: its inclusion proof does not verify"
            ),
            Self::Dropped { first, last } if first == last => {
                write!(f, "reading seq {first} was dropped")
            }
            Self::Dropped { first, last } => write!(f, "readings seq {first}–{last} were dropped"),
            Self::Duplicated {
                seq,
                position,
                first_position,
            } => write!(
                f,
                "reading seq {seq} (position {position}) duplicates the entry at position {first_position}"
            ),
            Self::Reordered {
                seq,
                position,
                after,
                before,
            } => {
                write!(
                    f,
                    "reading seq {seq} (position {position}) is out of order: "
                )?;
                match (after, before) {
                    (Some(a), Some(b)) => write!(f, "expected after seq {a} and before seq {b}"),
                    (Some(a), None) => write!(f, "expected last, after seq {a}"),
                    (None, Some(b)) => write!(f, "expected first, before seq {b}"),
                    (None, None) => write!(f, "expected alone"),
                }
            }
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The bundle's origin.
    pub origin: String,
    /// The range the bundle claims to cover.
    pub range: Range<u64>,
    /// Every checkpoint opened under the key with the bundle's origin, and
    /// each extends the one before.
    pub checkpoints_ok: bool,
    /// The size of the last checkpoint, when it opened.
    pub tree_size: Option<u64>,
    /// Entries whose inclusion proof was run against the last checkpoint's
    /// root (0 when that checkpoint did not open).
    pub entries_checked: usize,
    /// Every problem, in a fixed order: bundle and key, checkpoints,
    /// consistency, then entries by position (cannot be checked, outside
    /// the range, altered, duplicated), drops by seq, reorders by position.
    pub problems: Vec<Problem>,
}

impl Report {
    /// No problem at all.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify `bundle` offline with the node's verifier key string
/// (`<name>+<hex id>+<base64 key>`). Pure: the same bundle and key always
/// give the same report.
pub fn verify(bundle: &Bundle, verifier_key: &str) -> Report {
    let mut report = Report {
        origin: bundle.origin.clone(),
        range: bundle.range.clone(),
        checkpoints_ok: false,
        tree_size: None,
        entries_checked: 0,
        problems: Vec::new(),
    };
    let problems = &mut report.problems;
    if bundle.version != BUNDLE_VERSION {
        problems.push(Problem::Unsupported {
            version: bundle.version,
        });
        return report;
    }
    let (name, key) = match checkpoint::parse_verifier_key(verifier_key) {
        Ok(k) => k,
        Err(e) => {
            problems.push(Problem::BadKey {
                reason: e.to_string(),
            });
            return report;
        }
    };

    // Checkpoints: each opens, under the bundle's origin.
    let mut ok = true;
    if bundle.checkpoints.is_empty() {
        problems.push(Problem::Malformed {
            reason: "it has no checkpoint".into(),
        });
        ok = false;
    }
    let opened: Vec<Option<Checkpoint>> = bundle
        .checkpoints
        .iter()
        .enumerate()
        .map(|(index, note)| match checkpoint::open(note, &name, &key) {
            Err(e) => {
                problems.push(Problem::BadCheckpoint {
                    index,
                    reason: e.to_string(),
                });
                None
            }
            Ok(cp) if cp.origin != bundle.origin => {
                problems.push(Problem::BadCheckpoint {
                    index,
                    reason: format!(
                        "its origin is {:?}, the bundle's is {:?}",
                        cp.origin, bundle.origin
                    ),
                });
                None
            }
            Ok(cp) => Some(cp),
        })
        .collect();
    ok &= opened.iter().all(Option::is_some);

    // Consistency: the log only grew.
    let want = bundle.checkpoints.len().saturating_sub(1);
    if bundle.consistency.len() != want {
        problems.push(Problem::Malformed {
            reason: format!(
                "it has {} consistency proofs for {} checkpoints, {want} are needed",
                bundle.consistency.len(),
                bundle.checkpoints.len()
            ),
        });
        ok = false;
    }
    for (index, pair) in opened.windows(2).enumerate() {
        let (Some(old), Some(new)) = (&pair[0], &pair[1]) else {
            continue;
        };
        let Some(proof) = bundle.consistency.get(index) else {
            continue;
        };
        let result = if new.size < old.size {
            Err(format!(
                "the size goes down from {} to {}",
                old.size, new.size
            ))
        } else {
            decode_proof(proof).and_then(|proof| {
                merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
                    .map_err(|e| format!("sizes {} to {}: {e}", old.size, new.size))
            })
        };
        if let Err(reason) = result {
            problems.push(Problem::Inconsistent { index, reason });
            ok = false;
        }
    }
    report.checkpoints_ok = ok;

    // Entries, against the last checkpoint, if it opened.
    let Some(Some(last)) = opened.last() else {
        return report;
    };
    report.tree_size = Some(last.size);
    let range = &bundle.range;
    if range.start > range.end {
        problems.push(Problem::Malformed {
            reason: format!("range {}..{} ends before it starts", range.start, range.end),
        });
    } else if range.end > last.size {
        problems.push(Problem::Malformed {
            reason: format!(
                "range {}..{} goes beyond the last checkpoint's {} leaves",
                range.start, range.end, last.size
            ),
        });
    }
    // Seqs present (valid or altered) and where first seen.
    let mut present: BTreeMap<u64, usize> = BTreeMap::new();
    // Valid, first-seen entries in bundle order: (position, seq).
    let mut valid: Vec<(usize, u64)> = Vec::new();
    for (position, e) in bundle.entries.iter().enumerate() {
        let seq = e.seq;
        if seq >= last.size {
            problems.push(Problem::WrongSize {
                seq,
                position,
                reason: format!("the last checkpoint holds {} leaves", last.size),
            });
            continue;
        }
        if !range.contains(&seq) {
            problems.push(Problem::OutsideRange {
                seq,
                position,
                range: range.clone(),
            });
            continue;
        }
        report.entries_checked += 1;
        let leaf = Sealed {
            seq,
            reading: e.reading.clone(),
        }
        .leaf_hash();
        let checked = decode_proof(&e.proof).and_then(|proof| {
            match merkle::verify_inclusion(&leaf, seq, last.size, &proof, &last.root) {
                Ok(()) => Ok(true),
                Err(ProofError::RootMismatch(_)) => Ok(false),
                Err(e) => Err(format!("its inclusion proof is malformed: {e}")),
            }
        });
        let first = present.get(&seq).copied();
        match checked {
            Err(reason) => problems.push(Problem::WrongSize {
                seq,
                position,
                reason,
            }),
            Ok(false) => problems.push(Problem::Altered { seq, position }),
            Ok(true) if first.is_none() => valid.push((position, seq)),
            Ok(true) => {}
        }
        match first {
            Some(first_position) => problems.push(Problem::Duplicated {
                seq,
                position,
                first_position,
            }),
            None => {
                present.insert(seq, position);
            }
        }
    }
    // Gaps within the range (and the tree), from the seqs present: a
    // claimed range is never walked seq by seq.
    let end = range.end.min(last.size);
    let mut next = range.start;
    for &seq in present.keys().chain(std::iter::once(&end)) {
        if seq > next && next < end {
            problems.push(Problem::Dropped {
                first: next,
                last: seq.min(end) - 1,
            });
        }
        next = next.max(seq.saturating_add(1));
    }
    // Order: a valid entry not at the rank its seq has among valid seqs.
    let sorted: Vec<u64> = valid
        .iter()
        .map(|&(_, s)| s)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for (rank, &(position, seq)) in valid.iter().enumerate() {
        if sorted.get(rank) == Some(&seq) {
            continue;
        }
        let at = sorted.partition_point(|&s| s < seq);
        problems.push(Problem::Reordered {
            seq,
            position,
            after: at.checked_sub(1).and_then(|i| sorted.get(i)).copied(),
            before: sorted.get(at + 1).copied(),
        });
    }
    report
}

/// Check a *selection* of a bundle's readings: the entries kept (say, one
/// thing's) must each prove their inclusion in the signed, consistent
/// checkpoints; the seqs left out are not a problem, anything else is.
/// Answers the problems found (none: the selection is sound).
pub fn verify_selection(bundle: &Bundle, verifier_key: &str) -> Vec<Problem> {
    let report = verify(bundle, verifier_key);
    let mut problems: Vec<Problem> = report
        .problems
        .into_iter()
        .filter(|p| !matches!(p, Problem::Dropped { .. }))
        .collect();
    if !report.checkpoints_ok && problems.is_empty() {
        problems.push(Problem::Malformed {
            reason: "its checkpoints do not verify".into(),
        });
    }
    problems
}

#[cfg(test)]
mod tests;

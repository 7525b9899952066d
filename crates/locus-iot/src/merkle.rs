//! An append-only Merkle log with RFC 6962 hashing.
//!
//! A leaf hash is `SHA-256(0x00 || data)`, an interior node
//! `SHA-256(0x01 || left || right)`, and the root of an empty tree is
//! `SHA-256("")` ([`EMPTY_ROOT`]). The tree over `n` leaves splits at the
//! largest power of two below `n` (RFC 6962 §2.1, RFC 9162 §2.1.1).
//!
//! Three ways to hold a log, by what they keep in memory:
//!
//! - [`BlockLog`] (what a node runs): the roots of the complete blocks of
//!   [`BLOCK_LEAVES`] (256) leaves and every complete subtree above them
//!   (two hashes per block: 0.25 bytes per leaf, 2.5 MB at 10⁷ leaves),
//!   plus the leaves of the incomplete last block (at most 8 KiB). Roots of
//!   any prefix, inclusion and consistency proofs are byte-identical to
//!   [`MerkleLog`]'s; what lies below block level is recomputed from the
//!   leaves of the one or two stored blocks a question needs, read through
//!   a [`LeafSource`] and checked against their block roots.
//! - [`MerkleLog`]: every leaf hash plus every complete, aligned subtree
//!   (about one more hash per leaf), so any root or proof is O(log² n)
//!   hashing with nothing to read. That is 64 bytes per leaf: a million
//!   readings cost 64 MiB. It is the reference the others are tested
//!   against, and what offline tools and tests use.
//! - [`Frontier`]: to extend a log and sign its current root only, O(log n)
//!   hashes, no proofs.
//!
//! [`verify_inclusion`] and [`verify_consistency`] follow the algorithms of
//! RFC 9162 §2.1.3.2 and §2.1.4.2 and need nothing but their arguments.

use sha2::{Digest, Sha256};
use thiserror::Error;

mod blocks;
pub use blocks::{
    BLOCK_HEIGHT, BLOCK_LEAVES, BlockCache, BlockLog, BlockLogError, FromCache, LeafSource, Prover,
    TailTooLong, Unloaded,
};

/// A SHA-256 digest: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the tree over these leaf hashes, in order: RFC 6962 `MTH`
/// ([`EMPTY_ROOT`] for none). A block's root is `tree_root` of its leaves.
pub fn tree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&tree_root(&leaves[..k]), &tree_root(&leaves[k..]))
        }
    }
}

/// Roots and proofs of the prefixes of a log, however it is held: what an
/// export of the seal log needs of it.
pub trait Proofs {
    /// Why a question cannot be answered.
    type Error;
    /// The root of the tree over the first `size` leaves.
    fn root(&mut self, size: u64) -> Result<Hash, Self::Error>;
    /// The audit path of leaf `index` in the tree of `size` leaves.
    fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, Self::Error>;
    /// The proof that the tree of `old` leaves is a prefix of the tree of
    /// `new` leaves.
    fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, Self::Error>;
}

impl<T: Proofs + ?Sized> Proofs for &mut T {
    type Error = T::Error;
    fn root(&mut self, size: u64) -> Result<Hash, Self::Error> {
        (**self).root(size)
    }
    fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, Self::Error> {
        (**self).inclusion_proof(index, size)
    }
    fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, Self::Error> {
        (**self).consistency_proof(old, new)
    }
}

impl Proofs for &MerkleLog {
    type Error = MerkleError;
    fn root(&mut self, size: u64) -> Result<Hash, MerkleError> {
        MerkleLog::root(self, size)
    }
    fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        MerkleLog::inclusion_proof(self, index, size)
    }
    fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, MerkleError> {
        MerkleLog::consistency_proof(self, old, new)
    }
}

/// Why the log cannot answer a question about itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    #[error("tree size {size} is beyond the log, which holds {len} leaves")]
    SizeBeyondLog { size: u64, len: u64 },
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old} is larger than new tree size {new}")]
    OldAfterNew { old: u64, new: u64 },
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old} is larger than new tree size {new}")]
    OldAfterNew { old: u64, new: u64 },
    #[error("the proof has {got} hashes, this one needs {want}")]
    WrongLength { got: usize, want: usize },
    #[error("the proof leads to a different root: {0}")]
    RootMismatch(&'static str),
}

/// Length of the inclusion proof of leaf `index` in a tree of `size` leaves
/// (`index < size`): the levels below the point where the leaf's path and
/// the right edge split, plus the left-hanging nodes above it.
fn inclusion_len(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle log held in memory.
///
/// `levels[0]` holds the leaf hashes; `levels[k][i]` is the hash of the
/// complete subtree over leaves `i·2^k .. (i+1)·2^k`, kept as soon as its
/// last leaf arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleLog {
    levels: Vec<Vec<Hash>>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log holding these leaf hashes, in order.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut log = Self::new();
        for leaf in leaves {
            log.append(leaf);
        }
        log
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hash at `index`, if the log holds it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }

    /// Append a leaf hash; returns its index.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let index = self.levels[0].len() as u64 - 1;
        // Close every subtree this leaf completes.
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
        index
    }

    /// Append `leaf_hash(data)`; returns its index.
    pub fn append_data(&mut self, data: &[u8]) -> u64 {
        self.append(leaf_hash(data))
    }

    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        if size > self.size() {
            return Err(MerkleError::SizeBeyondLog {
                size,
                len: self.size(),
            });
        }
        Ok(())
    }

    /// MTH over leaves `start .. start + n` (`n >= 1`, within the log). In
    /// every call the algorithms make, `start` is a multiple of the largest
    /// power of two not above `n`, so complete subtrees come from `levels`.
    fn range_hash(&self, start: u64, n: u64) -> Hash {
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(start >> k) as usize];
        }
        let k = split(n);
        node_hash(
            &self.range_hash(start, k),
            &self.range_hash(start + k, n - k),
        )
    }

    /// The root of the tree over the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, MerkleError> {
        self.check_size(size)?;
        Ok(if size == 0 {
            EMPTY_ROOT
        } else {
            self.range_hash(0, size)
        })
    }

    /// The root of the whole log.
    pub fn current_root(&self) -> Hash {
        if self.size() == 0 {
            EMPTY_ROOT
        } else {
            self.range_hash(0, self.size())
        }
    }

    /// The audit path of leaf `index` in the tree of the first `size`
    /// leaves (RFC 6962 §2.1.1 `PATH`), from the leaf's sibling upwards.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(size)?;
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out);
            out.push(self.range_hash(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, out);
            out.push(self.range_hash(start, k));
        }
    }

    /// The proof that the tree of `old` leaves is a prefix of the tree of
    /// `new` leaves (RFC 6962 §2.1.2 `PROOF`); empty when `old` is 0 or
    /// equals `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(new)?;
        if old > new {
            return Err(MerkleError::OldAfterNew { old, new });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, whole: bool, out: &mut Vec<Hash>) {
        if m == n {
            if !whole {
                out.push(self.range_hash(start, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, whole, out);
            out.push(self.range_hash(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.range_hash(start, k));
        }
    }
}

/// Verify that `leaf_hash` is leaf `index` of the tree of `size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(leaf_hash, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch("inclusion"))
    }
}

/// The root that an inclusion proof leads to (RFC 9162 §2.1.3.2, steps
/// 1–5); [`verify_inclusion`] compares it with the expected root.
pub fn root_from_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (inner, border) = inclusion_len(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: inner + border,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    Ok(r)
}

/// Verify that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root` (RFC 9162
/// §2.1.4.2). Equal sizes need an empty proof and equal roots; an empty old
/// tree needs an empty proof and [`EMPTY_ROOT`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldAfterNew {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        if old_size == 0 && *old_root != EMPTY_ROOT {
            return Err(ProofError::RootMismatch(
                "old (an empty tree has the empty root)",
            ));
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::RootMismatch("new (same size, different root)"));
        }
        return Ok(());
    }
    // The expected length: the old tree's own root when it is not a complete
    // subtree, then the path from it, less the levels it shares.
    let shift = old_size.trailing_zeros() as usize;
    let (inner, border) = inclusion_len(old_size - 1, new_size);
    let seeded = old_size.is_power_of_two();
    let want = usize::from(!seeded) + (inner - shift) + border;
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    // Step 2: a power-of-two old tree is itself a node of the new one.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if seeded {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = path[0];
    let mut s_r = path[0];
    for c in &path[1..] {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    if f_r != *old_root {
        return Err(ProofError::RootMismatch("old"));
    }
    if s_r != *new_root {
        return Err(ProofError::RootMismatch("new"));
    }
    Ok(())
}

/// The right edge of a Merkle log: the roots of the complete subtrees that
/// make up the tree, largest first (one per set bit of the size). Enough to
/// append and to compute the current root, in O(log n) memory; it cannot
/// give proofs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Subtree roots, left to right; their sizes are the set bits of `size`
    /// from the highest down.
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of an empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Rebuild a frontier from a size and its subtree roots (as stored by
    /// [`Frontier::hashes`]); `None` if their count does not match the size.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (hashes.len() == size.count_ones() as usize).then_some(Self { size, hashes })
    }

    /// Append a leaf hash; returns its index.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        let index = self.size;
        let mut h = leaf;
        // Each trailing one bit of the old size is a subtree of the same
        // height as the one being carried: merge them.
        let mut carry = self.size;
        while carry & 1 == 1 {
            // A set bit always has its subtree root on the stack.
            let Some(left) = self.hashes.pop() else { break };
            h = node_hash(&left, &h);
            carry >>= 1;
        }
        self.hashes.push(h);
        self.size += 1;
        index
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else {
            return EMPTY_ROOT;
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests;

//! A Merkle log whose memory does not grow with its leaves.
//!
//! The leaves are cut into blocks of `2^height` ([`BLOCK_LEAVES`] = 256 in
//! production): block `b` holds leaves `b·256 .. (b+1)·256`, and its root is
//! the root of the complete, aligned subtree of height 8 over them. A
//! [`BlockLog`] keeps in memory:
//!
//! - the root of every complete block, and every complete, aligned subtree
//!   above them (a [`MerkleLog`] whose "leaves" are the block roots): about
//!   two hashes, 64 bytes, per block, so 0.25 bytes per leaf — 2.5 MB at
//!   10⁷ leaves, 25 MB at 10⁸;
//! - the leaf hashes of the incomplete last block (the tail): fewer than
//!   256, at most 8 KiB.
//!
//! Everything below block level in a complete block is recomputed, when a
//! question needs it, from that block's leaves, read through a
//! [`LeafSource`] (the store) and checked against the block's root first.
//! A root of any prefix needs at most one stored block (the one the prefix
//! ends in), an inclusion proof at most two (the leaf's and the prefix
//! end's), a consistency proof at most two (where each tree ends). The
//! answers are byte-identical to [`MerkleLog`]'s over the same leaves.

use std::collections::VecDeque;
use std::fmt;

use thiserror::Error;

use super::{EMPTY_ROOT, Hash, MerkleError, MerkleLog, Proofs, node_hash, split, tree_root};

/// The height of a block: the subtrees of this height are the unit kept
/// in memory as one root.
pub const BLOCK_HEIGHT: u32 = 8;
/// Leaves per block (`2^BLOCK_HEIGHT`).
pub const BLOCK_LEAVES: u64 = 1 << BLOCK_HEIGHT;
/// Most block heights [`BlockLog::with_height`] takes.
const MAX_HEIGHT: u32 = 32;
/// Stored blocks one [`Prover`] keeps after reading them; the oldest is
/// dropped first. No single question needs more than two.
const PROVER_BLOCKS: usize = 4;

/// Where the leaves of complete blocks come from. A closure
/// `FnMut(u64) -> Result<Vec<Hash>, E>` is one.
pub trait LeafSource {
    /// Why a block cannot be read.
    type Error;
    /// The leaf hashes of complete block `block`, in order: leaves
    /// `block·2^h .. (block+1)·2^h` of the log.
    fn block_leaves(&mut self, block: u64) -> Result<Vec<Hash>, Self::Error>;
}

impl<E, F> LeafSource for F
where
    F: FnMut(u64) -> Result<Vec<Hash>, E>,
{
    type Error = E;
    fn block_leaves(&mut self, block: u64) -> Result<Vec<Hash>, E> {
        self(block)
    }
}

/// The "source" of a question answered from memory alone: any stored
/// block it would need is reported as [`BlockLogError::Source`] with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unloaded;

impl fmt::Display for Unloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("its leaves are not in memory")
    }
}

/// Why a [`BlockLog`] cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockLogError<E> {
    /// The question itself is wrong (a size beyond the log, an index out
    /// of the tree, sizes in the wrong order).
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// The source could not give the leaves of `block`.
    #[error("cannot read the leaves of block {block}: {cause}")]
    Source { block: u64, cause: E },
    /// The source gave a block with the wrong number of leaves.
    #[error("block {block} came with {got} leaves; a block holds {want}")]
    BlockLength { block: u64, got: usize, want: u64 },
    /// The leaves the source gave do not hash to the block's root.
    #[error(
        "the leaves of block {block} (seqs {first}..{end}) do not hash to the block's root: \
         a leaf was changed or replaced"
    )]
    BlockMismatch { block: u64, first: u64, end: u64 },
}

/// Why [`BlockLog::from_parts`] refuses its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{got} tail leaves given; a tail holds fewer than a block's {block} leaves")]
pub struct TailTooLong {
    pub got: usize,
    pub block: u64,
}

/// An append-only Merkle log that keeps block roots and the tail in
/// memory (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLog {
    height: u32,
    /// The roots of the complete blocks, as the leaves of a log of their
    /// own: its level `k` holds the complete subtrees of `2^k` blocks.
    blocks: MerkleLog,
    /// The leaves of the incomplete last block.
    tail: Vec<Hash>,
}

impl Default for BlockLog {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockLog {
    /// An empty log with blocks of [`BLOCK_LEAVES`].
    pub fn new() -> Self {
        Self::with_height(BLOCK_HEIGHT)
    }

    /// An empty log with blocks of `2^height` leaves (at most 2^32). A log
    /// and its store must agree on the height; the node uses
    /// [`BLOCK_HEIGHT`], tests use small ones to cross many blocks.
    pub fn with_height(height: u32) -> Self {
        Self {
            height: height.min(MAX_HEIGHT),
            blocks: MerkleLog::new(),
            tail: Vec::new(),
        }
    }

    /// A log from what it keeps: the roots of its complete blocks in order,
    /// and the leaves after them (fewer than a block).
    pub fn from_parts(
        height: u32,
        block_roots: impl IntoIterator<Item = Hash>,
        tail: Vec<Hash>,
    ) -> Result<Self, TailTooLong> {
        let mut log = Self::with_height(height);
        if tail.len() as u64 >= log.block_leaves() {
            return Err(TailTooLong {
                got: tail.len(),
                block: log.block_leaves(),
            });
        }
        let roots = block_roots.into_iter();
        let (hint, _) = roots.size_hint();
        // Room for what is known, so that a large log is not held in
        // vectors twice its size.
        for k in 0..usize::BITS - hint.leading_zeros() {
            if log.blocks.levels.len() <= k as usize {
                log.blocks.levels.push(Vec::new());
            }
            log.blocks.levels[k as usize].reserve_exact((hint >> k) + 1);
        }
        for root in roots {
            log.blocks.append(root);
        }
        log.tail = tail;
        Ok(log)
    }

    /// The block height `h`: blocks hold `2^h` leaves.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Leaves per block.
    pub fn block_leaves(&self) -> u64 {
        1 << self.height
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        (self.blocks.size() << self.height) + self.tail.len() as u64
    }

    /// The number of complete blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks.size()
    }

    /// The root of complete block `block`.
    pub fn block_root(&self, block: u64) -> Option<Hash> {
        self.blocks.leaf(block)
    }

    /// The leaves of the incomplete last block.
    pub fn tail(&self) -> &[Hash] {
        &self.tail
    }

    /// Append a leaf hash. When it completes a block, returns that block's
    /// index and root (what a store keeps next to the leaves).
    pub fn append(&mut self, leaf: Hash) -> Option<(u64, Hash)> {
        if self.tail.capacity() == 0 {
            self.tail.reserve_exact(self.block_leaves() as usize);
        }
        self.tail.push(leaf);
        if (self.tail.len() as u64) < self.block_leaves() {
            return None;
        }
        let root = tree_root(&self.tail);
        self.tail.clear();
        Some((self.blocks.append(root), root))
    }

    /// The root of the whole log, from memory.
    pub fn current_root(&self) -> Hash {
        // The whole tree folds, right to left, the roots of its frontier:
        // the complete subtrees of blocks (one per set bit of the block
        // count, largest first), then the tail's own tree.
        let mut acc = (!self.tail.is_empty()).then(|| tree_root(&self.tail));
        let count = self.blocks.size();
        let mut end = count;
        for k in 0..u64::BITS {
            if count & (1 << k) == 0 {
                continue;
            }
            end -= 1 << k;
            let subtree = self.blocks.levels[k as usize][(end >> k) as usize];
            acc = Some(match acc {
                None => subtree,
                Some(right) => node_hash(&subtree, &right),
            });
        }
        acc.unwrap_or(EMPTY_ROOT)
    }

    /// A prover answering from this log and the stored blocks of `source`.
    pub fn prover<S: LeafSource>(&self, source: S) -> Prover<'_, S> {
        Prover {
            log: self,
            source,
            cache: None,
            loaded: Vec::new(),
        }
    }

    /// A prover answering from this log and the blocks of `cache` alone:
    /// a block it would need and the cache lacks is reported as
    /// [`BlockLogError::Source`] with [`Unloaded`], for the caller to read
    /// it, [`BlockCache::insert`] it and ask again.
    pub fn cached_prover<'a>(&'a self, cache: &'a BlockCache) -> Prover<'a, FromCache> {
        Prover {
            log: self,
            source: |_| Err(Unloaded),
            cache: Some(cache),
            loaded: Vec::new(),
        }
    }

    /// Check that `leaves` are complete block `block` of this log: as many
    /// as a block holds, hashing to its root. Returns the root.
    pub fn check_block<E>(&self, block: u64, leaves: &[Hash]) -> Result<Hash, BlockLogError<E>> {
        let want = self.block_leaves();
        let root = self.block_root(block).ok_or(MerkleError::IndexOutOfRange {
            index: block << self.height,
            size: self.size(),
        })?;
        if leaves.len() as u64 != want {
            return Err(BlockLogError::BlockLength {
                block,
                got: leaves.len(),
                want,
            });
        }
        if tree_root(leaves) != root {
            return Err(BlockLogError::BlockMismatch {
                block,
                first: block * want,
                end: (block + 1) * want,
            });
        }
        Ok(root)
    }

    /// The root of the first `size` leaves, from memory alone: fails with
    /// [`Unloaded`] when `size` ends inside a complete block (use
    /// [`BlockLog::prover`] then).
    pub fn root(&self, size: u64) -> Result<Hash, BlockLogError<Unloaded>> {
        self.prover(|_: u64| -> Result<Vec<Hash>, Unloaded> { Err(Unloaded) })
            .root(size)
    }
}

/// The source of [`BlockLog::cached_prover`]: nothing beyond the cache.
pub type FromCache = fn(u64) -> Result<Vec<Hash>, Unloaded>;

/// The leaves of stored blocks a caller keeps between questions (and
/// between short holds of the log), each checked against its block root
/// once, when inserted. Holds at most `capacity` blocks; the oldest goes
/// first.
#[derive(Debug, Clone)]
pub struct BlockCache {
    capacity: usize,
    /// `(block, root it was checked against, leaves)`, oldest first.
    blocks: VecDeque<(u64, Hash, Vec<Hash>)>,
}

impl BlockCache {
    /// An empty cache of at most `capacity` blocks (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            blocks: VecDeque::new(),
        }
    }

    /// Keep `leaves` as block `block` of `log`, once checked
    /// ([`BlockLog::check_block`]).
    pub fn insert(
        &mut self,
        log: &BlockLog,
        block: u64,
        leaves: Vec<Hash>,
    ) -> Result<(), BlockLogError<Unloaded>> {
        let root = log.check_block::<Unloaded>(block, &leaves)?;
        self.blocks.retain(|(b, _, _)| *b != block);
        if self.blocks.len() >= self.capacity {
            self.blocks.pop_front();
        }
        self.blocks.push_back((block, root, leaves));
        Ok(())
    }

    /// The leaves of block `block`, if kept and checked against the root
    /// `log` has for it.
    fn get(&self, log: &BlockLog, block: u64) -> Option<&[Hash]> {
        let root = log.block_root(block)?;
        self.blocks
            .iter()
            .find(|(b, r, _)| *b == block && *r == root)
            .map(|(_, _, leaves)| &leaves[..])
    }

    /// The number of blocks kept.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// No block kept.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// Answers about a [`BlockLog`], reading the stored blocks it needs from a
/// [`LeafSource`] (or a [`BlockCache`]); each block read from the source
/// is checked against its root and kept for the prover's next questions
/// (the last few).
pub struct Prover<'a, S> {
    log: &'a BlockLog,
    source: S,
    cache: Option<&'a BlockCache>,
    loaded: Vec<(u64, Vec<Hash>)>,
}

type Answer<T, S> = Result<T, BlockLogError<<S as LeafSource>::Error>>;

impl<S: LeafSource> Prover<'_, S> {
    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        let len = self.log.size();
        if size > len {
            return Err(MerkleError::SizeBeyondLog { size, len });
        }
        Ok(())
    }

    /// The leaf hash at `index`.
    pub fn leaf(&mut self, index: u64) -> Answer<Hash, S> {
        let size = self.log.size();
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size }.into());
        }
        let h = self.log.height;
        let offset = (index & (self.log.block_leaves() - 1)) as usize;
        self.with_block(index >> h, |leaves| leaves[offset])
    }

    /// Run `f` on the leaves of block `block`: the tail from memory, a
    /// complete block from the source (checked against its root).
    fn with_block<T>(&mut self, block: u64, f: impl FnOnce(&[Hash]) -> T) -> Answer<T, S> {
        if block == self.log.blocks.size() {
            return Ok(f(&self.log.tail));
        }
        if let Some(leaves) = self.cache.and_then(|c| c.get(self.log, block)) {
            return Ok(f(leaves));
        }
        if let Some((_, leaves)) = self.loaded.iter().find(|(b, _)| *b == block) {
            return Ok(f(leaves));
        }
        let leaves = self
            .source
            .block_leaves(block)
            .map_err(|cause| BlockLogError::Source { block, cause })?;
        self.log.check_block::<S::Error>(block, &leaves)?;
        let out = f(&leaves);
        if self.loaded.len() >= PROVER_BLOCKS {
            self.loaded.remove(0);
        }
        self.loaded.push((block, leaves));
        Ok(out)
    }

    /// MTH over leaves `start .. start + n` (`n >= 1`, within the log). In
    /// every call the algorithms make, the range lies in the aligned
    /// subtree of the smallest power of two not below `n`: so a range of
    /// at most a block lies in one block, and a larger power of two is a
    /// complete subtree of blocks.
    fn range_hash(&mut self, start: u64, n: u64) -> Answer<Hash, S> {
        let h = self.log.height;
        let b = self.log.block_leaves();
        if n == b {
            return Ok(self.log.blocks.levels[0][(start >> h) as usize]);
        }
        if n < b {
            let offset = (start & (b - 1)) as usize;
            return self.with_block(start >> h, |leaves| {
                tree_root(&leaves[offset..offset + n as usize])
            });
        }
        if n.is_power_of_two() {
            let k = n.trailing_zeros();
            return Ok(self.log.blocks.levels[(k - h) as usize][(start >> k) as usize]);
        }
        let k = split(n);
        let left = self.range_hash(start, k)?;
        let right = self.range_hash(start + k, n - k)?;
        Ok(node_hash(&left, &right))
    }

    /// The root of the tree over the first `size` leaves.
    pub fn root(&mut self, size: u64) -> Answer<Hash, S> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(EMPTY_ROOT);
        }
        self.range_hash(0, size)
    }

    /// The audit path of leaf `index` in the tree of the first `size`
    /// leaves (RFC 6962 §2.1.1 `PATH`), from the leaf's sibling upwards.
    pub fn inclusion_proof(&mut self, index: u64, size: u64) -> Answer<Vec<Hash>, S> {
        self.check_size(size)?;
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size }.into());
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof)?;
        Ok(proof)
    }

    fn path(&mut self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) -> Answer<(), S> {
        if n <= 1 {
            return Ok(());
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out)?;
            out.push(self.range_hash(start + k, n - k)?);
        } else {
            self.path(m - k, start + k, n - k, out)?;
            out.push(self.range_hash(start, k)?);
        }
        Ok(())
    }

    /// The proof that the tree of `old` leaves is a prefix of the tree of
    /// `new` leaves (RFC 6962 §2.1.2 `PROOF`); empty when `old` is 0 or
    /// equals `new`.
    pub fn consistency_proof(&mut self, old: u64, new: u64) -> Answer<Vec<Hash>, S> {
        self.check_size(new)?;
        if old > new {
            return Err(MerkleError::OldAfterNew { old, new }.into());
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof)?;
        }
        Ok(proof)
    }

    fn subproof(
        &mut self,
        m: u64,
        start: u64,
        n: u64,
        whole: bool,
        out: &mut Vec<Hash>,
    ) -> Answer<(), S> {
        if m == n {
            if !whole {
                out.push(self.range_hash(start, n)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, whole, out)?;
            out.push(self.range_hash(start + k, n - k)?);
        } else {
            self.subproof(m - k, start + k, n - k, false, out)?;
            out.push(self.range_hash(start, k)?);
        }
        Ok(())
    }
}

impl<S: LeafSource> Proofs for Prover<'_, S> {
    type Error = BlockLogError<S::Error>;
    fn root(&mut self, size: u64) -> Result<Hash, Self::Error> {
        Prover::root(self, size)
    }
    fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, Self::Error> {
        Prover::inclusion_proof(self, index, size)
    }
    fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, Self::Error> {
        Prover::consistency_proof(self, old, new)
    }
}

#[cfg(test)]
mod tests;

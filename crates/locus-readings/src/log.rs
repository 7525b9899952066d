//! The seal log as the node holds it: a [`BlockLog`] in memory (the roots
//! of the complete blocks of 256 leaves, the levels above them, and the
//! leaves of the last, incomplete block), the leaves and block roots in the
//! store (`seal_leaves`, `seal_blocks`).
//!
//! # Start
//!
//! [`load`] reads the block roots and the tail's leaves (fewer than 256),
//! never every leaf: a start costs one row per 256 readings. It checks
//! that the block roots run 0, 1, 2… without a gap, that the leaves reach
//! the last block, that the last block's leaves still hash to its stored
//! root, and that the tail has no gap; any failure stops the start with
//! the block or seq named. A store written before `seal_blocks` existed
//! (leaves without block roots) is upgraded first: the missing roots are
//! computed from the leaves, [`UPGRADE_BLOCKS`] blocks per transaction, so
//! the pass holds little memory, resumes where a crash left it, and runs
//! once.
//!
//! # Proofs
//!
//! A question (a root, a leaf, an inclusion or consistency proof) is asked
//! of the in-memory log with a [`BlockCache`] of stored blocks: when it
//! needs a block the cache lacks, the block's leaves are read from the
//! store, checked against the block's root and cached, and the question is
//! asked again. The log's lock is held only while hashing, never across a
//! store read, so a proof never holds up the ingest writer. A block whose
//! leaves no longer hash to its root fails the question, naming the block.

use std::sync::Arc;

use locus_iot::merkle::{
    BLOCK_HEIGHT, BLOCK_LEAVES, BlockCache, BlockLog, BlockLogError, FromCache, Hash, Proofs,
    Prover, Unloaded, tree_root,
};
use locus_iot::seal::SealError;
use locus_store::{Store, StoreError};
use tokio::runtime::Handle;
use tokio::sync::RwLock;

use crate::ReadingsError;
use crate::table::ReadingsTable;

/// Blocks whose roots an upgrade computes per transaction (262,144
/// leaves, 8 MiB read).
pub const UPGRADE_BLOCKS: u64 = 1024;
/// Stored blocks kept while one export is computed (512 KiB).
const EXPORT_CACHE_BLOCKS: usize = 64;
/// Stored blocks kept while one proof is computed: no question needs more
/// than two, and the log may complete one more meanwhile.
const PROOF_CACHE_BLOCKS: usize = 4;
/// Times a question is asked again after reading a block it needed.
const ATTEMPTS: usize = 8;

fn corrupt(why: String) -> ReadingsError {
    ReadingsError::Store(StoreError::Corrupt(why))
}

/// Load the seal log from the store (see the module documentation),
/// upgrading a store without block roots first.
pub(crate) async fn load(store: &Store) -> Result<BlockLog, ReadingsError> {
    let size = store.sealed_size().await?;
    let mut roots = store.seal_block_roots().await?;
    let stored_blocks = roots.len() as u64;
    if stored_blocks * BLOCK_LEAVES > size {
        return Err(corrupt(format!(
            "seal block {} has a root but its leaves are not all stored: the leaves end before seq {size}",
            stored_blocks - 1
        )));
    }
    let complete = size / BLOCK_LEAVES;
    if complete > stored_blocks {
        upgrade(store, &mut roots, complete).await?;
    }
    let blocks = roots.len() as u64;
    if let Some(last) = roots.last() {
        let block = blocks - 1;
        let start = block * BLOCK_LEAVES;
        let leaves = store
            .seal_leaves_between(start, start + BLOCK_LEAVES)
            .await?;
        if tree_root(&leaves) != *last {
            return Err(corrupt(format!(
                "the stored root of seal block {block} does not match its leaves (seqs {start}..{})",
                start + BLOCK_LEAVES
            )));
        }
    }
    let tail = store
        .seal_leaves_between(blocks * BLOCK_LEAVES, size)
        .await?;
    let log = BlockLog::from_parts(BLOCK_HEIGHT, roots, tail)
        .map_err(|e| corrupt(format!("the seal log's tail: {e}")))?;
    tracing::debug!(size = log.size(), blocks = log.blocks(), "seal log loaded");
    Ok(log)
}

/// Compute and store the roots of blocks `roots.len()..complete` from
/// their stored leaves, appending them to `roots`.
async fn upgrade(store: &Store, roots: &mut Vec<Hash>, complete: u64) -> Result<(), ReadingsError> {
    let from = roots.len() as u64;
    tracing::info!(
        blocks = complete - from,
        from_block = from,
        leaves = (complete - from) * BLOCK_LEAVES,
        "the store has seal leaves without block roots (written by an older locus): \
         computing them once from the leaves"
    );
    let started = std::time::Instant::now();
    let mut reported = 0;
    roots.reserve_exact((complete - from) as usize);
    while (roots.len() as u64) < complete {
        let next = roots.len() as u64;
        let written = store
            .fill_seal_blocks(next, UPGRADE_BLOCKS.min(complete - next))
            .await?;
        if written.is_empty() {
            return Err(corrupt(format!(
                "the leaves of seal block {next} could not be read back to compute its root"
            )));
        }
        roots.extend(written);
        let done = roots.len() as u64 - from;
        let percent = done * 100 / (complete - from);
        if percent >= reported + 10 || roots.len() as u64 == complete {
            reported = percent - percent % 10;
            tracing::info!(
                done,
                of = complete - from,
                percent,
                secs = started.elapsed().as_secs_f64(),
                "seal block roots computed"
            );
        }
    }
    Ok(())
}

/// What a failed question says: a wrong question as before the block log
/// (`Invalid`), stored leaves that are not what was sealed as a store
/// error naming the block.
fn answer_error(e: BlockLogError<Unloaded>) -> ReadingsError {
    match e {
        BlockLogError::Merkle(e) => ReadingsError::Invalid(e.to_string()),
        e @ (BlockLogError::BlockLength { .. } | BlockLogError::BlockMismatch { .. }) => {
            corrupt(e.to_string())
        }
        e @ BlockLogError::Source { .. } => ReadingsError::Invalid(e.to_string()),
    }
}

fn unsettled() -> ReadingsError {
    ReadingsError::Invalid(format!(
        "the seal log changed under a proof {ATTEMPTS} times; ask again"
    ))
}

/// Read block `block`'s leaves from the store into `cache`, checked
/// against the log's root of it.
async fn read_block(
    log: &RwLock<BlockLog>,
    store: &Store,
    cache: &mut BlockCache,
    block: u64,
) -> Result<(), ReadingsError> {
    let start = block * BLOCK_LEAVES;
    let leaves = store
        .seal_leaves_between(start, start + BLOCK_LEAVES)
        .await?;
    let log = log.read().await;
    cache.insert(&log, block, leaves).map_err(answer_error)
}

/// Ask `question` of the log, reading the stored blocks it needs (see the
/// module documentation).
pub(crate) async fn prove<T>(
    log: &RwLock<BlockLog>,
    store: &Store,
    mut question: impl FnMut(&mut Prover<'_, FromCache>) -> Result<T, BlockLogError<Unloaded>>,
) -> Result<T, ReadingsError> {
    let mut cache = BlockCache::new(PROOF_CACHE_BLOCKS);
    for _ in 0..ATTEMPTS {
        let answer = {
            let log = log.read().await;
            question(&mut log.cached_prover(&cache))
        };
        match answer {
            Err(BlockLogError::Source { block, .. }) => {
                read_block(log, store, &mut cache, block).await?;
            }
            answer => return answer.map_err(answer_error),
        }
    }
    Err(unsettled())
}

/// The log's roots and proofs for [`locus_iot::Bundle::export_stored`],
/// on a blocking thread (the export is synchronous): each question as in
/// [`prove`], with the store read through the runtime. What went wrong is
/// kept in `failure` (the export itself only says that the log could not
/// answer).
pub(crate) struct StoredProofs {
    log: Arc<RwLock<BlockLog>>,
    store: Store,
    runtime: Handle,
    cache: BlockCache,
    pub(crate) failure: Option<ReadingsError>,
}

impl StoredProofs {
    /// Proofs of `log`; to be used on a blocking thread of the current
    /// runtime.
    pub(crate) fn new(log: Arc<RwLock<BlockLog>>, store: Store) -> Self {
        Self {
            log,
            store,
            runtime: Handle::current(),
            cache: BlockCache::new(EXPORT_CACHE_BLOCKS),
            failure: None,
        }
    }

    fn ask<T>(
        &mut self,
        mut question: impl FnMut(&mut Prover<'_, FromCache>) -> Result<T, BlockLogError<Unloaded>>,
    ) -> Result<T, SealError> {
        let result = (|| {
            for _ in 0..ATTEMPTS {
                let answer = {
                    let log = self.log.blocking_read();
                    question(&mut log.cached_prover(&self.cache))
                };
                match answer {
                    Err(BlockLogError::Source { block, .. }) => {
                        self.runtime.block_on(read_block(
                            &self.log,
                            &self.store,
                            &mut self.cache,
                            block,
                        ))?;
                    }
                    answer => return answer.map_err(answer_error),
                }
            }
            Err(unsettled())
        })();
        result.map_err(|e| {
            let said = SealError::Log(e.to_string());
            self.failure = Some(e);
            said
        })
    }
}

impl Proofs for StoredProofs {
    type Error = SealError;
    fn root(&mut self, size: u64) -> Result<Hash, SealError> {
        self.ask(|p| p.root(size))
    }
    fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, SealError> {
        self.ask(|p| p.inclusion_proof(index, size))
    }
    fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, SealError> {
        self.ask(|p| p.consistency_proof(old, new))
    }
}

#[cfg(test)]
mod tests;

//! The block log against the reference [`MerkleLog`]: every root, every
//! inclusion and every consistency proof byte-identical, across block
//! boundaries, with small blocks (many boundaries) and the production one;
//! how many stored blocks each question reads; and what a source that
//! gives wrong leaves gets.

use std::cell::Cell;

use proptest::prelude::*;

use super::*;
use crate::merkle::leaf_hash;

fn leaves(n: usize, seed: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&[seed, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
        .collect()
}

/// A block log over `leaves` with blocks of `2^height`.
fn block_log(height: u32, leaves: &[Hash]) -> BlockLog {
    let mut log = BlockLog::with_height(height);
    for l in leaves {
        log.append(*l);
    }
    log
}

/// A source over `leaves` that counts its reads.
fn source<'a>(
    height: u32,
    leaves: &'a [Hash],
    reads: &'a Cell<usize>,
) -> impl FnMut(u64) -> Result<Vec<Hash>, String> + 'a {
    move |block| {
        reads.set(reads.get() + 1);
        let b = 1usize << height;
        let start = block as usize * b;
        leaves
            .get(start..start + b)
            .map(<[Hash]>::to_vec)
            .ok_or_else(|| format!("no block {block}"))
    }
}

/// Every root, inclusion proof and consistency proof of every prefix, with
/// one prover per question, against the reference; no question reads more
/// than two stored blocks.
fn check_all(height: u32, leaves: &[Hash]) -> Result<(), TestCaseError> {
    let reference = MerkleLog::from_leaf_hashes(leaves.iter().copied());
    let log = block_log(height, leaves);
    let n = leaves.len() as u64;
    prop_assert_eq!(log.size(), n);
    prop_assert_eq!(log.current_root(), reference.current_root());
    let reads = Cell::new(0);
    let fresh = || {
        reads.set(0);
        log.prover(source(height, leaves, &reads))
    };
    for size in 0..=n {
        prop_assert_eq!(
            fresh().root(size).unwrap(),
            reference.root(size).unwrap(),
            "root {}",
            size
        );
        prop_assert!(reads.get() <= 1);
        for index in 0..size {
            prop_assert_eq!(
                fresh().inclusion_proof(index, size).unwrap(),
                reference.inclusion_proof(index, size).unwrap(),
                "inclusion {} in {}",
                index,
                size
            );
            prop_assert!(reads.get() <= 2);
        }
        for old in 0..=size {
            prop_assert_eq!(
                fresh().consistency_proof(old, size).unwrap(),
                reference.consistency_proof(old, size).unwrap(),
                "consistency {} -> {}",
                old,
                size
            );
            prop_assert!(reads.get() <= 2);
        }
    }
    for index in 0..n {
        prop_assert_eq!(fresh().leaf(index).unwrap(), leaves[index as usize]);
        prop_assert!(reads.get() <= 1);
    }
    Ok(())
}

proptest! {
    // Each case asks every question of every prefix: about n³/3 hashes'
    // worth of proofs, so few cases and small trees; blocks of 1 to 16
    // leaves put many block boundaries in them.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn every_answer_matches_the_reference(height in 0u32..=4, n in 0usize..=90, seed in any::<u8>()) {
        check_all(height, &leaves(n, seed))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Larger trees, random questions, blocks of 4 to 256 leaves (the
    /// production height among them).
    #[test]
    fn random_answers_match_the_reference_up_to_4000_leaves(
        height in prop_oneof![Just(BLOCK_HEIGHT), 2u32..=7],
        n in 1usize..=4000,
        seed in any::<u8>(),
        qs in proptest::collection::vec((any::<u64>(), any::<u64>()), 40),
    ) {
        let leaves = leaves(n, seed);
        let reference = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        let log = block_log(height, &leaves);
        let reads = Cell::new(0);
        let n = n as u64;
        for (a, b) in qs {
            let size = 1 + a % n;
            let index = b % size;
            reads.set(0);
            let mut p = log.prover(source(height, &leaves, &reads));
            prop_assert_eq!(p.root(size).unwrap(), reference.root(size).unwrap());
            prop_assert_eq!(
                p.inclusion_proof(index, size).unwrap(),
                reference.inclusion_proof(index, size).unwrap()
            );
            prop_assert_eq!(p.leaf(index).unwrap(), leaves[index as usize]);
            prop_assert!(reads.get() <= 2, "{} blocks read for one inclusion", reads.get());
            reads.set(0);
            let mut p = log.prover(source(height, &leaves, &reads));
            prop_assert_eq!(
                p.consistency_proof(index, size).unwrap(),
                reference.consistency_proof(index, size).unwrap()
            );
            prop_assert!(reads.get() <= 2, "{} blocks read for one consistency", reads.get());
        }
    }

    /// Rebuilt from its block roots and tail, a log is the same log.
    #[test]
    fn a_log_rebuilt_from_its_parts_is_the_same(height in 0u32..=8, n in 0usize..=3000, seed in any::<u8>()) {
        let leaves = leaves(n, seed);
        let mut log = BlockLog::with_height(height);
        let mut completed = Vec::new();
        for (i, l) in leaves.iter().enumerate() {
            if let Some((block, root)) = log.append(*l) {
                let b = 1usize << height;
                prop_assert_eq!(block as usize, completed.len());
                prop_assert_eq!(i + 1, (block as usize + 1) * b);
                prop_assert_eq!(root, tree_root(&leaves[i + 1 - b..=i]));
                completed.push(root);
            }
        }
        prop_assert_eq!(log.blocks(), completed.len() as u64);
        let rebuilt = BlockLog::from_parts(height, completed.clone(), log.tail().to_vec()).unwrap();
        prop_assert_eq!(rebuilt.size(), log.size());
        prop_assert_eq!(rebuilt.current_root(), log.current_root());
        prop_assert_eq!(&rebuilt, &log);
        for (b, root) in completed.iter().enumerate() {
            prop_assert_eq!(rebuilt.block_root(b as u64), Some(*root));
        }
    }
}

#[test]
fn current_root_matches_the_reference_at_every_size() {
    for height in [0, 1, 3, BLOCK_HEIGHT] {
        let leaves = leaves(1100, 5);
        let mut reference = MerkleLog::new();
        let mut log = BlockLog::with_height(height);
        assert_eq!(log.current_root(), EMPTY_ROOT);
        for l in &leaves {
            reference.append(*l);
            log.append(*l);
            assert_eq!(
                log.current_root(),
                reference.current_root(),
                "size {}",
                log.size()
            );
            assert_eq!(log.checkpoint("o").root, reference.current_root());
        }
    }
}

#[test]
fn memory_alone_answers_at_block_ends_and_in_the_tail() {
    let leaves = leaves(1000, 1);
    let reference = MerkleLog::from_leaf_hashes(leaves.iter().copied());
    let log = block_log(BLOCK_HEIGHT, &leaves);
    assert_eq!(log.blocks(), 3);
    assert_eq!(log.tail().len(), 1000 - 768);
    for size in [0, 256, 512, 768, 769, 900, 1000] {
        assert_eq!(
            log.root(size).unwrap(),
            reference.root(size).unwrap(),
            "{size}"
        );
        assert_eq!(
            log.checkpoint_at("o", size).unwrap().root,
            reference.root(size).unwrap()
        );
    }
    // Inside a complete block: its leaves are needed, and not at hand.
    assert_eq!(
        log.root(300).unwrap_err(),
        BlockLogError::Source {
            block: 1,
            cause: Unloaded
        }
    );
    assert_eq!(
        log.root(1001).unwrap_err(),
        BlockLogError::Merkle(MerkleError::SizeBeyondLog {
            size: 1001,
            len: 1000
        })
    );
}

#[test]
fn a_source_with_wrong_leaves_is_caught_and_named() {
    let leaves = leaves(600, 2);
    let log = block_log(BLOCK_HEIGHT, &leaves);
    // A changed leaf in block 1.
    let mut changed = leaves.clone();
    changed[300][0] ^= 1;
    let reads = Cell::new(0);
    let e = log
        .prover(source(BLOCK_HEIGHT, &changed, &reads))
        .inclusion_proof(300, 600)
        .unwrap_err();
    assert_eq!(
        e,
        BlockLogError::BlockMismatch {
            block: 1,
            first: 256,
            end: 512
        }
    );
    assert!(e.to_string().contains("seqs 256..512"), "{e}");
    // A block cut short.
    let e = log
        .prover(|_: u64| Ok::<_, String>(leaves[..255].to_vec()))
        .leaf(3)
        .unwrap_err();
    assert_eq!(
        e,
        BlockLogError::BlockLength {
            block: 0,
            got: 255,
            want: 256
        }
    );
    // A source that fails says so, with the block.
    let e = log
        .prover(|b: u64| Err::<Vec<Hash>, _>(format!("disk on fire at {b}")))
        .root(100)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read the leaves of block 0: disk on fire at 0"
    );
    // Questions that are wrong in themselves.
    let mut p = log.prover(source(BLOCK_HEIGHT, &leaves, &reads));
    assert!(matches!(
        p.inclusion_proof(600, 600),
        Err(BlockLogError::Merkle(MerkleError::IndexOutOfRange { .. }))
    ));
    assert!(matches!(
        p.consistency_proof(7, 6),
        Err(BlockLogError::Merkle(MerkleError::OldAfterNew { .. }))
    ));
    assert!(matches!(
        p.leaf(600),
        Err(BlockLogError::Merkle(MerkleError::IndexOutOfRange { .. }))
    ));
}

#[test]
fn a_prover_reads_a_block_once_for_several_questions() {
    let leaves = leaves(2000, 3);
    let log = block_log(BLOCK_HEIGHT, &leaves);
    let reads = Cell::new(0);
    let mut p = log.prover(source(BLOCK_HEIGHT, &leaves, &reads));
    p.leaf(700).unwrap();
    p.root(1500).unwrap();
    p.inclusion_proof(700, 1500).unwrap();
    p.consistency_proof(700, 1500).unwrap();
    assert_eq!(reads.get(), 2, "blocks 2 and 5, each read once");
}

#[test]
fn a_tail_of_a_whole_block_is_refused() {
    assert_eq!(
        BlockLog::from_parts(2, [], leaves(4, 0)).unwrap_err(),
        TailTooLong { got: 4, block: 4 }
    );
    let log = BlockLog::from_parts(2, [[1; 32]], leaves(3, 0)).unwrap();
    assert_eq!(log.size(), 7);
}

#[test]
fn a_cache_holds_checked_blocks_for_provers_that_read_nothing() {
    let leaves = leaves(1500, 4);
    let reference = MerkleLog::from_leaf_hashes(leaves.iter().copied());
    let log = block_log(BLOCK_HEIGHT, &leaves);
    let block = |b: usize| leaves[b * 256..(b + 1) * 256].to_vec();
    let mut cache = BlockCache::new(2);
    // A miss names the block to read.
    assert_eq!(
        log.cached_prover(&cache).inclusion_proof(300, 1200),
        Err(BlockLogError::Source {
            block: 1,
            cause: Unloaded
        })
    );
    cache.insert(&log, 1, block(1)).unwrap();
    assert_eq!(
        log.cached_prover(&cache).inclusion_proof(300, 1200),
        Err(BlockLogError::Source {
            block: 4,
            cause: Unloaded
        })
    );
    cache.insert(&log, 4, block(4)).unwrap();
    assert_eq!(
        log.cached_prover(&cache)
            .inclusion_proof(300, 1200)
            .unwrap(),
        reference.inclusion_proof(300, 1200).unwrap()
    );
    // Only checked blocks get in.
    let mut wrong = block(2);
    wrong[9][0] ^= 1;
    assert!(matches!(
        cache.insert(&log, 2, wrong),
        Err(BlockLogError::BlockMismatch { block: 2, .. })
    ));
    assert!(matches!(
        cache.insert(&log, 2, block(2)[1..].to_vec()),
        Err(BlockLogError::BlockLength { block: 2, .. })
    ));
    assert!(matches!(
        cache.insert(&log, 4, Vec::new()),
        Err(BlockLogError::BlockLength { .. })
    ));
    // The tail is no stored block.
    assert!(matches!(
        cache.insert(&log, 5, leaves[1280..].to_vec()),
        Err(BlockLogError::Merkle(_))
    ));
    assert_eq!(cache.len(), 2);
    // The oldest goes first.
    cache.insert(&log, 0, block(0)).unwrap();
    assert_eq!(cache.len(), 2);
    assert!(log.cached_prover(&cache).leaf(300).is_err());
    assert_eq!(log.cached_prover(&cache).leaf(5).unwrap(), leaves[5]);
    // Blocks checked against another log are not taken for this one's.
    let other = block_log(BLOCK_HEIGHT, &self::leaves(1500, 9));
    assert!(other.cached_prover(&cache).leaf(5).is_err());
}

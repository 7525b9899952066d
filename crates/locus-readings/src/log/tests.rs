//! The seal log against a real store: a log written in blocks loads the
//! same from its block roots and tail; a store without block roots is
//! upgraded to the same roots; a store whose roots or leaves were tampered
//! with refuses to start, or fails the proof that reads them, naming the
//! block or seq; proofs and bundles served from stored blocks are
//! byte-identical to those of the whole log held in memory.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use locus_core::NodeId;
use locus_iot::seal::{SealLog, Sealed};
use locus_iot::{Bundle, Reading, Value};

use super::*;
use crate::bulk::BulkSealer;
use crate::{Readings, ReadingsMetrics, ReadingsSetup};

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn reading(i: u64) -> Reading {
    Reading::new(
        format!("dev{}", i % 7),
        "t",
        Value::Number(i as f64 / 4.0),
        Some("Cel".into()),
        1_700_000_000_000 + i as i64,
    )
    .unwrap()
}

/// A store holding readings `0..n`, sealed in transactions of `chunk`,
/// with a checkpoint signed at each size of `checkpoints` (all `<= n`),
/// and the same log held whole in memory.
async fn sealed_store(
    dir: &std::path::Path,
    n: u64,
    chunk: u64,
    checkpoints: &[u64],
) -> (Store, SealLog) {
    let store = Store::open(dir).unwrap();
    let mut bulk = BulkSealer::open(store.clone()).await.unwrap();
    let mut whole = SealLog::new();
    let mut at = 0;
    let mut marks: Vec<u64> = checkpoints.to_vec();
    marks.push(n);
    marks.sort_unstable();
    for mark in marks {
        while at < mark {
            let end = mark.min(at + chunk);
            let rs: Vec<Reading> = (at..end).map(reading).collect();
            assert_eq!(bulk.append(&rs).await.unwrap(), at..end);
            for r in rs {
                whole.append(r);
            }
            at = end;
        }
        if checkpoints.contains(&mark) && mark > 0 {
            bulk.checkpoint(&key()).await.unwrap();
        }
    }
    (store, whole)
}

async fn start(store: &Store) -> Result<Readings, ReadingsError> {
    let key = key();
    let node = NodeId::from_public_key(&key.verifying_key());
    let metrics = Arc::new(ReadingsMetrics::register(&prometheus::Registry::new()).unwrap());
    Readings::start(ReadingsSetup {
        store: store.clone(),
        key,
        node,
        metrics,
        config: Default::default(),
        signer: std::sync::Arc::new(locus_core::signer::Unsigned),
    })
    .await
    .map(|(r, _loops)| r)
}

async fn exec(store: &Store, sql: &'static str) {
    store
        .call(move |c| {
            c.execute_batch(sql)?;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_log_loads_from_its_block_roots_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    // 2000 readings in odd-sized transactions: blocks complete inside
    // them, across them, and one transaction completes several.
    let (store, whole) = sealed_store(dir.path(), 2000, 333, &[]).await;
    let roots = store.seal_block_roots().await.unwrap();
    assert_eq!(roots.len(), 7, "2000 leaves: 7 complete blocks");
    let log = load(&store).await.unwrap();
    assert_eq!(log.size(), 2000);
    assert_eq!(log.blocks(), 7);
    assert_eq!(log.tail().len(), 2000 - 7 * 256);
    assert_eq!(log.checkpoint("o").root, whole.checkpoint("o").root);
    for (b, root) in roots.iter().enumerate() {
        let leaves: Vec<Hash> = (b as u64 * 256..(b as u64 + 1) * 256)
            .map(|s| whole.leaf(s).unwrap())
            .collect();
        assert_eq!(*root, tree_root(&leaves), "block {b}");
        assert_eq!(log.block_root(b as u64), Some(*root));
    }
    // An empty store is an empty log.
    let empty = tempfile::tempdir().unwrap();
    let store = Store::open(empty.path()).unwrap();
    assert_eq!(load(&store).await.unwrap().size(), 0);
}

#[tokio::test]
async fn a_store_without_block_roots_is_upgraded_to_the_same_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (store, whole) = sealed_store(dir.path(), 3000, 1000, &[]).await;
    let roots = store.seal_block_roots().await.unwrap();
    // As an older locus left it: leaves, no block roots.
    exec(&store, "DELETE FROM seal_blocks").await;
    let log = load(&store).await.unwrap();
    assert_eq!(store.seal_block_roots().await.unwrap(), roots);
    assert_eq!(log.checkpoint("o").root, whole.checkpoint("o").root);
    // Half done (a crash during the upgrade): it goes on from there.
    exec(&store, "DELETE FROM seal_blocks WHERE block >= 4").await;
    load(&store).await.unwrap();
    assert_eq!(store.seal_block_roots().await.unwrap(), roots);
    // A pass is cut into transactions of a bounded number of blocks.
    exec(&store, "DELETE FROM seal_blocks").await;
    assert_eq!(store.fill_seal_blocks(0, 3).await.unwrap(), roots[..3]);
    assert_eq!(store.fill_seal_blocks(3, 100).await.unwrap(), roots[3..]);
    assert!(store.fill_seal_blocks(11, 100).await.unwrap().is_empty());
    assert_eq!(store.seal_block_roots().await.unwrap(), roots);
}

#[tokio::test]
async fn a_tampered_store_refuses_to_start_naming_the_block_or_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sealed_store(dir.path(), 1000, 1000, &[]).await;
    let fails = |why: &'static str| {
        let store = store.clone();
        async move {
            let e = start(&store).await.err().expect("the start must fail");
            assert!(
                matches!(e, ReadingsError::Store(StoreError::Corrupt(_))),
                "{e}"
            );
            assert!(e.to_string().contains(why), "{e}");
        }
    };
    // The last block's root does not match its leaves.
    exec(
        &store,
        "UPDATE seal_blocks SET root = zeroblob(32) WHERE block = 2",
    )
    .await;
    fails("root of seal block 2 does not match its leaves (seqs 512..768)").await;
    exec(&store, "DELETE FROM seal_blocks").await;
    start(&store).await.unwrap();
    // A block root missing in the middle.
    exec(&store, "DELETE FROM seal_blocks WHERE block = 1").await;
    fails("the root of seal block 1 is missing (the next stored is block 2)").await;
    exec(&store, "DELETE FROM seal_blocks").await;
    start(&store).await.unwrap();
    // A gap in the tail.
    exec(&store, "DELETE FROM seal_leaves WHERE seq = 900").await;
    fails("the seal leaf of seq 900 is missing (the next stored is seq 901)").await;
    // A gap in a block whose root is still to be computed.
    exec(&store, "DELETE FROM seal_blocks WHERE block = 2").await;
    exec(&store, "DELETE FROM seal_leaves WHERE seq = 600").await;
    fails("the seal leaf of seq 600 is missing").await;
    // Block roots beyond the stored leaves.
    exec(&store, "DELETE FROM seal_leaves WHERE seq >= 512").await;
    exec(&store, "DELETE FROM seal_blocks WHERE block >= 2").await;
    exec(
        &store,
        "INSERT INTO seal_blocks (block, root) VALUES (2, zeroblob(32))",
    )
    .await;
    fails("seal block 2 has a root but its leaves are not all stored").await;
    // A leaf that is not 32 bytes.
    exec(&store, "DELETE FROM seal_blocks WHERE block = 2").await;
    exec(
        &store,
        "UPDATE seal_leaves SET leaf = zeroblob(31) WHERE seq = 511",
    )
    .await;
    fails("the seal leaf of seq 511 is 31 bytes, not 32").await;
}

#[tokio::test]
async fn a_tampered_block_fails_the_proofs_that_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sealed_store(dir.path(), 1000, 1000, &[1000]).await;
    let r = start(&store).await.unwrap();
    r.inclusion(10, None).await.unwrap();
    // Block 0 is read at each proof that needs it, and checked each time.
    exec(
        &store,
        "UPDATE seal_leaves SET leaf = zeroblob(32) WHERE seq = 10",
    )
    .await;
    let e = r.inclusion(10, Some(1000)).await.unwrap_err();
    assert!(
        matches!(e, ReadingsError::Store(StoreError::Corrupt(_))),
        "{e}"
    );
    assert!(e.to_string().contains("block 0 (seqs 0..256)"), "{e}");
    let e = r.consistency(100, 1000).await.unwrap_err();
    assert!(e.to_string().contains("block 0 (seqs 0..256)"), "{e}");
    let e = r.bundle(0..20).await.unwrap_err();
    assert!(e.to_string().contains("block 0 (seqs 0..256)"), "{e}");
    // What does not need block 0 is still served.
    r.inclusion(300, Some(1000)).await.unwrap();
    r.bundle(300..320).await.unwrap();
    exec(&store, "DELETE FROM seal_leaves WHERE seq = 300").await;
    let e = r.inclusion(301, Some(1000)).await.unwrap_err();
    assert!(
        e.to_string().contains("seal leaf of seq 300 is missing"),
        "{e}"
    );
}

fn unhex(s: &str) -> Hash {
    let v: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn unhex_all(v: &[String]) -> Vec<Hash> {
    v.iter().map(|s| unhex(s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_from_stored_blocks_match_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [5, 256, 700, 1111, 2048, 2500];
    let (store, whole) = sealed_store(dir.path(), 2500, 400, &sizes).await;
    let mut r = start(&store).await.unwrap();
    let notes: Vec<String> = store
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(notes.len(), sizes.len());
    for round in 0..2 {
        for (seq, size) in [
            (0, 5),
            (3, 2500),
            (255, 256),
            (256, 700),
            (1000, 1111),
            (2400, 2500),
        ] {
            let p = r.inclusion(seq, Some(size)).await.unwrap();
            assert_eq!(p.root, locus_core::hex(&whole.root(size).unwrap()));
            assert_eq!(
                unhex_all(&p.proof),
                whole.inclusion_proof(seq, size).unwrap()
            );
            assert_eq!(unhex(&p.leaf_hash), whole.leaf(seq).unwrap());
            let leaf = Sealed {
                seq,
                reading: reading(seq),
            }
            .leaf_hash();
            assert_eq!(leaf, whole.leaf(seq).unwrap());
        }
        for (from, to) in [
            (5, 2500),
            (256, 700),
            (700, 1111),
            (1, 2),
            (1111, 2048),
            (0, 9),
        ] {
            let c = r.consistency(from, to).await.unwrap();
            assert_eq!(unhex(&c.from_root), whole.root(from).unwrap());
            assert_eq!(unhex(&c.to_root), whole.root(to).unwrap());
            assert_eq!(
                unhex_all(&c.proof),
                whole.consistency_proof(from, to).unwrap()
            );
        }
        for range in [0..0, 0..300, 250..1300, 2000..2500] {
            let got = r.bundle(range.clone()).await.unwrap();
            let cut = sizes.iter().position(|s| *s >= range.end.max(1)).unwrap() + 1;
            let stored: Vec<(u64, Reading)> = range.clone().map(|s| (s, reading(s))).collect();
            let want = Bundle::export_stored(&whole, &notes[..cut], range.clone(), stored).unwrap();
            assert_eq!(got.to_json().unwrap(), want.to_json().unwrap(), "{range:?}");
            let report = locus_iot::seal::verify(&got, &r.verifier_key());
            assert!(report.is_clean(), "{:?}", report.problems);
        }
        // The same again from a restarted node.
        if round == 0 {
            drop(r);
            store.close().await.unwrap();
            let store = Store::open(dir.path()).unwrap();
            r = start(&store).await.unwrap();
        }
    }
    // Ingest goes on where the bulk sealer stopped, across a block end.
    let more: Vec<Reading> = (2500..2600).map(reading).collect();
    assert_eq!(r.ingest(more.clone()).await.unwrap(), 2500..2600);
    let mut whole = whole;
    for m in more {
        whole.append(m);
    }
    let c = r.consistency(2500, 2600).await.unwrap();
    assert_eq!(unhex(&c.to_root), whole.root(2600).unwrap());
    assert_eq!(
        unhex_all(&c.proof),
        whole.consistency_proof(2500, 2600).unwrap()
    );
}

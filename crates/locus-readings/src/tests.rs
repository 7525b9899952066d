//! Readings against a real store in a temp dir: group commit under many
//! concurrent callers, failed commits, and restarts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use locus_core::NodeId;
use locus_iot::seal::{SealLog, Sealed};
use locus_iot::{Reading, Value};
use locus_store::Store;

use super::ingest::{self, Prepared, seal_batch};
use super::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn reading(thing: &str, i: u64) -> Reading {
    Reading::new(
        thing,
        "t",
        Value::Number(i as f64),
        None,
        1_700_000_000_000 + i as i64,
    )
    .unwrap()
}

async fn start(dir: &std::path::Path) -> (Readings, Store, Arc<ReadingsMetrics>) {
    start_with(dir, Default::default()).await
}

async fn start_with(
    dir: &std::path::Path,
    config: locus_core::config::ReadingsConfig,
) -> (Readings, Store, Arc<ReadingsMetrics>) {
    // As every locus process does first: the export's HTTP client needs a
    // TLS provider even for plain http.
    #[allow(deprecated)]
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let store = Store::open(dir).unwrap();
    let metrics = Arc::new(ReadingsMetrics::register(&prometheus::Registry::new()).unwrap());
    let key = key();
    let node = NodeId::from_public_key(&key.verifying_key());
    let (r, _loops) = Readings::start(ReadingsSetup {
        store: store.clone(),
        key,
        node,
        metrics: metrics.clone(),
        config,
        signer: std::sync::Arc::new(locus_core::signer::Unsigned),
    })
    .await
    .unwrap();
    (r, store, metrics)
}

/// Every stored row with its leaf, by seq.
async fn stored(store: &Store) -> BTreeMap<u64, (Reading, [u8; 32])> {
    let n = store.sealed_size().await.unwrap();
    store
        .readings_by_seq(0, n)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.seq,
                (
                    serde_json::from_str(&r.body).unwrap(),
                    r.leaf.try_into().unwrap(),
                ),
            )
        })
        .collect()
}

/// The acknowledged readings are exactly what is stored, each at its seq
/// with its own leaf, seqs run 0..n without a gap or a repeat, and the log
/// holds the stored leaves.
async fn check_acked(r: &Readings, store: &Store, acked: &[(std::ops::Range<u64>, Vec<Reading>)]) {
    let mut by_seq = BTreeMap::new();
    for (range, readings) in acked {
        assert_eq!(range.end - range.start, readings.len() as u64);
        for (seq, reading) in range.clone().zip(readings) {
            assert!(
                by_seq.insert(seq, reading.clone()).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }
    let n = by_seq.len() as u64;
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    let stored = stored(store).await;
    assert_eq!(stored.len() as u64, n, "stored = acknowledged");
    for (seq, reading) in &by_seq {
        let (got, leaf) = &stored[seq];
        assert_eq!(got, reading, "seq {seq}");
        let want = Sealed {
            seq: *seq,
            reading: reading.clone(),
        }
        .leaf_hash();
        assert_eq!(leaf, &want, "leaf of seq {seq}");
    }
    let log = r.inner.log.read().await;
    assert_eq!(log.size(), n);
    let rebuilt = SealLog::from_leaves(stored.values().map(|(_, l)| *l));
    assert_eq!(log.root(n).unwrap(), rebuilt.root(n).unwrap());
}

#[test]
fn a_batch_is_numbered_from_next_and_hashed_as_sealed() {
    let requests = [
        vec![reading("a", 0)],
        vec![reading("b", 1), reading("b", 2), reading("b", 3)],
        vec![],
        vec![reading("c", 4)],
    ];
    let prepared = requests
        .iter()
        .map(|rs| rs.iter().map(|r| Prepared::new(r).unwrap()).collect())
        .collect();
    let batch = seal_batch(10, prepared);
    assert_eq!(batch.ranges, vec![10..11, 11..14, 14..14, 14..15]);
    let all: Vec<&Reading> = requests.iter().flatten().collect();
    assert_eq!(batch.rows.len(), 5);
    assert_eq!(batch.leaves.len(), 5);
    for (i, (row, reading)) in batch.rows.iter().zip(&all).enumerate() {
        let seq = 10 + i as u64;
        let leaf = Sealed {
            seq,
            reading: (*reading).clone(),
        }
        .leaf_hash();
        assert_eq!(row.seq, seq);
        assert_eq!(row.leaf, leaf.to_vec());
        assert_eq!(batch.leaves[i], leaf);
        assert_eq!(row.thing, reading.thing());
        assert_eq!(row.time_ms, reading.time_ms());
        assert_eq!(
            &serde_json::from_str::<Reading>(&row.body).unwrap(),
            *reading
        );
    }
    let empty = seal_batch(3, vec![]);
    assert!(empty.rows.is_empty() && empty.ranges.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_callers_get_contiguous_unique_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (r, store, metrics) = start(dir.path()).await;
    let mut tasks = Vec::new();
    for c in 0..64u64 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40u64 {
                // Mostly single readings (MQTT publishers), some events.
                let n = if i % 10 == 9 { 5 } else { 1 };
                let batch: Vec<Reading> = (0..n)
                    .map(|k| reading(&format!("dev{c}"), i * 10 + k))
                    .collect();
                let range = r.ingest(batch.clone()).await.unwrap();
                acked.push((range, batch));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    check_acked(&r, &store, &acked).await;
    let commits = metrics.readings_batch.get_sample_count();
    eprintln!("{} requests in {commits} commits", acked.len());
    assert_eq!(metrics.readings_sealed.get(), 64 * (36 + 4 * 5));

    // A restart rebuilds the same log from the stored leaves.
    let root = r.inner.log.read().await.checkpoint("o").root;
    drop(r);
    store.close().await.unwrap();
    let (again, _store, _) = start(dir.path()).await;
    assert_eq!(again.inner.log.read().await.checkpoint("o").root, root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_during_a_commit_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (r, store, metrics) = start(dir.path()).await;
    // Hold the log: the writer takes its first request and waits; every
    // other caller queues meanwhile.
    let held = r.inner.log.clone().write_owned().await;
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..100u64 {
        let (r, started) = (r.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let batch = vec![reading("q", c)];
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (r.ingest(batch.clone()).await.unwrap(), batch)
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while started.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "callers did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Queuing is immediate once started (the queue has room).
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(held);
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    check_acked(&r, &store, &acked).await;
    let commits = metrics.readings_batch.get_sample_count();
    assert!(commits <= 3, "100 waiting callers took {commits} commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_commit_fails_its_whole_batch_and_leaves_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (r, store, metrics) = start(dir.path()).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        let batch = vec![reading("ok", i)];
        acked.push((r.ingest(batch.clone()).await.unwrap(), batch));
    }
    // Another connection makes the store refuse any row of thing "poison".
    let db = rusqlite::Connection::open(dir.path().join(locus_store::DB_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER poison BEFORE INSERT ON readings WHEN NEW.thing = 'poison'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    let mut tasks = Vec::new();
    for c in 0..40u64 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..10u64 {
                let poison = matches!((c, i), (5, 3) | (30, 7));
                let thing = if poison { "poison" } else { "ok" };
                let batch = vec![reading(thing, 1000 + c * 100 + i)];
                out.push((r.ingest(batch.clone()).await, batch));
            }
            out
        }));
    }
    let (mut failed, mut poisoned_acks) = (0, 0);
    for t in tasks {
        for (result, batch) in t.await.unwrap() {
            match result {
                Ok(range) => {
                    poisoned_acks += usize::from(batch[0].thing() == "poison");
                    acked.push((range, batch));
                }
                Err(e) => {
                    assert!(matches!(e, ReadingsError::Commit(_)), "{e}");
                    failed += 1;
                }
            }
        }
    }
    assert_eq!(poisoned_acks, 0, "a refused reading was acknowledged");
    // Both poisoned readings were refused, with every reading that shared
    // their batch (at least themselves).
    assert!(failed >= 2, "the injected failure never hit");
    assert!(metrics.readings_commit_failures.get() >= 1);
    // The store takes readings again; seqs go on from the log, no gap.
    db.execute_batch("DROP TRIGGER poison").unwrap();
    for i in 0..5 {
        let batch = vec![reading("after", i)];
        acked.push((r.ingest(batch.clone()).await.unwrap(), batch));
    }
    eprintln!("{} acknowledged, {failed} refused", acked.len());
    check_acked(&r, &store, &acked).await;
}

#[tokio::test]
async fn a_commit_reported_failed_that_happened_is_taken_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (r, store, metrics) = start(dir.path()).await;
    let first = vec![reading("a", 0), reading("a", 1)];
    let range = r.ingest(first.clone()).await.unwrap();
    assert_eq!(range, 0..2);
    // Rows the writer does not know of: what a commit that reported an
    // error but reached the disk leaves behind.
    let ghost = vec![reading("ghost", 2)];
    let batch = seal_batch(
        2,
        vec![ghost.iter().map(|x| Prepared::new(x).unwrap()).collect()],
    );
    store.append_readings(batch.rows).await.unwrap();
    let writer = ingest::Writer {
        store: store.clone(),
        log: r.inner.log.clone(),
        grown: Arc::new(tokio::sync::Notify::new()),
        metrics,
    };
    let mut suspect = true;
    let next = vec![reading("b", 3)];
    let ranges = writer
        .commit(
            vec![next.iter().map(|x| Prepared::new(x).unwrap()).collect()],
            &mut suspect,
        )
        .await
        .unwrap();
    assert_eq!(
        ranges,
        vec![3..4],
        "numbered after the ghost, never over it"
    );
    assert!(!suspect);
    check_acked(&r, &store, &[(0..2, first), (2..3, ghost), (3..4, next)]).await;
}

fn unhex(s: &str) -> [u8; 32] {
    let v: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn unhex_all(v: &[String]) -> Vec<[u8; 32]> {
    v.iter().map(|s| unhex(s)).collect()
}

#[tokio::test]
async fn proofs_of_an_honest_log_verify() {
    use locus_iot::{checkpoint, merkle};
    let dir = tempfile::tempdir().unwrap();
    let (r, _store, _) = start(dir.path()).await;
    for i in 0..7 {
        r.ingest(vec![reading("p", i)]).await.unwrap();
    }
    r.checkpoint().await.unwrap();
    r.ingest((7..20).map(|i| reading("p", i)).collect())
        .await
        .unwrap();
    let (name, vk) = checkpoint::parse_verifier_key(&r.verifier_key()).unwrap();

    // Default size: the newest checkpoint (7) covers seq 5.
    let p = r.inclusion(5, None).await.unwrap();
    assert_eq!(p.tree_size, 7);
    assert_eq!(p.reading, reading("p", 5));
    let leaf = Sealed {
        seq: 5,
        reading: p.reading.clone(),
    }
    .leaf_hash();
    assert_eq!(locus_core::hex(&leaf), p.leaf_hash);
    merkle::verify_inclusion(&leaf, 5, 7, &unhex_all(&p.proof), &unhex(&p.root)).unwrap();
    let cp = checkpoint::open(p.checkpoint.as_deref().unwrap(), &name, &vk).unwrap();
    assert_eq!((cp.size, cp.root), (7, unhex(&p.root)));

    // Seq 12 is past it: a checkpoint of the whole log is signed for it.
    let p = r.inclusion(12, None).await.unwrap();
    assert_eq!(p.tree_size, 20);
    let cp = checkpoint::open(p.checkpoint.as_deref().unwrap(), &name, &vk).unwrap();
    assert_eq!(cp.root, unhex(&p.root));
    let leaf = Sealed {
        seq: 12,
        reading: reading("p", 12),
    }
    .leaf_hash();
    merkle::verify_inclusion(&leaf, 12, 20, &unhex_all(&p.proof), &cp.root).unwrap();

    // Any size at all, with no checkpoint there.
    let p = r.inclusion(12, Some(13)).await.unwrap();
    assert_eq!(p.checkpoint, None);
    merkle::verify_inclusion(&leaf, 12, 13, &unhex_all(&p.proof), &unhex(&p.root)).unwrap();

    // The log only grew from checkpoint 7 to checkpoint 20.
    let c = r.consistency(7, 20).await.unwrap();
    let old = checkpoint::open(c.from_checkpoint.as_deref().unwrap(), &name, &vk).unwrap();
    let new = checkpoint::open(c.to_checkpoint.as_deref().unwrap(), &name, &vk).unwrap();
    merkle::verify_consistency(7, 20, &old.root, &new.root, &unhex_all(&c.proof)).unwrap();
    let c = r.consistency(3, 11).await.unwrap();
    merkle::verify_consistency(
        3,
        11,
        &unhex(&c.from_root),
        &unhex(&c.to_root),
        &unhex_all(&c.proof),
    )
    .unwrap();
    assert!(r.consistency(0, 20).await.unwrap().proof.is_empty());
    assert!(r.consistency(20, 20).await.unwrap().proof.is_empty());

    // Wrong seqs and sizes, each with what is wrong.
    let e = r.inclusion(20, None).await.unwrap_err();
    assert!(matches!(e, ReadingsError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("seq 20 is not sealed"), "{e}");
    let e = r.inclusion(3, Some(21)).await.unwrap_err();
    assert!(
        e.to_string().contains("tree size 21 is beyond the log"),
        "{e}"
    );
    let e = r.inclusion(12, Some(12)).await.unwrap_err();
    assert!(matches!(e, ReadingsError::Conflict(_)), "{e}");
    assert!(e.to_string().contains("not in the tree of size 12"), "{e}");
    let e = r.consistency(11, 3).await.unwrap_err();
    assert!(matches!(e, ReadingsError::Conflict(_)), "{e}");
    let e = r.consistency(3, 21).await.unwrap_err();
    assert!(matches!(e, ReadingsError::Invalid(_)), "{e}");
}

fn retention(toml: &str) -> locus_core::config::ReadingsConfig {
    locus_core::Config::from_toml_str(&format!("[readings]\n{toml}"))
        .unwrap()
        .readings
}

#[tokio::test]
async fn retention_by_count_deletes_the_oldest_bodies_and_keeps_their_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (r, store, metrics) = start_with(dir.path(), retention("max_readings = 5")).await;
    r.ingest((0..12).map(|i| reading("k", i)).collect())
        .await
        .unwrap();
    r.checkpoint().await.unwrap();
    let root = r.inner.log.read().await.checkpoint("o").root;
    assert_eq!(r.prune(crate::unix_ms()).await.unwrap(), 7);
    assert_eq!(r.pruned_below(), 7);
    // The background pass may have done the deleting (this call then found
    // nothing left): its count lands once that task runs again.
    for _ in 0..200 {
        if metrics.readings_pruned.get() == 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.readings_pruned.get(), 7);
    // The bodies are gone, the leaves and the log are not.
    assert_eq!(
        stored(&store).await.keys().copied().collect::<Vec<_>>(),
        (7..12).collect::<Vec<_>>()
    );
    assert_eq!(store.reading_leaves().await.unwrap().len(), 12);
    assert_eq!(r.inner.log.read().await.checkpoint("o").root, root);
    // What needs a pruned body says which.
    let e = r.bundle(0..12).await.unwrap_err();
    assert!(
        matches!(e, ReadingsError::Pruned { first: 0, below: 7 }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("reading seq 0 was deleted by retention"),
        "{e}"
    );
    let e = r.bundle(6..8).await.unwrap_err();
    assert!(
        matches!(e, ReadingsError::Pruned { first: 6, below: 7 }),
        "{e}"
    );
    let e = r.inclusion(3, None).await.unwrap_err();
    assert!(matches!(e, ReadingsError::Pruned { first: 3, .. }), "{e}");
    // What is kept still exports and verifies clean.
    let bundle = r.bundle(7..12).await.unwrap();
    let report = locus_iot::seal::verify(&bundle, &r.verifier_key());
    assert!(report.is_clean(), "{:?}", report.problems);
    let p = r.inclusion(9, None).await.unwrap();
    let leaf = Sealed {
        seq: 9,
        reading: reading("k", 9),
    }
    .leaf_hash();
    locus_iot::merkle::verify_inclusion(&leaf, 9, p.tree_size, &unhex_all(&p.proof), &root)
        .unwrap();
    // A second pass has nothing to do; a restart remembers the watermark.
    assert_eq!(r.prune(crate::unix_ms()).await.unwrap(), 7);
    drop(r);
    store.close().await.unwrap();
    let (again, _store, _) = start_with(dir.path(), retention("max_readings = 5")).await;
    assert_eq!(again.pruned_below(), 7);
    assert!(again.bundle(0..3).await.is_err());
}

#[tokio::test]
async fn retention_by_age_counts_from_when_the_node_accepted_a_reading() {
    use locus_iot::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let config = retention("retention_days = 1\nmax_readings = 0");
    let (r, store, _) = start_with(dir.path(), config).await;
    let now = crate::unix_ms();
    let day = 86_400_000;
    // Readings 0..4 were in a checkpoint signed two days ago (whatever
    // their own timestamps say); 4..6 in one signed an hour ago.
    r.ingest((0..4).map(|i| reading("a", i)).collect())
        .await
        .unwrap();
    let origin = r.inner.origin.clone();
    let sign = |size: u64| {
        let log = r.inner.log.clone();
        let origin = origin.clone();
        let key = key();
        async move {
            let cp = log.read().await.checkpoint_at(&origin, size).unwrap();
            checkpoint::sign(&cp, &origin, &key).unwrap()
        }
    };
    store
        .put_checkpoint(4, sign(4).await, now - 2 * day)
        .await
        .unwrap();
    r.ingest((4..6).map(|i| reading("a", i)).collect())
        .await
        .unwrap();
    store
        .put_checkpoint(6, sign(6).await, now - day / 24)
        .await
        .unwrap();
    assert_eq!(r.prune(now).await.unwrap(), 4);
    assert_eq!(stored(&store).await.len(), 2);
    // A day later the second checkpoint is old enough too.
    assert_eq!(r.prune(now + day).await.unwrap(), 6);
    // Forever keeps everything.
    let dir = tempfile::tempdir().unwrap();
    let (r, _store, _) = start_with(
        dir.path(),
        retention("retention_days = 0\nmax_readings = 0"),
    )
    .await;
    r.ingest(vec![reading("a", 0)]).await.unwrap();
    r.checkpoint().await.unwrap();
    assert_eq!(r.prune(now + 1000 * day).await.unwrap(), 0);
}

#[tokio::test]
async fn imports_are_checked_and_stored_once_per_origin_and_seq() {
    use locus_iot::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let (parent, _store, metrics) = start(dir.path()).await;
    let child_key = SigningKey::from_bytes(&[9; 32]);
    let child = NodeId::from_public_key(&child_key.verifying_key()).to_string();
    let vk =
        checkpoint::verifier_key(&format!("locus/{child}"), &child_key.verifying_key()).unwrap();
    let r = |i| reading("c", i);

    let out = parent
        .import(&child, &vk, vec![(0, r(0)), (1, r(1))])
        .await
        .unwrap();
    assert_eq!((out.stored, out.duplicates), (2, 0));
    // A resent batch: what is there already is a duplicate, the rest new.
    let out = parent
        .import(&child, &vk, vec![(1, r(1)), (2, r(2))])
        .await
        .unwrap();
    assert_eq!((out.stored, out.duplicates), (1, 1));
    // Another body at a stored seq: the first is kept.
    let out = parent.import(&child, &vk, vec![(2, r(99))]).await.unwrap();
    assert_eq!(out.conflicting, vec![2]);
    let got = parent.imported(&child, 0, 100).await.unwrap().unwrap();
    assert_eq!(
        got.iter()
            .map(|v| (v.seq, v.reading.clone()))
            .collect::<Vec<_>>(),
        vec![(0, r(0)), (1, r(1)), (2, r(2))]
    );
    let origins = parent.import_origins().await.unwrap();
    assert_eq!(origins.len(), 1);
    assert_eq!((origins[0].count, origins[0].next_seq), (3, 3));
    assert_eq!(origins[0].verifier_key, vk);
    assert_eq!(
        metrics
            .readings_imported
            .with_label_values(&["duplicate"])
            .get(),
        1
    );

    // An origin and a key that do not belong together, the node itself,
    // and something that is not a node id are refused.
    let other = SigningKey::from_bytes(&[10; 32]);
    let other_vk =
        checkpoint::verifier_key(&format!("locus/{child}"), &other.verifying_key()).unwrap();
    for (origin, key, says) in [
        (child.as_str(), other_vk.as_str(), "is not the key of node"),
        ("not-a-node", vk.as_str(), "is not a node id"),
        (
            &*parent.inner.node.to_string(),
            &*parent.verifier_key(),
            "does not import its own readings",
        ),
    ] {
        let e = parent
            .import(origin, key, vec![(5, r(5))])
            .await
            .unwrap_err();
        assert!(matches!(e, ReadingsError::Conflict(_)), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
    assert!(
        parent
            .imported("00000000000000000000", 0, 10)
            .await
            .unwrap()
            .is_none()
    );
}

/// A parent that records the seqs of every import it receives and
/// answers the first `fail_first` of them 503.
struct FakeParent {
    url: String,
    received: Arc<std::sync::Mutex<Vec<Vec<u64>>>>,
}

async fn fake_parent(fail_first: usize) -> FakeParent {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<std::sync::Mutex<Vec<Vec<u64>>>> = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                    buf.drain(..end + 4 + len);
                    let seqs: Vec<u64> = body["readings"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["seq"].as_u64().unwrap())
                        .collect();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(seqs);
                        log.len()
                    };
                    let answer: &[u8] = if n <= fail_first {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                    };
                    if sock.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeParent { url, received }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_sent_again_until_acknowledged_and_resumes_from_its_cursor() {
    let parent = fake_parent(2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = retention(&format!(
        "max_readings = 2\nexport_url = \"{}\"",
        parent.url
    ));
    let (r, store, metrics) = start_with(dir.path(), config.clone()).await;
    r.ingest((0..10).map(|i| reading("x", i)).collect())
        .await
        .unwrap();
    // Refused twice: nothing acknowledged, so retention keeps everything.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while parent.received.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no export attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.prune(crate::unix_ms()).await.unwrap(), 0);
    assert_eq!(stored(&store).await.len(), 10);
    // Then acknowledged: the cursor is durable, retention may go up to it.
    let target = parent.url.clone();
    while store.export_cursor(target.clone()).await.unwrap() != Some(10) {
        assert!(std::time::Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.readings_export_failures.get() >= 2);
    assert_eq!(metrics.readings_exported.get(), 10);
    assert_eq!(
        parent.received.lock().unwrap().clone(),
        vec![(0..10).collect::<Vec<_>>(); 3],
        "the same batch, until it was acknowledged"
    );
    assert_eq!(r.prune(crate::unix_ms()).await.unwrap(), 8);

    // A restart goes on from the cursor.
    drop(r);
    store.close().await.unwrap();
    let (r, _store, _) = start_with(dir.path(), config).await;
    r.ingest((10..15).map(|i| reading("x", i)).collect())
        .await
        .unwrap();
    while parent.received.lock().unwrap().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing sent after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        parent.received.lock().unwrap()[3],
        (10..15).collect::<Vec<_>>()
    );
}

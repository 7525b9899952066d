use super::*;
use locus_core::NodeId;

fn node(seed: u8) -> NodeId {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    NodeId::from_public_key(&key.verifying_key())
}

#[tokio::test]
async fn fresh_store_is_at_the_current_schema_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let mode: String = store
        .writer
        .call(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    store.close().await.unwrap();
}

#[tokio::test]
async fn generations_grow_and_crashes_are_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let b1 = store.begin_boot("0.1.0", 1).await.unwrap();
    assert_eq!(
        b1,
        Boot {
            generation: 1,
            previous_clean: None
        }
    );
    store.end_boot(b1.generation, 2).await.unwrap();
    store.close().await.unwrap();

    let store = Store::open(dir.path()).unwrap();
    let b2 = store.begin_boot("0.1.0", 3).await.unwrap();
    assert_eq!(
        b2,
        Boot {
            generation: 2,
            previous_clean: Some(true)
        }
    );
    // No end_boot: a crash. Dropping the handle stops the writer without a checkpoint.
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let b3 = store.begin_boot("0.1.0", 4).await.unwrap();
    assert_eq!(
        b3,
        Boot {
            generation: 3,
            previous_clean: Some(false)
        }
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_data_dir_keeps_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.bind_node(node(1)).await.unwrap();
    store.bind_node(node(1)).await.unwrap();
    let err = store.bind_node(node(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::NodeMismatch { .. }), "{err}");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE future (x INTEGER); PRAGMA user_version = 999;")
            .unwrap();
    }
    let err = Store::open(dir.path())
        .err()
        .expect("newer schema must be refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 999,
                known: SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("schema version 999"), "{err}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 999);
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'boots'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "no migration ran on a newer database");
}

#[tokio::test]
async fn calls_after_close_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.schema_version().await,
        Err(StoreError::Closed)
    ));
    assert!(
        !dir.path().join("locus.db-wal").exists()
            || std::fs::metadata(dir.path().join("locus.db-wal"))
                .unwrap()
                .len()
                == 0
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(DB_FILE),
        b"this is not sqlite, it is forty bytes long!!",
    )
    .unwrap();
    let err = Store::open(dir.path())
        .err()
        .expect("garbage must be refused");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join(DB_FILE)).unwrap(),
        b"this is not sqlite, it is forty bytes long!!",
        "a broken store is never overwritten"
    );
}

#[tokio::test]
async fn owned_workloads_survive_a_reopen_and_can_be_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .put_workload("a".into(), "{\"v\":1}".into(), None, 1)
        .await
        .unwrap();
    store
        .put_workload("a".into(), "{\"v\":2}".into(), Some("h".into()), 2)
        .await
        .unwrap();
    store
        .put_workload("b".into(), "{}".into(), None, 3)
        .await
        .unwrap();
    store.close().await.unwrap();
    let store = Store::open(dir.path()).unwrap();
    let all = store.workloads().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].body, "{\"v\":2}");
    assert_eq!(all[0].instance.as_deref(), Some("h"));
    store.delete_workload("a".into()).await.unwrap();
    assert_eq!(store.workloads().await.unwrap().len(), 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn artifacts_keep_the_stronger_of_two_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = crate::StoredArtifact {
        cid: "bafkr4iabc".into(),
        size: 10,
        name: Some("app.wasm".into()),
        pinned: true,
        replicas: 2,
        added_at_ms: 5,
        used_at_ms: 5,
    };
    store.put_artifact(a.clone()).await.unwrap();
    store
        .put_artifact(crate::StoredArtifact {
            name: None,
            pinned: false,
            replicas: 0,
            used_at_ms: 9,
            ..a.clone()
        })
        .await
        .unwrap();
    let got = store.artifacts().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name.as_deref(), Some("app.wasm"));
    assert!(got[0].pinned);
    assert_eq!(got[0].replicas, 2);
    assert_eq!(got[0].used_at_ms, 9);
    assert!(
        store
            .set_artifact_pinned(a.cid.clone(), false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_artifact_pinned("nope".into(), false)
            .await
            .unwrap()
    );
    store.touch_artifact(a.cid.clone(), 3).await.unwrap();
    assert_eq!(
        store.artifacts().await.unwrap()[0].used_at_ms,
        9,
        "never moves back"
    );
    store.delete_artifact(a.cid).await.unwrap();
    assert!(store.artifacts().await.unwrap().is_empty());
}

fn stored_reading(seq: u64) -> StoredReading {
    StoredReading {
        seq,
        thing: "t".into(),
        resource: "r".into(),
        time_ms: seq as i64,
        body: format!("{{\"n\":{seq}}}"),
        leaf: vec![seq as u8; 32],
    }
}

#[tokio::test]
async fn pruning_deletes_bodies_oldest_first_and_keeps_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append_readings((0..10).map(stored_reading).collect())
        .await
        .unwrap();
    assert_eq!(store.readings_pruned_below().await.unwrap(), 0);
    // At most 3 per call, never past the target.
    assert_eq!(store.prune_readings(5, 3).await.unwrap(), (3, 3));
    assert_eq!(store.prune_readings(5, 3).await.unwrap(), (5, 2));
    assert_eq!(store.prune_readings(5, 3).await.unwrap(), (5, 0));
    // Never backwards.
    assert_eq!(store.prune_readings(2, 3).await.unwrap(), (5, 0));
    let left: Vec<u64> = store
        .readings_by_seq(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(left, (5..10).collect::<Vec<_>>());
    assert_eq!(store.reading_leaves().await.unwrap().len(), 10);
    assert_eq!(store.sealed_size().await.unwrap(), 10);
    store.close().await.unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.readings_pruned_below().await.unwrap(), 5);
    store.close().await.unwrap();
}

#[tokio::test]
async fn checkpoints_tell_what_was_accepted_by_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put_checkpoint(3, "a".into(), 100).await.unwrap();
    store.put_checkpoint(7, "b".into(), 200).await.unwrap();
    assert_eq!(store.checkpoint_size_signed_by(99).await.unwrap(), 0);
    assert_eq!(store.checkpoint_size_signed_by(150).await.unwrap(), 3);
    assert_eq!(store.checkpoint_size_signed_by(u64::MAX).await.unwrap(), 7);
    assert_eq!(store.checkpoint_at(7).await.unwrap().as_deref(), Some("b"));
    assert_eq!(store.checkpoint_at(5).await.unwrap(), None);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_export_cursor_only_moves_forward_and_survives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = "http://parent:7400".to_owned();
    assert_eq!(store.export_cursor(t.clone()).await.unwrap(), None);
    store.set_export_cursor(t.clone(), 10, 1).await.unwrap();
    store.set_export_cursor(t.clone(), 4, 2).await.unwrap();
    assert_eq!(store.export_cursor(t.clone()).await.unwrap(), Some(10));
    assert_eq!(
        store.export_cursor("http://other".into()).await.unwrap(),
        None
    );
    store.close().await.unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.export_cursor(t).await.unwrap(), Some(10));
    store.close().await.unwrap();
}

#[tokio::test]
async fn imports_are_stored_once_per_origin_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rows = |seqs: std::ops::Range<u64>, tag: &str| -> Vec<ImportedReading> {
        seqs.map(|seq| ImportedReading {
            seq,
            body: format!("{tag}{seq}"),
        })
        .collect()
    };
    let out = store
        .import_readings("a".into(), "ka".into(), rows(0..5, "x"), 1)
        .await
        .unwrap();
    assert_eq!((out.stored, out.duplicates), (5, 0));
    // A resent batch overlapping the first, one seq with another body.
    let mut again = rows(3..8, "x");
    again[0].body = "changed".into();
    let out = store
        .import_readings("a".into(), "ka".into(), again, 2)
        .await
        .unwrap();
    assert_eq!(out.stored, 3);
    assert_eq!(out.duplicates, 1);
    assert_eq!(out.conflicting, vec![3]);
    // Another origin has its own seqs.
    store
        .import_readings("b".into(), "kb".into(), rows(0..2, "y"), 3)
        .await
        .unwrap();
    let got = store.imported("a".into(), 0, 100).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(got[3].body, "x3", "the first body is kept");
    assert_eq!(store.imported("a".into(), 6, 1).await.unwrap()[0].seq, 6);
    let origins = store.import_origins().await.unwrap();
    assert_eq!(origins.len(), 2);
    assert_eq!(
        (
            origins[0].origin.as_str(),
            origins[0].count,
            origins[0].next_seq
        ),
        ("a", 8, 8)
    );
    assert_eq!(origins[1].verifier_key, "kb");
    store.close().await.unwrap();
}

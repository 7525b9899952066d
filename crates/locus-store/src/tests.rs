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

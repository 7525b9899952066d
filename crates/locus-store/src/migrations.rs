//! Versioned schema. `PRAGMA user_version` holds the version; migration `i`
//! (0-based) brings the schema from version `i` to `i + 1`. Migrations are
//! append-only: a released one is never edited.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: node metadata and the record of every start.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE boots (
        generation    INTEGER PRIMARY KEY,
        started_at_ms INTEGER NOT NULL,
        stopped_at_ms INTEGER,
        version       TEXT NOT NULL
    ) STRICT;",
    // 2: workloads this node owns, with the driver handle of their instance.
    "CREATE TABLE workloads (
        id            TEXT PRIMARY KEY,
        body          TEXT NOT NULL,
        instance      TEXT,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;",
    // 3: the index of artifacts held on this node (their bytes live in files).
    "CREATE TABLE artifacts (
        cid         TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        name        TEXT,
        pinned      INTEGER NOT NULL,
        replicas    INTEGER NOT NULL,
        added_at_ms INTEGER NOT NULL,
        used_at_ms  INTEGER NOT NULL
    ) STRICT;",
    // 4: readings of things; the leaves of the node's seal log, kept apart
    // so the log survives whatever happens to a reading's row; and the
    // checkpoints the node signed over that log.
    "CREATE TABLE readings (
        seq      INTEGER PRIMARY KEY,
        thing    TEXT NOT NULL,
        resource TEXT NOT NULL,
        time_ms  INTEGER NOT NULL,
        body     TEXT NOT NULL
    ) STRICT;
    CREATE TABLE seal_leaves (
        seq  INTEGER PRIMARY KEY,
        leaf BLOB NOT NULL
    ) STRICT;
    CREATE INDEX readings_by_thing ON readings (thing, time_ms);
    CREATE TABLE checkpoints (
        size         INTEGER PRIMARY KEY,
        note         TEXT NOT NULL,
        signed_at_ms INTEGER NOT NULL
    ) STRICT;",
    // 5: things this node manages (the owner of their records).
    "CREATE TABLE things (
        name          TEXT PRIMARY KEY,
        body          TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;",
    // 6: the EdgeX profile and value type last posted for each resource of
    // a device, to answer EdgeX reading queries in their own terms.
    "CREATE TABLE edgex_resources (
        device     TEXT NOT NULL,
        resource   TEXT NOT NULL,
        profile    TEXT NOT NULL,
        value_type TEXT NOT NULL,
        PRIMARY KEY (device, resource)
    ) STRICT, WITHOUT ROWID;",
    // 7: counters of readings housekeeping; `pruned_below`: the bodies of
    // seqs below it were deleted by retention (their leaves stay).
    "CREATE TABLE readings_state (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;",
    // 8: the durable outbox and inbox of readings between nodes.
    // `export_cursors`: per parent URL, the seqs below `next` were
    // acknowledged by that parent. `imports`: what child nodes exported
    // here, once per (origin, seq), with the key each origin's log is
    // signed with in `import_origins`.
    "CREATE TABLE export_cursors (
        target        TEXT PRIMARY KEY,
        next          INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE import_origins (
        origin       TEXT PRIMARY KEY,
        verifier_key TEXT NOT NULL,
        first_at_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE imports (
        origin         TEXT NOT NULL REFERENCES import_origins (origin),
        seq            INTEGER NOT NULL,
        body           TEXT NOT NULL,
        imported_at_ms INTEGER NOT NULL,
        PRIMARY KEY (origin, seq)
    ) STRICT, WITHOUT ROWID;",
    // 9: persistent MQTT sessions of things (their command subscriptions)
    // and the QoS 1 commands queued for things while they are offline.
    "CREATE TABLE mqtt_sessions (
        thing         TEXT NOT NULL,
        client_id     TEXT NOT NULL,
        filters       TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (thing, client_id)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE mqtt_queue (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        thing        TEXT NOT NULL,
        topic        TEXT NOT NULL,
        payload      BLOB NOT NULL,
        queued_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX mqtt_queue_by_thing ON mqtt_queue (thing, id);",
    // 10: the root of every complete block of 256 seal leaves (block `b`
    // holds seqs `b·256 .. (b+1)·256`), written in the transaction that
    // stores the block's last leaf, so that a start loads one root per
    // block instead of every leaf. A file from before it gets its block
    // roots from its leaves at the first start.
    "CREATE TABLE seal_blocks (
        block INTEGER PRIMARY KEY,
        root  BLOB NOT NULL
    ) STRICT;",
    // 11: the tenants an artifact belongs to (its uploaders'), comma
    // separated: what they may see and what counts towards their storage.
    "ALTER TABLE artifacts ADD COLUMN tenants TEXT NOT NULL DEFAULT '';",
    // 12: the market records this node keeps: its own offers and requests,
    // the contracts it is a party or arbitrator to, receipts and
    // settlements; each the signed record's bytes, by kind and id.
    "CREATE TABLE market (
        kind          TEXT NOT NULL,
        id            TEXT NOT NULL,
        body          BLOB NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    ) STRICT, WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn open_and_migrate(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    // WAL: readers never block the writer; FULL: a commit survives power loss.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_err)?;

    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i as i64 + 1;
        let migrate = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        migrate(&mut conn).map_err(|source| StoreError::Migration { version, source })?;
        tracing::info!(version, "store schema migrated");
    }
    Ok(conn)
}

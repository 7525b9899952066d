//! # locus-store
//!
//! The node's embedded database: one SQLite file in WAL mode under the data
//! dir, its versioned schema, and the single task allowed to write it.
//!
//! Owns: the schema and its migrations, the writer thread, and the typed
//! operations other crates call ([`Store::begin_boot`], …). Callers never see
//! a SQL connection; they send work to the writer and await the answer.
//!
//! Must never: open a second writer on the same file, run a migration it does
//! not know (a database from a newer locus is refused, never "repaired"), or
//! acknowledge a write before SQLite has committed it.

mod migrations;
mod writer;

use std::path::{Path, PathBuf};

use locus_core::NodeId;
use rusqlite::{OptionalExtension, params};

pub use migrations::SCHEMA_VERSION;
use writer::Writer;

/// Name of the database file inside the data dir.
pub const DB_FILE: &str = "locus.db";

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or prepared.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer locus.
    #[error(
        "the store at {path} has schema version {found}, newer than the {known} this locus knows; \
         run a newer locus or move the data dir aside"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A migration failed; the database is left at the version before it.
    #[error("migration to schema version {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    /// The data dir belongs to another node.
    #[error(
        "the store belongs to node {stored}, but the key in the data dir is node {current}; \
         the data dir was mixed up with another node's"
    )]
    NodeMismatch { stored: String, current: String },
    /// A query failed.
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The writer is gone (the store was closed or its thread died).
    #[error("the store is closed")]
    Closed,
}

/// One start of the agent on this data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    /// Grows by one at every start; the fabric publishes it so that peers
    /// can tell a restarted node from a stale one.
    pub generation: u64,
    /// How the previous run ended: `Some(true)` if it closed the store
    /// cleanly, `Some(false)` if it crashed, `None` on the first start.
    pub previous_clean: Option<bool>,
}

/// An owned workload as stored: JSON the agent wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWorkload {
    pub id: String,
    pub body: String,
    pub instance: Option<String>,
}

/// An artifact this node holds, as indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub cid: String,
    pub size: u64,
    /// A name given at upload, for people.
    pub name: Option<String>,
    /// Pinned artifacts are never collected.
    pub pinned: bool,
    /// Copies the cluster keeps (0: this node's copy only).
    pub replicas: u32,
    pub added_at_ms: u64,
    /// Last read, served or started from (collection goes oldest first).
    pub used_at_ms: u64,
}

/// A reading as stored: its place in the seal log, its JSON body and its
/// leaf hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReading {
    pub seq: u64,
    pub thing: String,
    pub resource: String,
    pub time_ms: i64,
    pub body: String,
    pub leaf: Vec<u8>,
}

/// A reading a child node exported here: its seq in the child's seal log
/// and its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedReading {
    pub seq: u64,
    pub body: String,
}

/// What one import stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Readings stored now.
    pub stored: u64,
    /// Readings already stored with the same body (a resent batch).
    pub duplicates: u64,
    /// Seqs already stored with another body; the first body is kept.
    pub conflicting: Vec<u64>,
}

/// A child node whose readings were imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOrigin {
    /// The child's node id.
    pub origin: String,
    /// The key its seal log is signed with.
    pub verifier_key: String,
    /// Readings stored.
    pub count: u64,
    /// One past the highest seq stored (0 when none).
    pub next_seq: u64,
}

/// The EdgeX profile and value type last posted for a device's resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgexResource {
    pub device: String,
    pub resource: String,
    pub profile: String,
    pub value_type: String,
}

/// The key of the prune watermark in `readings_state`.
const PRUNED_BELOW: &str = "pruned_below";

/// The columns [`reading_row`] reads, readings joined with their leaves.
const READING_SELECT: &str = "SELECT r.seq, r.thing, r.resource, r.time_ms, r.body, l.leaf
     FROM readings r JOIN seal_leaves l ON l.seq = r.seq";

fn reading_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReading> {
    Ok(StoredReading {
        seq: r.get::<_, i64>(0)? as u64,
        thing: r.get(1)?,
        resource: r.get(2)?,
        time_ms: r.get(3)?,
        body: r.get(4)?,
        leaf: r.get(5)?,
    })
}

/// Handle to the node's database. Cheap to clone; every clone talks to the
/// same writer thread.
#[derive(Clone)]
pub struct Store {
    writer: Writer,
    path: PathBuf,
}

impl Store {
    /// Open (or create) the database in `data_dir`, run pending migrations
    /// and start the writer.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        let conn = migrations::open_and_migrate(&path)?;
        Ok(Store {
            writer: Writer::spawn(conn),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema version of the open database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.writer
            .call(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await
    }

    /// Tie the store to `node`: the first call records it, later calls check
    /// that the data dir still holds the same node.
    pub async fn bind_node(&self, node: NodeId) -> Result<(), StoreError> {
        let current = node.to_string();
        self.writer
            .call(move |c| {
                let stored: Option<String> = c
                    .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
                        r.get(0)
                    })
                    .optional()?;
                match stored {
                    Some(stored) if stored != current => {
                        Err(StoreError::NodeMismatch { stored, current })
                    }
                    Some(_) => Ok(()),
                    None => {
                        c.execute(
                            "INSERT INTO meta (key, value) VALUES ('node_id', ?1)",
                            params![current],
                        )?;
                        Ok(())
                    }
                }
            })
            .await
    }

    /// Record a start of the agent and return its generation.
    pub async fn begin_boot(&self, version: &str, now_ms: u64) -> Result<Boot, StoreError> {
        let version = version.to_owned();
        self.writer
            .call(move |c| {
                let tx = c.transaction()?;
                let last: Option<(i64, Option<i64>)> = tx
                    .query_row(
                        "SELECT generation, stopped_at_ms FROM boots ORDER BY generation DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let generation = last.map_or(1, |(g, _)| g + 1);
                tx.execute(
                    "INSERT INTO boots (generation, started_at_ms, version) VALUES (?1, ?2, ?3)",
                    params![generation, now_ms as i64, version],
                )?;
                tx.commit()?;
                Ok(Boot {
                    generation: generation as u64,
                    previous_clean: last.map(|(_, stopped)| stopped.is_some()),
                })
            })
            .await
    }

    /// Mark the run `generation` as cleanly stopped.
    pub async fn end_boot(&self, generation: u64, now_ms: u64) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute(
                    "UPDATE boots SET stopped_at_ms = ?2 WHERE generation = ?1",
                    params![generation as i64, now_ms as i64],
                )?;
                Ok(())
            })
            .await
    }

    /// Write (insert or replace) an owned workload: its body and the
    /// driver handle of its instance, both as JSON. Acknowledged once
    /// committed.
    pub async fn put_workload(
        &self,
        id: String,
        body: String,
        instance: Option<String>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute(
                    "INSERT INTO workloads (id, body, instance, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET body = ?2, instance = ?3, updated_at_ms = ?4",
                    params![id, body, instance, now_ms as i64],
                )?;
                Ok(())
            })
            .await
    }

    /// Forget an owned workload (destroyed, or handed to another node).
    pub async fn delete_workload(&self, id: String) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute("DELETE FROM workloads WHERE id = ?1", params![id])?;
                Ok(())
            })
            .await
    }

    /// Every owned workload: `(id, body, instance)`.
    pub async fn workloads(&self) -> Result<Vec<StoredWorkload>, StoreError> {
        self.writer
            .call(|c| {
                let mut stmt = c.prepare("SELECT id, body, instance FROM workloads ORDER BY id")?;
                let rows = stmt.query_map([], |r| {
                    Ok(StoredWorkload {
                        id: r.get(0)?,
                        body: r.get(1)?,
                        instance: r.get(2)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Write (insert or replace) a thing this node manages, as JSON.
    /// Acknowledged once committed.
    pub async fn put_thing(
        &self,
        name: String,
        body: String,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute(
                    "INSERT INTO things (name, body, updated_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET body = ?2, updated_at_ms = ?3",
                    params![name, body, now_ms as i64],
                )?;
                Ok(())
            })
            .await
    }

    /// Forget a thing (removed, or handed to another manager).
    pub async fn delete_thing(&self, name: String) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute("DELETE FROM things WHERE name = ?1", params![name])?;
                Ok(())
            })
            .await
    }

    /// Every thing this node manages: `(name, body)`.
    pub async fn things(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.writer
            .call(|c| {
                let mut stmt = c.prepare("SELECT name, body FROM things ORDER BY name")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Record an artifact this node now holds. A second record of the same
    /// artifact keeps the stronger of both: pinned wins, the larger replica
    /// count wins, a name given replaces none.
    pub async fn put_artifact(&self, a: StoredArtifact) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute(
                    "INSERT INTO artifacts (cid, size, name, pinned, replicas, added_at_ms, used_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT(cid) DO UPDATE SET
                        name = COALESCE(?3, name),
                        pinned = MAX(pinned, ?4),
                        replicas = MAX(replicas, ?5),
                        used_at_ms = ?6",
                    params![a.cid, a.size as i64, a.name, a.pinned, a.replicas as i64, a.used_at_ms as i64],
                )?;
                Ok(())
            })
            .await
    }

    /// Every artifact this node holds, least recently used first.
    pub async fn artifacts(&self) -> Result<Vec<StoredArtifact>, StoreError> {
        self.writer
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT cid, size, name, pinned, replicas, added_at_ms, used_at_ms
                     FROM artifacts ORDER BY used_at_ms, cid",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(StoredArtifact {
                        cid: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        name: r.get(2)?,
                        pinned: r.get(3)?,
                        replicas: r.get::<_, i64>(4)? as u32,
                        added_at_ms: r.get::<_, i64>(5)? as u64,
                        used_at_ms: r.get::<_, i64>(6)? as u64,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Pin or unpin an artifact; false when it is not held.
    pub async fn set_artifact_pinned(&self, cid: String, pinned: bool) -> Result<bool, StoreError> {
        self.writer
            .call(move |c| {
                Ok(c.execute(
                    "UPDATE artifacts SET pinned = ?2 WHERE cid = ?1",
                    params![cid, pinned],
                )? > 0)
            })
            .await
    }

    /// Note that an artifact was used (read, served or started from).
    pub async fn touch_artifact(&self, cid: String, now_ms: u64) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute(
                    "UPDATE artifacts SET used_at_ms = MAX(used_at_ms, ?2) WHERE cid = ?1",
                    params![cid, now_ms as i64],
                )?;
                Ok(())
            })
            .await
    }

    /// Forget an artifact (its bytes are gone).
    pub async fn delete_artifact(&self, cid: String) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute("DELETE FROM artifacts WHERE cid = ?1", params![cid])?;
                Ok(())
            })
            .await
    }

    /// Append readings in one transaction; acknowledged once committed
    /// (WAL, synchronous = FULL: durable across power loss).
    pub async fn append_readings(&self, rows: Vec<StoredReading>) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                let tx = c.transaction()?;
                {
                    let mut reading = tx.prepare_cached(
                        "INSERT INTO readings (seq, thing, resource, time_ms, body)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    let mut leaf =
                        tx.prepare_cached("INSERT INTO seal_leaves (seq, leaf) VALUES (?1, ?2)")?;
                    for r in &rows {
                        reading.execute(params![
                            r.seq as i64,
                            r.thing,
                            r.resource,
                            r.time_ms,
                            r.body
                        ])?;
                        leaf.execute(params![r.seq as i64, r.leaf])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Every leaf hash, in seq order (to rebuild the seal log at start).
    pub async fn reading_leaves(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.writer
            .call(|c| {
                let mut stmt = c.prepare("SELECT leaf FROM seal_leaves ORDER BY seq")?;
                let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Readings of `thing` (all things when `None`) with `from_ms <= time
    /// < to_ms`, oldest first, at most `limit`.
    pub async fn readings_of(
        &self,
        thing: Option<String>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredReading>, StoreError> {
        self.writer
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "{READING_SELECT} WHERE (?1 IS NULL OR r.thing = ?1)
                     AND r.time_ms >= ?2 AND r.time_ms < ?3 ORDER BY r.time_ms, r.seq LIMIT ?4"
                ))?;
                let rows =
                    stmt.query_map(params![thing, from_ms, to_ms, limit as i64], reading_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The newest reading of one resource of a thing.
    pub async fn latest_reading(
        &self,
        thing: String,
        resource: String,
    ) -> Result<Option<StoredReading>, StoreError> {
        self.writer
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "{READING_SELECT} WHERE r.thing = ?1 AND r.resource = ?2
                     ORDER BY r.time_ms DESC, r.seq DESC LIMIT 1"
                ))?;
                let mut rows = stmt.query_map(params![thing, resource], reading_row)?;
                Ok(rows.next().transpose()?)
            })
            .await
    }

    /// Readings with `start <= seq < end`, in seq order.
    pub async fn readings_by_seq(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredReading>, StoreError> {
        self.writer
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "{READING_SELECT} WHERE r.seq >= ?1 AND r.seq < ?2 ORDER BY r.seq"
                ))?;
                let rows = stmt.query_map(params![start as i64, end as i64], reading_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The size of the seal log as stored: one past the highest seq with a
    /// leaf (0 when none).
    pub async fn sealed_size(&self) -> Result<u64, StoreError> {
        self.writer
            .call(|c| {
                let n: i64 = c.query_row(
                    "SELECT COALESCE(MAX(seq) + 1, 0) FROM seal_leaves",
                    [],
                    |r| r.get(0),
                )?;
                Ok(n as u64)
            })
            .await
    }

    /// The leaf hashes of seqs `start..`, in seq order, with their seqs.
    pub async fn reading_leaves_from(&self, start: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.writer
            .call(move |c| {
                let mut stmt =
                    c.prepare("SELECT seq, leaf FROM seal_leaves WHERE seq >= ?1 ORDER BY seq")?;
                let rows = stmt.query_map(params![start as i64], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Readings of `thing` with `from_ms <= time <= to_ms`, newest first
    /// (then highest seq first), skipping `offset`, at most `limit`; and how
    /// many match in all.
    pub async fn readings_of_thing_newest(
        &self,
        thing: String,
        from_ms: i64,
        to_ms: i64,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<StoredReading>), StoreError> {
        self.writer
            .call(move |c| {
                let total: i64 = c.query_row(
                    "SELECT COUNT(*) FROM readings WHERE thing = ?1 AND time_ms >= ?2 AND time_ms <= ?3",
                    params![thing, from_ms, to_ms],
                    |r| r.get(0),
                )?;
                let mut stmt = c.prepare(&format!(
                    "{READING_SELECT} WHERE r.thing = ?1 AND r.time_ms >= ?2 AND r.time_ms <= ?3
                     ORDER BY r.time_ms DESC, r.seq DESC LIMIT ?4 OFFSET ?5"
                ))?;
                let rows = stmt.query_map(
                    params![
                        thing,
                        from_ms,
                        to_ms,
                        limit as i64,
                        offset.min(i64::MAX as u64) as i64
                    ],
                    reading_row,
                )?;
                Ok((total as u64, rows.collect::<Result<Vec<_>, _>>()?))
            })
            .await
    }

    /// The export cursor of `target`: the seqs below it were acknowledged
    /// by that parent. `None` before the first export there.
    pub async fn export_cursor(&self, target: String) -> Result<Option<u64>, StoreError> {
        self.writer
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT next FROM export_cursors WHERE target = ?1",
                    params![target],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .map(|n| n as u64))
            })
            .await
    }

    /// Move the export cursor of `target` to `next` (never backwards);
    /// acknowledged once committed.
    pub async fn set_export_cursor(
        &self,
        target: String,
        next: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute(
                    "INSERT INTO export_cursors (target, next, updated_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(target) DO UPDATE SET next = MAX(next, ?2), updated_at_ms = ?3",
                    params![target, next as i64, now_ms as i64],
                )?;
                Ok(())
            })
            .await
    }

    /// Store readings a child node exported, in one transaction, each
    /// (origin, seq) at most once: a resent reading is counted as a
    /// duplicate (or a conflict when its body differs) and the stored one
    /// kept. Acknowledged once committed.
    pub async fn import_readings(
        &self,
        origin: String,
        verifier_key: String,
        rows: Vec<ImportedReading>,
        now_ms: u64,
    ) -> Result<ImportOutcome, StoreError> {
        self.writer
            .call(move |c| {
                let tx = c.transaction()?;
                let mut out = ImportOutcome::default();
                tx.execute(
                    "INSERT INTO import_origins (origin, verifier_key, first_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(origin) DO NOTHING",
                    params![origin, verifier_key, now_ms as i64],
                )?;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO imports (origin, seq, body, imported_at_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(origin, seq) DO NOTHING",
                    )?;
                    let mut stored = tx.prepare_cached(
                        "SELECT body FROM imports WHERE origin = ?1 AND seq = ?2",
                    )?;
                    for r in &rows {
                        if insert.execute(params![origin, r.seq as i64, r.body, now_ms as i64])? == 1 {
                            out.stored += 1;
                            continue;
                        }
                        let body: String =
                            stored.query_row(params![origin, r.seq as i64], |x| x.get(0))?;
                        if body == r.body {
                            out.duplicates += 1;
                        } else {
                            out.conflicting.push(r.seq);
                        }
                    }
                }
                tx.commit()?;
                Ok(out)
            })
            .await
    }

    /// Every child node with imported readings, by origin.
    pub async fn import_origins(&self) -> Result<Vec<ImportOrigin>, StoreError> {
        self.writer
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT o.origin, o.verifier_key, COUNT(i.seq), COALESCE(MAX(i.seq) + 1, 0)
                     FROM import_origins o LEFT JOIN imports i ON i.origin = o.origin
                     GROUP BY o.origin ORDER BY o.origin",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(ImportOrigin {
                        origin: r.get(0)?,
                        verifier_key: r.get(1)?,
                        count: r.get::<_, i64>(2)? as u64,
                        next_seq: r.get::<_, i64>(3)? as u64,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Readings imported from `origin` with `seq >= start`, in seq order,
    /// at most `limit`.
    pub async fn imported(
        &self,
        origin: String,
        start: u64,
        limit: u32,
    ) -> Result<Vec<ImportedReading>, StoreError> {
        self.writer
            .call(move |c| {
                let mut stmt = c.prepare(
                    "SELECT seq, body FROM imports WHERE origin = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![origin, start.min(i64::MAX as u64) as i64, limit as i64],
                    |r| {
                        Ok(ImportedReading {
                            seq: r.get::<_, i64>(0)? as u64,
                            body: r.get(1)?,
                        })
                    },
                )?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Record the EdgeX profile and value type of device resources.
    pub async fn put_edgex_resources(&self, rows: Vec<EdgexResource>) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                let tx = c.transaction()?;
                {
                    let mut put = tx.prepare_cached(
                        "INSERT INTO edgex_resources (device, resource, profile, value_type)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(device, resource) DO UPDATE SET profile = ?3, value_type = ?4",
                    )?;
                    for r in &rows {
                        put.execute(params![r.device, r.resource, r.profile, r.value_type])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// The recorded EdgeX resources of `device`.
    pub async fn edgex_resources_of(
        &self,
        device: String,
    ) -> Result<Vec<EdgexResource>, StoreError> {
        self.writer
            .call(move |c| {
                let mut stmt = c.prepare(
                    "SELECT device, resource, profile, value_type FROM edgex_resources WHERE device = ?1",
                )?;
                let rows = stmt.query_map(params![device], |r| {
                    Ok(EdgexResource {
                        device: r.get(0)?,
                        resource: r.get(1)?,
                        profile: r.get(2)?,
                        value_type: r.get(3)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The signed checkpoint of exactly `size` leaves, if there is one.
    pub async fn checkpoint_at(&self, size: u64) -> Result<Option<String>, StoreError> {
        self.writer
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT note FROM checkpoints WHERE size = ?1",
                    params![size as i64],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }

    /// Seqs below this had their bodies deleted by retention (0: none).
    pub async fn readings_pruned_below(&self) -> Result<u64, StoreError> {
        self.writer.call(|c| Ok(pruned_below(c)?)).await
    }

    /// Delete the bodies of readings below seq `below`, oldest first and at
    /// most `max_rows` seqs of them, and move the prune watermark in the
    /// same transaction; leaves are kept. Returns the new watermark and the
    /// number of bodies deleted.
    pub async fn prune_readings(
        &self,
        below: u64,
        max_rows: u64,
    ) -> Result<(u64, u64), StoreError> {
        self.writer
            .call(move |c| {
                let tx = c.transaction()?;
                let from = pruned_below(&tx)?;
                let to = below.min(from.saturating_add(max_rows));
                if to <= from {
                    return Ok((from, 0));
                }
                let deleted = tx.execute(
                    "DELETE FROM readings WHERE seq >= ?1 AND seq < ?2",
                    params![from as i64, to as i64],
                )?;
                tx.execute(
                    "INSERT INTO readings_state (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = MAX(value, ?2)",
                    params![PRUNED_BELOW, to as i64],
                )?;
                tx.commit()?;
                Ok((to, deleted as u64))
            })
            .await
    }

    /// The largest size of a checkpoint signed at or before `at_ms` (0 when
    /// none): every seq below it was accepted by then.
    pub async fn checkpoint_size_signed_by(&self, at_ms: u64) -> Result<u64, StoreError> {
        self.writer
            .call(move |c| {
                let n: i64 = c.query_row(
                    "SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE signed_at_ms <= ?1",
                    params![at_ms.min(i64::MAX as u64) as i64],
                    |r| r.get(0),
                )?;
                Ok(n as u64)
            })
            .await
    }

    /// Record a signed checkpoint of the seal log.
    pub async fn put_checkpoint(
        &self,
        size: u64,
        note: String,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.writer
            .call(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO checkpoints (size, note, signed_at_ms) VALUES (?1, ?2, ?3)",
                    params![size as i64, note, now_ms as i64],
                )?;
                Ok(())
            })
            .await
    }

    /// The newest signed checkpoint `(size, note)`.
    pub async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.writer
            .call(|c| {
                let mut stmt =
                    c.prepare("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")?;
                let mut rows =
                    stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
                Ok(rows.next().transpose()?)
            })
            .await
    }

    /// Every signed checkpoint `(size, note)`, smallest first.
    pub async fn checkpoints(&self) -> Result<Vec<(u64, String)>, StoreError> {
        self.writer
            .call(|c| {
                let mut stmt = c.prepare("SELECT size, note FROM checkpoints ORDER BY size")?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Checkpoint the WAL into the main file and stop the writer. Calls made
    /// after this fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        self.writer.close().await
    }
}

fn pruned_below(c: &rusqlite::Connection) -> rusqlite::Result<u64> {
    Ok(c.query_row(
        "SELECT value FROM readings_state WHERE key = ?1",
        params![PRUNED_BELOW],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .map_or(0, |n| n as u64))
}

#[cfg(test)]
mod tests;

//! The readings tables of the node's store: `readings` (bodies), `seal_leaves`,
//! `seal_blocks` (the root of every complete block of leaves),
//! `checkpoints`, `readings_state` (the prune watermark), `export_cursors`,
//! `import_origins` and `imports` (children's readings), `edgex_resources`.
//! Queries run on the store's one writer thread.

use std::future::Future;

use locus_iot::merkle::{BLOCK_LEAVES, Hash, tree_root};
use locus_store::{Store, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

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

/// Queries of the readings tables.
pub(crate) trait ReadingsTable {
    /// Append readings in one transaction, with the root of every block of
    /// leaves they complete; acknowledged once committed (WAL, synchronous
    /// = FULL: durable across power loss).
    fn append_readings(
        &self,
        rows: Vec<StoredReading>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every leaf hash, in seq order.
    #[cfg(test)]
    fn reading_leaves(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// The root of every complete block of leaves stored in `seal_blocks`,
    /// in block order (block `i` at index `i`).
    fn seal_block_roots(&self) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;

    /// The leaf hashes of seqs `start..end`, every one of which must be
    /// stored (a missing seq is named).
    fn seal_leaves_between(
        &self,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;

    /// Compute from the stored leaves, and store, the roots of at most
    /// `max` complete blocks from block `from` on, in one transaction; the
    /// roots written, in order (fewer than `max` once the leaves run out).
    fn fill_seal_blocks(
        &self,
        from: u64,
        max: u64,
    ) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;

    /// Readings of `thing` (all things when `None`) with `from_ms <= time
    /// < to_ms`, oldest first, at most `limit`.
    fn readings_of(
        &self,
        thing: Option<String>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredReading>, StoreError>> + Send;

    /// The newest reading of one resource of a thing.
    fn latest_reading(
        &self,
        thing: String,
        resource: String,
    ) -> impl Future<Output = Result<Option<StoredReading>, StoreError>> + Send;

    /// Readings with `start <= seq < end`, in seq order.
    fn readings_by_seq(
        &self,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Vec<StoredReading>, StoreError>> + Send;

    /// The size of the seal log as stored: one past the highest seq with a
    /// leaf (0 when none).
    fn sealed_size(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The leaf hashes of seqs `start..`, in seq order, with their seqs.
    fn reading_leaves_from(
        &self,
        start: u64,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, StoreError>> + Send;

    /// Readings of `thing` with `from_ms <= time <= to_ms`, newest first
    /// (then highest seq first), skipping `offset`, at most `limit`; and how
    /// many match in all.
    fn readings_of_thing_newest(
        &self,
        thing: String,
        from_ms: i64,
        to_ms: i64,
        offset: u64,
        limit: u32,
    ) -> impl Future<Output = Result<(u64, Vec<StoredReading>), StoreError>> + Send;

    /// The export cursor of `target`: the seqs below it were acknowledged
    /// by that parent. `None` before the first export there.
    fn export_cursor(
        &self,
        target: String,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Move the export cursor of `target` to `next` (never backwards);
    /// acknowledged once committed.
    fn set_export_cursor(
        &self,
        target: String,
        next: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Store readings a child node exported, in one transaction, each
    /// (origin, seq) at most once: a resent reading is counted as a
    /// duplicate (or a conflict when its body differs) and the stored one
    /// kept. Acknowledged once committed.
    fn import_readings(
        &self,
        origin: String,
        verifier_key: String,
        rows: Vec<ImportedReading>,
        now_ms: u64,
    ) -> impl Future<Output = Result<ImportOutcome, StoreError>> + Send;

    /// Every child node with imported readings, by origin.
    fn import_origins(&self) -> impl Future<Output = Result<Vec<ImportOrigin>, StoreError>> + Send;

    /// Readings imported from `origin` with `seq >= start`, in seq order,
    /// at most `limit`.
    fn imported(
        &self,
        origin: String,
        start: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ImportedReading>, StoreError>> + Send;

    /// Record the EdgeX profile and value type of device resources.
    fn put_edgex_resources(
        &self,
        rows: Vec<EdgexResource>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The recorded EdgeX resources of `device`.
    fn edgex_resources_of(
        &self,
        device: String,
    ) -> impl Future<Output = Result<Vec<EdgexResource>, StoreError>> + Send;

    /// The signed checkpoint of exactly `size` leaves, if there is one.
    fn checkpoint_at(
        &self,
        size: u64,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Seqs below this had their bodies deleted by retention (0: none).
    fn readings_pruned_below(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Delete the bodies of readings below seq `below`, oldest first and at
    /// most `max_rows` seqs of them, and move the prune watermark in the
    /// same transaction; leaves are kept. Returns the new watermark and the
    /// number of bodies deleted.
    fn prune_readings(
        &self,
        below: u64,
        max_rows: u64,
    ) -> impl Future<Output = Result<(u64, u64), StoreError>> + Send;

    /// The largest size of a checkpoint signed at or before `at_ms` (0 when
    /// none): every seq below it was accepted by then.
    fn checkpoint_size_signed_by(
        &self,
        at_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Record a signed checkpoint of the seal log.
    fn put_checkpoint(
        &self,
        size: u64,
        note: String,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest signed checkpoint `(size, note)`.
    fn latest_checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<(u64, String)>, StoreError>> + Send;

    /// Every signed checkpoint `(size, note)`, smallest first.
    fn checkpoints(&self) -> impl Future<Output = Result<Vec<(u64, String)>, StoreError>> + Send;
}

impl ReadingsTable for Store {
    async fn append_readings(&self, rows: Vec<StoredReading>) -> Result<(), StoreError> {
        self.call(move |c| {
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
            put_completed_blocks(&tx, &rows)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    #[cfg(test)]
    async fn reading_leaves(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT leaf FROM seal_leaves ORDER BY seq")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn seal_block_roots(&self) -> Result<Vec<Hash>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT block, root FROM seal_blocks ORDER BY block")?;
            let mut rows = stmt.query([])?;
            let mut roots = Vec::new();
            while let Some(r) = rows.next()? {
                let block = r.get::<_, i64>(0)?;
                if block != roots.len() as i64 {
                    return Err(StoreError::Corrupt(format!(
                        "the root of seal block {} is missing (the next stored is block {block})",
                        roots.len()
                    )));
                }
                let root = r.get_ref(1)?;
                let root = root.as_blob().ok().and_then(|b| Hash::try_from(b).ok());
                roots.push(root.ok_or_else(|| {
                    StoreError::Corrupt(format!("the root of seal block {block} is not 32 bytes"))
                })?);
            }
            Ok(roots)
        })
        .await
    }

    async fn seal_leaves_between(&self, start: u64, end: u64) -> Result<Vec<Hash>, StoreError> {
        self.call(move |c| leaves_between(c, start, end)).await
    }

    async fn fill_seal_blocks(&self, from: u64, max: u64) -> Result<Vec<Hash>, StoreError> {
        self.call(move |c| {
            let size: i64 = c.query_row(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM seal_leaves",
                [],
                |r| r.get(0),
            )?;
            let complete = size as u64 / BLOCK_LEAVES;
            let tx = c.transaction()?;
            let mut roots = Vec::new();
            {
                let mut put =
                    tx.prepare_cached("INSERT INTO seal_blocks (block, root) VALUES (?1, ?2)")?;
                for block in from..complete.min(from.saturating_add(max)) {
                    let start = block * BLOCK_LEAVES;
                    let root = tree_root(&leaves_between(&tx, start, start + BLOCK_LEAVES)?);
                    put.execute(params![block as i64, &root[..]])?;
                    roots.push(root);
                }
            }
            tx.commit()?;
            Ok(roots)
        })
        .await
    }

    async fn readings_of(
        &self,
        thing: Option<String>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredReading>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "{READING_SELECT} WHERE (?1 IS NULL OR r.thing = ?1)
                     AND r.time_ms >= ?2 AND r.time_ms < ?3 ORDER BY r.time_ms, r.seq LIMIT ?4"
            ))?;
            let rows = stmt.query_map(params![thing, from_ms, to_ms, limit as i64], reading_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn latest_reading(
        &self,
        thing: String,
        resource: String,
    ) -> Result<Option<StoredReading>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "{READING_SELECT} WHERE r.thing = ?1 AND r.resource = ?2
                     ORDER BY r.time_ms DESC, r.seq DESC LIMIT 1"
            ))?;
            let mut rows = stmt.query_map(params![thing, resource], reading_row)?;
            Ok(rows.next().transpose()?)
        })
        .await
    }

    async fn readings_by_seq(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredReading>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "{READING_SELECT} WHERE r.seq >= ?1 AND r.seq < ?2 ORDER BY r.seq"
            ))?;
            let rows = stmt.query_map(params![start as i64, end as i64], reading_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn sealed_size(&self) -> Result<u64, StoreError> {
        self.call(|c| {
            let n: i64 = c.query_row(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM seal_leaves",
                [],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn reading_leaves_from(&self, start: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.call(move |c| {
            let mut stmt =
                c.prepare("SELECT seq, leaf FROM seal_leaves WHERE seq >= ?1 ORDER BY seq")?;
            let rows = stmt.query_map(params![start as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn readings_of_thing_newest(
        &self,
        thing: String,
        from_ms: i64,
        to_ms: i64,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<StoredReading>), StoreError> {
        self
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

    async fn export_cursor(&self, target: String) -> Result<Option<u64>, StoreError> {
        self.call(move |c| {
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

    async fn set_export_cursor(
        &self,
        target: String,
        next: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO export_cursors (target, next, updated_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(target) DO UPDATE SET next = MAX(next, ?2), updated_at_ms = ?3",
                params![target, next as i64, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn import_readings(
        &self,
        origin: String,
        verifier_key: String,
        rows: Vec<ImportedReading>,
        now_ms: u64,
    ) -> Result<ImportOutcome, StoreError> {
        self
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

    async fn import_origins(&self) -> Result<Vec<ImportOrigin>, StoreError> {
        self.call(|c| {
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

    async fn imported(
        &self,
        origin: String,
        start: u64,
        limit: u32,
    ) -> Result<Vec<ImportedReading>, StoreError> {
        self
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

    async fn put_edgex_resources(&self, rows: Vec<EdgexResource>) -> Result<(), StoreError> {
        self.call(move |c| {
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

    async fn edgex_resources_of(&self, device: String) -> Result<Vec<EdgexResource>, StoreError> {
        self
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

    async fn checkpoint_at(&self, size: u64) -> Result<Option<String>, StoreError> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT note FROM checkpoints WHERE size = ?1",
                params![size as i64],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn readings_pruned_below(&self) -> Result<u64, StoreError> {
        self.call(|c| Ok(pruned_below(c)?)).await
    }

    async fn prune_readings(&self, below: u64, max_rows: u64) -> Result<(u64, u64), StoreError> {
        self.call(move |c| {
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

    async fn checkpoint_size_signed_by(&self, at_ms: u64) -> Result<u64, StoreError> {
        self.call(move |c| {
            let n: i64 = c.query_row(
                "SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE signed_at_ms <= ?1",
                params![at_ms.min(i64::MAX as u64) as i64],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn put_checkpoint(&self, size: u64, note: String, now_ms: u64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO checkpoints (size, note, signed_at_ms) VALUES (?1, ?2, ?3)",
                params![size as i64, note, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.call(|c| {
            let mut stmt =
                c.prepare("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")?;
            let mut rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
            Ok(rows.next().transpose()?)
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<(u64, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT size, note FROM checkpoints ORDER BY size")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// The leaf hashes of seqs `start..end`, all of which must be stored.
fn leaves_between(c: &Connection, start: u64, end: u64) -> Result<Vec<Hash>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT seq, leaf FROM seal_leaves WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![start as i64, end as i64])?;
    let mut leaves = Vec::with_capacity(end.saturating_sub(start).min(BLOCK_LEAVES) as usize);
    let mut next = start;
    while let Some(r) = rows.next()? {
        let seq = r.get::<_, i64>(0)? as u64;
        if seq != next {
            return Err(StoreError::Corrupt(format!(
                "the seal leaf of seq {next} is missing (the next stored is seq {seq})"
            )));
        }
        leaves.push(leaf_of(seq, r.get_ref(1)?)?);
        next += 1;
    }
    if next < end {
        return Err(StoreError::Corrupt(format!(
            "the seal leaf of seq {next} is missing (the leaves stored end before it, {end} were expected)"
        )));
    }
    Ok(leaves)
}

/// A stored leaf as a hash, or what is wrong with it.
fn leaf_of(seq: u64, value: rusqlite::types::ValueRef<'_>) -> Result<Hash, StoreError> {
    let bytes = value
        .as_blob()
        .map_err(|_| StoreError::Corrupt(format!("the seal leaf of seq {seq} is not a blob")))?;
    Hash::try_from(bytes).map_err(|_| {
        StoreError::Corrupt(format!(
            "the seal leaf of seq {seq} is {} bytes, not 32",
            bytes.len()
        ))
    })
}

/// Store the root of every block whose last leaf is among `rows` (just
/// inserted, in the same transaction). The leaves of such a block that
/// came before `rows` are read back from the table.
fn put_completed_blocks(c: &Connection, rows: &[StoredReading]) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    // Rows come numbered in one run (seal_batch); any other shape reads
    // every leaf back.
    let contiguous = rows
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq == first.seq + i as u64);
    let mut put = c.prepare_cached("INSERT INTO seal_blocks (block, root) VALUES (?1, ?2)")?;
    for last in rows.iter().filter(|r| (r.seq + 1) % BLOCK_LEAVES == 0) {
        let block = last.seq / BLOCK_LEAVES;
        let start = block * BLOCK_LEAVES;
        let leaves = if contiguous {
            // Before the rows from the table, then from the rows.
            let from_rows = start.max(first.seq);
            let mut leaves = leaves_between(c, start, from_rows)?;
            for r in &rows[(from_rows - first.seq) as usize..=(last.seq - first.seq) as usize] {
                leaves.push(Hash::try_from(&r.leaf[..]).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "the seal leaf of seq {} is {} bytes, not 32",
                        r.seq,
                        r.leaf.len()
                    ))
                })?);
            }
            leaves
        } else {
            leaves_between(c, start, last.seq + 1)?
        };
        put.execute(params![block as i64, &tree_root(&leaves)[..]])?;
    }
    Ok(())
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
mod tests {
    use super::*;

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
}

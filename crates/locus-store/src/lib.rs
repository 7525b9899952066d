//! # locus-store
//!
//! The node's embedded database: one SQLite file in WAL mode under the data
//! dir, its versioned schema, and the single task allowed to write it.
//!
//! Owns: the schema and its migrations (one version sequence for the whole
//! file, so that an older binary refuses a newer file), the writer thread,
//! and the node's own tables (`meta`, `boots`). The tables of a domain are
//! queried by the service crate that owns it, through [`Store::call`]:
//! the query runs on the writer thread and the connection never leaves it.
//!
//! Must never: hand a connection out of the writer thread, open a second
//! writer on the same file, run a migration it does
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
    /// The store holds rows that are not what locus wrote (a gap, a value
    /// of the wrong size, data that contradicts other data); says which.
    #[error("the store holds data that is not valid: {0}")]
    Corrupt(String),
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

    /// Run `f` on the writer thread, in order with every other call, and
    /// return its result. This is how the services query the tables they
    /// own; the connection never leaves the writer thread, and a write is
    /// committed (WAL, `synchronous = FULL`) before `f` returns.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.call(f).await
    }

    /// Checkpoint the WAL into the main file and stop the writer. Calls made
    /// after this fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        self.writer.close().await
    }
}

#[cfg(test)]
mod tests;

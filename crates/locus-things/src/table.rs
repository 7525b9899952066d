//! The `things` table of the node's store: the things this node manages,
//! as JSON. Queries run on the store's one writer thread.

use std::future::Future;

use locus_store::{Store, StoreError};
use rusqlite::params;

/// Queries of the `things` table.
pub(crate) trait ThingTable {
    /// Write (insert or replace) a thing this node manages, as JSON.
    /// Acknowledged once committed.
    fn put_thing(
        &self,
        name: String,
        body: String,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forget a thing (removed, or handed to another manager).
    fn delete_thing(&self, name: String) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every thing this node manages: `(name, body)`.
    fn things(&self) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
}

impl ThingTable for Store {
    async fn put_thing(&self, name: String, body: String, now_ms: u64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO things (name, body, updated_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET body = ?2, updated_at_ms = ?3",
                params![name, body, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_thing(&self, name: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM things WHERE name = ?1", params![name])?;
            Ok(())
        })
        .await
    }

    async fn things(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT name, body FROM things ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

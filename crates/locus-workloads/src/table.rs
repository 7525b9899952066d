//! The `workloads` table of the node's store: the workloads this node owns,
//! as JSON, with the driver handle of each instance. Queries run on the
//! store's one writer thread.

use std::future::Future;

use locus_store::{Store, StoreError};
use rusqlite::params;

/// An owned workload as stored: JSON the agent wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWorkload {
    pub id: String,
    pub body: String,
    pub instance: Option<String>,
}

/// Queries of the `workloads` table.
pub(crate) trait WorkloadTable {
    /// Write (insert or replace) an owned workload: its body and the
    /// driver handle of its instance, both as JSON. Acknowledged once
    /// committed.
    fn put_workload(
        &self,
        id: String,
        body: String,
        instance: Option<String>,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forget an owned workload (destroyed, or handed to another node).
    fn delete_workload(&self, id: String) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every owned workload: `(id, body, instance)`.
    fn workloads(&self) -> impl Future<Output = Result<Vec<StoredWorkload>, StoreError>> + Send;
}

impl WorkloadTable for Store {
    async fn put_workload(
        &self,
        id: String,
        body: String,
        instance: Option<String>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO workloads (id, body, instance, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET body = ?2, instance = ?3, updated_at_ms = ?4",
                params![id, body, instance, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_workload(&self, id: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM workloads WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }

    async fn workloads(&self) -> Result<Vec<StoredWorkload>, StoreError> {
        self.call(|c| {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

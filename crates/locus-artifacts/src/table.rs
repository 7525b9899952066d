//! The `artifacts` table of the node's store: the index of the artifacts
//! this node holds (name, pin, replica count, last use). Queries run on the
//! store's one writer thread.

use std::collections::BTreeSet;
use std::future::Future;

use locus_store::{Store, StoreError};
use rusqlite::params;

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
    /// The tenants it belongs to (record tenants of its uploaders).
    pub tenants: BTreeSet<String>,
}

/// Tenants as the column keeps them: sorted, comma separated.
fn tenants_column(t: &BTreeSet<String>) -> String {
    t.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

fn tenants_of_column(s: &str) -> BTreeSet<String> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Queries of the `artifacts` table.
pub(crate) trait ArtifactTable {
    /// artifact keeps the stronger of both: pinned wins, the larger replica
    /// count wins, a name given replaces none, the tenants are both's.
    fn put_artifact(
        &self,
        a: StoredArtifact,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every artifact this node holds, least recently used first.
    fn artifacts(&self) -> impl Future<Output = Result<Vec<StoredArtifact>, StoreError>> + Send;

    /// Pin or unpin an artifact; false when it is not held.
    fn set_artifact_pinned(
        &self,
        cid: String,
        pinned: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Note that an artifact was used (read, served or started from).
    fn touch_artifact(
        &self,
        cid: String,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forget an artifact (its bytes are gone).
    fn delete_artifact(&self, cid: String) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl ArtifactTable for Store {
    async fn put_artifact(&self, a: StoredArtifact) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut tenants = a.tenants.clone();
            let held: Option<String> = tx
                .query_row(
                    "SELECT tenants FROM artifacts WHERE cid = ?1",
                    params![a.cid],
                    |r| r.get(0),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            if let Some(held) = held {
                tenants.extend(tenants_of_column(&held));
            }
            tx.execute(
                "INSERT INTO artifacts (cid, size, name, pinned, replicas, added_at_ms, used_at_ms, tenants)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
                     ON CONFLICT(cid) DO UPDATE SET
                        name = COALESCE(?3, name),
                        pinned = MAX(pinned, ?4),
                        replicas = MAX(replicas, ?5),
                        used_at_ms = ?6,
                        tenants = ?7",
                params![
                    a.cid,
                    a.size as i64,
                    a.name,
                    a.pinned,
                    a.replicas as i64,
                    a.used_at_ms as i64,
                    tenants_column(&tenants)
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn artifacts(&self) -> Result<Vec<StoredArtifact>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT cid, size, name, pinned, replicas, added_at_ms, used_at_ms, tenants
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
                    tenants: tenants_of_column(&r.get::<_, String>(7)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn set_artifact_pinned(&self, cid: String, pinned: bool) -> Result<bool, StoreError> {
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE artifacts SET pinned = ?2 WHERE cid = ?1",
                params![cid, pinned],
            )? > 0)
        })
        .await
    }

    async fn touch_artifact(&self, cid: String, now_ms: u64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE artifacts SET used_at_ms = MAX(used_at_ms, ?2) WHERE cid = ?1",
                params![cid, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_artifact(&self, cid: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM artifacts WHERE cid = ?1", params![cid])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn artifacts_keep_the_stronger_of_two_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = StoredArtifact {
            cid: "bafkr4iabc".into(),
            size: 10,
            name: Some("app.wasm".into()),
            pinned: true,
            replicas: 2,
            added_at_ms: 5,
            used_at_ms: 5,
            tenants: BTreeSet::new(),
        };
        store.put_artifact(a.clone()).await.unwrap();
        store
            .put_artifact(StoredArtifact {
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
}

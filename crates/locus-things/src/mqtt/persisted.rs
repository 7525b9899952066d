//! What the broker keeps for things across disconnections and restarts:
//! the command subscriptions of persistent sessions (`mqtt_sessions`, one
//! row per thing and client id) and the QoS 1 commands queued for a thing
//! while it is offline (`mqtt_queue`, bounded per thing). Queries run on
//! the store's one writer thread; a command is reported queued only once
//! its row is committed.

use std::future::Future;

use locus_store::{Store, StoreError};
use rusqlite::{OptionalExtension, params};

/// Commands queued for one thing, at most.
pub const MAX_QUEUED: u32 = 16;

/// One queued command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) id: i64,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// What enqueueing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Stored; this many are now waiting (this one included).
    Queued(u32),
    /// The thing already has [`MAX_QUEUED`] commands waiting.
    Full,
}

/// Queries of `mqtt_sessions` and `mqtt_queue`.
pub(crate) trait Persisted {
    /// Remember the command filters of a persistent session.
    fn keep_session(
        &self,
        thing: String,
        client_id: String,
        filters: Vec<String>,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The filters a persistent session subscribed to, if it is known.
    fn session_filters(
        &self,
        thing: String,
        client_id: String,
    ) -> impl Future<Output = Result<Option<Vec<String>>, StoreError>> + Send;

    /// Every filter the thing's persistent sessions subscribed to.
    fn thing_filters(
        &self,
        thing: String,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Discard a session (a clean login with its client id).
    fn drop_session(
        &self,
        thing: String,
        client_id: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Queue a command, unless [`MAX_QUEUED`] already wait.
    fn enqueue(
        &self,
        thing: String,
        topic: String,
        payload: Vec<u8>,
        now_ms: u64,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;

    /// The thing's queued commands, oldest first.
    fn queued(&self, thing: String)
    -> impl Future<Output = Result<Vec<Queued>, StoreError>> + Send;

    /// Forget a command its thing acknowledged.
    fn delivered(&self, id: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forget everything kept for a thing (it was removed).
    fn forget_thing(&self, thing: String) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl Persisted for Store {
    async fn keep_session(
        &self,
        thing: String,
        client_id: String,
        filters: Vec<String>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let filters = serde_json::to_string(&filters).unwrap_or_else(|_| "[]".to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO mqtt_sessions (thing, client_id, filters, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(thing, client_id) DO UPDATE SET filters = ?3, updated_at_ms = ?4",
                params![thing, client_id, filters, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn session_filters(
        &self,
        thing: String,
        client_id: String,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let text: Option<String> = self
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT filters FROM mqtt_sessions WHERE thing = ?1 AND client_id = ?2",
                    params![thing, client_id],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?;
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()))
    }

    async fn thing_filters(&self, thing: String) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> = self
            .call(move |c| {
                let mut stmt = c.prepare("SELECT filters FROM mqtt_sessions WHERE thing = ?1")?;
                let rows = stmt.query_map(params![thing], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<String>, _>>()?)
            })
            .await?;
        Ok(rows
            .iter()
            .flat_map(|t| serde_json::from_str::<Vec<String>>(t).unwrap_or_default())
            .collect())
    }

    async fn drop_session(&self, thing: String, client_id: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM mqtt_sessions WHERE thing = ?1 AND client_id = ?2",
                params![thing, client_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn enqueue(
        &self,
        thing: String,
        topic: String,
        payload: Vec<u8>,
        now_ms: u64,
    ) -> Result<Enqueued, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let waiting: i64 = tx.query_row(
                "SELECT COUNT(*) FROM mqtt_queue WHERE thing = ?1",
                params![thing],
                |r| r.get(0),
            )?;
            if waiting >= i64::from(MAX_QUEUED) {
                return Ok(Enqueued::Full);
            }
            tx.execute(
                "INSERT INTO mqtt_queue (thing, topic, payload, queued_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![thing, topic, payload, now_ms as i64],
            )?;
            tx.commit()?;
            Ok(Enqueued::Queued(waiting as u32 + 1))
        })
        .await
    }

    async fn queued(&self, thing: String) -> Result<Vec<Queued>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, topic, payload FROM mqtt_queue WHERE thing = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![thing], |r| {
                Ok(Queued {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn delivered(&self, id: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM mqtt_queue WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }

    async fn forget_thing(&self, thing: String) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM mqtt_queue WHERE thing = ?1", params![thing])?;
            tx.execute("DELETE FROM mqtt_sessions WHERE thing = ?1", params![thing])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_ordered_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..MAX_QUEUED {
            let got = store
                .enqueue(
                    "t".into(),
                    format!("things/t/commands/{i}"),
                    vec![i as u8],
                    1,
                )
                .await
                .unwrap();
            assert_eq!(got, Enqueued::Queued(i + 1));
        }
        let full = store
            .enqueue("t".into(), "things/t/commands/x".into(), vec![], 2)
            .await
            .unwrap();
        assert_eq!(full, Enqueued::Full);
        // Another thing has its own bound.
        assert_eq!(
            store
                .enqueue("u".into(), "things/u/commands/x".into(), vec![], 2)
                .await
                .unwrap(),
            Enqueued::Queued(1)
        );
        store
            .keep_session(
                "t".into(),
                "c1".into(),
                vec!["things/t/commands/#".into()],
                3,
            )
            .await
            .unwrap();
        store.close().await.unwrap();

        let store = Store::open(dir.path()).unwrap();
        let q = store.queued("t".into()).await.unwrap();
        assert_eq!(q.len(), MAX_QUEUED as usize);
        assert_eq!(q[0].topic, "things/t/commands/0");
        assert!(q.windows(2).all(|w| w[0].id < w[1].id));
        store.delivered(q[0].id).await.unwrap();
        assert_eq!(
            store.queued("t".into()).await.unwrap().len(),
            MAX_QUEUED as usize - 1
        );
        assert_eq!(
            store
                .session_filters("t".into(), "c1".into())
                .await
                .unwrap(),
            Some(vec!["things/t/commands/#".to_owned()])
        );
        assert_eq!(
            store.thing_filters("t".into()).await.unwrap(),
            ["things/t/commands/#"]
        );
        store.drop_session("t".into(), "c1".into()).await.unwrap();
        assert_eq!(
            store
                .session_filters("t".into(), "c1".into())
                .await
                .unwrap(),
            None
        );
        store.forget_thing("t".into()).await.unwrap();
        assert!(store.queued("t".into()).await.unwrap().is_empty());
        assert_eq!(store.queued("u".into()).await.unwrap().len(), 1);
    }
}

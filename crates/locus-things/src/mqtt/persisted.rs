//! What the broker keeps for things across disconnections and restarts:
//! the command subscriptions of persistent sessions (`mqtt_sessions`, one
//! row per thing and client id) and the QoS 1 commands queued for a thing
//! while it is offline (`mqtt_queue`, bounded per thing). Queries run on
//! the store's one writer thread; a command is reported queued only once
//! its row is committed.

use std::collections::HashMap;
use std::future::Future;

use locus_store::{Store, StoreError};
use rusqlite::params;

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

/// The persistent sessions as `mqtt_sessions` holds them, kept in memory
/// too (loaded at start, written through) so that logins, subscriptions
/// and commands read them without a store round trip: thing → client id →
/// command filters.
#[derive(Debug, Default)]
pub(crate) struct Sessions(HashMap<String, HashMap<String, Vec<String>>>);

impl Sessions {
    /// The sessions as stored.
    pub(crate) fn from_rows(rows: Vec<(String, String, Vec<String>)>) -> Sessions {
        let mut s = Sessions::default();
        for (thing, client_id, filters) in rows {
            s.set(thing, client_id, filters);
        }
        s
    }

    /// The filters of a thing's session, if it is persistent.
    pub(crate) fn filters(&self, thing: &str, client_id: &str) -> Option<&Vec<String>> {
        self.0.get(thing)?.get(client_id)
    }

    /// How many persistent sessions the thing has.
    pub(crate) fn count(&self, thing: &str) -> usize {
        self.0.get(thing).map_or(0, HashMap::len)
    }

    /// Every filter of the thing's persistent sessions.
    pub(crate) fn of_thing(&self, thing: &str) -> impl Iterator<Item = &String> {
        self.0
            .get(thing)
            .into_iter()
            .flat_map(|c| c.values().flatten())
    }

    pub(crate) fn set(&mut self, thing: String, client_id: String, filters: Vec<String>) {
        self.0.entry(thing).or_default().insert(client_id, filters);
    }

    /// Forget one session; whether it was kept.
    pub(crate) fn remove(&mut self, thing: &str, client_id: &str) -> bool {
        let Some(clients) = self.0.get_mut(thing) else {
            return false;
        };
        let was = clients.remove(client_id).is_some();
        if clients.is_empty() {
            self.0.remove(thing);
        }
        was
    }

    pub(crate) fn forget(&mut self, thing: &str) {
        self.0.remove(thing);
    }
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

    /// Every persistent session: `(thing, client id, filters)`.
    fn sessions(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String, Vec<String>)>, StoreError>> + Send;

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

    async fn sessions(&self) -> Result<Vec<(String, String, Vec<String>)>, StoreError> {
        let rows: Vec<(String, String, String)> = self
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT thing, client_id, filters FROM mqtt_sessions ORDER BY thing, client_id",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(t, c, f)| (t, c, serde_json::from_str(&f).unwrap_or_default()))
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
        let kept = Sessions::from_rows(store.sessions().await.unwrap());
        assert_eq!(
            kept.filters("t", "c1"),
            Some(&vec!["things/t/commands/#".to_owned()])
        );
        assert_eq!(
            kept.of_thing("t").collect::<Vec<_>>(),
            ["things/t/commands/#"]
        );
        store.drop_session("t".into(), "c1".into()).await.unwrap();
        let kept = Sessions::from_rows(store.sessions().await.unwrap());
        assert_eq!(kept.filters("t", "c1"), None);
        store.forget_thing("t".into()).await.unwrap();
        assert!(store.queued("t".into()).await.unwrap().is_empty());
        assert_eq!(store.queued("u".into()).await.unwrap().len(), 1);
    }
}

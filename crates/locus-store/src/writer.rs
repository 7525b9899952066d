//! The single writer: one OS thread owns the SQLite connection and runs the
//! jobs sent to it, in order. The queue is bounded, so a flood of writes
//! slows callers down instead of growing memory.

use std::thread;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// Jobs waiting for the writer, at most.
const QUEUE_DEPTH: usize = 256;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Msg {
    Run(Job),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    pub(crate) fn spawn(mut conn: Connection) -> Writer {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE_DEPTH);
        let spawned = thread::Builder::new()
            .name("locus-store".into())
            .spawn(move || {
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Run(job) => job(&mut conn),
                        Msg::Close(done) => {
                            rx.close();
                            let result = conn
                                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                                .map_err(StoreError::from);
                            let result = result.and(conn.close().map_err(|(_, e)| e.into()));
                            let _ = done.send(result);
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // Without a thread the store is unusable; every call reports Closed.
            tracing::error!(error = %e, "cannot start the store writer thread");
        }
        Writer { tx }
    }

    /// Run `f` on the writer thread and return its result.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = done.send(f(c));
        });
        self.tx
            .send(Msg::Run(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.tx
            .send(Msg::Close(done))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }
}

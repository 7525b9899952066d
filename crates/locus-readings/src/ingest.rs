//! Group commit: one writer task seals and commits the readings of every
//! waiting caller in one SQLite transaction.
//!
//! [`Readings::ingest`](super::Readings::ingest) encodes its readings once
//! (JSON body and canonical leaf bytes, on the caller's task) and queues
//! them on a bounded channel ([`INGEST_QUEUE`] requests; a full queue makes
//! callers wait). The writer takes the first waiting request and every
//! other one already queued, up to [`MAX_BATCH`] readings (a larger single
//! request is committed alone), numbers them from the log's size
//! ([`seal_batch`], pure), commits the rows and their leaves in one
//! transaction and only then appends the leaves to the in-memory log and
//! answers each caller with its seqs. While one batch is being committed
//! (fsync included) the next one queues, so the number of readings per
//! fsync grows with the load.
//!
//! # Failed commits and seqs
//!
//! When the store refuses a batch, the transaction is rolled back: no row
//! of it is stored, the log is not touched, and every caller of the batch
//! gets an error. The next batch is numbered from the unchanged log size,
//! so it reuses the seqs of the failed batch; that is safe because a seq
//! becomes visible (in an answer, the log, a checkpoint or a proof) only
//! after its commit, and the failed seqs were never visible. A failure can
//! be ambiguous (the writer thread stopped, an I/O error at COMMIT): before
//! numbering anything after a failure, the writer reads how many leaves the
//! store holds and takes any it does not know into the log, so the log
//! never numbers a seq the store already holds (and the `seq` primary key
//! would refuse a second one anyway). Callers that got an error may retry:
//! delivery is at least once, each reading is stored at most once per
//! ingest call that was acknowledged.

use std::ops::Range;
use std::sync::Arc;

use locus_iot::Reading;
use locus_iot::merkle::BlockLog;
use locus_iot::merkle::Hash;
use locus_iot::seal::sealed_leaf_hash;
use locus_store::Store;

use crate::table::{ReadingsTable, StoredReading};
use tokio::sync::{Notify, RwLock, mpsc, oneshot};

use super::ReadingsError;
use crate::metrics::ReadingsMetrics;

/// Requests waiting for the writer, at most; past it, `ingest` waits for
/// room.
pub const INGEST_QUEUE: usize = 8192;
/// Most readings committed in one transaction (a single request with more
/// is committed alone).
pub const MAX_BATCH: usize = 4096;

/// A reading encoded once, by its caller: what its row needs, and the
/// canonical bytes its leaf is hashed from.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    thing: String,
    resource: String,
    time_ms: i64,
    body: String,
    bytes: Vec<u8>,
}

impl Prepared {
    pub(crate) fn new(r: &Reading) -> Result<Prepared, ReadingsError> {
        Ok(Prepared {
            thing: r.thing().to_owned(),
            resource: r.resource().to_owned(),
            time_ms: r.time_ms(),
            body: serde_json::to_string(r)
                .map_err(|e| ReadingsError::Invalid(format!("cannot encode a reading: {e}")))?,
            bytes: r.leaf_bytes(),
        })
    }
}

/// One caller's readings and where to answer it.
pub(crate) struct Request {
    pub(crate) readings: Vec<Prepared>,
    pub(crate) done: oneshot::Sender<Result<Range<u64>, ReadingsError>>,
}

/// What one transaction writes, and what each request is answered.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Rows, seqs ascending from `next`.
    pub(crate) rows: Vec<StoredReading>,
    /// The leaf of each row, in the same order.
    pub(crate) leaves: Vec<Hash>,
    /// The seqs of each request, in request order.
    pub(crate) ranges: Vec<Range<u64>>,
}

/// Number the readings of `requests`, in order, from `next` on and build
/// their rows and leaves. Pure: every reading is hashed once, from the
/// bytes its caller encoded.
pub(crate) fn seal_batch(next: u64, requests: Vec<Vec<Prepared>>) -> Batch {
    let n: usize = requests.iter().map(Vec::len).sum();
    let mut rows = Vec::with_capacity(n);
    let mut leaves = Vec::with_capacity(n);
    let mut ranges = Vec::with_capacity(requests.len());
    let mut seq = next;
    for readings in requests {
        let start = seq;
        for p in readings {
            let leaf = sealed_leaf_hash(seq, &p.bytes);
            leaves.push(leaf);
            rows.push(StoredReading {
                seq,
                thing: p.thing,
                resource: p.resource,
                time_ms: p.time_ms,
                body: p.body,
                leaf: leaf.to_vec(),
            });
            seq += 1;
        }
        ranges.push(start..seq);
    }
    Batch {
        rows,
        leaves,
        ranges,
    }
}

/// The writer task's state.
pub(crate) struct Writer {
    pub(crate) store: Store,
    pub(crate) log: Arc<RwLock<BlockLog>>,
    /// Woken after each commit (the exporter waits on it).
    pub(crate) grown: Arc<Notify>,
    pub(crate) metrics: Arc<ReadingsMetrics>,
}

impl Writer {
    /// Serve requests until every sender is gone.
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Request>) {
        let mut carry: Option<Request> = None;
        let mut suspect = false;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match rx.recv().await {
                    Some(r) => r,
                    None => return,
                },
            };
            let mut count = first.readings.len();
            let mut batch = vec![first];
            while count < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) if count + r.readings.len() > MAX_BATCH => {
                        carry = Some(r);
                        break;
                    }
                    Ok(r) => {
                        count += r.readings.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            let (readings, dones): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|r| (r.readings, r.done)).unzip();
            match self.commit(readings, &mut suspect).await {
                Ok(ranges) => {
                    for (done, range) in dones.into_iter().zip(ranges) {
                        // A caller that went away is simply not answered:
                        // its readings are stored all the same.
                        let _ = done.send(Ok(range));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, callers = dones.len(), "a batch of readings was not committed");
                    let why = e.to_string();
                    for done in dones {
                        let _ = done.send(Err(ReadingsError::Commit(why.clone())));
                    }
                }
            }
        }
    }

    /// Seal and commit one batch; the log grows only once it is durable.
    pub(crate) async fn commit(
        &self,
        readings: Vec<Vec<Prepared>>,
        suspect: &mut bool,
    ) -> Result<Vec<Range<u64>>, ReadingsError> {
        if *suspect {
            self.resync().await?;
            *suspect = false;
        }
        // Only this task appends, so the size cannot move under it.
        let next = self.log.read().await.size();
        let Batch {
            rows,
            leaves,
            ranges,
        } = seal_batch(next, readings);
        let n = rows.len();
        if let Err(e) = self.store.append_readings(rows).await {
            *suspect = true;
            self.metrics.readings_commit_failures.inc();
            return Err(e.into());
        }
        {
            let mut log = self.log.write().await;
            // The store computed the root of any block these complete, in
            // the same transaction; the log computes the same from the
            // same leaves.
            for leaf in leaves {
                log.append(leaf);
            }
        }
        self.metrics.readings_sealed.inc_by(n as u64);
        self.metrics.readings_batch.observe(n as f64);
        self.grown.notify_one();
        Ok(ranges)
    }

    /// After a failed commit: take into the log any leaf the store holds
    /// beyond it (a commit reported as failed that happened after all).
    pub(crate) async fn resync(&self) -> Result<(), ReadingsError> {
        let stored = self.store.sealed_size().await?;
        let mut log = self.log.write().await;
        let size = log.size();
        if stored < size {
            tracing::error!(
                stored,
                log = size,
                "the store holds fewer seal leaves than the log; new readings continue after the log"
            );
            return Ok(());
        }
        if stored == size {
            return Ok(());
        }
        for (seq, leaf) in self.store.reading_leaves_from(size).await? {
            let leaf: Hash = leaf.try_into().map_err(|_| {
                ReadingsError::Invalid(format!("stored leaf of seq {seq} is not 32 bytes"))
            })?;
            if seq != log.size() {
                return Err(ReadingsError::Invalid(format!(
                    "stored leaves jump from seq {} to {seq}",
                    log.size()
                )));
            }
            log.append(leaf);
        }
        tracing::warn!(
            from = size,
            to = log.size(),
            "readings reported as not committed were committed after all; they are sealed"
        );
        Ok(())
    }
}

/// A queue for the writer, and the writer to spawn.
pub(crate) fn channel() -> (mpsc::Sender<Request>, mpsc::Receiver<Request>) {
    mpsc::channel(INGEST_QUEUE)
}

//! The readings this node accepted, sealed into its tamper-evident log.
//!
//! Every accepted reading gets the next sequence number and becomes a leaf
//! of the node's seal log (`locus_iot::seal`, RFC 6962 hashing). A batch is
//! committed to SQLite (WAL, synchronous = FULL) *before* the call returns,
//! so whoever sent it is acknowledged only for what is durable. Every
//! [`CHECKPOINT_EVERY`] the node signs a checkpoint of the log with its own
//! key (C2SP signed note, origin `locus/<node id>`); a bundle of any range
//! can be exported with the proofs that let anyone verify it offline with
//! the node's verifier key (`locus verify`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use locus_core::NodeId;
use locus_iot::seal::{SealLog, Sealed};
use locus_iot::{Bundle, Reading, checkpoint};
use locus_store::{Store, StoredReading};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use utoipa::ToSchema;

/// How often a grown log gets a signed checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// Most readings one query returns.
pub const MAX_QUERY: u32 = 10_000;
/// Most readings in one exported bundle.
pub const MAX_BUNDLE: u64 = 100_000;

/// Why a readings operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadingsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] locus_store::StoreError),
    #[error("cannot sign a checkpoint: {0}")]
    Sign(String),
}

/// A stored reading with its place in the log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadingView {
    pub seq: u64,
    #[schema(value_type = Object)]
    pub reading: Reading,
}

/// The newest signed checkpoint and the key to check it with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckpointView {
    /// Readings sealed so far.
    pub log_size: u64,
    /// Size of the newest signed checkpoint (0: none yet).
    pub size: u64,
    /// The signed note (empty when none yet).
    pub note: String,
    /// The node's verifier key (`NAME+KEYID+BASE64`).
    pub verifier_key: String,
}

struct Inner {
    store: Store,
    key: SigningKey,
    origin: String,
    log: Mutex<SealLog>,
}

/// The node's readings. Cheap to clone.
#[derive(Clone)]
pub struct Readings {
    inner: Arc<Inner>,
}

impl Readings {
    /// Rebuild the seal log from the stored leaves and start the
    /// checkpoint loop.
    pub async fn start(
        store: Store,
        key: SigningKey,
        node: NodeId,
    ) -> Result<(Readings, tokio::task::JoinHandle<()>), ReadingsError> {
        let mut leaves = Vec::new();
        for (i, l) in store.reading_leaves().await?.into_iter().enumerate() {
            let leaf: [u8; 32] = l.try_into().map_err(|_| {
                ReadingsError::Invalid(format!("stored leaf of seq {i} is not 32 bytes"))
            })?;
            leaves.push(leaf);
        }
        let r = Readings {
            inner: Arc::new(Inner {
                store,
                key,
                origin: format!("locus/{node}"),
                log: Mutex::new(SealLog::from_leaves(leaves)),
            }),
        };
        let this = r.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                if let Err(e) = this.checkpoint().await {
                    tracing::warn!(error = %e, "cannot sign a checkpoint");
                }
            }
        });
        Ok((r, task))
    }

    /// The node's verifier key for its checkpoints.
    pub fn verifier_key(&self) -> String {
        checkpoint::verifier_key(&self.inner.origin, &self.inner.key.verifying_key())
            .unwrap_or_default()
    }

    /// Seal and store readings; returns their seqs once committed.
    pub async fn ingest(&self, readings: Vec<Reading>) -> Result<Range<u64>, ReadingsError> {
        let mut log = self.inner.log.lock().await;
        let start = log.size();
        let rows: Vec<StoredReading> = readings
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let sealed = Sealed {
                    seq: start + i as u64,
                    reading: r.clone(),
                };
                StoredReading {
                    seq: sealed.seq,
                    thing: r.thing().to_owned(),
                    resource: r.resource().to_owned(),
                    time_ms: r.time_ms(),
                    body: serde_json::to_string(r).unwrap_or_default(),
                    leaf: sealed.leaf_hash().to_vec(),
                }
            })
            .collect();
        // Durable first; only then does the log (and any proof) include it.
        self.inner.store.append_readings(rows).await?;
        for r in readings {
            log.append(r);
        }
        Ok(start..log.size())
    }

    /// Sign a checkpoint of the log if it grew since the last one.
    pub async fn checkpoint(&self) -> Result<(), ReadingsError> {
        let log = self.inner.log.lock().await;
        let size = log.size();
        let last = self.inner.store.latest_checkpoint().await?.map(|c| c.0);
        if size == 0 || last == Some(size) {
            return Ok(());
        }
        let cp = log.checkpoint(&self.inner.origin);
        drop(log);
        let note = checkpoint::sign(&cp, &self.inner.origin, &self.inner.key)
            .map_err(|e| ReadingsError::Sign(e.to_string()))?;
        self.inner
            .store
            .put_checkpoint(size, note, crate::unix_ms())
            .await?;
        Ok(())
    }

    /// The newest checkpoint.
    pub async fn latest(&self) -> Result<CheckpointView, ReadingsError> {
        let log_size = self.inner.log.lock().await.size();
        let (size, note) = self
            .inner
            .store
            .latest_checkpoint()
            .await?
            .unwrap_or((0, String::new()));
        Ok(CheckpointView {
            log_size,
            size,
            note,
            verifier_key: self.verifier_key(),
        })
    }

    /// Readings of a thing (or all) in a time range, oldest first.
    pub async fn query(
        &self,
        thing: Option<String>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReadingView>, ReadingsError> {
        let rows = self
            .inner
            .store
            .readings_of(thing, from_ms, to_ms, limit.min(MAX_QUERY))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(ReadingView {
                    seq: r.seq,
                    reading: serde_json::from_str(&r.body).ok()?,
                })
            })
            .collect())
    }

    /// The newest stored reading of `resource` of `thing`.
    pub async fn latest_of(
        &self,
        thing: &str,
        resource: &str,
    ) -> Result<Option<ReadingView>, ReadingsError> {
        let row = self
            .inner
            .store
            .latest_reading(thing.to_owned(), resource.to_owned())
            .await?;
        Ok(row.and_then(|r| {
            Some(ReadingView {
                seq: r.seq,
                reading: serde_json::from_str(&r.body).ok()?,
            })
        }))
    }

    /// Export readings `range` with every checkpoint up to one that covers
    /// the range (signed now if needed) and the proofs of each.
    pub async fn bundle(&self, range: Range<u64>) -> Result<Bundle, ReadingsError> {
        if range.start > range.end || range.end - range.start > MAX_BUNDLE {
            return Err(ReadingsError::Invalid(format!(
                "range {}..{} must be ascending and at most {MAX_BUNDLE} readings",
                range.start, range.end
            )));
        }
        let size = self.inner.log.lock().await.size();
        if range.end > size {
            return Err(ReadingsError::Invalid(format!(
                "range end {} is past the {size} readings sealed",
                range.end
            )));
        }
        if self.inner.store.latest_checkpoint().await?.map(|c| c.0) < Some(range.end.max(1)) {
            self.checkpoint().await?;
        }
        let notes: Vec<(u64, String)> = self.inner.store.checkpoints().await?;
        // Checkpoints up to the first that covers the range.
        let cut = notes
            .iter()
            .position(|(s, _)| *s >= range.end)
            .map_or(notes.len(), |i| i + 1);
        let notes: Vec<String> = notes.into_iter().take(cut).map(|n| n.1).collect();
        let stored = self
            .inner
            .store
            .readings_by_seq(range.start, range.end)
            .await?;
        // What is stored is exported as it is: if it was altered on disk,
        // its proof from the log will not verify, and says where.
        let mut readings = Vec::with_capacity(stored.len());
        for r in stored {
            let reading: Reading = serde_json::from_str(&r.body).map_err(|e| {
                ReadingsError::Invalid(format!("stored reading seq {} is unreadable: {e}", r.seq))
            })?;
            readings.push((r.seq, reading));
        }
        let log = self.inner.log.lock().await;
        Bundle::export_stored(&log, &notes, range, readings)
            .map_err(|e| ReadingsError::Invalid(e.to_string()))
    }
}

//! # locus-readings
//!
//! The readings this node accepted, sealed into its tamper-evident log.
//!
//! Owns: the `readings`, `seal_leaves`, `seal_blocks`, `checkpoints`,
//! export-outbox and import tables of the store, the in-memory seal log,
//! the group-commit writer, the checkpoint, retention and export loops, and
//! the EdgeX reading queries.
//! Must never: speak a device protocol (MQTT, LwM2M and HTTP doors hand it
//! readings), acknowledge a reading before its commit, or change a sealed
//! leaf.
//!
//! Every accepted reading gets the next sequence number and becomes a leaf
//! of the node's seal log (`locus_iot::seal`, RFC 6962 hashing). Every
//! [`CHECKPOINT_EVERY`] the node signs a checkpoint of the log with its own
//! key (C2SP signed note, origin `locus/<node id>`); a bundle of any range
//! can be exported with the proofs that let anyone verify it offline with
//! the node's verifier key (`locus verify`).
//!
//! The seal log's memory does not grow with it ([`log`]): the node keeps
//! the root of every complete block of 256 leaves (with the subtrees above
//! them: 0.25 bytes per reading) and the leaves of the last, incomplete
//! block; a block's root is stored in the transaction that stores its last
//! leaf. A start loads the block roots and at most 255 leaves, not the
//! whole log, and a proof reads the one or two stored blocks of leaves it
//! needs, checked against their roots.
//!
//! # Durability (fsync policy)
//!
//! The store is SQLite in WAL mode with `synchronous = FULL`: a commit
//! returns once the WAL is fsynced, so a committed transaction survives a
//! crash or a power loss. Readings are **group-committed** ([`ingest`]):
//! one writer task commits the readings of every caller waiting at that
//! moment (up to [`ingest::MAX_BATCH`]) in one transaction, i.e. one fsync
//! for the whole batch, and answers each caller only after that commit.
//! So an acknowledged reading is durable, many concurrent callers share
//! each fsync, and a single caller still pays one commit per call. The
//! in-memory log (and so every checkpoint and proof) includes a reading
//! only after its commit. See [`ingest`] for what a failed commit does.

pub mod bulk;
pub mod edgex;
pub mod export;
pub mod ingest;
pub mod log;
pub mod metrics;
pub mod retention;
mod table;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use locus_core::NodeId;
use locus_iot::merkle::BlockLog;
use locus_iot::{Bundle, Reading, checkpoint};
use locus_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock, mpsc, oneshot};
use utoipa::ToSchema;

use ingest::{Prepared, Request};
pub use metrics::ReadingsMetrics;
use table::ReadingsTable;

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
    /// The request contradicts itself or the log (a seq outside the tree
    /// asked for, sizes in the wrong order).
    #[error("{0}")]
    Conflict(String),
    /// The reading is sealed in the log but its row is not in the store
    /// (deleted outside locus).
    #[error(
        "reading seq {seq} is sealed in the log but its row is missing from the store (deleted outside locus?)"
    )]
    Missing { seq: u64 },
    /// Retention deleted the bodies of seqs below `below`; `first` is the
    /// first of them the request needed.
    #[error(
        "reading seq {first} was deleted by retention (bodies of seqs below {below} are gone; \
         their leaves stay in the log, so proofs of later readings still verify)"
    )]
    Pruned { first: u64, below: u64 },
    /// The batch the readings were in was not committed; nothing of it is
    /// stored (see [`ingest`] for the ambiguous case).
    #[error("the readings were not committed: {0}")]
    Commit(String),
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

/// The proof that one reading is in the log: verify it with
/// `locus_iot::merkle::verify_inclusion(leaf_hash, seq, tree_size, proof,
/// root)`, after recomputing `leaf_hash` from `seq` and `reading`
/// (`locus_iot::Sealed::leaf_hash`), and the root against the signed
/// checkpoint of that size.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    /// The reading's seq: its leaf index.
    pub seq: u64,
    /// The reading as stored.
    #[schema(value_type = Object)]
    pub reading: Reading,
    /// The log's leaf of `seq`, hex: SHA-256 of `0x00`, then the sealed
    /// leaf bytes (`0x01`, the seq as u64 big-endian, the reading's
    /// canonical bytes).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub leaf_hash: String,
    /// The size of the tree the proof is in.
    pub tree_size: u64,
    /// The root of that tree, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub root: String,
    /// The audit path (RFC 6962), from the leaf's sibling upwards, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint of `tree_size`, when the node signed one at
    /// exactly that size.
    pub checkpoint: Option<String>,
    /// The node's verifier key (`NAME+KEYID+BASE64`).
    pub verifier_key: String,
}

/// The proof that the tree of `from` leaves is a prefix of the tree of
/// `to` leaves: verify it with `locus_iot::merkle::verify_consistency(from,
/// to, from_root, to_root, proof)`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Root of the tree of `from` leaves, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub from_root: String,
    /// Root of the tree of `to` leaves, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub to_root: String,
    /// The consistency proof (RFC 6962), hex; empty when `from` is 0 or
    /// equals `to`.
    pub proof: Vec<String>,
    /// The signed checkpoint of `from`, when there is one at that size.
    pub from_checkpoint: Option<String>,
    /// The signed checkpoint of `to`, when there is one at that size.
    pub to_checkpoint: Option<String>,
    /// The node's verifier key (`NAME+KEYID+BASE64`).
    pub verifier_key: String,
}

fn hexes(hashes: &[locus_iot::Hash]) -> Vec<String> {
    hashes.iter().map(|h| locus_core::hex(h)).collect()
}

struct Inner {
    store: Store,
    key: SigningKey,
    node: NodeId,
    origin: String,
    /// The seal log (block roots and the tail; see [`log`]); only the
    /// writer task appends to it, after each commit.
    log: Arc<RwLock<BlockLog>>,
    /// Requests for the writer task.
    queue: mpsc::Sender<Request>,
    /// Woken by the writer after each commit.
    grown: Arc<Notify>,
    /// Where readings are exported, if anywhere.
    export: Option<locus_core::config::ExportUrl>,
    /// Bodies below this seq were deleted by retention (announced before
    /// the deletion, see `retention`).
    pruned_below: std::sync::atomic::AtomicU64,
    policy: retention::Policy,
    metrics: Arc<ReadingsMetrics>,
    /// EdgeX (device, resource) → (profile, value type), as last stored.
    edgex: std::sync::Mutex<std::collections::HashMap<(String, String), (String, String)>>,
    /// Signs the exports to a parent as this node.
    signer: locus_core::Signer,
}

/// What the readings need to start.
pub struct ReadingsSetup {
    pub store: Store,
    pub key: SigningKey,
    pub node: NodeId,
    pub metrics: Arc<ReadingsMetrics>,
    pub config: locus_core::config::ReadingsConfig,
    /// Signs the node-to-node calls (exports to a parent) as this node.
    pub signer: locus_core::Signer,
}

/// The node's readings. Cheap to clone.
#[derive(Clone)]
pub struct Readings {
    inner: Arc<Inner>,
}

impl Readings {
    /// Load the seal log from the store (its block roots and last leaves;
    /// see [`log`]), start the writer task and the checkpoint loop. Returns
    /// the loops to stop at shutdown (the writer stops by itself once every
    /// handle is dropped).
    pub async fn start(
        setup: ReadingsSetup,
    ) -> Result<(Readings, Vec<tokio::task::JoinHandle<()>>), ReadingsError> {
        let ReadingsSetup {
            store,
            key,
            node,
            metrics,
            config,
            signer,
        } = setup;
        let pruned_below = store.readings_pruned_below().await?;
        let log = Arc::new(RwLock::new(log::load(&store).await?));
        let grown = Arc::new(Notify::new());
        let (queue, rx) = ingest::channel();
        tokio::spawn(
            ingest::Writer {
                store: store.clone(),
                log: log.clone(),
                grown: grown.clone(),
                metrics: metrics.clone(),
            }
            .run(rx),
        );
        let r = Readings {
            inner: Arc::new(Inner {
                store,
                key,
                node,
                origin: origin(node),
                log,
                queue,
                grown,
                export: config.export_url.clone(),
                pruned_below: pruned_below.into(),
                policy: retention::Policy::from_config(&config),
                metrics,
                edgex: Default::default(),
                signer,
            }),
        };
        let this = r.clone();
        let checkpoints = tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                if let Err(e) = this.checkpoint().await {
                    tracing::warn!(error = %e, "cannot sign a checkpoint");
                }
            }
        });
        let mut loops = vec![checkpoints, tokio::spawn(retention::run(r.clone()))];
        if let Some(url) = config.export_url {
            loops.push(tokio::spawn(export::run(r.clone(), url)));
        }
        Ok((r, loops))
    }

    /// The node's verifier key for its checkpoints.
    pub fn verifier_key(&self) -> String {
        checkpoint::verifier_key(&self.inner.origin, &self.inner.key.verifying_key())
            .unwrap_or_default()
    }

    /// Seal and store readings; returns their seqs once committed (group
    /// commit: see the module documentation). An error means none of them
    /// was acknowledged.
    pub async fn ingest(&self, readings: Vec<Reading>) -> Result<Range<u64>, ReadingsError> {
        if readings.is_empty() {
            let size = self.inner.log.read().await.size();
            return Ok(size..size);
        }
        let readings = readings
            .iter()
            .map(Prepared::new)
            .collect::<Result<Vec<_>, _>>()?;
        let (done, answer) = oneshot::channel();
        self.inner
            .queue
            .send(Request { readings, done })
            .await
            .map_err(|_| ReadingsError::Commit("the readings writer has stopped".into()))?;
        answer.await.map_err(|_| {
            ReadingsError::Commit(
                "the readings writer stopped before answering; the readings may have been stored"
                    .into(),
            )
        })?
    }

    /// Readings sealed so far.
    pub async fn size(&self) -> u64 {
        self.inner.log.read().await.size()
    }

    /// Sign a checkpoint of the log if it grew since the last one.
    pub async fn checkpoint(&self) -> Result<(), ReadingsError> {
        let cp = {
            let log = self.inner.log.read().await;
            if log.size() == 0 {
                return Ok(());
            }
            log.checkpoint(&self.inner.origin)
        };
        let last = self.inner.store.latest_checkpoint().await?.map(|c| c.0);
        if last >= Some(cp.size) {
            return Ok(());
        }
        store_checkpoint(&self.inner.store, &cp, &self.inner.key).await?;
        Ok(())
    }

    /// The newest checkpoint.
    pub async fn latest(&self) -> Result<CheckpointView, ReadingsError> {
        let log_size = self.size().await;
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

    /// The inclusion proof of reading `seq` in the tree of `size` leaves;
    /// without a size, in the newest signed checkpoint (one is signed now
    /// if none covers `seq` yet).
    pub async fn inclusion(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, ReadingsError> {
        let sealed = self.size().await;
        if seq >= sealed {
            return Err(ReadingsError::Invalid(format!(
                "reading seq {seq} is not sealed: the log holds {sealed} readings (seqs 0..{sealed})"
            )));
        }
        let size = match size {
            Some(size) if size > sealed => {
                return Err(ReadingsError::Invalid(format!(
                    "tree size {size} is beyond the log, which holds {sealed} readings"
                )));
            }
            Some(size) if seq >= size => {
                return Err(ReadingsError::Conflict(format!(
                    "reading seq {seq} is not in the tree of size {size}, which holds seqs 0..{size}; \
                     ask for a size above {seq}"
                )));
            }
            Some(size) => size,
            None => match self.inner.store.latest_checkpoint().await? {
                Some((s, _)) if s > seq => s,
                _ => {
                    self.checkpoint().await?;
                    let s = self
                        .inner
                        .store
                        .latest_checkpoint()
                        .await?
                        .map_or(0, |c| c.0);
                    if s <= seq {
                        return Err(ReadingsError::Sign(format!(
                            "the newest checkpoint ({s} readings) does not cover seq {seq}"
                        )));
                    }
                    s
                }
            },
        };
        self.check_not_pruned(seq, seq + 1)?;
        let row = self.inner.store.readings_by_seq(seq, seq + 1).await?.pop();
        self.check_not_pruned(seq, seq + 1)?;
        let row = row.ok_or(ReadingsError::Missing { seq })?;
        let reading: Reading = serde_json::from_str(&row.body).map_err(|e| {
            ReadingsError::Invalid(format!("stored reading seq {seq} is unreadable: {e}"))
        })?;
        let (leaf, root, proof) = log::prove(&self.inner.log, &self.inner.store, |p| {
            Ok((p.leaf(seq)?, p.root(size)?, p.inclusion_proof(seq, size)?))
        })
        .await?;
        Ok(InclusionProof {
            seq,
            reading,
            leaf_hash: locus_core::hex(&leaf),
            tree_size: size,
            root: locus_core::hex(&root),
            proof: hexes(&proof),
            checkpoint: self.inner.store.checkpoint_at(size).await?,
            verifier_key: self.verifier_key(),
        })
    }

    /// The consistency proof from the tree of `from` leaves to the tree of
    /// `to` leaves.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, ReadingsError> {
        let sealed = self.size().await;
        if to > sealed {
            return Err(ReadingsError::Invalid(format!(
                "tree size {to} is beyond the log, which holds {sealed} readings"
            )));
        }
        if from > to {
            return Err(ReadingsError::Conflict(format!(
                "from {from} is larger than to {to}: a consistency proof goes from an older, \
                 smaller tree to a newer one"
            )));
        }
        let (from_root, to_root, proof) = log::prove(&self.inner.log, &self.inner.store, |p| {
            Ok((p.root(from)?, p.root(to)?, p.consistency_proof(from, to)?))
        })
        .await?;
        Ok(ConsistencyProof {
            from,
            to,
            from_root: locus_core::hex(&from_root),
            to_root: locus_core::hex(&to_root),
            proof: hexes(&proof),
            from_checkpoint: self.inner.store.checkpoint_at(from).await?,
            to_checkpoint: self.inner.store.checkpoint_at(to).await?,
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

    /// The readings of `thing` stored since `from_ms`, as a bundle whose
    /// entries are only that thing's (the other seqs of the range are left
    /// out: a verifier sees them as dropped, and every entry still proves
    /// its inclusion in the signed log). `None` when there is none.
    pub async fn bundle_of(
        &self,
        thing: &str,
        from_ms: i64,
    ) -> Result<Option<Bundle>, ReadingsError> {
        let views = self
            .query(Some(thing.to_owned()), from_ms, i64::MAX, MAX_QUERY)
            .await?;
        let seqs: std::collections::BTreeSet<u64> = views.iter().map(|v| v.seq).collect();
        let (Some(first), Some(last)) = (seqs.first(), seqs.last()) else {
            return Ok(None);
        };
        let mut bundle = self.bundle(*first..last + 1).await?;
        bundle.entries.retain(|e| seqs.contains(&e.seq));
        Ok(Some(bundle))
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
        let size = self.size().await;
        if range.end > size {
            return Err(ReadingsError::Invalid(format!(
                "range end {} is past the {size} readings sealed",
                range.end
            )));
        }
        self.check_not_pruned(range.start, range.end)?;
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
        // Retention may have run meanwhile: what it took is gone, not dropped.
        self.check_not_pruned(range.start, range.end)?;
        // What is stored is exported as it is: if it was altered on disk,
        // its proof from the log will not verify, and says where.
        let mut readings = Vec::with_capacity(stored.len());
        for r in stored {
            let reading: Reading = serde_json::from_str(&r.body).map_err(|e| {
                ReadingsError::Invalid(format!("stored reading seq {} is unreadable: {e}", r.seq))
            })?;
            readings.push((r.seq, reading));
        }
        // The proofs read stored blocks of leaves: on a blocking thread,
        // which holds the log only while it hashes (see `log`), so the
        // writer never waits for a whole export.
        let mut proofs = log::StoredProofs::new(self.inner.log.clone(), self.inner.store.clone());
        tokio::task::spawn_blocking(move || {
            Bundle::export_stored(&mut proofs, &notes, range, readings).map_err(|e| {
                proofs
                    .failure
                    .take()
                    .unwrap_or_else(|| ReadingsError::Invalid(e.to_string()))
            })
        })
        .await
        .map_err(|e| ReadingsError::Invalid(format!("the export stopped: {e}")))?
    }
}

/// The origin of a node's checkpoints.
pub(crate) fn origin(node: NodeId) -> String {
    format!("locus/{node}")
}

/// Sign `cp` with the node's key and store the note; returns it.
pub(crate) async fn store_checkpoint(
    store: &Store,
    cp: &checkpoint::Checkpoint,
    key: &SigningKey,
) -> Result<String, ReadingsError> {
    let note =
        checkpoint::sign(cp, &cp.origin, key).map_err(|e| ReadingsError::Sign(e.to_string()))?;
    store
        .put_checkpoint(cp.size, note.clone(), crate::unix_ms())
        .await?;
    Ok(note)
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

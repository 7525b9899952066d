//! Sealing readings straight into a store, with no node running on it:
//! what `locus bench seal` and tests use to give a data dir a long log in
//! minutes. Each call seals its readings exactly as ingest does — the same
//! JSON body and canonical bytes ([`Prepared`]), the same numbering and
//! leaf hashes ([`seal_batch`]), the same transaction of rows, leaves and
//! block roots — only with many more readings per transaction; a
//! checkpoint is signed as the node's checkpoint loop signs it. A node
//! started on the data dir afterwards cannot tell the difference.

use std::ops::Range;

use ed25519_dalek::SigningKey;
use locus_core::NodeId;
use locus_iot::merkle::BlockLog;
use locus_iot::{Reading, Value};
use locus_store::Store;

use crate::ingest::{Batch, Prepared, seal_batch};
use crate::table::ReadingsTable;
use crate::{ReadingsError, log};

/// A seal log being written directly into a store (no agent may run on
/// the same data dir meanwhile).
pub struct BulkSealer {
    store: Store,
    log: BlockLog,
}

impl BulkSealer {
    /// Continue the log the store holds (loaded, and upgraded if needed,
    /// as a start does).
    pub async fn open(store: Store) -> Result<Self, ReadingsError> {
        let log = log::load(&store).await?;
        Ok(Self { store, log })
    }

    /// Readings sealed so far: the next seq.
    pub fn size(&self) -> u64 {
        self.log.size()
    }

    /// Seal and store `readings` in one transaction; returns their seqs.
    pub async fn append(&mut self, readings: &[Reading]) -> Result<Range<u64>, ReadingsError> {
        let prepared = readings
            .iter()
            .map(Prepared::new)
            .collect::<Result<Vec<_>, _>>()?;
        let Batch { rows, leaves, .. } = seal_batch(self.log.size(), vec![prepared]);
        let start = self.log.size();
        self.store.append_readings(rows).await?;
        for leaf in leaves {
            self.log.append(leaf);
        }
        Ok(start..self.log.size())
    }

    /// Sign a checkpoint of the whole log with the node's key and store
    /// it; returns the signed note.
    pub async fn checkpoint(&self, key: &SigningKey) -> Result<String, ReadingsError> {
        let node = NodeId::from_public_key(&key.verifying_key());
        let cp = self.log.checkpoint(&crate::origin(node));
        crate::store_checkpoint(&self.store, &cp, key).await
    }
}

/// The reading a synthetic log holds at `seq`: a temperature of one of 64
/// things, one reading per millisecond. What `locus bench seal` and the
/// tests fill a data dir with, so that anyone can recompute a reading
/// from its seq.
pub fn synthetic_reading(seq: u64) -> Result<Reading, ReadingsError> {
    Reading::new(
        format!("bench-{}", seq % 64),
        "temperature",
        Value::Number(15.0 + (seq % 2000) as f64 / 100.0),
        Some("Cel".to_owned()),
        1_700_000_000_000 + (seq as i64 % (1 << 40)),
    )
    .map_err(|e| ReadingsError::Invalid(format!("synthetic reading {seq}: {e}")))
}

/// Seal synthetic readings ([`synthetic_reading`]) into `store` until the
/// log holds `size` of them, at most `per_transaction` per transaction,
/// and sign a checkpoint at each size of `checkpoints` reached on the way
/// and at `size`; returns the notes signed, smallest first. The store's
/// log must be shorter than every size asked.
pub async fn seal_synthetic(
    store: Store,
    key: &SigningKey,
    size: u64,
    checkpoints: &[u64],
    per_transaction: u64,
) -> Result<Vec<String>, ReadingsError> {
    let mut sealer = BulkSealer::open(store).await?;
    let mut marks: Vec<u64> = checkpoints
        .iter()
        .copied()
        .filter(|m| *m > sealer.size() && *m < size)
        .chain(std::iter::once(size))
        .collect();
    marks.sort_unstable();
    marks.dedup();
    let mut notes = Vec::with_capacity(marks.len());
    for mark in marks {
        while sealer.size() < mark {
            let start = sealer.size();
            let end = mark.min(start + per_transaction.max(1));
            let readings = (start..end)
                .map(synthetic_reading)
                .collect::<Result<Vec<_>, _>>()?;
            sealer.append(&readings).await?;
        }
        if mark > 0 {
            notes.push(sealer.checkpoint(key).await?);
        }
    }
    Ok(notes)
}

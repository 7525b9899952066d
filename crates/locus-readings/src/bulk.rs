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
use locus_iot::Reading;
use locus_iot::merkle::BlockLog;
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

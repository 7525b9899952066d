//! The `market` table of the node's store: the signed records this node
//! keeps, by kind and id, as their wire bytes. Written before any answer.

use std::future::Future;

use locus_store::{Store, StoreError};
use rusqlite::params;

/// What a row holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An offer or a request of this node (`locus_market::Entry`).
    Entry,
    /// A contract this node is a party or the arbitrator to.
    Contract,
    /// The provider's meter of a contract (`settlement::Meter`).
    Meter,
    /// A receipt between orgs, signed by both (`locus_market::SignedReceipt`).
    Receipt,
    /// A settlement this node took part in (`locus_market::Settlement`).
    Settlement,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Entry => "entry",
            Kind::Contract => "contract",
            Kind::Meter => "meter",
            Kind::Receipt => "receipt",
            Kind::Settlement => "settlement",
        }
    }
}

pub(crate) trait MarketTable {
    fn put_market(
        &self,
        kind: Kind,
        id: String,
        body: Vec<u8>,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn delete_market(
        &self,
        kind: Kind,
        id: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every row of `kind`: `(id, body)`.
    fn market(
        &self,
        kind: Kind,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, StoreError>> + Send;
}

impl MarketTable for Store {
    async fn put_market(
        &self,
        kind: Kind,
        id: String,
        body: Vec<u8>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO market (kind, id, body, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(kind, id) DO UPDATE SET body = ?3, updated_at_ms = ?4",
                params![kind.as_str(), id, body, now_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_market(&self, kind: Kind, id: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM market WHERE kind = ?1 AND id = ?2",
                params![kind.as_str(), id],
            )?;
            Ok(())
        })
        .await
    }

    async fn market(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare("SELECT id, body FROM market WHERE kind = ?1 ORDER BY id")?;
            let rows = stmt.query_map(params![kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

//! North-side export through a durable outbox, and the parent's import.
//!
//! A child node with `[readings] export_url` sends every reading it
//! sealed, in seq order, to `POST {export_url}/api/v1/readings/import`, in
//! batches of at most [`EXPORT_BATCH`] readings and [`EXPORT_MAX_BYTES`].
//! The outbox is the log itself plus one durable cursor per parent URL
//! (`export_cursors`): the seqs below it were acknowledged. The cursor
//! moves only after a 2xx answer, and is committed (synchronous = FULL)
//! before the next batch; a failed or unanswered request is sent again
//! after a backoff ([`EXPORT_BACKOFF_MIN`] doubling to
//! [`EXPORT_BACKOFF_MAX`]). A restarted node goes on from the cursor, so
//! delivery is at least once: a batch the parent stored but whose answer
//! was lost is sent again. Retention never deletes a reading at or past
//! the cursor.
//!
//! The parent stores what it imports durably and once per (origin, seq)
//! (`imports`) before its 2xx: a resent reading is counted as a duplicate
//! (or as a conflict, keeping the first, if its body differs), so storage
//! is exactly once. The origin is the child's node id, and its verifier key
//! must be that node's key (the node id is derived from it), so a key and
//! an origin that do not belong together are refused. The import is not
//! authenticated beyond that (the API has no authentication yet): anyone
//! who reaches the parent's API can import readings under any origin whose
//! public key they know.

use std::ops::Range;
use std::time::Duration;

use crate::table::{ImportOutcome, ImportedReading, ReadingsTable};
use locus_core::NodeId;
use locus_core::config::ExportUrl;
use locus_iot::{Reading, checkpoint};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ReadingView, Readings, ReadingsError};

/// Path of the import endpoint on a parent.
pub const IMPORT_PATH: &str = "/api/v1/readings/import";
/// Most readings in one export request (and in one import).
pub const EXPORT_BATCH: usize = 500;
/// Most readings a parent takes in one import.
pub const MAX_IMPORT: usize = 1000;
/// Most bytes of readings in one export request (one reading is sent alone
/// whatever its size).
pub const EXPORT_MAX_BYTES: usize = 1 << 20;
/// How long the exporter waits, with nothing new to send, before looking
/// again (a commit wakes it earlier).
pub const EXPORT_IDLE: Duration = Duration::from_secs(1);
/// How long one export request may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait after the first failed attempt; it doubles at each failure.
pub const EXPORT_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const EXPORT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What an import stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportResult {
    /// Readings stored now.
    pub stored: u64,
    /// Readings already stored, with the same body (a resent batch).
    pub duplicates: u64,
    /// Seqs already stored with another body; the first one is kept.
    pub conflicting: Vec<u64>,
}

/// A child node whose readings were imported here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportOriginView {
    /// The child's node id.
    pub origin: String,
    /// The key the child's seal log is signed with.
    pub verifier_key: String,
    /// Readings stored.
    pub count: u64,
    /// One past the highest seq stored.
    pub next_seq: u64,
}

/// The next batch to send: the seqs it covers and its JSON body. Pure:
/// `rows` are the stored `(seq, body)` of seqs `from..end`, in order (a
/// row missing from the store is simply absent, and skipped); the batch
/// stops before [`EXPORT_BATCH`] readings or [`EXPORT_MAX_BYTES`], but
/// always holds at least one reading when there is one. The cursor moves
/// to the end of the returned range.
pub(crate) fn export_batch(
    origin: &str,
    verifier_key: &str,
    from: u64,
    end: u64,
    rows: &[(u64, String)],
) -> (Range<u64>, String) {
    let mut body = format!(
        "{{\"origin\":{},\"verifier_key\":{},\"readings\":[",
        serde_json::Value::from(origin),
        serde_json::Value::from(verifier_key)
    );
    let mut upto = end;
    let mut bytes = 0;
    for (i, (seq, reading)) in rows.iter().enumerate() {
        let entry = format!("{{\"seq\":{seq},\"reading\":{reading}}}");
        if i > 0 && (i >= EXPORT_BATCH || bytes + entry.len() > EXPORT_MAX_BYTES) {
            upto = *seq;
            break;
        }
        if i > 0 {
            body.push(',');
        }
        bytes += entry.len();
        body.push_str(&entry);
    }
    body.push_str("]}");
    (from..upto, body)
}

impl Readings {
    /// The export URL as the cursor's key.
    fn export_target(&self) -> Option<String> {
        self.inner.export.as_ref().map(|u| u.join(""))
    }

    /// The first seq the parent has not acknowledged, when readings are
    /// exported: retention keeps it and everything after. Before the first
    /// acknowledgement, nothing more may go.
    pub(crate) async fn export_floor(&self) -> Result<Option<u64>, ReadingsError> {
        let Some(target) = self.export_target() else {
            return Ok(None);
        };
        Ok(Some(
            self.inner
                .store
                .export_cursor(target)
                .await?
                .unwrap_or_else(|| self.pruned_below()),
        ))
    }

    /// Store readings a child node exported (see the module
    /// documentation): durable before it returns, once per (origin, seq).
    pub async fn import(
        &self,
        origin: &str,
        verifier_key: &str,
        readings: Vec<(u64, Reading)>,
    ) -> Result<ImportResult, ReadingsError> {
        let id: NodeId = origin.parse().map_err(|e| {
            ReadingsError::Conflict(format!("origin {origin:?} is not a node id: {e}"))
        })?;
        if id == self.inner.node {
            return Err(ReadingsError::Conflict(format!(
                "origin {origin} is this node: a node does not import its own readings"
            )));
        }
        let (name, key) = checkpoint::parse_verifier_key(verifier_key)
            .map_err(|e| ReadingsError::Conflict(e.to_string()))?;
        if name != format!("locus/{origin}") || NodeId::from_public_key(&key) != id {
            return Err(ReadingsError::Conflict(format!(
                "the verifier key {verifier_key:?} is not the key of node {origin}"
            )));
        }
        if readings.len() > MAX_IMPORT {
            return Err(ReadingsError::Conflict(format!(
                "{} readings in one import; the limit is {MAX_IMPORT}",
                readings.len()
            )));
        }
        let mut rows = Vec::with_capacity(readings.len());
        for (seq, reading) in readings {
            let body = serde_json::to_string(&reading)
                .map_err(|e| ReadingsError::Invalid(format!("cannot encode a reading: {e}")))?;
            rows.push(ImportedReading { seq, body });
        }
        let ImportOutcome {
            stored,
            duplicates,
            conflicting,
        } = self
            .inner
            .store
            .import_readings(
                origin.to_owned(),
                verifier_key.to_owned(),
                rows,
                crate::unix_ms(),
            )
            .await?;
        let m = &self.inner.metrics.readings_imported;
        m.with_label_values(&["stored"]).inc_by(stored);
        m.with_label_values(&["duplicate"]).inc_by(duplicates);
        m.with_label_values(&["conflicting"])
            .inc_by(conflicting.len() as u64);
        if !conflicting.is_empty() {
            tracing::warn!(
                origin,
                seqs = ?conflicting,
                "imported readings differ from those stored at the same seqs; the first are kept"
            );
        }
        Ok(ImportResult {
            stored,
            duplicates,
            conflicting,
        })
    }

    /// Every child node with imported readings.
    pub async fn import_origins(&self) -> Result<Vec<ImportOriginView>, ReadingsError> {
        Ok(self
            .inner
            .store
            .import_origins()
            .await?
            .into_iter()
            .map(|o| ImportOriginView {
                origin: o.origin,
                verifier_key: o.verifier_key,
                count: o.count,
                next_seq: o.next_seq,
            })
            .collect())
    }

    /// Readings imported from `origin` from seq `start` on, at most `limit`;
    /// `None` when nothing was ever imported from it.
    pub async fn imported(
        &self,
        origin: &str,
        start: u64,
        limit: u32,
    ) -> Result<Option<Vec<ReadingView>>, ReadingsError> {
        let store = &self.inner.store;
        let rows = store
            .imported(origin.to_owned(), start, limit.min(super::MAX_QUERY))
            .await?;
        if rows.is_empty()
            && !store
                .import_origins()
                .await?
                .iter()
                .any(|o| o.origin == origin)
        {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .filter_map(|r| {
                    Some(ReadingView {
                        seq: r.seq,
                        reading: serde_json::from_str(&r.body).ok()?,
                    })
                })
                .collect(),
        ))
    }

    /// One export attempt: send what follows `next` (if anything) and
    /// return the new cursor, committed once the parent acknowledged.
    async fn export_once(
        &self,
        client: &reqwest::Client,
        url: &str,
        target: &str,
        next: u64,
    ) -> Result<u64, String> {
        let sealed = self.size().await;
        if next >= sealed {
            return Ok(next);
        }
        let end = sealed.min(next + EXPORT_BATCH as u64);
        let stored = self
            .inner
            .store
            .readings_by_seq(next, end)
            .await
            .map_err(|e| e.to_string())?;
        if stored.len() as u64 != end - next {
            tracing::warn!(
                from = next,
                to = end,
                missing = end - next - stored.len() as u64,
                "readings missing from the store (deleted outside locus?) are not exported"
            );
        }
        // A body that is no longer a reading (edited outside locus) would
        // be refused by the parent forever: it is left out, and said so.
        let rows: Vec<(u64, String)> = stored
            .into_iter()
            .filter(|r| match serde_json::from_str::<Reading>(&r.body) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(seq = r.seq, error = %e, "a stored reading is unreadable; not exported");
                    false
                }
            })
            .map(|r| (r.seq, r.body))
            .collect();
        let key = self.verifier_key();
        let origin = self.inner.node.to_string();
        let (range, body) = export_batch(&origin, &key, next, end, &rows);
        let sent = rows.iter().filter(|(s, _)| *s < range.end).count() as u64;
        let mut req = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Ok(parsed) = reqwest::Url::parse(url) {
            let mut path = parsed.path().to_owned();
            if let Some(q) = parsed.query() {
                path.push('?');
                path.push_str(q);
            }
            for (name, value) in self.inner.signer.sign("POST", &path, body.as_bytes()) {
                req = req.header(name, value);
            }
        }
        let answer = req
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = answer.status();
        if !status.is_success() {
            let text = answer.text().await.unwrap_or_default();
            return Err(format!(
                "{url} answered {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        // Counted as acknowledged now, before the cursor moves: whoever
        // sees the cursor sees the count too.
        self.inner.metrics.readings_exported.inc_by(sent);
        self.inner
            .store
            .set_export_cursor(target.to_owned(), range.end, crate::unix_ms())
            .await
            .map_err(|e| format!("cannot record the export cursor: {e}"))?;
        Ok(range.end)
    }
}

/// Export every sealed reading to `url`, forever (see the module
/// documentation).
pub(crate) async fn run(readings: Readings, url: ExportUrl) {
    let target = url.join("");
    let import = url.join(IMPORT_PATH);
    let client = match reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; readings are not exported");
            return;
        }
    };
    let metrics = readings.inner.metrics.clone();
    let mut backoff = EXPORT_BACKOFF_MIN;
    let mut next = loop {
        match readings.inner.store.export_cursor(target.clone()).await {
            Ok(Some(n)) => break n,
            Ok(None) => {
                let pruned = readings.pruned_below();
                if pruned > 0 {
                    tracing::warn!(
                        parent = %target,
                        pruned,
                        "a new parent: readings below the retention watermark are gone and are not exported"
                    );
                }
                break pruned;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the export cursor");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(EXPORT_BACKOFF_MAX);
            }
        }
    };
    tracing::info!(parent = %target, from = next, "exporting readings");
    backoff = EXPORT_BACKOFF_MIN;
    loop {
        let sealed = readings.size().await;
        metrics
            .readings_export_backlog
            .set(sealed.saturating_sub(next) as i64);
        if next >= sealed {
            tokio::select! {
                () = readings.inner.grown.notified() => {}
                () = tokio::time::sleep(EXPORT_IDLE) => {}
            }
            continue;
        }
        match readings.export_once(&client, &import, &target, next).await {
            Ok(n) => {
                next = n;
                backoff = EXPORT_BACKOFF_MIN;
            }
            Err(e) => {
                metrics.readings_export_failures.inc();
                tracing::warn!(error = %e, retry_in = ?backoff, from = next, "export failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(EXPORT_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_what_fits_and_moves_the_cursor_past_gaps() {
        let rows: Vec<(u64, String)> = (10..20)
            .filter(|s| *s != 13)
            .map(|s| (s, format!("{{\"n\":{s}}}")))
            .collect();
        let (range, body) = export_batch("o", "k", 10, 20, &rows);
        assert_eq!(range, 10..20);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["origin"], "o");
        assert_eq!(v["verifier_key"], "k");
        let seqs: Vec<u64> = v["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![10, 11, 12, 14, 15, 16, 17, 18, 19]);
        assert_eq!(v["readings"][0]["reading"]["n"], 10);

        // Bytes: stop before the entry that would pass the limit.
        let big = "x".repeat(EXPORT_MAX_BYTES / 3);
        let rows: Vec<(u64, String)> = (0..5).map(|s| (s, format!("\"{big}\""))).collect();
        let (range, body) = export_batch("o", "k", 0, 5, &rows);
        assert_eq!(range, 0..2);
        assert!(body.len() < EXPORT_MAX_BYTES + 200);
        // One reading larger than the limit still goes, alone.
        let huge = vec![
            (0, format!("\"{}\"", "y".repeat(EXPORT_MAX_BYTES))),
            (1, "1".into()),
        ];
        assert_eq!(export_batch("o", "k", 0, 2, &huge).0, 0..1);
        // Count.
        let many: Vec<(u64, String)> = (0..2000).map(|s| (s, "1".to_owned())).collect();
        assert_eq!(
            export_batch("o", "k", 0, 2000, &many).0,
            0..EXPORT_BATCH as u64
        );
        // Nothing stored in the range: the cursor passes it.
        assert_eq!(export_batch("o", "k", 3, 7, &[]).0, 3..7);
    }
}

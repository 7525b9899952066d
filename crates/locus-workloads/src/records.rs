//! What the owner publishes on the fabric: a summary record `wl/<id>` per
//! owned workload and its spec in chunks `wl/<id>/spec/<i>`, so that every
//! node can list it and a successor can adopt it.

use super::*;

/// A spec's JSON in the chunks its owner publishes.
pub(crate) fn spec_chunks(json: &[u8]) -> Vec<Vec<u8>> {
    json.chunks(SPEC_CHUNK)
        .map(<[u8]>::to_vec)
        .take(MAX_SPEC_CHUNKS)
        .collect()
}

impl Workloads {
    /// Publish what changed to the fabric, and tombstone what left.
    pub(crate) async fn publish(&self) {
        let (changes, forget) = {
            let mut owned = self.inner.owned.lock().await;
            let forget = std::mem::take(&mut owned.forget);
            let mut changes = Vec::new();
            for e in owned.entries.values_mut() {
                let json = e.w.spec.to_json();
                let chunks: Vec<Vec<u8>> = if e.w.destroyed_unix_ms.is_some() {
                    Vec::new()
                } else {
                    spec_chunks(&json)
                };
                let digest = if e.w.destroyed_unix_ms.is_some() {
                    "destroyed".to_owned()
                } else {
                    e.w.spec.digest()
                };
                let spec_changed = e.published_spec.as_ref().is_none_or(|(d, _)| *d != digest);
                let old_chunks = e.published_spec.as_ref().map_or(0, |(_, n)| *n);
                let summary = e.w.summary(chunks.len() as u32);
                if !spec_changed && e.published.as_ref() == Some(&summary) {
                    continue;
                }
                e.published_spec = Some((digest, chunks.len() as u32));
                e.published = Some(summary.clone());
                changes.push((e.w.id, spec_changed.then_some(chunks), old_chunks, summary));
            }
            (changes, forget)
        };
        let fabric = &self.inner.fabric;
        for (id, chunks, old_chunks, summary) in changes {
            // Spec first, then the summary that names its digest.
            if let Some(chunks) = chunks {
                locus_fabric::chunks::publish(
                    fabric,
                    |i| chunk_key(id, i),
                    chunks,
                    old_chunks as usize,
                )
                .await;
            }
            if let Err(e) = fabric.publish_json(&summary_key(id), &summary).await {
                tracing::warn!(workload = %id, error = %e, "cannot publish a workload");
                let mut owned = self.inner.owned.lock().await;
                if let Some(e) = owned.entries.get_mut(&id) {
                    e.published = None;
                }
            }
        }
        for (id, chunks) in forget {
            let _ = fabric.publish(&summary_key(id), None).await;
            locus_fabric::chunks::delete(fabric, |i| chunk_key(id, i), 0..chunks as usize).await;
        }
        let owned = self.inner.owned.lock().await;
        for s in State::ALL {
            let n = owned.entries.values().filter(|e| e.w.state == s).count();
            self.inner
                .metrics
                .workloads
                .with_label_values(&[s.as_str()])
                .set(n as i64);
        }
    }
}

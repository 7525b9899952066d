//! Collection: the disk budget, and which unpinned, unused artifacts go
//! first (least recently used) when room is needed or asked for.

use super::*;

impl Artifacts {
    /// Free space for `need` more bytes by collecting; fails when even
    /// that is not enough.
    pub(crate) async fn make_room(&self, need: u64) -> Result<(), ArtifactsError> {
        let budget = self.inner.budget;
        let used = self.inner.blobs.disk_usage();
        if used.saturating_add(need) <= budget {
            return Ok(());
        }
        let target = budget.saturating_sub(need);
        self.collect(Some(target)).await?;
        let used = self.inner.blobs.disk_usage();
        if used.saturating_add(need) > budget {
            return Err(ArtifactsError::Budget {
                need,
                free: budget.saturating_sub(used),
                budget,
            });
        }
        Ok(())
    }

    /// Collect unpinned artifacts no workload here uses and that are not
    /// needed here as a replica, least recently used first: until the
    /// store is within its budget, or every such artifact with `all`.
    pub async fn gc(&self, all: bool) -> Result<GcReport, ArtifactsError> {
        let target = if all { None } else { Some(self.inner.budget) };
        self.collect(target).await
    }

    pub(crate) async fn collect(&self, down_to: Option<u64>) -> Result<GcReport, ArtifactsError> {
        let holders = self.holders().await;
        let rows = self.inner.store.artifacts().await?;
        let mut used = self.inner.blobs.disk_usage();
        let mut removed = Vec::new();
        let mut freed = 0;
        // Abandoned downloads first: nothing can use them.
        let mut discarded_partials = Vec::new();
        let fetching: BTreeSet<ArtifactId> =
            self.inner.fetches.lock().await.keys().copied().collect();
        for id in self.inner.blobs.partials()? {
            if down_to.is_some_and(|t| used <= t) || fetching.contains(&id) {
                continue;
            }
            let bytes = self.inner.blobs.partial_bytes(&id);
            self.inner.blobs.discard(&id);
            used = used.saturating_sub(bytes);
            freed += bytes;
            discarded_partials.push(id);
            tracing::info!(artifact = %id, bytes, "abandoned partial download discarded");
        }
        // Rows come least recently used first.
        for r in rows {
            if down_to.is_some_and(|t| used <= t) {
                break;
            }
            let Ok(id) = r.cid.parse::<ArtifactId>() else {
                continue;
            };
            if r.pinned || self.is_in_use(&id) {
                continue;
            }
            let replicas = r
                .replicas
                .max(holders.get(&id).map(|h| h.replicas).unwrap_or(0));
            if replicas > 0 && self.designated(&id, replicas, holders.get(&id)) {
                continue;
            }
            self.inner.blobs.remove(&id)?;
            self.inner.store.delete_artifact(r.cid.clone()).await?;
            used = used.saturating_sub(r.size);
            freed += r.size;
            removed.push(id);
            tracing::info!(artifact = %id, size = r.size, "artifact collected");
        }
        if !removed.is_empty() {
            self.publish().await;
        }
        Ok(GcReport {
            removed,
            discarded_partials,
            freed_bytes: freed,
            used_bytes: self.inner.blobs.disk_usage(),
            budget_bytes: self.inner.budget,
        })
    }
}

//! Who holds what: this node's holder records `art/<cid>` on the fabric,
//! the cluster's holders read back from it, and the replication pass that
//! fetches what `locus_sched::replica_fetchers` names this node to hold.

use super::*;

impl Artifacts {
    /// Bring the holder records and gauges in line with the index.
    pub(crate) async fn publish(&self) {
        let rows = match self.inner.store.artifacts().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the artifact index");
                return;
            }
        };
        self.inner.metrics.artifacts_held.set(rows.len() as i64);
        self.inner
            .metrics
            .artifacts_bytes
            .set(rows.iter().map(|r| r.size as i64).sum());
        let mut want: BTreeMap<ArtifactId, HolderRecord> = BTreeMap::new();
        // Most recently used first, so the cap drops the coldest.
        for r in rows.iter().rev() {
            if want.len() >= MAX_PUBLISHED {
                tracing::warn!(
                    held = rows.len(),
                    "more artifacts than holder records; the coldest are not announced"
                );
                break;
            }
            if let Ok(id) = r.cid.parse() {
                want.insert(
                    id,
                    HolderRecord {
                        size: r.size,
                        replicas: r.replicas,
                        name: r.name.clone(),
                        tenants: r.tenants.iter().cloned().collect(),
                    },
                );
            }
        }
        let mut published = self.inner.published.lock().await;
        for (id, rec) in &want {
            if published.get(id) != Some(rec) {
                match self.inner.fabric.publish_json(&holder_key(id), rec).await {
                    Ok(_) => {
                        published.insert(*id, rec.clone());
                    }
                    Err(e) => {
                        tracing::warn!(artifact = %id, error = %e, "cannot publish a holder record")
                    }
                }
            }
        }
        let gone: Vec<ArtifactId> = published
            .keys()
            .filter(|id| !want.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            if self
                .inner
                .fabric
                .publish(&holder_key(&id), None)
                .await
                .is_ok()
            {
                published.remove(&id);
            }
        }
    }

    /// Whether this node's copy is one of the `replicas` the cluster keeps:
    /// the live holders ranked by rendezvous hash, first K. Every node ranks
    /// the same holders the same way, so extra copies can be dropped at once
    /// without two nodes both dropping a kept one.
    pub(crate) fn designated(&self, id: &ArtifactId, replicas: u32, held: Option<&Held>) -> bool {
        let mut live: Vec<NodeId> = held
            .map(|h| h.nodes.keys().copied().collect())
            .unwrap_or_default();
        if !live.contains(&self.inner.me) {
            live.push(self.inner.me);
        }
        live.sort_by_key(|n| std::cmp::Reverse(locus_sched::rendezvous_key(id.digest(), *n)));
        live.iter()
            .take(replicas as usize)
            .any(|n| *n == self.inner.me)
    }

    pub(crate) async fn cluster(&self) -> Vec<ClusterNode> {
        self.inner.fabric.nodes().await
    }

    pub(crate) async fn holders(&self) -> BTreeMap<ArtifactId, Held> {
        let nodes = self.cluster().await;
        self.holders_in(&nodes).await
    }

    /// Who holds what among live nodes, from their holder records.
    pub(crate) async fn holders_in(&self, nodes: &[ClusterNode]) -> BTreeMap<ArtifactId, Held> {
        let mut out: BTreeMap<ArtifactId, Held> = BTreeMap::new();
        for n in nodes.iter().filter(|n| n.liveness == Liveness::Alive) {
            let Some(api) = n.info.as_ref().map(|i| i.api_addr.clone()) else {
                continue;
            };
            let Ok(records) = self.inner.fabric.records_of(n.id).await else {
                continue;
            };
            for (key, _, value) in records {
                let Some(id) = key
                    .strip_prefix("art/")
                    .and_then(|c| c.parse::<ArtifactId>().ok())
                else {
                    continue;
                };
                let Ok(rec) = serde_json::from_slice::<HolderRecord>(&value) else {
                    continue;
                };
                let h = out.entry(id).or_insert_with(|| Held {
                    size: rec.size,
                    replicas: 0,
                    name: None,
                    tenants: BTreeSet::new(),
                    nodes: BTreeMap::new(),
                });
                // A holder whose size disagrees with the first is ignored:
                // at most one of them can verify.
                if rec.size != h.size {
                    continue;
                }
                h.replicas = h.replicas.max(rec.replicas);
                if h.name.is_none() {
                    h.name = rec.name;
                }
                // Bounded like a record's own list.
                for t in rec.tenants {
                    if h.tenants.len() < super::MAX_TENANTS {
                        h.tenants.insert(t);
                    }
                }
                h.nodes.insert(n.id, api.clone());
            }
        }
        out
    }

    /// For each of `ids`, the live nodes holding a complete copy, as their
    /// holder records say (this node included when it holds one); one
    /// reading of the records for all of them.
    pub async fn live_holders(
        &self,
        ids: &BTreeSet<ArtifactId>,
    ) -> BTreeMap<ArtifactId, BTreeSet<NodeId>> {
        if ids.is_empty() {
            return BTreeMap::new();
        }
        let mut held = self.holders().await;
        ids.iter()
            .map(|id| {
                let mut nodes: BTreeSet<NodeId> = held
                    .remove(id)
                    .map(|h| h.nodes.into_keys().collect())
                    .unwrap_or_default();
                if self.inner.blobs.size(id).is_some() {
                    nodes.insert(self.inner.me);
                }
                (*id, nodes)
            })
            .collect()
    }

    /// One replication pass: fetch what this node is named to hold.
    pub async fn repair(&self) {
        let nodes = self.cluster().await;
        let holders = self.holders_in(&nodes).await;
        let mut started = 0;
        for (id, held) in &holders {
            if held.replicas == 0 || self.inner.blobs.size(id).is_some() || self.is_receiving(id) {
                continue;
            }
            let set: BTreeSet<NodeId> = held.nodes.keys().copied().collect();
            let fetchers =
                locus_sched::replica_fetchers(id.digest(), held.replicas as usize, &nodes, &set);
            if !fetchers.contains(&self.inner.me) {
                continue;
            }
            if self.inner.fetches.lock().await.contains_key(id) {
                started += 1;
                continue;
            }
            if started >= MAX_REPAIRS {
                break;
            }
            tracing::info!(artifact = %id, replicas = held.replicas, holders = set.len(), "fetching a replica");
            self.fetch(*id).await;
            started += 1;
        }
        self.publish().await;
    }

    pub(crate) async fn run(self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REPAIR_TICK) => {}
                _ = self.inner.wake.notified() => {}
            }
            self.repair().await;
        }
    }
}

/// An artifact's live holders, as their records say.
pub(crate) struct Held {
    pub(crate) size: u64,
    pub(crate) replicas: u32,
    pub(crate) name: Option<String>,
    /// The tenants the holders say it belongs to.
    pub(crate) tenants: BTreeSet<String>,
    /// Holder → its API address.
    pub(crate) nodes: BTreeMap<NodeId, String>,
}

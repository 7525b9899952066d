//! The reconcile loop: read the cluster, adopt the workloads of dead
//! owners and yield copies a newer epoch replaced (both decided by
//! `locus_sched::plan`), place pending workloads, then drive each owned
//! workload towards what is asked.

use super::*;

impl Workloads {
    pub(crate) async fn run(self) {
        loop {
            let _ = tokio::time::timeout(TICK, self.inner.wake.notified()).await;
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
        }
    }

    /// Every node the fabric knows, trusted or not: what lists and
    /// lookups show (a node's certificate may arrive after its records).
    pub(crate) async fn all_nodes(&self) -> Vec<ClusterNode> {
        self.inner.fabric.nodes().await
    }

    /// The cluster as the fabric sees it now (empty if the fabric
    /// stopped), without the live nodes this node refuses (a bad, revoked
    /// or foreign certificate): they are no successor and do not count
    /// towards a majority. A node that is not alive stays, whatever its
    /// certificate: its records say what to adopt from it.
    pub(crate) async fn cluster(&self) -> Vec<ClusterNode> {
        let mut nodes = self.inner.fabric.nodes().await;
        nodes.retain(|n| {
            n.id == self.inner.me
                || n.liveness != Liveness::Alive
                || self.inner.peers.verdict(n.id) != locus_core::PeerVerdict::Refused
        });
        nodes
    }

    /// Where new work may go: `nodes` without those whose certificate this
    /// node has not checked and trusted.
    pub(crate) fn placeable(&self, nodes: &[ClusterNode]) -> Vec<ClusterNode> {
        nodes
            .iter()
            .filter(|n| {
                n.id == self.inner.me
                    || self.inner.peers.verdict(n.id) == locus_core::PeerVerdict::Trusted
            })
            .cloned()
            .collect()
    }

    /// One pass of the loop. Public for tests and benchmarks.
    pub async fn reconcile(&self) -> Result<(), WorkloadError> {
        let nodes = self.cluster().await;
        let mut replicas = self.replicas(&nodes).await;
        {
            let mut owned = self.inner.owned.lock().await;
            let Owned {
                entries, handed, ..
            } = &mut *owned;
            handed.retain(|id, w| !entries.contains_key(id) && !replicas.remember(w));
        }
        let copies = replicas.copies();
        self.fence_and_adopt(&nodes, &copies, &replicas).await?;
        self.place_pending(&nodes).await?;
        self.hand_back(&nodes).await?;
        self.drive().await?;
        self.publish().await;
        Ok(())
    }

    /// The records of every known node, fetched once per pass.
    pub(crate) async fn replicas(&self, nodes: &[ClusterNode]) -> Replicas {
        let mut by_owner = BTreeMap::new();
        for n in nodes {
            if let Ok(records) = self.inner.fabric.records_of(n.id).await {
                by_owner.insert(n.id, records.into_iter().map(|(k, _, v)| (k, v)).collect());
            }
        }
        Replicas { by_owner }
    }

    pub(crate) async fn fence_and_adopt(
        &self,
        nodes: &[ClusterNode],
        copies: &[WorkloadSummary],
        replicas: &Replicas,
    ) -> Result<(), WorkloadError> {
        // Specs of copies whose owner is gone: the candidates for adoption.
        let liveness: BTreeMap<NodeId, Liveness> =
            nodes.iter().map(|n| (n.id, n.liveness)).collect();
        let mut specs: BTreeMap<WorkloadId, WorkloadSpec> = BTreeMap::new();
        for c in copies {
            if c.failover == Failover::Reschedule
                && !c.destroyed
                && matches!(
                    liveness.get(&c.owner),
                    Some(Liveness::Dead | Liveness::Left)
                )
            {
                match replicas.spec(c) {
                    Some(spec) => {
                        tracing::debug!(
                            workload = %c.id,
                            owner = %c.owner,
                            successor = ?locus_sched::successor(c.id, &spec, nodes, &[c.owner]),
                            majority = locus_sched::has_majority(nodes),
                            "a gone node's workload"
                        );
                        specs.insert(c.id, spec);
                    }
                    None => tracing::debug!(
                        workload = %c.id,
                        owner = %c.owner,
                        "a gone node's workload whose spec has not fully arrived"
                    ),
                }
            }
        }
        let standbys = &self.inner.standbys;
        let actions = locus_sched::plan_with_standbys(
            self.inner.me,
            nodes,
            copies,
            |id| specs.get(&id),
            |c| standbys.standby(c),
            now_ms(),
        );
        for action in actions {
            match action {
                Action::Yield { id, by, epoch } => {
                    let mut owned = self.inner.owned.lock().await;
                    let Some(e) = owned.entries.get_mut(&id) else {
                        continue;
                    };
                    if e.busy {
                        continue;
                    }
                    tracing::warn!(workload = %id, %by, epoch, "a newer copy exists; stopping ours");
                    self.inner.metrics.workload_yields.inc();
                    e.busy = true;
                    let instance = e.instance.clone();
                    let driver = self.inner.drivers.get(&e.w.spec.kind).cloned();
                    drop(owned);
                    if let (Some(inst), Some(d)) = (instance, driver) {
                        let _ = d.kill(&inst).await;
                        let _ = d.remove(&inst).await;
                    }
                    self.drop_owned(id).await?;
                }
                Action::Adopt { id, from, epoch } => {
                    let Some(spec) = specs.get(&id).cloned() else {
                        continue;
                    };
                    let mut owned = self.inner.owned.lock().await;
                    if owned.entries.get(&id).is_some_and(|e| e.w.epoch >= epoch) {
                        continue;
                    }
                    let now = now_ms();
                    let mut w = Workload::new(id, spec, self.inner.me, now);
                    w.epoch = epoch;
                    let _ = w.transition(
                        State::Scheduled,
                        format!("adopted from node {from}, which is gone"),
                        now,
                    );
                    tracing::info!(workload = %id, %from, epoch, "adopting");
                    self.inner.metrics.workload_adoptions.inc();
                    let e = Entry::new(w, None);
                    self.persist(&e).await?;
                    owned.entries.insert(id, e);
                }
            }
        }
        Ok(())
    }

    /// Give back the workloads taken over under a contract whose customer
    /// returned: stop ours first (never two running), then hand it over at
    /// a newer epoch; kept (and retried next pass) if the customer does
    /// not take it.
    pub(crate) async fn hand_back(&self, nodes: &[ClusterNode]) -> Result<(), WorkloadError> {
        let going: Vec<Leaving> = {
            let mut owned = self.inner.owned.lock().await;
            let mut out = Vec::new();
            for e in owned.entries.values_mut() {
                if e.busy
                    || e.w.destroyed_unix_ms.is_some()
                    || e.hand_back_after.is_some_and(|t| Instant::now() < t)
                {
                    continue;
                }
                let summary =
                    e.w.summary(e.published_spec.as_ref().map_or(0, |(_, n)| *n));
                if let Some(to) = self.inner.standbys.hand_back(&summary)
                    && to != self.inner.me
                {
                    e.busy = true;
                    out.push(Leaving {
                        id: e.w.id,
                        to,
                        instance: e.instance.take(),
                        driver: self.inner.drivers.get(&e.w.spec.kind).cloned(),
                    });
                }
            }
            out
        };
        for Leaving {
            id,
            to,
            instance,
            driver,
        } in going
        {
            if let (Some(inst), Some(d)) = (instance, driver) {
                let _ = d.kill(&inst).await;
                let _ = d.remove(&inst).await;
            }
            let w = {
                let mut owned = self.inner.owned.lock().await;
                let Some(e) = owned.entries.get_mut(&id) else {
                    continue;
                };
                let now = now_ms();
                let _ =
                    e.w.transition(State::Stopped, format!("handing back to node {to}"), now);
                e.w.clone()
            };
            let mut back = w.clone();
            back.owner = to;
            back.epoch += 1;
            let _ = back.transition(
                State::Scheduled,
                format!("handed back by node {}, which took it over", self.inner.me),
                now_ms(),
            );
            match self.handover(nodes, to, &back).await {
                Ok(_) => {
                    tracing::info!(workload = %id, %to, epoch = back.epoch, "handed back");
                    self.drop_owned(id).await?;
                    let mut owned = self.inner.owned.lock().await;
                    if owned.handed.len() < MAX_HANDED {
                        owned.handed.insert(id, HandedCopy::of(&back));
                    }
                }
                Err(e) => {
                    tracing::warn!(workload = %id, %to, error = %e, "hand back failed; running it again here");
                    // Its instance is gone and it is stopped: scheduled
                    // again, it runs here until a hand back succeeds
                    // (stopped, a workload that restarts only on failure
                    // would stay down, even once the customer died again).
                    self.update_entry(id, |en| {
                        en.busy = false;
                        en.hand_back_after = Some(Instant::now() + crate::HAND_BACK_RETRY);
                        let _ = en.w.transition(
                            State::Scheduled,
                            format!(
                                "hand back to {to} failed: {e}; running here until it succeeds"
                            ),
                            now_ms(),
                        );
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Stop tracking a workload here: store, fabric (tombstones), entries.
    pub(crate) async fn drop_owned(&self, id: WorkloadId) -> Result<(), WorkloadError> {
        self.inner.store.delete_workload(id.to_string()).await?;
        let mut owned = self.inner.owned.lock().await;
        if let Some(e) = owned.entries.remove(&id) {
            let chunks = e.published_spec.map_or(0, |(_, n)| n);
            owned.forget.push((id, chunks));
        }
        Ok(())
    }

    pub(crate) async fn place_pending(&self, nodes: &[ClusterNode]) -> Result<(), WorkloadError> {
        let pending: Vec<Workload> = {
            let owned = self.inner.owned.lock().await;
            owned
                .entries
                .values()
                .filter(|e| {
                    e.w.state == State::Pending
                        && e.w.desired == Desired::Running
                        && !e.busy
                        && e.awaiting.is_none()
                })
                .map(|e| e.w.clone())
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let placeable = self.placeable(nodes);
        for w in pending {
            let decision = locus_sched::place(w.id, &w.spec, &placeable);
            match decision.chosen {
                Some(node) if node == self.inner.me => {
                    self.update_entry(w.id, |e| {
                        let _ =
                            e.w.transition(State::Scheduled, "placed on this node", now_ms());
                    })
                    .await?;
                }
                Some(node) => {
                    let mut moved = w.clone();
                    moved.owner = node;
                    moved.epoch += 1;
                    let _ = moved.transition(
                        State::Scheduled,
                        "placed by the node that held it pending",
                        now_ms(),
                    );
                    match self.handover(nodes, node, &moved).await {
                        Ok(_) => self.drop_owned(w.id).await?,
                        Err(e) => {
                            self.update_entry(w.id, |en| {
                                en.w.reason = format!("handover to {node} failed: {e}; retrying");
                            })
                            .await?
                        }
                    }
                }
                None => {
                    let why = decision.why_none();
                    self.update_entry(w.id, |e| e.w.reason = why.clone())
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// A workload on its way back to its customer.
struct Leaving {
    id: WorkloadId,
    to: NodeId,
    instance: Option<Instance>,
    driver: Option<Arc<dyn Driver>>,
}

/// Every known node's records, as fetched for one pass: the copies of
/// every workload and the specs behind them come from here.
/// A copy this node handed over, as its new owner publishes it: its spec
/// chunks and its summary, encoded once when handed.
pub(crate) struct HandedCopy {
    owner: NodeId,
    id: WorkloadId,
    epoch: u64,
    records: Vec<(String, Vec<u8>)>,
}

impl HandedCopy {
    pub(crate) fn of(w: &Workload) -> HandedCopy {
        let chunks = crate::records::spec_chunks(&w.spec.to_json());
        let summary = w.summary(chunks.len() as u32);
        let mut records: Vec<(String, Vec<u8>)> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| (chunk_key(w.id, i), c))
            .collect();
        if let Ok(json) = serde_json::to_vec(&summary) {
            records.push((summary_key(w.id), json));
        }
        HandedCopy {
            owner: w.owner,
            id: w.id,
            epoch: w.epoch,
            records,
        }
    }
}

pub(crate) struct Replicas {
    by_owner: BTreeMap<NodeId, BTreeMap<String, Vec<u8>>>,
}

impl Replicas {
    /// One owner's records.
    pub(crate) fn of(owner: NodeId, records: Vec<(String, u64, Vec<u8>)>) -> Replicas {
        let records = records.into_iter().map(|(k, _, v)| (k, v)).collect();
        Replicas {
            by_owner: BTreeMap::from([(owner, records)]),
        }
    }

    /// Count `h`, a copy this node handed to its owner, as that owner's,
    /// unless the owner's own records hold it or a newer copy, with the
    /// whole spec behind it; answers whether they do (then `h` need not be
    /// remembered). A node may die right after taking a workload back, and
    /// the records of a dead node spread only by anti-entropy: without
    /// this, its standby would find nothing newer to adopt from until they
    /// arrived. Its summary alone is not enough: a standby that has the
    /// summary but not every spec chunk cannot adopt it either.
    pub(crate) fn remember(&mut self, h: &HandedCopy) -> bool {
        let records = self.by_owner.entry(h.owner).or_default();
        let summary = records
            .get(&summary_key(h.id))
            .and_then(|v| serde_json::from_slice::<WorkloadSummary>(v).ok())
            .filter(|s| s.owner == h.owner && s.epoch >= h.epoch);
        match summary {
            Some(s) if spec_in(records, &s).is_some() => true,
            // The owner's summary is here (maybe newer): fill in only the
            // chunks it lacks.
            Some(_) => {
                let summary = summary_key(h.id);
                for (k, v) in h.records.iter().filter(|(k, _)| *k != summary) {
                    records.entry(k.clone()).or_insert_with(|| v.clone());
                }
                false
            }
            None => {
                records.extend(h.records.iter().cloned());
                false
            }
        }
    }

    /// Every copy of every workload (each owner's summaries).
    pub(crate) fn copies(&self) -> Vec<WorkloadSummary> {
        let mut out = Vec::new();
        for (owner, records) in &self.by_owner {
            for (key, value) in records {
                if key.starts_with("wl/")
                    && !key.contains("/spec/")
                    && let Ok(s) = serde_json::from_slice::<WorkloadSummary>(value)
                    && s.owner == *owner
                {
                    out.push(s);
                }
            }
        }
        out
    }

    /// A copy's spec from its owner's chunks; `None` unless every chunk is
    /// there and the digest matches.
    pub(crate) fn spec(&self, s: &WorkloadSummary) -> Option<WorkloadSpec> {
        spec_in(self.by_owner.get(&s.owner)?, s)
    }
}

/// Copy `s`'s spec from its owner's `records`; `None` unless every chunk
/// is there and the digest matches.
fn spec_in(records: &BTreeMap<String, Vec<u8>>, s: &WorkloadSummary) -> Option<WorkloadSpec> {
    let mut json = Vec::new();
    for i in 0..s.spec_chunks as usize {
        json.extend_from_slice(records.get(&chunk_key(s.id, i))?);
    }
    let spec: WorkloadSpec = serde_json::from_slice(&json).ok()?;
    (spec.digest() == s.spec_digest).then_some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use locus_core::workload::SpecFormat;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 10])
    }

    #[test]
    fn a_handed_back_copy_counts_as_its_owners_until_its_records_hold_it() {
        let spec = WorkloadSpec::parse(
            "name = \"svc\"\nkind = \"process\"\nsource = \"/bin/sh\"\n",
            SpecFormat::Toml,
        )
        .unwrap();
        let (customer, provider) = (node(1), node(2));
        let mut old = Workload::new(WorkloadId([7; 8]), spec, customer, 1_000);
        old.epoch = 9;
        let mut back = old.clone();
        back.epoch = 11;
        // The customer's records still show its copy before the hand back.
        let records = vec![(
            summary_key(old.id),
            1,
            serde_json::to_vec(&old.summary(1)).unwrap(),
        )];
        let mut replicas = Replicas::of(customer, records);
        let handed = HandedCopy::of(&back);
        assert!(
            !replicas.remember(&handed),
            "its records do not hold it yet"
        );
        let copies = replicas.copies();
        assert_eq!(copies.len(), 1);
        assert_eq!((copies[0].owner, copies[0].epoch), (customer, 11));
        assert_eq!(
            replicas.spec(&copies[0]).map(|s| s.digest()),
            Some(back.spec.digest()),
            "a standby can adopt it from what it remembers"
        );
        // The customer's summary of that copy arrived, but not its spec:
        // still remembered, and still adoptable.
        let summary = (
            summary_key(back.id),
            2,
            serde_json::to_vec(&back.summary(1)).unwrap(),
        );
        let mut replicas = Replicas::of(customer, vec![summary.clone()]);
        assert!(!replicas.remember(&handed), "its spec is not here yet");
        let copies = replicas.copies();
        assert_eq!((copies.len(), copies[0].epoch), (1, 11));
        assert!(replicas.spec(&copies[0]).is_some());
        // Once the customer's own records hold that copy and its spec, it
        // is forgotten.
        let chunks = crate::records::spec_chunks(&back.spec.to_json());
        assert_eq!(chunks.len(), 1);
        let records = vec![summary, (chunk_key(back.id, 0), 2, chunks[0].clone())];
        assert!(Replicas::of(customer, records).remember(&handed));
        // A copy handed to a node this view has no records of still counts.
        let mut empty = Replicas::of(provider, Vec::new());
        assert!(!empty.remember(&handed));
        assert_eq!(empty.copies().len(), 1);
    }
}

//! What users ask of workloads through the API: submit (placed over the
//! cluster), list, locate, inspect, act (start, stop, kill), update,
//! remove. Each call is answered once the owned state is stored.

use super::*;
use crate::drive::{allocation, force_state};

impl Workloads {
    pub(crate) fn check_fits(
        &self,
        owned: &Owned,
        spec: &WorkloadSpec,
        except: Option<WorkloadId>,
    ) -> Result<(), WorkloadError> {
        if !self.inner.drivers.contains_key(&spec.kind) {
            return Err(WorkloadError::Conflict(format!(
                "this node has no {} driver",
                spec.kind
            )));
        }
        if owned.live() >= MAX_OWNED && except.is_none_or(|id| !owned.entries.contains_key(&id)) {
            return Err(WorkloadError::Conflict(format!(
                "this node already owns {MAX_OWNED} workloads"
            )));
        }
        let inv = self.inner.inventory.borrow().clone();
        let cap = crate::capacity::of(&inv);
        let used = allocation(owned.entries.values().filter(|e| Some(e.w.id) != except));
        let cpu = *spec.resources.cpu_millicores.get();
        let mem = spec.resources.memory_bytes();
        if used.cpu_millicores + cpu > cap.cpu_millicores {
            return Err(WorkloadError::Conflict(format!(
                "not enough cpu here: {cpu}m asked, {}m free",
                cap.cpu_millicores.saturating_sub(used.cpu_millicores)
            )));
        }
        if used.memory_bytes + mem > cap.memory_bytes {
            return Err(WorkloadError::Conflict(format!(
                "not enough memory here: {} MiB asked, {} MiB free",
                mem >> 20,
                cap.memory_bytes.saturating_sub(used.memory_bytes) >> 20
            )));
        }
        Ok(())
    }

    /// Submit a new workload: place it over the cluster and hand it to the
    /// chosen node (which may be this one). With no fitting node it stays
    /// pending here and is placed as soon as one fits.
    pub async fn submit(
        &self,
        spec: WorkloadSpec,
        dry_run: bool,
    ) -> Result<Submitted, WorkloadError> {
        spec.check()
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        let nodes = self.cluster().await;
        let copies = self.replicas(&nodes).await.copies();
        if let Some(c) = copies
            .iter()
            .find(|c| c.name == *spec.name.get() && !c.destroyed)
        {
            return Err(WorkloadError::Conflict(format!(
                "a workload named {:?} exists already ({} on node {})",
                c.name, c.id, c.owner
            )));
        }
        let id = new_id();
        let placement = locus_sched::place(id, &spec, &self.placeable(&nodes));
        if dry_run {
            return Ok(Submitted {
                workload: None,
                placement,
                dry_run,
            });
        }
        let now = now_ms();
        let mut w = Workload::new(id, spec, self.inner.me, now);
        match placement.chosen {
            Some(node) if node == self.inner.me => {
                let _ = w.transition(State::Scheduled, "placed on this node", now);
                let w = self.accept(Handover::of(&w)).await?;
                Ok(Submitted {
                    workload: Some(w),
                    placement,
                    dry_run,
                })
            }
            Some(node) => {
                let mut there = w.clone();
                there.owner = node;
                let _ = there.transition(
                    State::Scheduled,
                    format!("placed by node {}", self.inner.me),
                    now,
                );
                match self.handover(&nodes, node, &there).await {
                    Ok(w) => Ok(Submitted {
                        workload: Some(w),
                        placement,
                        dry_run,
                    }),
                    Err(e) => {
                        w.reason = format!("handover to {node} failed: {e}; retrying");
                        self.keep_pending(w.clone()).await?;
                        Ok(Submitted {
                            workload: Some(w),
                            placement,
                            dry_run,
                        })
                    }
                }
            }
            None => {
                w.reason = placement.why_none();
                self.keep_pending(w.clone()).await?;
                Ok(Submitted {
                    workload: Some(w),
                    placement,
                    dry_run,
                })
            }
        }
    }

    pub(crate) async fn keep_pending(&self, w: Workload) -> Result<(), WorkloadError> {
        let mut owned = self.inner.owned.lock().await;
        if owned.live() >= MAX_OWNED {
            return Err(WorkloadError::Conflict(format!(
                "this node already holds {MAX_OWNED} workloads"
            )));
        }
        let e = Entry::new(w, None);
        self.persist(&e).await?;
        owned.entries.insert(e.w.id, e);
        Ok(())
    }

    /// The node that owns workload `name_or_id` now (the newest copy of
    /// the cluster, destroyed ones aside), without reading any spec.
    pub async fn owner_of(&self, name_or_id: &str) -> Option<NodeId> {
        let nodes = self.all_nodes().await;
        let replicas = self.replicas(&nodes).await;
        let local = self
            .inner
            .owned
            .lock()
            .await
            .entries
            .values()
            .map(|e| e.w.summary(0))
            .collect::<Vec<_>>();
        replicas
            .copies()
            .into_iter()
            .chain(local)
            .filter(|c| c.name == name_or_id || c.id.to_string() == name_or_id)
            .max_by_key(|c| (c.epoch, c.owner))
            .filter(|c| !c.destroyed)
            .map(|c| c.owner)
    }

    /// Every workload of the cluster (the winning copy of each), with the
    /// node that owns it.
    pub async fn list(&self) -> Vec<WorkloadView> {
        let nodes = self.all_nodes().await;
        let replicas = self.replicas(&nodes).await;
        let copies = replicas.copies();
        let mut best: BTreeMap<WorkloadId, WorkloadSummary> = BTreeMap::new();
        for c in copies {
            match best.get(&c.id) {
                Some(b) if (b.epoch, b.owner) >= (c.epoch, c.owner) => {}
                _ => {
                    best.insert(c.id, c);
                }
            }
        }
        // Local entries not published yet still show.
        for e in self.inner.owned.lock().await.entries.values() {
            best.entry(e.w.id).or_insert_with(|| e.w.summary(0));
        }
        let listed: Vec<(WorkloadSummary, Option<WorkloadSpec>)> = best
            .into_values()
            .filter(|s| !s.destroyed)
            .map(|s| {
                let spec = (s.spec_chunks > 0).then(|| replicas.spec(&s)).flatten();
                (s, spec)
            })
            .collect();
        let sources: BTreeSet<locus_core::ArtifactId> = listed
            .iter()
            .filter_map(|(_, spec)| spec.as_ref())
            .filter_map(|spec| locus_core::ArtifactId::from_source(spec.source.get()))
            .filter_map(Result::ok)
            .collect();
        let holders = self.inner.artifacts.live_holders(&sources).await;
        let mut out = Vec::new();
        for (s, spec) in listed {
            let node = nodes.iter().find(|n| n.id == s.owner);
            let info = node.and_then(|n| n.info.as_ref());
            let spec_replicated = spec.is_some();
            let failover_ready = match &spec {
                None => false,
                Some(spec) => match locus_core::ArtifactId::from_source(spec.source.get()) {
                    None => true,
                    Some(Err(_)) => false,
                    Some(Ok(artifact)) => holders
                        .get(&artifact)
                        .is_some_and(|h| h.iter().any(|n| *n != s.owner)),
                },
            };
            out.push(WorkloadView {
                node_name: info.map(|i| i.name.clone()).unwrap_or_default(),
                site: info.map(|i| i.site.name.get().clone()).unwrap_or_default(),
                node_liveness: node.map_or(Liveness::Dead, |n| n.liveness),
                spec_replicated,
                failover_ready,
                summary: s,
            });
        }
        out
    }

    /// The spec of `owner`'s workload named `name` (or with that id), from
    /// the owner's records on the fabric; `None` until every chunk of it is
    /// here. What a node standing by for another reads to prepare.
    pub async fn spec_of(&self, owner: NodeId, name: &str) -> Option<WorkloadSpec> {
        let records = self.inner.fabric.records_of(owner).await.ok()?;
        let replicas = crate::reconcile::Replicas::of(owner, records);
        let copy = replicas
            .copies()
            .into_iter()
            .find(|c| c.owner == owner && (c.name == name || c.id.to_string() == name))?;
        replicas.spec(&copy)
    }

    /// Find a workload by id, id prefix or name.
    pub async fn locate(&self, query: &str) -> Result<Located, WorkloadError> {
        let all = self.list().await;
        let matches: Vec<&WorkloadView> = all
            .iter()
            .filter(|v| v.summary.id.to_string() == query || v.summary.name == query)
            .collect();
        let matches = if matches.is_empty() {
            all.iter()
                .filter(|v| query.len() >= 4 && v.summary.id.to_string().starts_with(query))
                .collect()
        } else {
            matches
        };
        let v = match matches.as_slice() {
            [] => return Err(WorkloadError::NotFound(query.to_owned())),
            [v] => *v,
            many => {
                return Err(WorkloadError::Invalid(format!(
                    "{query:?} matches {} workloads: {}",
                    many.len(),
                    many.iter()
                        .map(|v| v.summary.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let id = v.summary.id;
        if let Some(e) = self.inner.owned.lock().await.entries.get(&id) {
            return Ok(Located::Local(Box::new(e.w.clone())));
        }
        let nodes = self.all_nodes().await;
        let api_addr = nodes
            .iter()
            .find(|n| n.id == v.summary.owner)
            .and_then(|n| n.info.as_ref())
            .map(|i| i.api_addr.clone())
            .ok_or_else(|| WorkloadError::Unreachable {
                node: v.summary.owner.to_string(),
                reason: "its API address is unknown".to_owned(),
            })?;
        Ok(Located::Remote {
            id,
            owner: v.summary.owner,
            api_addr,
            tenant: v.summary.tenant.clone(),
        })
    }

    /// The full state of an owned workload.
    pub async fn get(&self, id: WorkloadId) -> Result<Workload, WorkloadError> {
        self.inner
            .owned
            .lock()
            .await
            .entries
            .get(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .map(|e| e.w.clone())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))
    }

    /// Power on, power off or force off an owned workload. Returns at once;
    /// the loop carries the change out.
    pub async fn act(&self, id: WorkloadId, verb: Verb) -> Result<Workload, WorkloadError> {
        let mut owned = self.inner.owned.lock().await;
        let e = owned
            .entries
            .get_mut(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
        match verb {
            Verb::Start => {
                e.w.desired = Desired::Running;
                e.not_before = None;
                if matches!(e.w.state, State::Stopped | State::Failed) {
                    e.w.restarts = 0;
                    let _ =
                        e.w.transition(State::Scheduled, "started by the user", now_ms());
                }
            }
            Verb::Stop | Verb::Kill => {
                e.w.desired = Desired::Stopped;
                if verb == Verb::Kill
                    && let (Some(inst), Some(d)) = (
                        e.instance.clone(),
                        self.inner.drivers.get(&e.w.spec.kind).cloned(),
                    )
                {
                    // Force off does not wait for the loop.
                    let exit = d.kill(&inst).await.ok();
                    let _ = d.remove(&inst).await;
                    e.instance = None;
                    let now = now_ms();
                    if e.w.state == State::Running || e.w.state == State::Starting {
                        let _ = e.w.transition(State::Stopping, "killed by the user", now);
                    }
                    e.w.exit_code = exit.and_then(|x| x.code);
                    let _ = e.w.transition(State::Stopped, "killed by the user", now);
                } else if matches!(e.w.state, State::Pending | State::Scheduled) {
                    let _ = e.w.transition(
                        State::Stopped,
                        "stopped by the user before it started",
                        now_ms(),
                    );
                }
            }
        }
        self.persist(e).await?;
        let w = e.w.clone();
        drop(owned);
        self.wake();
        Ok(w)
    }

    /// Change resources or environment; a running workload restarts with
    /// the new spec.
    pub async fn update(
        &self,
        id: WorkloadId,
        update: WorkloadUpdate,
    ) -> Result<Workload, WorkloadError> {
        let mut owned = self.inner.owned.lock().await;
        let e = owned
            .entries
            .get(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
        let mut spec = e.w.spec.clone();
        if let Some(r) = update.resources {
            spec.resources = r;
        }
        if let Some(env) = update.env {
            spec.env.extend(env);
        }
        spec.check()
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        self.check_fits(&owned, &spec, Some(id))?;
        let e = owned
            .entries
            .get_mut(&id)
            .filter(|e| e.w.destroyed_unix_ms.is_none())
            .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
        e.w.spec = spec;
        e.restart = e.w.state.is_active();
        e.w.reason = "updated".to_owned();
        self.persist(e).await?;
        let w = e.w.clone();
        drop(owned);
        self.wake();
        Ok(w)
    }

    /// Destroy a workload: only when it is not running, unless `force`
    /// (kill, then remove).
    pub async fn remove(&self, id: WorkloadId, force: bool) -> Result<(), WorkloadError> {
        let (inst, driver) = {
            let owned = self.inner.owned.lock().await;
            let e = owned
                .entries
                .get(&id)
                .filter(|e| e.w.destroyed_unix_ms.is_none())
                .ok_or_else(|| WorkloadError::NotFound(id.to_string()))?;
            if (e.w.state.is_active() || e.busy) && !force {
                return Err(WorkloadError::Conflict(format!(
                    "workload {} is {}; stop it first, or destroy it with --force",
                    e.w.spec.name.get(),
                    e.w.state
                )));
            }
            (
                e.instance.clone(),
                self.inner.drivers.get(&e.w.spec.kind).cloned(),
            )
        };
        if let (Some(inst), Some(d)) = (inst, driver) {
            let _ = d.kill(&inst).await;
            d.remove(&inst)
                .await
                .map_err(|e| WorkloadError::Conflict(format!("cannot remove the instance: {e}")))?;
        }
        // Keep a marker one epoch above every copy: a stale copy on a node
        // that was away yields to it instead of coming back.
        {
            let mut owned = self.inner.owned.lock().await;
            if let Some(e) = owned.entries.get_mut(&id) {
                let now = now_ms();
                e.instance = None;
                e.w.desired = Desired::Stopped;
                e.w.epoch += 1;
                e.w.destroyed_unix_ms = Some(now);
                force_state(&mut e.w, State::Stopped, "destroyed", now);
                self.persist(e).await?;
            }
        }
        let _ = std::fs::remove_dir_all(self.dir_of(id));
        self.wake();
        Ok(())
    }
}

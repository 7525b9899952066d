//! Driving owned workloads: compare each one's desired state with its
//! state, start one driver operation per workload as its own task, and
//! record the outcome; re-adopt instances that survived an agent restart.

use super::*;

impl Workloads {
    /// Start the driver operations the owned workloads need.
    pub(crate) async fn drive(&self) -> Result<(), WorkloadError> {
        // Measuring what runs is one more operation the loop starts, not
        // one it waits on.
        self.sample_usage_if_due();
        let held = Instant::now() < self.inner.hold_until;
        let mut expired = Vec::new();
        let mut awaiting = Vec::new();
        let mut owned = self.inner.owned.lock().await;
        let ids: Vec<WorkloadId> = owned.entries.keys().copied().collect();
        for id in ids {
            let Some(e) = owned.entries.get_mut(&id) else {
                continue;
            };
            if e.busy {
                continue;
            }
            if let Some(at) = e.w.destroyed_unix_ms {
                if now_ms().saturating_sub(at) > DESTROYED_RETENTION_MS {
                    expired.push(id);
                }
                continue;
            }
            let Some(driver) = self.inner.drivers.get(&e.w.spec.kind).cloned() else {
                if e.w.state != State::Failed && e.w.state != State::Pending {
                    let _ = e.w.transition(
                        State::Failed,
                        format!("this node has no {} driver", e.w.spec.kind),
                        now_ms(),
                    );
                    self.persist(e).await?;
                }
                continue;
            };
            if e.w.state == State::Pending
                && let Some(artifact) = e.awaiting
            {
                if e.not_before.is_none_or(|t| Instant::now() >= t) {
                    awaiting.push((id, artifact));
                }
                continue;
            }
            let op = match (e.w.desired, e.w.state) {
                (Desired::Running, State::Running) if e.restart => Some(Op::Restart),
                (Desired::Running, State::Running) => Some(Op::Observe),
                (Desired::Running, State::Scheduled) if !held => Some(Op::Start),
                (Desired::Running, State::Stopped | State::Failed) => {
                    let again = match e.w.spec.restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => e.w.state == State::Failed,
                        RestartPolicy::Never => false,
                    };
                    let due = e.not_before.is_none_or(|t| Instant::now() >= t);
                    // Only restart what ended on its own (a user stop sets
                    // desired = stopped).
                    (again && due && !held).then_some(Op::Start)
                }
                (Desired::Stopped, State::Running | State::Starting) => Some(Op::Stop),
                // In motion with no operation under way (a crash between the
                // two): look at what the driver holds.
                (_, State::Starting | State::Stopping) => Some(Op::Observe),
                _ => None,
            };
            let Some(op) = op else { continue };
            if op == Op::Observe {
                // Cheap: done inline.
                let observed = match &e.instance {
                    Some(inst) => driver.observe(inst).await,
                    None => Observed::Gone,
                };
                let exit = match observed {
                    Observed::Running => {
                        if e.w.state != State::Running {
                            force_state(&mut e.w, State::Running, "running", now_ms());
                            self.persist(e).await?;
                        }
                        continue;
                    }
                    Observed::Exited(exit) => exit,
                    Observed::Gone => Exit {
                        code: None,
                        failed: true,
                        reason: "the instance vanished".to_owned(),
                    },
                };
                self.finish(e, exit);
                self.persist(e).await?;
                continue;
            }
            e.busy = true;
            let now = now_ms();
            match op {
                Op::Start => {
                    if e.w.state != State::Scheduled {
                        e.w.restarts += 1;
                        let _ =
                            e.w.transition(State::Scheduled, "restarting by policy", now);
                    }
                    let _ = e.w.transition(State::Starting, "starting", now);
                }
                Op::Stop | Op::Restart => {
                    let _ = e.w.transition(
                        State::Stopping,
                        if op == Op::Restart {
                            "restarting with the updated spec"
                        } else {
                            "stopping"
                        },
                        now,
                    );
                }
                Op::Observe => {}
            }
            self.persist(e).await?;
            let run = Run {
                id,
                epoch: e.w.epoch,
                spec: e.w.spec.clone(),
                dir: self.dir_of(id),
                log_limit_bytes: LOG_LIMIT_BYTES,
            };
            let instance = e.instance.clone();
            let this = self.clone();
            tokio::spawn(async move {
                let result = this.operate(op, &*driver, run, instance).await;
                this.complete(id, op, result).await;
            });
        }
        // Allocation follows what is held.
        let alloc = allocation(owned.entries.values());
        self.inner.artifacts.set_in_use(
            owned
                .entries
                .values()
                .filter_map(|e| locus_core::ArtifactId::from_source(e.w.spec.source.get()))
                .filter_map(Result::ok)
                .collect(),
        );
        drop(owned);
        for id in expired {
            self.drop_owned(id).await?;
        }
        self.look_for_holders(awaiting).await?;
        self.inner.capacity.set_usage(alloc, self.kinds());
        let inv = self.inner.inventory.borrow().clone();
        self.inner.capacity.publish(&inv).await;
        Ok(())
    }

    /// Workloads pending for their source artifact: schedule those whose
    /// artifact has a live holder again; look again later for the others.
    async fn look_for_holders(
        &self,
        awaiting: Vec<(WorkloadId, locus_core::ArtifactId)>,
    ) -> Result<(), WorkloadError> {
        let wanted: BTreeSet<locus_core::ArtifactId> = awaiting.iter().map(|(_, a)| *a).collect();
        let holders = self.inner.artifacts.live_holders(&wanted).await;
        for (id, artifact) in awaiting {
            let back = holders.get(&artifact).is_some_and(|h| !h.is_empty());
            let mut owned = self.inner.owned.lock().await;
            let Some(e) = owned.entries.get_mut(&id) else {
                continue;
            };
            if e.awaiting != Some(artifact) || e.w.state != State::Pending {
                continue;
            }
            if back {
                e.awaiting = None;
                e.not_before = None;
                let _ = e.w.transition(
                    State::Scheduled,
                    format!("artifact {artifact} has a live holder again"),
                    now_ms(),
                );
                self.persist(e).await?;
                drop(owned);
                self.wake();
            } else {
                e.not_before = Some(Instant::now() + AWAIT_RETRY);
            }
        }
        Ok(())
    }

    pub(crate) async fn operate(
        &self,
        op: Op,
        driver: &dyn Driver,
        run: Run,
        instance: Option<Instance>,
    ) -> OpResult {
        let timeout = Duration::from_secs(u64::from(*run.spec.stop_timeout_secs.get()));
        if matches!(op, Op::Stop | Op::Restart)
            && let Some(inst) = &instance
        {
            let exit = driver.stop(inst, timeout).await;
            let _ = driver.remove(inst).await;
            if op == Op::Stop {
                return OpResult::Stopped(exit.map_err(|e| e.to_string()));
            }
        }
        if matches!(op, Op::Start | Op::Restart) {
            if let Err(e) = std::fs::create_dir_all(run.files_dir()) {
                return OpResult::Started(Err(format!(
                    "cannot create {}: {e}",
                    run.files_dir().display()
                )));
            }
            let mut run = run;
            if let Some(parsed) = locus_core::ArtifactId::from_source(run.spec.source.get()) {
                match self.artifact_source(parsed).await {
                    Ok(source) => run.spec.source = source,
                    Err(SourceError::NoHolder(id)) => return OpResult::Awaiting(id),
                    Err(SourceError::Other(e)) => return OpResult::Started(Err(e)),
                }
            }
            return OpResult::Started(driver.start(&run).await.map_err(|e| e.to_string()));
        }
        OpResult::Stopped(Ok(Exit {
            code: None,
            failed: false,
            reason: "stopped".to_owned(),
        }))
    }

    /// Fetch (and verify) an artifact source; the local path to start from.
    pub(crate) async fn artifact_source(
        &self,
        parsed: Result<locus_core::ArtifactId, locus_core::artifact::ArtifactIdError>,
    ) -> Result<locus_core::workload::Source, SourceError> {
        let id = parsed.map_err(|e| SourceError::Other(e.to_string()))?;
        let path = self.inner.artifacts.local_path(id).await?;
        locus_core::workload::Source::try_from(path.display().to_string())
            .map_err(SourceError::Other)
    }

    pub(crate) async fn complete(&self, id: WorkloadId, op: Op, result: OpResult) {
        let mut owned = self.inner.owned.lock().await;
        let Some(e) = owned.entries.get_mut(&id) else {
            return;
        };
        e.busy = false;
        let now = now_ms();
        match result {
            OpResult::Started(Ok(inst)) => {
                e.instance = Some(inst);
                e.restart = false;
                e.w.exit_code = None;
                if e.w.state == State::Stopping {
                    // A restart: the old run ended before the new one began.
                    let _ = e.w.transition(State::Stopped, "stopped to restart", now);
                }
                if e.w.state != State::Starting {
                    let _ = e.w.transition(State::Starting, "starting", now);
                }
                let _ = e.w.transition(
                    State::Running,
                    format!("running on node {}", self.inner.me),
                    now,
                );
            }
            OpResult::Started(Err(reason)) => {
                e.instance = None;
                let _ =
                    e.w.transition(State::Failed, format!("could not start: {reason}"), now);
                e.not_before = Some(Instant::now() + backoff(e.w.restarts));
            }
            OpResult::Stopped(Ok(exit)) => {
                e.instance = None;
                e.w.exit_code = exit.code;
                let _ =
                    e.w.transition(State::Stopped, format!("stopped ({})", exit.reason), now);
            }
            OpResult::Stopped(Err(reason)) => {
                let _ =
                    e.w.transition(State::Failed, format!("could not stop: {reason}"), now);
            }
            OpResult::Awaiting(artifact) => {
                e.instance = None;
                force_state(&mut e.w, State::Pending, awaiting_reason(&artifact), now);
                e.awaiting = Some(artifact);
                e.not_before = Some(Instant::now() + AWAIT_RETRY);
            }
        }
        let _ = op;
        if let Err(err) = self.persist(e).await {
            tracing::error!(workload = %id, error = %err, "cannot persist a workload change");
        }
        drop(owned);
        self.wake();
    }

    /// Record how a run ended, and when it may restart.
    pub(crate) fn finish(&self, e: &mut Entry, exit: Exit) {
        let now = now_ms();
        e.w.exit_code = exit.code;
        let to = if exit.failed {
            State::Failed
        } else {
            State::Stopped
        };
        let _ = e.w.transition(to, exit.reason, now);
        e.not_before = Some(Instant::now() + backoff(e.w.restarts));
        if let (Some(inst), Some(d)) = (
            e.instance.take(),
            self.inner.drivers.get(&e.w.spec.kind).cloned(),
        ) {
            tokio::spawn(async move {
                let _ = d.remove(&inst).await;
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Start,
    Stop,
    Restart,
    Observe,
}

pub(crate) enum OpResult {
    Started(Result<Instance, String>),
    Stopped(Result<Exit, String>),
    /// Not started: no live node holds this source artifact.
    Awaiting(locus_core::ArtifactId),
}

/// How often a workload pending for its source artifact looks for a holder.
pub(crate) const AWAIT_RETRY: Duration = Duration::from_secs(1);

/// The reason a workload shows while it waits for its source artifact.
pub fn awaiting_reason(id: &locus_core::ArtifactId) -> String {
    format!("waiting for artifact {id}: no live holder")
}

/// Wait before the `restarts`-th automatic restart: 0.5 s doubling, at most
/// [`MAX_BACKOFF`].
pub(crate) fn backoff(restarts: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(restarts.min(6))).min(MAX_BACKOFF)
}

/// Resources held by the workloads that hold any.
pub(crate) fn allocation<'a>(entries: impl Iterator<Item = &'a Entry>) -> Allocation {
    let mut a = Allocation::default();
    for e in entries {
        if matches!(
            e.w.state,
            State::Scheduled | State::Starting | State::Running | State::Stopping
        ) {
            a.cpu_millicores += *e.w.spec.resources.cpu_millicores.get();
            a.memory_bytes += e.w.spec.resources.memory_bytes();
            a.devices
                .extend(e.w.spec.devices.iter().map(|d| d.get().clone()));
        }
    }
    a
}

/// After a restart of the agent: find out what became of a stored
/// workload's instance.
pub(crate) async fn adopt_instance(drivers: &BTreeMap<Kind, Arc<dyn Driver>>, e: &mut Entry) {
    let now = now_ms();
    let Some(driver) = drivers.get(&e.w.spec.kind) else {
        return;
    };
    let Some(inst) = e.instance.clone() else {
        if matches!(
            e.w.state,
            State::Starting | State::Running | State::Stopping
        ) {
            // Died with the previous run before a handle was stored.
            force_state(&mut e.w, State::Scheduled, "the agent restarted", now);
        }
        return;
    };
    match driver.observe(&inst).await {
        Observed::Running if inst.epoch == e.w.epoch => {
            tracing::info!(workload = %e.w.id, handle = %inst.handle, "re-adopted a running instance");
            force_state(
                &mut e.w,
                State::Running,
                "re-adopted after an agent restart",
                now,
            );
        }
        Observed::Running => {
            let _ = driver.kill(&inst).await;
            let _ = driver.remove(&inst).await;
            e.instance = None;
            force_state(
                &mut e.w,
                State::Scheduled,
                "stale instance removed after an agent restart",
                now,
            );
        }
        Observed::Exited(exit) => {
            let _ = driver.remove(&inst).await;
            e.instance = None;
            e.w.exit_code = exit.code;
            let to = if exit.failed {
                State::Failed
            } else {
                State::Stopped
            };
            force_state(&mut e.w, to, exit.reason, now);
        }
        Observed::Gone => {
            e.instance = None;
            if e.w.desired == Desired::Running {
                force_state(
                    &mut e.w,
                    State::Scheduled,
                    "lost with the previous agent run",
                    now,
                );
            } else {
                force_state(
                    &mut e.w,
                    State::Stopped,
                    "lost with the previous agent run",
                    now,
                );
            }
        }
    }
}

/// Set a state after a restart, through legal steps where needed.
pub(crate) fn force_state(w: &mut Workload, to: State, reason: impl Into<String>, now: u64) {
    let reason = reason.into();
    if w.transition(to, reason.clone(), now).is_err() {
        for via in [
            State::Stopping,
            State::Stopped,
            State::Scheduled,
            State::Starting,
        ] {
            if w.state.can_become(via) && via.can_become(to) {
                let _ = w.transition(via, reason.clone(), now);
                let _ = w.transition(to, reason.clone(), now);
                return;
            }
        }
        tracing::warn!(workload = %w.id, from = %w.state, %to, "no legal path; state left as it was");
    }
}

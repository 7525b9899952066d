//! Fetching an artifact from its holders: rank them nearest first, cut what
//! is missing into spans, ask up to `FETCH_PEERS` holders for at most
//! `PARALLEL_SPANS` spans at a time, and verify every 16 KiB group as it is
//! written; a peer that sends a bad group is dropped for this fetch.

use super::*;

impl Artifacts {
    /// Make sure the artifact is held here, fetching it from peers if not;
    /// progress can be followed on the returned channel. A second call for
    /// an artifact already being fetched joins the first.
    pub async fn fetch(&self, id: ArtifactId) -> watch::Receiver<FetchProgress> {
        let mut fetches = self.inner.fetches.lock().await;
        if let Some(rx) = fetches.get(&id)
            && rx.borrow().done.is_none()
        {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(FetchProgress {
            cid: id,
            size: 0,
            have: 0,
            done: None,
        });
        fetches.insert(id, rx.clone());
        drop(fetches);
        let this = self.clone();
        tokio::spawn(async move {
            let end = match this.fetch_now(id, &tx).await {
                Ok(r) => {
                    this.inner
                        .metrics
                        .artifact_fetches
                        .with_label_values(&["ok"])
                        .inc();
                    FetchEnd::Ok(r)
                }
                Err(e) => {
                    this.inner
                        .metrics
                        .artifact_fetches
                        .with_label_values(&["failed"])
                        .inc();
                    tracing::warn!(artifact = %id, error = %e, "fetch failed");
                    let code = match e {
                        ArtifactsError::NoHolder(_) => "no_holder",
                        ArtifactsError::Budget { .. } => "over_budget",
                        _ => "fetch_failed",
                    };
                    FetchEnd::Failed {
                        code: code.to_owned(),
                        message: e.to_string(),
                    }
                }
            };
            tx.send_modify(|p| p.done = Some(end));
            this.inner.fetches.lock().await.remove(&id);
        });
        rx
    }

    /// Fetch and wait for the end.
    pub async fn fetch_and_wait(&self, id: ArtifactId) -> Result<FetchReport, ArtifactsError> {
        let mut rx = self.fetch(id).await;
        loop {
            if let Some(end) = rx.borrow_and_update().done.clone() {
                return match end {
                    FetchEnd::Ok(r) => Ok(r),
                    FetchEnd::Failed { code, .. } if code == "no_holder" => {
                        Err(ArtifactsError::NoHolder(id))
                    }
                    FetchEnd::Failed { message, .. } => Err(ArtifactsError::Transfer {
                        id,
                        reason: message,
                    }),
                };
            }
            if rx.changed().await.is_err() {
                return Err(ArtifactsError::Transfer {
                    id,
                    reason: "the fetch stopped".to_owned(),
                });
            }
        }
    }

    pub(crate) async fn fetch_now(
        &self,
        id: ArtifactId,
        progress: &watch::Sender<FetchProgress>,
    ) -> Result<FetchReport, ArtifactsError> {
        let started = Instant::now();
        if let Some(size) = self.inner.blobs.size(&id) {
            let _ = self
                .inner
                .store
                .touch_artifact(id.to_string(), now_ms())
                .await;
            return Ok(FetchReport {
                cid: id,
                size,
                already_local: true,
                fetched_bytes: 0,
                resumed_bytes: 0,
                corrupt_chunks: 0,
                elapsed_ms: 0,
                peers: Vec::new(),
            });
        }
        // A holder record takes a moment to spread: give a fresh artifact
        // that moment before saying nobody holds it.
        let deadline = Instant::now() + HOLDER_WAIT;
        let (nodes, held) = loop {
            let nodes = self.cluster().await;
            let mut holders = self.holders_in(&nodes).await;
            if let Some(h) = holders.remove(&id) {
                break (nodes, h);
            }
            if Instant::now() >= deadline {
                return Err(ArtifactsError::NoHolder(id));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let held = &held;
        let size = held.size;
        let me = nodes.iter().find(|n| n.is_self).cloned();
        let candidates: Vec<NodeId> = held
            .nodes
            .keys()
            .copied()
            .filter(|n| *n != self.inner.me)
            .collect();
        let order = match &me {
            Some(me) => locus_sched::nearest_first(me, &nodes, &candidates),
            None => candidates,
        };
        let mut peers: Vec<Peer> = order
            .into_iter()
            .filter_map(|n| {
                let api = held.nodes.get(&n)?.clone();
                Some(Peer {
                    node: n,
                    api,
                    bytes: Arc::new(AtomicU64::new(0)),
                    dropped: None,
                    failures: 0,
                })
            })
            .collect();
        if peers.is_empty() {
            return Err(ArtifactsError::NoHolder(id));
        }
        self.make_room(size).await?;
        let blobs = self.inner.blobs.clone();
        let partial = blocking(move || blobs.partial(id, size)).await??;
        let p2 = partial.clone();
        let gaps = blocking(move || p2.missing()).await??;
        let missing: u64 = gaps.iter().map(|r| r.end - r.start).sum();
        let resumed = size - missing;
        if resumed > 0 {
            tracing::info!(artifact = %id, resumed, size, "resuming a fetch");
        }
        progress.send_modify(|p| {
            p.size = size;
            p.have = resumed;
        });
        let mut queue: VecDeque<Range<u64>> = gaps
            .into_iter()
            .flat_map(|g| spans(g, SPAN_BYTES))
            .collect();
        let got = Arc::new(AtomicU64::new(0));
        let mut corrupt = 0u64;
        let mut failures = 0u32;
        let mut next_peer = 0usize;
        let mut running = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            while running.len() < PARALLEL_SPANS
                && let Some(span) = queue.pop_front()
            {
                let usable: Vec<usize> = (0..peers.len())
                    .filter(|i| peers[*i].dropped.is_none())
                    .take(FETCH_PEERS)
                    .collect();
                let Some(&pi) = usable.get(next_peer % usable.len().max(1)) else {
                    queue.push_front(span);
                    break;
                };
                next_peer += 1;
                let peer = &peers[pi];
                let job = SpanJob {
                    http: self.inner.http.clone(),
                    signer: self.inner.signer.clone(),
                    api: peer.api.clone(),
                    id,
                    span,
                    partial: partial.clone(),
                    got: got.clone(),
                    peer_bytes: peer.bytes.clone(),
                    metrics: self.inner.metrics.clone(),
                };
                running.spawn(async move { (pi, job.span.clone(), job.run().await) });
            }
            if running.is_empty() {
                if queue.is_empty() {
                    break;
                }
                let reasons: Vec<String> = peers
                    .iter()
                    .map(|p| format!("{}: {}", p.node, p.dropped.as_deref().unwrap_or("?")))
                    .collect();
                return Err(ArtifactsError::Transfer {
                    id,
                    reason: format!("every holder was dropped ({})", reasons.join("; ")),
                });
            }
            tokio::select! {
                done = running.join_next() => {
                    let Some(done) = done else { continue };
                    let (pi, span, result) = done.map_err(|e| ArtifactsError::Transfer { id, reason: format!("a span task failed: {e}") })?;
                    match result {
                        Ok(()) => {}
                        Err(SpanFailure::Decode(e)) => {
                            let rest = e.verified_to..span.end;
                            if !rest.is_empty() {
                                queue.push_front(rest);
                            }
                            match e.failure {
                                DecodeFailure::Corrupt { offset } => {
                                    corrupt += 1;
                                    let peer = &mut peers[pi];
                                    self.inner.metrics.artifact_corrupt_chunks.with_label_values(&[&peer.node.to_string()]).inc();
                                    tracing::warn!(artifact = %id, peer = %peer.node, offset, "a peer sent a chunk that does not verify; dropping it");
                                    peer.dropped = Some(format!("sent a corrupt chunk at byte {offset}"));
                                }
                                DecodeFailure::Interrupted(why) => {
                                    failures += 1;
                                    let peer = &mut peers[pi];
                                    peer.failures += 1;
                                    tracing::debug!(artifact = %id, peer = %peer.node, error = %why, "span interrupted");
                                    if peer.failures >= 3 {
                                        peer.dropped = Some(format!("failed 3 times, last: {why}"));
                                    }
                                }
                            }
                        }
                        Err(SpanFailure::Request(why)) => {
                            failures += 1;
                            queue.push_front(span);
                            let peer = &mut peers[pi];
                            peer.failures += 1;
                            if peer.failures >= 3 {
                                peer.dropped = Some(format!("failed 3 times, last: {why}"));
                            }
                        }
                    }
                    if failures > MAX_SPAN_FAILURES {
                        return Err(ArtifactsError::Transfer { id, reason: format!("{failures} span requests failed") });
                    }
                    progress.send_modify(|p| p.have = resumed + got.load(Ordering::Relaxed));
                }
                _ = tick.tick() => {
                    progress.send_modify(|p| p.have = resumed + got.load(Ordering::Relaxed));
                }
            }
        }
        let blobs = self.inner.blobs.clone();
        blocking(move || blobs.finish_unchecked(partial)).await??;
        let now = now_ms();
        self.inner
            .store
            .put_artifact(StoredArtifact {
                cid: id.to_string(),
                size,
                name: held.name.clone(),
                pinned: false,
                replicas: held.replicas,
                added_at_ms: now,
                used_at_ms: now,
                tenants: held.tenants.clone(),
            })
            .await?;
        self.publish().await;
        let fetched = got.load(Ordering::Relaxed);
        tracing::info!(artifact = %id, size, fetched, resumed, corrupt, "artifact fetched");
        Ok(FetchReport {
            cid: id,
            size,
            already_local: false,
            fetched_bytes: fetched,
            resumed_bytes: resumed,
            corrupt_chunks: corrupt,
            elapsed_ms: started.elapsed().as_millis() as u64,
            peers: peers
                .iter()
                .map(|p| PeerReport {
                    node: p.node,
                    bytes: p.bytes.load(Ordering::Relaxed),
                    dropped: p.dropped.clone(),
                })
                .collect(),
        })
    }
}

struct Peer {
    node: NodeId,
    api: String,
    bytes: Arc<AtomicU64>,
    dropped: Option<String>,
    failures: u32,
}

enum SpanFailure {
    Request(String),
    Decode(crate::SpanError),
}

/// One span asked of one peer.
struct SpanJob {
    http: reqwest::Client,
    signer: locus_core::Signer,
    api: String,
    id: ArtifactId,
    span: Range<u64>,
    partial: Partial,
    got: Arc<AtomicU64>,
    peer_bytes: Arc<AtomicU64>,
    metrics: Arc<ArtifactMetrics>,
}

impl SpanJob {
    async fn run(self) -> Result<(), SpanFailure> {
        let url = format!(
            "http://{}/api/v1/artifacts/{}/bao?start={}&end={}",
            self.api, self.id, self.span.start, self.span.end
        );
        let empty = *blake3::hash(b"").as_bytes();
        let resp = super::signed(
            self.signer.as_ref(),
            self.http.get(&url),
            "GET",
            &url,
            empty,
        )
        .send()
        .await
        .map_err(|e| SpanFailure::Request(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(SpanFailure::Request(format!(
                "{} answered {}",
                self.api,
                resp.status()
            )));
        }
        let (tx, reader) = stream_reader();
        let forward = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let item = chunk.map_err(io::Error::other);
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        let (partial, span) = (self.partial, self.span);
        let (got, peer_bytes, metrics) = (self.got, self.peer_bytes, self.metrics);
        let result = tokio::task::spawn_blocking(move || {
            partial.decode(span, reader, &mut |n| {
                got.fetch_add(n, Ordering::Relaxed);
                peer_bytes.fetch_add(n, Ordering::Relaxed);
                metrics.artifact_fetched_bytes.inc_by(n);
            })
        })
        .await
        .map_err(|e| SpanFailure::Request(format!("decoder failed: {e}")))?;
        forward.abort();
        result.map_err(SpanFailure::Decode)
    }
}

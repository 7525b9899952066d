//! Handing a workload to another node, and taking one handed here: the
//! receiver stores it before it answers, the sender forgets it only then.

use super::*;

impl Workloads {
    /// Send a workload to the node that will own it.
    pub(crate) async fn handover(
        &self,
        nodes: &[ClusterNode],
        to: NodeId,
        w: &Workload,
    ) -> Result<Workload, WorkloadError> {
        let api = nodes
            .iter()
            .find(|n| n.id == to)
            .and_then(|n| n.info.as_ref())
            .map(|i| i.api_addr.clone())
            .ok_or_else(|| WorkloadError::Unreachable {
                node: to.to_string(),
                reason: "its API address is unknown".to_owned(),
            })?;
        let unreachable = |reason: String| WorkloadError::Unreachable {
            node: to.to_string(),
            reason,
        };
        const PATH: &str = "/api/v1/workloads/handover";
        let body = serde_json::to_vec(&Handover::of(w))
            .map_err(|e| unreachable(format!("cannot encode the handover: {e}")))?;
        let mut req = self
            .inner
            .http
            .post(format!("http://{api}{PATH}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in self.inner.signer.sign("POST", PATH, &body) {
            req = req.header(name, value);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(unreachable(format!("{status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| unreachable(format!("bad answer: {e}")))
    }

    /// Accept a workload handed over by another node (or placed here by a
    /// submission on another node). Refused when it does not fit here.
    pub async fn accept(&self, handed: Handover) -> Result<Workload, WorkloadError> {
        if handed.owner != self.inner.me {
            return Err(WorkloadError::Conflict(format!(
                "the workload is addressed to node {}, this is node {}",
                handed.owner, self.inner.me
            )));
        }
        if handed.epoch == 0 || handed.epoch > MAX_EPOCH {
            return Err(WorkloadError::Invalid(format!(
                "epoch {} is out of range 1..={MAX_EPOCH}",
                handed.epoch
            )));
        }
        handed
            .spec
            .check()
            .map_err(|e| WorkloadError::Conflict(e.to_string()))?;
        // It starts here from scratch: only the id, the spec and the epoch
        // come from the sender.
        let now = now_ms();
        let mut w = Workload::new(handed.id, handed.spec, self.inner.me, now);
        w.epoch = handed.epoch;
        let _ = w.transition(State::Scheduled, handed_reason(&handed.reason), now);
        let nodes = self.cluster().await;
        if let Some(c) = self
            .replicas(&nodes)
            .await
            .copies()
            .iter()
            .find(|c| c.name == *w.spec.name.get() && c.id != w.id && !c.destroyed)
        {
            return Err(WorkloadError::Conflict(format!(
                "a workload named {:?} exists already ({} on node {})",
                c.name, c.id, c.owner
            )));
        }
        let mut owned = self.inner.owned.lock().await;
        if let Some(e) = owned.entries.get(&w.id)
            && e.w.epoch >= w.epoch
        {
            return Ok(e.w.clone());
        }
        self.check_fits(&owned, &w.spec, Some(w.id))?;
        let e = Entry::new(w.clone(), None);
        self.persist(&e).await?;
        owned.entries.insert(w.id, e);
        drop(owned);
        self.wake();
        Ok(w)
    }
}

/// The reason a handed-over workload is scheduled with: the sender's, when
/// it says where the workload was placed from (bounded, no control
/// characters).
fn handed_reason(sender: &str) -> String {
    let clean: String = sender
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if clean.starts_with("placed") {
        clean
    } else {
        "handed over".to_owned()
    }
}

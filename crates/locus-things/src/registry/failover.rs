//! Failover of things: when a thing's manager dies, one node takes it over
//! — the standby a contract names (once the death is witnessed), else the
//! live node `locus_sched::thing_adopter` picks by the thing's name — and
//! publishes it at a newer generation, so MQTT logins are accepted there
//! and the bootstrap server points LwM2M clients there. A thing managed by
//! a workload goes where that workload runs now (after its failover or
//! hand back). A manager that returns yields to the newer generation; a
//! provider gives a customer's things back once the customer is back.

use std::collections::BTreeMap;
use std::sync::Arc;

use locus_core::NodeId;
use locus_core::cluster::{ClusterNode, Liveness};
use locus_core::thing::Thing;

use super::{MOVED_MEMORY, ThingEvent, Things, generations_in, things_in};

/// Period of the failover pass.
pub const FAILOVER_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// What contracts between orgs say about things: the node standing by to
/// take one over, and the customer a provider gives one back to. The agent
/// implements it over the market.
pub trait ThingStandbys: Send + Sync + 'static {
    /// The standby of `thing` managed by `manager`, if a contract in force
    /// names one, and whether the manager's death is witnessed.
    fn standby(&self, manager: NodeId, thing: &str) -> Option<locus_sched::Standby>;
    /// The customer to give `thing` (managed here) back to, once back.
    fn hand_back(&self, thing: &str) -> Option<NodeId>;
}

/// Where the workloads that manage things run now. The agent implements it
/// over the workloads.
#[async_trait::async_trait]
pub trait WorkloadHomes: Send + Sync + 'static {
    /// The node that owns workload `workload` (a name or an id) now.
    async fn home_of(&self, workload: &str) -> Option<NodeId>;
}

/// No contracts: the usual successor takes a dead manager's things.
pub struct NoThingStandbys;

impl ThingStandbys for NoThingStandbys {
    fn standby(&self, _: NodeId, _: &str) -> Option<locus_sched::Standby> {
        None
    }
    fn hand_back(&self, _: &str) -> Option<NodeId> {
        None
    }
}

impl Things {
    /// Run the failover pass every [`FAILOVER_TICK`] until aborted.
    pub fn spawn_failover(
        &self,
        standbys: Arc<dyn ThingStandbys>,
        homes: Arc<dyn WorkloadHomes>,
        peers: Arc<dyn locus_core::PeerTrust>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FAILOVER_TICK).await;
                me.failover_pass(standbys.as_ref(), homes.as_ref(), peers.as_ref())
                    .await;
            }
        })
    }

    /// One pass: adopt the things of dead managers this node succeeds,
    /// yield the things a newer generation replaced, give back the things
    /// a customer may have again, and send a thing after the workload that
    /// manages it when that workload runs elsewhere now.
    pub async fn failover_pass(
        &self,
        standbys: &dyn ThingStandbys,
        homes: &dyn WorkloadHomes,
        peers: &dyn locus_core::PeerTrust,
    ) {
        let me = self.inner.me;
        let mut nodes = self.inner.fabric.nodes().await;
        // Like the workloads: a live node this node refuses is no successor.
        nodes.retain(|n| {
            n.id == me
                || n.liveness != Liveness::Alive
                || peers.verdict(n.id) != locus_core::PeerVerdict::Refused
        });
        let now = crate::unix_ms();
        // Where each workload runs, asked once per pass.
        let mut homes_seen: BTreeMap<String, Option<NodeId>> = BTreeMap::new();
        for n in nodes
            .iter()
            .filter(|n| n.id != me && matches!(n.liveness, Liveness::Dead | Liveness::Left))
        {
            let Ok(records) = self.inner.fabric.records_of(n.id).await else {
                continue;
            };
            // What this node handed to `n` moments ago is `n`'s even before
            // `n`'s own records bring it: a node may die right after taking
            // a thing back, and the records of a dead node spread only by
            // anti-entropy.
            let sent = self.sent_to(n.id).await;
            // Headers first: a thing is assembled only when this node adopts it.
            let mut mine: Vec<String> = Vec::new();
            for (name, _, workload) in newest(generations_in(&records), &sent) {
                let standby = standbys.standby(n.id, &name);
                let follows = match workload {
                    Some(w) => home(homes, &mut homes_seen, w).await,
                    None => None,
                };
                if locus_sched::thing_adopter(&name, n.id, &nodes, standby, follows, now)
                    == Some(me)
                {
                    mine.push(name);
                }
            }
            if mine.is_empty() {
                continue;
            }
            let mut bodies = things_in(&records);
            for t in sent {
                match bodies.iter_mut().find(|b| b.spec.name == t.spec.name) {
                    Some(b) if b.generation >= t.generation => {}
                    Some(b) => *b = t,
                    None => bodies.push(t),
                }
            }
            for t in bodies
                .into_iter()
                .filter(|t| t.manager == n.id && mine.contains(t.spec.name.get()))
            {
                self.adopt(t, n.id).await;
            }
        }
        self.yield_replaced(&nodes).await;
        for t in self.owned().await {
            let name = t.spec.name.get().clone();
            // A thing goes where the workload that manages it runs now;
            // else back to a customer a contract names.
            let home = match &t.workload {
                Some(w) => home(homes, &mut homes_seen, w.clone()).await,
                None => None,
            };
            let (to, why) = match home {
                Some(h) if h != me => (Some(h), "follows its workload"),
                _ => (standbys.hand_back(&name), "handed back"),
            };
            if let Some(to) = to
                && to != me
                && let Some(api) = api_of(&nodes, to)
            {
                match self.attach(&name, to, &api, t.workload.clone()).await {
                    Ok(_) => tracing::info!(thing = %name, %to, "thing {why}"),
                    Err(e) => {
                        tracing::warn!(thing = %name, %to, error = %e, "cannot move a thing ({why}); retrying")
                    }
                }
            }
        }
    }

    /// The things this node handed to `to` within [`MOVED_MEMORY`].
    async fn sent_to(&self, to: NodeId) -> Vec<Thing> {
        self.inner
            .moved
            .lock()
            .await
            .values()
            .filter(|(t, at)| t.manager == to && at.elapsed() < MOVED_MEMORY)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Take over `t` from its dead manager `from`, unless this node holds
    /// it at this generation or newer already.
    async fn adopt(&self, mut t: Thing, from: NodeId) {
        let name = t.spec.name.get().clone();
        if self
            .get_local(&name)
            .await
            .is_some_and(|have| have.generation >= t.generation)
        {
            return;
        }
        t.manager = self.inner.me;
        t.generation += 1;
        t.updated_unix_ms = crate::unix_ms();
        tracing::info!(thing = %name, %from, generation = t.generation, "adopting a thing whose manager is gone");
        if let Err(e) = self.keep(t).await {
            tracing::warn!(thing = %name, error = %e, "cannot adopt a thing");
        }
    }

    /// Forget the things another live node publishes at a newer
    /// generation (this node was their manager, died and came back).
    async fn yield_replaced(&self, nodes: &[ClusterNode]) {
        let owned = self.owned().await;
        if owned.is_empty() {
            return;
        }
        for n in nodes
            .iter()
            .filter(|n| n.id != self.inner.me && n.liveness == Liveness::Alive)
        {
            let Ok(records) = self.inner.fabric.records_of(n.id).await else {
                continue;
            };
            for (name, generation, _) in generations_in(&records) {
                if owned
                    .iter()
                    .any(|mine| mine.spec.name.get() == &name && mine.generation < generation)
                    && self.forget(&name).await.is_ok()
                {
                    tracing::warn!(thing = %name, by = %n.id, generation, "a newer manager holds the thing; yielding");
                    let _ = self.inner.events.send(ThingEvent::Moved { name, to: n.id });
                }
            }
        }
    }
}

/// Where workload `w` runs, from `seen` or asked once of `homes`.
async fn home(
    homes: &dyn WorkloadHomes,
    seen: &mut BTreeMap<String, Option<NodeId>>,
    w: String,
) -> Option<NodeId> {
    if let Some(h) = seen.get(&w) {
        return *h;
    }
    let h = homes.home_of(&w).await;
    seen.insert(w, h);
    h
}

fn api_of(nodes: &[ClusterNode], id: NodeId) -> Option<String> {
    nodes
        .iter()
        .find(|n| n.id == id && n.liveness == Liveness::Alive)
        .and_then(|n| n.info.as_ref())
        .map(|i| i.api_addr.clone())
}

/// The headers (name, generation, workload) of an owner's records, with
/// the things this node sent it counted where they are newer.
fn newest(
    mut heads: Vec<(String, u64, Option<String>)>,
    sent: &[Thing],
) -> Vec<(String, u64, Option<String>)> {
    for t in sent {
        let head = (t.spec.name.get().clone(), t.generation, t.workload.clone());
        match heads.iter_mut().find(|h| h.0 == head.0) {
            Some(h) if h.1 >= head.1 => {}
            Some(h) => *h = head,
            None => heads.push(head),
        }
    }
    heads
}

#[cfg(test)]
mod tests {
    use super::*;
    use locus_core::thing::ThingSpec;

    fn thing(name: &str, generation: u64) -> Thing {
        let spec = ThingSpec::parse(
            &format!("name = \"{name}\"\nprotocol = \"http\"\n"),
            locus_core::workload::SpecFormat::Toml,
        )
        .unwrap();
        Thing {
            spec,
            password_hash: None,
            manager: NodeId::from_bytes([3; 10]),
            workload: Some("svc".into()),
            generation,
            created_unix_ms: 1,
            updated_unix_ms: 1,
        }
    }

    #[test]
    fn a_thing_sent_moments_ago_counts_where_the_records_are_older_or_silent() {
        let heads = vec![("t1".to_owned(), 10, None), ("t2".to_owned(), 5, None)];
        let sent = [thing("t1", 11), thing("t2", 4), thing("t3", 1)];
        let mut got = newest(heads, &sent);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("t1".to_owned(), 11, Some("svc".to_owned())),
                ("t2".to_owned(), 5, None),
                ("t3".to_owned(), 1, Some("svc".to_owned())),
            ]
        );
    }
}

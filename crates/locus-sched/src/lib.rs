//! # locus-sched
//!
//! Where workloads run, as pure functions over a cluster snapshot (the
//! [`ClusterNode`]s a node's fabric knows): [`place`] filters and scores
//! every node for a new workload; [`successor`] picks, by rendezvous
//! hashing, the one node that adopts a workload whose owner died; [`plan`]
//! turns every copy of every workload a node knows into the adoptions and
//! yields that node must perform.
//!
//! Must never: do I/O, read clocks or randomness, or depend on the order of
//! its inputs — two nodes with the same snapshot must reach the same answer.

use std::collections::BTreeMap;

use locus_core::NodeId;
use locus_core::cluster::{self, ClusterNode, Liveness};
use locus_core::workload::{
    Desired, Failover, State, Strategy, WorkloadId, WorkloadSpec, WorkloadSummary,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Weight of the resource term (spread or pack) in a node's score.
pub const WEIGHT_FIT: f64 = 1.0;
/// Weight of the latency term (closeness to the wanted site).
pub const WEIGHT_RTT: f64 = 0.5;

/// The parts of a node's score. Later terms (energy, price) join here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Terms {
    /// Spread: the share of the node left free after placing; pack: the
    /// share used. 0..=1.
    pub fit: f64,
    /// 1 at the wanted site, 0 at the latency bound; absent without a
    /// latency constraint.
    pub rtt: Option<f64>,
    /// Estimated round-trip time to the wanted site, in ms.
    pub rtt_ms: Option<f64>,
}

/// One node's verdict for one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    #[schema(value_type = String)]
    pub node: NodeId,
    pub name: String,
    pub site: String,
    /// Whether the node passed every filter.
    pub fits: bool,
    /// Why it did not (empty when it fits).
    pub reasons: Vec<String>,
    /// Weighted sum of the terms (0 when it does not fit).
    pub score: f64,
    pub terms: Option<Terms>,
}

/// The outcome of placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// The best node, if any fits.
    #[schema(value_type = Option<String>)]
    pub chosen: Option<NodeId>,
    /// Every node's verdict, best first.
    pub verdicts: Vec<Verdict>,
}

impl Decision {
    /// Why no node fits, in one line (for a pending workload's reason).
    pub fn why_none(&self) -> String {
        if self.verdicts.is_empty() {
            return "no node is known".to_owned();
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.verdicts {
            for r in &v.reasons {
                // Group by the reason's kind (the text before the first ':').
                let head = r.split(':').next().unwrap_or(r);
                *counts.entry(head).or_default() += 1;
            }
        }
        let parts: Vec<String> = counts
            .iter()
            .map(|(r, n)| format!("{n} node{}: {r}", if *n == 1 { "" } else { "s" }))
            .collect();
        format!("no node fits ({})", parts.join("; "))
    }
}

/// Rendezvous (highest random weight) hash of a workload on a node.
pub fn rendezvous(id: WorkloadId, node: NodeId) -> u64 {
    rendezvous_key(&id.0, node)
}

/// Rendezvous hash of any key (a workload id, an artifact digest) on a node.
pub fn rendezvous_key(key: &[u8], node: NodeId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(node.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

/// Whether `nodes` show `id` dead or gone. A node missing from them (not
/// known yet, or left out by the caller) is not known to be gone.
fn known_gone(nodes: &[ClusterNode], id: NodeId) -> bool {
    nodes
        .iter()
        .any(|n| n.id == id && matches!(n.liveness, Liveness::Dead | Liveness::Left))
}

fn is_up(l: Liveness) -> bool {
    matches!(l, Liveness::Alive | Liveness::Suspect)
}

/// Check every filter of `spec` on `node`; the terms when it fits, every
/// reason it does not otherwise.
pub fn assess(
    spec: &WorkloadSpec,
    node: &ClusterNode,
    nodes: &[ClusterNode],
) -> Result<Terms, Vec<String>> {
    let mut reasons = Vec::new();
    if !is_up(node.liveness) {
        reasons.push(format!("not alive: the node is {}", node.liveness.as_str()));
    }
    let (Some(info), Some(cap)) = (&node.info, &node.capacity) else {
        reasons.push("unknown: its state has not arrived yet".to_owned());
        return Err(reasons);
    };
    if !cap.drivers.contains(&spec.kind) {
        reasons.push(format!("no driver: it cannot run {} workloads", spec.kind));
    }
    let cpu = *spec.resources.cpu_millicores.get();
    let mem = spec.resources.memory_bytes();
    let free_cpu = cap
        .cpu_millicores
        .saturating_sub(cap.allocated.cpu_millicores);
    let free_mem = cap.memory_bytes.saturating_sub(cap.allocated.memory_bytes);
    if cpu > free_cpu {
        reasons.push(format!("cpu: {cpu}m asked, {free_cpu}m free"));
    }
    if mem > free_mem {
        reasons.push(format!(
            "memory: {} MiB asked, {} MiB free",
            mem >> 20,
            free_mem >> 20
        ));
    }
    if let Some(site) = &spec.placement.site
        && info.site.name.get() != site.get()
    {
        reasons.push(format!(
            "site: wants {}, the node is in {}",
            site.get(),
            info.site.name.get()
        ));
    }
    for (k, v) in &spec.placement.labels {
        match info.labels.get(k.get()) {
            Some(have) if have == v.get() => {}
            Some(have) => {
                reasons.push(format!("label: {}={} wanted, has {have}", k.get(), v.get()))
            }
            None => reasons.push(format!("label: {}={} wanted, missing", k.get(), v.get())),
        }
    }
    for d in &spec.devices {
        let d = d.get();
        if !cap.devices.iter().any(|x| x == d) && !d.starts_with("/dev/") {
            reasons.push(format!("device: {d} is not on the node"));
        } else if cap.allocated.devices.iter().any(|x| x == d) {
            reasons.push(format!("device: {d} is in use"));
        }
    }
    let mut rtt = None;
    let mut rtt_ms = None;
    if let Some(near) = &spec.placement.near {
        let bound = f64::from(*near.within_ms.get());
        match rtt_to_site(node, near.site.get(), nodes) {
            Some(ms) if ms <= bound => {
                rtt_ms = Some(ms);
                rtt = Some(1.0 - ms / bound);
            }
            Some(ms) => {
                rtt_ms = Some(ms);
                reasons.push(format!(
                    "latency: about {ms:.1} ms to site {}, the bound is {bound} ms",
                    near.site.get()
                ));
            }
            None => reasons.push(format!(
                "latency: no estimate to site {} yet (no coordinates)",
                near.site.get()
            )),
        }
    }
    if !reasons.is_empty() {
        return Err(reasons);
    }
    let share = |free: u64, ask: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            free.saturating_sub(ask) as f64 / total as f64
        }
    };
    let free_after =
        (share(free_cpu, cpu, cap.cpu_millicores) + share(free_mem, mem, cap.memory_bytes)) / 2.0;
    let fit = match spec.placement.strategy {
        Strategy::Spread => free_after,
        Strategy::Pack => 1.0 - free_after,
    };
    Ok(Terms { fit, rtt, rtt_ms })
}

/// Estimated RTT (ms) from `node` to the nearest up node of `site`; 0 when
/// the node stands at that site.
pub fn rtt_to_site(node: &ClusterNode, site: &str, nodes: &[ClusterNode]) -> Option<f64> {
    let at = |n: &ClusterNode| n.info.as_ref().is_some_and(|i| i.site.name.get() == site);
    if at(node) {
        return Some(0.0);
    }
    nodes
        .iter()
        .filter(|n| at(n) && is_up(n.liveness) && n.id != node.id)
        .filter_map(|n| cluster::estimate_rtt(node, n).map(|e| e.rtt_ms))
        .min_by(f64::total_cmp)
}

/// Filter and score every node for a new workload; the best-scoring node
/// that fits is chosen (ties broken by rendezvous hash, so every node
/// agrees).
pub fn place(id: WorkloadId, spec: &WorkloadSpec, nodes: &[ClusterNode]) -> Decision {
    let mut verdicts: Vec<(Verdict, u64)> = nodes
        .iter()
        .map(|n| {
            let (name, site) = n
                .info
                .as_ref()
                .map(|i| (i.name.clone(), i.site.name.get().clone()))
                .unwrap_or_default();
            let v = match assess(spec, n, nodes) {
                Ok(terms) => Verdict {
                    node: n.id,
                    name,
                    site,
                    fits: true,
                    reasons: Vec::new(),
                    score: WEIGHT_FIT * terms.fit + WEIGHT_RTT * terms.rtt.unwrap_or(0.0),
                    terms: Some(terms),
                },
                Err(reasons) => Verdict {
                    node: n.id,
                    name,
                    site,
                    fits: false,
                    reasons,
                    score: 0.0,
                    terms: None,
                },
            };
            (v, rendezvous(id, n.id))
        })
        .collect();
    verdicts.sort_by(|(a, ha), (b, hb)| {
        b.fits
            .cmp(&a.fits)
            .then(b.score.total_cmp(&a.score))
            .then(hb.cmp(ha))
    });
    let chosen = verdicts
        .first()
        .filter(|(v, _)| v.fits)
        .map(|(v, _)| v.node);
    Decision {
        chosen,
        verdicts: verdicts.into_iter().map(|(v, _)| v).collect(),
    }
}

/// The node that adopts workload `id` when its owner is gone: among the up
/// nodes that fit (other than those in `exclude`), the one with the highest
/// rendezvous hash.
pub fn successor(
    id: WorkloadId,
    spec: &WorkloadSpec,
    nodes: &[ClusterNode],
    exclude: &[NodeId],
) -> Option<NodeId> {
    nodes
        .iter()
        .filter(|n| !exclude.contains(&n.id))
        .filter(|n| assess(spec, n, nodes).is_ok())
        .max_by_key(|n| rendezvous(id, n.id))
        .map(|n| n.id)
}

/// How long an owner must have been gone before its workloads are
/// adopted: while a partition is being detected, the view is in motion (some
/// peers dead, others not yet), and a node on the small side could briefly
/// believe it is on the large one.
pub const ADOPT_GRACE_MS: u64 = 1000;

/// How long a dead manager's thing waits for the workload that manages
/// it to fail over before the usual successor takes it.
pub const FOLLOW_WAIT_MS: u64 = 15_000;

/// Whether this node sees a strict majority of the nodes that did not leave
/// as alive (suspects do not count): only then may it adopt others'
/// workloads, so that a node or site cut off does not start copies of
/// everything.
pub fn has_majority(nodes: &[ClusterNode]) -> bool {
    let alive = nodes
        .iter()
        .filter(|n| n.liveness == Liveness::Alive)
        .count();
    let known = nodes
        .iter()
        .filter(|n| n.liveness != Liveness::Left)
        .count();
    alive * 2 > known
}

/// What a node must do about the workloads it knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Adopt `id` from its gone owner, at `epoch`.
    Adopt {
        id: WorkloadId,
        from: NodeId,
        epoch: u64,
    },
    /// Stop and drop our copy of `id`: `by` holds a newer one.
    Yield {
        id: WorkloadId,
        by: NodeId,
        epoch: u64,
    },
}

/// The copy of a workload that wins: highest `(epoch, owner)`.
pub fn winner<'a>(
    copies: impl IntoIterator<Item = &'a WorkloadSummary>,
) -> Option<&'a WorkloadSummary> {
    copies.into_iter().max_by_key(|c| (c.epoch, c.owner))
}

/// Whether a workload still wants a node (a stopped one that the user
/// stopped does not move; a failed one with no restart does not either).
fn wants_a_node(c: &WorkloadSummary) -> bool {
    c.failover == Failover::Reschedule
        && !c.destroyed
        && c.desired == Desired::Running
        && !matches!(c.state, State::Stopped | State::Failed)
}

/// The node a contract names to take a workload over when its owner is
/// gone (a provider standing by for its customer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standby {
    pub node: NodeId,
    /// Whether the owner's death is witnessed as the contract asks (by
    /// nodes of orgs other than the standby's): until then it waits.
    pub witnessed: bool,
}

/// Decide adoptions and yields for node `me` at `now_ms` (the clock of
/// `nodes`' liveness times), given every copy of every workload it knows
/// (its own included) and the specs it holds.
pub fn plan<'a>(
    me: NodeId,
    nodes: &[ClusterNode],
    copies: &'a [WorkloadSummary],
    spec_of: impl Fn(WorkloadId) -> Option<&'a WorkloadSpec>,
    now_ms: u64,
) -> Vec<Action> {
    plan_with_standbys(me, nodes, copies, spec_of, |_| None, now_ms)
}

/// [`plan`], where a workload may have a standby: unless this node knows
/// the standby is gone, the standby alone adopts the workload, once the
/// owner's death is witnessed and if it can run it by its own view of
/// itself. Every other node leaves it alone even when it sees the standby
/// only suspected, cannot check its certificate (the caller leaves it out
/// of `nodes`) or sees too little capacity there: two nodes deciding from
/// two views would both adopt. A standby known to be gone leaves the
/// workload to the usual successor.
pub fn plan_with_standbys<'a>(
    me: NodeId,
    nodes: &[ClusterNode],
    copies: &'a [WorkloadSummary],
    spec_of: impl Fn(WorkloadId) -> Option<&'a WorkloadSpec>,
    standby: impl Fn(&WorkloadSummary) -> Option<Standby>,
    now_ms: u64,
) -> Vec<Action> {
    let mut by_id: BTreeMap<WorkloadId, Vec<&WorkloadSummary>> = BTreeMap::new();
    for c in copies {
        by_id.entry(c.id).or_default().push(c);
    }
    let liveness: BTreeMap<NodeId, (Liveness, u64)> = nodes
        .iter()
        .map(|n| (n.id, (n.liveness, n.since_unix_ms)))
        .collect();
    let majority = has_majority(nodes);
    let mut actions = Vec::new();
    for (id, copies) in by_id {
        let Some(best) = winner(copies.iter().copied()) else {
            continue;
        };
        if best.owner != me
            && let Some(mine) = copies.iter().find(|c| c.owner == me)
            && (mine.epoch, mine.owner) < (best.epoch, best.owner)
        {
            actions.push(Action::Yield {
                id,
                by: best.owner,
                epoch: best.epoch,
            });
        }
        let gone = matches!(
            liveness.get(&best.owner),
            Some((Liveness::Dead | Liveness::Left, since))
                if now_ms.saturating_sub(*since) >= ADOPT_GRACE_MS
        );
        if !gone || best.owner == me || !majority || !wants_a_node(best) {
            continue;
        }
        let Some(spec) = spec_of(id) else { continue };
        if let Some(sb) = standby(best)
            && sb.node != best.owner
            && !known_gone(nodes, sb.node)
        {
            let fits = || {
                nodes
                    .iter()
                    .find(|n| n.id == me)
                    .is_some_and(|n| assess(spec, n, nodes).is_ok())
            };
            if sb.node == me && sb.witnessed && fits() {
                actions.push(Action::Adopt {
                    id,
                    from: best.owner,
                    epoch: best.epoch + 1,
                });
            }
            continue;
        }
        if successor(id, spec, nodes, &[best.owner]) == Some(me) {
            actions.push(Action::Adopt {
                id,
                from: best.owner,
                epoch: best.epoch + 1,
            });
        }
    }
    actions
}

/// Which node takes over the thing `name` whose manager is `manager`, as
/// node `me` sees the cluster at `now_ms`: nobody while the manager is up
/// (or gone for less than [`ADOPT_GRACE_MS`]) or this node sees no
/// majority; the standby a contract names unless this node knows it is
/// gone (once the death is witnessed); for a thing managed by a workload, the node that
/// runs the workload now (`follows`: while it is still the dead manager,
/// the workload has not failed over yet, and the thing waits for it up to
/// [`FOLLOW_WAIT_MS`]); else the live node with the highest rendezvous
/// hash of the name. The same rule as workloads, keyed by the thing's
/// name.
pub fn thing_adopter(
    name: &str,
    manager: NodeId,
    nodes: &[ClusterNode],
    standby: Option<Standby>,
    follows: Option<NodeId>,
    now_ms: u64,
) -> Option<NodeId> {
    let gone = nodes.iter().any(|n| {
        n.id == manager
            && matches!(n.liveness, Liveness::Dead | Liveness::Left)
            && now_ms.saturating_sub(n.since_unix_ms) >= ADOPT_GRACE_MS
    });
    if !gone || !has_majority(nodes) {
        return None;
    }
    let alive = |id: NodeId| {
        nodes
            .iter()
            .any(|n| n.id == id && n.liveness == Liveness::Alive)
    };
    if let Some(sb) = standby
        && sb.node != manager
        && !known_gone(nodes, sb.node)
    {
        return sb.witnessed.then_some(sb.node);
    }
    if let Some(home) = follows {
        if home != manager && alive(home) {
            return Some(home);
        }
        let dead_for = nodes
            .iter()
            .find(|n| n.id == manager)
            .map_or(u64::MAX, |n| now_ms.saturating_sub(n.since_unix_ms));
        if home == manager && dead_for < FOLLOW_WAIT_MS {
            return None;
        }
    }
    nodes
        .iter()
        .filter(|n| n.id != manager && n.liveness == Liveness::Alive)
        .max_by_key(|n| rendezvous_key(name.as_bytes(), n.id))
        .map(|n| n.id)
}

#[cfg(test)]
mod tests;

/// Which nodes should fetch a copy of the artifact `key` so that `k` live
/// nodes hold it, given who holds it now. Every node computes the same
/// answer from the same view: live non-holders are taken one at a time,
/// preferring a site that has no copy yet, then the highest rendezvous
/// hash. Empty when `k` live holders exist already.
pub fn replica_fetchers(
    key: &[u8],
    k: usize,
    nodes: &[ClusterNode],
    holders: &std::collections::BTreeSet<NodeId>,
) -> Vec<NodeId> {
    let alive = |n: &&ClusterNode| n.liveness == Liveness::Alive;
    let site = |n: &ClusterNode| n.info.as_ref().map(|i| i.site.name.get().to_owned());
    let mut covered: std::collections::BTreeSet<Option<String>> = nodes
        .iter()
        .filter(alive)
        .filter(|n| holders.contains(&n.id))
        .map(site)
        .collect();
    let have = nodes
        .iter()
        .filter(alive)
        .filter(|n| holders.contains(&n.id))
        .count();
    let mut candidates: Vec<&ClusterNode> = nodes
        .iter()
        .filter(alive)
        .filter(|n| !holders.contains(&n.id))
        .collect();
    let mut out = Vec::new();
    while out.len() + have < k && !candidates.is_empty() {
        let (i, _) = candidates
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| (!covered.contains(&site(n)), rendezvous_key(key, n.id)))
            .expect("candidates is not empty");
        let chosen = candidates.swap_remove(i);
        covered.insert(site(chosen));
        out.push(chosen.id);
    }
    out
}

/// `candidates` ordered nearest first from `me` by estimated RTT (nodes
/// with no estimate last, then by id, so the order is stable).
pub fn nearest_first(
    me: &ClusterNode,
    nodes: &[ClusterNode],
    candidates: &[NodeId],
) -> Vec<NodeId> {
    let mut ranked: Vec<(f64, NodeId)> = candidates
        .iter()
        .map(|id| {
            let rtt = if *id == me.id {
                0.0
            } else {
                nodes
                    .iter()
                    .find(|n| n.id == *id)
                    .and_then(|n| cluster::estimate_rtt(me, n))
                    .map_or(f64::INFINITY, |e| e.rtt_ms)
            };
            (rtt, *id)
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, id)| id).collect()
}

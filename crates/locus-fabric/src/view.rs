//! Liveness of every known node, with the time of each transition. Fed by
//! foca's notifications (up, down, rename) and by polling its membership
//! for suspicion; never by a single lost packet.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use locus_core::NodeId;
use locus_core::cluster::{Liveness, Transition};

use crate::member::Member;

/// Transitions kept per node.
pub const HISTORY: usize = 16;

/// One node in the view.
#[derive(Debug, Clone)]
pub struct Entry {
    pub member: Member,
    pub liveness: Liveness,
    pub since_ms: u64,
    pub history: VecDeque<Transition>,
    /// The node announced a graceful leave.
    pub leaving: bool,
}

/// The local view of the cluster.
#[derive(Debug, Clone)]
pub struct View {
    me: Member,
    nodes: BTreeMap<NodeId, Entry>,
    /// Gossip address → node, for the current incarnation of each node.
    addrs: HashMap<SocketAddr, NodeId>,
}

impl View {
    pub fn new(me: Member, now_ms: u64) -> View {
        let mut view = View {
            me: me.clone(),
            nodes: BTreeMap::new(),
            addrs: HashMap::new(),
        };
        view.set(&me, Liveness::Alive, now_ms);
        view
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    pub(crate) fn set_me(&mut self, me: Member, now_ms: u64) {
        self.me = me.clone();
        self.set(&me, Liveness::Alive, now_ms);
    }

    /// Current entry of `id`.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.nodes.get(id)
    }

    /// Every entry, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Entry)> {
        self.nodes.iter()
    }

    /// The node whose gossip address is `addr`, if any.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<&Entry> {
        self.addrs.get(&addr).and_then(|id| self.nodes.get(id))
    }

    /// Whether `member` is the incarnation this view tracks for its id (or
    /// a newer one).
    fn is_current(&self, member: &Member) -> bool {
        match self.nodes.get(&member.id) {
            None => true,
            Some(e) => (member.generation, member.bump) >= (e.member.generation, e.member.bump),
        }
    }

    /// Record a liveness for `member`; returns whether anything changed.
    pub fn set(&mut self, member: &Member, liveness: Liveness, now_ms: u64) -> bool {
        if !self.is_current(member) {
            return false;
        }
        let entry = self.nodes.entry(member.id).or_insert_with(|| Entry {
            member: member.clone(),
            liveness,
            since_ms: now_ms,
            history: VecDeque::new(),
            leaving: false,
        });
        let newer = (member.generation, member.bump) > (entry.member.generation, entry.member.bump);
        if newer && member.generation > entry.member.generation {
            entry.leaving = false;
        }
        if entry.member.addr != member.addr {
            self.addrs.remove(&entry.member.addr);
        }
        self.addrs.insert(member.addr, member.id);
        entry.member = member.clone();
        // A node that announced its leave is "left", not "dead", when it goes.
        let liveness = if liveness == Liveness::Dead && entry.leaving {
            Liveness::Left
        } else {
            liveness
        };
        if entry.liveness == liveness && !entry.history.is_empty() {
            return false;
        }
        entry.liveness = liveness;
        entry.since_ms = now_ms;
        if entry.history.len() >= HISTORY {
            entry.history.pop_front();
        }
        entry.history.push_back(Transition {
            to: liveness,
            at_unix_ms: now_ms,
        });
        true
    }

    /// The node announced it is leaving; if it is already gone, it left.
    pub fn mark_leaving(&mut self, id: &NodeId, generation: u64, now_ms: u64) {
        let Some(entry) = self.nodes.get_mut(id) else {
            return;
        };
        if entry.member.generation != generation {
            return;
        }
        entry.leaving = true;
        if entry.liveness == Liveness::Dead {
            let member = entry.member.clone();
            self.set(&member, Liveness::Left, now_ms);
        }
    }

    /// Count of nodes per liveness.
    pub fn counts(&self) -> BTreeMap<Liveness, usize> {
        let mut counts = BTreeMap::new();
        for e in self.nodes.values() {
            *counts.entry(e.liveness).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: u8, generation: u64, bump: u16) -> Member {
        Member {
            id: NodeId::from_bytes([b; 10]),
            addr: format!("127.0.0.{b}:7401").parse().unwrap(),
            generation,
            bump,
        }
    }

    #[test]
    fn transitions_are_recorded_with_their_time() {
        let mut v = View::new(member(1, 1, 0), 0);
        let m = member(2, 1, 0);
        assert!(v.set(&m, Liveness::Alive, 10));
        assert!(!v.set(&m, Liveness::Alive, 11));
        assert!(v.set(&m, Liveness::Suspect, 20));
        assert!(v.set(&m, Liveness::Dead, 30));
        let e = v.get(&m.id).unwrap();
        assert_eq!(e.liveness, Liveness::Dead);
        assert_eq!(e.since_ms, 30);
        let times: Vec<u64> = e.history.iter().map(|t| t.at_unix_ms).collect();
        assert_eq!(times, vec![10, 20, 30]);
    }

    #[test]
    fn a_stale_incarnation_cannot_kill_the_current_one() {
        let mut v = View::new(member(1, 1, 0), 0);
        v.set(&member(2, 2, 0), Liveness::Alive, 5);
        assert!(!v.set(&member(2, 1, 3), Liveness::Dead, 6));
        assert_eq!(
            v.get(&member(2, 2, 0).id).unwrap().liveness,
            Liveness::Alive
        );
        v.set(&member(2, 3, 0), Liveness::Alive, 7);
        assert_eq!(v.get(&member(2, 3, 0).id).unwrap().member.generation, 3);
    }

    #[test]
    fn a_announced_leave_becomes_left_never_dead() {
        let mut v = View::new(member(1, 1, 0), 0);
        let m = member(2, 1, 0);
        v.set(&m, Liveness::Alive, 1);
        v.mark_leaving(&m.id, 1, 2);
        v.set(&m, Liveness::Dead, 3);
        assert_eq!(v.get(&m.id).unwrap().liveness, Liveness::Left);
        // Down first, leave notice second: corrected to left.
        let n = member(3, 1, 0);
        v.set(&n, Liveness::Alive, 1);
        v.set(&n, Liveness::Dead, 2);
        v.mark_leaving(&n.id, 1, 3);
        assert_eq!(v.get(&n.id).unwrap().liveness, Liveness::Left);
        // A restart clears the leave mark.
        v.set(&member(2, 2, 0), Liveness::Alive, 4);
        assert!(!v.get(&m.id).unwrap().leaving);
    }
}

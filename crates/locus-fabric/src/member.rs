//! The identity a node has in the SWIM membership.

use std::net::SocketAddr;

use locus_core::NodeId;
use serde::{Deserialize, Serialize};

/// A node as foca knows it: its id, its gossip address and its incarnation.
///
/// Foca's conflict unit (`Identity::Addr`) is the gossip address: a node
/// that restarts on the same address with a higher generation replaces its
/// old self, and one declared down by mistake rejoins by bumping `bump`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Node id (derived from its public key).
    pub id: NodeId,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Start counter of the node's data dir.
    pub generation: u64,
    /// Rejoins within one generation (after being declared down).
    pub bump: u16,
}

impl Member {
    /// A placeholder identity for a seed whose id is not known yet: foca
    /// accepts an announce addressed to any identity with the right address.
    pub fn seed(addr: SocketAddr) -> Member {
        Member {
            id: NodeId::from_bytes([0; 10]),
            addr,
            generation: 0,
            bump: 0,
        }
    }

    /// Order of incarnations of the same address.
    fn incarnation(&self) -> (u64, u16) {
        (self.generation, self.bump)
    }
}

impl foca::Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation() > adversary.incarnation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_restart_wins_over_the_old_incarnation() {
        let addr: SocketAddr = "127.0.0.1:7401".parse().unwrap();
        let id = NodeId::from_bytes([1; 10]);
        let old = Member {
            id,
            addr,
            generation: 3,
            bump: 9,
        };
        let new = Member {
            id,
            addr,
            generation: 4,
            bump: 0,
        };
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        assert_eq!(Member::seed(addr).addr(), addr);
    }
}

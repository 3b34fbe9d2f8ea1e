//! Who leads which partition, as far as this node knows — for routing clients (a node answers
//! NOT_LEADER_OR_FOLLOWER with the leader, and Metadata requests list every partition's leader).
//!
//! Sources, merged by term (a higher term always wins; the Raft term is the leader epoch, and
//! with one leader per term a (term, leader) pair never conflicts):
//! - the node's own replicas' Raft metrics (a follower knows its leader);
//! - reports gossiped by every node, every `gossip_ms`, listing the groups it leads
//!   ([`LeaderReport`]), so a node knows the leaders of partitions it does not host.
//!
//! The table is advisory: a client sent to a stale leader gets NOT_LEADER_OR_FOLLOWER and asks
//! again; correctness never depends on it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::MutexGuard;

use serde::Deserialize;
use serde::Serialize;

use crate::raft::NodeId;

/// What one node tells the others: the groups it leads, with their terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderReport {
    pub from: NodeId,
    /// (group, term), sorted by group.
    pub leads: Vec<(u64, u64)>,
}

/// A partition's leader as known here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub leader: NodeId,
    /// The leader's term: the partition's leader epoch.
    pub term: u64,
}

#[derive(Default)]
pub struct LeaderTable {
    inner: Mutex<BTreeMap<u64, LeaderInfo>>,
}

impl LeaderTable {
    fn inner(&self) -> MutexGuard<'_, BTreeMap<u64, LeaderInfo>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `leader` leads `group` in `term`, unless a higher term is already known.
    pub fn observe(&self, group: u64, leader: NodeId, term: u64) {
        let mut g = self.inner();
        match g.get(&group) {
            Some(known) if known.term > term => {}
            _ => {
                g.insert(group, LeaderInfo { leader, term });
            }
        }
    }

    /// Merges a peer's report: its groups are led by it at those terms.
    pub fn merge(&self, report: &LeaderReport) {
        for &(group, term) in &report.leads {
            self.observe(group, report.from, term);
        }
    }

    pub fn get(&self, group: u64) -> Option<LeaderInfo> {
        self.inner().get(&group).copied()
    }

    pub fn all(&self) -> BTreeMap<u64, LeaderInfo> {
        self.inner().clone()
    }

    /// Keeps only the groups `keep` accepts (drops deleted partitions).
    pub fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.inner().retain(|g, _| keep(*g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protects routing: a stale report (lower term) never overrides a newer leader.
    #[test]
    fn higher_term_wins() {
        let t = LeaderTable::default();
        t.observe(7, 1, 5);
        t.merge(&LeaderReport { from: 2, leads: vec![(7, 4)] });
        assert_eq!(t.get(7), Some(LeaderInfo { leader: 1, term: 5 }));
        t.merge(&LeaderReport { from: 3, leads: vec![(7, 6)] });
        assert_eq!(t.get(7), Some(LeaderInfo { leader: 3, term: 6 }));
    }
}

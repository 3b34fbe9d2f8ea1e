//! Who leads which partition, as far as this node knows — for routing clients (a node answers
//! NOT_LEADER_OR_FOLLOWER with the leader, and Metadata requests list every partition's leader).
//!
//! Sources, merged by term (a higher term always wins; the Raft term is the leader epoch, and
//! with one leader per term a (term, leader) pair never conflicts):
//! - the node's own replicas' Raft metrics (a follower knows its leader);
//! - reports gossiped by every node, every `gossip_ms`, listing the groups it leads
//!   ([`LeaderReport`]), so a node knows the leaders of partitions it does not host, and each
//!   one's in-sync replicas as its leader computes them (`keel_core::isr`).
//!
//! Two pure decisions shape what clients are told ([`without_down`], [`in_sync`]): a leader on a
//! node the transport knows is down is named nowhere (clients get LEADER_NOT_AVAILABLE, leader
//! -1, until a new leader is known, instead of a dead address for an election timeout and
//! more), and a down node is never in sync.
//!
//! The table is advisory: a client sent to a stale leader gets NOT_LEADER_OR_FOLLOWER and asks
//! again; correctness never depends on it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
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
    /// (group, in-sync replicas as node ids), for groups in `leads` (their term applies).
    pub isr: Vec<(u64, Vec<NodeId>)>,
}

/// A group's in-sync replicas as its leader of `term` computed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrInfo {
    pub term: u64,
    /// Node ids, sorted.
    pub nodes: Vec<NodeId>,
}

/// A partition's leader as known here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub leader: NodeId,
    /// The leader's term: the partition's leader epoch.
    pub term: u64,
}

#[derive(Default)]
struct Tables {
    leaders: BTreeMap<u64, LeaderInfo>,
    isr: BTreeMap<u64, IsrInfo>,
}

#[derive(Default)]
pub struct LeaderTable {
    inner: Mutex<Tables>,
}

impl LeaderTable {
    fn inner(&self) -> MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `leader` leads `group` in `term`, unless a higher term is already known.
    pub fn observe(&self, group: u64, leader: NodeId, term: u64) {
        let mut g = self.inner();
        match g.leaders.get(&group) {
            Some(known) if known.term > term => {}
            _ => {
                g.leaders.insert(group, LeaderInfo { leader, term });
            }
        }
    }

    /// Records `group`'s in-sync replicas as its leader of `term` computed them, unless a
    /// higher term's are already known.
    pub fn observe_isr(&self, group: u64, term: u64, nodes: Vec<NodeId>) {
        let mut g = self.inner();
        match g.isr.get(&group) {
            Some(known) if known.term > term => {}
            _ => {
                g.isr.insert(group, IsrInfo { term, nodes });
            }
        }
    }

    /// Merges a peer's report: its groups are led by it at those terms, with those ISRs.
    pub fn merge(&self, report: &LeaderReport) {
        for &(group, term) in &report.leads {
            self.observe(group, report.from, term);
        }
        for (group, nodes) in &report.isr {
            if let Some(&(_, term)) = report.leads.iter().find(|(g, _)| g == group) {
                self.observe_isr(*group, term, nodes.clone());
            }
        }
    }

    pub fn get(&self, group: u64) -> Option<LeaderInfo> {
        self.inner().leaders.get(&group).copied()
    }

    pub fn all(&self) -> BTreeMap<u64, LeaderInfo> {
        self.inner().leaders.clone()
    }

    pub fn isr_all(&self) -> BTreeMap<u64, IsrInfo> {
        self.inner().isr.clone()
    }

    /// Keeps only the groups `keep` accepts (drops deleted partitions).
    pub fn retain(&self, keep: impl Fn(u64) -> bool) {
        let mut g = self.inner();
        g.leaders.retain(|g, _| keep(*g));
        g.isr.retain(|g, _| keep(*g));
    }
}

/// The leaders clients may be sent to: none on a node known to be `down`.
pub fn without_down(leaders: BTreeMap<u64, LeaderInfo>, down: &BTreeSet<NodeId>) -> BTreeMap<u64, LeaderInfo> {
    leaders.into_iter().filter(|(_, l)| !down.contains(&l.leader)).collect()
}

/// A partition's in-sync replicas as clients are told them (Metadata `isr_nodes`), in replica
/// order: the ISR its current leader (`leader`, already without down nodes) reported, or, before
/// that leader's first report, every replica (a new leader gives each follower the lag time to
/// show progress, as Kafka's does); without a leader, the last ISR known. Only assigned
/// replicas, never a node known to be down.
pub fn in_sync(
    leader: Option<LeaderInfo>,
    known: Option<&IsrInfo>,
    replicas: &[NodeId],
    down: &BTreeSet<NodeId>,
) -> Vec<NodeId> {
    let reported = match (leader, known) {
        (Some(l), Some(k)) if k.term == l.term => Some(&k.nodes),
        (Some(_), _) => None,
        (None, k) => k.map(|k| &k.nodes),
    };
    replicas
        .iter()
        .copied()
        .filter(|r| !down.contains(r))
        .filter(|r| reported.is_none_or(|nodes| nodes.contains(r)))
        .filter(|_| leader.is_some() || reported.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protects routing: a stale report (lower term) never overrides a newer leader.
    #[test]
    fn higher_term_wins() {
        let t = LeaderTable::default();
        t.observe(7, 1, 5);
        t.merge(&LeaderReport { from: 2, leads: vec![(7, 4)], isr: vec![] });
        assert_eq!(t.get(7), Some(LeaderInfo { leader: 1, term: 5 }));
        t.merge(&LeaderReport { from: 3, leads: vec![(7, 6)], isr: vec![] });
        assert_eq!(t.get(7), Some(LeaderInfo { leader: 3, term: 6 }));
    }

    /// Protects the ISR from stale reports: a report of a lower term never overrides a newer
    /// leader's ISR, and an ISR only travels with the term its leader leads in.
    #[test]
    fn isr_reports_merge_by_term() {
        let t = LeaderTable::default();
        t.merge(&LeaderReport { from: 1, leads: vec![(7, 5)], isr: vec![(7, vec![1, 2])] });
        t.merge(&LeaderReport { from: 2, leads: vec![(7, 4)], isr: vec![(7, vec![1, 2, 3])] });
        assert_eq!(t.isr_all().get(&7), Some(&IsrInfo { term: 5, nodes: vec![1, 2] }));
        t.merge(&LeaderReport { from: 3, leads: vec![], isr: vec![(7, vec![3])] });
        assert_eq!(t.isr_all().get(&7), Some(&IsrInfo { term: 5, nodes: vec![1, 2] }), "no lead, no ISR");
        t.retain(|g| g != 7);
        assert!(t.isr_all().is_empty() && t.all().is_empty());
    }

    /// Protects clients from a dead leader (issue 17: Metadata named a killed leader for about
    /// 9.5 s): a leader on a node known down is named nowhere, others stay.
    #[test]
    fn leaders_on_down_nodes_are_not_named() {
        let leaders = BTreeMap::from([(7, LeaderInfo { leader: 1, term: 3 }), (8, LeaderInfo { leader: 2, term: 1 })]);
        let down = BTreeSet::from([1]);
        assert_eq!(without_down(leaders.clone(), &down), BTreeMap::from([(8, LeaderInfo { leader: 2, term: 1 })]));
        assert_eq!(without_down(leaders.clone(), &BTreeSet::new()), leaders);
    }

    /// Protects the ISR clients see: the current leader's report, restricted to live assigned
    /// replicas; every live replica before the new leader's first report; the last report when
    /// no leader is known.
    #[test]
    fn in_sync_replicas_as_clients_see_them() {
        let replicas = [3, 1, 2];
        let none = BTreeSet::new();
        let l5 = Some(LeaderInfo { leader: 1, term: 5 });
        let isr5 = IsrInfo { term: 5, nodes: vec![1, 3, 9] };
        assert_eq!(in_sync(l5, Some(&isr5), &replicas, &none), vec![3, 1], "reported, assigned only");
        assert_eq!(in_sync(l5, Some(&isr5), &replicas, &BTreeSet::from([3])), vec![1], "down is never in sync");
        let isr4 = IsrInfo { term: 4, nodes: vec![1] };
        assert_eq!(in_sync(l5, Some(&isr4), &replicas, &none), vec![3, 1, 2], "new leader, no report yet");
        assert_eq!(in_sync(l5, None, &replicas, &BTreeSet::from([2])), vec![3, 1]);
        assert_eq!(in_sync(None, Some(&isr4), &replicas, &none), vec![1], "no leader: the last report");
        assert_eq!(in_sync(None, None, &replicas, &none), Vec::<NodeId>::new(), "nothing known");
    }
}

//! Where replicas go.
//!
//! New partitions are placed greedily against the cluster's current load, one partition at a
//! time, so placing a topic on a cluster that already holds others still evens things out:
//! - the preferred leader is the node leading the fewest partitions among those the set can
//!   include without unbalancing replica counts (the least-loaded nodes, when there are at
//!   least RF of them);
//! - each further replica goes to the eligible node not yet in the set that holds the fewest
//!   replicas, among those preferring the one leading the *most* partitions (so the nodes
//!   leading the fewest stay free to lead the next ones), and a rack the set does not use yet
//!   when nodes declare racks.
//!
//! Never two replicas of one partition on one node; never a replica on a decommissioning node.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::MetaError;
use super::MetadataState;
use super::NodeId;
use super::PartitionAssignment;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Load {
    replicas: usize,
    leaders: usize,
}

/// Current load of every eligible node: replicas it hosts (a reassignment's target counts) and
/// partitions it is the preferred leader of.
fn loads(state: &MetadataState) -> BTreeMap<NodeId, Load> {
    let mut loads: BTreeMap<NodeId, Load> = state.eligible_nodes().iter().map(|n| (n.id, Load::default())).collect();
    for a in state.assignments() {
        for n in a.hosts() {
            if let Some(l) = loads.get_mut(&n) {
                l.replicas += 1;
            }
        }
        if let Some(l) = a.preferred_leader().and_then(|n| loads.get_mut(&n)) {
            l.leaders += 1;
        }
    }
    loads
}

fn rack_of(state: &MetadataState, node: NodeId) -> Option<&str> {
    state.nodes.get(&node).and_then(|n| n.rack.as_deref())
}

/// Replica sets for `count` new partitions with `rf` replicas each.
pub fn place_new(state: &MetadataState, count: usize, rf: u16) -> Result<Vec<Vec<NodeId>>, MetaError> {
    let mut loads = loads(state);
    let available = loads.len();
    if rf == 0 || rf as usize > available {
        return Err(MetaError::InvalidReplicationFactor { requested: rf, available });
    }
    let racks_known = state.eligible_nodes().iter().any(|n| n.rack.is_some());
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        // Replica counts stay within one of each other when every set takes least-loaded nodes
        // first. Within that freedom: the leader is the node leading the fewest partitions, and
        // followers are, among equally loaded nodes, those already leading the most, which keeps
        // the nodes leading the fewest free to lead the next partitions.
        let fewest = loads.values().map(|l| l.replicas).min().unwrap_or(0);
        let at_fewest = loads.values().filter(|l| l.replicas == fewest).count();
        let leader = *loads
            .iter()
            .filter(|(_, l)| at_fewest < rf as usize || l.replicas == fewest)
            .min_by_key(|(id, l)| (l.leaders, l.replicas, **id))
            .map(|(id, _)| id)
            .expect("at least rf >= 1 eligible nodes");
        let mut set = vec![leader];
        while set.len() < rf as usize {
            let used_racks: BTreeSet<Option<&str>> = set.iter().map(|n| rack_of(state, *n)).collect();
            let next = *loads
                .iter()
                .filter(|(id, _)| !set.contains(id))
                .min_by_key(|(id, l)| {
                    let rack_reused = racks_known && used_racks.contains(&rack_of(state, **id));
                    (rack_reused, l.replicas, std::cmp::Reverse(l.leaders), **id)
                })
                .map(|(id, _)| id)
                .expect("rf <= eligible nodes");
            set.push(next);
        }
        for n in &set {
            loads.get_mut(n).expect("chosen from loads").replicas += 1;
        }
        loads.get_mut(&leader).expect("chosen from loads").leaders += 1;
        out.push(set);
    }
    Ok(out)
}

/// The node that should take over `leaving`'s replica of `a`: eligible, not already hosting `a`,
/// on a rack the rest of the set does not use if possible, least loaded. `None` if no node can.
pub fn replacement(state: &MetadataState, a: &PartitionAssignment, leaving: NodeId) -> Option<NodeId> {
    let loads = loads(state);
    let hosts = a.hosts();
    let racks_known = state.eligible_nodes().iter().any(|n| n.rack.is_some());
    let used_racks: BTreeSet<Option<&str>> =
        a.replicas.iter().filter(|n| **n != leaving).map(|n| rack_of(state, *n)).collect();
    loads
        .iter()
        .filter(|(id, _)| !hosts.contains(id) && **id != leaving)
        .min_by_key(|(id, l)| {
            let rack_reused = racks_known && used_racks.contains(&rack_of(state, **id));
            (rack_reused, l.replicas, **id)
        })
        .map(|(id, _)| *id)
}

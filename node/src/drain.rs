//! Graceful shutdown: before a node stops, it hands every Raft group it leads (partitions, the
//! offsets partitions, the metadata group) to a caught-up, live voter, so clients see a new
//! leader at once instead of waiting out an election timeout.
//!
//! The drain, in order:
//! 1. The node marks itself draining: its own Raft groups stop starting elections
//!    (`runtime_config().elect(false)`, also for replicas opened while draining), it refuses
//!    TransferLeader requests naming itself, it stops its own leader duties (no preferred-leader
//!    hand-offs, no reassignment steps), and it tells every peer ([`crate::client::KIND_DRAINING`],
//!    repeated every gossip interval) so their rebalancers do not hand leadership back to it.
//! 2. For every group it leads, it picks the successor with [`successor`] — the live voter, not
//!    draining, with the highest matched log index in the leader's replication metrics — and
//!    asks openraft to transfer leadership (`trigger().transfer_leader`). The leader stops
//!    accepting writes at once (clients get NOT_LEADER_OR_FOLLOWER naming the successor); the
//!    successor waits until its log holds the leader's last entry, then wins an election that
//!    the other voters grant despite the leader lease.
//! 3. It waits, at most the drain timeout, until it leads no group, asking again for a group
//!    still led after [`TRANSFER_RETRY_MS`] (the successor may have been slow, or gone). It
//!    stops waiting early when for a whole gossip interval no group it leads has any voter to go
//!    to (every other voter down or draining, as for the last node `keel dev` stops). Groups
//!    still led at the end are logged; the node then stops as an ungraceful one would (nothing
//!    acknowledged is lost either way: acknowledged means committed on a quorum).
//!
//! Peers forget that a node drains [`DRAINING_FORGET_GOSSIPS`] gossip intervals after its last
//! notice, so a restarted node is again a candidate for preferred leadership soon after.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use keel_core::metadata::METADATA_GROUP;
use keel_core::metadata::node_of;
use openraft::ServerState;
use openraft_rt::WatchReceiver;

use crate::client;
use crate::node::Node;
use crate::node::lock;
use crate::partition::Replica;
use crate::raft::NodeId;

/// A group still led this long after its transfer was asked for is asked again.
pub const TRANSFER_RETRY_MS: u64 = 1500;
/// How often the drain checks which groups this node still leads.
const POLL_MS: u64 = 50;
/// A peer counts as draining for this many gossip intervals after its last notice.
pub const DRAINING_FORGET_GOSSIPS: u64 = 4;

/// One voter of a group the node leads, as the drain sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    /// The voter's id in the group (a replica's Raft id; the node id in the metadata group).
    pub raft_id: u64,
    /// The highest log index the leader knows this voter holds (`None`: nothing known).
    pub matched_index: Option<u64>,
    /// Live (its gossip arrives) and not draining itself.
    pub eligible: bool,
}

/// The voter to hand leadership to: among the eligible voters with a known matched index, the
/// one with the highest (the one that becomes leader soonest: it must hold the leader's last
/// entry first); ties go to the earliest in `followers`, which callers list in preference
/// order. `None` when no voter qualifies (a single-voter group, every other voter down).
pub fn successor(followers: &[Follower]) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for f in followers.iter().filter(|f| f.eligible) {
        let Some(matched) = f.matched_index else { continue };
        if best.is_none_or(|(_, b)| matched > b) {
            best = Some((f.raft_id, matched));
        }
    }
    best.map(|(id, _)| id)
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Groups whose leadership was handed off (each counted once).
    pub handed_off: usize,
    /// Groups this node still led when the time was up (empty: a complete drain).
    pub still_leading: Vec<u64>,
}

impl DrainReport {
    /// `asked`: the groups whose hand-off was asked for; `led`: the groups still led.
    fn of(asked: &BTreeMap<u64, tokio::time::Instant>, led: &[Led]) -> DrainReport {
        let still_leading: Vec<u64> = led.iter().map(|l| l.group).collect();
        let handed_off = asked.keys().filter(|g| !still_leading.contains(g)).count();
        DrainReport { handed_off, still_leading }
    }
}

/// A group this node leads right now.
struct Led {
    group: u64,
    /// This node's member id in the group.
    me: u64,
    /// (voter, matched index), voters other than this node, in the group's preference order.
    voters: Vec<(u64, Option<u64>)>,
    replica: Option<Arc<Replica>>,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Node {
    /// Whether this node is draining (it will stop soon and must not take leadership).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether `peer` told this node it is draining, recently enough to still count.
    pub(crate) fn peer_draining(&self, peer: NodeId) -> bool {
        let window = ms(self.config.timing.gossip_ms * DRAINING_FORGET_GOSSIPS);
        lock(&self.peers_draining)
            .get(&peer)
            .is_some_and(|at| tokio::time::Instant::now().duration_since(*at) <= window)
    }

    /// A peer's drain notice arrived.
    pub(crate) fn note_peer_draining(&self, peer: NodeId) {
        if !self.peer_draining(peer) {
            tracing::info!(node = self.id, peer, "peer is draining; no leadership goes to it");
        }
        lock(&self.peers_draining).insert(peer, tokio::time::Instant::now());
    }

    /// Hands every group this node leads to another voter and waits until it leads none, at most
    /// `timeout`; then stops the node ([`Node::shutdown`]). See the module docs.
    pub async fn stop_gracefully(self: &Arc<Self>, timeout: Duration) -> DrainReport {
        let report = self.drain(timeout).await;
        self.shutdown().await;
        report
    }

    /// Steps 1–3 of the module docs, without stopping the node.
    pub async fn drain(self: &Arc<Self>, timeout: Duration) -> DrainReport {
        let deadline = tokio::time::Instant::now() + timeout;
        self.draining.store(true, Ordering::Release);
        self.meta.raft().runtime_config().elect(false);
        let replicas: Vec<Arc<Replica>> = lock(&self.replicas).values().cloned().collect();
        for r in &replicas {
            r.raft().runtime_config().elect(false);
        }
        tokio::spawn(announce_loop(self.clone()));
        tracing::info!(node = self.id, timeout_ms = timeout.as_millis() as u64, "draining: handing off leadership");
        // Group → when its transfer was last asked for.
        let mut asked: BTreeMap<u64, tokio::time::Instant> = BTreeMap::new();
        let mut warned_no_successor: BTreeSet<u64> = BTreeSet::new();
        let mut stuck_since: Option<tokio::time::Instant> = None;
        loop {
            let led = self.led_groups();
            if led.is_empty() {
                tracing::info!(node = self.id, handed_off = asked.len(), "drained: this node leads no group");
                return DrainReport { handed_off: asked.len(), still_leading: Vec::new() };
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let report = DrainReport::of(&asked, &led);
                tracing::warn!(
                    node = self.id,
                    still_leading = ?report.still_leading,
                    "drain timeout passed; stopping while still leading these groups (they elect new leaders after an election timeout)"
                );
                return report;
            }
            // Whether no group led has a hand-off under way or possible (every other voter down
            // or draining: the last node of `keel dev`).
            let mut stuck = true;
            for l in &led {
                if asked.contains_key(&l.group) {
                    stuck = false;
                }
                if asked.get(&l.group).is_some_and(|at| now.duration_since(*at) < ms(TRANSFER_RETRY_MS)) {
                    continue;
                }
                let followers: Vec<Follower> = l
                    .voters
                    .iter()
                    .map(|&(raft_id, matched_index)| Follower {
                        raft_id,
                        matched_index,
                        eligible: self.eligible_successor(node_of(raft_id)),
                    })
                    .collect();
                let Some(to) = successor(&followers) else {
                    if warned_no_successor.insert(l.group) {
                        tracing::warn!(
                            node = self.id,
                            group = l.group,
                            ?followers,
                            "no live, caught-up voter to hand leadership to"
                        );
                    }
                    continue;
                };
                stuck = false;
                let again = asked.contains_key(&l.group);
                tracing::info!(node = self.id, group = l.group, to = node_of(to), again, "handing off leadership");
                asked.insert(l.group, now);
                let result = match &l.replica {
                    Some(r) => r.raft().trigger().transfer_leader(to).await,
                    None => self.meta.raft().trigger().transfer_leader(to).await,
                };
                if let Err(e) = result {
                    tracing::warn!(node = self.id, group = l.group, me = l.me, error = %e, "cannot hand off leadership");
                }
            }
            // A peer heard from again would end it, so give that one gossip interval.
            if !stuck {
                stuck_since = None;
            } else if now.duration_since(*stuck_since.get_or_insert(now)) >= ms(self.config.timing.gossip_ms) {
                let report = DrainReport::of(&asked, &led);
                tracing::warn!(node = self.id, still_leading = ?report.still_leading, "no voter to hand these groups to; stopping");
                return report;
            }
            tokio::time::sleep(ms(POLL_MS)).await;
        }
    }

    /// A node leadership may go to: heard from recently, and not draining.
    fn eligible_successor(&self, node: NodeId) -> bool {
        if node == self.id || self.peer_draining(node) {
            return false;
        }
        let window = ms(self.config.timing.gossip_ms * 4);
        lock(&self.heard).get(&node).is_some_and(|t| tokio::time::Instant::now().duration_since(*t) <= window)
    }

    /// The groups this node leads right now, the metadata group first.
    fn led_groups(&self) -> Vec<Led> {
        let mut out = Vec::new();
        let meta = self.meta.raft().metrics().borrow_watched().clone();
        if let Some(voters) = leader_voters(&meta, self.id) {
            out.push(Led { group: METADATA_GROUP, me: self.id, voters, replica: None });
        }
        let replicas: Vec<Arc<Replica>> = lock(&self.replicas).values().cloned().collect();
        for r in replicas {
            let m = r.raft().metrics().borrow_watched().clone();
            if let Some(mut voters) = leader_voters(&m, r.raft_id) {
                // The assignment's order: the preferred leader first.
                let order = self.meta.sm().with_state(|s| s.assignment(r.group).map(|a| a.replicas.clone()));
                if let Some(order) = order {
                    voters.sort_by_key(|(v, _)| order.iter().position(|n| *n == node_of(*v)).unwrap_or(usize::MAX));
                }
                out.push(Led { group: r.group, me: r.raft_id, voters, replica: Some(r) });
            }
        }
        out
    }
}

/// When `me` leads the group these metrics describe: its other voters (ascending ids) with
/// their matched indexes.
fn leader_voters(m: &openraft::RaftMetrics<crate::raft::TypeConfig>, me: u64) -> Option<Vec<(u64, Option<u64>)>> {
    if m.state != ServerState::Leader || m.current_leader != Some(me) {
        return None;
    }
    let replication = m.replication.as_ref();
    let voters = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != me)
        .map(|v| (v, replication.and_then(|r| r.get(&v).cloned().flatten()).map(|l| l.index)))
        .collect();
    Some(voters)
}

/// Tells every peer that this node drains, now and every gossip interval until it stops.
async fn announce_loop(node: Arc<Node>) {
    while !node.is_stopped() {
        let peers: Vec<NodeId> =
            node.meta.sm().with_state(|s| s.nodes.keys().copied().filter(|n| *n != node.id).collect());
        for peer in peers {
            let t = node.transport.clone();
            let timeout = ms(node.config.timing.gossip_ms * 2);
            tokio::spawn(async move {
                let _ = t.call(peer, client::NODE_GROUP, client::KIND_DRAINING, Bytes::new(), timeout).await;
            });
        }
        tokio::time::sleep(ms(node.config.timing.gossip_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(raft_id: u64, matched_index: Option<u64>, eligible: bool) -> Follower {
        Follower { raft_id, matched_index, eligible }
    }

    /// Protects the hand-off's speed and safety: the most caught-up voter is asked (it can win
    /// at once), never a down or draining one.
    #[test]
    fn the_most_caught_up_eligible_voter_is_picked() {
        assert_eq!(successor(&[f(2, Some(10), true), f(3, Some(12), true)]), Some(3));
        assert_eq!(successor(&[f(2, Some(10), true), f(3, Some(12), false)]), Some(2));
        assert_eq!(successor(&[f(2, None, true), f(3, Some(1), true)]), Some(3));
    }

    /// Protects determinism: equal progress goes to the first in preference order.
    #[test]
    fn ties_go_to_the_first_listed() {
        assert_eq!(successor(&[f(3, Some(7), true), f(2, Some(7), true)]), Some(3));
        assert_eq!(successor(&[f(2, Some(7), true), f(3, Some(7), true)]), Some(2));
    }

    /// Protects against handing leadership to nobody: with no live voter whose progress is
    /// known (a single-voter group, every peer down or draining) there is no successor.
    #[test]
    fn no_successor_without_an_eligible_voter_with_known_progress() {
        assert_eq!(successor(&[]), None);
        assert_eq!(successor(&[f(2, None, true), f(3, Some(9), false)]), None);
    }
}

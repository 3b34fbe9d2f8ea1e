//! Kafka consumer groups: the classic rebalance protocol and committed offsets, as a pure state
//! machine — what Kafka's `GroupCoordinator` decides, without its I/O.
//!
//! One [`Groups`] value holds every group of one offsets partition. Requests go in with the
//! current time (`now_ms`; the state machine never reads a clock) and a caller-chosen
//! [`RequestId`]; what comes out is an [`Output`]: the records to persist in the offsets
//! partition, and the replies owed to requests — possibly to *earlier* requests (a JoinGroup is
//! answered when the join phase ends, a follower's SyncGroup when the leader's arrives). The
//! caller persists `records` (acks=all) before it delivers any reply of the same `Output`, and
//! calls [`Groups::tick`] every so often to fire deadlines (session, join and sync timeouts,
//! the initial rebalance delay).
//!
//! Layout:
//! - this file: configuration, states, errors, requests and replies;
//! - [`membership`]: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the timers;
//! - [`offsets`]: OffsetCommit, OffsetFetch, OffsetDelete, DeleteGroups, retention, lag;
//! - [`record`]: the records of the offsets topic (keys, values, tombstones), their versioned
//!   encoding and how a log of them folds back into [`Groups`].
//!
//! States follow Kafka's: `Empty` → `PreparingRebalance` (members (re)join) →
//! `CompletingRebalance` (joined; waiting for the leader's assignment) → `Stable`; `Dead` once
//! deleted. Generations only go up; a request naming another generation is refused with
//! `IllegalGeneration`. Assignments and subscriptions are opaque bytes: client-side assignors
//! (range, roundrobin, cooperative-sticky) pass through untouched.

pub mod membership;
pub mod offsets;
pub mod record;

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Bytes;

pub use offsets::Lag;
pub use offsets::OffsetAndMetadata;
pub use offsets::lag;
pub use record::GroupRecord;

/// A caller's name for one request, so a deferred reply finds its way back.
pub type RequestId = u64;

/// Settings of the coordinator (Kafka's broker settings of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`: shortest session a member may ask for.
    pub session_timeout_ms_min: u64,
    /// `group.max.session.timeout.ms`: longest session a member may ask for.
    pub session_timeout_ms_max: u64,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members (extended by this much for every new member, up to the rebalance
    /// timeout).
    pub initial_rebalance_delay_ms: u64,
    /// `offset.metadata.max.bytes`: longest metadata string of a committed offset.
    pub offset_metadata_bytes_max: usize,
    /// `group.max.size`: most members in one group.
    pub members_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offset_metadata_bytes_max: 4096,
            members_max: 1_000,
        }
    }
}

/// A group's state (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Why a group request was refused, as Kafka names the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    MemberIdRequired,
    FencedInstanceId,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    InvalidGroupId,
    GroupMaxSizeReached,
    CoordinatorNotAvailable,
    NonEmptyGroup,
    GroupIdNotFound,
    GroupSubscribedToTopic,
    OffsetMetadataTooLarge,
}

/// One member's protocol as it joins: name and opaque metadata (for the consumer protocol, the
/// subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub group: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id`: set for static members.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member first gets `MemberIdRequired` with its id.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol — for the leader only.
    pub members: Vec<JoinedMember>,
    /// JoinGroup v9+: a static leader rejoining a stable group must not compute a new
    /// assignment.
    pub skip_assignment: bool,
}

impl JoinReply {
    pub fn error(member_id: &str, error: GroupError) -> JoinReply {
        JoinReply {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    /// SyncGroup v5+: checked against the group's when set.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, member id → opaque bytes; empty from followers.
    pub assignments: BTreeMap<String, Bytes>,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReply {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncReply {
    pub fn error(error: GroupError) -> SyncReply {
        SyncReply { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// A reply owed to a request, delivered once the [`Output`]'s records are persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinReply),
    Sync(SyncReply),
}

/// What one step of the state machine asks of its caller.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    /// To append to the offsets partition (in order, acks=all) before any reply is delivered.
    pub records: Vec<GroupRecord>,
    /// Replies owed to requests (this one or earlier ones).
    pub replies: Vec<(RequestId, Reply)>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.replies.is_empty()
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// The assignment the leader gave it in the current generation.
    pub assignment: Bytes,
    /// A JoinGroup waiting for the join phase to end.
    pub awaiting_join: Option<RequestId>,
    /// A SyncGroup waiting for the leader's assignment.
    pub awaiting_sync: Option<RequestId>,
    /// Joined during the current join phase (for the initial delay's extension).
    pub is_new: bool,
    /// Last sign of life (join, sync, heartbeat, commit).
    pub last_heartbeat_ms: u64,
}

impl Member {
    /// Its metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols.iter().find(|p| p.name == protocol).map(|p| &p.metadata)
    }
}

/// One consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    /// When `state` last changed (retention counts from the time a group became Empty).
    pub state_timestamp_ms: u64,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id → member id.
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out with `MemberIdRequired`, not joined yet → when handed out.
    pub pending_members: BTreeMap<String, u64>,
    /// The end of the join phase (`PreparingRebalance`).
    pub join_deadline_ms: Option<u64>,
    /// Initial delayed join: what is left of the rebalance timeout to extend the delay with.
    pub initial_delay_remaining_ms: Option<u64>,
    /// The end of the sync phase (`CompletingRebalance`).
    pub sync_deadline_ms: Option<u64>,
    /// Committed offsets: (topic, partition) → offset.
    pub offsets: BTreeMap<(String, i32), OffsetAndMetadata>,
}

impl Group {
    pub fn new(id: &str, now_ms: u64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_deadline_ms: None,
            initial_delay_remaining_ms: None,
            sync_deadline_ms: None,
            offsets: BTreeMap::new(),
        }
    }

    pub(crate) fn transition(&mut self, state: GroupState, now_ms: u64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// The protocols every member supports.
    fn common_protocols(&self) -> BTreeSet<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else { return BTreeSet::new() };
        let mut common: BTreeSet<String> = first.protocols.iter().map(|p| p.name.clone()).collect();
        for m in it {
            let names: BTreeSet<String> = m.protocols.iter().map(|p| p.name.clone()).collect();
            common = common.intersection(&names).cloned().collect();
        }
        common
    }

    /// Kafka's protocol selection: every member votes for its most preferred protocol among
    /// those all support; the most votes win (ties to the first in name order).
    pub fn select_protocol(&self) -> Option<String> {
        let common = self.common_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(p) = m.protocols.iter().find(|p| common.contains(&p.name)) {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(name, _)| name.to_string())
    }

    /// Whether a member with `protocol_type` and `protocols` may join (Kafka's
    /// `supportsProtocols`).
    fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let common = self.common_protocols();
        protocols.iter().any(|p| common.contains(&p.name))
    }

    /// The most any member allows the join phase to take.
    fn rebalance_timeout_ms(&self) -> u64 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// Every member and pending member has joined.
    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }
}

/// Every group of one offsets partition.
#[derive(Debug, Clone)]
pub struct Groups {
    pub config: GroupConfig,
    pub groups: BTreeMap<String, Group>,
    /// Prefix of member ids handed out by this incarnation (the coordinator's Raft term), so
    /// ids stay unique across coordinator failovers without randomness.
    epoch: u64,
    next_member: u64,
}

impl Groups {
    /// An empty coordinator; `epoch` must differ from every earlier incarnation's (the Raft
    /// term of the offsets partition's leader does).
    pub fn new(config: GroupConfig, epoch: u64) -> Groups {
        Groups { config, groups: BTreeMap::new(), epoch, next_member: 0 }
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        let prefix = if client_id.is_empty() { "member" } else { client_id };
        format!("{prefix}-{}-{}", self.epoch, self.next_member)
    }

    /// Checks the invariants every transition keeps; panics (in tests) when one breaks.
    pub fn check_invariants(&self) {
        for g in self.groups.values() {
            if let Some(leader) = &g.leader {
                assert!(g.members.contains_key(leader), "group {}: leader {leader} is not a member", g.id);
            }
            match g.state {
                GroupState::Empty | GroupState::Dead => {
                    assert!(g.members.is_empty(), "group {}: {:?} with members", g.id, g.state)
                }
                GroupState::Stable | GroupState::CompletingRebalance => {
                    assert!(g.leader.is_some(), "group {}: {:?} without a leader", g.id, g.state);
                    assert!(g.protocol.is_some(), "group {}: {:?} without a protocol", g.id, g.state);
                }
                GroupState::PreparingRebalance => assert!(g.join_deadline_ms.is_some()),
            }
            for (instance, member) in &g.static_members {
                let m = g.members.get(member);
                assert!(
                    m.is_some_and(|m| m.instance_id.as_ref() == Some(instance)),
                    "group {}: static member {instance} maps to {member}, not a member with that instance id",
                    g.id
                );
            }
            if g.state != GroupState::PreparingRebalance {
                assert!(g.members.values().all(|m| m.awaiting_join.is_none()), "group {}: join waiter", g.id);
            }
            if g.state != GroupState::CompletingRebalance {
                assert!(g.members.values().all(|m| m.awaiting_sync.is_none()), "group {}: sync waiter", g.id);
            }
        }
    }
}

//! The member side of Kafka's classic consumer-group protocol, over [`KafkaClient`]: find the
//! group's coordinator, join and sync, heartbeat, fetch and commit offsets, leave. `keel consume
//! --group` and the simulator's group members (keel-sim) both speak it through [`Membership`].
//!
//! [`Membership`] sends the requests and keeps what the coordinator handed out (member id,
//! generation) and where the coordinator is; what to do with an answer is the caller's policy,
//! helped by [`next_for`] (what an error code invalidates) and [`Membership::follow`] (forget it).
//! The versions are the ones the simulated members have always spoken: FindCoordinator v3,
//! JoinGroup v5 (the two-step join with MEMBER_ID_REQUIRED), SyncGroup v3, Heartbeat v3,
//! OffsetFetch v6, OffsetCommit v7, LeaveGroup v3 — served by Kafka 2.4 and later too.
//!
//! - [`assignor`]: the `consumer` protocol's subscription and assignment bytes and the `range`
//!   and `roundrobin` assignors, which the group's leader member runs (the coordinator passes
//!   the bytes through).

pub mod assignor;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::HeartbeatRequest;
use kafka_protocol::messages::HeartbeatResponse;
use kafka_protocol::messages::JoinGroupRequest;
use kafka_protocol::messages::JoinGroupResponse;
use kafka_protocol::messages::LeaveGroupRequest;
use kafka_protocol::messages::LeaveGroupResponse;
use kafka_protocol::messages::OffsetCommitRequest;
use kafka_protocol::messages::OffsetCommitResponse;
use kafka_protocol::messages::OffsetFetchRequest;
use kafka_protocol::messages::OffsetFetchResponse;
use kafka_protocol::messages::SyncGroupRequest;
use kafka_protocol::messages::SyncGroupResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::protocol::Request;
use kafka_protocol::protocol::StrBytes;

use crate::kafka_client::ClientError;
use crate::kafka_client::KafkaClient;
use crate::kafka_client::topic_name;

pub const FIND_COORDINATOR_VERSION: i16 = 3;
pub const JOIN_GROUP_VERSION: i16 = 5;
pub const SYNC_GROUP_VERSION: i16 = 3;
pub const HEARTBEAT_VERSION: i16 = 3;
pub const OFFSET_FETCH_VERSION: i16 = 6;
pub const OFFSET_COMMIT_VERSION: i16 = 7;
/// LeaveGroup v3: members by identity (a batch of one here).
pub const LEAVE_GROUP_VERSION: i16 = 3;

/// The member's timeouts.
#[derive(Debug, Clone, Copy)]
pub struct MemberTiming {
    /// How long the coordinator waits for a heartbeat before it drops the member.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for every member to rejoin during a rebalance.
    pub rebalance_timeout_ms: i32,
    /// Bound on FindCoordinator, Heartbeat, OffsetFetch, OffsetCommit and LeaveGroup calls.
    pub call_timeout: Duration,
    /// Bound on JoinGroup and SyncGroup, which the coordinator holds up to the rebalance timeout.
    pub join_timeout: Duration,
}

/// What a group request's error code tells the member to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Join again (same member id).
    Rejoin,
    /// Join again as a new member.
    Reset,
    /// Find the coordinator again.
    Rediscover,
}

/// [`Next`] for an answer's error code: a rebalance means rejoining, a fenced or unknown member
/// joining afresh, anything else (not the coordinator, loading, unknown errors) finding the
/// coordinator again.
pub fn next_for(code: i16) -> Next {
    match ResponseError::try_from_code(code) {
        None => Next::Continue,
        Some(ResponseError::RebalanceInProgress) => Next::Rejoin,
        Some(ResponseError::IllegalGeneration | ResponseError::UnknownMemberId | ResponseError::FencedInstanceId) => {
            Next::Reset
        }
        Some(_) => Next::Rediscover,
    }
}

/// One member of one group: the client it speaks through and what the coordinator handed out.
pub struct Membership {
    pub client: KafkaClient,
    group_id: String,
    timing: MemberTiming,
    /// The coordinator's Kafka address, once found (forgotten when a call to it fails).
    coordinator: Option<String>,
    /// Empty until a JoinGroup hands one out.
    pub member_id: String,
    /// The generation the last successful JoinGroup answered (-1 before).
    pub generation: i32,
}

impl Membership {
    pub fn new(client: KafkaClient, group_id: impl Into<String>, timing: MemberTiming) -> Membership {
        Membership {
            client,
            group_id: group_id.into(),
            timing,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    fn group(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.group_id.clone()))
    }

    /// Forgets what `next` says is no longer valid (the member id, the coordinator) and
    /// returns it.
    pub fn follow(&mut self, next: Next) -> Next {
        match next {
            Next::Reset => self.member_id.clear(),
            Next::Rediscover => self.coordinator = None,
            Next::Continue | Next::Rejoin => {}
        }
        next
    }

    /// The coordinator's address, found through any bootstrap broker; None when no broker
    /// answered or the coordinator is not available.
    pub async fn coordinator(&mut self) -> Option<String> {
        if let Some(c) = &self.coordinator {
            return Some(c.clone());
        }
        let request =
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(self.group_id.clone())).with_key_type(0);
        let (_, answer) =
            self.client.request_any(FIND_COORDINATOR_VERSION, &request, self.timing.call_timeout).await.ok()?;
        if answer.error_code != 0 || answer.port <= 0 {
            return None;
        }
        let addr = format!("{}:{}", answer.host.as_str(), answer.port);
        self.coordinator = Some(addr.clone());
        Some(addr)
    }

    /// A call to the coordinator; a failed call forgets the coordinator.
    pub async fn call<Q: Request>(
        &mut self,
        version: i16,
        body: &Q,
        timeout: Duration,
    ) -> Result<Q::Response, ClientError> {
        let Some(addr) = self.coordinator().await else {
            return Err(ClientError::Connect { addr: String::new(), reason: "no coordinator".into() });
        };
        let answer = self.client.request_to(&addr, version, body, timeout).await;
        if answer.is_err() {
            self.coordinator = None;
        }
        answer
    }

    /// JoinGroup with `protocols` (asked again with the member id the coordinator hands out
    /// when it answers MEMBER_ID_REQUIRED). An answer without error makes its member id and
    /// generation this member's.
    pub async fn join_group(
        &mut self,
        protocol_type: &str,
        protocols: Vec<JoinGroupRequestProtocol>,
    ) -> Result<JoinGroupResponse, ClientError> {
        let mut request = JoinGroupRequest::default()
            .with_group_id(self.group())
            .with_session_timeout_ms(self.timing.session_timeout_ms)
            .with_rebalance_timeout_ms(self.timing.rebalance_timeout_ms)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(StrBytes::from_string(protocol_type.to_string()))
            .with_protocols(protocols);
        let mut answer = self.call(JOIN_GROUP_VERSION, &request, self.timing.join_timeout).await?;
        if answer.error_code == ResponseError::MemberIdRequired.code() {
            self.member_id = answer.member_id.to_string();
            request = request.with_member_id(answer.member_id.clone());
            answer = self.call(JOIN_GROUP_VERSION, &request, self.timing.join_timeout).await?;
        }
        if answer.error_code == 0 {
            self.member_id = answer.member_id.to_string();
            self.generation = answer.generation_id;
        }
        Ok(answer)
    }

    /// SyncGroup for the current generation; the leader passes every member's assignment,
    /// the others none.
    pub async fn sync_group(&mut self, assignments: Vec<(StrBytes, Bytes)>) -> Result<SyncGroupResponse, ClientError> {
        let request = SyncGroupRequest::default()
            .with_group_id(self.group())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(member, bytes)| {
                        SyncGroupRequestAssignment::default().with_member_id(member).with_assignment(bytes)
                    })
                    .collect(),
            );
        self.call(SYNC_GROUP_VERSION, &request, self.timing.join_timeout).await
    }

    pub async fn heartbeat(&mut self) -> Result<HeartbeatResponse, ClientError> {
        let request = HeartbeatRequest::default()
            .with_group_id(self.group())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        self.call(HEARTBEAT_VERSION, &request, self.timing.call_timeout).await
    }

    /// The group's committed offsets of `partitions` of `topic`.
    pub async fn offset_fetch(
        &mut self,
        topic: &str,
        partitions: Vec<i32>,
    ) -> Result<OffsetFetchResponse, ClientError> {
        let request = OffsetFetchRequest::default().with_group_id(self.group()).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(topic_name(topic)).with_partition_indexes(partitions),
        ]));
        self.call(OFFSET_FETCH_VERSION, &request, self.timing.call_timeout).await
    }

    /// Commits `offsets` (partition, next offset to read) of `topic` as this member of this
    /// generation.
    pub async fn offset_commit(
        &mut self,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<OffsetCommitResponse, ClientError> {
        let request = OffsetCommitRequest::default()
            .with_group_id(self.group())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_topics(vec![
                OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(
                    offsets
                        .iter()
                        .map(|&(partition, offset)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(partition)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                ),
            ]);
        self.call(OFFSET_COMMIT_VERSION, &request, self.timing.call_timeout).await
    }

    /// Leaves the group (its partitions go to the others at once instead of after the session
    /// timeout); forgets the member id.
    pub async fn leave_group(&mut self) -> Result<LeaveGroupResponse, ClientError> {
        let request = LeaveGroupRequest::default().with_group_id(self.group()).with_members(vec![
            MemberIdentity::default().with_member_id(StrBytes::from_string(self.member_id.clone())),
        ]);
        let answer = self.call(LEAVE_GROUP_VERSION, &request, self.timing.call_timeout).await;
        self.member_id.clear();
        self.generation = -1;
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_say_what_to_forget() {
        assert_eq!(next_for(0), Next::Continue);
        assert_eq!(next_for(ResponseError::RebalanceInProgress.code()), Next::Rejoin);
        assert_eq!(next_for(ResponseError::UnknownMemberId.code()), Next::Reset);
        assert_eq!(next_for(ResponseError::IllegalGeneration.code()), Next::Reset);
        assert_eq!(next_for(ResponseError::NotCoordinator.code()), Next::Rediscover);
        assert_eq!(next_for(ResponseError::CoordinatorLoadInProgress.code()), Next::Rediscover);
        assert_eq!(next_for(9999), Next::Rediscover);
        let timing = MemberTiming {
            session_timeout_ms: 1,
            rebalance_timeout_ms: 1,
            call_timeout: Duration::from_secs(1),
            join_timeout: Duration::from_secs(1),
        };
        let mut m = Membership::new(KafkaClient::new("t", Vec::new(), 0), "g", timing);
        m.member_id = "m-1".into();
        m.coordinator = Some("h:1".into());
        assert_eq!(m.follow(Next::Rejoin), Next::Rejoin);
        assert_eq!((m.member_id.as_str(), m.coordinator.as_deref()), ("m-1", Some("h:1")));
        m.follow(Next::Rediscover);
        assert_eq!(m.coordinator, None);
        m.follow(Next::Reset);
        assert_eq!(m.member_id, "");
    }
}

//! Membership: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and the timers that end join and
//! sync phases and expire silent members — Kafka's `GroupCoordinator` rules.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Group;
use super::GroupError;
use super::GroupRecord;
use super::GroupState;
use super::Groups;
use super::JoinReply;
use super::JoinRequest;
use super::JoinedMember;
use super::Member;
use super::Output;
use super::Reply;
use super::RequestId;
use super::SyncReply;
use super::SyncRequest;

/// One member of a LeaveGroup request (v3+ carries several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    pub member_id: String,
    pub instance_id: Option<String>,
}

impl Groups {
    /// JoinGroup. The reply comes in `out` — now, or when the join phase ends.
    pub fn join(&mut self, now_ms: u64, request: RequestId, req: JoinRequest, out: &mut Output) {
        let reply = |out: &mut Output, r: JoinReply| out.replies.push((request, Reply::Join(r)));
        if req.group.is_empty() {
            return reply(out, JoinReply::error(&req.member_id, GroupError::InvalidGroupId));
        }
        if req.session_timeout_ms < self.config.session_timeout_ms_min
            || req.session_timeout_ms > self.config.session_timeout_ms_max
        {
            return reply(out, JoinReply::error(&req.member_id, GroupError::InvalidSessionTimeout));
        }
        let group_known = self.groups.contains_key(&req.group);
        if !group_known && !req.member_id.is_empty() {
            return reply(out, JoinReply::error(&req.member_id, GroupError::UnknownMemberId));
        }
        let members_max = self.config.members_max;
        let fresh_id = if req.member_id.is_empty() {
            Some(self.new_member_id(req.instance_id.as_deref().unwrap_or(&req.client_id)))
        } else {
            None
        };
        if !group_known && (req.protocol_type.is_empty() || req.protocols.is_empty()) {
            return reply(out, JoinReply::error(&req.member_id, GroupError::InconsistentGroupProtocol));
        }
        let group = self.groups.entry(req.group.clone()).or_insert_with(|| Group::new(&req.group, now_ms));
        if group.state == GroupState::Dead {
            return reply(out, JoinReply::error(&req.member_id, GroupError::CoordinatorNotAvailable));
        }
        if !group.supports(&req.protocol_type, &req.protocols) {
            return reply(out, JoinReply::error(&req.member_id, GroupError::InconsistentGroupProtocol));
        }
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        match fresh_id {
            Some(new_id) => {
                if group.members.len() + group.pending_members.len() >= members_max
                    && !req.instance_id.as_ref().is_some_and(|i| group.static_members.contains_key(i))
                {
                    return reply(out, JoinReply::error("", GroupError::GroupMaxSizeReached));
                }
                join_unknown(group, now_ms, request, req, new_id, initial_delay_ms, out)
            }
            None => join_known(group, now_ms, request, req, initial_delay_ms, out),
        }
        complete_join_if_ready(group, now_ms, out);
    }

    /// SyncGroup. The reply comes in `out` — now, or when the leader's assignment arrives.
    pub fn sync(&mut self, now_ms: u64, request: RequestId, req: SyncRequest, out: &mut Output) {
        let reply = |out: &mut Output, r: SyncReply| out.replies.push((request, Reply::Sync(r)));
        let Some(group) = self.groups.get_mut(&req.group) else {
            return reply(out, SyncReply::error(GroupError::UnknownMemberId));
        };
        if let Err(e) = validate_member(group, &req.member_id, req.instance_id.as_deref(), Some(req.generation)) {
            return reply(out, SyncReply::error(e));
        }
        if req.protocol_type.as_ref().is_some_and(|t| group.protocol_type.as_ref() != Some(t))
            || req.protocol_name.as_ref().is_some_and(|n| group.protocol.as_ref() != Some(n))
        {
            return reply(out, SyncReply::error(GroupError::InconsistentGroupProtocol));
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => reply(out, SyncReply::error(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => reply(out, SyncReply::error(GroupError::RebalanceInProgress)),
            GroupState::Stable => {
                let member = &mut group.members.get_mut(&req.member_id).expect("validated member");
                member.last_heartbeat_ms = now_ms;
                let assignment = member.assignment.clone();
                reply(out, sync_ok(group, assignment));
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(&req.member_id).expect("validated member");
                member.last_heartbeat_ms = now_ms;
                // A member's second SyncGroup replaces the first (which is answered now).
                if let Some(old) = member.awaiting_sync.replace(request) {
                    out.replies.push((old, Reply::Sync(SyncReply::error(GroupError::RebalanceInProgress))));
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = req.assignments.get(id).cloned().unwrap_or_default();
                    }
                    group.transition(GroupState::Stable, now_ms);
                    group.sync_deadline_ms = None;
                    out.records.push(GroupRecord::metadata_of(group));
                    let waiting: Vec<(RequestId, Bytes)> = group
                        .members
                        .values_mut()
                        .filter_map(|m| m.awaiting_sync.take().map(|r| (r, m.assignment.clone())))
                        .collect();
                    for (r, assignment) in waiting {
                        out.replies.push((r, Reply::Sync(sync_ok(group, assignment))));
                    }
                }
            }
        }
    }

    /// Heartbeat: keeps a member's session alive; says when a rebalance is under way.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        let Some(group) = self.groups.get_mut(group) else { return Err(GroupError::UnknownMemberId) };
        validate_member(group, member_id, instance_id, Some(generation))?;
        let state = group.state;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
        match state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup: one answer per leaving member, in order. Members found by instance id when
    /// one is given (static), else by member id.
    pub fn leave(
        &mut self,
        now_ms: u64,
        group: &str,
        leaving: &[Leaving],
        out: &mut Output,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let Some(group) = self.groups.get_mut(group) else { return Err(GroupError::UnknownMemberId) };
        if group.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut answers = Vec::with_capacity(leaving.len());
        for l in leaving {
            let member_id = match &l.instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    None => Err(GroupError::UnknownMemberId),
                    Some(m) if !l.member_id.is_empty() && *m != l.member_id => Err(GroupError::FencedInstanceId),
                    Some(m) => Ok(m.clone()),
                },
                None if group.pending_members.remove(&l.member_id).is_some() => {
                    answers.push(Ok(()));
                    complete_join_if_ready(group, now_ms, out);
                    continue;
                }
                None if group.members.contains_key(&l.member_id) => Ok(l.member_id.clone()),
                None => Err(GroupError::UnknownMemberId),
            };
            match member_id {
                Ok(id) => {
                    remove_member(group, &id, out);
                    answers.push(Ok(()));
                    rebalance_after_removal(group, now_ms, out);
                }
                Err(e) => answers.push(Err(e)),
            }
        }
        Ok(answers)
    }

    /// Fires every deadline due at `now_ms`: ends join phases (initial delay included) and sync
    /// phases, and removes members whose session ran out.
    pub fn tick(&mut self, now_ms: u64, out: &mut Output) {
        for group in self.groups.values_mut() {
            tick_group(group, now_ms, self.config.initial_rebalance_delay_ms, out);
        }
    }
}

fn sync_ok(group: &Group, assignment: Bytes) -> SyncReply {
    SyncReply {
        error: None,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        assignment,
    }
}

/// The checks shared by SyncGroup, Heartbeat and OffsetCommit: the member exists, its instance
/// id is the one on record (else it was replaced: fenced), and it is in `generation`.
pub(crate) fn validate_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
    generation: Option<i32>,
) -> Result<(), GroupError> {
    if let Some(instance) = instance_id
        && let Some(current) = group.static_members.get(instance)
        && current != member_id
    {
        return Err(GroupError::FencedInstanceId);
    }
    if !group.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    if generation.is_some_and(|g| g != group.generation) {
        return Err(GroupError::IllegalGeneration);
    }
    Ok(())
}

/// A JoinGroup without a member id.
fn join_unknown(
    group: &mut Group,
    now_ms: u64,
    request: RequestId,
    req: JoinRequest,
    new_id: String,
    initial_delay_ms: u64,
    out: &mut Output,
) {
    if let Some(instance) = req.instance_id.clone() {
        if let Some(old_id) = group.static_members.get(&instance).cloned() {
            return replace_static_member(group, now_ms, request, req, old_id, new_id, initial_delay_ms, out);
        }
        // A static member new to the group joins at once (no MemberIdRequired round trip).
        group.static_members.insert(instance, new_id.clone());
        return add_member_and_rebalance(group, now_ms, request, req, new_id, initial_delay_ms, out);
    }
    if req.require_known_member_id {
        group.pending_members.insert(new_id.clone(), now_ms);
        let mut r = JoinReply::error(&new_id, GroupError::MemberIdRequired);
        r.generation = group.generation;
        out.replies.push((request, Reply::Join(r)));
        return;
    }
    add_member_and_rebalance(group, now_ms, request, req, new_id, initial_delay_ms, out)
}

/// A JoinGroup from a member that has its id.
fn join_known(
    group: &mut Group,
    now_ms: u64,
    request: RequestId,
    req: JoinRequest,
    initial_delay_ms: u64,
    out: &mut Output,
) {
    let reply = |out: &mut Output, r: JoinReply| out.replies.push((request, Reply::Join(r)));
    if group.pending_members.remove(&req.member_id).is_some() {
        let id = req.member_id.clone();
        return add_member_and_rebalance(group, now_ms, request, req, id, initial_delay_ms, out);
    }
    if let Err(e) = validate_member(group, &req.member_id, req.instance_id.as_deref(), None) {
        return reply(out, JoinReply::error(&req.member_id, e));
    }
    let member = group.members.get_mut(&req.member_id).expect("validated member");
    member.last_heartbeat_ms = now_ms;
    let unchanged = member.protocols == req.protocols;
    let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
    match group.state {
        GroupState::PreparingRebalance => update_member_and_rebalance(group, now_ms, request, req, initial_delay_ms),
        GroupState::CompletingRebalance if unchanged => {
            // The member lost its join answer: it gets the same one again.
            let r = join_ok(group, &req.member_id, is_leader);
            reply(out, r);
        }
        GroupState::Stable if unchanged && !is_leader => {
            let r = join_ok(group, &req.member_id, false);
            reply(out, r);
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            update_member_and_rebalance(group, now_ms, request, req, initial_delay_ms);
            prepare_rebalance(group, now_ms, initial_delay_ms, out);
        }
        GroupState::Empty | GroupState::Dead => {
            reply(out, JoinReply::error(&req.member_id, GroupError::UnknownMemberId))
        }
    }
}

/// A static member rejoined without its member id: the new id replaces the old one. In a
/// stable group with unchanged protocols no rebalance follows (Kafka's rule); the member
/// receives the current generation and its assignment again by SyncGroup.
#[allow(clippy::too_many_arguments)]
fn replace_static_member(
    group: &mut Group,
    now_ms: u64,
    request: RequestId,
    req: JoinRequest,
    old_id: String,
    new_id: String,
    initial_delay_ms: u64,
    out: &mut Output,
) {
    let Some(mut member) = group.members.remove(&old_id) else {
        group.static_members.remove(req.instance_id.as_deref().unwrap_or_default());
        return add_member_and_rebalance(group, now_ms, request, req, new_id, initial_delay_ms, out);
    };
    // The old incarnation's waiting requests are fenced.
    if let Some(r) = member.awaiting_join.take() {
        out.replies.push((r, Reply::Join(JoinReply::error(&old_id, GroupError::FencedInstanceId))));
    }
    if let Some(r) = member.awaiting_sync.take() {
        out.replies.push((r, Reply::Sync(SyncReply::error(GroupError::FencedInstanceId))));
    }
    let unchanged = member.protocols == req.protocols;
    member.member_id = new_id.clone();
    member.last_heartbeat_ms = now_ms;
    member.client_id = req.client_id.clone();
    member.client_host = req.client_host.clone();
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    group.members.insert(new_id.clone(), member);
    group.static_members.insert(req.instance_id.clone().unwrap_or_default(), new_id.clone());
    let was_leader = group.leader.as_deref() == Some(old_id.as_str());
    if was_leader {
        group.leader = Some(new_id.clone());
    }
    match group.state {
        GroupState::Stable if unchanged => {
            out.records.push(GroupRecord::metadata_of(group));
            let mut r = join_ok(group, &new_id, was_leader);
            // The leader must not compute a new assignment (JoinGroup v9+ says so).
            r.skip_assignment = was_leader;
            if was_leader {
                r.leader = new_id.clone();
            }
            out.replies.push((request, Reply::Join(r)));
        }
        GroupState::PreparingRebalance => {
            update_member_and_rebalance(group, now_ms, request, req, initial_delay_ms);
        }
        _ => {
            update_member_and_rebalance(group, now_ms, request, req, initial_delay_ms);
            prepare_rebalance(group, now_ms, initial_delay_ms, out);
        }
    }
}

fn add_member_and_rebalance(
    group: &mut Group,
    now_ms: u64,
    request: RequestId,
    req: JoinRequest,
    member_id: String,
    initial_delay_ms: u64,
    out: &mut Output,
) {
    if group.members.is_empty() {
        group.protocol_type = Some(req.protocol_type.clone());
    }
    let member = Member {
        member_id: member_id.clone(),
        instance_id: req.instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        protocol_type: req.protocol_type.clone(),
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        awaiting_join: Some(request),
        awaiting_sync: None,
        is_new: true,
        last_heartbeat_ms: now_ms,
    };
    group.members.insert(member_id, member);
    if group.state == GroupState::PreparingRebalance && group.initial_delay_remaining_ms.is_some() {
        // A new member during the initial delay: the delay is extended (see `tick_group`).
        return;
    }
    prepare_rebalance(group, now_ms, initial_delay_ms, out);
}

/// Records a (re)joining member's protocols and its waiting JoinGroup.
fn update_member_and_rebalance(group: &mut Group, now_ms: u64, request: RequestId, req: JoinRequest, _delay: u64) {
    let id = if group.members.contains_key(&req.member_id) {
        req.member_id.clone()
    } else {
        match req.instance_id.as_ref().and_then(|i| group.static_members.get(i)) {
            Some(id) => id.clone(),
            None => return,
        }
    };
    let Some(member) = group.members.get_mut(&id) else { return };
    member.protocols = req.protocols;
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.last_heartbeat_ms = now_ms;
    // A second JoinGroup from the same member replaces the first; the first gets no answer of
    // its own (the client has given up on it).
    member.awaiting_join = Some(request);
}

/// Moves the group into `PreparingRebalance` (from Empty: with the initial delay). Members
/// waiting in the sync phase are told to rejoin.
pub(crate) fn prepare_rebalance(group: &mut Group, now_ms: u64, initial_delay_ms: u64, out: &mut Output) {
    if group.state == GroupState::PreparingRebalance {
        return;
    }
    if group.state == GroupState::CompletingRebalance {
        for m in group.members.values_mut() {
            if let Some(r) = m.awaiting_sync.take() {
                out.replies.push((r, Reply::Sync(SyncReply::error(GroupError::RebalanceInProgress))));
            }
        }
    }
    group.sync_deadline_ms = None;
    if group.state == GroupState::Empty && initial_delay_ms > 0 {
        // Kafka's initial delayed join: wait for more members before the first generation.
        group.join_deadline_ms = Some(now_ms.saturating_add(initial_delay_ms));
        group.initial_delay_remaining_ms = Some(group.rebalance_timeout_ms().saturating_sub(initial_delay_ms));
        for m in group.members.values_mut() {
            m.is_new = false;
        }
    } else {
        group.join_deadline_ms = Some(now_ms.saturating_add(group.rebalance_timeout_ms()));
        group.initial_delay_remaining_ms = None;
    }
    group.transition(GroupState::PreparingRebalance, now_ms);
}

/// Ends the join phase early once everyone has joined (never during the initial delay).
fn complete_join_if_ready(group: &mut Group, now_ms: u64, out: &mut Output) {
    if group.state == GroupState::PreparingRebalance && group.initial_delay_remaining_ms.is_none() && group.all_joined()
    {
        complete_join(group, now_ms, out);
    }
}

/// The join phase ends: members that did not rejoin leave (static ones stay, to be expired by
/// their session), the generation goes up, a protocol and a leader are chosen and every
/// waiting JoinGroup is answered — the leader's with every member's metadata.
fn complete_join(group: &mut Group, now_ms: u64, out: &mut Output) {
    let silent: Vec<String> = group
        .members
        .values()
        .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
        .map(|m| m.member_id.clone())
        .collect();
    for id in silent {
        remove_member(group, &id, out);
    }
    group.pending_members.clear();
    group.join_deadline_ms = None;
    group.initial_delay_remaining_ms = None;
    group.generation = group.generation.saturating_add(1);
    if group.members.is_empty() {
        group.protocol = None;
        group.leader = None;
        group.transition(GroupState::Empty, now_ms);
        out.records.push(GroupRecord::metadata_of(group));
        return;
    }
    group.protocol = group.select_protocol();
    let leader_stays =
        group.leader.as_ref().is_some_and(|l| group.members.get(l).is_some_and(|m| m.awaiting_join.is_some()));
    if !leader_stays {
        group.leader = group
            .members
            .values()
            .find(|m| m.awaiting_join.is_some())
            .or_else(|| group.members.values().next())
            .map(|m| m.member_id.clone());
    }
    group.transition(GroupState::CompletingRebalance, now_ms);
    group.sync_deadline_ms = Some(now_ms.saturating_add(group.rebalance_timeout_ms()));
    let leader = group.leader.clone().unwrap_or_default();
    let ids: Vec<String> = group.members.keys().cloned().collect();
    for id in ids {
        let reply = join_ok(group, &id, id == leader);
        let m = group.members.get_mut(&id).expect("member");
        m.is_new = false;
        m.last_heartbeat_ms = now_ms;
        m.assignment = Bytes::new();
        if let Some(r) = m.awaiting_join.take() {
            out.replies.push((r, Reply::Join(reply)));
        }
    }
}

/// A successful JoinGroup answer for `member_id` in the group's current generation.
fn join_ok(group: &Group, member_id: &str, with_members: bool) -> JoinReply {
    let protocol = group.protocol.clone().unwrap_or_default();
    let members = if with_members {
        group
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata(&protocol).cloned().unwrap_or_default(),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinReply {
        error: None,
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members,
        skip_assignment: false,
    }
}

/// Removes a member; its waiting requests are answered with `UnknownMemberId`.
fn remove_member(group: &mut Group, member_id: &str, out: &mut Output) {
    let Some(m) = group.members.remove(member_id) else { return };
    if let Some(r) = m.awaiting_join {
        out.replies.push((r, Reply::Join(JoinReply::error(member_id, GroupError::UnknownMemberId))));
    }
    if let Some(r) = m.awaiting_sync {
        out.replies.push((r, Reply::Sync(SyncReply::error(GroupError::UnknownMemberId))));
    }
    if let Some(instance) = &m.instance_id
        && group.static_members.get(instance).is_some_and(|id| id == member_id)
    {
        group.static_members.remove(instance);
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

/// After a member left or expired: Stable and CompletingRebalance groups rebalance; a join
/// phase may now be complete.
fn rebalance_after_removal(group: &mut Group, now_ms: u64, out: &mut Output) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(group, now_ms, 0, out);
            complete_join_if_ready(group, now_ms, out);
        }
        GroupState::PreparingRebalance => {
            if group.members.is_empty() && group.pending_members.is_empty() {
                // Nobody is left to wait for, not even during the initial delay.
                complete_join(group, now_ms, out);
            } else {
                complete_join_if_ready(group, now_ms, out);
            }
        }
        GroupState::Empty | GroupState::Dead => {}
    }
}

fn tick_group(group: &mut Group, now_ms: u64, initial_delay_ms: u64, out: &mut Output) {
    // Pending members (MemberIdRequired answered, not rejoined) expire after a session.
    let pending_timeout_ms = group.members.values().map(|m| m.session_timeout_ms).max().unwrap_or(10_000);
    let expired_pending: Vec<String> = group
        .pending_members
        .iter()
        .filter(|(_, since)| since.saturating_add(pending_timeout_ms) <= now_ms)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &expired_pending {
        group.pending_members.remove(id);
    }
    // Members awaiting a join or sync answer are alive by definition (Kafka's rule).
    let expired: Vec<String> = group
        .members
        .values()
        .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
        .filter(|m| m.last_heartbeat_ms.saturating_add(m.session_timeout_ms) <= now_ms)
        .map(|m| m.member_id.clone())
        .collect();
    for id in &expired {
        remove_member(group, id, out);
    }
    if !expired.is_empty() {
        rebalance_after_removal(group, now_ms, out);
    } else if !expired_pending.is_empty() {
        complete_join_if_ready(group, now_ms, out);
    }
    if group.state == GroupState::PreparingRebalance && group.join_deadline_ms.is_some_and(|d| d <= now_ms) {
        match group.initial_delay_remaining_ms {
            Some(remaining)
                if remaining > 0 && group.members.values().any(|m| m.is_new && m.awaiting_join.is_some()) =>
            {
                let delay = initial_delay_ms.min(remaining);
                group.join_deadline_ms = Some(now_ms.saturating_add(delay));
                group.initial_delay_remaining_ms = Some(remaining - delay);
                for m in group.members.values_mut() {
                    m.is_new = false;
                }
            }
            _ => complete_join(group, now_ms, out),
        }
    }
    if group.state == GroupState::CompletingRebalance && group.sync_deadline_ms.is_some_and(|d| d <= now_ms) {
        // The leader's assignment never came: members that did not sync leave, the rest rejoin.
        let silent: Vec<String> =
            group.members.values().filter(|m| m.awaiting_sync.is_none()).map(|m| m.member_id.clone()).collect();
        for id in &silent {
            remove_member(group, id, out);
        }
        group.sync_deadline_ms = None;
        rebalance_after_removal(group, now_ms, out);
    }
}

/// Members' metadata for the group's protocol (the consumer protocol's subscriptions), for
/// callers that must parse them (OffsetDelete's subscribed-topic check).
pub fn subscriptions(group: &Group) -> BTreeMap<String, Bytes> {
    let protocol = group.protocol.clone().unwrap_or_default();
    group.members.values().filter_map(|m| m.metadata(&protocol).map(|b| (m.member_id.clone(), b.clone()))).collect()
}

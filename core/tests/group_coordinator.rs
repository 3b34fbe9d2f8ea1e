//! The consumer-group state machine (`keel_core::group`): Kafka's classic rebalance protocol,
//! generation fencing, static membership, offset commits and their checks, retention, and the
//! offsets-topic records that rebuild the state after a coordinator failover. Each test names
//! the Kafka rule it protects; properties over random schedules live in
//! `proptests/tests/group_membership.rs`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Bytes;
use keel_core::group::GroupConfig;
use keel_core::group::GroupError;
use keel_core::group::GroupRecord;
use keel_core::group::GroupState;
use keel_core::group::Groups;
use keel_core::group::JoinReply;
use keel_core::group::JoinRequest;
use keel_core::group::Output;
use keel_core::group::Protocol;
use keel_core::group::Reply;
use keel_core::group::SyncReply;
use keel_core::group::SyncRequest;
use keel_core::group::membership::Leaving;
use keel_core::group::offsets::Commit;

const SESSION_MS: u64 = 10_000;
const REBALANCE_MS: u64 = 30_000;

fn config(initial_delay_ms: u64) -> GroupConfig {
    GroupConfig { initial_rebalance_delay_ms: initial_delay_ms, ..GroupConfig::default() }
}

fn join_req(member: &str, instance: Option<&str>, subscription: &[u8]) -> JoinRequest {
    JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        instance_id: instance.map(str::to_string),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: vec![
            Protocol { name: "range".into(), metadata: Bytes::copy_from_slice(subscription) },
            Protocol { name: "roundrobin".into(), metadata: Bytes::copy_from_slice(subscription) },
        ],
        require_known_member_id: true,
    }
}

/// Drives one `Groups` and collects the replies it owes, by request id.
struct Driver {
    groups: Groups,
    now_ms: u64,
    next_request: u64,
    replies: BTreeMap<u64, Reply>,
    records: Vec<GroupRecord>,
}

impl Driver {
    fn new(initial_delay_ms: u64) -> Driver {
        Driver {
            groups: Groups::new(config(initial_delay_ms), 1),
            now_ms: 1_000,
            next_request: 0,
            replies: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    fn absorb(&mut self, out: Output) {
        self.records.extend(out.records);
        for (id, r) in out.replies {
            assert!(self.replies.insert(id, r).is_none(), "request {id} answered twice");
        }
        self.groups.check_invariants();
    }

    fn join(&mut self, req: JoinRequest) -> u64 {
        self.next_request += 1;
        let id = self.next_request;
        let mut out = Output::default();
        self.groups.join(self.now_ms, id, req, &mut out);
        self.absorb(out);
        id
    }

    fn sync(&mut self, member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> u64 {
        self.next_request += 1;
        let id = self.next_request;
        let req = SyncRequest {
            group: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a))).collect(),
        };
        let mut out = Output::default();
        self.groups.sync(self.now_ms, id, req, &mut out);
        self.absorb(out);
        id
    }

    fn tick(&mut self, advance_ms: u64) {
        self.now_ms += advance_ms;
        let mut out = Output::default();
        self.groups.tick(self.now_ms, &mut out);
        self.absorb(out);
    }

    fn join_reply(&mut self, id: u64) -> Option<JoinReply> {
        match self.replies.remove(&id)? {
            Reply::Join(r) => Some(r),
            other => panic!("expected a join reply, got {other:?}"),
        }
    }

    fn sync_reply(&mut self, id: u64) -> Option<SyncReply> {
        match self.replies.remove(&id)? {
            Reply::Sync(r) => Some(r),
            other => panic!("expected a sync reply, got {other:?}"),
        }
    }

    /// A new dynamic member: MemberIdRequired, then the join with the id (answered later).
    fn new_member(&mut self) -> (String, u64) {
        let first = self.join(join_req("", None, b"sub"));
        let r = self.join_reply(first).expect("MemberIdRequired at once");
        assert_eq!(r.error, Some(GroupError::MemberIdRequired));
        let id = r.member_id.clone();
        (id.clone(), self.join(join_req(&id, None, b"sub")))
    }

    fn state(&self) -> GroupState {
        self.groups.group("g").expect("group").state
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> Result<(), GroupError> {
        self.groups.heartbeat(self.now_ms, "g", member, None, generation)
    }

    fn commit(&mut self, member: &str, generation: i32, offset: i64) -> Result<(), GroupError> {
        let mut out = Output::default();
        let c = Commit { topic: "t".into(), partition: 0, offset, leader_epoch: -1, metadata: None };
        let r = self.groups.commit(self.now_ms, "g", generation, member, None, &[c], &mut out);
        self.absorb(out);
        r.into_iter().next().expect("one answer")
    }
}

/// Two members through a full rebalance: both join, the leader (and only it) sees the members'
/// subscriptions, its assignment reaches both, and the group is Stable in generation 1.
fn stable_pair(d: &mut Driver) -> (String, String, i32) {
    let (a, ja) = d.new_member();
    let (b, jb) = d.new_member();
    assert!(d.join_reply(ja).is_none(), "join answered before the join phase ended");
    d.tick(3_000);
    assert!(d.join_reply(ja).is_none(), "a member joined during the initial delay: it is extended");
    d.tick(3_000);
    let ra = d.join_reply(ja).expect("join answered when the extended delay ended");
    let rb = d.join_reply(jb).expect("join answered");
    assert_eq!((ra.error, rb.error), (None, None));
    assert_eq!(ra.generation, 1);
    assert_eq!(ra.protocol_name.as_deref(), Some("range"), "the first protocol both prefer");
    let (leader, follower) = if ra.leader == a { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
    let lr = if leader == a { &ra } else { &rb };
    let fr = if leader == a { &rb } else { &ra };
    assert_eq!(lr.members.len(), 2, "the leader sees every member");
    assert!(fr.members.is_empty(), "a follower sees none");
    assert_eq!(d.state(), GroupState::CompletingRebalance);
    let sf = d.sync(&follower, 1, &[]);
    assert!(d.sync_reply(sf).is_none(), "a follower waits for the leader's assignment");
    let sl = d.sync(&leader, 1, &[(leader.as_str(), b"A-L"), (follower.as_str(), b"A-F")]);
    assert_eq!(d.sync_reply(sl).expect("leader answered").assignment.as_ref(), b"A-L");
    assert_eq!(d.sync_reply(sf).expect("follower answered").assignment.as_ref(), b"A-F");
    assert_eq!(d.state(), GroupState::Stable);
    assert!(matches!(d.records.last(), Some(GroupRecord::Metadata { value: Some(_), .. })), "metadata persisted");
    (leader, follower, 1)
}

#[test]
fn kafka_rebalance_join_sync_distributes_the_leaders_assignment() {
    let mut d = Driver::new(3_000);
    let (leader, follower, generation) = stable_pair(&mut d);
    assert_eq!(d.heartbeat(&leader, generation), Ok(()));
    assert_eq!(d.heartbeat(&follower, generation), Ok(()));
}

#[test]
fn kafka_fencing_stale_generations_and_unknown_members_are_refused() {
    let mut d = Driver::new(3_000);
    let (leader, _follower, generation) = stable_pair(&mut d);
    assert_eq!(d.heartbeat(&leader, generation - 1), Err(GroupError::IllegalGeneration));
    assert_eq!(d.heartbeat("nobody", generation), Err(GroupError::UnknownMemberId));
    assert_eq!(d.commit(&leader, generation - 1, 5), Err(GroupError::IllegalGeneration));
    assert_eq!(d.commit("nobody", generation, 5), Err(GroupError::UnknownMemberId));
    assert_eq!(d.commit("", -1, 5), Err(GroupError::IllegalGeneration), "simple commit into a live group");
    assert_eq!(d.commit(&leader, generation, 5), Ok(()));
    let fetched = d.groups.fetch("g", Some(&[("t".to_string(), 0)]));
    assert_eq!(fetched[0].1.as_ref().map(|o| o.offset), Some(5));
}

#[test]
fn kafka_heartbeat_during_a_rebalance_says_rebalance_in_progress() {
    let mut d = Driver::new(3_000);
    let (leader, follower, generation) = stable_pair(&mut d);
    // A third member joins: the group prepares a rebalance.
    let (_c, jc) = d.new_member();
    assert_eq!(d.state(), GroupState::PreparingRebalance);
    assert_eq!(d.heartbeat(&leader, generation), Err(GroupError::RebalanceInProgress));
    // Everyone rejoins: the join phase ends at once (no initial delay outside Empty).
    let jl = d.join(join_req(&leader, None, b"sub"));
    let jf = d.join(join_req(&follower, None, b"sub"));
    for j in [jc, jl, jf] {
        assert_eq!(d.join_reply(j).expect("joined").generation, generation + 1);
    }
    assert_eq!(d.heartbeat(&leader, generation), Err(GroupError::IllegalGeneration), "fenced by the new generation");
}

#[test]
fn kafka_session_timeout_removes_exactly_the_silent_member() {
    let mut d = Driver::new(3_000);
    let (leader, follower, generation) = stable_pair(&mut d);
    // The follower's session ends SESSION_MS after its SyncGroup; the leader keeps heartbeating.
    for _ in 0..3 {
        d.tick(SESSION_MS / 4);
        assert_eq!(d.heartbeat(&leader, generation), Ok(()));
    }
    d.tick(SESSION_MS / 4 - 1);
    assert_eq!(d.heartbeat(&leader, generation), Ok(()), "one millisecond before the follower's session ends");
    d.tick(1);
    let g = d.groups.group("g").expect("group");
    assert!(!g.members.contains_key(&follower), "the silent member expired");
    assert!(g.members.contains_key(&leader), "the heartbeating member stays");
    assert_eq!(d.state(), GroupState::PreparingRebalance);
    let j = d.join(join_req(&leader, None, b"sub"));
    let r = d.join_reply(j).expect("the survivor alone completes the join");
    assert_eq!((r.generation, r.leader.as_str(), r.members.len()), (generation + 1, leader.as_str(), 1));
}

#[test]
fn kafka_leave_group_rebalances_and_an_empty_group_accepts_simple_commits() {
    let mut d = Driver::new(3_000);
    let (leader, follower, _) = stable_pair(&mut d);
    let mut out = Output::default();
    let answers = d
        .groups
        .leave(
            d.now_ms,
            "g",
            &[
                Leaving { member_id: leader.clone(), instance_id: None },
                Leaving { member_id: follower.clone(), instance_id: None },
                Leaving { member_id: "nobody".into(), instance_id: None },
            ],
            &mut out,
        )
        .expect("group known");
    d.absorb(out);
    assert_eq!(answers, vec![Ok(()), Ok(()), Err(GroupError::UnknownMemberId)]);
    assert_eq!(d.state(), GroupState::Empty);
    assert_eq!(d.groups.group("g").expect("group").generation, 2);
    assert_eq!(d.commit("", -1, 9), Ok(()), "simple commit into an empty group");
    let mut out = Output::default();
    assert_eq!(d.groups.delete_group(d.now_ms, "g", &mut out), Ok(()));
    assert!(d.groups.group("g").is_none());
    assert!(
        out.records
            .iter()
            .all(|r| matches!(r, GroupRecord::Offset { value: None, .. } | GroupRecord::Metadata { value: None, .. }))
    );
}

#[test]
fn kafka_delete_of_a_group_with_members_is_refused() {
    let mut d = Driver::new(0);
    let (_a, ja) = d.new_member();
    assert!(d.join_reply(ja).is_some(), "without an initial delay the lone member completes the join at once");
    let mut out = Output::default();
    assert_eq!(d.groups.delete_group(d.now_ms, "g", &mut out), Err(GroupError::NonEmptyGroup));
    assert_eq!(d.groups.delete_group(d.now_ms, "other", &mut out), Err(GroupError::GroupIdNotFound));
}

#[test]
fn kafka_static_member_rejoining_with_unchanged_protocols_keeps_the_generation() {
    let mut d = Driver::new(0);
    let j = d.join(join_req("", Some("i-1"), b"sub"));
    let r = d.join_reply(j).expect("a static member joins without MemberIdRequired");
    assert_eq!(r.error, None);
    let old = r.member_id.clone();
    let s = d.sync(&old, r.generation, &[(old.as_str(), b"A")]);
    assert_eq!(d.sync_reply(s).expect("synced").assignment.as_ref(), b"A");
    // The process restarts: it rejoins with its instance id and no member id.
    let j2 = d.join(join_req("", Some("i-1"), b"sub"));
    let r2 = d.join_reply(j2).expect("answered at once");
    assert_eq!(r2.error, None);
    assert_eq!(r2.generation, r.generation, "no rebalance");
    assert_ne!(r2.member_id, old);
    assert_eq!(d.state(), GroupState::Stable);
    let s2 = d.sync(&r2.member_id, r2.generation, &[]);
    assert_eq!(d.sync_reply(s2).expect("synced").assignment.as_ref(), b"A", "the assignment survives");
    // The old incarnation is fenced.
    assert_eq!(d.groups.heartbeat(d.now_ms, "g", &old, Some("i-1"), r.generation), Err(GroupError::FencedInstanceId));
}

#[test]
fn kafka_sync_timeout_removes_members_that_never_synced() {
    let mut d = Driver::new(0);
    let (a, ja) = d.new_member();
    let ra = d.join_reply(ja).expect("joined");
    assert_eq!(ra.leader, a);
    // The leader never sends SyncGroup.
    d.tick(REBALANCE_MS);
    assert!(d.groups.group("g").expect("group").members.is_empty());
    assert_eq!(d.state(), GroupState::Empty);
}

#[test]
fn kafka_inconsistent_protocols_and_bad_session_timeouts_are_refused() {
    let mut d = Driver::new(0);
    let mut bad = join_req("", None, b"x");
    bad.session_timeout_ms = 1;
    let j = d.join(bad);
    assert_eq!(d.join_reply(j).expect("answered").error, Some(GroupError::InvalidSessionTimeout));
    let (_a, ja) = d.new_member();
    d.join_reply(ja).expect("joined");
    let mut other = join_req("", None, b"x");
    other.protocols = vec![Protocol { name: "sticky".into(), metadata: Bytes::new() }];
    let j = d.join(other);
    assert_eq!(d.join_reply(j).expect("answered").error, Some(GroupError::InconsistentGroupProtocol));
}

#[test]
fn retention_expires_offsets_of_groups_empty_for_longer_than_it() {
    let mut d = Driver::new(0);
    assert_eq!(d.commit("", -1, 3), Ok(()));
    let mut out = Output::default();
    assert_eq!(d.groups.expire_offsets(d.now_ms + 999, 1_000, &mut out), 0);
    assert_eq!(d.groups.expire_offsets(d.now_ms + 1_000, 1_000, &mut out), 1);
    assert!(d.groups.group("g").is_none(), "an empty group without offsets goes");
    assert_eq!(out.records.len(), 2, "an offset tombstone and a group tombstone");
}

#[test]
fn offsets_records_fold_back_into_a_stable_group_after_failover() {
    let mut d = Driver::new(3_000);
    let (leader, follower, generation) = stable_pair(&mut d);
    assert_eq!(d.commit(&leader, generation, 42), Ok(()));
    // Encode and decode every record, then load them into a new incarnation.
    let mut restored = Groups::new(config(3_000), 2);
    for r in &d.records {
        let (k, v) = r.encode();
        let decoded = GroupRecord::decode(Some(&k), v.as_deref()).expect("decodes");
        assert_eq!(&decoded, r);
        restored.load(50_000, decoded);
    }
    restored.check_invariants();
    let g = restored.group("g").expect("restored");
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.generation, generation);
    assert_eq!(g.members.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([leader.clone(), follower.clone()]));
    assert_eq!(g.members[&follower].assignment.as_ref(), b"A-F");
    assert_eq!(restored.fetch("g", None)[0].1.as_ref().map(|o| o.offset), Some(42));
    assert_eq!(restored.heartbeat(50_000, "g", &follower, None, generation), Ok(()), "no rebalance after failover");
}

#[test]
fn corrupt_offsets_records_are_errors_not_panics() {
    assert!(GroupRecord::decode(None, None).is_err());
    assert!(GroupRecord::decode(Some(&[]), None).is_err());
    assert!(GroupRecord::decode(Some(&[9, 1, 2]), None).is_err(), "unknown version");
    assert!(GroupRecord::decode(Some(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), None).is_err());
    let (k, _) = GroupRecord::Metadata { group: "g".into(), value: None }.encode();
    assert!(GroupRecord::decode(Some(&k), Some(&[0, 1])).is_err(), "truncated value");
}

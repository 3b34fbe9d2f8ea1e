//! Properties of the consumer-group state machine (`keel_core::group`) under random schedules
//! of joins, syncs, heartbeats, commits, leaves and the passing of time, driven by simulated
//! consumers that behave as Kafka clients do (rejoin with the id they were given, the leader
//! assigns, followers wait):
//!
//! 1. generations never go back;
//! 2. at most one leader per generation (every JoinGroup answer of a generation names it);
//! 3. a member of the group fenced by a newer generation gets ILLEGAL_GENERATION;
//! 4. every member of a completed generation gets the leader's assignment for it;
//! 5. commits from stale generations are refused (and leave the committed offset alone);
//! 6. timeouts remove exactly the silent members: every member whose session ran out without a
//!    join or sync pending is removed, and no member is removed that had heartbeated within its
//!    session unless it missed the end of a join or sync phase.
//!
//! `PROPTEST_CASES=5000` for a longer hunt.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Bytes;
use keel_core::group::GroupConfig;
use keel_core::group::GroupError;
use keel_core::group::GroupState;
use keel_core::group::Groups;
use keel_core::group::JoinRequest;
use keel_core::group::Output;
use keel_core::group::Protocol;
use keel_core::group::Reply;
use keel_core::group::SyncRequest;
use keel_core::group::membership::Leaving;
use keel_core::group::offsets::Commit;
use proptest::prelude::*;

const GROUP: &str = "g";
const SESSION_MS: u64 = 10_000;
const REBALANCE_MS: u64 = 20_000;
const CONSUMERS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Commit(usize, i64),
    Leave(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CONSUMERS).prop_map(Op::Join),
        3 => (0..CONSUMERS).prop_map(Op::Sync),
        3 => (0..CONSUMERS).prop_map(Op::Heartbeat),
        2 => (0..CONSUMERS, 0i64..1000).prop_map(|(c, o)| Op::Commit(c, o)),
        1 => (0..CONSUMERS).prop_map(Op::Leave),
        3 => (0u64..12_000).prop_map(Op::Advance),
    ]
}

/// One simulated consumer.
#[derive(Debug, Default, Clone)]
struct Consumer {
    member_id: String,
    generation: i32,
    /// The members to assign, when the last JoinGroup answer made it the leader.
    leading: Option<Vec<String>>,
    pending_join: Option<u64>,
    /// (request, generation it was sent in).
    pending_sync: Option<(u64, i32)>,
}

struct World {
    groups: Groups,
    now_ms: u64,
    next_request: u64,
    consumers: Vec<Consumer>,
    /// Request id → consumer.
    owner: BTreeMap<u64, usize>,
    leader_of: BTreeMap<i32, String>,
    last_generation: i32,
    committed: Option<i64>,
}

fn assignment_for(generation: i32, member: &str) -> Bytes {
    Bytes::from(format!("{generation}:{member}"))
}

impl World {
    fn new(initial_delay_ms: u64) -> World {
        let config = GroupConfig { initial_rebalance_delay_ms: initial_delay_ms, ..GroupConfig::default() };
        World {
            groups: Groups::new(config, 7),
            now_ms: 0,
            next_request: 0,
            consumers: vec![Consumer::default(); CONSUMERS],
            owner: BTreeMap::new(),
            leader_of: BTreeMap::new(),
            last_generation: 0,
            committed: None,
        }
    }

    fn request(&mut self, consumer: usize) -> u64 {
        self.next_request += 1;
        self.owner.insert(self.next_request, consumer);
        self.next_request
    }

    fn generation(&self) -> i32 {
        self.groups.group(GROUP).map_or(0, |g| g.generation)
    }

    fn is_member(&self, member_id: &str) -> bool {
        self.groups.group(GROUP).is_some_and(|g| g.members.contains_key(member_id))
    }

    fn deliver(&mut self, out: Output) -> Result<(), TestCaseError> {
        for (request, reply) in out.replies {
            let c = self.owner.remove(&request).expect("a reply to a request that was sent");
            let consumer = &mut self.consumers[c];
            match reply {
                Reply::Join(r) => {
                    prop_assert_eq!(consumer.pending_join, Some(request), "join reply to a request not pending");
                    consumer.pending_join = None;
                    match r.error {
                        None => {
                            let leader = self.leader_of.entry(r.generation).or_insert_with(|| r.leader.clone());
                            prop_assert_eq!(&*leader, &r.leader, "two leaders in generation {}", r.generation);
                            consumer.member_id = r.member_id.clone();
                            consumer.generation = r.generation;
                            consumer.leading = (r.leader == r.member_id && !r.skip_assignment)
                                .then(|| r.members.iter().map(|m| m.member_id.clone()).collect());
                        }
                        Some(GroupError::MemberIdRequired) => consumer.member_id = r.member_id.clone(),
                        Some(GroupError::UnknownMemberId) => consumer.member_id.clear(),
                        Some(_) => {}
                    }
                }
                Reply::Sync(r) => {
                    let (pending, generation) = consumer.pending_sync.take().expect("sync reply without a sync");
                    prop_assert_eq!(pending, request);
                    if r.error.is_none() {
                        prop_assert_eq!(
                            &r.assignment,
                            &assignment_for(generation, &consumer.member_id),
                            "member {} of generation {} did not get the leader's assignment",
                            consumer.member_id,
                            generation
                        );
                    }
                }
            }
        }
        self.groups.check_invariants();
        let generation = self.generation();
        prop_assert!(generation >= self.last_generation, "generation went back");
        self.last_generation = generation;
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut out = Output::default();
        match *op {
            Op::Join(c) => {
                if self.consumers[c].pending_join.is_some() {
                    return Ok(());
                }
                let request = self.request(c);
                self.consumers[c].pending_join = Some(request);
                let req = JoinRequest {
                    group: GROUP.into(),
                    member_id: self.consumers[c].member_id.clone(),
                    instance_id: None,
                    client_id: format!("c{c}"),
                    client_host: "/10.0.0.1".into(),
                    session_timeout_ms: SESSION_MS,
                    rebalance_timeout_ms: REBALANCE_MS,
                    protocol_type: "consumer".into(),
                    protocols: vec![Protocol { name: "range".into(), metadata: Bytes::from_static(b"t") }],
                    require_known_member_id: true,
                };
                self.groups.join(self.now_ms, request, req, &mut out);
            }
            Op::Sync(c) => {
                let consumer = self.consumers[c].clone();
                if consumer.member_id.is_empty() || consumer.pending_sync.is_some() {
                    return Ok(());
                }
                let request = self.request(c);
                self.consumers[c].pending_sync = Some((request, consumer.generation));
                let assignments = consumer
                    .leading
                    .iter()
                    .flatten()
                    .map(|m| (m.clone(), assignment_for(consumer.generation, m)))
                    .collect();
                let req = SyncRequest {
                    group: GROUP.into(),
                    generation: consumer.generation,
                    member_id: consumer.member_id.clone(),
                    instance_id: None,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignments,
                };
                self.groups.sync(self.now_ms, request, req, &mut out);
            }
            Op::Heartbeat(c) => {
                let consumer = self.consumers[c].clone();
                if consumer.member_id.is_empty() {
                    return Ok(());
                }
                let member = self.is_member(&consumer.member_id);
                let current = self.generation();
                let answer = self.groups.heartbeat(self.now_ms, GROUP, &consumer.member_id, None, consumer.generation);
                if member && consumer.generation != current {
                    prop_assert_eq!(answer, Err(GroupError::IllegalGeneration), "a fenced member's heartbeat");
                }
                if !member {
                    prop_assert_eq!(answer, Err(GroupError::UnknownMemberId));
                }
            }
            Op::Commit(c, offset) => {
                let consumer = self.consumers[c].clone();
                let member = self.is_member(&consumer.member_id);
                let current = self.generation();
                let commit = Commit { topic: "t".into(), partition: 0, offset, leader_epoch: -1, metadata: None };
                let generation = if consumer.member_id.is_empty() { -1 } else { consumer.generation };
                let answer = self.groups.commit(
                    self.now_ms,
                    GROUP,
                    generation,
                    &consumer.member_id,
                    None,
                    std::slice::from_ref(&commit),
                    &mut out,
                );
                let ok = answer[0].is_ok();
                if ok {
                    self.committed = Some(offset);
                }
                if !consumer.member_id.is_empty() && (!member || consumer.generation != current) {
                    prop_assert!(!ok, "a commit from a stale generation was accepted");
                }
                let stored = self.groups.fetch(GROUP, Some(&[("t".to_string(), 0)]))[0].1.as_ref().map(|o| o.offset);
                prop_assert_eq!(stored, self.committed);
            }
            Op::Leave(c) => {
                let consumer = self.consumers[c].clone();
                if consumer.member_id.is_empty() {
                    return Ok(());
                }
                let leaving = [Leaving { member_id: consumer.member_id.clone(), instance_id: None }];
                let _ = self.groups.leave(self.now_ms, GROUP, &leaving, &mut out);
                self.consumers[c].member_id.clear();
            }
            Op::Advance(ms) => {
                self.now_ms += ms;
                let before = self.groups.group(GROUP).cloned();
                self.groups.tick(self.now_ms, &mut out);
                if let Some(before) = before {
                    let after: BTreeSet<String> =
                        self.groups.group(GROUP).map(|g| g.members.keys().cloned().collect()).unwrap_or_default();
                    let join_due = before.state == GroupState::PreparingRebalance
                        && before.join_deadline_ms.is_some_and(|d| d <= self.now_ms);
                    let sync_due = before.state == GroupState::CompletingRebalance
                        && before.sync_deadline_ms.is_some_and(|d| d <= self.now_ms);
                    for m in before.members.values() {
                        let idle = m.awaiting_join.is_none() && m.awaiting_sync.is_none();
                        let expired = idle && m.last_heartbeat_ms + m.session_timeout_ms <= self.now_ms;
                        if expired {
                            prop_assert!(!after.contains(&m.member_id), "silent member {} kept", m.member_id);
                        }
                        let missed_phase =
                            (join_due && m.awaiting_join.is_none()) || (sync_due && m.awaiting_sync.is_none());
                        if !after.contains(&m.member_id) && !expired && !missed_phase {
                            // Removed only because others left and the phase ended early: it
                            // must then not have been idle within a finished phase.
                            prop_assert!(
                                !idle,
                                "live member {} removed (heartbeat at {}, now {})",
                                m.member_id,
                                m.last_heartbeat_ms,
                                self.now_ms
                            );
                        }
                    }
                }
            }
        }
        self.deliver(out)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: keel_proptests::cases(256), ..ProptestConfig::default() })]

    #[test]
    fn group_membership_invariants(initial_delay in prop_oneof![Just(0u64), Just(3_000u64)], ops in prop::collection::vec(op(), 1..200)) {
        let mut world = World::new(initial_delay);
        for op in &ops {
            world.step(op)?;
        }
    }

    /// A group driven by well-behaved consumers (everyone rejoins and syncs, nobody goes
    /// silent) reaches Stable, with every member holding its generation's assignment.
    #[test]
    fn cooperative_consumers_reach_a_stable_generation(n in 1usize..=CONSUMERS, initial_delay in prop_oneof![Just(0u64), Just(3_000u64)]) {
        let mut world = World::new(initial_delay);
        for _ in 0..6 {
            for c in 0..n {
                world.step(&Op::Join(c))?;
            }
            world.step(&Op::Advance(3_000))?;
            for c in 0..n {
                world.step(&Op::Sync(c))?;
            }
        }
        let g = world.groups.group(GROUP).expect("group").clone();
        prop_assert_eq!(g.state, GroupState::Stable);
        prop_assert_eq!(g.members.len(), n);
        for m in g.members.values() {
            prop_assert_eq!(&m.assignment, &assignment_for(g.generation, &m.member_id));
        }
    }
}

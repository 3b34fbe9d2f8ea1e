//! Property test of how a partition replica answers votes: a real replica (`Replica::open` on the
//! simulated disk, openraft with Keel's log store) follows a scripted leader that replicates
//! random entries over random terms, and is asked for votes and pre-votes — through
//! `raft::network::serve`, the handler a node's transport calls — by candidates with random
//! terms and last log ids.
//!
//! The invariant is Raft's election restriction (§5.4.1): a vote (or pre-vote) is granted only
//! to a candidate whose last log id is at least the voter's, so a replica missing committed
//! entries can never gather a quorum and lead (no unclean failover). The canary
//! `canary-vote-without-log-check` makes the handler skip that check; a grant to a candidate
//! with a shorter or older log then fails this test.
//!
//! Candidates set `leadership_transfer`, as a leader's TransferLeader makes them do, so the voter
//! answers a vote despite its leader lease (which would otherwise refuse every vote while the
//! scripted leader is fresh) and the log check is what decides. A pre-vote always honours the
//! lease; it is decided by the log once the voter has voted for a candidate since the last
//! leader it heard from. The test expects a grant exactly when these rules give one, so a
//! handler that refused everything would fail it too.
//!
//! Runs on tokio (a current-thread runtime per case); the madsim build leaves it out.
#![cfg(not(madsim))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use keel_core::batch::BatchBuilder;
use keel_core::log::LogConfig;
use keel_core::storage::sim::SimStorage;
use keel_node::partition::{LogObserver, Replica, ReplicaConfig};
use keel_node::raft::network::{self, KIND_APPEND, KIND_PRE_VOTE, KIND_VOTE};
use keel_node::raft::{Batch, Entry, Membership, RaftTiming, TypeConfig, Vote, log_id};
use keel_node::transport::{ClientOnly, Transport, TransportConfig};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use proptest::prelude::*;

/// The replica under test; the scripted leader and the candidates are the other two members.
const VOTER: u64 = 1;

#[derive(Debug, Clone)]
enum Op {
    /// A leader (member 2 or 3) of a new term replicates `count` entries after the voter's last.
    Replicate { leader: u64, count: u8 },
    /// A candidate asks for a vote in a term `term_ahead` past the highest seen, claiming a last
    /// log id (term, index) drawn relative to the voter's own.
    Ask { candidate: u64, pre_vote: bool, term_ahead: u8, last_term_delta: i8, last_index_delta: i8, has_log: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (2u64..4, 1u8..5).prop_map(|(leader, count)| Op::Replicate { leader, count }),
        3 => (2u64..4, any::<bool>(), 0u8..3, -2i8..=1, -3i8..=2, proptest::bool::weighted(0.9)).prop_map(
            |(candidate, pre_vote, term_ahead, last_term_delta, last_index_delta, has_log)| Op::Ask {
                candidate,
                pre_vote,
                term_ahead,
                last_term_delta,
                last_index_delta,
                has_log,
            }
        ),
    ]
}

fn batch(index: u64) -> Bytes {
    let mut b = BatchBuilder::new(index as i64);
    b.push(index as i64, None, Some(&index.to_be_bytes()));
    Bytes::from(b.build())
}

async fn open_voter(seed: u64) -> Arc<Replica> {
    // Timeouts far beyond the test, so the voter never campaigns by itself.
    let timing = RaftTiming { heartbeat_ms: 20_000, election_timeout_min_ms: 60_000, election_timeout_max_ms: 90_000 };
    let config =
        ReplicaConfig::new(LogConfig::default(), keel_node::raft::config("vote-test", timing).expect("raft config"));
    // No peer addresses: whatever the voter sends fails; only what it answers matters.
    let transport =
        Transport::new(VOTER, TransportConfig::new("vote-test"), Arc::new(ClientOnly)).expect("transport config");
    Replica::open(VOTER, VOTER, 7, SimStorage::new(seed), "/n1/p7".into(), &config, transport, Arc::new(LogObserver))
        .await
        .expect("open replica")
}

async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    replica: &Replica,
    kind: u8,
    req: Req,
) -> Result<Resp, String> {
    let body = network::encode(&(VOTER, req))?;
    let answer = network::serve(replica.raft(), VOTER, kind, &body).await?;
    network::decode(&answer)
}

async fn run(seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let voter = open_voter(seed).await;
    // The voter's log as the model knows it: (term, index) of the last entry.
    let mut last: Option<(u64, u64)> = None;
    // The highest term anyone used so far.
    let mut term = 0u64;
    // Whether the voter follows a leader whose lease (an election timeout, a minute here) holds.
    let mut leased = false;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Replicate { leader, count } => {
                term += 1;
                let mut entries: Vec<Entry> = Vec::new();
                let mut index = last.map_or(0, |(_, i)| i + 1);
                if last.is_none() {
                    let voters = BTreeSet::from([1, 2, 3]);
                    let nodes: BTreeMap<u64, openraft::BasicNode> =
                        voters.iter().map(|&n| (n, openraft::BasicNode::default())).collect();
                    let m = Membership::new(vec![voters], nodes).expect("membership");
                    entries.push(Entry::new(log_id(term, index), EntryPayload::Membership(m)));
                    index += 1;
                }
                for _ in 0..count {
                    entries.push(Entry::new(log_id(term, index), EntryPayload::Normal(Batch(batch(index)))));
                    index += 1;
                }
                let req = AppendEntriesRequest::<TypeConfig> {
                    vote: Vote::new_committed(term, leader),
                    prev_log_id: last.map(|(t, i)| log_id(t, i)),
                    entries,
                    // Everything before this request is committed.
                    leader_commit: last.map(|(t, i)| log_id(t, i)),
                };
                let resp: AppendEntriesResponse<TypeConfig> =
                    call(&voter, KIND_APPEND, req).await.map_err(TestCaseError::fail)?;
                prop_assert!(
                    matches!(resp, AppendEntriesResponse::Success),
                    "step {}: the voter refused leader {}'s entries: {:?}",
                    step,
                    leader,
                    resp
                );
                last = Some((term, index - 1));
                leased = true;
            }
            Op::Ask { candidate, pre_vote, term_ahead, last_term_delta, last_index_delta, has_log } => {
                term += u64::from(term_ahead) + 1;
                // A candidate's last entry is of a term before the one it campaigns in.
                let candidate_last = last.or(Some((1, 0))).filter(|_| has_log).and_then(|(t, i)| {
                    let t = t.saturating_add_signed(i64::from(last_term_delta)).max(1).min(term - 1);
                    (t > 0).then(|| (t, i.saturating_add_signed(i64::from(last_index_delta))))
                });
                let req = VoteRequest::<TypeConfig> {
                    vote: Vote::new(term, candidate),
                    last_log_id: candidate_last.map(|(t, i)| log_id(t, i)),
                    leadership_transfer: true,
                };
                let kind = if pre_vote { KIND_PRE_VOTE } else { KIND_VOTE };
                let resp: VoteResponse<TypeConfig> = call(&voter, kind, req).await.map_err(TestCaseError::fail)?;
                // The §5.4.1 order: a higher last term wins; equal terms compare the index.
                let up_to_date = candidate_last >= last;
                // Each request is of a term above every earlier one, so the log decides, except
                // that a pre-vote (never a leadership transfer) honours the lease of the leader
                // the voter follows.
                let expected = up_to_date && !(pre_vote && leased);
                prop_assert_eq!(
                    resp.vote_granted,
                    expected,
                    "step {}: {} to candidate {} in term {} with last log id {:?} (voter's: {:?})",
                    step,
                    if pre_vote { "pre-vote" } else { "vote" },
                    candidate,
                    term,
                    candidate_last,
                    last
                );
                // A granted vote replaces the leader's (committed) vote with the candidate's.
                leased &= !resp.vote_granted || pre_vote;
            }
        }
    }
    voter.shutdown().await;
    Ok(())
}

proptest! {
    // 64 cases by default; `PROPTEST_CASES=5000` for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: keel_proptests::cases(64),
        ..ProptestConfig::default()
    })]

    /// Protects the election restriction: no vote or pre-vote for a candidate with an older log.
    #[test]
    fn votes_only_for_up_to_date_candidates(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(seed, ops))?;
    }
}

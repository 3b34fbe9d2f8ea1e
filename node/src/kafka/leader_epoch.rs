//! OffsetForLeaderEpoch (KIP-320): where a leader epoch ends in a partition's log.
//!
//! Consumers send it after a leader change (librdkafka, the Java client): with the epoch of
//! the last record they consumed, they learn where that epoch ends in the new leader's log; an
//! end below their position means the log they read from was truncated. A partition's leader
//! epoch is its Raft term, and each stored batch carries the term it was appended in, so the
//! answer comes from the log's epoch cache (`keel_core::log::epochs`): the largest epoch ≤ the
//! requested one and its end offset (where the next epoch starts, or the log end for the latest
//! epoch). A consumer's answer (replica id -1, and every request before v3, which has no replica
//! id) never goes past the high watermark, the end of what it can have read (KIP-392); the
//! debug replica id -2 and broker ids see the log end. Until a new leader has applied an entry of
//! its own term its high watermark may be behind what earlier leaders committed, so a consumer
//! then gets OFFSET_NOT_AVAILABLE (retriable) rather than an end offset that could look like a
//! truncation (KIP-320's rule). Only leaders answer.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::OffsetForLeaderEpochResponse;
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::offset_for_leader_epoch_response::OffsetForLeaderTopicResult;
use uuid::Uuid;

use super::Answer;
use super::Request;
use super::fetch::group_of;
use super::fetch::leader_replica;
use super::respond;
use crate::node::Node;

/// Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
const UNDEFINED: (i32, i64) = (-1, -1);

/// One partition's question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochQuery {
    /// The leader epoch the client believes current (-1: not checked).
    pub current_leader_epoch: i32,
    /// The epoch whose end is asked for.
    pub leader_epoch: i32,
    /// A consumer: the answer stops at the high watermark.
    pub bounded: bool,
}

/// The leader's state the answer depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaderView {
    /// The leader's Raft term: the current leader epoch.
    pub term: u64,
    pub high_watermark: u64,
    /// The leader has applied an entry of its own term, so its high watermark is known (KIP-320:
    /// until then a consumer's answer, bounded by it, could fall below what the consumer read).
    pub high_watermark_known: bool,
}

/// (leader epoch, end offset) for `q`, or the partition's error. `end_offset_for` is the log's
/// lookup: (largest epoch <= the one given, its end offset).
pub(crate) fn decide(
    q: EpochQuery,
    leader: LeaderView,
    end_offset_for: impl FnOnce(u64) -> Option<(u64, u64)>,
) -> Result<(i32, i64), ResponseError> {
    if q.current_leader_epoch >= 0 {
        let asked = q.current_leader_epoch as u64;
        if asked < leader.term {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if asked > leader.term {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
    }
    let Ok(requested) = u64::try_from(q.leader_epoch) else {
        return Ok(UNDEFINED);
    };
    let Some((epoch, end)) = end_offset_for(requested) else {
        return Ok(UNDEFINED);
    };
    if q.bounded && !leader.high_watermark_known {
        return Err(ResponseError::OffsetNotAvailable);
    }
    let end = if q.bounded { end.min(leader.high_watermark) } else { end };
    match (i32::try_from(epoch), i64::try_from(end)) {
        (Ok(epoch), Ok(end)) => Ok((epoch, end)),
        _ => Err(ResponseError::UnknownServerError),
    }
}

pub(crate) fn offset_for_leader_epoch(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: OffsetForLeaderEpochRequest = req.decode()?;
    // Before v3 only consumers sent it; from v3 on they say so with -1.
    let bounded = req.version < 3 || request.replica_id.0 == -1;
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let q = EpochQuery { current_leader_epoch: p.current_leader_epoch, leader_epoch: p.leader_epoch, bounded };
            let (group, unknown) = group_of(node, t.topic.0.as_str(), Uuid::nil(), false, p.partition);
            let answer = leader_replica(node, group, unknown).and_then(|replica| {
                if replica.failed().is_some() {
                    return Err(ResponseError::KafkaStorageError);
                }
                let term = replica.term();
                let leader = LeaderView {
                    term,
                    high_watermark: replica.high_watermark(),
                    high_watermark_known: replica.term_entry_applied(term),
                };
                decide(q, leader, |epoch| replica.end_offset_for_epoch(epoch))
            });
            let (error_code, (leader_epoch, end_offset)) = match answer {
                Ok(found) => (0, found),
                Err(code) => (code.code(), UNDEFINED),
            };
            partitions.push(
                EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_error_code(error_code)
                    .with_leader_epoch(leader_epoch)
                    .with_end_offset(end_offset),
            );
        }
        topics.push(OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions));
    }
    respond(req, &OffsetForLeaderEpochResponse::default().with_topics(topics))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: LeaderView = LeaderView { term: 7, high_watermark: 40, high_watermark_known: true };

    fn q(current: i32, epoch: i32, bounded: bool) -> EpochQuery {
        EpochQuery { current_leader_epoch: current, leader_epoch: epoch, bounded }
    }

    /// Epochs 3 (from 0) and 7 (from 25); log end 50.
    fn lookup(epoch: u64) -> Option<(u64, u64)> {
        match epoch {
            0..=2 => Some((epoch, 0)),
            3..=6 => Some((3, 25)),
            7 => Some((7, 50)),
            _ => None,
        }
    }

    #[test]
    fn a_stale_or_future_current_epoch_is_fenced() {
        assert_eq!(decide(q(6, 3, true), LEADER, lookup), Err(ResponseError::FencedLeaderEpoch));
        assert_eq!(decide(q(8, 3, true), LEADER, lookup), Err(ResponseError::UnknownLeaderEpoch));
        assert_eq!(decide(q(7, 3, true), LEADER, lookup), Ok((3, 25)));
        assert_eq!(decide(q(-1, 5, true), LEADER, lookup), Ok((3, 25)), "-1: not checked");
    }

    #[test]
    fn consumers_are_bounded_by_the_high_watermark_brokers_are_not() {
        assert_eq!(decide(q(7, 7, true), LEADER, lookup), Ok((7, 40)));
        assert_eq!(decide(q(7, 7, false), LEADER, lookup), Ok((7, 50)));
        assert_eq!(decide(q(7, 3, true), LEADER, lookup), Ok((3, 25)), "below the high watermark: as is");
    }

    #[test]
    fn a_new_leader_answers_consumers_only_once_its_high_watermark_is_known() {
        let new = LeaderView { high_watermark_known: false, ..LEADER };
        assert_eq!(decide(q(7, 3, true), new, lookup), Err(ResponseError::OffsetNotAvailable));
        assert_eq!(decide(q(7, 3, false), new, lookup), Ok((3, 25)), "brokers are not bounded");
        assert_eq!(decide(q(6, 3, true), new, lookup), Err(ResponseError::FencedLeaderEpoch), "fencing first");
    }

    #[test]
    fn unknown_epochs_are_undefined() {
        assert_eq!(decide(q(-1, 9, true), LEADER, lookup), Ok(UNDEFINED));
        assert_eq!(decide(q(-1, -1, true), LEADER, lookup), Ok(UNDEFINED));
        assert_eq!(decide(q(-1, 1, true), LEADER, lookup), Ok((1, 0)));
    }
}

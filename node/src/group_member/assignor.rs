//! Kafka's `consumer` group protocol: what members put in JoinGroup (their subscription) and
//! what the leader member hands out in SyncGroup (assignments), each `[version i16][message]`,
//! and the two classic assignors the leader runs.
//!
//! - `range` (Kafka's `RangeAssignor`, the Java consumer's default): per topic, the members
//!   subscribed to it in member-id order; each gets a contiguous run of partitions, the first
//!   `partitions % members` one more.
//! - `roundrobin` (`RoundRobinAssignor`): every subscribed partition, sorted by topic then
//!   partition, dealt to the members in member-id order, skipping members not subscribed to the
//!   partition's topic.
//!
//! Both are deterministic (sorted inputs, `BTreeMap`s), so whichever member leads, the same group
//! gets the same assignment. Pure functions: tested without a broker.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Buf;
use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::StrBytes;

use crate::kafka_client::topic_name;

/// JoinGroup's protocol type for consumers.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
pub const RANGE: &str = "range";
pub const ROUND_ROBIN: &str = "roundrobin";
/// The version this member writes (v0: topics and user data; every consumer reads it).
const WRITE_VERSION: i16 = 0;
/// The newest version the codecs know; newer versions only add fields at the end, so they are
/// read as this one (as Kafka's clients do).
const READ_VERSION_MAX: i16 = 3;

/// Why a member's bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerProtocolError {
    #[error("consumer protocol bytes too short for a version ({0} bytes)")]
    Short(usize),
    #[error("consumer protocol version {0} is not valid")]
    Version(i16),
    #[error("cannot decode consumer protocol message: {0}")]
    Decode(String),
    #[error("cannot encode consumer protocol message: {0}")]
    Encode(String),
    #[error("unknown assignor {0:?} (known: range, roundrobin)")]
    UnknownAssignor(String),
}

/// Members → topic → partitions.
pub type Assignment = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

/// A subscription to `topics`.
pub fn subscription(topics: &[String]) -> Result<Bytes, ConsumerProtocolError> {
    let message = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| StrBytes::from_string(t.clone())).collect());
    encode(&message)
}

/// The topics a subscription names.
pub fn parse_subscription(bytes: &Bytes) -> Result<Vec<String>, ConsumerProtocolError> {
    let (version, mut body) = versioned(bytes)?;
    let s = ConsumerProtocolSubscription::decode(&mut body, version)
        .map_err(|e| ConsumerProtocolError::Decode(format!("{e:#}")))?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

/// An assignment of topic → partitions.
pub fn assignment(assigned: &BTreeMap<String, Vec<i32>>) -> Result<Bytes, ConsumerProtocolError> {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assigned
            .iter()
            .map(|(topic, partitions)| {
                TopicPartition::default().with_topic(topic_name(topic)).with_partitions(partitions.clone())
            })
            .collect(),
    );
    encode(&message)
}

/// The topic → partitions an assignment names; empty bytes (a member given nothing by a leader
/// that wrote nothing) are an empty assignment.
pub fn parse_assignment(bytes: &Bytes) -> Result<BTreeMap<String, Vec<i32>>, ConsumerProtocolError> {
    if bytes.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (version, mut body) = versioned(bytes)?;
    let a = ConsumerProtocolAssignment::decode(&mut body, version)
        .map_err(|e| ConsumerProtocolError::Decode(format!("{e:#}")))?;
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in a.assigned_partitions {
        out.entry(tp.topic.0.to_string()).or_default().extend(tp.partitions);
    }
    for partitions in out.values_mut() {
        partitions.sort_unstable();
        partitions.dedup();
    }
    Ok(out)
}

fn encode<M: Encodable>(message: &M) -> Result<Bytes, ConsumerProtocolError> {
    let mut buf = BytesMut::new();
    buf.put_i16(WRITE_VERSION);
    message.encode(&mut buf, WRITE_VERSION).map_err(|e| ConsumerProtocolError::Encode(format!("{e:#}")))?;
    Ok(buf.freeze())
}

fn versioned(bytes: &Bytes) -> Result<(i16, Bytes), ConsumerProtocolError> {
    if bytes.len() < 2 {
        return Err(ConsumerProtocolError::Short(bytes.len()));
    }
    let mut body = bytes.clone();
    let version = body.get_i16();
    if version < 0 {
        return Err(ConsumerProtocolError::Version(version));
    }
    Ok((version.min(READ_VERSION_MAX), body))
}

/// Runs assignor `name` over `members` (member id → subscribed topics) and `partitions` (topic
/// → partition count; topics not in it are not assigned). Every member gets an entry, possibly
/// empty.
pub fn assign(
    name: &str,
    members: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> Result<Assignment, ConsumerProtocolError> {
    let mut out: Assignment = members.keys().map(|m| (m.clone(), BTreeMap::new())).collect();
    match name {
        RANGE => {
            for (topic, &count) in partitions {
                let subscribed: Vec<&String> =
                    members.iter().filter(|(_, topics)| topics.contains(topic)).map(|(m, _)| m).collect();
                if subscribed.is_empty() || count <= 0 {
                    continue;
                }
                let n = subscribed.len() as i32;
                let (each, extra) = (count / n, count % n);
                for (i, member) in subscribed.into_iter().enumerate() {
                    let i = i as i32;
                    let start = i * each + i.min(extra);
                    let len = each + i32::from(i < extra);
                    if len > 0 {
                        out.entry(member.clone()).or_default().insert(topic.clone(), (start..start + len).collect());
                    }
                }
            }
        }
        ROUND_ROBIN => {
            let ids: Vec<&String> = members.keys().collect();
            let subscribed: Vec<BTreeSet<&String>> = ids.iter().map(|m| members[*m].iter().collect()).collect();
            let mut turn = 0usize;
            for (topic, &count) in partitions {
                if !subscribed.iter().any(|s| s.contains(topic)) {
                    continue;
                }
                for p in 0..count.max(0) {
                    while !subscribed[turn % ids.len()].contains(topic) {
                        turn += 1;
                    }
                    out.entry(ids[turn % ids.len()].clone()).or_default().entry(topic.clone()).or_default().push(p);
                    turn += 1;
                }
            }
        }
        other => return Err(ConsumerProtocolError::UnknownAssignor(other.to_string())),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        list.iter().map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn parts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn of<'a>(a: &'a Assignment, m: &str, t: &str) -> &'a [i32] {
        a.get(m).and_then(|x| x.get(t)).map_or(&[], |v| v.as_slice())
    }

    /// Kafka's RangeAssignor: 7 partitions over 3 members → 3, 2, 2, contiguous.
    #[test]
    fn range_gives_contiguous_runs_the_first_members_one_more() {
        let m = members(&[("c", &["t"]), ("a", &["t"]), ("b", &["t"])]);
        let a = assign(RANGE, &m, &parts(&[("t", 7)])).unwrap();
        assert_eq!(of(&a, "a", "t"), &[0, 1, 2]);
        assert_eq!(of(&a, "b", "t"), &[3, 4]);
        assert_eq!(of(&a, "c", "t"), &[5, 6]);
        let few = assign(RANGE, &m, &parts(&[("t", 2)])).unwrap();
        assert_eq!((of(&few, "a", "t"), of(&few, "b", "t"), of(&few, "c", "t")), (&[0][..], &[1][..], &[][..]));
        assert!(few.contains_key("c"), "every member gets an entry");
    }

    #[test]
    fn round_robin_deals_partitions_and_skips_members_not_subscribed() {
        let m = members(&[("a", &["t", "u"]), ("b", &["t"])]);
        let a = assign(ROUND_ROBIN, &m, &parts(&[("t", 3), ("u", 2)])).unwrap();
        assert_eq!(of(&a, "a", "t"), &[0, 2]);
        assert_eq!(of(&a, "b", "t"), &[1]);
        assert_eq!(of(&a, "a", "u"), &[0, 1]);
        assert!(assign("sticky", &m, &parts(&[("t", 3)])).is_err());
    }

    #[test]
    fn every_partition_goes_to_exactly_one_subscribed_member() {
        for name in [RANGE, ROUND_ROBIN] {
            for members_n in 1..5 {
                for count in 0..9 {
                    let ids: Vec<String> = (0..members_n).map(|i| format!("m-{i}")).collect();
                    let m: BTreeMap<String, Vec<String>> = ids.iter().map(|i| (i.clone(), vec!["t".into()])).collect();
                    let a = assign(name, &m, &parts(&[("t", count)])).unwrap();
                    let mut all: Vec<i32> = a.values().flat_map(|x| x.get("t").cloned().unwrap_or_default()).collect();
                    all.sort_unstable();
                    assert_eq!(all, (0..count).collect::<Vec<_>>(), "{name} {members_n} members {count} partitions");
                }
            }
        }
    }

    #[test]
    fn protocol_bytes_round_trip_and_garbage_is_an_error() {
        let s = subscription(&["orders".into(), "t".into()]).unwrap();
        assert_eq!(parse_subscription(&s).unwrap(), vec!["orders".to_string(), "t".to_string()]);
        let assigned: BTreeMap<String, Vec<i32>> = [("orders".to_string(), vec![0, 3])].into_iter().collect();
        let a = assignment(&assigned).unwrap();
        assert_eq!(parse_assignment(&a).unwrap(), assigned);
        assert!(parse_assignment(&Bytes::new()).unwrap().is_empty());
        for garbage in [&[0u8][..], &[0xff, 0xff, 1], &[0, 0, 0, 0, 0, 9, 1]] {
            assert!(parse_subscription(&Bytes::copy_from_slice(garbage)).is_err(), "{garbage:?}");
        }
        // A newer version is read as the newest known one.
        let mut newer = BytesMut::new();
        newer.put_i16(7);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("x")])
            .encode(&mut newer, 3)
            .unwrap();
        assert_eq!(parse_subscription(&newer.freeze()).unwrap(), vec!["x".to_string()]);
    }
}

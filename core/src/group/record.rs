//! The records of the offsets topic (`__consumer_offsets`): committed offsets and group
//! metadata, keyed by group (and topic-partition), with tombstones (no value) for deletes.
//!
//! Encoding: Keel's own, versioned (the `kafka-protocol` crate does not carry Kafka's
//! `__consumer_offsets` schemas). Key and value are each one version byte followed by a
//! bincode body of bounded size; an unknown version or a body that does not decode is a
//! [`RecordError`], never a panic. The log is the group state: [`Groups::load`] folds the
//! records of a partition, oldest first, back into the coordinator's state.

use bincode::Options;
use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use thiserror::Error;

use super::Group;
use super::GroupState;
use super::Groups;
use super::Member;
use super::OffsetAndMetadata;
use super::Protocol;

/// Current version of keys and values.
const VERSION: u8 = 0;
/// Largest key or value body decoded (a group's metadata with its subscriptions and
/// assignments stays far below).
const RECORD_BYTES_MAX: u64 = 16 << 20;

/// One record of the offsets topic.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupRecord {
    /// A committed offset; `None` deletes it.
    Offset { group: String, topic: String, partition: i32, value: Option<OffsetAndMetadata> },
    /// A group's membership; `None` deletes the group.
    Metadata { group: String, value: Option<GroupMetadata> },
}

/// A group's membership as persisted after each completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMetadata {
    pub protocol_type: Option<String>,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: u64,
    pub members: Vec<MemberMetadata>,
}

/// One member as persisted: its subscription (metadata for the chosen protocol) and
/// assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMetadata {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("offsets record without a key")]
    NoKey,
    #[error("offsets record {0} is empty")]
    Empty(&'static str),
    #[error("offsets record {what} has version {version}; this Keel reads version {VERSION}")]
    Version { what: &'static str, version: u8 },
    #[error("offsets record {what} does not decode: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

#[derive(Serialize, Deserialize)]
enum Key {
    Offset { group: String, topic: String, partition: i32 },
    Metadata { group: String },
}

#[derive(Serialize, Deserialize)]
struct OffsetValue {
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    commit_timestamp_ms: u64,
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_limit(RECORD_BYTES_MAX).with_fixint_encoding()
}

fn encode_versioned<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serializing these plain structs into a Vec cannot fail (no maps with non-string keys, no
    // size over the limit for what the coordinator builds).
    out.extend(codec().serialize(value).unwrap_or_default());
    out
}

fn decode_versioned<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T, RecordError> {
    let (&version, body) = bytes.split_first().ok_or(RecordError::Empty(what))?;
    if version != VERSION {
        return Err(RecordError::Version { what, version });
    }
    codec().deserialize(body).map_err(|e| RecordError::Corrupt { what, reason: e.to_string() })
}

impl GroupRecord {
    /// The group's metadata record as it is now.
    pub fn metadata_of(group: &Group) -> GroupRecord {
        let protocol = group.protocol.clone().unwrap_or_default();
        let members = group
            .members
            .values()
            .map(|m| MemberMetadata {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                subscription: m.metadata(&protocol).map(|b| b.to_vec()).unwrap_or_default(),
                assignment: m.assignment.to_vec(),
            })
            .collect();
        GroupRecord::Metadata {
            group: group.id.clone(),
            value: Some(GroupMetadata {
                protocol_type: group.protocol_type.clone(),
                generation: group.generation,
                protocol: group.protocol.clone(),
                leader: group.leader.clone(),
                state_timestamp_ms: group.state_timestamp_ms,
                members,
            }),
        }
    }

    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. } | GroupRecord::Metadata { group, .. } => group,
        }
    }

    /// (key, value) bytes; no value for a tombstone.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            GroupRecord::Offset { group, topic, partition, value } => (
                encode_versioned(&Key::Offset { group: group.clone(), topic: topic.clone(), partition: *partition }),
                value.as_ref().map(|o| {
                    encode_versioned(&OffsetValue {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata.clone(),
                        commit_timestamp_ms: o.commit_timestamp_ms,
                    })
                }),
            ),
            GroupRecord::Metadata { group, value } => {
                (encode_versioned(&Key::Metadata { group: group.clone() }), value.as_ref().map(encode_versioned))
            }
        }
    }

    /// Decodes one stored record.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<GroupRecord, RecordError> {
        let key: Key = decode_versioned("key", key.ok_or(RecordError::NoKey)?)?;
        Ok(match key {
            Key::Offset { group, topic, partition } => {
                let value = match value {
                    None => None,
                    Some(v) => {
                        let o: OffsetValue = decode_versioned("offset value", v)?;
                        Some(OffsetAndMetadata {
                            offset: o.offset,
                            leader_epoch: o.leader_epoch,
                            metadata: o.metadata,
                            commit_timestamp_ms: o.commit_timestamp_ms,
                        })
                    }
                };
                GroupRecord::Offset { group, topic, partition, value }
            }
            Key::Metadata { group } => {
                let value = match value {
                    None => None,
                    Some(v) => Some(decode_versioned("group metadata", v)?),
                };
                GroupRecord::Metadata { group, value }
            }
        })
    }
}

impl Groups {
    /// Folds one persisted record into the state (loading a partition, oldest record first).
    /// A group restored with members is Stable, their sessions restarting at `now_ms`, so live
    /// members keep heartbeating across a coordinator failover without a rebalance.
    pub fn load(&mut self, now_ms: u64, record: GroupRecord) {
        match record {
            GroupRecord::Offset { group, topic, partition, value } => match value {
                Some(v) => {
                    let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now_ms));
                    g.offsets.insert((topic, partition), v);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                        if g.offsets.is_empty() && g.protocol_type.is_none() && g.members.is_empty() {
                            self.groups.remove(&group);
                        }
                    }
                }
            },
            GroupRecord::Metadata { group, value: None } => {
                self.groups.remove(&group);
            }
            GroupRecord::Metadata { group, value: Some(meta) } => {
                let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now_ms));
                restore(g, meta, now_ms);
            }
        }
    }
}

fn restore(g: &mut Group, meta: GroupMetadata, now_ms: u64) {
    g.generation = meta.generation;
    g.protocol_type = meta.protocol_type;
    g.protocol = meta.protocol.clone();
    g.members.clear();
    g.static_members.clear();
    g.pending_members.clear();
    g.join_deadline_ms = None;
    g.initial_delay_remaining_ms = None;
    g.sync_deadline_ms = None;
    let protocol = meta.protocol.unwrap_or_default();
    for m in meta.members {
        if let Some(instance) = &m.instance_id {
            g.static_members.insert(instance.clone(), m.member_id.clone());
        }
        g.members.insert(
            m.member_id.clone(),
            Member {
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocols: vec![Protocol { name: protocol.clone(), metadata: Bytes::from(m.subscription) }],
                assignment: Bytes::from(m.assignment),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                last_heartbeat_ms: now_ms,
            },
        );
    }
    g.leader = meta.leader.filter(|l| g.members.contains_key(l));
    if g.members.is_empty() {
        g.leader = None;
        g.protocol = None;
        g.state = GroupState::Empty;
    } else {
        if g.leader.is_none() {
            g.leader = g.members.keys().next().cloned();
        }
        g.state = GroupState::Stable;
    }
    g.state_timestamp_ms = meta.state_timestamp_ms;
}

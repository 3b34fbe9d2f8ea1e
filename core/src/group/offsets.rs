//! Committed offsets: OffsetCommit (with Kafka's generation and member checks), OffsetFetch,
//! OffsetDelete, DeleteGroups, retention of empty groups' offsets, and consumer lag.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::Group;
use super::GroupError;
use super::GroupRecord;
use super::GroupState;
use super::Groups;
use super::Output;
use super::membership::validate_member;

/// A committed offset (Kafka's `OffsetAndMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    /// The leader epoch the consumer saw with the record at `offset` (-1: unknown).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: u64,
}

/// One partition's committed offset and how far it trails the partition's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub high_watermark: u64,
    /// `high_watermark - committed`, never negative.
    pub lag: u64,
}

/// Consumer lag of `group`: for each committed partition, the committed offset and how far it
/// is behind the high watermark `high_watermark_of` reports (partitions it knows nothing of
/// are left out).
pub fn lag(group: &Group, high_watermark_of: impl Fn(&str, i32) -> Option<u64>) -> Vec<Lag> {
    group
        .offsets
        .iter()
        .filter_map(|((topic, partition), o)| {
            let hw = high_watermark_of(topic, *partition)?;
            let committed = o.offset.max(0) as u64;
            Some(Lag {
                topic: topic.clone(),
                partition: *partition,
                committed: o.offset,
                high_watermark: hw,
                lag: hw.saturating_sub(committed),
            })
        })
        .collect()
}

/// One partition of an OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

impl Groups {
    /// OffsetCommit: one answer per partition. `generation` -1 with an empty member id is a
    /// "simple" commit, allowed only while the group has no members. Accepted offsets are in
    /// `out.records`; the caller answers once they are persisted.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        now_ms: u64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        commits: &[Commit],
        out: &mut Output,
    ) -> Vec<Result<(), GroupError>> {
        let refuse = |e: GroupError| commits.iter().map(|_| Err(e)).collect();
        if group_id.is_empty() {
            return refuse(GroupError::InvalidGroupId);
        }
        let group = match self.groups.get_mut(group_id) {
            Some(g) => g,
            None if generation < 0 => {
                self.groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id, now_ms))
            }
            None => return refuse(GroupError::IllegalGeneration),
        };
        let simple = generation < 0 && member_id.is_empty() && instance_id.is_none();
        let check = match group.state {
            GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            GroupState::Empty if simple => Ok(()),
            _ if simple => Err(GroupError::IllegalGeneration),
            GroupState::CompletingRebalance => validate_member(group, member_id, instance_id, Some(generation))
                .and(Err(GroupError::RebalanceInProgress)),
            _ => validate_member(group, member_id, instance_id, Some(generation)),
        };
        if let Err(e) = check {
            return refuse(e);
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
        let metadata_max = self.config.offset_metadata_bytes_max;
        commits
            .iter()
            .map(|c| {
                let metadata = c.metadata.clone().unwrap_or_default();
                if metadata.len() > metadata_max {
                    return Err(GroupError::OffsetMetadataTooLarge);
                }
                let value = OffsetAndMetadata {
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata,
                    commit_timestamp_ms: now_ms,
                };
                out.records.push(GroupRecord::Offset {
                    group: group_id.to_string(),
                    topic: c.topic.clone(),
                    partition: c.partition,
                    value: Some(value.clone()),
                });
                group.offsets.insert((c.topic.clone(), c.partition), value);
                Ok(())
            })
            .collect()
    }

    /// OffsetFetch: the committed offsets of `partitions` (all committed ones when `None`);
    /// an unknown group has none.
    pub fn fetch(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<((String, i32), Option<OffsetAndMetadata>)> {
        let group = self.groups.get(group_id);
        match partitions {
            Some(list) => list.iter().map(|tp| (tp.clone(), group.and_then(|g| g.offsets.get(tp)).cloned())).collect(),
            None => group
                .map(|g| g.offsets.iter().map(|(tp, o)| (tp.clone(), Some(o.clone()))).collect())
                .unwrap_or_default(),
        }
    }

    /// DeleteGroups, one group: only a group without members may go; its offsets and metadata
    /// are tombstoned.
    pub fn delete_group(&mut self, now_ms: u64, group_id: &str, out: &mut Output) -> Result<(), GroupError> {
        let Some(group) = self.groups.get_mut(group_id) else { return Err(GroupError::GroupIdNotFound) };
        match group.state {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return Err(GroupError::NonEmptyGroup),
        }
        tombstone_group(group, out);
        group.transition(GroupState::Dead, now_ms);
        self.groups.remove(group_id);
        Ok(())
    }

    /// OffsetDelete: drops committed offsets of a group, refusing (per partition) those of
    /// topics the group's members subscribe to (`subscribed`, parsed by the caller from
    /// [`super::membership::subscriptions`]) unless the group is empty.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: &BTreeSet<String>,
        out: &mut Output,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let Some(group) = self.groups.get_mut(group_id) else { return Err(GroupError::GroupIdNotFound) };
        if group.state == GroupState::Dead {
            return Err(GroupError::GroupIdNotFound);
        }
        let empty = group.state == GroupState::Empty;
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                if !empty && subscribed.contains(topic) {
                    return Err(GroupError::GroupSubscribedToTopic);
                }
                if group.offsets.remove(&(topic.clone(), *partition)).is_some() {
                    out.records.push(GroupRecord::Offset {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    });
                }
                Ok(())
            })
            .collect())
    }

    /// Offset retention (Kafka's rule since 2.1): the offsets of a group that has been Empty
    /// for `retention_ms` expire all at once; a group without group management (only simple
    /// commits) loses each offset `retention_ms` after it was committed. An Empty group left
    /// with no offsets is deleted. Returns how many offsets expired.
    pub fn expire_offsets(&mut self, now_ms: u64, retention_ms: u64, out: &mut Output) -> usize {
        let mut expired = 0usize;
        let mut gone = Vec::new();
        for group in self.groups.values_mut() {
            if group.state != GroupState::Empty {
                continue;
            }
            let managed = group.protocol_type.is_some();
            let old: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, o)| {
                    let since = if managed { group.state_timestamp_ms } else { o.commit_timestamp_ms };
                    since.saturating_add(retention_ms) <= now_ms
                })
                .map(|(tp, _)| tp.clone())
                .collect();
            for (topic, partition) in old {
                group.offsets.remove(&(topic.clone(), partition));
                out.records.push(GroupRecord::Offset { group: group.id.clone(), topic, partition, value: None });
                expired += 1;
            }
            if group.offsets.is_empty() && group.state_timestamp_ms.saturating_add(retention_ms) <= now_ms {
                out.records.push(GroupRecord::Metadata { group: group.id.clone(), value: None });
                gone.push(group.id.clone());
            }
        }
        for id in gone {
            self.groups.remove(&id);
        }
        expired
    }

    /// Every group with its committed offsets (for the CLI and metrics).
    pub fn committed_offsets(&self) -> BTreeMap<String, BTreeMap<(String, i32), i64>> {
        self.groups
            .iter()
            .map(|(id, g)| (id.clone(), g.offsets.iter().map(|(tp, o)| (tp.clone(), o.offset)).collect()))
            .collect()
    }
}

/// Tombstones for every offset and the metadata of `group`.
fn tombstone_group(group: &mut Group, out: &mut Output) {
    for (topic, partition) in std::mem::take(&mut group.offsets).into_keys() {
        out.records.push(GroupRecord::Offset { group: group.id.clone(), topic, partition, value: None });
    }
    out.records.push(GroupRecord::Metadata { group: group.id.clone(), value: None });
}

//! The typed `value` of each known operation (`f`), as it appears in the JSON lines.
//!
//! Payloads ignore fields they do not know, so a newer recorder (adding, say, a producer id and
//! sequence to `produce`) still decodes with an older checker. Fields that later checkers may need
//! but today's recorders may omit are `Option` or `#[serde(default)]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `f = "produce"`: one record appended to one partition.
///
/// Invoke: `{"partition":"p0","key":"k3","value":"v-17"}`. The `ok` completion repeats those
/// fields and adds `"offset"`, the base offset the broker acknowledged. `fail` means definitely
/// not written; `info` means unknown. A `fail`/`info` completion may carry `null` as its value;
/// decoding then copies the invoke's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produce {
    /// Partition the record was sent to, e.g. `"p0"` (topic-partition, spelled by the recorder).
    pub partition: String,
    /// Record key; `None` for a null key (Kafka allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Record value; unique per produce invoke in a history, so it identifies the operation.
    pub value: String,
    /// Acknowledged base offset; present exactly on `ok` completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Sent by an idempotent producer (a producer id and sequence numbers; retries of the
    /// operation resend the same batch), so the record must be stored at most once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
}

/// One data record as a read returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Offset of the record in the partition log.
    pub offset: u64,
    /// Record key; `None` for a null key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Record value (the produce that wrote it is found by this value).
    pub value: String,
}

/// `f = "read"`: a read of one replica's (or the leader's) whole committed log.
///
/// Invoke: `{"partition":"p0","node":2,"from":0}`. `ok`: adds `"records"` (log order, data
/// records only; Kafka offsets are dense, so consecutive records have consecutive offsets) and
/// `"caught_up"` (the reader knew this replica had applied everything committed, e.g. after the
/// cluster healed and settled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// Partition read.
    pub partition: String,
    /// Replica read; `None` means "whoever was leader" (reads through the Kafka API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// The offset the read asked for, when known: its records must start at or before it (the
    /// batch holding it may begin earlier), with no offset missing after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Records in log order (empty on invoke).
    #[serde(default)]
    pub records: Vec<Record>,
    /// Offsets of records the reader saw but no checker follows (the simulation's filler records
    /// that pad batches to real sizes), as `[first offset, count]` runs: they count toward
    /// density only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untracked: Vec<[u64; 2]>,
    /// True when the replica is known to hold every committed entry: its final read must then
    /// contain every acknowledged record.
    #[serde(default)]
    pub caught_up: bool,
}

/// `f = "leader"` (node-observed, type `info`): `node` became leader of `partition` in `term`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// Node that won the election.
    pub node: u64,
    /// Raft term of the election.
    pub term: u64,
    /// Raft group (partition, or the metadata group under a name of the recorder's choice).
    pub partition: String,
}

/// `f = "commit"` (node-observed, type `info`): `node`, in its `incarnation` (count of restarts),
/// saw the Raft log of `partition` committed up to `index`, whose entry has `term`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Node reporting.
    pub node: u64,
    /// Incarnation of the node: its commit index restarts from its durable state after a crash,
    /// so monotonicity is only required within one incarnation.
    pub incarnation: u64,
    /// Raft group.
    pub partition: String,
    /// Raft log index committed.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

/// `f = "fault"` (type `info`, process = nemesis id): a fault injected or healed.
/// Checkers ignore faults; reports list them. Example: `{"fault":"crash","node":2}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Kind of fault, e.g. `"crash"`, `"restart"`, `"partition"`, `"heal"`, `"disk-torn-write"`.
    pub fault: String,
    /// Node affected, when the fault targets one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// Every other field, kept for the report (e.g. `"groups":[[1,2],[3]]`).
    #[serde(flatten)]
    pub detail: BTreeMap<String, Value>,
}

/// An operation: its `f` and typed payload. Unknown `f` values keep their raw JSON so a history
/// from a newer recorder still decodes (checkers that do not know them skip them).
/// A sample of one partition's replicas, taken leader first: the leader's commit index and
/// membership, then each voter's durably held log end. A voter missing from `durable` could not
/// be asked (down, unreachable, not yet reopened after a restart); a `null` means the voter
/// answered that it holds no copy of the partition at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    pub partition: String,
    pub leader: u64,
    pub term: u64,
    /// The Raft log index the leader knows committed.
    pub committed: u64,
    /// Voter sets of the leader's membership: one, or two during joint consensus.
    pub voters: Vec<Vec<u64>>,
    /// The membership is committed (no change in flight).
    pub membership_committed: bool,
    /// Voter → last log index it holds durably (`null`: no copy).
    #[serde(default)]
    pub durable: BTreeMap<u64, Option<u64>>,
}

/// An administrative operation (topic create/delete, reassignment, ...): recorded for the
/// timeline; no checker judges it by itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    pub action: String,
    #[serde(flatten)]
    pub detail: BTreeMap<String, Value>,
}

/// `f = "group_process"`: a consumer-group member handed these records to its application
/// (the point of at-least-once delivery: processing, not fetching). Recorded as an `invoke`
/// and its `ok` at the same instant.
///
/// `{"group":"g","partition":"p0","records":[{"offset":3,"key":"k1","value":"c10-7"}]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupProcess {
    /// Consumer group id.
    pub group: String,
    /// Partition the records came from (spelled as in `produce`).
    pub partition: String,
    /// The records, in log order.
    #[serde(default)]
    pub records: Vec<Record>,
}

/// `f = "group_commit"`: a member commits `offset` (the next offset to consume) for
/// `partition` of `group`. `ok`: the coordinator acknowledged it; `fail`: refused (fenced
/// generation, unknown member, not the coordinator); `info`: unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommit {
    pub group: String,
    pub partition: String,
    pub offset: u64,
}

/// `f = "group_offset"`: a member asks the coordinator for the committed offset of
/// `partition` of `group` (OffsetFetch). The `ok` completion carries `offset`: `None` when
/// none is committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffset {
    pub group: String,
    pub partition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `f = "produce"`.
    Produce(Produce),
    /// `f = "read"`.
    Read(Read),
    /// `f = "leader"`.
    Leader(Leader),
    /// `f = "commit"`.
    Commit(Commit),
    /// `f = "fault"`.
    Fault(Fault),
    /// `f = "replicas"`.
    Replicas(Replicas),
    /// `f = "admin"`.
    Admin(Admin),
    /// `f = "group_process"`.
    GroupProcess(GroupProcess),
    /// `f = "group_commit"`.
    GroupCommit(GroupCommit),
    /// `f = "group_offset"`.
    GroupOffset(GroupOffset),
    /// Any other `f`, kept verbatim.
    Other {
        /// The `f` field as recorded.
        f: String,
        /// The `value` field as recorded (`null` when absent).
        value: Value,
    },
}

impl Op {
    /// The `f` field this operation is recorded under.
    pub fn f(&self) -> &str {
        match self {
            Op::Produce(_) => "produce",
            Op::Read(_) => "read",
            Op::Leader(_) => "leader",
            Op::Commit(_) => "commit",
            Op::Fault(_) => "fault",
            Op::Replicas(_) => "replicas",
            Op::Admin(_) => "admin",
            Op::GroupProcess(_) => "group_process",
            Op::GroupCommit(_) => "group_commit",
            Op::GroupOffset(_) => "group_offset",
            Op::Other { f, .. } => f,
        }
    }

    /// Decodes the payload of `f` from `value`. Unknown `f` never fails.
    pub fn decode(f: &str, value: Value) -> Result<Op, serde_json::Error> {
        Ok(match f {
            "produce" => Op::Produce(serde_json::from_value(value)?),
            "read" => Op::Read(serde_json::from_value(value)?),
            "leader" => Op::Leader(serde_json::from_value(value)?),
            "commit" => Op::Commit(serde_json::from_value(value)?),
            "fault" => Op::Fault(serde_json::from_value(value)?),
            "replicas" => Op::Replicas(serde_json::from_value(value)?),
            "admin" => Op::Admin(serde_json::from_value(value)?),
            "group_process" => Op::GroupProcess(serde_json::from_value(value)?),
            "group_commit" => Op::GroupCommit(serde_json::from_value(value)?),
            "group_offset" => Op::GroupOffset(serde_json::from_value(value)?),
            _ => Op::Other { f: f.to_owned(), value },
        })
    }

    /// The payload as JSON (the `value` field).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(OpValue(self)).expect("payloads have string keys and serialize infallibly")
    }
}

/// Serializes an [`Op`]'s payload as its `value`, fields in declaration order.
pub(crate) struct OpValue<'a>(pub(crate) &'a Op);

impl Serialize for OpValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Op::Produce(p) => p.serialize(serializer),
            Op::Read(r) => r.serialize(serializer),
            Op::Leader(l) => l.serialize(serializer),
            Op::Commit(c) => c.serialize(serializer),
            Op::Fault(x) => x.serialize(serializer),
            Op::Replicas(x) => x.serialize(serializer),
            Op::Admin(x) => x.serialize(serializer),
            Op::GroupProcess(x) => x.serialize(serializer),
            Op::GroupCommit(x) => x.serialize(serializer),
            Op::GroupOffset(x) => x.serialize(serializer),
            Op::Other { value, .. } => value.serialize(serializer),
        }
    }
}

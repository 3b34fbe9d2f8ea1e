//! keel-sim: Keel's deterministic simulation.
//!
//! The real node code (`keel_node::node::Node`) runs on simulated machines under madsim: the
//! network, the clock, task scheduling and randomness all come from one seed, and each node's
//! disk is a `keel_core::storage::sim::SimStorage` that loses unsynced bytes on a crash.
//!
//! Layout:
//! - [`faults`]: fault schedules drawn from the seed (plain data; replayable).
//! - [`kind`]: the shapes of a run (one partition on three nodes; a five-node cluster with an
//!   operator creating, deleting and reassigning).
//! - [`failure`]: problems outside the checkers, and the kinds of a failure.
//! - [`strategy`]: fault schedules as a proptest strategy; the seed's value tree, and
//!   proptest's shrinking of it.
//! - [`shrink`]: greedy, deterministic shrinking of any fault schedule (after proptest's, and
//!   for saved schedules).
//! - [`regression`]: regression files (`sim/regressions/*.json`) and their expectations.
//! - [`recorder`]: the history recorder (simulated time).
//! - `cluster`: the simulated cluster — nodes, disks, crash/restart/isolate/heal (madsim only).
//! - `idempotent`: idempotent producers (InitProducerId, sequence numbers, the same batch resent
//!   until acknowledged) (madsim only).
//! - `workload`: producers following redirects, replica reads (madsim only).
//! - [`kafka_admin`]: the operator's CreateTopics, DeleteTopics, CreatePartitions,
//!   AlterPartitionReassignments and ListPartitionReassignments requests over the Kafka
//!   protocol, and what their answers mean for the history.
//! - `admin`: the simulated operator (topic churn and reassignments over Kafka, decommissioning
//!   over the metadata group) and the replica sampler (madsim only).
//! - `scenario`: one seed from start to verdict (madsim only).
//!
//! Everything that needs madsim is compiled only with `--cfg madsim`; `sim/run` builds that way.

pub mod failure;
pub mod faults;
pub mod kafka_admin;
pub mod kind;
pub mod recorder;
pub mod regression;
pub mod shrink;
pub mod strategy;

#[cfg(madsim)]
pub mod admin;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod group_consumer;
#[cfg(madsim)]
pub mod idempotent;
#[cfg(madsim)]
pub mod scenario;
#[cfg(madsim)]
pub mod workload;

//! keel-node: a Keel broker node.
//!
//! Layout:
//! - [`rt`]: the async runtime openraft runs on (tokio, or madsim under `--cfg madsim`) and
//!   [`rt::blocking`] for disk calls.
//! - [`clock`]: the one wall-clock seam (record timestamps, segment age).
//! - [`transport`]: one multiplexed, checksummed TCP connection per node pair, shared by every
//!   Raft group.
//! - [`raft`]: openraft glue for a partition — types, entry codec, log storage with group commit,
//!   hard state, state machine, network.
//! - [`partition`]: one replica of one partition: append (acks=all), committed reads, observers.
//! - [`client`]: Keel's internal client protocol (append, read, status) over the transport.
//! - [`kafka_client`]: a small Kafka client (framing, headers, typed calls, Metadata, Produce,
//!   Fetch) over the runtime's TCP, with the `kafka-protocol` codecs the listener uses; the CLI
//!   and the simulated clients speak Kafka through it.
//! - [`meta`]: the metadata group — the cluster metadata model as a Raft state machine with
//!   snapshots, bootstrapping, proposals.
//! - [`leaders`]: who leads which partition, as this node knows it (own replicas + gossip).
//! - [`node`]: a node — transport, metadata group, replicas, request dispatch, routed proposals.
//! - [`group`]: the group coordinator — consumer groups of the offsets partitions this node
//!   leads, loaded from and persisted to the `__consumer_offsets` topic.
//! - [`drain`]: graceful shutdown — hand off every group this node leads before it stops.
//! - [`group_member`]: the member side of Kafka's consumer-group protocol over [`kafka_client`]
//!   (join, sync, heartbeat, offsets, leave) and the range / round-robin assignors; `keel consume
//!   --group` and the simulated group members use it.
//! - [`reconcile`]: what a node does over time — register, reconcile replicas with the
//!   metadata, drive reassignments, hand leadership to preferred leaders, gossip leaders.
//! - [`recovery`]: the recovery duty — a replica stopped by a full disk reopens from disk and
//!   rejoins its group once there is room again.
//! - [`status`]: a snapshot of what a node knows (nodes, partitions, lag, groups), taken per
//!   request; [`metrics`]: the node's Prometheus counters and histograms, and the exposition
//!   with the snapshot's gauges; [`http`]: the HTTP port serving `/metrics`, `/status.json`
//!   and the status page.
//!
//! The binary (`src/main.rs`) is the `keel` command line.

pub mod alloc;
pub mod client;
pub mod clock;
pub mod drain;
pub mod group;
pub mod group_member;
pub mod http;
pub mod kafka;
pub mod kafka_client;
pub mod leaders;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod raft;
pub mod reconcile;
pub mod recovery;
pub mod rt;
pub mod status;
pub mod transport;

/// The planted bug this build carries, if any (see the `canary-*` cargo features).
pub const CANARY: Option<&str> = if cfg!(feature = "canary-ack-before-fsync") {
    Some("ack-before-fsync")
} else if cfg!(feature = "canary-ack-without-quorum") {
    Some("ack-without-quorum")
} else if cfg!(feature = "canary-vote-without-log-check") {
    Some("vote-without-log-check")
} else if cfg!(feature = "canary-follower-truncates-committed") {
    Some("follower-truncates-committed")
} else if cfg!(feature = "canary-fetch-above-high-watermark") {
    Some("fetch-above-high-watermark")
} else if cfg!(feature = "canary-reassign-drops-early") {
    Some("reassign-drops-early")
} else if cfg!(feature = "canary-idempotence-dedupe-disabled") {
    Some("idempotence-dedupe-disabled")
} else if cfg!(feature = "canary-dedupe-leader-memory-only") {
    Some("dedupe-leader-memory-only")
} else if cfg!(feature = "canary-commit-before-processing") {
    Some("commit-before-processing")
} else if cfg!(feature = "canary-raft-entries-take-offsets") {
    Some("raft-entries-take-offsets")
} else if cfg!(feature = "canary-replication-unbounded") {
    Some("replication-unbounded")
} else {
    None
};

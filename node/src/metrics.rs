//! A node's Prometheus metrics (docs/observability.md lists every one).
//!
//! Two kinds, both with the `keel_` prefix and the unit last in the name:
//! - counters and histograms of events, bumped where the events happen (atomics, no locks held
//!   across anything): Kafka requests per API (count, latency, bytes in and out), produced bytes
//!   and records, fetched bytes, and the latency of each group-commit fsync of a partition log;
//! - gauges of state, computed at scrape time from a [`Snapshot`] of the node: per partition
//!   (labels `topic`, `partition`) its Raft term, whether this node leads it, Raft indexes and lags,
//!   high watermark, log start and end; under-replicated partitions; consumer-group lag.
//!
//! Labels stay low-cardinality: an API name, a topic and partition this node hosts, a group
//! this node coordinates. The exposition is the Prometheus text format 0.0.4 of the `prometheus`
//! crate (tikv's client), built fresh per scrape.

use prometheus::Encoder;
use prometheus::Histogram;
use prometheus::HistogramOpts;
use prometheus::HistogramVec;
use prometheus::IntCounter;
use prometheus::IntCounterVec;
use prometheus::IntGauge;
use prometheus::IntGaugeVec;
use prometheus::Opts;
use prometheus::Registry;
use prometheus::TextEncoder;
use thiserror::Error;

use crate::status::Snapshot;
use crate::transport::TransportStats;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Kafka request latency buckets: 0.5 ms doubling to about 16 s (long polls end in the last).
const REQUEST_SECONDS_FIRST: f64 = 0.0005;
const REQUEST_BUCKETS: usize = 16;
/// fsync latency buckets: 50 µs doubling to about 1.6 s.
const FSYNC_SECONDS_FIRST: f64 = 0.00005;
const FSYNC_BUCKETS: usize = 16;

#[derive(Debug, Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The event metrics of one node; cheap to bump from any task.
pub struct NodeMetrics {
    registry: Registry,
    kafka_requests: IntCounterVec,
    kafka_request_seconds: HistogramVec,
    kafka_request_bytes: IntCounterVec,
    kafka_response_bytes: IntCounterVec,
    produce_bytes: IntCounter,
    produce_records: IntCounter,
    fetch_bytes: IntCounter,
    fsync_seconds: Histogram,
}

impl NodeMetrics {
    pub fn new() -> Result<NodeMetrics, MetricsError> {
        let registry = Registry::new();
        let kafka_requests = IntCounterVec::new(
            Opts::new("keel_kafka_requests_total", "Kafka requests answered (or dropped), by API"),
            &["api"],
        )?;
        let kafka_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "keel_kafka_request_duration_seconds",
                "Time from a Kafka request's arrival to its answer being ready, by API",
            )
            .buckets(prometheus::exponential_buckets(REQUEST_SECONDS_FIRST, 2.0, REQUEST_BUCKETS)?),
            &["api"],
        )?;
        let kafka_request_bytes = IntCounterVec::new(
            Opts::new("keel_kafka_request_bytes_total", "Bytes of Kafka request frames received, by API"),
            &["api"],
        )?;
        let kafka_response_bytes = IntCounterVec::new(
            Opts::new("keel_kafka_response_bytes_total", "Bytes of Kafka response frames sent, by API"),
            &["api"],
        )?;
        let produce_bytes =
            IntCounter::new("keel_produce_bytes_total", "Bytes of record batches acknowledged to producers")?;
        let produce_records =
            IntCounter::new("keel_produce_records_total", "Records in batches acknowledged to producers")?;
        let fetch_bytes = IntCounter::new("keel_fetch_bytes_total", "Bytes of record batches sent to consumers")?;
        let fsync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "keel_log_fsync_duration_seconds",
                "Duration of one group-commit fsync of a partition log (every append it covers waits for it)",
            )
            .buckets(prometheus::exponential_buckets(FSYNC_SECONDS_FIRST, 2.0, FSYNC_BUCKETS)?),
        )?;
        registry.register(Box::new(kafka_requests.clone()))?;
        registry.register(Box::new(kafka_request_seconds.clone()))?;
        registry.register(Box::new(kafka_request_bytes.clone()))?;
        registry.register(Box::new(kafka_response_bytes.clone()))?;
        registry.register(Box::new(produce_bytes.clone()))?;
        registry.register(Box::new(produce_records.clone()))?;
        registry.register(Box::new(fetch_bytes.clone()))?;
        registry.register(Box::new(fsync_seconds.clone()))?;
        Ok(NodeMetrics {
            registry,
            kafka_requests,
            kafka_request_seconds,
            kafka_request_bytes,
            kafka_response_bytes,
            produce_bytes,
            produce_records,
            fetch_bytes,
            fsync_seconds,
        })
    }

    /// One Kafka request of `api` served: its frame sizes (size prefix included) and the time
    /// it took.
    pub fn kafka_request(&self, api: &str, request_bytes: usize, response_bytes: usize, seconds: f64) {
        self.kafka_requests.with_label_values(&[api]).inc();
        self.kafka_request_seconds.with_label_values(&[api]).observe(seconds);
        self.kafka_request_bytes.with_label_values(&[api]).inc_by(request_bytes as u64);
        self.kafka_response_bytes.with_label_values(&[api]).inc_by(response_bytes as u64);
    }

    /// A produced batch of `bytes` bytes and `records` records was acknowledged.
    pub fn produced(&self, bytes: usize, records: u64) {
        self.produce_bytes.inc_by(bytes as u64);
        self.produce_records.inc_by(records);
    }

    /// Record batches of `bytes` bytes went out in a Fetch answer.
    pub fn fetched(&self, bytes: usize) {
        self.fetch_bytes.inc_by(bytes as u64);
    }

    /// The histogram partition logs record their fsyncs in (shared: a clone records into it).
    pub fn fsync_seconds(&self) -> Histogram {
        self.fsync_seconds.clone()
    }
}

/// The scrape-time gauges of `snapshot`.
struct Gauges {
    registry: Registry,
}

impl Gauges {
    fn of(snapshot: &Snapshot, transport: &TransportStats) -> Result<Gauges, MetricsError> {
        let registry = Registry::new();
        let too_large = IntCounter::new(
            "keel_transport_frames_too_large_total",
            "Node-to-node calls refused before sending because their frame would exceed frame_bytes_max (a bug: \
             replication messages are built to fit)",
        )?;
        registry.register(Box::new(too_large.clone()))?;
        too_large.inc_by(transport.frames_too_large);
        let per_partition = |name: &str, help: &str| -> Result<IntGaugeVec, MetricsError> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["topic", "partition"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let term = per_partition("keel_partition_raft_term", "Raft term (leader epoch) of this node's replica")?;
        let leader = per_partition("keel_partition_leader", "1 if this node's replica leads the partition, else 0")?;
        let last_log = per_partition("keel_partition_last_log_index", "Last Raft log index of this node's replica")?;
        let commit = per_partition("keel_partition_commit_index", "Raft log index this replica knows committed")?;
        let applied = per_partition("keel_partition_applied_index", "Raft log index this replica applied")?;
        let commit_lag = per_partition(
            "keel_partition_commit_lag_entries",
            "Entries of this replica's log not yet known committed (last log index - commit index)",
        )?;
        let apply_lag = per_partition(
            "keel_partition_apply_lag_entries",
            "Committed entries this replica has not applied yet (commit index - applied index)",
        )?;
        let follower_lag = per_partition(
            "keel_partition_follower_lag_entries_max",
            "On the leader: the most entries any other voter is behind the leader's last log index",
        )?;
        let hw =
            per_partition("keel_partition_high_watermark_offset", "High watermark: records below it are committed")?;
        let end = per_partition("keel_partition_log_end_offset", "Offset the next appended record gets")?;
        let start = per_partition("keel_partition_log_start_offset", "First offset the log still holds")?;
        let under = IntGauge::new(
            "keel_under_replicated_partitions",
            "Partitions this node leads with a voter not live or not holding every committed entry",
        )?;
        registry.register(Box::new(under.clone()))?;
        let hosted = IntGauge::new("keel_partitions_hosted", "Partition replicas this node hosts")?;
        registry.register(Box::new(hosted.clone()))?;
        let group_lag = IntGaugeVec::new(
            Opts::new(
                "keel_consumer_group_lag_records",
                "For groups this node coordinates: sum over their committed partitions of high watermark - committed offset",
            ),
            &["group"],
        )?;
        registry.register(Box::new(group_lag.clone()))?;
        let nodes_live =
            IntGauge::new("keel_nodes_live", "Registered nodes this node heard from lately, itself included")?;
        registry.register(Box::new(nodes_live.clone()))?;

        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let opt = |v: Option<u64>| v.map_or(-1, clamp);
        for p in &snapshot.partitions {
            let Some(l) = &p.local else { continue };
            let partition = p.partition.to_string();
            let labels = [p.topic.as_str(), partition.as_str()];
            term.with_label_values(&labels).set(clamp(l.term));
            leader.with_label_values(&labels).set(i64::from(l.is_leader));
            last_log.with_label_values(&labels).set(opt(l.last_log_index));
            commit.with_label_values(&labels).set(opt(l.commit_index));
            applied.with_label_values(&labels).set(opt(l.applied_index));
            commit_lag.with_label_values(&labels).set(clamp(l.commit_lag_entries));
            apply_lag.with_label_values(&labels).set(clamp(l.apply_lag_entries));
            if l.is_leader {
                let max = l.followers.iter().map(|f| f.lag_entries).max().unwrap_or(0);
                follower_lag.with_label_values(&labels).set(clamp(max));
            }
            hw.with_label_values(&labels).set(clamp(l.high_watermark));
            end.with_label_values(&labels).set(clamp(l.log_end_offset));
            start.with_label_values(&labels).set(clamp(l.log_start_offset));
            hosted.inc();
        }
        under.set(clamp(snapshot.under_replicated_partitions));
        for g in &snapshot.groups {
            group_lag.with_label_values(&[g.group.as_str()]).set(clamp(g.lag_records));
        }
        nodes_live.set(snapshot.nodes.iter().filter(|n| n.live).count() as i64);
        Ok(Gauges { registry })
    }
}

/// The `/metrics` page: `metrics`' counters and histograms, the gauges of `snapshot` and the
/// transport's counters, in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
pub fn render(metrics: &NodeMetrics, snapshot: &Snapshot, transport: &TransportStats) -> Result<String, MetricsError> {
    let mut families = metrics.registry.gather();
    families.extend(Gauges::of(snapshot, transport)?.registry.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::LocalReplica;
    use crate::status::PartitionRow;

    fn snapshot() -> Snapshot {
        Snapshot {
            node: 1,
            metadata_leader: Some(1),
            nodes: Vec::new(),
            partitions: vec![PartitionRow {
                topic: "orders".into(),
                partition: 2,
                group: 7,
                replicas: vec![1, 2, 3],
                leader: Some(1),
                term: Some(4),
                isr: vec![1, 2],
                local: Some(LocalReplica {
                    is_leader: true,
                    term: 4,
                    last_log_index: Some(10),
                    commit_index: Some(9),
                    applied_index: None,
                    commit_lag_entries: 1,
                    apply_lag_entries: 10,
                    high_watermark: 42,
                    log_start_offset: 0,
                    log_end_offset: 45,
                    followers: Vec::new(),
                    under_replicated: true,
                    failed: None,
                }),
            }],
            under_replicated_partitions: 1,
            groups: Vec::new(),
        }
    }

    /// The exposition names every family once, with the unit last and the labels it documents
    /// (docs/observability.md), and marks an absent index as -1 rather than 0.
    #[test]
    fn render_names_families_with_labels_and_units() {
        let m = NodeMetrics::new().expect("metrics");
        m.kafka_request("Produce", 100, 60, 0.002);
        m.fsync_seconds().observe(0.001);
        let transport = TransportStats { frames_too_large: 2, ..TransportStats::default() };
        let text = render(&m, &snapshot(), &transport).expect("render");
        for line in [
            "# TYPE keel_kafka_requests_total counter",
            "keel_kafka_requests_total{api=\"Produce\"} 1",
            "keel_kafka_request_bytes_total{api=\"Produce\"} 100",
            "keel_kafka_response_bytes_total{api=\"Produce\"} 60",
            "# TYPE keel_kafka_request_duration_seconds histogram",
            "keel_log_fsync_duration_seconds_count 1",
            "keel_partition_raft_term{partition=\"2\",topic=\"orders\"} 4",
            "keel_partition_leader{partition=\"2\",topic=\"orders\"} 1",
            "keel_partition_applied_index{partition=\"2\",topic=\"orders\"} -1",
            "keel_partition_high_watermark_offset{partition=\"2\",topic=\"orders\"} 42",
            "keel_under_replicated_partitions 1",
            "keel_partitions_hosted 1",
            "keel_transport_frames_too_large_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}

//! `keel bench produce|consume`: load generators over the Kafka protocol (so they measure Kafka
//! too), and what both report.
//!
//! - [`bench_produce`](super::bench_produce): generated messages, one connection per partition
//!   leader with several Produce requests in flight on each.
//! - [`bench_consume`](super::bench_consume): a topic read from the beginning, one connection per
//!   leader fetching all of that leader's partitions in each request.
//!
//! Both print the same report: messages/s and MB/s (MB = 10^6 bytes of keys and values, the
//! payload, not the bytes on the wire), request latency percentiles from an HDR histogram
//! (hdrhistogram, microsecond resolution, 3 significant digits), errors counted by Kafka error
//! name, and a text histogram of the latencies in power-of-two buckets. While a run goes on, an
//! indicatif progress bar is drawn on stderr, unless stderr is not a terminal or `--json` asks for
//! JSON. The clock is the runtime's monotonic `Instant`: measuring time is what a benchmark does.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use serde_json::Value;
use serde_json::json;

use super::bench_consume::BenchConsumeArgs;
use super::bench_produce::BenchProduceArgs;
use super::kafka::Kafka;
use super::output::Output;

/// Highest latency the histogram holds, in µs (larger values are recorded as this).
const LATENCY_US_MAX: u64 = 600_000_000;
/// Width of the longest bar of the text histogram, in characters.
const BAR_CHARS_MAX: usize = 40;
/// How often the progress bar is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Produces generated messages as fast as the brokers take them (or at --rate) and reports
    /// throughput and produce latency (send to acknowledgement).
    Produce(BenchProduceArgs),
    /// Reads a topic from the beginning to its end (or --messages) and reports throughput and
    /// fetch latency.
    Consume(BenchConsumeArgs),
}

pub async fn run(kafka: &mut Kafka, out: &mut Output, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => super::bench_produce::run(kafka, out, args).await,
        BenchCommand::Consume(args) => super::bench_consume::run(kafka, out, args).await,
    }
}

/// Request latencies, in µs.
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Latencies {
        let hist =
            Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds within hdrhistogram's range");
        Latencies { hist }
    }

    pub fn record(&mut self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(LATENCY_US_MAX).clamp(1, LATENCY_US_MAX);
        self.hist.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail; if it did, the values are dropped
        // from the report rather than the run.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency at `quantile` (0..=1), in ms.
    fn ms_at(&self, quantile: f64) -> f64 {
        self.hist.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Percentiles as JSON (ms), `null` with no requests.
    pub fn json(&self) -> Value {
        if self.count() == 0 {
            return Value::Null;
        }
        json!({
            "requests": self.count(),
            "p50_ms": self.ms_at(0.5),
            "p90_ms": self.ms_at(0.9),
            "p99_ms": self.ms_at(0.99),
            "p99_9_ms": self.ms_at(0.999),
            "max_ms": self.hist.max() as f64 / 1000.0,
            "mean_ms": self.hist.mean() / 1000.0,
        })
    }

    /// One line: `p50 1.2 ms  p90 ...`.
    pub fn summary(&self) -> String {
        if self.count() == 0 {
            return "no requests answered".to_string();
        }
        format!(
            "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
            ms(self.ms_at(0.5)),
            ms(self.ms_at(0.9)),
            ms(self.ms_at(0.99)),
            ms(self.ms_at(0.999)),
            ms(self.hist.max() as f64 / 1000.0),
        )
    }

    /// Power-of-two buckets `[low_us, high_us)` from the one holding the lowest latency to the
    /// one holding the highest, with how many requests fell in each.
    pub fn buckets(&self) -> Vec<(u64, u64, u64)> {
        if self.count() == 0 {
            return Vec::new();
        }
        let low = 1u64 << (63 - self.hist.min().max(1).leading_zeros());
        let top = self.hist.max().max(1);
        let mut buckets = Vec::new();
        let mut at = low;
        while at <= top {
            buckets.push((at, at.saturating_mul(2), 0u64));
            if at > u64::MAX / 2 {
                break;
            }
            at *= 2;
        }
        for v in self.hist.iter_recorded() {
            let value = self.hist.highest_equivalent(v.value_iterated_to()).min(top);
            let i = buckets.iter().position(|(lo, hi, _)| value >= *lo && value < *hi).unwrap_or(buckets.len() - 1);
            buckets[i].2 += v.count_at_value();
        }
        buckets
    }

    /// The buckets as text, one line each: range in ms, a bar, the count and its share.
    pub fn histogram_lines(&self) -> Vec<String> {
        let buckets = self.buckets();
        let most = buckets.iter().map(|b| b.2).max().unwrap_or(0).max(1);
        let total = self.count().max(1);
        let labels: Vec<String> = buckets
            .iter()
            .map(|(lo, hi, _)| format!("{} – {} ms", ms(*lo as f64 / 1000.0), ms(*hi as f64 / 1000.0)))
            .collect();
        let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        buckets
            .iter()
            .zip(labels)
            .map(|((_, _, n), label)| {
                let chars = (*n as usize * BAR_CHARS_MAX).div_ceil(most as usize);
                format!(
                    "  {label:>width$} │{:<BAR_CHARS_MAX$} {n} ({:.1}%)",
                    "█".repeat(chars),
                    *n as f64 * 100.0 / total as f64
                )
            })
            .collect()
    }

    /// The buckets as JSON.
    pub fn histogram_json(&self) -> Value {
        Value::Array(
            self.buckets()
                .into_iter()
                .map(|(lo, hi, n)| json!({"from_ms": lo as f64 / 1000.0, "to_ms": hi as f64 / 1000.0, "requests": n}))
                .collect(),
        )
    }
}

/// A latency in ms, with 3 significant digits (at least one decimal below 100).
pub fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Errors by name (a Kafka error name, or CONNECTION / TIMEOUT / BAD_ANSWER for the client's
/// own), counted per failed request or partition answer.
#[derive(Default, Clone)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, name: &str, n: u64) {
        *self.0.entry(name.to_string()).or_default() += n;
    }

    pub fn merge(&mut self, other: &Errors) {
        for (k, n) in &other.0 {
            self.add(k, *n);
        }
    }

    pub fn text(&self) -> String {
        if self.0.is_empty() {
            return "none".to_string();
        }
        self.0.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
    }

    pub fn json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, n)| (k.clone(), json!(n))).collect())
    }
}

/// The error name of a failed call of the client.
pub fn client_error_name(e: &keel_node::kafka_client::ClientError) -> &'static str {
    use keel_node::kafka_client::ClientError;
    match e {
        ClientError::Connect { .. } | ClientError::Io { .. } => "CONNECTION",
        ClientError::Timeout { .. } => "TIMEOUT",
        ClientError::Encode { .. } | ClientError::Decode { .. } => "BAD_ANSWER",
    }
}

/// A Kafka error code's name (`NOT_LEADER_OR_FOLLOWER`).
pub fn code_name(code: i16) -> String {
    super::kafka::error_text(code, None)
}

/// `n` per second over `seconds` (0 for an empty run).
pub fn per_second(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { n as f64 / seconds } else { 0.0 }
}

/// Counters the run updates and the progress bar reads.
#[derive(Default)]
pub struct Live {
    /// Messages done (acknowledged or read).
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

/// The progress bar: `total` messages, or `duration` when the run is timed; hidden when stderr
/// is not a terminal or JSON is asked for. Redrawn from `live` until the returned bar is
/// finished.
pub fn progress(json: bool, total: Option<u64>, duration: Option<Duration>, live: Arc<Live>) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (length, template) = match (total, duration) {
        (_, Some(d)) => (d.as_millis() as u64, "{spinner} {elapsed:>4} / {len_s} [{wide_bar}] {msg}"),
        (Some(n), None) => (n, "{spinner} {elapsed:>4} [{wide_bar}] {pos}/{len} messages {msg}"),
        (None, None) => (0, "{spinner} {elapsed:>4} {pos} messages {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr_with_hz(5));
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.with_key("len_s", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}s", state.len().unwrap_or(0) / 1000);
    }));
    let timed = duration.is_some();
    let shown = bar.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        while !shown.is_finished() {
            let n = live.messages.load(Ordering::Relaxed);
            let bytes = live.bytes.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            if timed {
                shown.set_position(started.elapsed().as_millis() as u64);
                shown.set_message(format!("{n} messages, {:.0} msg/s", per_second(n, secs)));
            } else {
                shown.set_position(n);
                shown.set_message(format!(
                    "{:.0} msg/s, {:.1} MB/s",
                    per_second(n, secs),
                    per_second(bytes, secs) / 1e6
                ));
            }
            tokio::time::sleep(PROGRESS_EVERY).await;
        }
    });
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(us: &[u64]) -> Latencies {
        let mut l = Latencies::new();
        for &u in us {
            l.record(Duration::from_micros(u));
        }
        l
    }

    #[test]
    fn buckets_cover_every_request_once_in_power_of_two_ranges() {
        let l = latencies(&[300, 700, 1_100, 1_500, 1_900, 2_048, 40_000]);
        let b = l.buckets();
        assert_eq!(b.first().map(|x| x.0), Some(256), "{b:?}");
        assert!(b.last().is_some_and(|x| x.0 <= 40_000 && 40_000 < x.1), "{b:?}");
        assert!(b.windows(2).all(|w| w[0].1 == w[1].0 && w[1].1 == w[0].1 * 2), "{b:?}");
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 7);
        let count_in = |lo: u64| b.iter().find(|x| x.0 == lo).map(|x| x.2);
        assert_eq!(count_in(256), Some(1));
        assert_eq!(count_in(512), Some(1));
        assert_eq!(count_in(1024), Some(3));
        assert_eq!(count_in(2048), Some(1));
        let lines = l.histogram_lines();
        assert_eq!(lines.len(), b.len());
        assert!(lines.iter().any(|line| line.contains(&"█".repeat(BAR_CHARS_MAX)) && line.contains(" 3 (")));
    }

    #[test]
    fn percentiles_are_reported_in_ms_and_an_empty_run_has_none() {
        let l = latencies(&(1..=1000).map(|i| i * 10).collect::<Vec<_>>());
        let j = l.json();
        assert_eq!(j["requests"], 1000);
        let p50 = j["p50_ms"].as_f64().unwrap();
        assert!((4.9..=5.1).contains(&p50), "{j}");
        let p99 = j["p99_ms"].as_f64().unwrap();
        assert!((9.8..=10.0).contains(&p99), "{j}");
        assert!(j["max_ms"].as_f64().unwrap() >= p99);
        assert_eq!(latencies(&[]).json(), Value::Null);
        assert!(latencies(&[]).histogram_lines().is_empty());
    }

    #[test]
    fn errors_count_by_name() {
        let mut e = Errors::default();
        e.add(&code_name(6), 2);
        let mut other = Errors::default();
        other.add("CONNECTION", 1);
        other.add(&code_name(6), 1);
        e.merge(&other);
        assert_eq!(e.text(), "CONNECTION ×1, NOT_LEADER_OR_FOLLOWER ×3");
        assert_eq!(e.json(), json!({"CONNECTION": 1, "NOT_LEADER_OR_FOLLOWER": 3}));
    }
}

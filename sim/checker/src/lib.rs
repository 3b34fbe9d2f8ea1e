//! keel-checker: Keel's history format and the checkers that judge a recorded history.
//!
//! Shared by the deterministic simulator (`sim/harness`) and the Jepsen suite (`jepsen/`), so it
//! has no async runtime and no madsim. Everything here is a pure function of its input.
//!
//! # Layout
//! - [`payload`]: the typed `value` of each known operation (`produce`, `read`, `leader`,
//!   `commit`, `fault`, `replicas`, `admin`) and [`Op`], which keeps unknown operations verbatim.
//! - [`history`]: [`Event`], [`History`] — JSON-lines decoding (errors name the line, never
//!   panics) and encoding, and pairing of each invoke with its completion.
//! - [`view`]: derived views shared by checkers: produce operations with their outcome, `ok`
//!   reads, final reads per replica.
//! - [`verdict`]: [`Verdict`], [`Violation`], and [`report`] (human-readable summary).
//! - [`timeline`]: the history as spans (operations per process, faults, leaders per term) and
//!   the text timeline around a violation; [`svg_timeline`] draws the same as an SVG picture.
//! - [`checkers`]: one guarantee per file, each `check(&History) -> Verdict`, and
//!   [`check_all`]:
//!   - `acked_not_lost`: acknowledged produces are in the final reads;
//!   - `failed_not_present`: definitely failed produces are in no read;
//!   - `replicas_agree`: caught-up replicas hold the same log;
//!   - `read_committed_only`: every other read returned only records of that final log;
//!   - `offsets_unique_dense`: offsets increase within reads, are unique per ack, values read
//!     were produced;
//!   - `produce_linearizable`: real-time order of produces implies offset order;
//!   - `single_leader_per_term`: Raft Election Safety;
//!   - `commit_monotonic`: commit indexes never go back, committed terms never conflict;
//!   - `quorum_durable`: committed data is always held durably by a quorum of the partition's
//!     voters (judged from `replicas` samples).

pub mod checkers;
pub mod history;
pub mod payload;
pub mod svg_timeline;
pub mod timeline;
pub mod verdict;
pub mod view;

#[cfg(test)]
mod testkit;

pub use checkers::check_all;
pub use history::{Event, EventType, History, HistoryError, Operation};
pub use payload::{
    Admin, Commit, Fault, GroupCommit, GroupOffset, GroupProcess, Leader, Op, Produce, Read, Record, Replicas,
};
pub use verdict::{Verdict, Violation, report};

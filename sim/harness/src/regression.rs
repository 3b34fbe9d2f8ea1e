//! Regression files: a seed and a fault schedule that once showed a bug, kept in
//! `sim/regressions/<name>.json` and replayed by `sim/run --regressions`.
//!
//! Two sorts:
//! - a **real bug**, now fixed (`canary` absent, `expect: "pass"`): the schedule must pass;
//! - a **canary** (`canary` set, `expect: "fail"`): the schedule must fail when built with that
//!   canary — with the recorded `fails_with` kind among its failure kinds, when one is recorded —
//!   and must pass in a normal build (the planted bug is the only reason it fails).
//!
//! A build with canary C replays only C's regressions; a normal build replays every file.

use std::path::Path;

use serde::Deserialize;
use serde::Serialize;

use crate::faults::Scheduled;

/// What a replay must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Pass,
    Fail,
}

/// One regression file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    pub seed: u64,
    /// The planted bug this regression was recorded with; absent for real bugs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// The shape of the run (files from before there were shapes ran `partition`).
    #[serde(default)]
    pub kind: crate::kind::ScenarioKind,
    pub workload_ms: u64,
    pub producers: u64,
    /// Idempotent producers besides `producers` (files from before there were any ran none).
    #[serde(default)]
    pub idempotent_producers: u64,
    /// Consumer-group members (files from before there were any ran none).
    #[serde(default)]
    pub group_members: u64,
    pub schedule: Vec<Scheduled>,
    /// The outcome under the build the regression was recorded with (its canary, or normal).
    pub expect: Expect,
    /// For `expect: "fail"`: the failing checker or problem kind the replay must show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fails_with: Option<String>,
    /// What the regression protects: the bug, and how it was found.
    pub note: String,
}

impl Regression {
    /// Whether a build with `canary` (None: normal build) replays this regression.
    pub fn applies_to(&self, canary: Option<&str>) -> bool {
        canary.is_none() || self.canary.as_deref() == canary
    }

    /// The outcome required under a build with `canary`.
    pub fn expected_under(&self, canary: Option<&str>) -> Expect {
        if self.canary.is_some() && canary.is_none() { Expect::Pass } else { self.expect }
    }

    /// Judges a replay under a build with `canary`: `kinds` are the replay's failure kinds
    /// (empty when it passed). Err says what was wrong.
    pub fn judge(&self, canary: Option<&str>, kinds: &[String]) -> Result<(), String> {
        match (self.expected_under(canary), kinds.is_empty()) {
            (Expect::Pass, true) => Ok(()),
            (Expect::Pass, false) => Err(format!("expected to pass, failed with {}", kinds.join(", "))),
            (Expect::Fail, true) => Err("expected to fail, passed".to_owned()),
            (Expect::Fail, false) => match &self.fails_with {
                Some(k) if !kinds.contains(k) => {
                    Err(format!("expected to fail with {k}, failed with {} instead", kinds.join(", ")))
                }
                _ => Ok(()),
            },
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Every `*.json` file in `dir`, by file name, with its name (the file stem).
pub fn load_dir(dir: &Path) -> Result<Vec<(String, Regression)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let text = std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let r = serde_json::from_str(&text).map_err(|e| format!("{}: not a regression: {e}", p.display()))?;
            Ok((name, r))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;

    fn canary_regression() -> Regression {
        Regression {
            seed: 1,
            canary: Some("ack-without-quorum".to_owned()),
            kind: crate::kind::ScenarioKind::Partition,
            workload_ms: 20_000,
            producers: 3,
            idempotent_producers: 2,
            group_members: 2,
            schedule: vec![Scheduled { at_ms: 10, fault: Fault::Crash { nodes: vec![1, 2], down_ms: 400 } }],
            expect: Expect::Fail,
            fails_with: Some("acked_not_lost".to_owned()),
            note: "n".to_owned(),
        }
    }

    #[test]
    fn round_trips_and_refuses_unknown_fields() {
        let r = canary_regression();
        let back: Regression = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let json = r.to_json().replace("\"note\"", "\"note\": \"x\", \"typo\"");
        assert!(serde_json::from_str::<Regression>(&json).is_err());
    }

    #[test]
    fn a_canary_regression_fails_only_under_its_canary() {
        let r = canary_regression();
        let lost = vec!["acked_not_lost".to_owned()];
        let other = vec!["no-convergence".to_owned()];
        assert!(r.applies_to(Some("ack-without-quorum")) && r.applies_to(None));
        assert!(!r.applies_to(Some("ack-before-fsync")));
        assert!(r.judge(Some("ack-without-quorum"), &lost).is_ok());
        assert!(r.judge(Some("ack-without-quorum"), &[]).is_err());
        assert!(r.judge(Some("ack-without-quorum"), &other).unwrap_err().contains("acked_not_lost"));
        assert!(r.judge(None, &[]).is_ok());
        assert!(r.judge(None, &lost).is_err());
    }

    #[test]
    fn a_fixed_bug_must_pass() {
        let r = Regression { canary: None, expect: Expect::Pass, fails_with: None, ..canary_regression() };
        assert!(!r.applies_to(Some("ack-without-quorum")));
        assert!(r.judge(None, &[]).is_ok());
        assert!(r.judge(None, &["replicas_agree".to_owned()]).unwrap_err().contains("replicas_agree"));
    }
}

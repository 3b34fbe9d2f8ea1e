//! The shapes a simulated run can take.

use serde::Deserialize;
use serde::Serialize;

/// The shape of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Three nodes, one partition under load: its Raft group and storage under faults.
    #[default]
    Partition,
    /// Five nodes: the partition under load while an operator creates and deletes topics and
    /// reassigns replicas (the workload partition's among them) — the metadata group, node
    /// reconciliation and membership changes under faults.
    Cluster,
}

impl ScenarioKind {
    /// Odd seeds run `Partition`, even seeds `Cluster`.
    pub fn for_seed(seed: u64) -> ScenarioKind {
        if seed.is_multiple_of(2) { ScenarioKind::Cluster } else { ScenarioKind::Partition }
    }

    /// The shape's name, as in regression files.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Partition => "partition",
            ScenarioKind::Cluster => "cluster",
        }
    }

    pub fn nodes(self) -> u64 {
        match self {
            ScenarioKind::Partition => 3,
            ScenarioKind::Cluster => 5,
        }
    }
}

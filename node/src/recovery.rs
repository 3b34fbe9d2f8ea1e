//! A node's recovery duty: a replica stopped by a full disk comes back by itself.
//!
//! A storage error fails a replica closed (its log refuses everything, its Raft group stops);
//! that rule stays. Every `reconcile_ms` this duty looks at the stopped replicas and asks
//! [`keel_core::storage::space::recovery_action`] what to do: a replica stopped by a full disk
//! (ENOSPC while writing, and no fsync failed) is reopened once the free-space probe shows the
//! reserve free again, with a doubling pause after each failed attempt; any other cause (EIO, a
//! failed fsync) waits for an operator's restart.
//!
//! Reopening is a restart of that one replica: shut its Raft group down, close its files,
//! open the log from disk (recovery), check that it still holds every entry it had reported
//! durable, cut what lies above (never reported durable; a failed write may have left part of
//! it), and start a new Raft instance with the same id, which rejoins its group as after a
//! crash. A reopen that fails leaves the stopped replica in place for the next attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::storage::space;
use keel_core::storage::space::RecoveryAction;

use crate::node::Node;
use crate::node::lock;
use crate::partition::Replica;

/// Reopen attempts of one stopped replica.
#[derive(Debug, Default)]
struct Attempts {
    failed: u32,
    last: Option<tokio::time::Instant>,
}

pub(crate) async fn recovery_loop(node: Arc<Node>) {
    let mut attempts: BTreeMap<u64, Attempts> = BTreeMap::new();
    while !node.is_stopped() {
        tokio::time::sleep(Duration::from_millis(node.config.timing.reconcile_ms)).await;
        let replicas: Vec<Arc<Replica>> = lock(&node.replicas).values().cloned().collect();
        attempts.retain(|g, _| replicas.iter().any(|r| r.group == *g && r.stop_cause().is_some()));
        for r in replicas {
            let Some(cause) = r.stop_cause() else { continue };
            let dir = node.partition_dir(r.group);
            let available = node.storage.available_bytes(&dir).ok().flatten();
            let a = attempts.entry(r.group).or_default();
            let since_ms = a.last.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
            let reserve = node.config.replica.disk_reserve_bytes;
            if space::recovery_action(cause, available, reserve, a.failed, since_ms) != RecoveryAction::Reopen {
                continue;
            }
            a.last = Some(tokio::time::Instant::now());
            match node.reopen_replica(&r).await {
                Ok(true) => {
                    attempts.remove(&r.group);
                }
                Ok(false) => {}
                Err(e) => {
                    a.failed = a.failed.saturating_add(1);
                    tracing::error!(node = node.id, group = r.group, error = %e, attempt = a.failed, "reopening a replica stopped by a full disk failed; will retry");
                }
            }
        }
    }
}

impl Node {
    /// Reopens `old`, a replica stopped by a full disk (see the module docs). `Ok(false)` when
    /// it is no longer this node's replica of its group (removed or replaced meanwhile).
    pub(crate) async fn reopen_replica(&self, old: &Arc<Replica>) -> Result<bool, String> {
        let _one = self.reconciling.lock().await;
        let group = old.group;
        let current = lock(&self.replicas).get(&group).cloned();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, old)) {
            return Ok(false);
        }
        let reason = old.failed().unwrap_or_default();
        let durable_before = old.durable_index();
        old.shutdown().await;
        old.close();
        tracing::warn!(node = self.id, group, reason, ?durable_before, "reopening a replica stopped by a full disk");
        let replica = Replica::reopen(
            self.id,
            old.raft_id,
            group,
            self.storage.clone(),
            self.partition_dir(group),
            &self.config.replica,
            self.transport.clone(),
            self.observer.clone(),
            durable_before,
        )
        .await
        .map_err(|e| e.to_string())?;
        replica.record_fsyncs_in(self.metrics.fsync_seconds());
        if self.is_draining() {
            replica.raft().runtime_config().elect(false);
        }
        lock(&self.replicas).insert(group, replica);
        tracing::info!(node = self.id, group, "replica reopened after a full disk; rejoining its group");
        Ok(true)
    }
}

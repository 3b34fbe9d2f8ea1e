//! Loading an offsets partition when this node becomes its leader in term T: wait until the
//! replica has applied an entry of term T (the leader's first entry, so everything committed
//! before it is applied too), then read the committed log from its start to the high
//! watermark and fold every record into a fresh [`Groups`]. A record that does not decode is
//! skipped with a warning; it never stops the coordinator.

use std::sync::Arc;
use std::time::Duration;

use keel_core::batch;
use keel_core::group::GroupConfig;
use keel_core::group::GroupRecord;
use keel_core::group::Groups;
use openraft_rt::WatchReceiver;

use super::Slot;
use super::SlotState;
use crate::clock::wall_clock_ms;
use crate::partition::Replica;
use crate::raft::term_of;

/// Bytes read from the log per step while loading.
const LOAD_READ_BYTES_MAX: usize = 1 << 20;
/// How often the load checks whether the term's first entry is applied.
const LOAD_POLL_MS: u64 = 20;

/// Loads `slot` from `replica`'s log; leaves it `Ready`, or drops out if leadership moved on.
pub(super) async fn load(replica: Arc<Replica>, slot: Arc<Slot>, config: GroupConfig) {
    loop {
        if !replica.is_leader() || replica.term() != slot.term {
            return;
        }
        let applied_term = replica.raft().metrics().borrow_watched().last_applied.map(|l| term_of(&l));
        if applied_term == Some(slot.term) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(LOAD_POLL_MS)).await;
    }
    let now_ms = wall_clock_ms().max(0) as u64;
    let mut groups = Groups::new(config, slot.term);
    let mut offset = replica.log_start_offset();
    let mut records = 0usize;
    let mut skipped = 0usize;
    loop {
        let read = match replica.read(offset, LOAD_READ_BYTES_MAX) {
            Ok(r) => r,
            Err(e) => {
                // Left `Loading`: requests keep getting COORDINATOR_LOAD_IN_PROGRESS, and the
                // read starts over.
                tracing::warn!(group = slot.raft_group, error = %e, "reading the offsets partition failed; retrying");
                tokio::time::sleep(Duration::from_millis(LOAD_POLL_MS * 10)).await;
                if !replica.is_leader() || replica.term() != slot.term {
                    return;
                }
                offset = replica.log_start_offset();
                groups = Groups::new(groups.config.clone(), slot.term);
                records = 0;
                skipped = 0;
                continue;
            }
        };
        if read.batches.is_empty() {
            break;
        }
        for entry in &read.batches {
            offset = entry.meta.base_offset + entry.meta.offset_count;
            if entry.meta.is_control {
                continue;
            }
            let decoded = match batch::records(&entry.bytes) {
                Ok(rs) => rs,
                Err(e) => {
                    tracing::warn!(group = slot.raft_group, offset = entry.meta.base_offset, error = %e, "skipping an undecodable offsets batch");
                    skipped += 1;
                    continue;
                }
            };
            for r in decoded {
                match GroupRecord::decode(r.key.as_deref(), r.value.as_deref()) {
                    Ok(record) => {
                        groups.load(now_ms, record);
                        records += 1;
                    }
                    Err(e) => {
                        tracing::warn!(group = slot.raft_group, offset = entry.meta.base_offset, error = %e, "skipping a corrupt offsets record");
                        skipped += 1;
                    }
                }
            }
        }
        if offset >= read.high_watermark {
            break;
        }
    }
    let mut state = slot.state.lock().await;
    if !replica.is_leader() || replica.term() != slot.term {
        return;
    }
    tracing::info!(
        group = slot.raft_group,
        term = slot.term,
        groups = groups.groups.len(),
        records,
        skipped,
        "offsets partition loaded"
    );
    *state = SlotState::Ready(Box::new(groups));
}

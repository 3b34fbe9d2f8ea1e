//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! ranges of its last few batches with the offsets they were stored at.
//!
//! The state is a pure function of the partition's log: every replica folds each applied batch
//! into it with [`ProducerStates::record`], in log order, so the state survives leader failover
//! and restarts (it is checkpointed with the partition state machine and re-derived from the log
//! tail after it). Before proposing an idempotent batch, the leader asks
//! [`ProducerStates::check`] whether the batch continues its producer's sequence, retries one it
//! already stored, or must be refused — Kafka's rules (`ProducerStateManager` /
//! `ProducerAppendInfo`, non-transactional part):
//!
//! - an epoch below the producer's current one is fenced (`INVALID_PRODUCER_EPOCH`);
//! - a batch of the current epoch whose sequence range equals one of the last
//!   [`BATCHES_KEPT`] batches is a duplicate: answered with the stored batch's offsets, never
//!   stored twice;
//! - a batch of the current epoch must start right after the last stored sequence (wrapping at
//!   `i32::MAX` to 0), else `OUT_OF_ORDER_SEQUENCE_NUMBER`;
//! - a new epoch starts at sequence 0; a producer the partition has never seen (or has
//!   forgotten) may start anywhere.
//!
//! Bounded: at most `producers_max` producers per partition; recording a new one beyond that
//! forgets the one whose last batch is oldest in the log (deterministic on every replica). A
//! forgotten producer's next batch is accepted whatever its sequence, as Kafka does after
//! `producer.id.expiration.ms`.

use std::collections::BTreeMap;
use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

/// Batches per producer whose sequence ranges are remembered (Kafka's 5: clients keep at most
/// five batches in flight per partition when idempotent).
pub const BATCHES_KEPT: usize = 5;

/// Producers per partition remembered by default.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// One stored batch of a producer: its sequence range and where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    /// Offsets the batch occupies.
    pub offset_count: u64,
}

/// What the partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last batches of `epoch`, oldest first, at most [`BATCHES_KEPT`].
    pub batches: VecDeque<StoredBatch>,
}

impl ProducerEntry {
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// Log offset after this producer's last batch (orders producers for eviction).
    fn end_offset(&self) -> u64 {
        self.batches.back().map_or(0, |b| b.base_offset + b.offset_count)
    }
}

/// The producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// Records in the batch minus one (the header's `lastOffsetDelta`).
    pub last_offset_delta: i32,
}

impl ProducerBatch {
    /// The producer fields of `header`, if the batch is idempotent (has a producer id and a
    /// sequence).
    pub fn of(header: &crate::batch::BatchHeader) -> Option<ProducerBatch> {
        (header.producer_id >= 0 && header.base_sequence >= 0).then_some(ProducerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_offset_delta: header.last_offset_delta,
        })
    }

    /// Sequence of the batch's last record (sequences wrap from `i32::MAX` to 0).
    pub fn last_seq(&self) -> i32 {
        add_seq(self.first_seq, self.last_offset_delta)
    }
}

/// `seq + delta` in sequence space: wraps from `i32::MAX` to 0, as Kafka's
/// `DefaultRecordBatch.incrementSequence`.
pub fn add_seq(seq: i32, delta: i32) -> i32 {
    let sum = i64::from(seq.max(0)) + i64::from(delta.max(0));
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// What the leader does with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Store it: it continues the producer's sequence (or starts one).
    Append,
    /// Already stored: answer with the stored batch's offsets; store nothing.
    Duplicate(StoredBatch),
}

/// Why an idempotent batch is refused (nothing is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// A newer epoch of this producer id exists: this producer is fenced.
    #[error("producer epoch {got} is older than the current epoch {current}")]
    InvalidEpoch { current: i16, got: i16 },
    /// The batch does not continue the sequence: `expected` is the sequence the next batch must
    /// start with.
    #[error("sequence {got} is out of order: expected {expected}")]
    OutOfOrder { expected: i32, got: i32 },
}

/// The idempotent-producer state of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    producers_max: usize,
}

impl Default for ProducerStates {
    fn default() -> Self {
        ProducerStates::new(PRODUCERS_PER_PARTITION_MAX)
    }
}

impl ProducerStates {
    pub fn new(producers_max: usize) -> ProducerStates {
        ProducerStates { producers: BTreeMap::new(), producers_max: producers_max.max(1) }
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Whether `batch` may be stored now, is a retry of a stored batch, or is refused.
    pub fn check(&self, batch: &ProducerBatch) -> Result<Decision, SequenceError> {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return Ok(Decision::Append);
        };
        if batch.epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch { current: entry.epoch, got: batch.epoch });
        }
        if batch.epoch > entry.epoch {
            return if batch.first_seq == 0 {
                Ok(Decision::Append)
            } else {
                Err(SequenceError::OutOfOrder { expected: 0, got: batch.first_seq })
            };
        }
        let last_seq = batch.last_seq();
        if let Some(stored) = entry.batches.iter().find(|b| b.first_seq == batch.first_seq && b.last_seq == last_seq) {
            return Ok(Decision::Duplicate(*stored));
        }
        match entry.last_seq() {
            None => Ok(Decision::Append),
            Some(last) => {
                let expected = add_seq(last, 1);
                if batch.first_seq == expected {
                    Ok(Decision::Append)
                } else {
                    Err(SequenceError::OutOfOrder { expected, got: batch.first_seq })
                }
            }
        }
    }

    /// Folds a batch stored at `base_offset` (occupying `offset_count` offsets) into the state.
    /// Applied on every replica in log order, so it never refuses: a batch the leader checked
    /// is recorded as it is. A batch of an older epoch than the producer's (impossible when
    /// every leader checks) leaves the state alone.
    pub fn record(&mut self, batch: &ProducerBatch, base_offset: u64, offset_count: u64) {
        let stored = StoredBatch { first_seq: batch.first_seq, last_seq: batch.last_seq(), base_offset, offset_count };
        match self.producers.get_mut(&batch.producer_id) {
            Some(entry) if batch.epoch < entry.epoch => {}
            Some(entry) => {
                if batch.epoch > entry.epoch {
                    entry.epoch = batch.epoch;
                    entry.batches.clear();
                }
                if entry.batches.len() == BATCHES_KEPT {
                    entry.batches.pop_front();
                }
                entry.batches.push_back(stored);
            }
            None => {
                if self.producers.len() >= self.producers_max {
                    self.evict_oldest();
                }
                self.producers
                    .insert(batch.producer_id, ProducerEntry { epoch: batch.epoch, batches: VecDeque::from([stored]) });
            }
        }
    }

    /// Forgets the producer whose last batch is oldest in the log (the lowest id on a tie).
    fn evict_oldest(&mut self) {
        let oldest = self.producers.iter().min_by_key(|(id, e)| (e.end_offset(), **id)).map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, first_seq: i32, records: i32) -> ProducerBatch {
        ProducerBatch { producer_id: pid, epoch, first_seq, last_offset_delta: records - 1 }
    }

    #[test]
    fn a_retry_of_a_stored_batch_is_a_duplicate_with_its_offsets() {
        let mut s = ProducerStates::default();
        let b = batch(7, 0, 0, 3);
        assert_eq!(s.check(&b), Ok(Decision::Append));
        s.record(&b, 100, 3);
        let stored = StoredBatch { first_seq: 0, last_seq: 2, base_offset: 100, offset_count: 3 };
        assert_eq!(s.check(&b), Ok(Decision::Duplicate(stored)));
        assert_eq!(s.check(&batch(7, 0, 3, 1)), Ok(Decision::Append));
    }

    #[test]
    fn gaps_and_overlaps_are_out_of_order() {
        let mut s = ProducerStates::default();
        s.record(&batch(7, 0, 0, 3), 0, 3);
        assert_eq!(s.check(&batch(7, 0, 4, 1)), Err(SequenceError::OutOfOrder { expected: 3, got: 4 }));
        assert_eq!(s.check(&batch(7, 0, 1, 3)), Err(SequenceError::OutOfOrder { expected: 3, got: 1 }));
    }

    #[test]
    fn only_the_last_five_batches_are_recognised_as_duplicates() {
        let mut s = ProducerStates::default();
        for i in 0..6 {
            s.record(&batch(1, 0, i, 1), i as u64, 1);
        }
        assert!(matches!(s.check(&batch(1, 0, 1, 1)), Ok(Decision::Duplicate(_))));
        assert_eq!(s.check(&batch(1, 0, 0, 1)), Err(SequenceError::OutOfOrder { expected: 6, got: 0 }));
    }

    #[test]
    fn epochs_fence_and_a_new_epoch_starts_at_zero() {
        let mut s = ProducerStates::default();
        s.record(&batch(1, 3, 10, 1), 0, 1);
        assert_eq!(s.check(&batch(1, 2, 11, 1)), Err(SequenceError::InvalidEpoch { current: 3, got: 2 }));
        assert_eq!(s.check(&batch(1, 4, 5, 1)), Err(SequenceError::OutOfOrder { expected: 0, got: 5 }));
        assert_eq!(s.check(&batch(1, 4, 0, 1)), Ok(Decision::Append));
        s.record(&batch(1, 4, 0, 1), 1, 1);
        assert_eq!(s.get(1).map(|e| (e.epoch, e.batches.len())), Some((4, 1)));
        // An unknown producer may start anywhere (Kafka's rule for a producer without state).
        assert_eq!(s.check(&batch(2, 0, 42, 1)), Ok(Decision::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::default();
        let b = batch(1, 0, i32::MAX - 1, 3);
        assert_eq!(b.last_seq(), 0);
        s.record(&b, 0, 3);
        assert_eq!(s.check(&batch(1, 0, 1, 1)), Ok(Decision::Append));
    }

    #[test]
    fn the_producer_written_longest_ago_is_forgotten_beyond_the_bound() {
        let mut s = ProducerStates::new(2);
        s.record(&batch(10, 0, 0, 1), 0, 1);
        s.record(&batch(20, 0, 0, 1), 1, 1);
        s.record(&batch(10, 0, 1, 1), 2, 1);
        s.record(&batch(30, 0, 0, 1), 3, 1);
        assert!(s.get(20).is_none());
        assert!(s.get(10).is_some() && s.get(30).is_some());
    }
}

//! Where each leader epoch starts in one partition log, for OffsetForLeaderEpoch (KIP-320).
//!
//! A partition's leader epoch is its Raft term, and every stored batch carries the term it was
//! appended in (`partitionLeaderEpoch`). Terms never go back along the log, so the log splits
//! into runs of equal term; the cache keeps one [`EpochStart`] per run: the term, and the Raft
//! index and Kafka offset of the run's first entry (of any kind: a Raft blank or membership entry
//! starts its term like a data batch does). With dense Kafka offsets a control entry takes no
//! offset, so its base offset is the next data entry's: the start offset stays right either way.
//!
//! The log keeps the cache in step on append, truncation and purge, and rebuilds it when it
//! opens by binary search over the entries' terms ([`EpochCache::rebuild`]), so neither a
//! request nor recovery scans the whole log. Both ways give the same cache (property-tested:
//! `proptests` and the tests below).
//!
//! [`EpochCache::end_offset_for`] answers as Kafka's `LeaderEpochFileCache.endOffsetFor` does:
//! the largest epoch ≤ the requested one and the end offset of that epoch — the start offset of
//! the next epoch, or the log end for the latest epoch.

/// The first entry of one leader epoch (Raft term) present in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    pub epoch: u64,
    /// Raft index of the epoch's first entry present in the log.
    pub index: u64,
    /// Kafka offset of that entry (its base offset).
    pub offset: u64,
}

/// One entry as the cache sees it: (term, base offset).
pub type TermAt = (u64, u64);

/// The epochs of one partition log, in log order. Invariant: epochs and indexes strictly
/// increase, offsets never decrease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    starts: Vec<EpochStart>,
}

impl EpochCache {
    pub fn new() -> EpochCache {
        EpochCache::default()
    }

    /// The cache of the entries `first_index..next_index`, from `term_at(index)` = (term, base
    /// offset) of the entry at `index`. Terms must never decrease along the log (the log refuses
    /// an append that would break this); reads are O(epochs × log₂ entries).
    pub fn rebuild<E>(
        first_index: u64,
        next_index: u64,
        mut term_at: impl FnMut(u64) -> Result<TermAt, E>,
    ) -> Result<EpochCache, E> {
        let mut starts = Vec::new();
        let mut index = first_index;
        while index < next_index {
            let (epoch, offset) = term_at(index)?;
            starts.push(EpochStart { epoch, index, offset });
            // The first index in (index, next_index) whose term is above `epoch`.
            let (mut lo, mut hi) = (index + 1, next_index);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if term_at(mid)?.0 > epoch {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            index = lo;
        }
        Ok(EpochCache { starts })
    }

    /// Every epoch start, in log order.
    pub fn starts(&self) -> &[EpochStart] {
        &self.starts
    }

    /// The epoch of the last entry, if the log holds one.
    pub fn latest_epoch(&self) -> Option<u64> {
        self.starts.last().map(|s| s.epoch)
    }

    /// Records an appended entry (`index` right after the previous one, `term` not below its).
    pub fn on_append(&mut self, index: u64, term: u64, base_offset: u64) {
        match self.starts.last() {
            Some(last) if last.epoch >= term => {
                debug_assert_eq!(last.epoch, term, "the log refuses terms that go back");
            }
            _ => self.starts.push(EpochStart { epoch: term, index, offset: base_offset }),
        }
    }

    /// Forgets every entry with Raft index >= `index` (a truncated suffix).
    pub fn truncate_from(&mut self, index: u64) {
        let keep = self.starts.partition_point(|s| s.index < index);
        self.starts.truncate(keep);
    }

    /// The log now starts at `start_index` (Kafka offset `start_offset`), and its next index is
    /// `next_index`. The epoch holding the new first entry now starts there; epochs wholly
    /// before it are gone. An empty log has no epochs.
    pub fn purge_before(&mut self, start_index: u64, start_offset: u64, next_index: u64) {
        if start_index >= next_index {
            self.starts.clear();
            return;
        }
        let before = self.starts.partition_point(|s| s.index <= start_index);
        if before == 0 {
            return;
        }
        self.starts.drain(..before - 1);
        let first = &mut self.starts[0];
        first.index = start_index;
        first.offset = start_offset;
    }

    /// Kafka's `endOffsetFor`: (the largest epoch ≤ `requested`, the end offset of that epoch)
    /// where an epoch ends where the next one starts, and the latest epoch at `log_end_offset`.
    /// A requested epoch older than every epoch present gets (`requested`, the first epoch's
    /// start offset: the log start), as in Kafka; `None` (Kafka's UNDEFINED_EPOCH and
    /// UNDEFINED_EPOCH_OFFSET, -1 and -1) for an empty log or an epoch above the latest.
    pub fn end_offset_for(&self, requested: u64, log_end_offset: u64) -> Option<(u64, u64)> {
        let latest = self.starts.last()?;
        if latest.epoch == requested {
            return Some((requested, log_end_offset));
        }
        // The first epoch above the requested one.
        let higher = self.starts.partition_point(|s| s.epoch <= requested);
        let next = self.starts.get(higher)?;
        match higher.checked_sub(1) {
            None => Some((requested, next.offset)),
            Some(floor) => Some((self.starts[floor].epoch, next.offset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log as (term, base offset) per Raft index from `first`.
    fn rebuilt(first: u64, entries: &[TermAt]) -> EpochCache {
        let next = first + entries.len() as u64;
        EpochCache::rebuild(first, next, |i| Ok::<_, ()>(entries[(i - first) as usize])).expect("no read errors")
    }

    fn s(epoch: u64, index: u64, offset: u64) -> EpochStart {
        EpochStart { epoch, index, offset }
    }

    #[test]
    fn rebuild_finds_each_epoch_start() {
        // Terms 1 1 3 3 3 4 with a control entry (no offset) starting term 3 and term 4.
        let log = [(1, 0), (1, 5), (3, 9), (3, 9), (3, 12), (4, 20)];
        let c = rebuilt(10, &log);
        assert_eq!(c.starts(), &[s(1, 10, 0), s(3, 12, 9), s(4, 15, 20)]);
        assert_eq!(rebuilt(10, &[]).starts(), &[]);
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let log = [(1, 0), (1, 5), (3, 9), (3, 12), (5, 20)];
        let c = rebuilt(0, &log);
        assert_eq!(c.end_offset_for(1, 30), Some((1, 9)), "epoch 1 ends where 3 starts");
        assert_eq!(c.end_offset_for(2, 30), Some((1, 9)), "unknown epoch: the largest below it");
        assert_eq!(c.end_offset_for(3, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(4, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(5, 30), Some((5, 30)), "latest epoch: the log end");
        assert_eq!(c.end_offset_for(6, 30), None, "above the latest: undefined");
        assert_eq!(c.end_offset_for(0, 30), Some((0, 0)), "below every epoch: the log start");
        assert_eq!(EpochCache::new().end_offset_for(1, 0), None);
    }

    #[test]
    fn purge_moves_the_first_epoch_to_the_log_start() {
        let mut c = rebuilt(0, &[(1, 0), (1, 1), (2, 2), (2, 3), (4, 4)]);
        c.purge_before(3, 3, 5);
        assert_eq!(c.starts(), &[s(2, 3, 3), s(4, 4, 4)]);
        c.purge_before(4, 4, 5);
        assert_eq!(c.starts(), &[s(4, 4, 4)]);
        c.purge_before(5, 5, 5);
        assert_eq!(c.starts(), &[], "an empty log has no epochs");
    }

    #[test]
    fn truncation_forgets_epochs_that_start_in_the_cut() {
        let mut c = rebuilt(0, &[(1, 0), (2, 1), (2, 2), (3, 3)]);
        c.truncate_from(2);
        assert_eq!(c.starts(), &[s(1, 0, 0), s(2, 1, 1)]);
        c.on_append(2, 5, 2);
        assert_eq!(c.starts(), &[s(1, 0, 0), s(2, 1, 1), s(5, 2, 2)]);
        c.truncate_from(0);
        assert_eq!(c.starts(), &[]);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Append an entry with the term raised by this much, taking this many offsets.
            Append { term_up: u64, offsets: u64 },
            /// Truncate from this fraction of the log (per mille).
            Truncate(u16),
            /// Purge through this fraction of the log (per mille).
            Purge(u16),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => ((0u64..3).prop_map(|t| if t == 2 { 1 } else { 0 }), 0u64..3)
                    .prop_map(|(term_up, offsets)| Op::Append { term_up, offsets }),
                1 => (0u16..1001).prop_map(Op::Truncate),
                1 => (0u16..1001).prop_map(Op::Purge),
            ]
        }

        proptest! {
            /// The cache kept in step with appends, truncations and purges equals the one
            /// rebuilt from the entries (what recovery does), and answers every epoch as a
            /// linear scan of the entries would.
            #[test]
            fn incremental_equals_rebuilt_and_scan(ops in proptest::collection::vec(op(), 0..80)) {
                // The model: (term, base offset) per index from `first`, and the next offset.
                let (mut first, mut entries, mut next_offset, mut term) = (0u64, Vec::<TermAt>::new(), 0u64, 1u64);
                let mut cache = EpochCache::new();
                for op in ops {
                    match op {
                        Op::Append { term_up, offsets } => {
                            term += term_up;
                            let index = first + entries.len() as u64;
                            cache.on_append(index, term, next_offset);
                            entries.push((term, next_offset));
                            next_offset += offsets;
                        }
                        Op::Truncate(f) => {
                            let keep = entries.len() * usize::from(f) / 1000;
                            if keep < entries.len() {
                                next_offset = entries[keep].1;
                                entries.truncate(keep);
                                cache.truncate_from(first + keep as u64);
                            }
                        }
                        Op::Purge(f) => {
                            let gone = entries.len() * usize::from(f) / 1000;
                            let start_offset = entries.get(gone).map_or(next_offset, |e| e.1);
                            entries.drain(..gone);
                            first += gone as u64;
                            cache.purge_before(first, start_offset, first + entries.len() as u64);
                        }
                    }
                    prop_assert_eq!(&cache, &rebuilt(first, &entries));
                }
                for requested in 0..term + 2 {
                    let got = cache.end_offset_for(requested, next_offset);
                    // The scan: epochs present, in order.
                    let present: Vec<TermAt> = entries.iter().copied().fold(Vec::new(), |mut v, e| {
                        if v.last().is_none_or(|l: &TermAt| l.0 < e.0) { v.push(e); }
                        v
                    });
                    let want = match present.last() {
                        None => None,
                        Some(l) if l.0 == requested => Some((requested, next_offset)),
                        Some(_) => match present.iter().position(|e| e.0 > requested) {
                            None => None,
                            Some(0) => Some((requested, present[0].1)),
                            Some(h) => Some((present[h - 1].0, present[h].1)),
                        },
                    };
                    prop_assert_eq!(got, want, "epoch {}", requested);
                }
            }
        }
    }
}

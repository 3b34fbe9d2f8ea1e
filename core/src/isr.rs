//! A partition's in-sync replicas, by Kafka's `replica.lag.time.max.ms` rule.
//!
//! Kafka keeps a follower in the ISR while it has caught up to the leader's log end within the
//! last `replica.lag.time.max.ms`: each time the follower is seen holding everything the leader
//! held at some earlier moment, it was caught up as of that moment. A follower that stops (no
//! acknowledgements), wedges (acknowledges without advancing) or lags (always behind by more
//! than the lag time) leaves the ISR once that moment is older than the lag time.
//!
//! The leader feeds [`IsrTracker::observe`] a sample now and then: its log end and, per
//! follower, the highest log index the follower is known to hold (Raft's matched index) and
//! when it last acknowledged anything. Time is an argument (milliseconds on any monotonic clock
//! the caller keeps); nothing here reads a clock.
//!
//! How "caught up as of" is decided: the tracker remembers (time, leader log end) samples from
//! the last lag window; a follower whose matched index reaches a sample's log end held
//! everything the leader held at that sample's time — but only as far as its last
//! acknowledgement vouches for it, so a stale matched index of a dead follower never counts as
//! caught up after it died.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::VecDeque;

/// Most samples kept per partition; with one sample a second this covers a lag window of
/// several minutes. Dropping the oldest only ever makes a follower look less caught up.
pub const SAMPLES_MAX: usize = 512;

/// What the leader knows of one follower at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The highest log index the follower holds, as the leader knows it (`None`: nothing yet).
    pub matched: Option<u64>,
    /// When the follower last acknowledged a request from this leader (`None`: never), on the
    /// caller's clock.
    pub acked_ms: Option<u64>,
}

/// The leader's view of its followers' progress, for one leadership term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrTracker {
    /// (time, leader log end) samples, both increasing; the newest is the latest observation.
    samples: VecDeque<(u64, u64)>,
    /// Follower → the latest time it is known to have been caught up.
    caught_up_ms: BTreeMap<u64, u64>,
}

impl IsrTracker {
    /// A tracker for a leadership that began at `now_ms`. Like Kafka's new leader, it treats the
    /// followers it starts with as caught up now: each then has the lag time to show progress.
    pub fn new(now_ms: u64, followers: impl IntoIterator<Item = u64>) -> IsrTracker {
        IsrTracker { samples: VecDeque::new(), caught_up_ms: followers.into_iter().map(|f| (f, now_ms)).collect() }
    }

    /// Records the leader's log end and its followers' progress at `now_ms`. Followers absent
    /// from `followers` are forgotten (no longer replicas). `now_ms` must not go back; a sample
    /// that does, or a log end that shrinks, restarts the sample history (never a panic).
    pub fn observe(
        &mut self,
        now_ms: u64,
        leader_end: u64,
        followers: &BTreeMap<u64, FollowerProgress>,
        lag_time_ms_max: u64,
    ) {
        match self.samples.back_mut() {
            Some((t, e)) if *t > now_ms || *e > leader_end => {
                self.samples.clear();
                self.samples.push_back((now_ms, leader_end));
            }
            // The same log end seen later: whoever holds it was caught up as of now.
            Some((t, e)) if *e == leader_end => *t = now_ms,
            _ => self.samples.push_back((now_ms, leader_end)),
        }
        let window_start = now_ms.saturating_sub(lag_time_ms_max);
        while self.samples.len() > SAMPLES_MAX
            || (self.samples.len() > 1 && self.samples.front().is_some_and(|(t, _)| *t < window_start))
        {
            self.samples.pop_front();
        }
        self.caught_up_ms.retain(|f, _| followers.contains_key(f));
        for (&f, p) in followers {
            let (Some(matched), Some(acked)) = (p.matched, p.acked_ms) else { continue };
            // The latest sample whose log end the follower holds.
            let Some(&(t, _)) = self.samples.iter().rev().find(|(_, e)| *e <= matched) else { continue };
            let at = t.min(acked);
            let known = self.caught_up_ms.entry(f).or_insert(at);
            *known = (*known).max(at);
        }
    }

    /// The ISR at `now_ms`: the leader, and every follower caught up within the last
    /// `lag_time_ms_max`.
    pub fn isr(&self, leader: u64, now_ms: u64, lag_time_ms_max: u64) -> BTreeSet<u64> {
        let mut out: BTreeSet<u64> = self
            .caught_up_ms
            .iter()
            .filter(|(_, at)| now_ms.saturating_sub(**at) <= lag_time_ms_max)
            .map(|(f, _)| *f)
            .collect();
        out.insert(leader);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: u64 = 10_000;

    fn progress(entries: &[(u64, Option<u64>, Option<u64>)]) -> BTreeMap<u64, FollowerProgress> {
        entries.iter().map(|&(f, matched, acked_ms)| (f, FollowerProgress { matched, acked_ms })).collect()
    }

    /// Protects Kafka's rule for a healthy follower: always at the leader's end, always in sync.
    #[test]
    fn a_follower_at_the_log_end_stays_in_sync() {
        let mut t = IsrTracker::new(0, [2, 3]);
        for s in 1..100u64 {
            let now = s * 1000;
            t.observe(now, s * 10, &progress(&[(2, Some(s * 10), Some(now)), (3, Some(s * 10), Some(now))]), LAG);
            assert_eq!(t.isr(1, now, LAG), BTreeSet::from([1, 2, 3]));
        }
    }

    /// Protects the ISR from a wedged follower (issue 17: a wedged partition reported ISR
    /// 1,2,3): it acknowledges heartbeats but never advances, so it leaves after the lag time
    /// while the leader's log grows, and only then.
    #[test]
    fn a_wedged_follower_leaves_after_the_lag_time() {
        let mut t = IsrTracker::new(0, [2, 3]);
        let mut left_at = None;
        for s in 1..30u64 {
            let now = s * 1000;
            t.observe(now, 100 + s, &progress(&[(2, Some(100 + s), Some(now)), (3, Some(100), Some(now))]), LAG);
            if left_at.is_none() && !t.isr(1, now, LAG).contains(&3) {
                left_at = Some(now);
            }
            assert!(t.isr(1, now, LAG).contains(&2));
        }
        // Caught up (log end 100 + 0) only as of the start; out once that is older than LAG.
        assert_eq!(left_at, Some(LAG + 1000));
    }

    /// Protects against a dead follower counting as caught up: its matched index equals the
    /// idle leader's end forever, but it stopped acknowledging, so it leaves after the lag time.
    #[test]
    fn a_stopped_follower_of_an_idle_leader_leaves_after_the_lag_time() {
        let mut t = IsrTracker::new(0, [2, 3]);
        let mut in_sync = Vec::new();
        for s in 1..30u64 {
            let now = s * 1000;
            t.observe(now, 50, &progress(&[(2, Some(50), Some(now)), (3, Some(50), Some(5000))]), LAG);
            in_sync.push(t.isr(1, now, LAG).contains(&3));
        }
        // Last acknowledged at 5000: in sync through 15000 (s = 15), out from 16000.
        assert!(in_sync[..15].iter().all(|x| *x));
        assert!(in_sync[15..].iter().all(|x| !*x));
    }

    /// Protects readmission: a follower that catches up again rejoins at once.
    #[test]
    fn a_follower_that_catches_up_rejoins() {
        let mut t = IsrTracker::new(0, [2]);
        t.observe(20_000, 500, &progress(&[(2, Some(10), Some(20_000))]), LAG);
        assert_eq!(t.isr(1, 20_000, LAG), BTreeSet::from([1]));
        t.observe(21_000, 500, &progress(&[(2, Some(500), Some(21_000))]), LAG);
        assert_eq!(t.isr(1, 21_000, LAG), BTreeSet::from([1, 2]));
    }

    /// Protects reassignment: a replica added later is not in sync until it holds the log end,
    /// and a removed replica is forgotten.
    #[test]
    fn new_replicas_join_only_when_caught_up_and_removed_ones_are_forgotten() {
        let mut t = IsrTracker::new(0, [2]);
        t.observe(1000, 100, &progress(&[(2, Some(100), Some(1000)), (4, None, Some(1000))]), LAG);
        assert_eq!(t.isr(1, 1000, LAG), BTreeSet::from([1, 2]));
        t.observe(2000, 100, &progress(&[(4, Some(100), Some(2000))]), LAG);
        assert_eq!(t.isr(1, 2000, LAG), BTreeSet::from([1, 4]));
    }

    /// Bad input is no panic: time going back or a shrinking log end restart the samples.
    #[test]
    fn time_going_back_or_a_shrinking_end_does_not_panic() {
        let mut t = IsrTracker::new(5000, [2]);
        t.observe(6000, 100, &progress(&[(2, Some(100), Some(6000))]), LAG);
        t.observe(1000, 50, &progress(&[(2, Some(50), Some(1000))]), LAG);
        t.observe(7000, 10, &progress(&[(2, Some(10), Some(7000))]), LAG);
        assert!(t.isr(1, 7000, LAG).contains(&2));
        assert!(t.samples.len() <= SAMPLES_MAX);
    }

    proptest::proptest! {
        /// Properties of the rule over arbitrary sample sequences: the leader is always in the
        /// ISR; a follower is in it only if it acknowledged (or the leadership began) within the
        /// lag time; a follower at the log end that acknowledges every sample is always in it.
        #[test]
        fn isr_membership_follows_acknowledgements(
            steps in proptest::collection::vec((1u64..3000, 0u64..50, 0u64..60, proptest::bool::ANY), 1..80),
            lag in 1u64..20_000,
        ) {
            let mut t = IsrTracker::new(0, [2, 3]);
            let (mut now, mut end, mut last_ack_3) = (0u64, 0u64, 0u64);
            for (dt, grow, behind, acks) in steps {
                now += dt;
                end += grow;
                if acks {
                    last_ack_3 = now;
                }
                let f3 = FollowerProgress { matched: Some(end.saturating_sub(behind)), acked_ms: Some(last_ack_3) };
                let f2 = FollowerProgress { matched: Some(end), acked_ms: Some(now) };
                t.observe(now, end, &BTreeMap::from([(2, f2), (3, f3)]), lag);
                let isr = t.isr(1, now, lag);
                proptest::prop_assert!(isr.contains(&1));
                proptest::prop_assert!(isr.contains(&2));
                if isr.contains(&3) {
                    proptest::prop_assert!(now - last_ack_3 <= lag, "3 in sync {} ms after its last ack", now - last_ack_3);
                }
                proptest::prop_assert!(t.samples.len() <= SAMPLES_MAX);
            }
        }
    }
}

//! Spend in fixed-width time buckets (a minute, an hour), kept only as long as something reads
//! them: the spend-spike breakers' sliding window and their usual rate.

use crate::core::Msat;
use std::collections::VecDeque;

/// (bucket start, msat used in it), oldest first, none older than `keep` seconds.
#[derive(Debug, Clone, Default)]
pub(super) struct Buckets {
    slots: VecDeque<(i64, u64)>,
}

impl Buckets {
    /// The start of the `width`-second bucket holding `at`.
    pub(super) fn start(at: i64, width: i64) -> i64 {
        at - at.rem_euclid(width)
    }

    /// Adds to the bucket starting at `start`, dropping buckets older than `keep` seconds
    /// before `now` (and not adding to one of those).
    pub(super) fn add(&mut self, start: i64, msat: u64, now: i64, keep: i64) {
        let oldest = now - keep;
        while self.slots.front().is_some_and(|(s, _)| *s < oldest) {
            self.slots.pop_front();
        }
        if start < oldest {
            return;
        }
        match self.slots.iter_mut().rev().find(|(s, _)| *s == start) {
            Some(slot) => slot.1 = slot.1.saturating_add(msat),
            None => {
                let at = self.slots.partition_point(|(s, _)| *s < start);
                self.slots.insert(at, (start, msat));
            }
        }
    }

    /// Takes from the bucket starting at `start`, if it is still kept.
    pub(super) fn sub(&mut self, start: i64, msat: u64) {
        if let Some(slot) = self.slots.iter_mut().rev().find(|(s, _)| *s == start) {
            slot.1 = slot.1.saturating_sub(msat);
        }
    }

    /// Used in the buckets starting in `[from, until)`.
    pub(super) fn sum(&self, from: i64, until: i64) -> Msat {
        Msat::new(
            self.slots
                .iter()
                .filter(|(s, _)| *s >= from && *s < until)
                .fold(0u64, |sum, (_, msat)| sum.saturating_add(*msat)),
        )
    }

    /// Forgets everything (a breaker resumed counts afresh).
    pub(super) fn clear(&mut self) {
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_add_take_and_forget_what_is_too_old() {
        let mut b = Buckets::default();
        b.add(0, 5, 0, 120);
        b.add(60, 7, 60, 120);
        b.add(0, 1, 60, 120);
        assert_eq!(b.sum(0, 120).get(), 13);
        b.sub(60, 2);
        assert_eq!(b.sum(60, 120).get(), 5);
        // At 150 the bucket at 0 is older than 120 s: dropped.
        b.add(120, 1, 150, 120);
        assert_eq!(b.sum(0, 240).get(), 6);
        b.clear();
        assert_eq!(b.sum(0, 240).get(), 0);
    }
}

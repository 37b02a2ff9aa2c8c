//! Concurrency limits: at most `max` requests in flight per caller and scope. The slots (which
//! ticket holds one, and until when) are the store's; the [`State`] a store hands this module
//! is read off them before each check ([`State::holding`]): `count` is the live slots and `at`
//! when the oldest of them frees itself (0 with none). A denied request takes no slot, so
//! nothing here is recorded: the store inserts the admitted request's slot and reads the state
//! again.

use std::num::NonZeroU32;

use super::{Nanos, State};

/// Nanoseconds in a microsecond: the resolution of a slot's end.
const MICROSECOND: Nanos = 1_000;

impl State {
    /// The state of a concurrency limit whose live slots end at `ends` (all after `now`, the
    /// store having dropped the others).
    pub fn holding(ends: impl Iterator<Item = Nanos>) -> State {
        let (count, oldest) =
            ends.fold((0u32, Nanos::MAX), |(n, oldest), end| (n.saturating_add(1), oldest.min(end)));
        State { at: if count > 0 { oldest } else { 0 }, count, previous: 0 }
    }
}

/// When a slot taken at `now` frees itself: `hold` later, rounded up to a whole microsecond.
/// Redis keeps a slot's end as a sorted-set score, a double, in which whole microseconds since
/// the epoch are exact (until 2255) and nanoseconds are not; both stores round alike, and
/// rounding up never frees a slot before its hold.
pub fn slot_end(hold: Nanos, now: Nanos) -> Nanos {
    now.saturating_add(hold).div_ceil(MICROSECOND).saturating_mul(MICROSECOND)
}

pub(super) fn admits(max: NonZeroU32, state: &State) -> bool {
    state.count < max.get()
}

/// Remaining (free slots), reset (until the oldest slot frees itself, 0 with none),
/// retry-after (the same when no slot is free) and window (the hold).
pub(super) fn after(max: NonZeroU32, hold: Nanos, state: &State, now: Nanos) -> (u32, Nanos, Nanos, Nanos) {
    let remaining = max.get().saturating_sub(state.count);
    let reset = if state.count > 0 { state.at.saturating_sub(now) } else { 0 };
    (remaining, reset, if remaining > 0 { 0 } else { reset }, hold)
}

#[cfg(test)]
mod tests {
    use crate::limiter::{Algorithm, Limit, SECOND};

    use super::*;

    const T0: Nanos = 1_700_000_000 * SECOND;

    fn two_at_once() -> Limit {
        Limit::new(
            "concurrent",
            Algorithm::Concurrent { max: NonZeroU32::new(2).unwrap(), hold: 60 * SECOND },
        )
    }

    #[test]
    fn admits_while_a_slot_is_free_and_waits_for_the_oldest_otherwise() {
        let limit = two_at_once();
        let one = State::holding([T0 + 30 * SECOND].into_iter());
        assert!(limit.admits(&one, T0, 1));
        let v = limit.verdict(&one, T0, true, 1);
        assert_eq!(
            (v.quota, v.remaining, v.reset, v.retry_after, v.window),
            (2, 1, 30 * SECOND, 0, 60 * SECOND)
        );
        let full = State::holding([T0 + 50 * SECOND, T0 + 30 * SECOND].into_iter());
        assert!(!limit.admits(&full, T0, 1));
        let v = limit.verdict(&full, T0, false, 1);
        assert_eq!((v.remaining, v.reset, v.retry_after, v.wait), (0, 30 * SECOND, 30 * SECOND, 0));
        assert_eq!(limit.available_in(&v), 30 * SECOND);
    }

    #[test]
    fn no_slot_held_is_a_whole_quota_with_nothing_to_wait_for() {
        let v = two_at_once().verdict(&State::holding(std::iter::empty()), T0, true, 1);
        assert_eq!((v.remaining, v.reset, v.retry_after), (2, 0, 0));
    }

    #[test]
    fn a_slot_ends_on_the_microsecond_at_or_after_its_hold() {
        assert_eq!(slot_end(SECOND, T0), T0 + SECOND);
        assert_eq!(slot_end(SECOND, T0 + 1), T0 + SECOND + 1_000);
        assert_eq!(slot_end(SECOND, T0 + 999), T0 + SECOND + 1_000);
        assert_eq!(slot_end(SECOND, T0 + 1_000), T0 + SECOND + 1_000);
    }
}

//! Fixed windows: `state.at` is the end of the current window, `state.count` what it counted.

use std::num::NonZeroU32;

use super::{Nanos, State, Window};

pub(super) fn roll(window: Window, state: &mut State, now: Nanos) {
    if now >= state.at {
        *state = State { at: window.bounds(now).1, count: 0, previous: 0 };
    }
}

/// Whether `weight` more fit in the window: `count + weight <= requests`.
pub(super) fn admits(requests: NonZeroU32, state: &State, weight: u32) -> bool {
    u64::from(state.count) + u64::from(weight) <= u64::from(requests.get())
}

/// Remaining, reset, retry-after (for a request of `weight`) and window length, from a rolled
/// state: a window without `weight` left admits it only once it ends.
pub(super) fn after(
    requests: NonZeroU32,
    window: Window,
    state: &State,
    now: Nanos,
    weight: u32,
) -> (u32, Nanos, Nanos, Nanos) {
    let remaining = requests.get().saturating_sub(state.count);
    let reset = state.at.saturating_sub(now);
    let fits = remaining >= weight.clamp(1, requests.get());
    (remaining, reset, if fits { 0 } else { reset }, window.len_at(now))
}

#[cfg(test)]
mod tests {
    use crate::limiter::tests::{hit, hit_weighing};
    use crate::limiter::{Algorithm, Limit, State, SECOND};
    use std::num::NonZeroU32;

    use super::*;

    fn per_minute(n: u32) -> Limit {
        Limit::new(
            "minute",
            Algorithm::Fixed { requests: NonZeroU32::new(n).unwrap(), window: Window::Minute },
        )
    }

    #[test]
    fn denies_the_eleventh_request_in_a_minute() {
        let limit = per_minute(10);
        let mut state = State::default();
        let start = 1_700_000_040 * SECOND; // a whole minute
        for i in 0..10 {
            let v = hit(&limit, &mut state, start + i * SECOND);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i as u32);
        }
        let v = hit(&limit, &mut state, start + 15 * SECOND);
        assert!(!v.allowed);
        assert_eq!(v.remaining, 0);
        assert_eq!(v.retry_after, 45 * SECOND);
        assert_eq!(v.reset, 45 * SECOND);
        assert_eq!(v.window, 60 * SECOND);
    }

    #[test]
    fn a_new_minute_starts_afresh() {
        let limit = per_minute(1);
        let mut state = State::default();
        let start = 1_700_000_040 * SECOND;
        assert!(hit(&limit, &mut state, start + 59 * SECOND).allowed);
        assert!(!hit(&limit, &mut state, start + 60 * SECOND - 1).allowed);
        assert!(hit(&limit, &mut state, start + 60 * SECOND).allowed);
    }

    #[test]
    fn a_cost_of_5_against_a_quota_of_20_passes_exactly_4_times() {
        let limit = per_minute(20);
        let mut state = State::default();
        let start = 1_700_000_040 * SECOND;
        for i in 0..4 {
            let v = hit_weighing(&limit, &mut state, start, 5);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 15 - 5 * i);
        }
        let v = hit_weighing(&limit, &mut state, start + SECOND, 5);
        assert!(!v.allowed);
        assert_eq!((v.remaining, v.retry_after), (0, 59 * SECOND));
        // A cost of 3 with 2 left waits for the window too, though something remains.
        let mut state = State { at: start + 60 * SECOND, count: 18, previous: 0 };
        let v = hit_weighing(&limit, &mut state, start, 3);
        assert!(!v.allowed);
        assert_eq!((v.remaining, v.retry_after), (2, 60 * SECOND));
        assert!(hit_weighing(&limit, &mut state, start, 2).allowed);
    }

    #[test]
    fn a_denied_request_that_is_not_recorded_costs_nothing() {
        let limit = per_minute(2);
        let mut state = State::default();
        let now = 1_700_000_040 * SECOND;
        hit(&limit, &mut state, now);
        hit(&limit, &mut state, now);
        for _ in 0..5 {
            hit(&limit, &mut state, now);
        }
        assert_eq!(state.count, 2);
    }
}

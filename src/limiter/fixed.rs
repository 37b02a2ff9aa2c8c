//! Fixed windows: `state.at` is the end of the current window, `state.count` what it counted.

use std::num::NonZeroU32;

use super::{Nanos, State, Window};

pub(super) fn roll(window: Window, state: &mut State, now: Nanos) {
    if now >= state.at {
        *state = State { at: window.bounds(now).1, count: 0, previous: 0 };
    }
}

/// Remaining, reset, retry-after and window length, from a rolled state: a full window admits
/// nothing until it ends.
pub(super) fn after(
    requests: NonZeroU32,
    window: Window,
    state: &State,
    now: Nanos,
) -> (u32, Nanos, Nanos, Nanos) {
    let remaining = requests.get().saturating_sub(state.count);
    let reset = state.at.saturating_sub(now);
    (remaining, reset, if remaining > 0 { 0 } else { reset }, window.len_at(now))
}

#[cfg(test)]
mod tests {
    use crate::limiter::{tests::hit, Algorithm, Limit, State, SECOND};
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

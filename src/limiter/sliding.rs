//! Sliding windows, estimated from two fixed windows: `state.at` ends the current window,
//! `state.count` is its count and `state.previous` the previous window's. A request at `now` sees
//! `count + ceil(previous * overlap)`, where `overlap` is the share of the previous window that
//! still lies within one window-length before `now`. Rounding up means the estimate never admits
//! more than the fixed window would; the estimate assumes the previous window's requests were
//! spread evenly, so a sliding interval of one window can hold up to `quota + previous *
//! elapsed/len` requests when they were not. No request is admitted past `quota` in any one
//! calendar window.

use std::num::NonZeroU32;

use super::{Nanos, State, Window};

pub(super) fn roll(window: Window, state: &mut State, now: Nanos) {
    if now >= state.at {
        let (start, end) = window.bounds(now);
        // Only the window right before this one still weighs.
        let previous = if start == state.at { state.count } else { 0 };
        *state = State { at: end, count: 0, previous };
    }
}

/// `ceil(previous * (end - t) / len)`: the previous window's weight at `t`.
fn weighted(previous: u32, end: Nanos, len: Nanos, t: Nanos) -> u64 {
    let num = u128::from(previous) * u128::from(end.saturating_sub(t));
    u64::try_from(num.div_ceil(u128::from(len.max(1)))).expect("at most `previous`")
}

/// What a request at `now` sees counted: this window's count and the previous one's weight.
pub(super) fn used(window: Window, state: &State, now: Nanos) -> u64 {
    u64::from(state.count) + weighted(state.previous, state.at, window.len_at(now), now)
}

/// Remaining, reset, retry-after (for a request of `weight`) and window length, from a
/// rolled state.
pub(super) fn after(
    requests: NonZeroU32,
    window: Window,
    state: &State,
    now: Nanos,
    weight: u32,
) -> (u32, Nanos, Nanos, Nanos) {
    let quota = requests.get();
    let weight = weight.clamp(1, quota);
    let end = state.at;
    let len = window.len_at(now);
    let used = used(window, state, now);
    let remaining = u32::try_from(u64::from(quota).saturating_sub(used)).expect("at most the quota");
    let retry_after = if remaining >= weight {
        0
    } else if u64::from(state.count) + u64::from(weight) <= u64::from(quota) {
        // Within this window, once the previous window's weight has shrunk to k:
        // ceil(previous * (end - t) / len) <= k  <=>  t >= end - floor(k * len / previous).
        // The weight is above k now, so previous > k and the instant lies in this window.
        let k = u128::from(quota - weight - state.count);
        let slack = k * u128::from(len) / u128::from(state.previous.max(1));
        end - Nanos::try_from(slack).expect("below len") - now
    } else {
        // This window has no room for it: in the next one, this window's count is the weight,
        // and count > k.
        let next_end = window.bounds(end).1;
        let next_len = next_end - end;
        let k = u128::from(quota - weight);
        let slack = k * u128::from(next_len) / u128::from(state.count.max(1));
        next_end - Nanos::try_from(slack).expect("below the next window's length") - now
    };
    (remaining, end - now, retry_after, len)
}

#[cfg(test)]
mod tests {
    use crate::limiter::tests::{admits_at, hit, hit_counting_denied, hit_weighing};
    use crate::limiter::{Algorithm, Limit, State, SECOND};
    use std::num::NonZeroU32;

    use super::*;

    fn sliding_minute(n: u32) -> Limit {
        Limit::new(
            "minute",
            Algorithm::Sliding { requests: NonZeroU32::new(n).unwrap(), window: Window::Minute },
        )
    }

    const T0: Nanos = 1_700_000_040 * SECOND; // a whole minute

    #[test]
    fn a_full_previous_window_weighs_on_the_next() {
        let limit = sliding_minute(10);
        let mut state = State::default();
        for _ in 0..10 {
            assert!(hit(&limit, &mut state, T0 + 50 * SECOND).allowed);
        }
        // 15 s into the next minute, 45/60 of the previous 10 still count: ceil(7.5) = 8.
        let now = T0 + 75 * SECOND;
        assert_eq!(hit(&limit, &mut state, now).remaining, 1);
        assert_eq!(hit(&limit, &mut state, now).remaining, 0);
        let v = hit(&limit, &mut state, now);
        assert!(!v.allowed);
        // With 2 counted, it needs ceil(10 * (end - t) / 60 s) <= 7, i.e. t >= end - 42 s.
        assert_eq!(v.retry_after, 3 * SECOND);
        assert!(!hit(&limit, &mut state, now + v.retry_after - 1).allowed);
        assert!(hit(&limit, &mut state, now + v.retry_after).allowed);
    }

    #[test]
    fn a_window_two_back_does_not_weigh() {
        let limit = sliding_minute(3);
        let mut state = State::default();
        for _ in 0..3 {
            hit(&limit, &mut state, T0);
        }
        let v = hit(&limit, &mut state, T0 + 120 * SECOND);
        assert!(v.allowed);
        assert_eq!(v.remaining, 2);
    }

    #[test]
    fn retry_after_a_full_window_points_into_the_next() {
        let limit = sliding_minute(4);
        let mut state = State::default();
        for _ in 0..4 {
            hit(&limit, &mut state, T0 + 10 * SECOND);
        }
        let v = hit(&limit, &mut state, T0 + 20 * SECOND);
        assert!(!v.allowed);
        // Next minute: ceil(4 * (end' - t) / 60) <= 3  <=>  t >= end' - 45 s.
        let allowed_at = T0 + 120 * SECOND - 45 * SECOND;
        assert_eq!(v.retry_after, allowed_at - (T0 + 20 * SECOND));
        assert!(!hit(&limit, &mut state, allowed_at - 1).allowed);
        assert!(hit(&limit, &mut state, allowed_at).allowed);
    }

    #[test]
    fn a_counted_denial_is_in_the_wait_it_gets() {
        // 4 per minute, all used at :10; a denied request at :20 is counted, so the next minute
        // starts with a weight of 5, not 4: ceil(5 * (end' - t) / 60 s) <= 3  <=>  t >= end' - 36 s.
        let limit = sliding_minute(4);
        let mut state = State::default();
        for _ in 0..4 {
            assert!(hit_counting_denied(&limit, &mut state, T0 + 10 * SECOND).allowed);
        }
        let now = T0 + 20 * SECOND;
        let v = hit_counting_denied(&limit, &mut state, now);
        assert!(!v.allowed);
        let allowed_at = T0 + 120 * SECOND - 36 * SECOND;
        assert_eq!(v.retry_after, allowed_at - now);
        assert!(!admits_at(&limit, &state, allowed_at - 1));
        assert!(hit_counting_denied(&limit, &mut state, allowed_at).allowed);
    }

    #[test]
    fn a_heavy_request_waits_until_the_previous_window_weighs_little_enough() {
        // 10 per minute, 8 counted last minute; 15 s in, ceil(8 * 45 / 60) = 6 weigh, 4 remain.
        let limit = sliding_minute(10);
        let mut state = State { at: T0 + 60 * SECOND, count: 8, previous: 0 };
        let now = T0 + 75 * SECOND;
        let v = hit_weighing(&limit, &mut state, now, 5);
        assert!(!v.allowed);
        assert_eq!(v.remaining, 4);
        // Cost 5 fits once ceil(8 * (end - t) / 60 s) <= 5  <=>  t >= end - 37.5 s.
        assert_eq!(v.retry_after, 7 * SECOND + SECOND / 2);
        assert!(!hit_weighing(&limit, &mut state, now + v.retry_after - 1, 5).allowed);
        let v = hit_weighing(&limit, &mut state, now + v.retry_after, 5);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn an_allowed_request_that_takes_the_last_one_says_how_long_until_the_next() {
        let limit = sliding_minute(2);
        let mut state = State::default();
        assert_eq!(hit(&limit, &mut state, T0).retry_after, 0);
        let v = hit(&limit, &mut state, T0);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
        // ceil(2 * (end' - t) / 60 s) <= 1  <=>  t >= end' - 30 s.
        assert_eq!(v.retry_after, 90 * SECOND);
    }
}

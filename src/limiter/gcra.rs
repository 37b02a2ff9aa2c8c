//! GCRA, the token bucket as arithmetic on one instant: `state.at` is the theoretical arrival
//! time (TAT) of the next request. With emission interval `T = period / average` and tolerance
//! `tau = (burst - 1) * T`, a request at `now` conforms when `max(TAT, now) <= now + tau`.
//! This is Traefik's rateLimit: a bucket of `burst` that starts full and refills `average` per
//! `period`.

use std::num::NonZeroU32;

use super::{Nanos, State, Verdict};

fn clamp(n: u128) -> Nanos {
    Nanos::try_from(n).unwrap_or(Nanos::MAX)
}

pub(super) fn check(emission: Nanos, burst: NonZeroU32, state: &State, now: Nanos) -> Verdict {
    let t = u128::from(emission.max(1));
    let tau = t * u128::from(burst.get() - 1);
    let now_ = u128::from(now);
    let tat = u128::from(state.at).max(now_);
    let allowed = tat <= now_ + tau;
    let (remaining, reset, retry_after) = if allowed {
        // After this request the TAT moves by one emission interval.
        let remaining = (now_ + tau - tat) / t;
        (remaining, tat + t - now_, 0)
    } else {
        (0, tat - now_, tat - tau - now_)
    };
    Verdict {
        allowed,
        quota: burst.get(),
        remaining: u32::try_from(remaining).expect("at most burst - 1"),
        reset: clamp(reset),
        retry_after: clamp(retry_after),
        window: clamp(t * u128::from(burst.get())),
    }
}

pub(super) fn record(emission: Nanos, state: &mut State, now: Nanos) {
    state.at = state.at.max(now).saturating_add(emission);
}

#[cfg(test)]
mod tests {
    use crate::limiter::{tests::hit, Algorithm, Limit, State, SECOND};
    use std::num::NonZeroU32;

    use super::*;

    /// Traefik's `average = 100, period = 1s, burst = 50`.
    fn traefik_example() -> Limit {
        Limit::new("bucket", Algorithm::Gcra { emission: SECOND / 100, burst: NonZeroU32::new(50).unwrap() })
    }

    const T0: Nanos = 1_700_000_000 * SECOND;

    #[test]
    fn admits_a_full_burst_at_once_then_denies() {
        let limit = traefik_example();
        let mut state = State::default();
        for i in 0..50 {
            let v = hit(&limit, &mut state, T0);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 49 - i);
        }
        let v = hit(&limit, &mut state, T0);
        assert!(!v.allowed);
        assert_eq!(v.retry_after, SECOND / 100);
        assert_eq!(v.reset, SECOND / 2);
    }

    #[test]
    fn refills_one_request_per_emission_interval() {
        let limit = traefik_example();
        let mut state = State::default();
        for _ in 0..50 {
            hit(&limit, &mut state, T0);
        }
        let t = T0 + SECOND / 100;
        assert!(hit(&limit, &mut state, t).allowed);
        assert!(!hit(&limit, &mut state, t).allowed);
        // After a full half second of silence, the whole burst is back.
        let later = T0 + SECOND;
        for _ in 0..50 {
            assert!(hit(&limit, &mut state, later).allowed);
        }
        assert!(!hit(&limit, &mut state, later).allowed);
    }

    #[test]
    fn a_burst_of_one_is_a_steady_rate() {
        let limit = Limit::new("s", Algorithm::Gcra { emission: SECOND, burst: NonZeroU32::new(1).unwrap() });
        let mut state = State::default();
        assert!(hit(&limit, &mut state, T0).allowed);
        let v = hit(&limit, &mut state, T0 + SECOND / 2);
        assert!(!v.allowed);
        assert_eq!(v.retry_after, SECOND / 2);
        assert!(hit(&limit, &mut state, T0 + SECOND).allowed);
    }

    #[test]
    fn huge_periods_do_not_overflow() {
        let limit = Limit::new(
            "y",
            Algorithm::Gcra { emission: u64::MAX / 2, burst: NonZeroU32::new(u32::MAX).unwrap() },
        );
        let mut state = State::default();
        let v = hit(&limit, &mut state, T0);
        assert!(v.allowed);
        assert_eq!(v.window, u64::MAX);
    }
}

//! GCRA, the token bucket as arithmetic on one instant: `state.at` is the theoretical arrival
//! time (TAT) of the next request. With emission interval `T = period / average` and tolerance
//! `tau = (burst - 1) * T`, a request at `now` conforms when `max(TAT, now) <= now + tau`.
//! This is Traefik's rateLimit: a bucket of `burst` that starts full and refills `average` per
//! `period`.
//!
//! **Waiting, as Traefik's reservation.** With a `max_delay`, a request also conforms when its
//! token is at most that far off, `TAT <= now + tau + max_delay`; it is counted at once (the
//! TAT moves on as for any admitted request) and told to wait `TAT_before - now - tau`, which
//! is golang.org/x/time/rate's `Reservation.Delay()` for the same bucket. Denied requests are
//! not reserved, as Traefik cancels their reservation.

use std::num::NonZeroU32;

use super::{Nanos, State, Verdict, MAX_SPAN};

fn clamp(n: u128) -> Nanos {
    Nanos::try_from(n).unwrap_or(Nanos::MAX)
}

/// Whether the `weight`-th token is due within `tau` (and `max_delay`): it comes `weight - 1`
/// intervals after the TAT, `max(TAT, now) + (weight - 1) * T <= now + tau + max_delay`.
pub(super) fn admits(
    emission: Nanos,
    burst: NonZeroU32,
    max_delay: Nanos,
    state: &State,
    now: Nanos,
    weight: u32,
) -> bool {
    let t = u128::from(emission.max(1));
    let tau = t * u128::from(burst.get() - 1);
    let last = u128::from(state.at.max(now)) + t * u128::from(weight.saturating_sub(1));
    last <= u128::from(now) + tau + u128::from(max_delay)
}

/// The wait of a request that was admitted and counted at `now`, from the TAT it left behind:
/// its last token came due one emission interval before that TAT moved to, `burst` intervals
/// before the new TAT in all (`TAT_before + (weight - 1) * T - now - tau`), whatever its
/// weight.
pub(super) fn wait(emission: Nanos, burst: NonZeroU32, state: &State, now: Nanos) -> Nanos {
    let span = u128::from(emission.max(1)) * u128::from(burst.get());
    clamp(u128::from(state.at).saturating_sub(u128::from(now) + span))
}

/// Moves the TAT on by `weight` emission intervals, but never past `now + MAX_SPAN`: counted
/// denials and reported costs may push a bucket into debt, and the cap bounds that debt (an
/// admitted request never reaches it, as config keeps `burst * emission` within [`MAX_SPAN`]).
pub(super) fn record(emission: Nanos, state: &mut State, now: Nanos, weight: u32) {
    let moved = u128::from(state.at.max(now)) + u128::from(emission.max(1)) * u128::from(weight);
    let cap = now.saturating_add(MAX_SPAN);
    state.at = clamp(moved).min(cap).max(state.at);
}

/// Remaining, reset, retry-after (for a request of `weight`) and window length, from the TAT
/// the request left behind.
pub(super) fn after(
    emission: Nanos,
    burst: NonZeroU32,
    state: &State,
    now: Nanos,
    weight: u32,
) -> (u32, Nanos, Nanos, Nanos) {
    let t = u128::from(emission.max(1));
    let tau = t * u128::from(burst.get() - 1);
    let now_ = u128::from(now);
    let tat = u128::from(state.at).max(now_);
    // The k-th request at `now` conforms while tat + (k - 1) * t <= now + tau.
    let remaining = if tat <= now_ + tau { (now_ + tau - tat) / t + 1 } else { 0 };
    // A request of weight w needs its w-th token: (tat + (w - 1) * t) - tau from now.
    let last = t * u128::from(weight.clamp(1, burst.get()) - 1);
    let retry_after = (tat - now_ + last).saturating_sub(tau);
    (
        u32::try_from(remaining).expect("at most burst"),
        clamp(tat - now_),
        clamp(retry_after),
        clamp(t * u128::from(burst.get())),
    )
}

/// Nanoseconds until the bucket holds one token more than `v.remaining` (zero when full). With
/// `d = reset = TAT - now`, the bucket holds `remaining` tokens while
/// `d > tau - remaining * T`, so the next one arrives after `d - tau + remaining * T`.
pub(super) fn next_token(emission: Nanos, burst: NonZeroU32, v: &Verdict) -> Nanos {
    if v.remaining >= burst.get() {
        return 0;
    }
    let t = u128::from(emission.max(1));
    let tau = t * u128::from(burst.get() - 1);
    let d = u128::from(v.reset);
    clamp((d + t * u128::from(v.remaining)).saturating_sub(tau))
}

#[cfg(test)]
mod tests {
    use crate::limiter::tests::{admits_at, hit, hit_counting_denied, hit_weighing};
    use crate::limiter::{Algorithm, Limit, State, SECOND};
    use std::num::NonZeroU32;

    use super::*;

    /// Traefik's `average = 100, period = 1s, burst = 50`.
    fn traefik_example() -> Limit {
        Limit::new(
            "bucket",
            Algorithm::Gcra { emission: SECOND / 100, burst: NonZeroU32::new(50).unwrap(), max_delay: 0 },
        )
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
        let limit = Limit::new(
            "s",
            Algorithm::Gcra { emission: SECOND, burst: NonZeroU32::new(1).unwrap(), max_delay: 0 },
        );
        let mut state = State::default();
        assert!(hit(&limit, &mut state, T0).allowed);
        let v = hit(&limit, &mut state, T0 + SECOND / 2);
        assert!(!v.allowed);
        assert_eq!(v.retry_after, SECOND / 2);
        assert!(hit(&limit, &mut state, T0 + SECOND).allowed);
    }

    #[test]
    fn a_heavy_request_takes_as_many_tokens_as_it_weighs() {
        // burst 20, one token a second: cost 5 passes 4 times, then waits for 5 tokens.
        let limit = Limit::new(
            "b",
            Algorithm::Gcra { emission: SECOND, burst: NonZeroU32::new(20).unwrap(), max_delay: 0 },
        );
        let mut state = State::default();
        for i in 0..4 {
            let v = hit_weighing(&limit, &mut state, T0, 5);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 15 - 5 * i);
        }
        let v = hit_weighing(&limit, &mut state, T0, 5);
        assert!(!v.allowed);
        assert_eq!((v.remaining, v.retry_after, v.reset), (0, 5 * SECOND, 20 * SECOND));
        assert!(!hit_weighing(&limit, &mut state, T0 + 5 * SECOND - 1, 5).allowed);
        let v = hit_weighing(&limit, &mut state, T0 + 5 * SECOND, 5);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn a_heavy_request_within_max_delay_waits_for_its_last_token() {
        // One token every 10 ms, burst 4, max_delay 50 ms: a cost of 4 empties the bucket; a
        // second one needs the tokens due at 10, 20, 30 and 40 ms, and waits 40 ms for the last.
        let ms = SECOND / 1000;
        let limit = Limit::new(
            "b",
            Algorithm::Gcra { emission: 10 * ms, burst: NonZeroU32::new(4).unwrap(), max_delay: 50 * ms },
        );
        let mut state = State::default();
        assert_eq!(hit_weighing(&limit, &mut state, T0, 4).wait, 0);
        let v = hit_weighing(&limit, &mut state, T0, 4);
        assert!(v.allowed);
        assert_eq!(v.wait, 40 * ms);
        assert_eq!(state.at, T0 + 80 * ms);
        // A cost of 2 more would wait for a token due at 60 ms, past max_delay: denied, and
        // told it passes without waiting 60 ms on.
        let v = hit_weighing(&limit, &mut state, T0, 2);
        assert!(!v.allowed);
        assert_eq!(v.retry_after, 60 * ms);
    }

    #[test]
    fn a_reported_cost_pushes_the_debt_no_further_than_max_span() {
        let limit = Limit::new(
            "s",
            Algorithm::Gcra { emission: 86_400 * SECOND, burst: NonZeroU32::new(3).unwrap(), max_delay: 0 },
        );
        let mut state = State::default();
        limit.record(&mut state, T0, 1_000_000_000);
        assert_eq!(state.at, T0 + MAX_SPAN);
    }

    #[test]
    fn huge_periods_do_not_overflow() {
        let limit = Limit::new(
            "y",
            Algorithm::Gcra {
                emission: u64::MAX / 2,
                burst: NonZeroU32::new(u32::MAX).unwrap(),
                max_delay: 0,
            },
        );
        let mut state = State::default();
        let v = hit(&limit, &mut state, T0);
        assert!(v.allowed);
        assert_eq!(v.window, u64::MAX);
    }

    #[test]
    fn a_client_that_obeys_retry_after_is_admitted_when_denials_count() {
        // average = 1, period = 2s, burst = 1: the denied request at T0 is counted, so the next
        // conforming instant is T0 + 4 s, and that is what the client is told.
        let limit = Limit::new(
            "s",
            Algorithm::Gcra { emission: 2 * SECOND, burst: NonZeroU32::new(1).unwrap(), max_delay: 0 },
        );
        let mut state = State::default();
        assert!(hit_counting_denied(&limit, &mut state, T0).allowed);
        let mut now = T0;
        for _ in 0..5 {
            let v = hit_counting_denied(&limit, &mut state, now);
            assert!(!v.allowed);
            assert_eq!(v.retry_after, 4 * SECOND);
            assert!(!admits_at(&limit, &state, now + v.retry_after - 1));
            now += v.retry_after;
            assert!(hit_counting_denied(&limit, &mut state, now).allowed, "obeyed Retry-After");
        }
    }

    #[test]
    fn counted_denials_push_the_debt_no_further_than_max_span() {
        let limit = Limit::new(
            "s",
            Algorithm::Gcra { emission: 86_400 * SECOND, burst: NonZeroU32::new(1).unwrap(), max_delay: 0 },
        );
        let mut state = State::default();
        for _ in 0..1000 {
            hit_counting_denied(&limit, &mut state, T0);
        }
        assert_eq!(state.at, T0 + MAX_SPAN);
        let v = hit_counting_denied(&limit, &mut state, T0);
        assert_eq!((v.retry_after, v.reset, v.remaining), (MAX_SPAN, MAX_SPAN, 0));
        assert!(admits_at(&limit, &state, T0 + MAX_SPAN));
    }

    #[test]
    fn the_next_token_comes_one_emission_interval_after_the_last_one_taken() {
        // average = 100, burst = 50: one token every 10 ms, a full bucket after 500 ms.
        let limit = traefik_example();
        let mut state = State::default();
        let v = hit(&limit, &mut state, T0);
        assert_eq!((v.remaining, v.reset), (49, SECOND / 100));
        assert_eq!(limit.available_in(&v), SECOND / 100, "the next token, not the whole bucket");
        for _ in 0..48 {
            hit(&limit, &mut state, T0);
        }
        let v = hit(&limit, &mut state, T0);
        assert_eq!((v.remaining, v.reset), (0, SECOND / 2));
        assert_eq!(limit.available_in(&v), SECOND / 100, "not the full 500 ms");
        // 4 ms later the next token is 6 ms away, and it is really there then, not before.
        let now = T0 + 4 * SECOND / 1000;
        let probe = limit.verdict(&state, now, true, 1);
        let wait = limit.available_in(&probe);
        assert_eq!(wait, 6 * SECOND / 1000);
        assert!(!admits_at(&limit, &state, now + wait - 1));
        assert!(admits_at(&limit, &state, now + wait));
        // Partly refilled: 23 tokens 233 ms on (23 whole intervals), the 24th 7 ms later.
        let now = T0 + 233 * SECOND / 1000;
        let probe = limit.verdict(&state, now, true, 1);
        assert_eq!((probe.remaining, limit.available_in(&probe)), (23, 7 * SECOND / 1000));
        // Full again: nothing to wait for.
        let probe = limit.verdict(&state, T0 + SECOND, true, 1);
        assert_eq!((probe.remaining, limit.available_in(&probe)), (50, 0));
    }

    #[test]
    fn a_bucket_in_debt_is_available_when_it_admits_again() {
        let limit = Limit::new(
            "s",
            Algorithm::Gcra { emission: 2 * SECOND, burst: NonZeroU32::new(3).unwrap(), max_delay: 0 },
        );
        let mut state = State::default();
        for _ in 0..10 {
            hit_counting_denied(&limit, &mut state, T0);
        }
        let v = limit.verdict(&state, T0, false, 1);
        assert_eq!(v.remaining, 0);
        assert_eq!(limit.available_in(&v), v.retry_after);
        assert!(!admits_at(&limit, &state, T0 + v.retry_after - 1));
        assert!(admits_at(&limit, &state, T0 + v.retry_after));
    }

    /// Traefik's `average = 100, period = 1s, burst = 1` with its own max_delay, 5 ms.
    fn steady(max_delay: Nanos) -> Limit {
        Limit::new(
            "b",
            Algorithm::Gcra { emission: SECOND / 100, burst: NonZeroU32::new(1).unwrap(), max_delay },
        )
    }

    #[test]
    fn an_early_request_within_max_delay_reserves_its_token_and_waits_for_it() {
        let ms = SECOND / 1000;
        let limit = steady(5 * ms);
        let mut state = State::default();
        assert_eq!(hit(&limit, &mut state, T0).wait, 0);
        // The next token is due at T0 + 10 ms: 4 ms early is within 5 ms.
        let v = hit(&limit, &mut state, T0 + 6 * ms);
        assert!(v.allowed);
        assert_eq!(v.wait, 4 * ms);
        assert_eq!(state.at, T0 + 20 * ms, "counted when reserved");
        // 6 ms early is not: denied, not counted, told when its token comes (Traefik's delay).
        let v = hit(&limit, &mut state, T0 + 14 * ms);
        assert!(!v.allowed);
        assert_eq!((v.wait, v.retry_after), (0, 6 * ms));
        assert_eq!(state.at, T0 + 20 * ms);
        // Right at the edge: exactly max_delay early is admitted.
        let v = hit(&limit, &mut state, T0 + 15 * ms);
        assert!(v.allowed);
        assert_eq!(v.wait, 5 * ms);
    }

    #[test]
    fn without_max_delay_an_early_request_is_denied() {
        let limit = steady(0);
        let mut state = State::default();
        hit(&limit, &mut state, T0);
        let v = hit(&limit, &mut state, T0 + SECOND / 1000);
        assert!(!v.allowed);
        assert_eq!(v.wait, 0);
    }

    #[test]
    fn a_steady_client_gets_rate_times_time_plus_burst_as_from_traefik() {
        // The measurement: 400 requests a second for 2 s at average = 100 per second.
        // Traefik admits about 201; denying every early request admits far fewer. Arrivals every 2.5 ms, each up to 2 ms late (a fixed pseudo-random jitter), as a
        // real client's are.
        let count = |limit: &Limit| {
            let mut state = State::default();
            let mut seed: u64 = 7;
            let mut admitted = 0;
            for i in 0..800 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let jitter = (seed >> 33) % (2 * SECOND / 1000);
                admitted += usize::from(hit(limit, &mut state, T0 + i * SECOND / 400 + jitter).allowed);
            }
            admitted
        };
        let (waiting, rejecting) = (count(&steady(SECOND / 200)), count(&steady(0)));
        // 2 s at 100/s plus the burst; refusing early requests loses one token in eight (175).
        assert_eq!(waiting, 201);
        assert!(rejecting <= 180, "{rejecting}");
    }

    #[test]
    fn the_wait_is_the_reservation_delay_of_a_bucket_with_a_burst() {
        // burst = 3, one token every 2 s, max_delay 1 s: after three at once, the fourth is
        // admitted 1 s before its token (due at T0 + 2 s) and waits that second.
        let limit = Limit::new(
            "b",
            Algorithm::Gcra { emission: 2 * SECOND, burst: NonZeroU32::new(3).unwrap(), max_delay: SECOND },
        );
        let mut state = State::default();
        for _ in 0..3 {
            assert_eq!(hit(&limit, &mut state, T0).wait, 0);
        }
        assert!(!hit(&limit, &mut state, T0 + SECOND - 1).allowed);
        let v = hit(&limit, &mut state, T0 + SECOND);
        assert!(v.allowed);
        assert_eq!((v.wait, v.remaining, v.retry_after), (SECOND, 0, 3 * SECOND));
    }
}

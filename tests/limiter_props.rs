//! Invariants of the algorithms, for any arrivals: no window ever admits more than its quota, and
//! every verdict is honest about the state it leaves behind: `remaining` more requests would be
//! admitted now, and a request at `now + retry_after` is admitted while one a nanosecond
//! earlier is not (and in whole seconds, as `Retry-After` says it: admitted at the rounded-up
//! second, not one second before), and `t` (`Limit::available_in`) is when more quota is back (a
//! bucket's next token). For every algorithm, every kind of window and both counting
//! modes, one limit at a time and several checked together as a store does.

#[path = "support/windows.rs"]
mod windows;

use std::num::NonZeroU32;

use proptest::prelude::*;
use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Limit, Nanos, State, Verdict, Window, SECOND};
use quotagate::store::{Counting, Memory, Scope};
use windows::window;

/// 2026-01-01 00:00:00 UTC; cases start somewhere in the two years after it.
const T0: Nanos = 1_767_225_600 * SECOND;
const YEAR: Nanos = 365 * 86_400 * SECOND;

/// One request at `now`: roll, admit, record (if admitted or `count_denied`), verdict.
fn hit(limit: &Limit, state: &mut State, now: Nanos, count_denied: bool) -> Verdict {
    limit.roll(state, now);
    let allowed = limit.admits(state, now);
    if allowed || count_denied {
        limit.record(state, now);
    }
    limit.verdict(state, now, allowed)
}

/// Whether a request at `t` would be admitted, leaving `state` as it is.
fn admits_at(limit: &Limit, state: &State, t: Nanos) -> bool {
    let mut probe = *state;
    limit.roll(&mut probe, t);
    limit.admits(&probe, t)
}

/// Requests that would be admitted one after another at `now`.
fn admissible(limit: &Limit, state: &State, now: Nanos) -> u32 {
    let mut probe = *state;
    let mut n = 0;
    while n <= limit.quota() {
        limit.roll(&mut probe, now);
        if !limit.admits(&probe, now) {
            break;
        }
        limit.record(&mut probe, now);
        n += 1;
    }
    n
}

/// A wait `w` from `now` is exact: admitted at `now + w`, not at `now + w - 1`; and rounded up to
/// whole seconds (`Retry-After`), admitted then and not one second earlier.
fn wait_is_exact(admits: impl Fn(Nanos) -> bool, now: Nanos, w: Nanos) -> Result<(), TestCaseError> {
    prop_assert!(admits(now + w), "not admitted at now + retry_after ({w} ns)");
    if w > 0 {
        prop_assert!(!admits(now + w - 1), "admitted 1 ns before now + retry_after ({w} ns)");
    }
    let secs = w.div_ceil(SECOND);
    prop_assert!(admits(now + secs * SECOND), "not admitted after Retry-After: {secs}");
    if secs > 0 {
        prop_assert!(!admits(now + (secs - 1) * SECOND), "Retry-After: {secs} is a second too long");
    }
    Ok(())
}

/// The verdict on the request at `now` agrees with `state`, the state it left behind.
fn honest(limit: &Limit, state: &State, now: Nanos, v: &Verdict) -> Result<(), TestCaseError> {
    prop_assert_eq!(v.quota, limit.quota());
    prop_assert_eq!(v.remaining, admissible(limit, state, now), "remaining");
    prop_assert_eq!(v.retry_after == 0, v.remaining > 0, "a wait exactly when nothing remains");
    wait_is_exact(|t| admits_at(limit, state, t), now, v.retry_after)?;
    if !matches!(limit.algorithm, Algorithm::Sliding { .. }) {
        // A fixed window ends, a bucket refills: the whole quota is back at the reset.
        prop_assert_eq!(admissible(limit, state, now + v.reset), limit.quota(), "whole at reset");
    }
    // `t` of the RateLimit field: with nothing left, the wait; for a bucket, the next token,
    // exactly: one more admissible then, and not a nanosecond before.
    let available = limit.available_in(v);
    if v.remaining == 0 {
        prop_assert_eq!(available, v.retry_after, "t is the wait when nothing remains");
    }
    if let Algorithm::Gcra { burst, .. } = limit.algorithm {
        if v.remaining < burst.get() {
            prop_assert!(available > 0, "a bucket that is not full gets its next token later");
            prop_assert_eq!(
                admissible(limit, state, now + available),
                v.remaining + 1,
                "the next token at t"
            );
            prop_assert_eq!(admissible(limit, state, now + available - 1), v.remaining, "no token before t");
        } else {
            prop_assert_eq!(available, 0, "a full bucket");
        }
    }
    Ok(())
}

/// Runs arrivals (sorted instants) through `limit`, checking every verdict; returns the
/// admission instants.
fn run(limit: &Limit, arrivals: &[Nanos], count_denied: bool) -> Result<Vec<Nanos>, TestCaseError> {
    let mut state = State::default();
    let mut out = Vec::new();
    for &now in arrivals {
        let v = hit(limit, &mut state, now, count_denied);
        honest(limit, &state, now, &v)?;
        if v.allowed {
            out.push(now);
        }
    }
    Ok(out)
}

/// Sorted instants starting anywhere in two years, with gaps measured in `unit`: many none (a
/// burst), many a small share of it, some longer than it; plus nanosecond jitter, so instants
/// fall anywhere, not on whole seconds.
fn arrivals(unit: Nanos, max: usize) -> impl Strategy<Value = Vec<Nanos>> {
    let gap = prop_oneof![
        3 => Just(0u64),
        5 => 0u64..200_000,
        2 => 0u64..2_000_000,
    ];
    (0..2 * YEAR, prop::collection::vec((gap, 0..SECOND), 1..max)).prop_map(move |(start, gaps)| {
        let mut t = T0 + start;
        gaps.into_iter()
            .map(|(ppm, jitter)| {
                t += (u128::from(unit) * u128::from(ppm) / 1_000_000) as Nanos + jitter * u64::from(ppm > 0);
                t
            })
            .collect()
    })
}

fn windowed(quota: u32, window: Window, sliding: bool) -> Limit {
    let requests = NonZeroU32::new(quota).unwrap();
    Limit::new(
        "w",
        if sliding { Algorithm::Sliding { requests, window } } else { Algorithm::Fixed { requests, window } },
    )
}

/// A bucket of `burst` refilled `average` per `period_ms`, as config builds it.
fn bucket(average: u32, period_ms: u64, burst: u32) -> Limit {
    let emission = period_ms * 1_000_000 / u64::from(average);
    Limit::new("b", Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap(), max_delay: 0 })
}

/// Any limit: a fixed or sliding window of any kind, or a bucket (periods up to a day).
fn limit() -> impl Strategy<Value = Limit> {
    prop_oneof![
        (1u32..8, window(), any::<bool>()).prop_map(|(q, w, s)| windowed(q, w, s)),
        (1u32..10, prop_oneof![1u64..5_000, 1u64..86_400_000], 1u32..8).prop_map(|(a, p, b)| bucket(a, p, b)),
    ]
}

/// The time over which `limit` forgets: its window (a month: 31 days), or its bucket's span.
fn unit(limit: &Limit) -> Nanos {
    limit.span().try_into().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_verdict_says_exactly_when_the_next_request_is_admitted(
        (limit, arrivals) in limit().prop_flat_map(|l| { let u = unit(&l); (Just(l), arrivals(u, 60)) }),
        count_denied: bool,
    ) {
        run(&limit, &arrivals, count_denied)?;
    }

    /// Several limits checked together, as a store does: all must admit, then all or none are
    /// counted. The request's wait is the longest of them all, violated or not: with
    /// `count_denied` a denied request may take an allowed limit's last one.
    #[test]
    fn the_longest_wait_of_several_limits_admits_the_next_request(
        limits in prop::collection::vec(limit(), 1..4),
        arrivals in arrivals(3_600 * SECOND, 60),
        count_denied: bool,
    ) {
        let mut states = vec![State::default(); limits.len()];
        for &now in &arrivals {
            let mut admitted = Vec::new();
            for (limit, state) in limits.iter().zip(&mut states) {
                limit.roll(state, now);
                admitted.push(limit.admits(state, now));
            }
            let record = admitted.iter().all(|&a| a) || count_denied;
            let mut wait = 0;
            for ((limit, state), &allowed) in limits.iter().zip(&mut states).zip(&admitted) {
                if record {
                    limit.record(state, now);
                }
                let v = limit.verdict(state, now, allowed);
                honest(limit, state, now, &v)?;
                wait = wait.max(v.retry_after);
            }
            let all_admit =
                |t: Nanos| limits.iter().zip(&states).all(|(limit, state)| admits_at(limit, state, t));
            wait_is_exact(all_admit, now, wait)?;
        }
    }

    #[test]
    fn a_fixed_window_never_admits_more_than_its_quota(
        quota in 1u32..20, window in window(), offsets in arrivals(60 * SECOND, 200), count_denied: bool,
    ) {
        let admitted = run(&windowed(quota, window, false), &offsets, count_denied)?;
        let mut per_window = std::collections::HashMap::new();
        for t in admitted {
            *per_window.entry(window.bounds(t).0).or_insert(0u32) += 1;
        }
        prop_assert!(per_window.values().all(|&n| n <= quota), "{per_window:?}");
    }

    #[test]
    fn a_sliding_window_admits_no_more_than_a_fixed_one_nor_twice_its_quota_in_any_window_length(
        quota in 1u32..20, window in window(), offsets in arrivals(60 * SECOND, 200), count_denied: bool,
    ) {
        let admitted = run(&windowed(quota, window, true), &offsets, count_denied)?;
        for (i, &t) in admitted.iter().enumerate() {
            let (start, _) = window.bounds(t);
            let in_calendar_window = admitted.iter().filter(|&&u| u >= start && u <= t).count();
            prop_assert!(in_calendar_window <= quota as usize);
            // Any interval of one window length: at most the quota plus the previous window's
            // weighted share, which is below another quota.
            let len = window.len_at(t);
            let in_sliding = admitted[..=i].iter().filter(|&&u| u + len > t).count();
            prop_assert!(in_sliding < 2 * quota as usize, "{in_sliding} in one window length");
        }
    }

    #[test]
    fn gcra_admits_at_most_burst_plus_the_refill_in_any_interval(
        average in 1u32..50, burst in 1u32..20, period_ms in 100u64..5_000,
        offsets in arrivals(SECOND, 200), count_denied: bool,
    ) {
        let limit = bucket(average, period_ms, burst);
        let Algorithm::Gcra { emission, .. } = limit.algorithm else { unreachable!() };
        let admitted = run(&limit, &offsets, count_denied)?;
        for (i, &a) in admitted.iter().enumerate() {
            for (j, &b) in admitted.iter().enumerate().skip(i) {
                let n = (j - i + 1) as u64;
                let allowed = u64::from(burst) + (b - a) / emission;
                prop_assert!(n <= allowed, "{n} admitted in {} ns (at most {allowed})", b - a);
            }
        }
    }

    #[test]
    fn waiting_requests_pass_no_faster_than_the_bucket_and_never_wait_past_max_delay(
        average in 1u32..50, burst in 1u32..20, period_ms in 100u64..5_000, delay_ms in 0u64..2_000,
        offsets in arrivals(SECOND, 200),
    ) {
        // Each admitted request passes at now + wait, when its reserved token is due: those
        // instants hold at most burst plus the refill in any interval, as a bucket without
        // waiting admits, and no wait exceeds max_delay.
        let emission = period_ms * 1_000_000 / u64::from(average);
        let max_delay = delay_ms * 1_000_000;
        let limit = Limit::new(
            "b",
            Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap(), max_delay },
        );
        let mut state = State::default();
        let mut passes = Vec::new();
        for &now in &offsets {
            let before = state;
            let v = hit(&limit, &mut state, now, false);
            prop_assert!(v.wait <= max_delay, "waits {} > {max_delay}", v.wait);
            prop_assert_eq!(v.allowed, before.at <= now + emission * u64::from(burst - 1) + max_delay);
            if v.allowed {
                passes.push(now + v.wait);
            } else {
                prop_assert_eq!(v.wait, 0);
                prop_assert_eq!(state, before, "a refused request reserves nothing");
            }
        }
        passes.sort_unstable();
        for (i, &a) in passes.iter().enumerate() {
            for (j, &b) in passes.iter().enumerate().skip(i) {
                let n = (j - i + 1) as u64;
                let allowed = u64::from(burst) + (b - a) / emission;
                prop_assert!(n <= allowed, "{n} passed in {} ns (at most {allowed})", b - a);
            }
        }
    }

    #[test]
    fn steady_traffic_below_the_rate_is_never_denied(
        average in 1u32..50, burst in 1u32..10, count in 1usize..200,
    ) {
        let limit = bucket(average, 1_000, burst);
        let Algorithm::Gcra { emission, .. } = limit.algorithm else { unreachable!() };
        let offsets: Vec<Nanos> = (0..count as u64).map(|i| T0 + i * emission).collect();
        prop_assert_eq!(run(&limit, &offsets, false)?.len(), count);
    }
}

/// `count_denied = true` with `average = 1, period = "2s", burst = 1`, through the memory store:
/// a client that waits exactly as long as `Retry-After` says is admitted, every time.
#[test]
fn a_client_obeying_retry_after_is_admitted_when_denials_count() {
    let store = Memory::new(100);
    for limit in [
        bucket(1, 2_000, 1),
        windowed(1, Window::Minute, true),
        windowed(3, Window::Day, true),
        windowed(2, Window::Month, false),
    ] {
        let limits = [limit];
        let scopes = [Scope::enforced(0, &limits)];
        let who = Key(u128::from(limits[0].id));
        let mut now = T0 + 123_456_789;
        for round in 0..4 {
            // Hammer until denied, then wait exactly Retry-After (whole seconds).
            let denied = loop {
                let d = store.check(who, &scopes, now, Counting::Everything);
                if !d.is_allowed() {
                    break d;
                }
            };
            let wait = denied.verdicts().iter().map(|j| j.verdict.retry_after).max().unwrap();
            now += wait.div_ceil(SECOND) * SECOND;
            let d = store.check(who, &scopes, now, Counting::Everything);
            assert!(
                d.is_allowed(),
                "{}: round {round}: denied after obeying Retry-After ({wait} ns)",
                limits[0].name
            );
        }
    }
}

//! Invariants of the algorithms, for any arrivals: no window ever admits more than its quota.

use std::num::NonZeroU32;

use proptest::prelude::*;
use quotagate::limiter::{Algorithm, Limit, Nanos, State, Window, SECOND};

/// Somewhere in 2026.
const T0: Nanos = 1_767_225_600 * SECOND;

/// Runs arrivals (sorted offsets from `T0`) through `limit`, counting only admitted ones unless
/// `count_denied`; returns the admission instants.
fn admitted(limit: &Limit, offsets: &[Nanos], count_denied: bool) -> Vec<Nanos> {
    let mut state = State::default();
    let mut out = Vec::new();
    for &off in offsets {
        let now = T0 + off;
        limit.roll(&mut state, now);
        let v = limit.check(&state, now);
        if v.allowed || count_denied {
            limit.record(&mut state, now);
        }
        if v.allowed {
            out.push(now);
        }
        // The advertised wait is honest: nothing is admitted before it.
        if !v.allowed {
            let mut probe = state;
            let before = now + v.retry_after - 1;
            if v.retry_after > 1 {
                limit.roll(&mut probe, before);
                assert!(!limit.check(&probe, before).allowed, "admitted before Retry-After");
            }
        }
    }
    out
}

fn arrivals(span: Nanos) -> impl Strategy<Value = Vec<Nanos>> {
    prop::collection::vec(0..span, 1..400).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

fn window() -> impl Strategy<Value = Window> {
    prop_oneof![
        Just(Window::Second),
        Just(Window::Minute),
        Just(Window::Hour),
        Just(Window::Every(7 * SECOND)),
    ]
}

proptest! {
    #[test]
    fn a_fixed_window_never_admits_more_than_its_quota(
        quota in 1u32..20, window in window(), offsets in arrivals(400 * SECOND), count_denied: bool,
    ) {
        let limit = Limit::new("w", Algorithm::Fixed { requests: NonZeroU32::new(quota).unwrap(), window });
        let admitted = admitted(&limit, &offsets, count_denied);
        let mut per_window = std::collections::HashMap::new();
        for t in admitted {
            *per_window.entry(window.bounds(t).0).or_insert(0u32) += 1;
        }
        prop_assert!(per_window.values().all(|&n| n <= quota), "{per_window:?}");
    }

    #[test]
    fn a_sliding_window_admits_no_more_than_a_fixed_one_nor_twice_its_quota_in_any_window_length(
        quota in 1u32..20, window in window(), offsets in arrivals(400 * SECOND),
    ) {
        let limit = Limit::new("w", Algorithm::Sliding { requests: NonZeroU32::new(quota).unwrap(), window });
        let admitted = admitted(&limit, &offsets, false);
        let len = window.len_at(T0);
        for (i, &t) in admitted.iter().enumerate() {
            let (start, _) = window.bounds(t);
            let in_calendar_window = admitted.iter().filter(|&&u| u >= start && u <= t).count();
            prop_assert!(in_calendar_window <= quota as usize);
            // Any interval of one window length: at most the quota plus the previous window's
            // weighted share, which is below another quota.
            let in_sliding = admitted[..=i].iter().filter(|&&u| u + len > t).count();
            prop_assert!(in_sliding < 2 * quota as usize, "{in_sliding} in one window length");
        }
    }

    #[test]
    fn gcra_admits_at_most_burst_plus_the_refill_in_any_interval(
        average in 1u32..50, burst in 1u32..20, period_ms in 100u64..5_000,
        offsets in arrivals(20 * SECOND), count_denied: bool,
    ) {
        let emission = period_ms * 1_000_000 / u64::from(average);
        prop_assume!(emission > 0);
        let limit = Limit::new("b", Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap() });
        let admitted = admitted(&limit, &offsets, count_denied);
        for (i, &a) in admitted.iter().enumerate() {
            for (j, &b) in admitted.iter().enumerate().skip(i) {
                let n = (j - i + 1) as u64;
                let allowed = u64::from(burst) + (b - a) / emission;
                prop_assert!(n <= allowed, "{n} admitted in {} ns (at most {allowed})", b - a);
            }
        }
    }

    #[test]
    fn steady_traffic_below_the_rate_is_never_denied(
        average in 1u32..50, burst in 1u32..10, count in 1usize..200,
    ) {
        let emission = SECOND / u64::from(average);
        let limit = Limit::new("b", Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap() });
        let offsets: Vec<Nanos> = (0..count as u64).map(|i| i * emission).collect();
        prop_assert_eq!(admitted(&limit, &offsets, false).len(), count);
    }
}

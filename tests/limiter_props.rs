//! Invariants of the algorithms, for any arrivals: no window ever admits more than its quota, and
//! every verdict is honest about the state it leaves behind: `remaining` more requests would be
//! admitted now, and a request at `now + retry_after` is admitted while one a nanosecond
//! earlier is not (and in whole seconds, as `Retry-After` says it: admitted at the rounded-up
//! second, not one second before), and `t` (`Limit::available_in`) is when more quota is back (a
//! bucket's next token). For every algorithm, every kind of window and both counting
//! modes, one limit at a time and several checked together as a store does; for requests of
//! any weight (a cost, or 1), whose waits are for a request of the same weight, and which never
//! take more than the quota's units between them.

#[path = "support/windows.rs"]
mod windows;

use std::num::NonZeroU32;

use proptest::prelude::*;
use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Counts, Limit, Nanos, State, Verdict, Window, SECOND};
use quotagate::store::{Counting, Memory, Scope};
use windows::window;

/// 2026-01-01 00:00:00 UTC; cases start somewhere in the two years after it.
const T0: Nanos = 1_767_225_600 * SECOND;
const YEAR: Nanos = 365 * 86_400 * SECOND;

/// One request of `weight` at `now`: roll, admit, record (if admitted or `count_denied`),
/// verdict.
fn hit(limit: &Limit, state: &mut State, now: Nanos, count_denied: bool, weight: u32) -> Verdict {
    limit.roll(state, now);
    let allowed = limit.admits(state, now, weight);
    if allowed || count_denied {
        limit.record(state, now, weight);
    }
    limit.verdict(state, now, allowed, weight)
}

/// Whether a request of `weight` at `t` would be admitted, leaving `state` as it is.
fn admits_at(limit: &Limit, state: &State, t: Nanos, weight: u32) -> bool {
    let mut probe = *state;
    limit.roll(&mut probe, t);
    limit.admits(&probe, t, weight)
}

/// Requests of weight 1 that would be admitted one after another at `now`.
fn admissible(limit: &Limit, state: &State, now: Nanos) -> u32 {
    let mut probe = *state;
    let mut n = 0;
    while n <= limit.quota() {
        limit.roll(&mut probe, now);
        if !limit.admits(&probe, now, 1) {
            break;
        }
        limit.record(&mut probe, now, 1);
        n += 1;
    }
    n
}

/// The weight a verdict's waits are for: a request heavier than the whole quota is never
/// admitted, and waits as one taking it all.
fn waits_for(limit: &Limit, weight: u32) -> u32 {
    weight.clamp(1, limit.quota())
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

/// The verdict on the request of `weight` at `now` agrees with `state`, the state it left
/// behind.
fn honest(limit: &Limit, state: &State, now: Nanos, v: &Verdict, weight: u32) -> Result<(), TestCaseError> {
    let weight = waits_for(limit, weight);
    prop_assert_eq!(v.quota, limit.quota());
    prop_assert_eq!(v.remaining, admissible(limit, state, now), "remaining");
    prop_assert_eq!(v.retry_after == 0, v.remaining >= weight, "a wait exactly when too little remains");
    wait_is_exact(|t| admits_at(limit, state, t, weight), now, v.retry_after)?;
    if !matches!(limit.algorithm, Algorithm::Sliding { .. }) {
        // A fixed window ends, a bucket refills: the whole quota is back at the reset.
        prop_assert_eq!(admissible(limit, state, now + v.reset), limit.quota(), "whole at reset");
    }
    // `t` of the RateLimit field: with too little left, the wait; for a bucket, the next
    // token, exactly: one more admissible then, and not a nanosecond before.
    let available = limit.available_in(v);
    if v.retry_after > 0 {
        prop_assert_eq!(available, v.retry_after, "t is the wait when too little remains");
    } else if let Algorithm::Gcra { burst, .. } = limit.algorithm {
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

/// Runs arrivals (sorted instants, each with its request's weight) through `limit`, checking
/// every verdict; returns the admitted ones.
fn run(
    limit: &Limit,
    arrivals: &[(Nanos, u32)],
    count_denied: bool,
) -> Result<Vec<(Nanos, u32)>, TestCaseError> {
    let mut state = State::default();
    let mut out = Vec::new();
    for &(now, weight) in arrivals {
        let v = hit(limit, &mut state, now, count_denied, weight);
        honest(limit, &state, now, &v, weight)?;
        if v.allowed {
            out.push((now, weight));
        }
    }
    Ok(out)
}

/// Costs of requests: mostly 1, else up to 8 (which may be more than a small quota).
fn cost() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(1u32), 2 => 1u32..=8]
}

/// [`arrivals`], each with a cost.
fn weighed(unit: Nanos, max: usize) -> impl Strategy<Value = Vec<(Nanos, u32)>> {
    arrivals(unit, max).prop_flat_map(|times| {
        let n = times.len();
        (Just(times), prop::collection::vec(cost(), n))
            .prop_map(|(times, costs)| times.into_iter().zip(costs).collect())
    })
}

/// The admitted weight of `admitted` within `[from, to]`.
fn weight_within(admitted: &[(Nanos, u32)], from: Nanos, to: Nanos) -> u64 {
    admitted.iter().filter(|(t, _)| (from..=to).contains(t)).map(|&(_, w)| u64::from(w)).sum()
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

/// Any limit: a fixed or sliding window of any kind, or a bucket (periods up to a day),
/// counting cost or requests.
fn limit() -> impl Strategy<Value = Limit> {
    let limit = prop_oneof![
        (1u32..8, window(), any::<bool>()).prop_map(|(q, w, s)| windowed(q, w, s)),
        (1u32..10, prop_oneof![1u64..5_000, 1u64..86_400_000], 1u32..8).prop_map(|(a, p, b)| bucket(a, p, b)),
    ];
    let counts = prop_oneof![3 => Just(Counts::Cost), 1 => Just(Counts::Requests)];
    (limit, counts).prop_map(|(l, c)| l.counting(c))
}

/// The time over which `limit` forgets: its window (a month: 31 days), or its bucket's span.
fn unit(limit: &Limit) -> Nanos {
    limit.span().try_into().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_verdict_says_exactly_when_the_next_request_is_admitted(
        (limit, arrivals) in limit().prop_flat_map(|l| { let u = unit(&l); (Just(l), weighed(u, 60)) }),
        count_denied: bool,
    ) {
        run(&limit, &arrivals, count_denied)?;
    }

    /// Several limits checked together, as a store does: all must admit, then all or none are
    /// counted, each with the request's weight in it (its cost, or 1 where the limit counts
    /// requests). The request's wait is the longest of them all, violated or not: with
    /// `count_denied` a denied request may take an allowed limit's last one. The next request
    /// of the same cost is admitted after it.
    #[test]
    fn the_longest_wait_of_several_limits_admits_the_next_request(
        limits in prop::collection::vec(limit(), 1..4),
        arrivals in weighed(3_600 * SECOND, 60),
        count_denied: bool,
    ) {
        let mut states = vec![State::default(); limits.len()];
        for &(now, cost) in &arrivals {
            let mut admitted = Vec::new();
            for (limit, state) in limits.iter().zip(&mut states) {
                limit.roll(state, now);
                admitted.push(limit.admits(state, now, limit.weight(cost)));
            }
            let record = admitted.iter().all(|&a| a) || count_denied;
            let mut wait = 0;
            for ((limit, state), &allowed) in limits.iter().zip(&mut states).zip(&admitted) {
                let weight = limit.weight(cost);
                if record {
                    limit.record(state, now, weight);
                }
                let v = limit.verdict(state, now, allowed, weight);
                honest(limit, state, now, &v, weight)?;
                wait = wait.max(v.retry_after);
            }
            let all_admit = |t: Nanos| {
                limits.iter().zip(&states).all(|(l, s)| admits_at(l, s, t, waits_for(l, l.weight(cost))))
            };
            wait_is_exact(all_admit, now, wait)?;
        }
    }

    #[test]
    fn a_fixed_window_never_admits_more_than_its_quota(
        quota in 1u32..20, window in window(), offsets in weighed(60 * SECOND, 200), count_denied: bool,
    ) {
        let admitted = run(&windowed(quota, window, false), &offsets, count_denied)?;
        let mut per_window = std::collections::HashMap::new();
        for (t, w) in admitted {
            *per_window.entry(window.bounds(t).0).or_insert(0u32) += w;
        }
        prop_assert!(per_window.values().all(|&n| n <= quota), "{per_window:?}");
    }

    #[test]
    fn a_sliding_window_admits_no_more_than_a_fixed_one_nor_twice_its_quota_in_any_window_length(
        quota in 1u32..20, window in window(), offsets in weighed(60 * SECOND, 200), count_denied: bool,
    ) {
        let admitted = run(&windowed(quota, window, true), &offsets, count_denied)?;
        for &(t, _) in &admitted {
            let (start, _) = window.bounds(t);
            prop_assert!(weight_within(&admitted, start, t) <= u64::from(quota));
            // Any interval of one window length: at most the quota plus the previous window's
            // weighted share, which is below another quota.
            let len = window.len_at(t);
            let in_sliding = weight_within(&admitted, (t + 1).saturating_sub(len), t);
            prop_assert!(in_sliding < 2 * u64::from(quota), "{in_sliding} in one window length");
        }
    }

    #[test]
    fn gcra_admits_at_most_burst_plus_the_refill_in_any_interval(
        average in 1u32..50, burst in 1u32..20, period_ms in 100u64..5_000,
        offsets in weighed(SECOND, 200), count_denied: bool,
    ) {
        let limit = bucket(average, period_ms, burst);
        let Algorithm::Gcra { emission, .. } = limit.algorithm else { unreachable!() };
        let admitted = run(&limit, &offsets, count_denied)?;
        for (i, &(a, _)) in admitted.iter().enumerate() {
            for &(b, _) in &admitted[i..] {
                let n = weight_within(&admitted[i..], a, b);
                let allowed = u64::from(burst) + (b - a) / emission;
                prop_assert!(n <= allowed, "{n} admitted in {} ns (at most {allowed})", b - a);
            }
        }
    }

    #[test]
    fn waiting_requests_pass_no_faster_than_the_bucket_and_never_wait_past_max_delay(
        average in 1u32..50, burst in 1u32..20, period_ms in 100u64..5_000, delay_ms in 0u64..2_000,
        offsets in weighed(SECOND, 200),
    ) {
        // Each admitted request passes at now + wait, when its last reserved token is due:
        // those instants hold at most burst plus the refill in tokens in any interval, as a
        // bucket without waiting admits, and no wait exceeds max_delay.
        let emission = period_ms * 1_000_000 / u64::from(average);
        let max_delay = delay_ms * 1_000_000;
        let limit = Limit::new(
            "b",
            Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap(), max_delay },
        );
        let mut state = State::default();
        let mut passes = Vec::new();
        for &(now, weight) in &offsets {
            // Config refuses costs above the burst of a bucket counting them.
            let weight = weight.min(burst);
            let before = state;
            let v = hit(&limit, &mut state, now, false, weight);
            prop_assert!(v.wait <= max_delay, "waits {} > {max_delay}", v.wait);
            let last = before.at.max(now) + emission * u64::from(weight - 1);
            prop_assert_eq!(v.allowed, last <= now + emission * u64::from(burst - 1) + max_delay);
            if v.allowed {
                passes.push((now + v.wait, weight));
            } else {
                prop_assert_eq!(v.wait, 0);
                prop_assert_eq!(state, before, "a refused request reserves nothing");
            }
        }
        // A request passes when its last token is due, so passes come in the order of arrival.
        prop_assert!(passes.windows(2).all(|p| p[0].0 <= p[1].0));
        for (i, &(a, _)) in passes.iter().enumerate() {
            for &(b, _) in &passes[i..] {
                let n = weight_within(&passes[i..], a, b);
                let allowed = u64::from(burst) + (b - a) / emission;
                prop_assert!(n <= allowed, "{n} passed in {} ns (at most {allowed})", b - a);
            }
        }
    }

    #[test]
    fn steady_traffic_below_the_rate_is_never_denied(
        average in 1u32..50, burst in 1u32..10, count in 1usize..200, cost in 1u32..10,
    ) {
        // Requests of one cost, that many emission intervals apart.
        let cost = cost.min(burst);
        let limit = bucket(average, 1_000, burst);
        let Algorithm::Gcra { emission, .. } = limit.algorithm else { unreachable!() };
        let offsets: Vec<(Nanos, u32)> =
            (0..count as u64).map(|i| (T0 + i * u64::from(cost) * emission, cost)).collect();
        prop_assert_eq!(run(&limit, &offsets, false)?.len(), count);
    }
}

/// `count_denied = true` with `average = 1, period = "2s", burst = 1`, through the memory store:
/// a client that waits exactly as long as `Retry-After` says is admitted, every time, whatever
/// its requests cost.
#[test]
fn a_client_obeying_retry_after_is_admitted_when_denials_count() {
    let store = Memory::new(100);
    for (i, (limit, cost)) in [
        (bucket(1, 2_000, 1), 1),
        (bucket(1, 2_000, 5), 3),
        (windowed(1, Window::Minute, true), 1),
        (windowed(3, Window::Day, true), 1),
        (windowed(7, Window::Day, true), 3),
        (windowed(2, Window::Month, false), 1),
        (windowed(5, Window::Month, false), 2),
    ]
    .into_iter()
    .enumerate()
    {
        let limits = [limit];
        let scopes = [Scope::enforced(0, &limits).costing(cost)];
        let who = Key(i as u128);
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

//! The memory store and the Redis store (its Lua script, on a real redis-server) are one
//! algorithm: driven through the same random sequences of (time, limits, counting mode), they
//! give identical decisions, to the nanosecond of every wait. The script is told the time
//! (`Redis::with_caller_clock`), so a sequence can span months in a moment. Buckets may let a
//! request wait for its token (`max_delay`): both stores give the same waits too. Requests
//! have costs (mostly small, some far above any quota) that limits count or not
//! (`counts = "requests"`).
//!
//! A second property starts both from the same extreme state (counts near `u32::MAX`, buckets
//! billions deep), where the products of a sliding window's weight pass 2^53 and doubles would
//! round: the script must still agree with `limiter` exactly.

mod support;

use std::cell::{Cell, RefCell};
use std::num::NonZeroU32;

use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};
use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Counts, Limit, Nanos, State, Window, MAX_DELAY, MAX_SPAN, SECOND};
use quotagate::store::{Closed, Counting, Decision, Memory, Mode, Scope, Store};
use support::windows::window;
use support::RedisServer;

/// 2026-01-01 00:00:00 UTC; cases start somewhere in the two years after it.
const T0: Nanos = 1_767_225_600 * SECOND;
const YEAR: Nanos = 365 * 86_400 * SECOND;

/// Any limit config accepts: windows of every kind, buckets from a nanosecond's emission to a
/// span of 100 days, quotas and bursts small (so they fill) or huge.
fn limit() -> impl Strategy<Value = Limit> {
    let quota = prop_oneof![4 => 1u32..8, 1 => 1u32..=u32::MAX];
    let windowed = (quota.clone(), window(), any::<bool>()).prop_map(|(q, window, sliding)| {
        let requests = NonZeroU32::new(q).unwrap();
        let algorithm = if sliding {
            Algorithm::Sliding { requests, window }
        } else {
            Algorithm::Fixed { requests, window }
        };
        Limit::new("w", algorithm)
    });
    // No wait, a wait of a few emission intervals or less, or up to MAX_DELAY.
    let delay = prop_oneof![1 => Just(0.0f64), 2 => 0.0f64..3.0, 1 => 3.0f64..4.0];
    let bucket = (quota, 0.0f64..1.0, delay).prop_map(|(burst, share, delay)| {
        // Emission intervals spread over orders of magnitude, the span (plus the wait) within
        // MAX_SPAN, as config keeps it.
        let most = (MAX_SPAN - MAX_DELAY) / u64::from(burst);
        let emission = ((most as f64).powf(share) as u64).clamp(1, most);
        let max_delay = if delay < 3.0 {
            ((emission as f64) * delay) as u64
        } else {
            ((MAX_DELAY as f64).powf(delay - 3.0) as u64).min(MAX_DELAY)
        }
        .min(MAX_DELAY);
        Limit::new("b", Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap(), max_delay })
    });
    let counts = prop_oneof![3 => Just(Counts::Cost), 1 => Just(Counts::Requests)];
    (prop_oneof![2 => windowed, 1 => bucket], counts).prop_map(|(l, c)| l.counting(c))
}

/// What a request costs: mostly 1 or a little more, sometimes more than any small quota, now
/// and then anything.
fn cost() -> impl Strategy<Value = u32> {
    prop_oneof![4 => Just(1u32), 3 => 1u32..10, 1 => 1u32..=u32::MAX]
}

/// Up to three scopes of up to three limits (distinct within a scope, as config makes them).
fn scopes() -> impl Strategy<Value = Vec<(u32, Vec<Limit>)>> {
    prop::collection::vec(prop::collection::vec(limit(), 1..4), 1..4).prop_map(|scopes| {
        scopes
            .into_iter()
            .enumerate()
            .map(|(i, mut limits)| {
                let mut seen = std::collections::HashSet::new();
                limits.retain(|l| seen.insert(l.id));
                (i as u32 * 7 + 1, limits)
            })
            .collect()
    })
}

/// A gap between requests: none (a burst), whole seconds, a simple fraction of an hour, day or
/// month (where exact quotients lie), or anything, to the nanosecond.
fn gap() -> impl Strategy<Value = Nanos> {
    prop_oneof![
        3 => Just(0),
        2 => (0u64..600).prop_map(|s| s * SECOND),
        2 => (0u64..48, prop_oneof![Just(3_600u64), Just(86_400), Just(31 * 86_400)])
            .prop_map(|(k, len)| len * SECOND / 24 * k),
        2 => 0..40 * 86_400 * SECOND,
    ]
}

/// A request: the gap before it, or how it misses the wait it was told (a client obeying
/// `retry_after` lands where quotients are exact: one nanosecond early, on time, or one late);
/// which of the case's scopes apply, and which of those are dry-run (bit masks); whether denied
/// requests count; what the request costs.
type Step = (Result<Nanos, i8>, u8, u8, bool, u32);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let when = prop_oneof![3 => gap().prop_map(Ok), 2 => (-1i8..=1).prop_map(Err)];
    let dry_run = prop_oneof![3 => Just(0u8), 1 => any::<u8>()];
    prop::collection::vec((when, any::<u8>(), dry_run, any::<bool>(), cost()), 1..40)
}

fn start() -> impl Strategy<Value = Nanos> {
    prop_oneof![(0..2 * YEAR / SECOND).prop_map(|s| T0 + s * SECOND), (0..2 * YEAR).prop_map(|n| T0 + n)]
}

struct Stores {
    runtime: tokio::runtime::Runtime,
    memory: Store,
    redis: Store,
    server: RedisServer,
}

impl Stores {
    fn start() -> Stores {
        let server = RedisServer::start();
        let (runtime, redis) = support::redis::caller_clock_store(&server, false);
        Stores { runtime, memory: Store::Memory(Memory::new(100_000)), redis, server }
    }

    fn check<'p>(
        &self,
        store: &Store,
        who: Key,
        scopes: &[Scope<'p>],
        now: Nanos,
        counting: Counting,
    ) -> Decision<'p> {
        self.runtime.block_on(store.check(who, scopes, now, counting)).expect("the store decides")
    }
}

fn counting(count_denied: bool) -> Counting {
    if count_denied {
        Counting::Everything
    } else {
        Counting::AllowedOnly
    }
}

#[test]
fn memory_and_redis_decide_every_sequence_identically() {
    let stores = Stores::start();
    let mut runner = TestRunner::new(Cases { cases: 96, failure_persistence: None, ..Cases::default() });
    let caller = Cell::new(0u128);
    let checks = Cell::new(0usize);
    let waited = Cell::new(0usize);
    runner
        .run(&(scopes(), start(), steps()), |(pool, mut now, steps)| {
            caller.set(caller.get() + 1);
            let who = Key(caller.get());
            let mut wait = 0;
            for (when, mask, dry_run, count_denied, cost) in steps {
                now = match when {
                    Ok(gap) => now + gap,
                    Err(miss) => (now + wait).saturating_add_signed(miss.into()).max(now),
                };
                let mask = match mask % (1 << pool.len()) {
                    0 => 1,
                    m => m,
                };
                let mode = |i: usize| if dry_run & (1 << i) != 0 { Mode::DryRun } else { Mode::Enforce };
                let scopes: Vec<Scope<'_>> = pool
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(i, (id, limits))| Scope { id: *id, mode: mode(i), rule: None, limits, cost })
                    .collect();
                let counting = counting(count_denied);
                let memory = stores.check(&stores.memory, who, &scopes, now, counting);
                let redis = stores.check(&stores.redis, who, &scopes, now, counting);
                checks.set(checks.get() + 1);
                prop_assert_eq!(&memory, &redis, "at {} ({:?}) for {:?}", now, counting, scopes);
                // Obeying either wait: until admitted at once, or until admitted with the
                // longest wait a bucket allows (where the reservation's edge lies).
                let edge = now % 2 == 0;
                let wait_of = |j: &quotagate::store::Judged<'_>| {
                    let early = if edge { j.limit.max_delay() } else { 0 };
                    j.verdict.retry_after.saturating_sub(early)
                };
                wait = memory.verdicts().iter().map(wait_of).max().unwrap_or(0);
                if memory.wait() > 0 {
                    waited.set(waited.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(checks.get() > 500, "only {} checks", checks.get());
    assert!(waited.get() > 5, "only {} allowed requests waited", waited.get());
}

/// One limit's counters, as `State` has them, with extreme values.
fn extreme() -> impl Strategy<Value = (Limit, Nanos, State)> {
    let exact = prop::option::weighted(0.7, (any::<u32>(), 0u64..2));
    let previous = prop_oneof![1u32..40, any::<u32>()];
    let count = prop_oneof![0u32..40, any::<u32>()];
    let sliding = (1u32..64, window()).prop_map(|(q, window)| {
        Limit::new("s", Algorithm::Sliding { requests: NonZeroU32::new(q).unwrap(), window })
    });
    (prop_oneof![limit(), sliding], start(), count, previous, 0..MAX_SPAN, exact).prop_map(
        |(limit, now, count, previous, ahead, exact)| {
            let (mut now, mut limit) = (now, limit);
            let state = match limit.algorithm {
                // The window containing now.
                Algorithm::Fixed { window, .. } | Algorithm::Sliding { window, .. } => {
                    let end = window.bounds(now).1;
                    let sliding = matches!(limit.algorithm, Algorithm::Sliding { .. });
                    let mut previous = if sliding { previous.max(1) } else { 0 };
                    let exact = exact.filter(|_| sliding);
                    if let Some((k, early)) = exact {
                        // Where previous * (end - now) / len is a whole k, or a nanosecond past it.
                        let len = u128::from(window.len_at(now));
                        previous = previous % 40 + 1;
                        let k = u128::from(k % previous);
                        now = end - (k * len / u128::from(previous)) as Nanos - early;
                    }
                    // Below the quota, or the weight would not show.
                    let count = if exact.is_some() { count % 8 } else { count };
                    if exact.is_some() {
                        let requests = NonZeroU32::new(previous + 9).unwrap();
                        limit = Limit::new("s", Algorithm::Sliding { requests, window });
                    }
                    State { at: end, count, previous }
                }
                // A TAT up to MAX_SPAN ahead: a bucket in debt.
                Algorithm::Gcra { .. } => State { at: now + ahead, count: 0, previous: 0 },
                Algorithm::Concurrent { .. } => unreachable!("the strategy makes windows and buckets"),
            };
            (limit, now, state)
        },
    )
}

#[test]
fn the_script_agrees_with_the_limiter_from_extreme_states() {
    let stores = Stores::start();
    let mut runner = TestRunner::new(Cases { cases: 1024, failure_persistence: None, ..Cases::default() });
    let next = Cell::new(1u128 << 100);
    let direct = RefCell::new(redis::Client::open(stores.server.url()).unwrap().get_connection().unwrap());
    runner
        .run(&(extreme(), any::<bool>(), cost()), |((limit, now, state), count_denied, cost)| {
            next.set(next.get() + 1);
            let caller = next.get();
            let mut conn = direct.borrow_mut();
            let scope = Scope::enforced(3, std::slice::from_ref(&limit)).costing(cost);
            let (redis, verdict) = seeded(&stores, &mut conn, caller, scope, now, state, count_denied);
            prop_assert_eq!(redis.is_allowed(), verdict.allowed);
            prop_assert_eq!(redis.verdicts()[0].verdict, verdict, "{:?} from {:?} at {}", limit, state, now);
            Ok(())
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))
        .unwrap();
}

/// Seeds `state` into the Redis store's key for the one limit of `scope` and checks a request
/// (of the scope's cost) once at `now`; returns Redis's verdict and the limiter's.
fn seeded<'l>(
    stores: &Stores,
    conn: &mut redis::Connection,
    caller: u128,
    scope: Scope<'l>,
    now: Nanos,
    state: State,
    count_denied: bool,
) -> (Decision<'l>, quotagate::limiter::Verdict) {
    let [limit] = scope.limits else { panic!("one limit") };
    let scopes = [scope];
    // A first check makes the key; then its fields are overwritten with the state.
    stores.check(&stores.redis, Key(caller), &scopes, now, Counting::AllowedOnly);
    let key = format!("quotagate:{{{caller:032x}}}:{:08x}:{:08x}", scope.id, limit.id);
    let (s, n) = (state.at / SECOND, state.at % SECOND);
    let fields = [s.to_string(), n.to_string(), state.count.to_string(), state.previous.to_string()];
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg(&[("s", &fields[0]), ("n", &fields[1]), ("c", &fields[2]), ("p", &fields[3])])
        .query(conn)
        .unwrap();
    let _: i64 = redis::cmd("PEXPIRE").arg(&key).arg(60_000).query(conn).unwrap();
    let redis = stores.check(&stores.redis, Key(caller), &scopes, now, counting(count_denied));
    let weight = limit.weight(scope.cost);
    let mut expected = state;
    limit.roll(&mut expected, now);
    let allowed = limit.admits(&expected, now, weight);
    if allowed || count_denied {
        limit.record(&mut expected, now, weight);
    }
    (redis, limit.verdict(&expected, now, allowed, weight))
}

#[test]
fn a_weight_on_an_exact_quotient_is_not_rounded_up() {
    // 25 counted in the previous second, 0.28 s of it still overlapping: exactly 7 weigh
    // (25 * 0.28 is 7.000000000000001 in doubles).
    let stores = Stores::start();
    let mut conn = redis::Client::open(stores.server.url()).unwrap().get_connection().unwrap();
    let limit = Limit::new(
        "s",
        Algorithm::Sliding { requests: NonZeroU32::new(40).unwrap(), window: Window::Second },
    );
    let end = T0 + 7 * SECOND;
    let now = end - 280_000_000;
    let state = State { at: end, count: 0, previous: 25 };
    let (redis, expected) =
        seeded(&stores, &mut conn, 99, Scope::enforced(3, std::slice::from_ref(&limit)), now, state, false);
    assert_eq!(expected.remaining, 40 - 7 - 1);
    assert_eq!(redis.verdicts()[0].verdict, expected);
}

#[test]
fn a_key_written_in_microseconds_keeps_its_counts() {
    // Hashes whose window end (or TAT) is field `a` in microseconds are read as they were.
    let stores = Stores::start();
    let mut conn = redis::Client::open(stores.server.url()).unwrap().get_connection().unwrap();
    let limits =
        [Limit::new("day", Algorithm::Fixed { requests: NonZeroU32::new(10).unwrap(), window: Window::Day })];
    let scopes = [Scope::enforced(3, &limits)];
    let now = T0 + 3_600 * SECOND + 5;
    let key = format!("quotagate:{{{:032x}}}:{:08x}:{:08x}", 7, 3, limits[0].id);
    let end_us = Window::Day.bounds(now).1 / 1_000;
    let _: () =
        redis::cmd("HSET").arg(&key).arg(&[("a", end_us), ("c", 4), ("p", 0)]).query(&mut conn).unwrap();
    let d = stores.check(&stores.redis, Key(7), &scopes, now, Counting::AllowedOnly);
    assert!(d.is_allowed());
    assert_eq!(d.verdicts()[0].verdict.remaining, 5, "4 counted before, and this one");
    assert_eq!(d.verdicts()[0].verdict.reset, Window::Day.bounds(now).1 - now);
}

#[test]
fn memory_and_redis_give_the_same_waits_to_a_client_faster_than_the_bucket() {
    // One token every 10 ms, burst 3, max_delay 25 ms; a request every millisecond for 200 ms.
    // As with Traefik: the burst at once, then requests up to 25 ms early wait for their token.
    let stores = Stores::start();
    let ms = SECOND / 1000;
    let limits = [Limit::new(
        "b",
        Algorithm::Gcra { emission: 10 * ms, burst: NonZeroU32::new(3).unwrap(), max_delay: 25 * ms },
    )];
    let scopes = [Scope { id: 1, mode: Mode::Enforce, rule: None, limits: &limits, cost: 1 }];
    let mut waits = Vec::new();
    for i in 0..200 {
        let now = T0 + i * ms;
        let memory = stores.check(&stores.memory, Key(u128::MAX), &scopes, now, Counting::AllowedOnly);
        let redis = stores.check(&stores.redis, Key(u128::MAX), &scopes, now, Counting::AllowedOnly);
        assert_eq!(memory, redis, "at {i} ms");
        if memory.is_allowed() {
            waits.push(memory.wait() / ms);
        }
    }
    // The burst at 0, 1 and 2 ms; then the tokens due at 10, 20 and 30 ms reserved at 3, 4 and
    // 5 ms (the last one max_delay ahead); then one every 10 ms, each 25 ms ahead: 6 + 19.
    assert_eq!(&waits[..6], &[0, 0, 0, 7, 16, 25]);
    assert_eq!(waits.len(), 25, "{waits:?}");
    assert!(waits[6..].iter().all(|&w| w == 25), "{waits:?}");
}

#[test]
fn a_remembered_denial_ends_when_the_bucket_would_let_the_caller_wait() {
    // store.redis.local remembers denials until Redis could admit the caller again: for a
    // bucket with max_delay, that is max_delay before its next token, not the token itself.
    let server = RedisServer::start();
    let (runtime, store) = support::redis::caller_clock_store(&server, true);
    let ms = SECOND / 1000;
    let limits = [Limit::new(
        "b",
        Algorithm::Gcra { emission: 100 * ms, burst: NonZeroU32::new(1).unwrap(), max_delay: 30 * ms },
    )];
    let scopes = [Scope { id: 1, mode: Mode::Enforce, rule: None, limits: &limits, cost: 1 }];
    let check = |now| runtime.block_on(store.check(Key(7), &scopes, now, Counting::AllowedOnly)).unwrap();
    assert!(check(T0).is_allowed());
    let denied = check(T0 + 10 * ms);
    assert!(!denied.is_allowed());
    assert_eq!(denied.verdicts()[0].verdict.retry_after, 90 * ms);
    // Still remembered 1 ms before the edge; at the edge (70 ms on, 30 ms before the token)
    // Redis is asked again and admits with a 30 ms wait.
    assert!(!check(T0 + 69 * ms).is_allowed());
    let edge = check(T0 + 70 * ms);
    assert!(edge.is_allowed(), "{edge:?}");
    assert_eq!(edge.wait(), 30 * ms);
}

#[test]
fn a_denial_by_a_concurrency_limit_is_never_remembered() {
    // store.redis.local: a closed ticket frees its slot at once, so the caller's next request
    // must reach Redis, not a denial remembered until the oldest slot's hold ends.
    let server = RedisServer::start();
    let (runtime, store) = support::redis::caller_clock_store(&server, true);
    let limits =
        [Limit::new("c", Algorithm::Concurrent { max: NonZeroU32::new(1).unwrap(), hold: 60 * SECOND })];
    let scopes = [Scope::enforced(1, &limits)];
    let check = |ticket| {
        runtime.block_on(store.check_ticket(Key(7), &scopes, T0, Counting::AllowedOnly, ticket)).unwrap()
    };
    assert!(check(1).is_allowed());
    assert!(!check(2).is_allowed());
    let closed = runtime.block_on(store.close(Key(7), 1, T0 + 60 * SECOND, &scopes, 0, T0)).unwrap();
    assert_eq!(closed, Closed::Closed { released: 1, charged: vec![] });
    assert!(check(3).is_allowed(), "answered by Redis, which knows the slot is free");
}

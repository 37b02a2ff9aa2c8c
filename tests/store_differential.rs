//! The memory store and the Redis store (its Lua script, on a real redis-server) are one
//! algorithm: driven through the same random sequences of (time, limits, counting mode), they
//! give identical decisions, to the nanosecond of every wait. The script is told the time
//! (`Redis::with_caller_clock`), so a sequence can span months in a moment.
//!
//! A second property starts both from the same extreme state (counts near `u32::MAX`, buckets
//! billions deep), where the products of a sliding window's weight pass 2^53 and doubles would
//! round: the script must still agree with `limiter` exactly.

mod support;

use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};
use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Limit, Nanos, State, Window, MAX_SPAN, SECOND};
use quotagate::store::{Counting, Decision, Memory, Redis, Scoped, Store};
use support::RedisServer;

/// 2026-01-01 00:00:00 UTC; cases start somewhere in the two years after it.
const T0: Nanos = 1_767_225_600 * SECOND;
const YEAR: Nanos = 365 * 86_400 * SECOND;

fn window() -> impl Strategy<Value = Window> {
    prop_oneof![
        Just(Window::Second),
        Just(Window::Minute),
        Just(Window::Hour),
        Just(Window::Day),
        Just(Window::Week),
        Just(Window::Month),
        Just(Window::Every(7 * SECOND)),
        Just(Window::Every(900 * SECOND)),
    ]
}

/// Any limit config accepts: windows of every kind, buckets from a nanosecond's emission to a
/// span of 100 days, quotas and bursts small (so they fill) or huge.
fn limit() -> impl Strategy<Value = Limit> {
    let quota = prop_oneof![4 => 1u32..8, 1 => 1u32..=u32::MAX];
    let windowed = (quota.clone(), window(), any::<bool>()).prop_map(|(q, window, sliding)| {
        let requests = NonZeroU32::new(q).unwrap();
        let algorithm =
            if sliding { Algorithm::Sliding { requests, window } } else { Algorithm::Fixed { requests, window } };
        Limit::new("w", algorithm)
    });
    let bucket = (quota, 0.0f64..1.0).prop_map(|(burst, share)| {
        // Emission intervals spread over orders of magnitude, the span within MAX_SPAN.
        let most = MAX_SPAN / u64::from(burst);
        let emission = ((most as f64).powf(share) as u64).clamp(1, most);
        Limit::new("b", Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap() })
    });
    prop_oneof![2 => windowed, 1 => bucket]
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

/// A request: the gap before it, which of the case's scopes apply (a bit mask) and whether
/// denied requests count.
fn steps() -> impl Strategy<Value = Vec<(Nanos, u8, bool)>> {
    prop::collection::vec((gap(), any::<u8>(), any::<bool>()), 1..40)
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
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = support::redis::store_config(&format!("url = \"{}\"", server.url()));
        let redis = Arc::new(Redis::new(config, 1000).with_caller_clock());
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), redis.clone().connect()).await.expect("connects")
        });
        Stores { runtime, memory: Store::Memory(Memory::new(100_000)), redis: Store::Redis(redis), server }
    }

    fn check(&self, store: &Store, who: Key, scopes: &[Scoped<'_>], now: Nanos, counting: Counting) -> Decision {
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
    runner
        .run(&(scopes(), start(), steps()), |(pool, mut now, steps)| {
            caller.set(caller.get() + 1);
            let who = Key(caller.get());
            for (gap, mask, count_denied) in steps {
                now += gap;
                let mask = match mask % (1 << pool.len()) {
                    0 => 1,
                    m => m,
                };
                let scopes: Vec<Scoped<'_>> = pool
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, (scope, limits))| Scoped { scope: *scope, limits })
                    .collect();
                let counting = counting(count_denied);
                let memory = stores.check(&stores.memory, who, &scopes, now, counting);
                let redis = stores.check(&stores.redis, who, &scopes, now, counting);
                checks.set(checks.get() + 1);
                prop_assert_eq!(&memory, &redis, "at {} ({:?}) for {:?}", now, counting, scopes);
            }
            Ok(())
        })
        .unwrap();
    assert!(checks.get() > 500, "only {} checks", checks.get());
}

/// One limit's counters, as `State` has them, with extreme values.
fn extreme() -> impl Strategy<Value = (Limit, Nanos, State)> {
    (limit(), start(), any::<u32>(), any::<u32>(), 0..MAX_SPAN).prop_map(|(limit, now, count, previous, ahead)| {
        let state = match limit.algorithm {
            // A window ending within this one's length (or past, and so rolled away).
            Algorithm::Fixed { window, .. } | Algorithm::Sliding { window, .. } => {
                let end = window.bounds(now).1;
                let previous = if matches!(limit.algorithm, Algorithm::Sliding { .. }) { previous } else { 0 };
                State { at: end, count, previous }
            }
            // A TAT up to MAX_SPAN ahead: a bucket in debt.
            Algorithm::Gcra { .. } => State { at: now + ahead, count: 0, previous: 0 },
        };
        (limit, now, state)
    })
}

#[test]
fn the_script_agrees_with_the_limiter_from_extreme_states() {
    let stores = Stores::start();
    let mut runner = TestRunner::new(Cases { cases: 256, failure_persistence: None, ..Cases::default() });
    let next = Cell::new(1u128 << 100);
    let existed = Cell::new(0usize);
    runner
        .run(&(extreme(), any::<bool>()), |((limit, now, state), count_denied)| {
            next.set(next.get() + 1);
            let caller = next.get();
            let limits = [limit];
            let limit = &limits[0];
            let scopes = [Scoped { scope: 3, limits: &limits }];
            // A first check creates the key; then it is overwritten with the state.
            stores.check(&stores.redis, Key(caller), &scopes, now, Counting::AllowedOnly);
            let key = format!("quotagate:{{{caller:032x}}}:{:08x}:{:08x}", 3, limit.id);
            let (s, n) = (state.at / SECOND, state.at % SECOND);
            let fields = [s.to_string(), n.to_string(), state.count.to_string(), state.previous.to_string()];
            let set = stores.server.cli(&["HSET", &key, "s", &fields[0], "n", &fields[1], "c", &fields[2], "p", &fields[3]]);
            // Unless it expired already (a bucket of nanoseconds), the first check made this key.
            existed.set(existed.get() + usize::from(set.trim() == "0"));
            stores.server.cli(&["PEXPIRE", &key, "60000"]);

            let redis = stores.check(&stores.redis, Key(caller), &scopes, now, counting(count_denied));
            let mut expected = state;
            limit.roll(&mut expected, now);
            let allowed = limit.admits(&expected, now);
            if allowed || count_denied {
                limit.record(&mut expected, now);
            }
            let verdict = limit.verdict(&expected, now, allowed);
            prop_assert_eq!(redis.allowed, allowed);
            prop_assert_eq!(redis.verdicts[0].verdict, verdict, "from {:?} at {}", state, now);
            Ok(())
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))
        .unwrap();
    assert!(existed.get() > 128, "the state was written to the store's keys ({} of 256 existed)", existed.get());
}

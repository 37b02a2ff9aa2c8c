//! Reading and clearing counters without counting: `Store::peek` and `Store::reset` on the
//! memory store and a real redis-server (its script given the test's clock, so a sequence can
//! cross minutes and months in a moment).

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use quotagate::config::{OnError, RedisConfig};
use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Limit, Nanos, Window, SECOND};
use quotagate::store::{Counting, Decision, Memory, Mode, Peek, Redis, Scope, Store, StoreError};
use support::{RedisCluster, RedisServer};

/// 2026-11-30 23:59:00 UTC: a minute before a month, a week and a day end.
const T0: Nanos = 1_796_083_140 * SECOND;

fn fixed(name: &str, n: u32, window: Window) -> Limit {
    Limit::new(name, Algorithm::Fixed { requests: NonZeroU32::new(n).unwrap(), window })
}

fn sliding(name: &str, n: u32, window: Window) -> Limit {
    Limit::new(name, Algorithm::Sliding { requests: NonZeroU32::new(n).unwrap(), window })
}

fn bucket(name: &str, emission: Nanos, burst: u32, max_delay: Nanos) -> Limit {
    Limit::new(name, Algorithm::Gcra { emission, burst: NonZeroU32::new(burst).unwrap(), max_delay })
}

async fn redis_store(server: &RedisServer) -> Store {
    redis_store_at(&format!("url = \"{}\"", server.url())).await
}

/// A Redis store for the `[store.redis]` connection keys `connection`, with the test's clock.
async fn redis_store_at(connection: &str) -> Store {
    connected(support::redis::store_config(connection)).await
}

async fn connected(config: RedisConfig) -> Store {
    let redis = Arc::new(Redis::new(config, 1000).with_caller_clock());
    tokio::time::timeout(Duration::from_secs(10), redis.clone().connect()).await.expect("connects");
    Store::Redis(redis)
}

/// For every store: each peek predicts the check that follows it to the nanosecond (its
/// decision and every verdict), a second peek sees the same, and what a peek says is left is
/// what the limits allow after the requests counted so far.
async fn peeks_predict_checks(store: &Store) {
    let plan = [fixed("month", 9, Window::Month), sliding("minute", 4, Window::Minute)];
    let rule = [bucket("bucket", 20 * SECOND, 3, 5 * SECOND), sliding("week", 7, Window::Week)];
    let dry = [fixed("dry", 2, Window::Day)];
    let scopes = [
        Scope::enforced(0, &plan),
        Scope::enforced(5, &rule),
        Scope { mode: Mode::DryRun, ..Scope::enforced(8, &dry) },
    ];
    for counting in [Counting::AllowedOnly, Counting::Everything] {
        let who = Key(0x5eed_0000 + counting as u128);
        let (mut allowed, mut denied) = (0, 0);
        let mut now = T0;
        // Gaps (in seconds, a third more each) that cross the minute, the day, the week and
        // the month.
        for (i, gap) in
            [0, 1, 0, 7, 13, 0, 29, 0, 2, 31, 0, 50, 0, 0, 4, 600, 0, 86_400, 0, 3].iter().enumerate()
        {
            now += gap * SECOND + SECOND / 3;
            let peek = store.peek(who, &scopes, now, counting).await.expect("the store answers");
            assert_eq!(store.peek(who, &scopes, now, counting).await.unwrap(), peek, "a peek counts nothing");
            let checked = store.check(who, &scopes, now, counting).await.unwrap();
            assert_eq!(checked, peek.next, "request {i} ({counting:?})");
            for (before, after) in peek.now.iter().zip(checked.verdicts()) {
                assert_eq!(before.verdict.allowed, after.verdict.allowed, "{}", before.limit.name);
                assert!(before.verdict.remaining >= after.verdict.remaining, "{}", before.limit.name);
            }
            if checked.is_allowed() {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
        assert!(allowed > 0 && denied > 0, "{allowed} allowed, {denied} denied");
    }
}

#[tokio::test]
async fn memory_peeks_predict_checks() {
    peeks_predict_checks(&Store::Memory(Memory::new(1000))).await;
}

#[tokio::test]
async fn redis_peeks_predict_checks() {
    let server = RedisServer::start();
    peeks_predict_checks(&redis_store(&server).await).await;
}

#[tokio::test]
async fn redis_cluster_peeks_predict_checks_and_resets() {
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let store = redis_store_at(&format!("cluster = [{}]", urls.join(", "))).await;
    peeks_predict_checks(&store).await;
    a_reset_lets_a_denied_caller_through(&store).await;
}

/// After `n` requests in one window, a peek says exactly `n` were used, for each algorithm.
async fn usage_after_n_requests_is_exact(store: &Store) {
    let limits = [
        fixed("month", 50, Window::Month),
        sliding("hour", 40, Window::Hour),
        bucket("bucket", 3600 * SECOND, 30, 0),
    ];
    for n in [0u32, 1, 7, 25] {
        let who = Key(0xc0ffee + u128::from(n));
        let scopes = [Scope::enforced(0, &limits)];
        for i in 0..n {
            let now = T0 + Nanos::from(i) * SECOND;
            assert!(store.check(who, &scopes, now, Counting::AllowedOnly).await.unwrap().is_allowed());
        }
        let peek = store.peek(who, &scopes, T0 + 55 * SECOND, Counting::AllowedOnly).await.unwrap();
        let remaining: Vec<u32> = peek.now.iter().map(|j| j.verdict.remaining).collect();
        assert_eq!(remaining, [50 - n, 40 - n, 30 - n], "after {n} requests");
        // The month ends in 5 s; the bucket is whole again once its n hours are back.
        assert_eq!(peek.now[0].verdict.reset, 5 * SECOND);
        assert_eq!(peek.now[2].verdict.reset, (Nanos::from(n) * 3600 * SECOND).saturating_sub(55 * SECOND));
    }
}

#[tokio::test]
async fn memory_usage_after_n_requests_is_exact() {
    usage_after_n_requests_is_exact(&Store::Memory(Memory::new(1000))).await;
}

#[tokio::test]
async fn redis_usage_after_n_requests_is_exact() {
    let server = RedisServer::start();
    usage_after_n_requests_is_exact(&redis_store(&server).await).await;
}

/// A reset lets a denied caller through again, in the scopes it names only.
async fn a_reset_lets_a_denied_caller_through(store: &Store) {
    let plan = [fixed("day", 2, Window::Day)];
    let rule = [bucket("bucket", 3600 * SECOND, 1, 0)];
    let scopes = [Scope::enforced(0, &plan), Scope::enforced(3, &rule)];
    let who = Key(0xdead);
    assert!(store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap().is_allowed());
    assert!(!store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap().is_allowed());
    assert_eq!(store.reset(who, &scopes[1..]).await.unwrap(), 1, "the bucket's counter");
    assert!(store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap().is_allowed());
    let denied = store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap();
    assert!(!denied.is_allowed());
    assert!(!denied.verdicts()[0].verdict.allowed, "the day's two are used: only the bucket was reset");
    assert_eq!(store.reset(who, &scopes).await.unwrap(), 2);
    let peek = store.peek(who, &scopes, T0, Counting::AllowedOnly).await.unwrap();
    assert_eq!(peek.now.iter().map(|j| j.verdict.remaining).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(store.reset(who, &scopes).await.unwrap(), 0, "nothing left to clear");
}

#[tokio::test]
async fn memory_reset_lets_a_denied_caller_through() {
    a_reset_lets_a_denied_caller_through(&Store::Memory(Memory::new(1000))).await;
}

#[tokio::test]
async fn redis_reset_lets_a_denied_caller_through() {
    let server = RedisServer::start();
    a_reset_lets_a_denied_caller_through(&redis_store(&server).await).await;
}

#[tokio::test]
async fn a_peek_sees_the_denial_the_local_tier_remembers_and_a_reset_forgets_it() {
    let server = RedisServer::start();
    let store = redis_store_at(&format!("url = \"{}\"\nlocal = true", server.url())).await;
    let limits = [fixed("day", 1, Window::Day)];
    let scopes = [Scope::enforced(0, &limits)];
    let who = Key(0x10ca1);
    assert!(store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap().is_allowed());
    assert!(!store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap().is_allowed());
    // Redis forgets the count behind the tier's back: checks are still answered from memory.
    server.cli(&["FLUSHALL"]);
    let peek = store.peek(who, &scopes, T0 + SECOND, Counting::AllowedOnly).await.unwrap();
    assert_eq!(peek.now[0].verdict.remaining, 1, "Redis holds nothing");
    assert!(!peek.next.is_allowed(), "the remembered denial answers the next check");
    assert_eq!(store.check(who, &scopes, T0 + SECOND, Counting::AllowedOnly).await.unwrap(), peek.next);
    store.reset(who, &scopes).await.unwrap();
    assert!(store.check(who, &scopes, T0 + SECOND, Counting::AllowedOnly).await.unwrap().is_allowed());
}

#[tokio::test]
async fn without_redis_a_peek_is_decided_by_on_error_and_a_reset_fails() {
    let mut server = RedisServer::start();
    let limits = [fixed("day", 5, Window::Day)];
    let scopes = [Scope::enforced(0, &limits)];
    let who = Key(0xd0e5);
    for on_error in [OnError::Local, OnError::Allow, OnError::Deny] {
        let mut config = support::redis::store_config(&format!("url = \"{}\"", server.url()));
        (config.on_error, config.breaker_threshold) = (on_error, 1);
        let store = connected(config).await;
        server.stop();
        let peek = store.peek(who, &scopes, T0, Counting::AllowedOnly).await;
        let checked = store.check(who, &scopes, T0, Counting::AllowedOnly).await;
        match on_error {
            OnError::Local => {
                assert_eq!(peek.as_ref().unwrap().now[0].verdict.remaining, 5);
                assert_eq!(peek.unwrap().next, checked.unwrap(), "the fallback decides both");
            }
            OnError::Allow => {
                assert_eq!(peek.unwrap(), Peek { now: Default::default(), next: Decision::Unchecked });
            }
            _ => assert!(matches!(peek, Err(StoreError::Unavailable { .. })), "{peek:?}"),
        }
        assert!(
            store.reset(who, &scopes).await.is_err(),
            "on_error = {on_error:?}: a reset that did not happen"
        );
        server.resume();
    }
}

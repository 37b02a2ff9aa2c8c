//! One scenario list, run against every store: the memory store and a real redis-server (and a
//! Redis Cluster). Windows are days, weeks and months, and buckets refill by the hour, because
//! Redis reads its own clock: nothing here may depend on crossing a boundary during the test.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Limit, Nanos, Window, SECOND};
use quotagate::store::{Counting, Decision, Memory, Redis, Scope, Store};
use support::{RedisCluster, RedisServer};

fn now() -> Nanos {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as Nanos
}

fn fixed(name: &str, n: u32, window: Window) -> Limit {
    Limit::new(name, Algorithm::Fixed { requests: NonZeroU32::new(n).unwrap(), window })
}

fn sliding(name: &str, n: u32, window: Window) -> Limit {
    Limit::new(name, Algorithm::Sliding { requests: NonZeroU32::new(n).unwrap(), window })
}

fn hourly_bucket(burst: u32) -> Limit {
    Limit::new("bucket", Algorithm::Gcra { emission: 3600 * SECOND, burst: NonZeroU32::new(burst).unwrap() })
}

/// A caller no earlier scenario (or run) used.
fn caller() -> Key {
    Key(u128::from(now()) << 32 | u128::from(rand_u32()))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now());
    h.finish() as u32
}

async fn check<'p>(store: &Store, who: Key, scopes: &[Scope<'p>], counting: Counting) -> Decision<'p> {
    store.check(who, scopes, now(), counting).await.expect("the store decides")
}

fn secs(n: Nanos) -> i64 {
    n.div_ceil(SECOND) as i64
}

async fn scenarios(store: Arc<Store>) {
    // Ten pass, then a denial until the day ends.
    let day = vec![fixed("day", 10, Window::Day)];
    let who = caller();
    let scopes = [Scope::enforced(0, &day)];
    for i in 0..10 {
        let d = check(&store, who, &scopes, Counting::AllowedOnly).await;
        assert!(d.is_allowed(), "request {i}");
        assert_eq!(d.verdicts()[0].verdict.remaining, 9 - i);
    }
    let d = check(&store, who, &scopes, Counting::AllowedOnly).await;
    assert!(!d.is_allowed());
    let until_midnight = Window::Day.bounds(now()).1 - now();
    assert!((secs(d.verdicts()[0].verdict.retry_after) - secs(until_midnight)).abs() <= 2);
    assert_eq!(d.verdicts()[0].verdict.window, 86_400 * SECOND);

    // Concurrent requests for one caller: exactly the quota passes.
    let who = caller();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let day = [fixed("day", 10, Window::Day)];
                let scopes = [Scope::enforced(0, &day)];
                let allowed = check(&store, who, &scopes, Counting::AllowedOnly).await.is_allowed();
                allowed
            })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 10, "concurrent requests");

    // Several scopes: all pass or none is counted; an uncounted verdict shows what is left.
    let plan = vec![fixed("day", 5, Window::Day)];
    let rule = vec![fixed("rule.day", 3, Window::Day)];
    let who = caller();
    let both = [Scope::enforced(0, &plan), Scope::enforced(7, &rule)];
    let mut passed = 0;
    for _ in 0..10 {
        passed += usize::from(check(&store, who, &both, Counting::AllowedOnly).await.is_allowed());
    }
    assert_eq!(passed, 3);
    let d = check(&store, who, &both, Counting::AllowedOnly).await;
    assert_eq!(d.verdicts()[0].verdict.remaining, 2, "the plan counted 3, and this one was not counted");
    let d = check(&store, who, &[Scope::enforced(0, &plan)], Counting::AllowedOnly).await;
    assert!(d.is_allowed());
    assert_eq!(d.verdicts()[0].verdict.remaining, 1);

    // A token bucket: the burst, then one per emission interval.
    let bucket = vec![hourly_bucket(5)];
    let who = caller();
    let scopes = [Scope::enforced(0, &bucket)];
    for _ in 0..5 {
        assert!(check(&store, who, &scopes, Counting::AllowedOnly).await.is_allowed());
    }
    let d = check(&store, who, &scopes, Counting::AllowedOnly).await;
    assert!(!d.is_allowed());
    assert!((secs(d.verdicts()[0].verdict.retry_after) - 3600).abs() <= 1, "{:?}", d.verdicts()[0]);
    assert_eq!(d.verdicts()[0].verdict.window, 5 * 3600 * SECOND);

    // Counting denied requests pushes the bucket further out, and the wait says so: with the
    // sixth request counted too, a bucket of 3 that refills hourly conforms again 6 - 2 = 4
    // hours away (1 hour if only the 3 admitted had counted).
    let who = caller();
    let bucket = vec![hourly_bucket(3)];
    let scopes = [Scope::enforced(0, &bucket)];
    for _ in 0..5 {
        check(&store, who, &scopes, Counting::Everything).await;
    }
    let d = check(&store, who, &scopes, Counting::Everything).await;
    assert!((secs(d.verdicts()[0].verdict.retry_after) - 4 * 3600).abs() <= 1, "{:?}", d.verdicts()[0]);

    // A sliding window admits the quota within one window.
    let who = caller();
    let slide = vec![sliding("day", 4, Window::Day)];
    let scopes = [Scope::enforced(0, &slide)];
    let mut passed = 0;
    for _ in 0..8 {
        passed += usize::from(check(&store, who, &scopes, Counting::AllowedOnly).await.is_allowed());
    }
    assert_eq!(passed, 4);

    // Calendar weeks and months.
    let who = caller();
    let cal = vec![fixed("week", 1, Window::Week), fixed("month", 2, Window::Month)];
    let scopes = [Scope::enforced(0, &cal)];
    assert!(check(&store, who, &scopes, Counting::AllowedOnly).await.is_allowed());
    let d = check(&store, who, &scopes, Counting::AllowedOnly).await;
    assert!(!d.is_allowed());
    let t = now();
    let (week, month) = (Window::Week.bounds(t), Window::Month.bounds(t));
    assert!(
        (secs(d.verdicts()[0].verdict.retry_after) - secs(week.1 - t)).abs() <= 2,
        "{:?}",
        d.verdicts()[0]
    );
    assert!(d.verdicts()[1].verdict.allowed);
    assert_eq!(d.verdicts()[1].verdict.remaining, 1, "uncounted");
    assert_eq!(d.verdicts()[1].verdict.window, month.1 - month.0);
}

async fn connected(config: quotagate::config::RedisConfig) -> Arc<Store> {
    let redis = Arc::new(Redis::new(config, 1000));
    tokio::time::timeout(Duration::from_secs(10), redis.clone().connect()).await.expect("connects");
    Arc::new(Store::Redis(redis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_store_passes_every_scenario() {
    scenarios(Arc::new(Store::Memory(Memory::new(10_000)))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redis_store_passes_every_scenario() {
    let server = RedisServer::start();
    scenarios(connected(support::redis::store_config(&format!("url = \"{}\"", server.url()))).await).await;
    // Keys hold the caller's hash, never a token, and every key expires.
    let keys = server.cli(&["--scan", "--pattern", "quotagate:*"]);
    assert!(!keys.is_empty());
    for key in keys.lines().take(20) {
        assert!(key.starts_with("quotagate:{"), "{key}");
        let ttl: i64 = server.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_passes_every_scenario() {
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    scenarios(connected(support::redis::store_config(&format!("cluster = [{}]", urls.join(", ")))).await)
        .await;
}

//! One scenario list, run against every store: the memory store and a real redis-server (and a
//! Redis Cluster). Windows are days, weeks and months, and buckets refill by the hour, because
//! Redis reads its own clock: nothing here may depend on crossing a boundary during the test.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quotagate::config::OnError;
use quotagate::identity::Key;
use quotagate::limiter::{Algorithm, Counts, Limit, Nanos, Window, SECOND};
use quotagate::store::{
    Closed, Counting, Decision, Health, Memory, Mode, Redis, Scope, Store, StoreError, TicketId,
};
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
    Limit::new(
        "bucket",
        Algorithm::Gcra { emission: 3600 * SECOND, burst: NonZeroU32::new(burst).unwrap(), max_delay: 0 },
    )
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

/// A check holding its slots under `ticket`.
async fn hold<'p>(store: &Store, who: Key, scopes: &[Scope<'p>], ticket: TicketId) -> Decision<'p> {
    store.check_ticket(who, scopes, now(), Counting::AllowedOnly, ticket).await.expect("the store decides")
}

fn concurrent(max: u32) -> Limit {
    // Held for an hour: no slot frees itself during a test.
    Limit::new(
        "concurrent",
        Algorithm::Concurrent { max: NonZeroU32::new(max).unwrap(), hold: 3600 * SECOND },
    )
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

    // Costs: 5 against a quota of 20 passes exactly 4 times; a limit counting requests takes
    // 1 of each, and the denied fifth takes nothing from either.
    let costly = vec![
        fixed("day", 20, Window::Day),
        fixed("week.requests", 10, Window::Week).counting(Counts::Requests),
    ];
    let who = caller();
    let scopes = [Scope::enforced(0, &costly).costing(5)];
    for i in 0..4 {
        let d = check(&store, who, &scopes, Counting::AllowedOnly).await;
        assert!(d.is_allowed(), "request {i}");
        let remaining: Vec<u32> = d.verdicts().iter().map(|j| j.verdict.remaining).collect();
        assert_eq!(remaining, [15 - 5 * i, 9 - i]);
    }
    let d = check(&store, who, &scopes, Counting::AllowedOnly).await;
    assert!(!d.is_allowed());
    assert_eq!((d.verdicts()[0].verdict.remaining, d.verdicts()[1].verdict.remaining), (0, 6));
    assert!((secs(d.verdicts()[0].verdict.retry_after) - secs(until_midnight)).abs() <= 2);
    // A request of cost 1 finds nothing left either.
    let d = check(&store, who, &[Scope::enforced(0, &costly)], Counting::AllowedOnly).await;
    assert!(!d.is_allowed());

    // Concurrency: two in flight at once, the third told to wait for the oldest slot's hold;
    // a denied request counts nowhere and takes no slot.
    let plan = vec![concurrent(2), fixed("day", 100, Window::Day)];
    let who = caller();
    let scopes = [Scope::enforced(0, &plan)];
    assert_eq!(hold(&store, who, &scopes, 1).await.verdicts()[0].verdict.remaining, 1);
    let d = hold(&store, who, &scopes, 2).await;
    assert!(d.is_allowed());
    assert_eq!(d.verdicts()[0].verdict.remaining, 0);
    for ticket in 3..6 {
        let d = hold(&store, who, &scopes, ticket).await;
        assert!(!d.is_allowed());
        let v = d.verdicts()[0].verdict;
        assert_eq!((v.quota, v.remaining, v.window), (2, 0, 3600 * SECOND));
        assert!((secs(v.retry_after) - 3600).abs() <= 2, "{v:?}");
        assert_eq!(v.retry_after, v.reset);
        assert_eq!(d.verdicts()[1].verdict.remaining, 98, "the day counted the two admitted only");
    }
    // Another scope of the same caller has slots of its own.
    let rule = vec![concurrent(1)];
    let d = hold(&store, who, &[Scope::enforced(0, &plan), Scope::enforced(5, &rule)], 6).await;
    assert!(!d.is_allowed(), "the plan's slots are full");
    assert!(hold(&store, who, &[Scope::enforced(5, &rule)], 7).await.is_allowed(), "no slot taken by 6");

    // Closing frees the slot at once, once; a close of a ticket not issued frees nothing.
    let expires = now() + 3600 * SECOND;
    let closed = store.close(who, 1, expires, &[Scope::enforced(0, &plan)], 0, now()).await.unwrap();
    assert_eq!(closed, Closed::Closed { released: 1, charged: vec![] });
    let again = store.close(who, 1, expires, &[Scope::enforced(0, &plan)], 0, now()).await.unwrap();
    assert_eq!(again, Closed::Unknown, "a second close");
    let never = store.close(who, 99, expires, &[Scope::enforced(0, &plan)], 0, now()).await.unwrap();
    assert_eq!(never, Closed::Closed { released: 0, charged: vec![] }, "nothing held under it");
    assert!(hold(&store, who, &[Scope::enforced(0, &plan)], 8).await.is_allowed(), "the freed slot");
    assert!(!hold(&store, who, &[Scope::enforced(0, &plan)], 9).await.is_allowed());
    let late = store.close(who, 2, now() - 1, &[Scope::enforced(0, &plan)], 0, now()).await.unwrap();
    assert_eq!(late, Closed::Unknown, "an expired ticket");
    assert!(!hold(&store, who, &[Scope::enforced(0, &plan)], 10).await.is_allowed(), "it freed nothing");

    // A reported cost is charged to the limits counting cost, past the quota, and the next
    // request is denied; a limit counting requests and the concurrency limit are not charged.
    let plan = vec![
        concurrent(5),
        fixed("day", 20, Window::Day),
        fixed("week.requests", 10, Window::Week).counting(Counts::Requests),
    ];
    let who = caller();
    let scopes = [Scope::enforced(0, &plan).costing(5)];
    for ticket in 0..2 {
        assert!(hold(&store, who, &scopes, ticket).await.is_allowed());
    }
    let closed = store.close(who, 0, now() + 3600 * SECOND, &scopes, 12, now()).await.unwrap();
    let Closed::Closed { released: 1, charged } = closed else { panic!("{closed:?}") };
    let [charge] = &charged[..] else { panic!("{charged:?}") };
    assert_eq!((&*charge.limit.name, charge.verdict.allowed, charge.verdict.remaining), ("day", false, 0));
    let d = hold(&store, who, &scopes, 2).await;
    assert!(!d.is_allowed(), "22 of 20 used");
    let remaining: Vec<u32> = d.verdicts().iter().map(|j| j.verdict.remaining).collect();
    assert_eq!(remaining, [4, 0, 8]);

    // All or nothing: a full day limit keeps a request from taking a slot.
    let plan = vec![concurrent(3)];
    let rule = vec![fixed("rule.day", 1, Window::Day)];
    let who = caller();
    let both = [Scope::enforced(0, &plan), Scope::enforced(5, &rule)];
    assert!(hold(&store, who, &both, 1).await.is_allowed());
    let d = hold(&store, who, &both, 2).await;
    assert!(!d.is_allowed());
    assert_eq!(d.verdicts()[0].verdict.remaining, 2, "the denied request took no slot");

    // Concurrent requests for one caller: exactly `concurrent` get a slot.
    let who = caller();
    let tasks: Vec<_> = (0..100u128)
        .map(|ticket| {
            let store = store.clone();
            tokio::spawn(async move {
                let plan = [concurrent(3)];
                let allowed = hold(&store, who, &[Scope::enforced(0, &plan)], ticket).await.is_allowed();
                allowed
            })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 3, "concurrent requests holding slots");

    // A dry-run scope holds slots of its own and never decides.
    let plan = vec![fixed("day", 10, Window::Day)];
    let rule = vec![concurrent(1)];
    let who = caller();
    let scopes =
        [Scope::enforced(0, &plan), Scope { id: 5, mode: Mode::DryRun, rule: None, limits: &rule, cost: 1 }];
    assert!(hold(&store, who, &scopes, 1).await.is_allowed());
    let d = hold(&store, who, &scopes, 2).await;
    assert!(d.is_allowed());
    assert!(!d.verdicts()[1].verdict.allowed, "would have been denied");

    // Dry-run scopes are checked and counted each on its own: they never decide the answer nor
    // keep the enforced scope from counting, and they count what the enforced scope denies.
    let plan = vec![fixed("day", 5, Window::Day)];
    let strict = vec![fixed("strict.day", 1, Window::Day)];
    let loose = vec![fixed("loose.day", 20, Window::Day)];
    let dry_run = |id, limits| Scope { id, mode: Mode::DryRun, rule: None, limits, cost: 1 };
    let scopes = [Scope::enforced(0, &plan), dry_run(7, &strict), dry_run(9, &loose)];
    let who = caller();
    for k in 1..=12u32 {
        let d = check(&store, who, &scopes, Counting::AllowedOnly).await;
        assert_eq!(d.is_allowed(), k <= 5, "request {k}: the plan alone decides");
        let verdict = |name: &str| d.verdicts().iter().find(|j| &*j.limit.name == name).expect(name).verdict;
        if k <= 5 {
            assert_eq!(verdict("day").remaining, 5 - k, "request {k}: the plan counted it");
        }
        assert_eq!(verdict("strict.day").allowed, k == 1, "request {k}");
        assert_eq!(verdict("loose.day").remaining, 20 - k, "request {k}: counted on its own");
    }
    let d = check(&store, who, &[Scope::enforced(9, &loose)], Counting::AllowedOnly).await;
    assert_eq!(d.verdicts()[0].verdict.remaining, 20 - 13, "the dry-run scope counted all twelve");
}

async fn connected(config: quotagate::config::RedisConfig) -> Arc<Store> {
    Arc::new(Store::Redis(connected_redis(config).await))
}

async fn connected_redis(config: quotagate::config::RedisConfig) -> Arc<Redis> {
    let redis = Arc::new(Redis::new(config, 1000));
    tokio::time::timeout(Duration::from_secs(10), redis.clone().connect()).await.expect("connects");
    redis
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

#[tokio::test]
async fn with_redis_down_on_error_local_holds_and_closes_slots_in_memory() {
    let mut server = RedisServer::start();
    let mut config = support::redis::store_config(&format!("url = \"{}\"", server.url()));
    (config.on_error, config.breaker_threshold) = (OnError::Local, 1);
    let redis = connected_redis(config).await;
    let store = Store::Redis(redis.clone());
    server.stop();
    let plan = vec![concurrent(1), fixed("day", 10, Window::Day)];
    let scopes = [Scope::enforced(0, &plan)];
    let who = caller();
    assert!(hold(&store, who, &scopes, 1).await.is_allowed());
    assert_eq!(redis.health(), Health::Down, "Redis was tried and failed");
    assert!(!hold(&store, who, &scopes, 2).await.is_allowed(), "the memory fallback holds the slot");
    let closed = store.close(who, 1, now() + 3600 * SECOND, &scopes, 3, now()).await.unwrap();
    let Closed::Closed { released: 1, charged } = closed else { panic!("{closed:?}") };
    assert_eq!(charged[0].verdict.remaining, 6, "1 admitted, 3 reported");
    assert!(hold(&store, who, &scopes, 3).await.is_allowed());
}

#[tokio::test]
async fn with_redis_down_other_on_errors_cannot_close() {
    let mut server = RedisServer::start();
    for on_error in [OnError::Allow, OnError::Deny] {
        let mut config = support::redis::store_config(&format!("url = \"{}\"", server.url()));
        (config.on_error, config.breaker_threshold) = (on_error, 1);
        let store = Store::Redis(connected_redis(config).await);
        server.stop();
        let plan = vec![concurrent(1)];
        let closed = store.close(caller(), 1, now() + SECOND, &[Scope::enforced(0, &plan)], 0, now()).await;
        assert!(matches!(closed, Err(StoreError::Unavailable { .. })), "{on_error:?}: {closed:?}");
        server.resume();
    }
}

#[tokio::test]
async fn a_reply_the_script_never_gives_is_a_failure_decided_by_on_error() {
    let server = RedisServer::start();
    let limits = vec![fixed("day", 3, Window::Day)];
    for on_error in [OnError::Local, OnError::Allow, OnError::Deny] {
        let mut config = support::redis::store_config(&format!("url = \"{}\"", server.url()));
        (config.on_error, config.breaker_threshold) = (on_error, 1);
        let redis = connected_redis(config).await;
        let store = Store::Redis(redis.clone());
        let who = caller();
        // A counter the script did not write (a foreign key under the prefix, or a corrupted
        // one): the script then answers a remaining count no limit can have.
        let key = format!("quotagate:{{{:032x}}}:{:08x}:{:08x}", who.0, 0, limits[0].id);
        server.cli(&["HSET", &key, "a", "1e18", "c", "-1e30", "p", "0"]);
        let got = store.check(who, &[Scope::enforced(0, &limits)], now(), Counting::AllowedOnly).await;
        match on_error {
            OnError::Local => match got {
                Ok(Decision::Allowed(v)) => {
                    assert_eq!(v[0].verdict.remaining, 2, "the memory fallback decided")
                }
                other => panic!("on_error = local: {other:?}"),
            },
            OnError::Allow => assert!(matches!(got, Ok(Decision::Unchecked)), "on_error = allow: {got:?}"),
            OnError::Deny => {
                assert!(matches!(got, Err(StoreError::Unavailable { .. })), "on_error = deny: {got:?}")
            }
        }
        assert_eq!(redis.errors(), 1, "on_error = {on_error:?}: counted as a failed command");
        assert_eq!(
            redis.health(),
            Health::Down,
            "on_error = {on_error:?}: the breaker counted it (threshold 1)"
        );
    }
}

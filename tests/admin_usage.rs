//! Reading and clearing counters without counting: `Store::peek` and `Store::reset` on the
//! memory store and a real redis-server (its script given the test's clock, so a sequence can
//! cross minutes and months in a moment), and `POST /v1/usage` and `POST /v1/reset` through the
//! real routers with a manual clock.

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

/// At most `max` requests in flight, each holding its slot `hold_secs` seconds.
fn concurrent(max: u32, hold_secs: Nanos) -> Limit {
    Limit::new(
        "concurrent",
        Algorithm::Concurrent { max: NonZeroU32::new(max).unwrap(), hold: hold_secs * SECOND },
    )
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
    let rule =
        [bucket("bucket", 20 * SECOND, 3, 5 * SECOND), sliding("week", 9, Window::Week), concurrent(2, 40)];
    let dry = [fixed("dry", 2, Window::Day), concurrent(1, 90)];
    // The rule costs 2 in its own scope's limits that count cost.
    let scopes = [
        Scope::enforced(0, &plan),
        Scope::enforced(5, &rule).costing(2),
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
    assert_eq!(store.reset(who, &scopes[1..], T0).await.unwrap(), 1, "the bucket's counter");
    assert!(store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap().is_allowed());
    let denied = store.check(who, &scopes, T0, Counting::AllowedOnly).await.unwrap();
    assert!(!denied.is_allowed());
    assert!(!denied.verdicts()[0].verdict.allowed, "the day's two are used: only the bucket was reset");
    assert_eq!(store.reset(who, &scopes, T0).await.unwrap(), 2);
    let peek = store.peek(who, &scopes, T0, Counting::AllowedOnly).await.unwrap();
    assert_eq!(peek.now.iter().map(|j| j.verdict.remaining).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(store.reset(who, &scopes, T0).await.unwrap(), 0, "nothing left to clear");
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
    store.reset(who, &scopes, T0).await.unwrap();
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
            store.reset(who, &scopes, T0).await.is_err(),
            "on_error = {on_error:?}: a reset that did not happen"
        );
        server.resume();
    }
}

/// The admin token of the harness (a test secret).
const ADMIN_TOKEN: &str = "usage-admin-token-0123456789";

/// Every algorithm and a calendar month in the plan; a rule for summaries, a dry-run rule
/// over the whole API, and an exempt one; tokens on other plans.
const CONFIG: &str = r#"
[server]
admin_listen = "127.0.0.1:9"

[admin]
token_file = "TOKEN_FILE"

[defaults]
plan = "every"
count_denied = false

[plans.every]
limits = [
  { requests = 10, per = "minute" },
  { name = "hourly", requests = 40, per = "hour", algorithm = "sliding" },
  { average = 1, period = "1h", burst = 30 },
  { name = "monthly", requests = 1000, per = "month" },
]

[plans.pro]
limits = [{ requests = 600, per = "minute" }]

[plans.vip]
unlimited = true

[tokens]
"vip-token-1" = "vip"

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
limits.every = [{ requests = 5, per = "day" }]

[[rules]]
name = "shadow"
path_prefix = "/api"
dry_run = true
limits.pro = [{ requests = 3, per = "day" }]

[[rules]]
name = "docs"
path_prefix = "/docs"
exempt = true
"#;

struct Harness {
    state: quotagate::server::AppState,
    clock: quotagate::clock::Clock,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: u16,
    body: serde_json::Value,
}

impl Harness {
    fn new(config: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
        let text = config.replace("TOKEN_FILE", &token_file.display().to_string());
        let config =
            quotagate::config::Config::parse(&text, "test.toml", None).unwrap_or_else(|e| panic!("{e}"));
        let clock = quotagate::clock::Clock::manual(T0);
        Harness { state: quotagate::server::AppState::new(config, clock.clone()), clock, _dir: dir }
    }

    async fn send(router: axum::Router, req: axum::http::Request<axum::body::Body>) -> (u16, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let res = router.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// An admin call with the admin token and a JSON body.
    async fn admin(&self, method: &str, path: &str, body: serde_json::Value) -> Answer {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let (status, text) = Harness::send(quotagate::server::admin_router(self.state.clone()), req).await;
        assert!(!text.contains("tok-"), "an API token in an answer: {text}");
        Answer { status, body: serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")) }
    }

    async fn usage(&self, token: &str) -> serde_json::Value {
        let a = self.admin("POST", "/v1/usage", serde_json::json!({ "token": token })).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    /// The status of a forwardAuth check of `method path` for `token`.
    async fn check(&self, token: &str, method: &str, path: &str) -> u16 {
        let req = axum::http::Request::get("/")
            .header("x-forwarded-method", method)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", path)
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap();
        Harness::send(quotagate::server::router(self.state.clone(), false), req).await.0
    }
}

/// The usage entry of limit `name`.
fn entry<'a>(usage: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let limits = usage["limits"].as_array().expect("limits");
    limits.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("no {name} in {usage}"))
}

#[tokio::test]
async fn usage_after_n_requests_is_exact_for_every_algorithm_and_the_calendar() {
    let h = Harness::new(CONFIG);
    for (n, summaries) in [(0u32, 0u32), (1, 0), (3, 2), (6, 4)] {
        let token = format!("tok-{n}");
        for _ in 0..n - summaries.min(n) {
            assert_eq!(h.check(&token, "GET", "/api/items").await, 200);
        }
        for _ in 0..summaries {
            assert_eq!(h.check(&token, "POST", "/api/summarize").await, 200);
        }
        h.clock.set(T0 + 10 * SECOND);
        let usage = h.usage(&token).await;
        h.clock.set(T0);
        assert_eq!(usage["plan"], "every");
        assert_eq!(usage["plan_source"], "unknown_tokens");
        assert_eq!(usage["unlimited"], false);
        assert_eq!(usage["override"], serde_json::Value::Null);
        assert_eq!(usage["fingerprint"].as_str().unwrap().len(), 8);
        assert_eq!(usage["limits"].as_array().unwrap().len(), 5, "the plan's four, the summaries' rule");
        // 2026-11-30 23:59:10: the minute, the hour, the day and November end in 50 s.
        let expect = |name: &str, algorithm: &str, quota: u32, used: u32, window: f64, reset: f64| {
            let e = entry(&usage, name);
            let got = (
                &e["algorithm"],
                &e["quota"],
                &e["used"],
                &e["remaining"],
                &e["window_seconds"],
                &e["reset_seconds"],
            );
            let want = (
                &serde_json::json!(algorithm),
                &serde_json::json!(quota),
                &serde_json::json!(used),
                &serde_json::json!(quota - used),
                &serde_json::json!(window),
                &serde_json::json!(reset),
            );
            assert_eq!(got, want, "{name} after {n} requests: {e}");
        };
        expect("minute", "fixed", 10, n, 60.0, 50.0);
        expect("hourly", "sliding", 40, n, 3600.0, 50.0);
        // One token back an hour after each request's: the last came at T0, 10 s ago.
        expect(
            "bucket",
            "bucket",
            30,
            n,
            30.0 * 3600.0,
            f64::from(n) * 3600.0 - if n > 0 { 10.0 } else { 0.0 },
        );
        expect("monthly", "fixed", 1000, n, 30.0 * 86_400.0, 50.0);
        expect("summarize.day", "fixed", 5, summaries, 86_400.0, 50.0);
        let rule = entry(&usage, "summarize.day");
        assert_eq!(
            (&rule["scope"], &rule["kind"], &rule["mode"]),
            (&"summarize".into(), &"rule".into(), &"enforce".into())
        );
        assert_eq!(
            (&entry(&usage, "minute")["scope"], &entry(&usage, "minute")["kind"]),
            (&"every".into(), &"plan".into())
        );
        // Asking counts nothing.
        h.clock.set(T0 + 10 * SECOND);
        assert_eq!(h.usage(&token).await, usage);
        h.clock.set(T0);
    }
    // Two minutes later it is December: the month starts afresh (and is 31 days long), the
    // sliding hour still weighs the last one's six: ceil(6 * 59/60) = 6.
    h.clock.set(T0 + 120 * SECOND);
    let usage = h.usage("tok-6").await;
    let state = |name: &str| {
        let e = entry(&usage, name);
        (
            e["used"].as_u64().unwrap(),
            e["window_seconds"].as_f64().unwrap(),
            e["reset_seconds"].as_f64().unwrap(),
        )
    };
    assert_eq!(state("monthly"), (0, 31.0 * 86_400.0, 31.0 * 86_400.0 - 60.0));
    assert_eq!(state("hourly"), (6, 3600.0, 3540.0));
    assert_eq!(state("minute"), (0, 60.0, 60.0));
    assert_eq!(state("bucket"), (6, 30.0 * 3600.0, 6.0 * 3600.0 - 120.0));
    assert_eq!(state("summarize.day"), (0, 86_400.0, 86_340.0));
}

#[tokio::test]
async fn usage_names_the_plan_and_where_it_came_from() {
    let h = Harness::new(CONFIG);
    let vip = h.usage("vip-token-1").await;
    assert_eq!(
        (&vip["plan"], &vip["plan_source"], &vip["unlimited"]),
        (&"vip".into(), &"tokens".into(), &true.into())
    );
    assert_eq!(vip["limits"], serde_json::json!([]));

    let set =
        h.admin("PUT", "/v1/overrides", serde_json::json!({ "token": "tok-moved", "plan": "pro" })).await;
    assert_eq!(set.status, 200, "{}", set.body);
    let moved = h.usage("tok-moved").await;
    assert_eq!((&moved["plan"], &moved["plan_source"]), (&"pro".into(), &"override".into()));
    assert_eq!(moved["override"]["plan"], "pro");
    // The dry-run rule limits pro only: its limit is there, reported as dry run.
    assert_eq!(entry(&moved, "shadow.day")["mode"], "dry_run");
    assert_eq!(entry(&moved, "shadow.day")["scope"], "shadow");
    assert_eq!(entry(&moved, "minute")["quota"], 600);

    // Limits of an override replace the plan's own; the rules stay.
    let body = serde_json::json!({ "token": "tok-custom", "limits": [{ "name": "custom", "requests": 7, "per": "week" }] });
    assert_eq!(h.admin("PUT", "/v1/overrides", body).await.status, 200);
    let custom = h.usage("tok-custom").await;
    assert_eq!((&custom["plan"], &custom["plan_source"]), (&"every".into(), &"unknown_tokens".into()));
    let names: Vec<&str> =
        custom["limits"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["custom", "summarize.day"]);
    assert_eq!(entry(&custom, "custom")["window_seconds"], 7.0 * 86_400.0);
}

#[tokio::test]
async fn a_reset_lets_a_denied_customer_through_again() {
    let h = Harness::new(CONFIG);
    let token = "tok-denied";
    for _ in 0..5 {
        assert_eq!(h.check(token, "POST", "/api/summarize").await, 200);
    }
    assert_eq!(h.check(token, "POST", "/api/summarize").await, 429, "the summaries' 5 a day");
    for _ in 0..5 {
        assert_eq!(h.check(token, "GET", "/api/items").await, 200);
    }
    assert_eq!(h.check(token, "GET", "/api/items").await, 429, "the plan's 10 a minute");

    // The rule's scope only: summaries pass again, the plan still denies.
    let a = h.admin("POST", "/v1/reset", serde_json::json!({ "token": token, "scope": "summarize" })).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["cleared"],
        serde_json::json!([{ "scope": "summarize", "kind": "rule", "limits": ["summarize.day"] }])
    );
    assert_eq!(a.body["counters"], 1);
    assert_eq!(entry(&h.usage(token).await, "summarize.day")["used"], 0);
    assert_eq!(h.check(token, "GET", "/api/items").await, 429);

    let a = h.admin("POST", "/v1/reset", serde_json::json!({ "token": token })).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let scopes: Vec<&str> =
        a.body["cleared"].as_array().unwrap().iter().map(|c| c["scope"].as_str().unwrap()).collect();
    assert_eq!(scopes, ["every", "summarize"]);
    assert_eq!(a.body["counters"], 4, "the plan's four counters; the rule's was cleared already");
    assert_eq!(h.check(token, "GET", "/api/items").await, 200);
    assert_eq!(h.check(token, "POST", "/api/summarize").await, 200);
}

#[tokio::test]
async fn bad_usage_and_reset_calls_are_400s_naming_the_field() {
    let h = Harness::new(CONFIG);
    let cases = [
        ("/v1/usage", serde_json::json!({}), "(body)"),
        ("/v1/usage", serde_json::json!({ "token": 7 }), "token"),
        ("/v1/usage", serde_json::json!({ "token": "has space" }), "token"),
        ("/v1/usage", serde_json::json!({ "token": "t", "extra": 1 }), "extra"),
        ("/v1/reset", serde_json::json!({ "token": "t", "scope": "nope" }), "scope"),
        ("/v1/reset", serde_json::json!({ "token": "t", "scope": "docs" }), "scope"),
        ("/v1/reset", serde_json::json!({ "token": "vip-token-1", "scope": "vip" }), "scope"),
    ];
    for (path, body, field) in cases {
        let a = h.admin("POST", path, body.clone()).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.body);
        assert_eq!(a.body["field"], field, "{path} {body}: {}", a.body);
    }
}

#[tokio::test]
async fn usage_of_a_token_the_config_rejects_is_a_404() {
    let h = Harness::new(&CONFIG.replace("count_denied = false", "unknown_tokens = \"reject\""));
    let a = h.admin("POST", "/v1/usage", serde_json::json!({ "token": "tok-unknown" })).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(h.admin("POST", "/v1/reset", serde_json::json!({ "token": "tok-unknown" })).await.status, 404);
    assert_eq!(h.usage("vip-token-1").await["plan"], "vip");
}

/// A config whose requests meet every way a check can end: an allow-list, IP callers, a
/// plan header, tokens on an unlimited plan, a bucket, a rule, a dry-run rule, an exempt one,
/// and tickets on every admitted request.
const EXPLAINED: &str = r#"
[server]
admin_listen = "127.0.0.1:9"
tickets_listen = "127.0.0.1:10"

[admin]
token_file = "TOKEN_FILE"

[identity]
sources = ["bearer", "header:x-api-key"]
missing = "ip"
allow_ips = ["198.51.100.0/24"]
plan_header = "X-Plan"

[defaults]
plan = "free"
anonymous_plan = "anonymous"

[answers]
tickets = "always"

[plans.free]
limits = [{ requests = 3, per = "minute" }]

[plans.anonymous]
limits = [{ requests = 1, per = "hour" }]

[plans.pro]
limits = [{ average = 1, period = "10s", burst = 2, max_delay = "0s" }]

[plans.vip]
unlimited = true

[plans.one]
limits = [{ requests = 10, per = "minute" }, { concurrent = 1, hold = "1m" }]

[tokens]
"tok-vip" = "vip"
"tok-pro" = "pro"
"tok-one" = "one"

[[rules]]
name = "search"
path_prefix = "/api/search"
limits.free = [{ requests = 1, per = "minute" }]

[[rules]]
name = "shadow"
path_prefix = "/api/shadow"
dry_run = true
limits."*" = [{ requests = 1, per = "minute" }]

[[rules]]
name = "docs"
path_prefix = "/docs"
exempt = true
"#;

/// One request of the table: method, uri, headers.
type Row = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

impl Harness {
    /// The check of `row` as Traefik sends it: its status, its headers (lowercase names, values
    /// of a repeated name joined by ", ") and its body.
    async fn checked(&self, (method, uri, headers): Row) -> (u16, serde_json::Value, Option<String>) {
        let mut req = axum::http::Request::get("/")
            .header("x-forwarded-method", method)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(axum::body::Body::empty()).unwrap();
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let res = quotagate::server::router(self.state.clone(), false).oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let mut fields = serde_json::Map::new();
        // Content-Length is framing, which the server adds to every answer on its way out.
        for name in res.headers().keys().filter(|n| *n != "content-length") {
            let values: Vec<&str> = res.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
            fields.insert(name.to_string(), values.join(", ").into());
        }
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = (!body.is_empty()).then(|| String::from_utf8(body.to_vec()).unwrap());
        (status, fields.into(), body)
    }

    async fn explain(&self, (method, uri, headers): Row) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> =
            headers.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        // The in-process check's peer is 0.0.0.0 (no socket): the explanation's too.
        let body = serde_json::json!({
            "method": method, "host": "api.example.com", "uri": uri, "headers": headers, "peer": "0.0.0.0",
        });
        let a = self.admin("POST", "/v1/explain", body).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }
}

#[tokio::test]
async fn explain_predicts_the_answer_of_the_check_that_follows() {
    let h = Harness::new(EXPLAINED);
    let free: &[(&str, &str)] = &[("authorization", "Bearer tok-free"), ("x-forwarded-for", "203.0.113.9")];
    let rows: &[Row] = &[
        ("GET", "/api/shadow", free),
        ("GET", "/api/shadow", free),
        ("GET", "/api/search?q=1", free),
        ("GET", "/api/search?q=2", free),
        ("GET", "/api/items", free),
        ("GET", "/docs/intro", free),
        ("GET", "/api/items", &[("x-api-key", "tok-vip")]),
        ("GET", "/api/items", &[("x-api-key", "tok-pro")]),
        ("GET", "/api/items", &[("x-api-key", "tok-pro")]),
        ("GET", "/api/items", &[("x-api-key", "tok-pro")]),
        ("GET", "/api/items", &[("authorization", "Bearer tok-free"), ("x-plan", "vip")]),
        ("GET", "/api/items", &[("x-forwarded-for", "203.0.113.50")]),
        ("GET", "/api/items", &[("x-forwarded-for", "203.0.113.50")]),
        ("GET", "/api/items", &[("x-forwarded-for", "198.51.100.4")]),
        ("GET", "/api/items", &[("x-api-key", "tok-one")]),
        ("GET", "/api/items", &[("x-api-key", "tok-one")]),
        ("GET", "/api/items", &[("authorization", "Bearer t\u{f6}k")]),
        ("GET", "/api/items", &[("authorization", "Bearer one"), ("x-api-key", "two")]),
        ("GET", "/api/%2e%2e/items", free),
    ];
    let mut outcomes = std::collections::BTreeSet::new();
    for (i, row) in rows.iter().enumerate() {
        let explained = h.explain(*row).await;
        // Explaining counts nothing: a second explanation says the same.
        assert_eq!(h.explain(*row).await, explained, "row {i}");
        let (status, mut headers, body) = h.checked(*row).await;
        let said = |field: &str| explained[field].clone();
        // A check mints its ticket; the explanation says one would be.
        if let Some(ticket) = headers.get_mut("x-quotagate-ticket") {
            assert!(ticket.as_str().unwrap().starts_with("qt1."), "{ticket}");
            *ticket = explained["headers"]["x-quotagate-ticket"].clone();
            assert!(ticket.as_str().unwrap().contains("minted"), "row {i}: {explained}");
        }
        assert_eq!(
            (said("status"), said("headers"), said("body")),
            (status.into(), headers, body.into()),
            "row {i} {row:?}: {explained}"
        );
        outcomes.insert(explained["outcome"].as_str().unwrap().to_owned());
    }
    let expected = ["allow_listed", "allowed", "denied", "dry_run_denied", "exempt", "rejected", "unlimited"];
    assert_eq!(
        outcomes.iter().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "the table meets every outcome"
    );
}

#[tokio::test]
async fn explain_says_who_what_plan_which_rules_and_each_limit() {
    let h = Harness::new(EXPLAINED);
    let row: Row = (
        "POST",
        "/api/search?q=1",
        &[("authorization", "Bearer tok-free"), ("x-forwarded-for", "203.0.113.9")],
    );
    assert_eq!(h.checked(row).await.0, 200);
    let e = h.explain(row).await;
    assert_eq!(e["outcome"], "denied", "{e}");
    assert_eq!(e["status"], 429);
    assert_eq!(e["identity"]["caller"].as_str().unwrap().len(), "tok:".len() + 8);
    assert_eq!(e["identity"]["key"].as_str().unwrap().len(), 32);
    assert_eq!((&e["plan"], &e["plan_source"]), (&"free".into(), &"unknown_tokens".into()));
    let rules = e["rules"].as_array().unwrap();
    let search = rules.iter().find(|r| r["name"] == "search").unwrap();
    assert_eq!(search["matched"], true);
    assert_eq!(search["path"], serde_json::json!({ "pattern": "/api/search (prefix)", "matched": true }));
    let docs = rules.iter().find(|r| r["name"] == "docs").unwrap();
    assert_eq!(
        (&docs["matched"], &docs["exempt"], &docs["path"]["matched"]),
        (&false.into(), &true.into(), &false.into())
    );
    // Before this request: the plan's minute has 2 of 3 left, the search rule's none.
    let limits = e["limits"].as_array().unwrap();
    let left: Vec<(&str, u64, bool)> = limits
        .iter()
        .map(|l| {
            (l["name"].as_str().unwrap(), l["remaining"].as_u64().unwrap(), l["allowed"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(left, [("minute", 2, true), ("search.minute", 0, false)]);
    assert!(e["body"].as_str().unwrap().contains("search.minute"), "the 429's problem names the limit");

    // No identity: a token no source accepts, and why.
    let bad = h.explain(("GET", "/", &[("authorization", "Bearer a"), ("x-api-key", "b")])).await;
    assert_eq!((&bad["outcome"], &bad["status"]), (&"rejected".into(), &400.into()), "{bad}");
    assert!(bad["identity"]["error"].as_str().unwrap().contains("more than one credential"), "{bad}");
    assert_eq!(bad["plan"], serde_json::Value::Null);
}

#[tokio::test]
async fn bad_explain_bodies_are_400s_naming_the_field() {
    let h = Harness::new(EXPLAINED);
    let cases = [
        (serde_json::json!({ "host": "h", "uri": "/" }), "(body)"),
        (serde_json::json!({ "method": "GET", "host": "h", "uri": "/\r\nX: y" }), "uri"),
        (
            serde_json::json!({ "method": "GET", "host": "h", "uri": "/", "headers": { "x-forwarded-host": "other" } }),
            "headers.x-forwarded-host",
        ),
        (serde_json::json!({ "method": "GET", "host": "h", "uri": "/", "headers": ["a"] }), "headers"),
        (serde_json::json!({ "method": "GET", "host": "h", "uri": "/", "peer": "localhost" }), "peer"),
    ];
    for (body, field) in cases {
        let a = h.admin("POST", "/v1/explain", body.clone()).await;
        assert_eq!((a.status, &a.body["field"]), (400, &field.into()), "{body}: {}", a.body);
    }
}

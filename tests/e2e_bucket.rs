//! Side by side with Traefik's own rateLimit: one real Traefik in front of one backend, with a
//! router per case that uses Traefik's `rateLimit` and one that asks quotagate (forwardAuth)
//! with the same average, period and burst. Both take the same steady load at the same time;
//! they must admit the same count, within 2 % (and one request, for the small counts of a rate
//! below one a second).
//!
//! The load is bounded in count and time: each case sends a fixed number of requests on a
//! fixed schedule, a few seconds at most, and every request has a timeout.

mod support;

use std::time::Duration;

use support::{client, Backend, Quotagate, RedisServer, Traefik};
use tokio::time::Instant;

/// One case: the bucket and the load both routers take.
struct Case {
    name: &'static str,
    average: u32,
    period: &'static str,
    burst: u32,
    /// Requests sent at once when the load starts.
    flood: u32,
    /// Then `count` requests, one every `every_ms` milliseconds.
    every_ms: u64,
    count: u32,
}

// Arrivals do not fall on the bucket's refill instants, so a token is often found a little
// late: with burst 1, a limiter that refuses early requests at once (no max_delay) loses most
// of those tokens and admits far fewer than Traefik. With a large burst a late token is not
// lost, so the flood case checks the burst and the refill after it rather than the wait.
const CASES: [Case; 4] = [
    // average = 50/s, max_delay 10 ms; 125 requests a second for 2 s. (A lower rate than the
    // issue's 100/s, so max_delay is well above the jitter of Traefik -> quotagate -> Redis on a
    // busy machine: jitter past max_delay costs both limiters, unequally.)
    Case { name: "burst1", average: 50, period: "1s", burst: 1, flood: 0, every_ms: 8, count: 250 },
    // The burst of 100 taken by the flood, then the same steady load.
    Case { name: "flood", average: 50, period: "1s", burst: 100, flood: 150, every_ms: 8, count: 250 },
    // 25 per 500 ms is 50/s: max_delay 10 ms as well.
    Case { name: "subsecond", average: 25, period: "500ms", burst: 1, flood: 0, every_ms: 8, count: 250 },
    // 0.8 a second, max_delay 500 ms; a request every 600 ms for 4.8 s. Traefik admits the 1st,
    // 3rd, 5th, 7th and 9th (each 50 to 200 ms before its token, far from either edge); a
    // limiter without the wait admits three.
    Case { name: "slow", average: 4, period: "5s", burst: 1, flood: 0, every_ms: 600, count: 9 },
];

/// quotagate's config: one rule per case, the same bucket as Traefik's; `store` is appended.
fn quotagate_config(store: &str) -> String {
    let mut config = String::from(
        "[identity]\nmissing = \"ip\"\n[defaults]\nplan = \"free\"\nanonymous_plan = \"free\"\n\
         [plans.free]\nlimits = [{ requests = 1000000, per = \"day\" }]\n\
         [[rules]]\nname = \"warm\"\npath_prefix = \"/warm\"\nexempt = true\n",
    );
    config.push_str(store);
    for c in &CASES {
        config.push_str(&format!(
            "[[rules]]\nname = \"{n}\"\npath_prefix = \"/quotagate/{n}\"\n\
             limits.free = [{{ average = {a}, period = \"{p}\", burst = {b} }}]\n",
            n = c.name,
            a = c.average,
            p = c.period,
            b = c.burst
        ));
    }
    config
}

/// A router and a rateLimit middleware per case, for paths under `/traefik/<case>`.
fn traefik_yaml() -> (String, String) {
    let (mut routers, mut middlewares) = (String::new(), String::new());
    for c in &CASES {
        routers.push_str(&format!(
            "    native-{n}:\n      rule: \"PathPrefix(`/traefik/{n}`)\"\n      entryPoints: [{e}]\n      \
             service: {s}\n      middlewares: [native-{n}]\n      priority: 1000\n",
            n = c.name,
            e = support::traefik::ENTRYPOINT,
            s = support::traefik::SERVICE,
        ));
        middlewares.push_str(&format!(
            "    native-{n}:\n      rateLimit:\n        average: {a}\n        period: {p}\n        burst: {b}\n",
            n = c.name,
            a = c.average,
            p = c.period,
            b = c.burst
        ));
    }
    (routers, middlewares)
}

/// Sends `case`'s load to `url` and counts the 200s.
async fn load(http: reqwest::Client, url: String, case: &Case, start: Instant) -> u32 {
    let mut sent = tokio::task::JoinSet::new();
    let get = |http: &reqwest::Client| {
        let request = http.get(&url).timeout(Duration::from_secs(10));
        async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    let mut admitted = 0;
    for _ in 0..case.flood {
        sent.spawn(get(&http));
    }
    for i in 0..case.count {
        tokio::time::sleep_until(start + Duration::from_millis(case.every_ms) * i).await;
        sent.spawn(get(&http));
    }
    while let Some(status) = sent.join_next().await {
        match status.expect("a request task does not panic") {
            200 => admitted += 1,
            429 => {}
            other => panic!("{}: unexpected status {other} from {url}", case.name),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotagate_admits_what_traefiks_rate_limit_admits_under_the_same_load() {
    side_by_side("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotagate_on_redis_admits_what_traefiks_rate_limit_admits_under_the_same_load() {
    let redis = RedisServer::start();
    // Redis's own clock, as in production: the script reads TIME. A generous command timeout,
    // so a busy machine does not send the flood to the local fallback (that is tested apart).
    side_by_side(&format!(
        "[store]\nkind = \"redis\"\n[store.redis]\nurl = \"{}\"\ncommand_timeout = \"5s\"\n",
        redis.url()
    ))
    .await;
}

/// Runs every case through Traefik's rateLimit and through quotagate with `store`.
async fn side_by_side(store: &str) {
    let backend = Backend::start().await;
    let quotagate = Quotagate::start(&quotagate_config(store)).await;
    let (routers, middlewares) = traefik_yaml();
    let traefik = Traefik::builder(&quotagate.url(), &backend.url())
        .routers_yaml(&routers)
        .middlewares_yaml(&middlewares)
        .start()
        .await;
    let http = client();
    let mut report = Vec::new();
    let mut apart = Vec::new();
    for case in &CASES {
        if case.flood > 0 {
            // Each bucket made by one request first: Traefik looks a new source's bucket up and
            // stores it without a lock, so a flood from a new source gets several full buckets
            // (seen: 224 admitted for a burst of 100).
            for side in ["traefik", "quotagate"] {
                let first = http.get(format!("{}/{side}/{}", traefik.url(), case.name)).send().await;
                assert_eq!(first.expect("Traefik answers").status(), 200);
            }
            // Traefik opens a connection to quotagate per concurrent check: opened before the
            // flood, as a service under load has them, so quotagate sees the flood as soon as
            // Traefik's own limiter does (a bucket left full while they open wastes its refill).
            let mut warm = tokio::task::JoinSet::new();
            for _ in 0..case.flood {
                warm.spawn(http.get(format!("{}/warm", traefik.url())).send());
            }
            while let Some(sent) = warm.join_next().await {
                assert_eq!(sent.unwrap().expect("an exempt request passes").status(), 200);
            }
        }
        // Both routers at once, from the same instant, on the same schedule.
        let start = Instant::now() + Duration::from_millis(50);
        let native = load(http.clone(), format!("{}/traefik/{}", traefik.url(), case.name), case, start);
        let ours = load(http.clone(), format!("{}/quotagate/{}", traefik.url(), case.name), case, start);
        let (native, ours) = tokio::join!(native, ours);
        report.push(format!("{}: traefik {native}, quotagate {ours}", case.name));
        let tolerance = (native * 2).div_ceil(100).max(1);
        if native.abs_diff(ours) > tolerance {
            apart.push(format!("{}: more than {tolerance} apart", case.name));
        }
    }
    let store = if store.is_empty() { "memory" } else { "redis" };
    let report = format!("{store} store:\n{}", report.join("\n"));
    assert!(apart.is_empty(), "{}\n{report}", apart.join("\n"));
    // Shown with --nocapture: the counts per case.
    println!("{report}");
}

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

use support::{client, Backend, Quotagate, Traefik};
use tokio::time::Instant;

/// One case: the bucket and the load both routers take.
struct Case {
    name: &'static str,
    average: u32,
    period: &'static str,
    burst: u32,
    /// Requests sent at once when the load starts.
    flood: u32,
    /// Then `rate` requests a second, for `seconds`.
    rate: u32,
    seconds: u32,
}

const CASES: [Case; 4] = [
    // The measurement: Traefik admits about rate * time + burst.
    Case { name: "burst1", average: 100, period: "1s", burst: 1, flood: 0, rate: 400, seconds: 2 },
    Case { name: "flood", average: 50, period: "1s", burst: 100, flood: 150, rate: 200, seconds: 2 },
    Case { name: "subsecond", average: 50, period: "500ms", burst: 1, flood: 0, rate: 400, seconds: 2 },
    // 0.8 a second: Traefik's max_delay is 500 ms there.
    Case { name: "slow", average: 4, period: "5s", burst: 20, flood: 0, rate: 40, seconds: 5 },
];

fn quotagate_config() -> String {
    let mut config = String::from(
        "[identity]\nmissing = \"ip\"\n[defaults]\nplan = \"free\"\nanonymous_plan = \"free\"\n\
         [plans.free]\nlimits = [{ requests = 1000000, per = \"day\" }]\n",
    );
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
    for _ in 0..case.flood {
        sent.spawn(get(&http));
    }
    let interval = Duration::from_secs(1) / case.rate;
    for i in 0..case.rate * case.seconds {
        tokio::time::sleep_until(start + interval * i).await;
        sent.spawn(get(&http));
    }
    let mut admitted = 0;
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
    let backend = Backend::start().await;
    let quotagate = Quotagate::start(&quotagate_config()).await;
    let (routers, middlewares) = traefik_yaml();
    let traefik = Traefik::builder(&quotagate.url(), &backend.url())
        .routers_yaml(&routers)
        .middlewares_yaml(&middlewares)
        .start()
        .await;
    let http = client();
    let mut report = Vec::new();
    for case in &CASES {
        // Both routers at once, from the same instant, on the same schedule.
        let start = Instant::now() + Duration::from_millis(50);
        let native = load(http.clone(), format!("{}/traefik/{}", traefik.url(), case.name), case, start);
        let ours = load(http.clone(), format!("{}/quotagate/{}", traefik.url(), case.name), case, start);
        let (native, ours) = tokio::join!(native, ours);
        report.push(format!("{}: traefik {native}, quotagate {ours}", case.name));
        let tolerance = (native * 2).div_ceil(100).max(1);
        assert!(
            native.abs_diff(ours) <= tolerance,
            "{}: Traefik admitted {native}, quotagate {ours} (at most {tolerance} apart)\n{}",
            case.name,
            report.join("\n")
        );
    }
    // Shown with --nocapture: the counts per case.
    println!("{}", report.join("\n"));
}

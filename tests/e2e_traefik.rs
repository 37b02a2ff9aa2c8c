//! End to end: a client talks to a real Traefik, whose forwardAuth middleware asks a real
//! quotagate process; allowed requests reach a recording backend. What the client and the
//! backend see is what users get.
//!
//! Limits here use day windows: the service reads the wall clock, and a day boundary falling
//! inside a test run is far less likely than a minute boundary. Window arithmetic itself is
//! tested with a manual clock in tests/http.rs and the limiter's unit tests.

mod support;

use std::time::Duration;

use support::fields::sf_items;
use support::{client, Backend, Quotagate, Traefik};

const CONFIG: &str = r#"
[identity]
sources = ["bearer", "token", "header:X-API-Key", "query:api_key"]
missing = "reject"

[defaults]
plan = "free"

[plans.free]
limits = [{ requests = 10, per = "day" }]

[plans.pro]
limits = [{ requests = 600, per = "day" }]

[tokens]
"pro-token-123" = "pro"

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
limits.free = [{ requests = 2, per = "day" }]

[[rules]]
name = "docs"
path_prefix = "/docs"
exempt = true
"#;

const AUTH_RESPONSE_HEADERS: [&str; 7] = [
    "RateLimit-Policy",
    "RateLimit",
    "X-Quotagate-Plan",
    "X-Quotagate-Identity",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
];

struct Stack {
    quotagate: Quotagate,
    backend: Backend,
    traefik: Traefik,
}

async fn stack(config: &str) -> Stack {
    let quotagate = Quotagate::start(config).await;
    let backend = Backend::start().await;
    let traefik = Traefik::builder(&format!("{}/", quotagate.url()), &backend.url())
        .trust_forward_header(false)
        .auth_response_headers(AUTH_RESPONSE_HEADERS)
        .start()
        .await;
    Stack { quotagate, backend, traefik }
}

/// The last request the backend received from `token` (other clients may be sending too).
fn last_from(backend: &Backend, token: &str) -> support::Recorded {
    let auth = format!("Bearer {token}");
    backend
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.header("authorization") == Some(auth.as_str()))
        .expect("a request")
}

/// Seconds until the next UTC midnight, by the test's clock.
fn until_midnight() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    86_400 - now % 86_400
}

#[tokio::test]
async fn a_client_gets_ten_200s_then_a_429_with_retry_after_and_ratelimit_fields() {
    let s = stack(CONFIG).await;
    let http = client();
    let url = format!("{}/api/items?page=2", s.traefik.url());
    for i in 0..10 {
        let r = http.get(&url).bearer_auth("demo-token").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert!(r.headers().get("ratelimit").is_none(), "Traefik copies nothing to a 2xx's client");
        assert_eq!(r.text().await.unwrap(), support::backend::BACKEND_BODY);
        // The backend got quotagate's headers through authResponseHeaders.
        let seen = s.backend.last_request();
        assert_eq!(seen.header("x-ratelimit-remaining"), Some((9 - i).to_string().as_str()));
        assert_eq!(seen.header("x-ratelimit-limit"), Some("10"));
        assert_eq!(seen.header("x-quotagate-plan"), Some("free"));
        let identity = seen.header("x-quotagate-identity").unwrap();
        assert!(identity.starts_with("tok:") && !identity.contains("demo-token"), "{identity}");
        assert_eq!(seen.uri, "/api/items?page=2");
        // The IETF fields reach the backend (to relay), not the client: on a 2xx Traefik
        // copies authResponseHeaders to the upstream request only.
        assert_eq!(sf_items(seen.header("ratelimit-policy").unwrap()), ["day q=10 w=86400"]);
        let state = sf_items(seen.header("ratelimit").unwrap());
        let [item] = &state[..] else { panic!("{state:?}") };
        let t: u64 = item.strip_prefix(&format!("day r={} t=", 9 - i)).unwrap().parse().unwrap();
        assert!(t.abs_diff(until_midnight()) <= 2, "{item}");
    }
    let r = http.get(&url).bearer_auth("demo-token").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    let expected = until_midnight();
    assert!(retry.abs_diff(expected) <= 2, "Retry-After {retry}, midnight in {expected}");
    assert_eq!(sf_items(h["ratelimit-policy"].to_str().unwrap()), ["day q=10 w=86400"]);
    assert_eq!(sf_items(h["ratelimit"].to_str().unwrap()), [format!("day r=0 t={retry}")]);
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["type"], "https://iana.org/assignments/http-problem-types#quota-exceeded");
    assert_eq!(body["violated-policies"], serde_json::json!(["day"]));
    assert_eq!(s.backend.request_count(), 10, "the denied request never reached the backend");

    // Another token has its own quota; a known token its own plan.
    let r = http.get(&url).bearer_auth("pro-token-123").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.backend.last_request().header("x-quotagate-plan"), Some("pro"));
    assert_eq!(s.backend.last_request().header("x-ratelimit-limit"), Some("600"));
}

#[tokio::test]
async fn rules_apply_to_the_forwarded_method_and_path() {
    let s = stack(CONFIG).await;
    let http = client();
    let base = s.traefik.url();
    let summarize = format!("{base}/api/summarize");
    for _ in 0..2 {
        let r = http.post(&summarize).header("x-api-key", "rule-token").body("text").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http.post(&summarize).header("x-api-key", "rule-token").body("text").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let policy = sf_items(r.headers()["ratelimit-policy"].to_str().unwrap());
    assert_eq!(policy, ["day q=10 w=86400", "summarize.day q=2 w=86400"]);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["violated-policies"], serde_json::json!(["summarize.day"]));
    // Percent-encoding does not dodge the rule.
    let r =
        http.post(format!("{base}/api/%73ummarize")).header("x-api-key", "rule-token").send().await.unwrap();
    assert_eq!(r.status(), 429);
    // GET is not the rule's method; the query-parameter token is the same caller.
    let r = http.get(format!("{base}/api/summarize?api_key=rule-token")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.backend.last_request().header("x-ratelimit-remaining"), Some("7"));
    // Exempt paths are never limited nor counted.
    for _ in 0..12 {
        let r =
            http.get(format!("{base}/docs/guide")).header("x-api-key", "rule-token").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn a_missing_token_gets_the_configured_answer() {
    let s = stack(CONFIG).await;
    let r = client().get(format!("{}/api/items", s.traefik.url())).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"api\"");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(s.backend.request_count(), 0);

    let by_ip = CONFIG.replace("missing = \"reject\"", "missing = \"ip\"")
        + "\n[plans.anonymous]\nlimits = [{ requests = 1, per = \"day\" }]\n";
    let s = stack(&by_ip).await;
    let http = client();
    let url = format!("{}/api/items", s.traefik.url());
    // The client's own X-Forwarded-For is dropped by Traefik: it cannot pick its identity.
    let r = http.get(&url).header("x-forwarded-for", "1.2.3.4").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.backend.last_request().header("x-quotagate-identity"), Some("ip:127.0.0.1"));
    assert_eq!(s.backend.last_request().header("x-quotagate-plan"), Some("anonymous"));
    let r = http.get(&url).header("x-forwarded-for", "5.6.7.8").send().await.unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn quotagate_reloads_a_changed_config_while_traefik_keeps_sending() {
    let mut s = stack(CONFIG).await;
    let url = format!("{}/api/items", s.traefik.url());

    // Steady traffic from another token during the reloads, bounded in count and time.
    let load = {
        let (http, url) = (client(), url.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            for _ in 0..400 {
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                let r = http.get(&url).bearer_auth("pro-token-123").send().await;
                statuses.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };

    let http = client();
    for _ in 0..4 {
        assert_eq!(http.get(&url).bearer_auth("reload-token").send().await.unwrap().status(), 200);
    }
    // New limits by file change (the watcher sees it): free drops from 10 to 5 a day. The 4
    // counted requests are kept, so one more passes.
    s.quotagate
        .write_config(&CONFIG.replace("{ requests = 10, per = \"day\" }", "{ requests = 5, per = \"day\" }"));
    s.quotagate.wait_for_log("config reloaded", Duration::from_secs(10)).await;
    let r = http.get(&url).bearer_auth("reload-token").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_from(&s.backend, "reload-token").header("x-ratelimit-limit"), Some("5"));
    assert_eq!(last_from(&s.backend, "reload-token").header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(http.get(&url).bearer_auth("reload-token").send().await.unwrap().status(), 429);

    // A broken file is refused and the config in force stays.
    s.quotagate.write_config("[plans.free]\nlimits = [{ requests = 0, per = \"day\" }]\n");
    s.quotagate.wait_for_log("config reload refused", Duration::from_secs(10)).await;
    assert!(s.quotagate.log().contains("plans.free.limits[0].requests: must be greater than 0 (got 0)"));
    assert_eq!(http.get(&url).bearer_auth("reload-token").send().await.unwrap().status(), 429);

    // SIGHUP reloads too: back to 10 a day, with the 5 counted kept.
    s.quotagate.write_config(
        &CONFIG.replace(
            "\"pro-token-123\" = \"pro\"",
            "\"pro-token-123\" = \"pro\"\n\"reload-token\" = \"free\"",
        ),
    );
    s.quotagate.reload();
    let metrics_url = format!("{}/metrics", s.quotagate.url());
    let reloaded = support::poll(Duration::from_secs(10), || {
        let (http, metrics_url) = (http.clone(), metrics_url.clone());
        async move {
            let text = http.get(&metrics_url).send().await.ok()?.text().await.ok()?;
            let ok = text.lines().find(|l| l.starts_with("quotagate_config_reloads_total{result=\"ok\"}"))?;
            (ok.ends_with(" 2")).then_some(())
        }
    })
    .await;
    assert!(reloaded.is_some(), "two successful reloads in the metrics");
    let r = http.get(&url).bearer_auth("reload-token").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_from(&s.backend, "reload-token").header("x-ratelimit-remaining"), Some("4"));

    // The command line's --listen still holds: no "restart needed" warning for it.
    assert!(!s.quotagate.log().contains("take effect at the next restart"), "{}", s.quotagate.log());

    let statuses = load.await.unwrap();
    assert!(statuses.len() >= 20, "the load ran ({} requests)", statuses.len());
    assert!(statuses.iter().all(|&s| s == 200), "every request during the reloads passed: {statuses:?}");
}

#[tokio::test]
async fn sigterm_stops_the_service_cleanly() {
    let mut s = stack(CONFIG).await;
    let r = client().get(format!("{}/x", s.traefik.url())).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status = s.quotagate.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(s.quotagate.log().contains("quotagate stopped"));
}

#[tokio::test]
async fn with_auth_request_headers_trimmed_to_the_token_limits_and_rules_still_apply() {
    // The README's advice: Traefik sends only `Authorization` (plus its X-Forwarded-*), which is
    // all quotagate reads with these identity sources.
    let quotagate = Quotagate::start(CONFIG).await;
    let backend = Backend::start().await;
    let traefik = Traefik::builder(&format!("{}/", quotagate.url()), &backend.url())
        .trust_forward_header(false)
        .auth_response_headers(AUTH_RESPONSE_HEADERS)
        .forward_auth_yaml("authRequestHeaders: [Authorization]")
        .start()
        .await;
    let http = client();
    let summarize = format!("{}/api/summarize", traefik.url());
    for i in 0..2 {
        let r =
            http.post(&summarize).bearer_auth("trimmed").header("cookie", "session=1").send().await.unwrap();
        assert_eq!(r.status(), 200, "summarize {i}");
    }
    // The rule saw the forwarded method and path: its 2 are used up, the plan's 10 are not.
    let r = http.post(&summarize).bearer_auth("trimmed").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let items = format!("{}/api/items", traefik.url());
    for i in 2..10 {
        let r = http.get(&items).bearer_auth("trimmed").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(http.get(&items).bearer_auth("trimmed").send().await.unwrap().status(), 429);
    let r = http.get(&items).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token is still told apart");
    assert_eq!(backend.request_count(), 10);
}

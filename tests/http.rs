//! The forwardAuth contract over HTTP: statuses, headers and bodies, with a manual clock.
//! Requests go through the real router (`oneshot`); one test uses a real socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use quotagate::clock::Clock;
use quotagate::config::Config;
use quotagate::limiter::{Nanos, SECOND};
use quotagate::server::{self, AppState};
use tower::ServiceExt;

#[path = "support/fields.rs"]
mod fields;
use fields::sf_items;

/// 2026-11-23 19:05:00 UTC: a whole minute.
const T0: Nanos = 1_795_460_700 * SECOND;

const CONTRACT: &str = include_str!("../config/contract.toml");

struct Harness {
    state: AppState,
    clock: Clock,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// A `RateLimit` or `RateLimit-Policy` field as an independent parser reads it.
    fn items(&self, name: &str) -> Vec<String> {
        sf_items(self.header(name))
    }

    /// The 429 body's `violated-policies`.
    fn violated(&self) -> Vec<String> {
        let body = self.json();
        assert_eq!(body["type"], "https://iana.org/assignments/http-problem-types#quota-exceeded");
        let names = body["violated-policies"].as_array().unwrap_or_else(|| panic!("{body}"));
        let names: Vec<String> = names.iter().map(|n| n.as_str().unwrap().to_owned()).collect();
        // Named exactly as in RateLimit-Policy, each with nothing left in RateLimit.
        let state = self.items("ratelimit");
        for n in &names {
            assert!(self.items("ratelimit-policy").iter().any(|i| i.starts_with(&format!("{n} q="))), "{n}");
            assert!(state.iter().any(|i| i.starts_with(&format!("{n} r=0 "))), "{n} in {state:?}");
        }
        names
    }
}

impl Harness {
    fn new(config: &str) -> Harness {
        Harness::at(config, T0)
    }

    fn at(config: &str, now: Nanos) -> Harness {
        let config = Config::parse(config, "test.toml", None).unwrap_or_else(|e| panic!("{e}"));
        let clock = Clock::manual(now);
        Harness { state: AppState::new(config, clock.clone()), clock }
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let res = server::router(self.state.clone(), true).oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        // Every RateLimit field any test sees is one a Structured Fields parser reads, with
        // one item per policy in both, in the same order.
        let names = |field| headers.get(field).map(|v| sf_items(v.to_str().unwrap()));
        let (policy, state) = (names("ratelimit-policy"), names("ratelimit"));
        let name = |items: Vec<String>| -> Vec<String> {
            items.iter().map(|i| i.split(' ').next().unwrap().to_owned()).collect()
        };
        assert_eq!(policy.map(name), state.map(name), "RateLimit-Policy and RateLimit name the same items");
        // Retry-After is never earlier than the `t` of an item with nothing left.
        if let (Some(retry), Some(state)) = (headers.get("retry-after"), names("ratelimit")) {
            let retry: u64 = retry.to_str().unwrap().parse().unwrap();
            for item in state.iter().filter(|i| i.contains(" r=0 ")) {
                let t: u64 = item.rsplit_once(" t=").unwrap().1.parse().unwrap();
                assert!(t <= retry, "{item} but Retry-After: {retry}");
            }
        }
        Answer { status, headers, body: String::from_utf8(body.to_vec()).unwrap() }
    }

    /// A forwardAuth check as Traefik sends it, with `headers` added.
    async fn check(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get("/")
            .header("x-forwarded-method", method)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", uri)
            .header("x-forwarded-for", "203.0.113.7");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn bearer(&self, token: &str) -> Answer {
        self.check("GET", "/api/items", &[("authorization", &format!("Bearer {token}"))]).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).unwrap()).await
    }
}

/// Serves `h` on real sockets until the returned sender fires.
fn serve(
    h: &Harness,
    main: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let listeners = server::Listeners { check: main, admin, tickets: None };
    (stop, tokio::spawn(server::run(h.state.clone(), listeners, shutdown, Duration::from_secs(5))))
}

#[tokio::test]
async fn denies_the_eleventh_request_in_a_minute() {
    let h = Harness::new(CONTRACT);
    h.clock.advance(Duration::from_millis(18_300));
    for i in 0..10u32 {
        let a = h.bearer("demo").await;
        assert_eq!(a.status, StatusCode::OK, "request {i}");
        assert!(a.body.is_empty());
        assert_eq!(a.header("x-ratelimit-limit"), "10");
        assert_eq!(a.header("x-ratelimit-remaining"), (9 - i).to_string());
        assert_eq!(a.header("x-ratelimit-reset"), "42");
        assert_eq!(a.header("x-quotagate-plan"), "free");
        assert!(a.header("x-quotagate-identity").starts_with("tok:"));
        // The IETF fields on a 200 too, for the backend to relay: 41.7 s left in the minute.
        assert_eq!(a.items("ratelimit-policy"), ["minute q=10 w=60", "day q=1000 w=86400"]);
        let t_day = 86_400 - (19 * 3600 + 5 * 60 + 18);
        assert_eq!(
            a.items("ratelimit"),
            [format!("minute r={} t=42", 9 - i), format!("day r={} t={t_day}", 999 - i)]
        );
    }
    let a = h.bearer("demo").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // 41.7 s remain in the minute: Retry-After rounds up, never earlier than the real wait.
    assert_eq!(a.header("retry-after"), "42");
    assert_eq!(a.items("ratelimit-policy"), ["minute q=10 w=60", "day q=1000 w=86400"]);
    assert_eq!(a.items("ratelimit"), ["minute r=0 t=42", "day r=990 t=17682"]);
    assert_eq!(a.header("x-ratelimit-limit"), "10");
    assert_eq!(a.header("x-ratelimit-remaining"), "0");
    assert_eq!(a.header("content-type"), "application/problem+json");
    let body = a.json();
    assert_eq!(body["status"], 429);
    assert_eq!(body["plan"], "free");
    assert_eq!(a.violated(), ["minute"]);
    assert_eq!(body["retry_after_seconds"], 42);

    // The fingerprint is not the token.
    assert!(!a.headers.iter().any(|(_, v)| v.to_str().unwrap().contains("demo")));

    h.clock.advance(Duration::from_millis(41_700));
    assert_eq!(h.bearer("demo").await.status, StatusCode::OK, "a new minute");
}

#[tokio::test]
async fn denied_requests_do_not_use_up_quota() {
    let h = Harness::new(CONTRACT);
    for _ in 0..10 {
        h.bearer("demo").await;
    }
    for _ in 0..50 {
        assert_eq!(h.bearer("demo").await.status, StatusCode::TOO_MANY_REQUESTS);
    }
    h.clock.advance(Duration::from_secs(60));
    let a = h.bearer("demo").await;
    // The day limit counted 10, not 60: the most constrained limit is the minute one.
    assert_eq!(a.header("x-ratelimit-remaining"), "9");
    let h2 = Harness::new(&CONTRACT.replace("plan = \"free\"", "plan = \"free\"\ncount_denied = true"));
    for _ in 0..1000 {
        h2.bearer("demo").await;
    }
    h2.clock.advance(Duration::from_secs(60));
    let a = h2.bearer("demo").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "count_denied: 1000 counted in the day");
    assert_eq!(a.violated(), ["day"]);
}

#[tokio::test]
async fn ratelimit_fields_on_200s_can_be_switched_off_but_429s_keep_them() {
    let config = "[answers]\nratelimit_on_allowed = false\n[plans.free]\nlimits = [{ requests = 1, per = \"minute\" }]";
    let h = Harness::new(config);
    let a = h.bearer("t").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get("ratelimit-policy").is_none() && a.headers.get("ratelimit").is_none());
    assert_eq!(a.header("x-ratelimit-remaining"), "0");
    let a = h.bearer("t").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.items("ratelimit-policy"), ["minute q=1 w=60"]);
    assert_eq!(a.items("ratelimit"), ["minute r=0 t=60"]);
    assert_eq!(a.header("retry-after"), "60");
}

#[tokio::test]
async fn a_monthly_quota_resets_on_the_first_at_midnight_utc() {
    let config = "[plans.free]\nlimits = [{ requests = 2, per = \"month\" }]";
    // 2028-02-29 23:59:59 UTC, a leap day.
    let h = Harness::at(config, 1_835_481_599 * SECOND);
    assert_eq!(h.bearer("t").await.status, StatusCode::OK);
    assert_eq!(h.bearer("t").await.status, StatusCode::OK);
    let a = h.bearer("t").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), "1");
    assert_eq!(a.items("ratelimit-policy"), ["month q=2 w=2505600"], "29 days");
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.bearer("t").await.status, StatusCode::OK, "1 March");
}

#[tokio::test]
async fn the_token_bucket_has_traefik_semantics() {
    let h = Harness::new(CONTRACT);
    let t = "burst-tok";
    let config = CONTRACT.replace(
        "\"ops-token-9\" = \"internal\"",
        "\"ops-token-9\" = \"internal\"\n\"burst-tok\" = \"burst\"",
    );
    let h = Harness { state: Harness::new(&config).state, ..h };
    let h = Harness { clock: h.state.clock.clone(), state: h.state };
    for i in 0..50 {
        assert_eq!(h.bearer(t).await.status, StatusCode::OK, "burst request {i}");
    }
    let a = h.bearer(t).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), "1", "10 ms, rounded up to a whole second");
    // q = burst, w = burst / average seconds rounded up: 50 at once, never more than 100/s.
    assert_eq!(a.items("ratelimit-policy"), ["bucket q=50 w=1"]);
    assert_eq!(a.items("ratelimit"), ["bucket r=0 t=1"]);
    h.clock.advance(Duration::from_millis(10));
    assert_eq!(h.bearer(t).await.status, StatusCode::OK, "one token back after 10 ms");
}

#[tokio::test]
async fn missing_and_bad_tokens_get_clear_answers() {
    let h = Harness::new(CONTRACT);
    let a = h.check("GET", "/api/items", &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("www-authenticate"), "Bearer realm=\"api\"");
    assert_eq!(a.header("content-type"), "application/problem+json");
    assert_eq!(
        a.json()["detail"],
        "no API token found (looked in bearer, token, header:x-api-key, query:api_key)"
    );

    let long = "x".repeat(257);
    let a = h.bearer(&long).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["detail"], "the token in bearer is 257 bytes long (at most 256 allowed)");
    assert!(!a.body.contains(&long));

    let a = h.check("GET", "/", &[("authorization", "Bearer ")]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["detail"], "the token in bearer is malformed: it is empty");

    let a = h.check("GET", "/", &[("x-api-key", "tok\ten")]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // Bytes that are not UTF-8 at all.
    let req = Request::get("/")
        .header("authorization", axum::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap())
        .body(Body::empty())
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json()["detail"],
        "the token in bearer is malformed: it may only contain visible ASCII characters"
    );

    // Another scheme is not a bearer token: it falls through to the next sources.
    let a = h.check("GET", "/", &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_are_found_in_every_configured_source() {
    let config = format!(
        "[identity]\nsources = [\"token\", \"header:X-API-Key\", \"query:api_key\", \"cookie:session\", \"host\"]\n{}",
        "[plans.free]\nlimits = [{ requests = 1, per = \"minute\" }]"
    );
    let h = Harness::new(&config);
    let same = |a: &Answer, b: &Answer| a.header("x-quotagate-identity") == b.header("x-quotagate-identity");
    let by_scheme = h.check("GET", "/", &[("authorization", "Token abc")]).await;
    let by_header = h.check("GET", "/", &[("x-api-key", "abc")]).await;
    assert!(same(&by_scheme, &by_header), "one token, one identity, whatever the source");
    assert_eq!(by_header.status, StatusCode::TOO_MANY_REQUESTS, "and one counter");
    let by_query = h.check("GET", "/v1/x?foo=1&api_key=q%20k", &[]).await;
    assert_eq!(by_query.status, StatusCode::BAD_REQUEST, "a decoded space is not a token character");
    let by_query = h.check("GET", "/v1/x?foo=1&api_key=qk", &[]).await;
    let by_cookie = h.check("GET", "/", &[("cookie", "theme=dark; session=qk")]).await;
    assert!(same(&by_query, &by_cookie));
    let by_host = h.check("GET", "/", &[]).await;
    assert!(by_host.header("x-quotagate-identity").starts_with("host:"));
}

#[tokio::test]
async fn callers_without_a_token_can_be_limited_by_ip() {
    let config = "[identity]\nmissing = \"ip\"\n[identity.client_ip]\ndepth = 1\n\
        [plans.free]\nlimits = [{ requests = 10, per = \"minute\" }]\n\
        [plans.anonymous]\nlimits = [{ requests = 2, per = \"minute\" }]";
    let h = Harness::new(config);
    // A spoofed left-hand X-Forwarded-For entry does not change who we count: depth 1 is the
    // address Traefik appended.
    for spoof in ["1.1.1.1", "2.2.2.2"] {
        let xff = format!("{spoof}, 198.51.100.9");
        let a = h.check("GET", "/", &[("x-forwarded-for", &xff)]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("x-quotagate-identity"), "ip:198.51.100.9");
        assert_eq!(a.header("x-quotagate-plan"), "anonymous");
    }
    let a = h.check("GET", "/", &[("x-forwarded-for", "9.9.9.9, 198.51.100.9")]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // IPv6 clients are counted per /64.
    let v6 = |ip: &str| format!("10.0.0.1, {ip}");
    assert_eq!(h.check("GET", "/", &[("x-forwarded-for", &v6("2001:db8::1"))]).await.status, StatusCode::OK);
    assert_eq!(h.check("GET", "/", &[("x-forwarded-for", &v6("2001:db8::2"))]).await.status, StatusCode::OK);
    let a = h.check("GET", "/", &[("x-forwarded-for", &v6("2001:db8::ffff:1"))]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        h.check("GET", "/", &[("x-forwarded-for", &v6("2001:db8:0:1::1"))]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rules_add_limits_per_endpoint_and_exempt_others() {
    let h = Harness::new(CONTRACT);
    let auth = [("authorization", "Bearer rule-tok")];
    assert_eq!(h.check("POST", "/api/summarize", &auth).await.status, StatusCode::OK);
    let a = h.check("POST", "/api/summarize/long?x=1", &auth).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-ratelimit-remaining"), "0", "the rule's 2/minute is the most constrained");
    // A path that the backend decodes to the same endpoint does not slip past the rule.
    let a = h.check("POST", "/api/%73ummarize", &auth).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.violated(), ["summarize.minute"]);
    assert_eq!(
        a.items("ratelimit-policy"),
        ["minute q=10 w=60", "day q=1000 w=86400", "summarize.minute q=2 w=60"]
    );
    let a = h.check("POST", "/docs/../api/summarize", &auth).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // Other methods and paths are not the rule's business; the plan still counts them.
    assert_eq!(h.check("GET", "/api/summarize", &auth).await.status, StatusCode::OK);
    assert_eq!(h.check("POST", "/api/summarizer", &auth).await.status, StatusCode::OK);
    // Exempt: never limited, never counted.
    for _ in 0..30 {
        let a = h.check("GET", "/docs/intro", &auth).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.headers.get("x-ratelimit-remaining").is_none());
    }
    let a = h.check("GET", "/api/items", &auth).await;
    assert_eq!(a.header("x-ratelimit-remaining"), "5", "4 counted before, the docs not at all");
}

#[tokio::test]
async fn plans_come_from_tokens_headers_and_defaults() {
    let h = Harness::new(CONTRACT);
    let a = h.bearer("pro-token-123").await;
    assert_eq!(a.header("x-quotagate-plan"), "pro");
    assert_eq!(a.header("x-ratelimit-limit"), "600");
    let a = h.bearer("ops-token-9").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-quotagate-plan"), "internal");
    assert!(a.headers.get("x-ratelimit-limit").is_none(), "unlimited");
    // Without plan_header configured, a client cannot pick its own plan.
    let a = h.check("GET", "/", &[("authorization", "Bearer x"), ("x-plan", "internal")]).await;
    assert_eq!(a.header("x-quotagate-plan"), "free");
    let trusted = Harness::new(
        &CONTRACT.replace("missing = \"reject\"", "missing = \"reject\"\nplan_header = \"X-Plan\""),
    );
    let a = trusted.check("GET", "/", &[("authorization", "Bearer x"), ("x-plan", "pro")]).await;
    assert_eq!(a.header("x-quotagate-plan"), "pro");
    let a = trusted.check("GET", "/", &[("authorization", "Bearer x"), ("x-plan", "gold")]).await;
    assert_eq!(a.header("x-quotagate-plan"), "free", "an unknown plan name falls back");

    let strict =
        Harness::new(&CONTRACT.replace("plan = \"free\"", "plan = \"free\"\nunknown_tokens = \"reject\""));
    let a = strict.bearer("who-is-this").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("www-authenticate"), "Bearer realm=\"api\", error=\"invalid_token\"");
    assert!(!a.body.contains("who-is-this"));
    assert_eq!(strict.bearer("pro-token-123").await.status, StatusCode::OK);
}

#[tokio::test]
async fn allow_listed_clients_are_never_limited() {
    let config = "[identity]\nallow_ips = [\"203.0.113.0/24\"]\n[plans.free]\nlimits = [{ requests = 1, per = \"minute\" }]";
    let h = Harness::new(config);
    for _ in 0..5 {
        assert_eq!(h.bearer("x").await.status, StatusCode::OK);
    }
    let a = h.check("GET", "/", &[("authorization", "Bearer x"), ("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h.check("GET", "/", &[("authorization", "Bearer x"), ("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn dry_run_decides_but_lets_everything_through() {
    let config = "[defaults]\ndry_run = true\n[plans.free]\nlimits = [{ requests = 1, per = \"minute\" }]";
    let h = Harness::new(config);
    for _ in 0..3 {
        let a = h.bearer("x").await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.headers.get("x-ratelimit-limit").is_none(), "nothing enforced, nothing to report");
        assert!(a.headers.get("ratelimit-policy").is_none() && a.headers.get("ratelimit").is_none());
    }
    let metrics = h.get("/metrics").await.body;
    assert!(
        metrics.contains(r#"quotagate_decisions_total{outcome="dry_run_denied",plan="free",rule="-"} 2"#),
        "{metrics}"
    );
    // Per rule: only that rule's limits are tried out.
    let config = "[plans.free]\nlimits = [{ requests = 5, per = \"minute\" }]\n\
        [[rules]]\nname = \"new\"\npath_prefix = \"/new\"\ndry_run = true\nlimits.free = [{ requests = 1, per = \"minute\" }]";
    let h = Harness::new(config);
    let auth = [("authorization", "Bearer x")];
    assert_eq!(h.check("GET", "/new", &auth).await.status, StatusCode::OK);
    assert_eq!(h.check("GET", "/new", &auth).await.status, StatusCode::OK);
    let metrics = h.get("/metrics").await.body;
    assert!(
        metrics.contains(r#"quotagate_decisions_total{outcome="dry_run_denied",plan="free",rule="new"} 1"#),
        "{metrics}"
    );
}

/// The decision counters in `metrics`, one line each.
fn decision_lines(metrics: &str) -> Vec<&str> {
    let mut lines: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("quotagate_decisions_total")).collect();
    lines.sort_unstable();
    lines
}

#[tokio::test]
async fn a_dry_run_rule_never_switches_off_the_plans_limits() {
    let config = "[plans.free]\nlimits = [{ requests = 5, per = \"day\" }]\n\
        [[rules]]\nname = \"new\"\npath_prefix = \"/new\"\ndry_run = true\n\
        limits.free = [{ requests = 1, per = \"day\" }]";
    let h = Harness::new(config);
    let auth = [("authorization", "Bearer probe")];
    let mut statuses = Vec::new();
    for i in 0..12u32 {
        let a = h.check("GET", "/new/x", &auth).await;
        if a.status == StatusCode::OK {
            // The plan's headers, as if the rule did not exist.
            assert_eq!(a.header("x-ratelimit-limit"), "5", "request {i}");
            assert_eq!(a.header("x-ratelimit-remaining"), (4 - i).to_string(), "request {i}");
            assert_eq!(
                a.items("ratelimit-policy"),
                ["day q=5 w=86400"],
                "the dry-run rule is not advertised"
            );
        } else {
            assert_eq!(a.items("ratelimit-policy"), ["day q=5 w=86400"], "only enforced limits speak");
            assert_eq!(a.violated(), ["day"]);
        }
        statuses.push(a.status.as_u16());
    }
    assert_eq!(statuses, [[200; 5].as_slice(), &[429; 7]].concat());
    let metrics = h.get("/metrics").await.body;
    assert_eq!(
        decision_lines(&metrics),
        [
            r#"quotagate_decisions_total{outcome="allowed",plan="free",rule="-"} 1"#,
            r#"quotagate_decisions_total{outcome="denied",plan="free",rule="-"} 7"#,
            r#"quotagate_decisions_total{outcome="dry_run_denied",plan="free",rule="new"} 4"#,
        ],
        "in\n{metrics}"
    );
    // The rule counted on its own: enforced after a reload (same name, same counters), it denies
    // at once although the plan now has room.
    let enforced =
        config.replace("dry_run = true", "dry_run = false").replace("requests = 5", "requests = 100");
    h.state.install(Config::parse(&enforced, "enforced.toml", None).unwrap());
    let a = h.check("GET", "/new/x", &auth).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.violated(), ["new.day"]);
}

#[tokio::test]
async fn three_hundred_matching_rules_are_each_named_in_the_denial() {
    // More scopes than a u8 can count: each verdict still names its own limit.
    let mut config = String::from("[plans.free]\nlimits = [{ requests = 100, per = \"day\" }]\n");
    for i in 0..300 {
        config += &format!("[[rules]]\nname = \"r{i}\"\npath_prefix = \"/many\"\nlimits.\"*\" = [{{ requests = 1, per = \"day\" }}]\n");
    }
    let h = Harness::new(&config);
    let auth = [("authorization", "Bearer many")];
    assert_eq!(h.check("GET", "/many/x", &auth).await.status, StatusCode::OK);
    let a = h.check("GET", "/many/x", &auth).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let mut violated = a.violated();
    violated.sort_unstable();
    let mut expected: Vec<String> = (0..300).map(|i| format!("r{i}.day")).collect();
    expected.sort_unstable();
    assert_eq!(violated, expected);
    let policy = a.items("ratelimit-policy");
    assert_eq!(policy.len(), 301, "the plan's limit and every rule's");
    assert!(
        policy.contains(&"day q=100 w=86400".to_owned())
            && policy.contains(&"r299.day q=1 w=86400".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_ten_of_two_hundred_concurrent_requests_pass() {
    let h = Arc::new(Harness::new(CONTRACT));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.bearer("hot").await.status })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS);
        ok += usize::from(status == StatusCode::OK);
    }
    assert_eq!(ok, 10);
}

#[tokio::test]
async fn reserved_paths_report_health_readiness_and_metrics() {
    let h = Harness::new(CONTRACT);
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    h.bearer("m").await;
    let m = h.get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    for needle in [
        "quotagate_decisions_total{outcome=\"allowed\",plan=\"free\",rule=\"-\"} 1",
        "quotagate_check_duration_seconds_count 1",
        "quotagate_store_live_keys 1",
    ] {
        assert!(m.body.contains(needle), "missing {needle} in\n{}", m.body);
    }
    // With an admin listener, the main router treats every path as a check.
    let main_only = server::router(h.state.clone(), false);
    let res = main_only.oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn decision_metrics_count_each_label_set_across_reloads_and_servers() {
    let h = Harness::new(CONTRACT);
    let auth = [("authorization", "Bearer rule-tok")];
    for _ in 0..3 {
        h.check("POST", "/api/summarize", &auth).await;
    }
    h.check("GET", "/docs/intro", &auth).await;
    h.check("GET", "/api/items", &[]).await;
    h.bearer("m").await;
    // A reload builds new plans; the series go on from where they were.
    h.state.install(Config::parse(CONTRACT, "again.toml", None).unwrap());
    h.bearer("m").await;
    // A second server on a copy of the same config counts on its own metrics.
    let other = Harness::new(CONTRACT);
    other.state.install(h.state.config.load().config.clone());
    other.bearer("m").await;

    let m = h.get("/metrics").await.body;
    let decisions: Vec<&str> = m.lines().filter(|l| l.starts_with("quotagate_decisions_total")).collect();
    let mut expected = [
        r#"quotagate_decisions_total{outcome="allowed",plan="free",rule="summarize"} 2"#,
        r#"quotagate_decisions_total{outcome="denied",plan="free",rule="summarize"} 1"#,
        r#"quotagate_decisions_total{outcome="exempt",plan="free",rule="docs"} 1"#,
        r#"quotagate_decisions_total{outcome="rejected",plan="-",rule="-"} 1"#,
        r#"quotagate_decisions_total{outcome="allowed",plan="free",rule="-"} 2"#,
    ];
    let mut got = decisions.clone();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected, "in\n{m}");
    let m = other.get("/metrics").await.body;
    let decisions: Vec<&str> = m.lines().filter(|l| l.starts_with("quotagate_decisions_total")).collect();
    assert_eq!(decisions, [r#"quotagate_decisions_total{outcome="allowed",plan="free",rule="-"} 1"#]);
}

#[tokio::test]
async fn a_swapped_config_keeps_the_counters() {
    let h = Harness::new(CONTRACT);
    for _ in 0..10 {
        h.bearer("keep").await;
    }
    assert_eq!(h.bearer("keep").await.status, StatusCode::TOO_MANY_REQUESTS);
    let raised =
        CONTRACT.replace("{ requests = 10, per = \"minute\" }", "{ requests = 12, per = \"minute\" }");
    h.state.install(Config::parse(&raised, "new.toml", None).unwrap());
    let a = h.bearer("keep").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-ratelimit-remaining"), "1", "10 counted before the reload");
}

#[tokio::test]
async fn a_real_socket_serves_checks_and_shuts_down_gracefully() {
    let config = "[identity]\nmissing = \"ip\"\n[identity.client_ip]\ndepth = 0\n\
        [plans.free]\nlimits = [{ requests = 10, per = \"minute\" }]\n\
        [plans.anonymous]\nlimits = [{ requests = 1, per = \"minute\" }]";
    let h = Harness::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, server) = serve(&h, listener, None);
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-quotagate-identity"], "ip:127.0.0.1", "the peer address");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 429);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("shuts down").unwrap().unwrap();
}

#[tokio::test]
async fn an_admin_listener_takes_the_reserved_paths() {
    let h = Harness::new(CONTRACT);
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_addr, admin_addr) = (main.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, server) = serve(&h, main, Some(admin));
    let client = reqwest::Client::new();
    let get = |addr: std::net::SocketAddr, path: &str| client.get(format!("http://{addr}{path}")).send();
    assert_eq!(get(admin_addr, "/healthz").await.unwrap().status(), 200);
    assert_eq!(get(admin_addr, "/readyz").await.unwrap().status(), 200);
    assert_eq!(get(admin_addr, "/metrics").await.unwrap().status(), 200);
    assert_eq!(get(admin_addr, "/").await.unwrap().status(), 404, "no checks on the admin listener");
    assert_eq!(get(main_addr, "/healthz").await.unwrap().status(), 401, "a check without a token");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("shuts down").unwrap().unwrap();
}

#[tokio::test]
async fn a_client_obeying_retry_after_is_admitted_when_denials_count() {
    // average = 1, period = 2s, burst = 1: the counted denial moves the bucket on, and the
    // Retry-After it gets says so.
    let bucket = "[defaults]\ncount_denied = true\n[plans.free]\nlimits = [{ average = 1, period = \"2s\", burst = 1 }]";
    // 2 a day and 1 a minute: the second request is denied by the minute, but counted in the
    // day too, which it fills: the wait is the day's, not the minute's.
    let both = "[defaults]\ncount_denied = true\n[plans.free]\nlimits = [{ requests = 2, per = \"day\" }, { requests = 1, per = \"minute\" }]";
    for config in [bucket, both] {
        let h = Harness::new(config);
        assert_eq!(h.bearer("t").await.status, StatusCode::OK);
        for round in 0..3 {
            let a = h.bearer("t").await;
            assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
            let wait: u64 = a.header("retry-after").parse().unwrap();
            h.clock.advance(Duration::from_secs(wait - 1));
            assert_eq!(h.bearer("t").await.status, StatusCode::TOO_MANY_REQUESTS, "{config}: a second early");
            // That early request was counted too: ask again, and obey this time.
            let a = h.bearer("t").await;
            let wait: u64 = a.header("retry-after").parse().unwrap();
            h.clock.advance(Duration::from_secs(wait));
            assert_eq!(
                h.bearer("t").await.status,
                StatusCode::OK,
                "{config}: round {round}, after Retry-After: {wait}"
            );
        }
    }
}

#[tokio::test]
async fn a_forwarded_request_that_cannot_be_read_unambiguously_gets_400() {
    let h = Harness::new(CONTRACT);
    // X-Forwarded-Method without X-Forwarded-Uri: the check's own `/` would dodge path rules.
    let req = Request::get("/")
        .header("x-forwarded-method", "POST")
        .header("authorization", "Bearer t1")
        .body(Body::empty())
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.header("content-type"), "application/problem+json");
    assert_eq!(a.json()["type"], "urn:quotagate:ambiguous-request");
    assert_eq!(
        a.json()["detail"],
        "X-Forwarded-Uri is missing, though other X-Forwarded-* headers are present"
    );
    let a =
        h.check("POST", "/api/items", &[("x-forwarded-uri", "/docs"), ("authorization", "Bearer t1")]).await;
    assert_eq!(
        (a.status, a.json()["detail"].as_str()),
        (StatusCode::BAD_REQUEST, Some("X-Forwarded-Uri appears more than once"))
    );
    let a = h.check("GET", "/api/x%00", &[("authorization", "Bearer t1")]).await;
    assert_eq!(
        (a.status, a.json()["detail"].as_str()),
        (StatusCode::BAD_REQUEST, Some("the path holds an encoded NUL byte"))
    );
}

#[tokio::test]
async fn two_different_tokens_get_400_naming_the_sources() {
    let h = Harness::new(CONTRACT);
    let a =
        h.check("GET", "/api/items", &[("authorization", "Bearer t1"), ("authorization", "Bearer t2")]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["type"], "urn:quotagate:ambiguous-credentials");
    let detail = a.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("more than one credential, found in bearer"), "{detail}");
    assert!(!a.body.contains("t1") && !a.body.contains("t2"), "{}", a.body);
}

/// Traefik's `average = 100, period = 1s, burst = 1`, whose max_delay is 5 ms.
const STEADY: &str = "{ average = 100, period = \"1s\", burst = 1 }";

/// Callers limited by IP alone, under one bucket.
fn by_ip(bucket: &str) -> Harness {
    Harness::new(&format!(
        "[identity]\nmissing = \"ip\"\n[defaults]\nplan = \"free\"\nanonymous_plan = \"free\"\n\
         [plans.free]\nlimits = [{bucket}]"
    ))
}

impl Harness {
    async fn anonymous(&self) -> Answer {
        self.check("GET", "/api/items", &[]).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_bucket_answers_an_early_request_200_once_its_token_is_due() {
    let h = by_ip(STEADY);
    assert_eq!(h.anonymous().await.status, StatusCode::OK);
    // The next token is due 10 ms after the first: 6 ms on, the request is 4 ms early, within
    // max_delay, so it is held 4 ms (on the paused clock) and passes.
    h.clock.advance(Duration::from_millis(6));
    let started = tokio::time::Instant::now();
    assert_eq!(h.anonymous().await.status, StatusCode::OK);
    assert_eq!(started.elapsed(), Duration::from_millis(4));
    // Its token is taken: 8 ms on, the next one (due at 20 ms) is 12 ms off.
    h.clock.advance(Duration::from_millis(2));
    let started = tokio::time::Instant::now();
    let denied = h.anonymous().await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(started.elapsed(), Duration::ZERO, "a denial does not wait");
}

#[tokio::test(start_paused = true)]
async fn max_delay_0s_rejects_an_early_request_at_once() {
    let h = by_ip("{ average = 100, period = \"1s\", burst = 1, max_delay = \"0s\" }");
    assert_eq!(h.anonymous().await.status, StatusCode::OK);
    h.clock.advance(Duration::from_millis(6));
    let started = tokio::time::Instant::now();
    assert_eq!(h.anonymous().await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_request_cancelled_while_it_waits_has_spent_its_token() {
    let h = by_ip(STEADY);
    assert_eq!(h.anonymous().await.status, StatusCode::OK);
    h.clock.advance(Duration::from_millis(6));
    // The client gives up 1 ms into its 4 ms wait: the handler's future is dropped.
    let gave_up = tokio::time::timeout(Duration::from_millis(1), h.anonymous()).await;
    assert!(gave_up.is_err(), "still waiting after 1 ms");
    // Its reservation stands: the next token is due at 20 ms, 14 ms off, beyond max_delay.
    assert_eq!(h.anonymous().await.status, StatusCode::TOO_MANY_REQUESTS);
    h.clock.advance(Duration::from_millis(9));
    assert_eq!(h.anonymous().await.status, StatusCode::OK, "5 ms early, within max_delay");
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_hold_no_thread_and_wait_side_by_side() {
    // 10 a second, max_delay 10 s: fifty requests at once are admitted, the k-th told to wait
    // k * 100 ms. On this one-threaded runtime they all finish when the last token is due.
    let h = by_ip("{ average = 10, period = \"1s\", burst = 1, max_delay = \"10s\" }");
    let started = tokio::time::Instant::now();
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let h = Harness { state: h.state.clone(), clock: h.clock.clone() };
        waiting.spawn(async move { h.anonymous().await.status });
    }
    while let Some(status) = waiting.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(started.elapsed(), Duration::from_millis(4_900));
}

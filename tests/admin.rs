//! The admin API's overrides and its authentication: in process through the real routers with
//! a manual clock (answers, bad input, expiry, paging, reloads), and with the real binary
//! (the check listener never serves it, the memory snapshot keeps overrides, and no secret
//! reaches a log line or a metric).

mod support;

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use quotagate::clock::Clock;
use quotagate::config::Config;
use quotagate::limiter::{Nanos, SECOND};
use quotagate::overrides::format_time;
use quotagate::server::{self, AppState};
use serde_json::{json, Value};
use support::{client, free_port, Quotagate};
use tower::ServiceExt;

/// 2026-11-23 19:05:00 UTC: a whole minute.
const T0: Nanos = 1_795_460_700 * SECOND;
const ADMIN_TOKEN: &str = "the-admin-token-0123456789";
const CUSTOMER: &str = "customer-token-4242";

/// Two requests a minute on free, five on pro; a rule for searches, tighter on each. `extra`
/// goes in `[admin]`, and may open tables of its own.
fn config(admin_listen: &str, token_file: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
admin_listen = "{admin_listen}"

[admin]
token_file = {token_file:?}
{extra}

[plans.free]
limits = [{{ requests = 2, per = "minute" }}]

[plans.pro]
limits = [{{ requests = 5, per = "minute" }}]

[plans.gold]
unlimited = true

[[rules]]
name = "search"
path_prefix = "/api/search"
limits.free = [{{ requests = 1, per = "minute" }}]
limits.pro = [{{ requests = 3, per = "minute" }}]
"#,
        token_file = token_file.display().to_string(),
    )
}

fn token_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("admin-token");
    std::fs::write(&path, format!("{ADMIN_TOKEN}\n")).unwrap();
    path
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    /// A 400 problem+json naming `field`.
    fn bad(&self, field: &str) -> String {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.body);
        assert_eq!(self.header("content-type"), "application/problem+json");
        let body = self.json();
        assert_eq!(body["status"], 400);
        assert_eq!(body["field"], field, "{body}");
        body["detail"].as_str().unwrap().to_owned()
    }
}

struct Harness {
    state: AppState,
    clock: Clock,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let text = config("127.0.0.1:9", &token_file(dir.path()), extra);
        let config = Config::parse(&text, "test.toml", None).unwrap_or_else(|e| panic!("{e}"));
        let clock = Clock::manual(T0);
        Harness { state: AppState::new(config, clock.clone()), clock, _dir: dir }
    }

    async fn send(router: axum::Router, req: Request<Body>) -> Answer {
        let res = router.oneshot(req).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer { status, headers, body: String::from_utf8(body.to_vec()).unwrap() }
    }

    /// An admin call with the admin token.
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.admin_as(Some(&format!("Bearer {ADMIN_TOKEN}")), method, path, body.map(|b| b.to_string())).await
    }

    async fn admin_as(&self, auth: Option<&str>, method: &str, path: &str, body: Option<String>) -> Answer {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        Harness::send(server::admin_router(self.state.clone()), req).await
    }

    async fn set(&self, body: Value) -> Answer {
        self.admin("PUT", "/v1/overrides", Some(body)).await
    }

    /// A forwardAuth check of `path` for `token`, on the check listener's router.
    async fn check(&self, token: &str, path: &str) -> Answer {
        let req = Request::get("/")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        Harness::send(server::router(self.state.clone(), false), req).await
    }

    /// How many checks of `path` pass in a row for `token` before the first 429 (at most 20),
    /// and the plan the last allowed one named.
    async fn allowed(&self, token: &str, path: &str) -> (usize, String) {
        let mut plan = String::new();
        for n in 0..20 {
            let a = self.check(token, path).await;
            if a.status == StatusCode::TOO_MANY_REQUESTS {
                return (n, plan);
            }
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            plan = a.header("x-quotagate-plan").to_owned();
        }
        (20, plan)
    }
}

#[tokio::test]
async fn admin_calls_without_the_admin_token_are_refused() {
    let h = Harness::new("");
    let body = || Some(json!({"token": CUSTOMER, "plan": "pro"}).to_string());
    let refusals = [
        (None, "Bearer realm=\"quotagate-admin\""),
        (
            Some("Bearer not-the-admin-token-at-all"),
            "Bearer realm=\"quotagate-admin\", error=\"invalid_token\"",
        ),
        (
            Some(&*format!("Bearer {ADMIN_TOKEN}x")),
            "Bearer realm=\"quotagate-admin\", error=\"invalid_token\"",
        ),
        (Some(&*format!("Basic {ADMIN_TOKEN}")), "Bearer realm=\"quotagate-admin\""),
        (Some("Bearer"), "Bearer realm=\"quotagate-admin\""),
    ];
    for (auth, challenge) in refusals {
        for (method, path) in
            [("PUT", "/v1/overrides"), ("GET", "/v1/overrides"), ("DELETE", "/v1/overrides")]
        {
            let a = h.admin_as(auth, method, path, body()).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path} with {auth:?}");
            assert_eq!(a.header("www-authenticate"), challenge);
            assert_eq!(a.header("content-type"), "application/problem+json");
            assert_eq!(a.json()["status"], 401);
            assert!(!a.body.contains(ADMIN_TOKEN), "{}", a.body);
        }
    }
    assert!(h.state.overrides.is_empty(), "no refused call changed anything");
    assert_eq!(h.allowed(CUSTOMER, "/api/items").await, (2, "free".into()));

    let a = h.admin_as(Some(&format!("bearer {ADMIN_TOKEN}")), "GET", "/v1/overrides", None).await;
    assert_eq!(a.status, StatusCode::OK, "the scheme is case-insensitive: {}", a.body);

    let metrics = Harness::send(
        server::admin_router(h.state.clone()),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await
    .body;
    let count = |series: &str| support::sample(&metrics, series);
    let series = |endpoint: &str, status: u16| {
        format!("quotagate_admin_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}}")
    };
    assert_eq!(count(&series("PUT /v1/overrides", 401)), Some(5.0), "{metrics}");
    assert_eq!(count(&series("DELETE /v1/overrides", 401)), Some(5.0));
    assert_eq!(count(&series("GET /v1/overrides", 200)), Some(1.0));
}

#[tokio::test]
async fn a_customer_moved_to_pro_is_limited_as_pro_at_once() {
    let h = Harness::new("");
    assert_eq!(h.allowed(CUSTOMER, "/api/items").await, (2, "free".into()));

    let a = h.set(json!({"token": CUSTOMER, "plan": "pro"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let body = a.json();
    assert_eq!(body["plan"], "pro");
    assert_eq!(body["limits"], Value::Null);
    assert_eq!(body["set_at"], format_time(T0));
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(body["fingerprint"].as_str().unwrap().len(), 8);
    assert_eq!(body["key"].as_str().unwrap().len(), 32);
    assert!(!a.body.contains(CUSTOMER), "the token is never answered");

    // The two requests counted under free count under pro's minute too (the same window).
    let a = h.check(CUSTOMER, "/api/items").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-quotagate-plan"), "pro");
    assert_eq!(a.header("x-ratelimit-limit"), "5");
    assert_eq!(a.header("x-ratelimit-remaining"), "2");
    assert_eq!(h.allowed(CUSTOMER, "/api/items").await, (2, "pro".into()));

    // Rules apply by the overridden plan: pro's 3 searches a minute.
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(h.allowed(CUSTOMER, "/api/search").await, (3, "pro".into()));
    // Another customer stays on free.
    assert_eq!(h.allowed("another-customer-1", "/api/items").await, (2, "free".into()));
}

#[tokio::test]
async fn overridden_limits_replace_the_plans_own_and_rules_still_apply_by_plan() {
    let h = Harness::new("");
    let limits = json!([{"requests": 4, "per": "minute", "name": "custom"}]);
    let a = h.set(json!({"token": CUSTOMER, "limits": limits})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["limits"], limits, "answered as given");
    assert_eq!(a.json()["plan"], Value::Null);
    let first = h.check(CUSTOMER, "/api/items").await;
    assert_eq!(first.header("x-quotagate-plan"), "free", "the plan stays");
    assert!(first.header("ratelimit-policy").contains("custom\";q=4;w=60"), "{:?}", first.headers);
    assert_eq!(h.allowed(CUSTOMER, "/api/items").await, (3, "free".into()));
    // The rule's limits for free still apply: one search a minute.
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(h.allowed(CUSTOMER, "/api/search").await, (1, "free".into()));

    // An unlimited plan with limits of its own is limited by them, and its rules apply.
    let a = h.set(json!({"token": "gold-customer-1", "plan": "gold", "limits": [{"average": 1, "burst": 2, "max_delay": "0s"}]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(h.allowed("gold-customer-1", "/api/items").await, (2, "gold".into()));
    // Without limits, gold is unlimited again.
    h.set(json!({"token": "gold-customer-1", "plan": "gold"})).await;
    assert_eq!(h.allowed("gold-customer-1", "/api/items").await, (20, "gold".into()));
}

#[tokio::test]
async fn an_override_stops_applying_when_it_expires() {
    let h = Harness::new("");
    let expires = T0 + 90 * SECOND;
    let a = h.set(json!({"token": CUSTOMER, "plan": "pro", "expires_at": format_time(expires)})).await;
    assert_eq!(a.json()["expires_at"], "2026-11-23T19:06:30Z");
    assert_eq!(h.allowed(CUSTOMER, "/api/items").await, (5, "pro".into()));

    h.clock.set(expires - 1);
    assert_eq!(h.check(CUSTOMER, "/api/search").await.header("x-quotagate-plan"), "pro");
    h.clock.set(expires);
    let a = h.check(CUSTOMER, "/api/items").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-quotagate-plan"), "free", "expired at expires_at");
    let listed = h.admin("GET", "/v1/overrides", None).await.json();
    assert_eq!(listed["overrides"], json!([]), "expired overrides are not listed");

    // An offset is read as RFC 3339 says; a date already past is refused.
    let a = h.set(json!({"token": CUSTOMER, "plan": "pro", "expires_at": "2026-11-23T21:00:00+01:00"})).await;
    assert_eq!(a.json()["expires_at"], "2026-11-23T20:00:00Z");
    let detail = h.set(json!({"token": CUSTOMER, "plan": "pro", "expires_at": "2026-11-23T19:00:00Z"})).await;
    assert!(detail.bad("expires_at").starts_with("expires_at: must be in the future"), "{}", detail.body);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_changes_nothing() {
    let h = Harness::new("");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let put = |body: &str| h.admin_as(Some(&auth), "PUT", "/v1/overrides", Some(body.into()));
    let table: &[(&str, &str, &str)] = &[
        ("", "(body)", "must be a JSON object"),
        ("{", "(body)", "EOF"),
        ("[\"t0ken-0001\", \"pro\", null, null]", "(body)", "must be a JSON object"),
        ("{\"token\": \"t0ken-0001\", \"plan\": \"pro\"} x", "(body)", "trailing characters"),
        ("{\"plan\": \"pro\"}", "(body)", "missing field `token`"),
        ("{\"token\": 42, \"plan\": \"pro\"}", "token", "invalid type: integer `42`"),
        ("{\"token\": \"\", \"plan\": \"pro\"}", "token", "a token must be 1 to"),
        ("{\"token\": \"has space\", \"plan\": \"pro\"}", "token", "a token must be 1 to"),
        ("{\"token\": \"t0ken-0001\", \"plan\": \"pro\", \"tokne\": 1}", "tokne", "unknown field `tokne`"),
        ("{\"token\": \"t0ken-0001\"}", "plan", "give plan, limits or both"),
        (
            "{\"token\": \"t0ken-0001\", \"plan\": \"platinum\"}",
            "plan",
            "unknown plan \"platinum\" (known: \"free\", \"gold\", \"pro\")",
        ),
        ("{\"token\": \"t0ken-0001\", \"plan\": [\"pro\"]}", "plan", "invalid type: sequence"),
        (
            "{\"token\": \"t0ken-0001\", \"limits\": [{\"requests\": 0, \"per\": \"minute\"}]}",
            "limits[0].requests",
            "must be greater than 0",
        ),
        (
            "{\"token\": \"t0ken-0001\", \"limits\": [{\"requests\": 5, \"per\": \"fortnight\"}]}",
            "limits[0].per",
            "fortnight",
        ),
        (
            "{\"token\": \"t0ken-0001\", \"limits\": [{\"requests\": 5, \"per\": \"minute\", \"burts\": 1}]}",
            "limits[0].burts",
            "unknown key",
        ),
        ("{\"token\": \"t0ken-0001\", \"limits\": []}", "limits", "at least one limit"),
        ("{\"token\": \"t0ken-0001\", \"limits\": {\"requests\": 5}}", "limits", "invalid type: map"),
        (
            "{\"token\": \"t0ken-0001\", \"plan\": \"pro\", \"expires_at\": \"tomorrow\"}",
            "expires_at",
            "not an RFC 3339",
        ),
        (
            "{\"token\": \"t0ken-0001\", \"plan\": \"pro\", \"expires_at\": \"2026-13-01T00:00:00Z\"}",
            "expires_at",
            "not an RFC 3339",
        ),
        (
            "{\"token\": \"t0ken-0001\", \"plan\": \"pro\", \"expires_at\": 1795460800}",
            "expires_at",
            "invalid type: integer",
        ),
    ];
    for (body, field, says) in table {
        let a = put(body).await;
        let detail = a.bad(field);
        assert!(detail.contains(says), "{body}: {detail}");
    }
    // A string where something else belongs is not quoted back: it may be a token.
    let a = put("{\"token\": \"t0ken-0001\", \"limits\": \"secret-token-in-the-wrong-place\"}").await;
    assert!(!a.body.contains("secret-token"), "{}", a.body);
    a.bad("limits");
    let a = put(&format!("{{\"token\": \"{}\", \"plan\": \"pro\"}}", "x".repeat(70 * 1024))).await;
    a.bad("(body)");

    let delete = |body: &str| h.admin_as(Some(&auth), "DELETE", "/v1/overrides", Some(body.into()));
    delete("{}").await.bad("token");
    delete("{\"token\": \"t0ken-0001\", \"key\": \"00\"}").await.bad("token");
    delete("{\"key\": \"xyz\"}").await.bad("key");
    for query in ["cursor=xyz", "limit=0", "limit=1001", "limit=ten", "limit=1&limit=2", "page=2"] {
        let a = h.admin("GET", &format!("/v1/overrides?{query}"), None).await;
        let field = query.split('=').next().unwrap();
        a.bad(field);
    }
    assert!(h.state.overrides.is_empty());
}

#[tokio::test]
async fn overrides_are_listed_a_page_at_a_time_and_removed_by_token_or_key() {
    let h = Harness::new("");
    let tokens: Vec<String> = (0..7).map(|i| format!("paged-customer-{i}")).collect();
    for t in &tokens {
        assert_eq!(h.set(json!({"token": t, "plan": "pro"})).await.status, StatusCode::OK);
    }
    let mut keys = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = h.admin("GET", &format!("/v1/overrides?cursor={cursor}&limit=3"), None).await.json();
        let listed = page["overrides"].as_array().unwrap();
        assert!(listed.len() <= 3);
        for o in listed {
            assert_eq!(o["plan"], "pro");
            keys.push(o["key"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "each once, in key order");
    assert_eq!(keys.len(), 7);

    let a = h.admin("DELETE", "/v1/overrides", Some(json!({"token": tokens[0]}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["removed"], true);
    assert_eq!(h.allowed(&tokens[0], "/api/items").await, (2, "free".into()));
    let a = h.admin("DELETE", "/v1/overrides", Some(json!({"token": tokens[0]}))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.header("content-type"), "application/problem+json");
    let a = h.admin("DELETE", "/v1/overrides", Some(json!({"key": keys[3]}))).await;
    assert_eq!(a.status, StatusCode::OK, "by key, for a token that is lost");
    let page = h.admin("GET", "/v1/overrides", None).await.json();
    assert_eq!(page["overrides"].as_array().unwrap().len(), 5);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_full_set_refuses_new_overrides_with_a_409() {
    let h = Harness::new("max_overrides = 2\n");
    for t in ["full-customer-1", "full-customer-2"] {
        assert_eq!(h.set(json!({"token": t, "plan": "pro"})).await.status, StatusCode::OK);
    }
    let a = h.set(json!({"token": "full-customer-3", "plan": "pro"})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.json()["detail"].as_str().unwrap().contains("at most 2 overrides"));
    assert_eq!(h.set(json!({"token": "full-customer-2", "plan": "free"})).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_reload_keeps_the_overrides_and_a_removed_plan_only_stops_its_own_part() {
    let h = Harness::new("");
    h.set(json!({"token": CUSTOMER, "plan": "pro"})).await;
    h.set(json!({"token": "limited-customer", "plan": "gold", "limits": [{"requests": 1, "per": "minute"}]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let text =
        config("127.0.0.1:9", &token_file(dir.path()), "").replace("[plans.gold]\nunlimited = true\n", "");
    h.state.install(Config::parse(&text, "test.toml", None).unwrap());
    assert_eq!(h.allowed(CUSTOMER, "/api/items").await, (5, "pro".into()));
    // gold is gone: the override's limits still apply, to the token's own plan.
    assert_eq!(h.allowed("limited-customer", "/api/items").await, (1, "free".into()));
}

#[tokio::test]
async fn without_admin_the_admin_api_is_not_there() {
    let config = Config::parse(
        "[server]\nadmin_listen = \"127.0.0.1:9\"\n[plans.free]\nlimits = [{ requests = 2, per = \"minute\" }]\n",
        "t.toml",
        None,
    )
    .unwrap();
    let state = AppState::new(config, Clock::manual(T0));
    let req =
        Request::get("/v1/overrides").header("authorization", "Bearer anything-at-all").body(Body::empty());
    let a = Harness::send(server::admin_router(state), req.unwrap()).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("the admin API is off"), "{}", a.body);
}

/// The real binary with `[admin]`, its admin listener on `port`, logging at debug.
async fn spawn(dir: &Path, port: u16, extra: &str) -> Quotagate {
    let text = config(&format!("127.0.0.1:{port}"), &token_file(dir), extra);
    Quotagate::builder(&text).admin_port(port).env("QUOTAGATE_LOG", "debug").start().await
}

async fn put_override(q: &Quotagate, body: Value) -> reqwest::Response {
    let url = format!("{}/v1/overrides", q.admin_url());
    client().put(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap()
}

async fn plan_of(q: &Quotagate, token: &str) -> (u16, String) {
    let a = client().get(format!("{}/api/items", q.url())).bearer_auth(token).send().await.unwrap();
    let plan = a.headers().get("x-quotagate-plan").map_or("", |v| v.to_str().unwrap()).to_owned();
    (a.status().as_u16(), plan)
}

#[tokio::test]
async fn the_check_listener_never_serves_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let q = spawn(dir.path(), free_port(), "[defaults]\nunknown_tokens = \"reject\"\n").await;
    let http = client();
    let body = json!({"token": CUSTOMER, "plan": "pro"});
    for method in [reqwest::Method::PUT, reqwest::Method::GET, reqwest::Method::DELETE] {
        let url = format!("{}/v1/overrides", q.url());
        let a = http.request(method.clone(), url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        // A check like any other: the admin token is an API token the config does not know.
        assert_eq!(a.status(), 401, "{method}");
        let problem: Value = a.json().await.unwrap();
        assert_eq!(problem["type"], "urn:quotagate:unknown-token", "{method}: {problem}");
    }
    let listed: Value = http
        .get(format!("{}/v1/overrides", q.admin_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["overrides"], json!([]), "nothing was set through the check listener");

    // With an override, an unknown token becomes known: its plan is the override's.
    assert_eq!(plan_of(&q, CUSTOMER).await.0, 401);
    assert_eq!(put_override(&q, body).await.status(), 200);
    assert_eq!(plan_of(&q, CUSTOMER).await, (200, "pro".into()));
}

#[tokio::test]
async fn the_memory_snapshot_keeps_overrides_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("counters.snap");
    let extra = format!(
        "[store.memory]\nsnapshot = {{ path = {:?}, interval = \"1s\" }}\n",
        snapshot.display().to_string()
    );
    let port = free_port();
    let mut first = spawn(dir.path(), port, &extra).await;
    assert_eq!(put_override(&first, json!({"token": CUSTOMER, "plan": "pro"})).await.status(), 200);
    assert_eq!(plan_of(&first, CUSTOMER).await, (200, "pro".into()));
    assert!(first.terminate(Duration::from_secs(10)).success(), "{}", first.log());

    let second = spawn(dir.path(), free_port(), &extra).await;
    assert!(second.log().contains("overrides=1"), "{}", second.log());
    assert_eq!(plan_of(&second, CUSTOMER).await, (200, "pro".into()));
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    let q = spawn(dir.path(), free_port(), "").await;
    let http = client();
    let url = format!("{}/v1/overrides", q.admin_url());
    let wrong = "a-wrong-admin-token-5555";
    // Every kind of call, refused and accepted, and checks with the tokens.
    assert_eq!(put_override(&q, json!({"token": CUSTOMER, "plan": "pro"})).await.status(), 200);
    assert_eq!(put_override(&q, json!({"token": CUSTOMER, "plan": "nope"})).await.status(), 400);
    let a = http.put(&url).bearer_auth(wrong).json(&json!({"token": CUSTOMER, "plan": "pro"})).send().await;
    assert_eq!(a.unwrap().status(), 401);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 200);
    assert_eq!(plan_of(&q, CUSTOMER).await, (200, "pro".into()));
    let a = http.get(format!("{}/api/items", q.url())).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(a.status(), 200, "on the check listener the admin token is just a token");
    let a =
        http.delete(&url).bearer_auth(ADMIN_TOKEN).json(&json!({"token": CUSTOMER})).send().await.unwrap();
    assert_eq!(a.status(), 200);
    q.wait_for_log("admin: override removed", Duration::from_secs(5)).await;

    let log = q.log();
    assert!(log.contains("admin: override set"), "{log}");
    assert!(log.contains("admin: call refused"), "{log}");
    let metrics = q.metrics().await.unwrap();
    for secret in [ADMIN_TOKEN, wrong, CUSTOMER] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!metrics.contains(secret), "{secret} in the metrics:\n{metrics}");
    }
}

/// Runs `quotagate admin ARGS` with `stdin` piped in; returns (exit code, stdout, stderr).
async fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let (args, stdin) = (args.iter().map(|a| a.to_string()).collect::<Vec<_>>(), stdin.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(support::quotagate::BINARY)
            .arg("admin")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_sets_lists_and_removes_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let q = spawn(dir.path(), free_port(), "").await;
    let admin_file = dir.path().join("admin-token").display().to_string();
    let customer_file = dir.path().join("customer");
    std::fs::write(&customer_file, format!("{CUSTOMER}\n")).unwrap();
    let customer_file = customer_file.display().to_string();
    let url = q.admin_url();
    let to = ["--url", &*url, "--token-file", &*admin_file];

    let set =
        [&["override", "set"][..], &to, &["--plan", "pro", "--api-token-file", &customer_file]].concat();
    let (code, stdout, stderr) = cli(&set, "").await;
    assert_eq!(code, 0, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["plan"], "pro");
    assert_eq!(plan_of(&q, CUSTOMER).await, (200, "pro".into()));

    let limits = "[{\"requests\": 3, \"per\": \"day\"}]";
    let set = [&["override", "set"][..], &to, &["--limits", limits, "--expires-at", "2099-01-01T00:00:00Z"]]
        .concat();
    let (code, stdout, stderr) = cli(&set, &format!("{CUSTOMER}\n")).await;
    assert_eq!(code, 0, "the API token on stdin: {stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["expires_at"], "2099-01-01T00:00:00Z");

    let (code, stdout, _) = cli(&[&["override", "list"][..], &to, &["--limit", "10"]].concat(), "").await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["overrides"][0]["limits"][0]["requests"], 3);

    let bad = [&["override", "set"][..], &to, &["--plan", "platinum"]].concat();
    let (code, _, stderr) = cli(&bad, CUSTOMER).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: 400 plan: unknown plan \"platinum\""), "{stderr}");

    let (code, _, stderr) = cli(&[&["override", "delete"][..], &to].concat(), CUSTOMER).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = cli(&[&["override", "delete"][..], &to].concat(), CUSTOMER).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: 404 no override for "), "{stderr}");

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-admin-token-xyz").unwrap();
    let wrong = wrong.display().to_string();
    let (code, _, stderr) = cli(&["override", "list", "--url", &url, "--token-file", &wrong], "").await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: 401 wrong admin token"), "{stderr}");
    assert!(!stderr.contains("not-the-admin-token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_sends_each_call_as_the_api_takes_it() {
    use axum::extract::Request as Incoming;
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let router = axum::Router::new().fallback(move |req: Incoming| {
        let seen = recorder.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
            let auth = parts.headers.get("authorization").map_or("", |v| v.to_str().unwrap()).to_owned();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let target = parts.uri.path_and_query().unwrap().to_string();
            seen.lock().unwrap().push((parts.method.to_string(), target, auth, body));
            "{\"ok\": true}"
        }
    });
    let api = support::Server::start(router).await;
    let dir = tempfile::tempdir().unwrap();
    let admin_file = token_file(dir.path()).display().to_string();
    let url = api.url();
    let to = ["--url", &*url, "--token-file", &*admin_file];

    for args in [
        vec!["usage"],
        vec!["reset", "--scope", "search"],
        vec![
            "explain",
            "--method",
            "POST",
            "--host",
            "api.example.com",
            "--uri",
            "/api/summarize?x=1",
            "-H",
            "X-Trace: 7",
        ],
        vec!["explain", "--host", "api.example.com", "--uri", "/", "--token-header", "X-API-Key"],
        vec!["override", "list", "--cursor", "00000000000000000000000000000001", "--limit", "5"],
        vec!["override", "delete", "--key", "00000000000000000000000000000001"],
    ] {
        let call = if args[0] == "override" { 2 } else { 1 };
        let (code, stdout, stderr) = cli(&[&args[..call], &to, &args[call..]].concat(), CUSTOMER).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.contains("\"ok\": true"), "{stdout}");
    }
    let seen = seen.lock().unwrap().clone();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let expected = [
        ("POST", "/v1/usage", json!({"token": CUSTOMER})),
        ("POST", "/v1/reset", json!({"token": CUSTOMER, "scope": "search"})),
        (
            "POST",
            "/v1/explain",
            json!({"method": "POST", "host": "api.example.com", "uri": "/api/summarize?x=1",
                   "headers": {"X-Trace": "7", "Authorization": format!("Bearer {CUSTOMER}")}}),
        ),
        (
            "POST",
            "/v1/explain",
            json!({"method": "GET", "host": "api.example.com", "uri": "/", "headers": {"X-API-Key": CUSTOMER}}),
        ),
        ("GET", "/v1/overrides?cursor=00000000000000000000000000000001&limit=5", Value::Null),
        ("DELETE", "/v1/overrides", json!({"key": "00000000000000000000000000000001"})),
    ];
    assert_eq!(seen.len(), expected.len());
    for ((method, target, auth, body), (m, t, b)) in seen.iter().zip(expected) {
        assert_eq!((method.as_str(), target.as_str(), auth, body), (m, t, &bearer, &b));
    }
}

#[test]
fn the_admin_cli_never_takes_an_api_token_from_the_command_line() {
    for flag in ["--token", "--api-token"] {
        let out = std::process::Command::new(support::quotagate::BINARY)
            .args([
                "admin",
                "usage",
                "--url",
                "http://127.0.0.1:9",
                "--token-file",
                "f",
                flag,
                "secret-token-1",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} is no option");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
    }
    let out = std::process::Command::new(support::quotagate::BINARY)
        .args(["admin", "usage", "--url", "http://127.0.0.1:9", "--token-file", "f", "secret-token-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "nor a positional argument");
}

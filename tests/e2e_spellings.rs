//! End to end: spellings, credentials and headers that got past quotagate's limits, sent by a
//! raw TCP client through a real Traefik (forwardAuth to a real quotagate) to a real nginx. The
//! nginx locations answer with their own name and the `X-RateLimit-Limit` and `X-Quotagate-Plan`
//! that Traefik copied from quotagate's answer, so each answer says both which path the backend
//! served and which limit quotagate counted the request against.
//!
//! Each rule has its own quota, so `X-RateLimit-Limit` names the rule that counted a request:
//! summarize 7, hosted 5, the plan 1000. Limits use day windows (the service reads the wall
//! clock).

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use support::raw::{self, Answer};
use support::spellings::nginx_spelling;
use support::{Nginx, Quotagate, Traefik};

const SECRET: &str = "plan-secret-0123456789abcdef";

fn config(secret_file: &std::path::Path) -> String {
    format!(
        r#"
[identity]
sources = ["bearer", "header:X-API-Key", "query:api_key", "cookie:session"]
missing = "reject"
plan_header = "X-Plan"
plan_header_secret_file = "{}"

[defaults]
plan = "free"

[plans.free]
limits = [{{ requests = 1000, per = "day" }}]

[plans.internal]
unlimited = true

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
limits."*" = [{{ requests = 7, per = "day" }}]

[[rules]]
name = "docs"
path_prefix = "/docs"
exempt = true

[[rules]]
name = "hosted"
host = "api.example.com"
path_prefix = "/hosted"
limits."*" = [{{ requests = 5, per = "day" }}]
"#,
        secret_file.display()
    )
}

/// What nginx serves: the location's name, then what quotagate told the backend.
const LOCATIONS: &str = r#"
        location = /api/summarize { return 200 "summarize limit=$http_x_ratelimit_limit plan=$http_x_quotagate_plan\n"; }
        location /docs/ { return 200 "docs limit=$http_x_ratelimit_limit plan=$http_x_quotagate_plan\n"; }
        location / { return 200 "other $uri limit=$http_x_ratelimit_limit plan=$http_x_quotagate_plan\n"; }
"#;

struct Stack {
    _quotagate: Quotagate,
    nginx: Nginx,
    traefik: Traefik,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().expect("a temp dir");
        let secret_file = dir.path().join("plan-secret");
        std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write the plan secret");
        let quotagate = Quotagate::start(&config(&secret_file)).await;
        let nginx = Nginx::start(LOCATIONS).await;
        // The `internal` router is the trusted path: a headers middleware sets the plan and the
        // secret, overwriting whatever the client sent.
        let traefik = Traefik::builder(&format!("{}/", quotagate.url()), &nginx.url())
            .trust_forward_header(false)
            .auth_response_headers(["X-Quotagate-Plan", "X-Quotagate-Identity", "X-RateLimit-Limit"])
            .routers_yaml(
                "internal:\n  rule: \"Host(`internal.example.com`)\"\n  entryPoints: [web]\n  \
                 service: backend\n  middlewares: [set-plan, quotagate]\n",
            )
            .middlewares_yaml(&format!(
                "set-plan:\n  headers:\n    customRequestHeaders:\n      X-Plan: internal\n      \
                 X-Quotagate-Plan-Secret: {SECRET}\n"
            ))
            .start()
            .await;
        Stack { _quotagate: quotagate, nginx, traefik, _dir: dir }
    }

    async fn send(&self, method: &str, target: &[u8], host: &str, headers: &[&[u8]]) -> Answer {
        raw::send(&format!("127.0.0.1:{}", self.traefik.port()), method, target, host, headers).await
    }

    /// `method target` on api.example.com with a bearer token.
    async fn as_token(&self, method: &str, target: &[u8], token: &str) -> Answer {
        let auth = format!("Authorization: Bearer {token}");
        self.send(method, target, "api.example.com", &[auth.as_bytes()]).await
    }
}

/// A token no other request of this test binary uses: a budget of its own.
fn fresh_token() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("tok-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn encoded_dot_segments_are_counted_by_the_rule_of_the_path_nginx_serves() {
    let stack = Stack::start().await;
    // Issue 9: the first two were exempt as /docs, the third missed the summarize rule.
    for spelling in ["/docs/..%2Fapi%2Fsummarize", "/docs%2F..%2Fapi%2Fsummarize", "/api/x%2F..%2Fsummarize"]
    {
        let a = stack.as_token("POST", spelling.as_bytes(), &fresh_token()).await;
        assert_eq!((a.status, a.body.as_str()), (200, "summarize limit=7 plan=free\n"), "{spelling}");
    }
    // One caller, seven spellings: the eighth request is over the rule's 7.
    let token = fresh_token();
    let spellings = [
        "/api/summarize",
        "/docs/..%2Fapi%2Fsummarize",
        "/docs%2F..%2Fapi%2Fsummarize",
        "/api/x%2F..%2Fsummarize",
        "/api/%73ummarize",
        "/api//summarize",
        "/docs/%2e%2e/api/summarize",
    ];
    for spelling in spellings {
        let a = stack.as_token("POST", spelling.as_bytes(), &token).await;
        assert_eq!((a.status, a.body.as_str()), (200, "summarize limit=7 plan=free\n"), "{spelling}");
    }
    let a = stack.as_token("POST", b"/docs/..%2Fapi%2Fsummarize", &token).await;
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.body.contains("summarize.day"), "{}", a.body);
    // The exemption still holds where every reading stays inside /docs.
    let a = stack.as_token("POST", b"/docs/guide", &token).await;
    assert_eq!((a.status, a.body.as_str()), (200, "docs limit= plan=free\n"));
    // Stricter than nginx: a backslash is a separator to WHATWG URL parsers, so this is not
    // exempt, and counts against summarize, although nginx serves it from /docs.
    let a = stack.as_token("POST", b"/docs/..%5Capi%5Csummarize", &fresh_token()).await;
    assert_eq!((a.status, a.body.as_str()), (200, "docs limit=7 plan=free\n"));
}

#[tokio::test]
async fn generated_spellings_are_served_and_counted_as_the_path_they_spell() {
    let stack = Stack::start().await;
    // The generator of tests/spellings_props.rs, checked here against the real nginx: each
    // spelling is served by `location = /api/summarize` and counted by the summarize rule.
    let mut runner = TestRunner::new(ProptestConfig::default());
    let strategy = nginx_spelling(&["api", "summarize"]);
    for _ in 0..25 {
        let spelling = strategy.new_tree(&mut runner).expect("a spelling").current();
        let a = stack.as_token("POST", spelling.as_bytes(), &fresh_token()).await;
        assert_eq!((a.status, a.body.as_str()), (200, "summarize limit=7 plan=free\n"), "{spelling}");
    }
}

#[tokio::test]
async fn a_raw_byte_in_the_query_is_counted_by_the_path_rule() {
    let stack = Stack::start().await;
    let token = fresh_token();
    // Issue 9: quotagate read `/` instead and the summarize rule never counted.
    for _ in 0..7 {
        let a = stack.as_token("POST", b"/api/summarize?q=caf\xe9", &token).await;
        assert_eq!((a.status, a.body.as_str()), (200, "summarize limit=7 plan=free\n"));
    }
    let a = stack.as_token("POST", b"/api/summarize?q=caf\xe9", &token).await;
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.body.contains("summarize.day"), "{}", a.body);
}

#[tokio::test]
async fn a_host_with_a_trailing_dot_or_another_case_is_the_same_host() {
    let stack = Stack::start().await;
    let token = fresh_token();
    let auth = format!("Authorization: Bearer {token}");
    // Traefik routes all of these; quotagate counts each against the hosted rule's 5.
    let hosts =
        ["api.example.com.", "API.Example.COM", "api.example.com.:80", "api.example.com", "Api.Example.Com."];
    for host in hosts {
        let a = stack.send("GET", b"/hosted", host, &[auth.as_bytes()]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "other /hosted limit=5 plan=free\n"), "{host}");
    }
    let a = stack.send("GET", b"/hosted", "api.example.com.", &[auth.as_bytes()]).await;
    assert_eq!(a.status, 429, "{a:?}");
}

#[tokio::test]
async fn two_different_credentials_get_400_naming_the_sources_and_never_reach_the_backend() {
    let stack = Stack::start().await;
    let (a, b) = (fresh_token(), fresh_token());
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (format!("/api/summarize?api_key={a}&api_key={b}"), vec![], "query:api_key"),
        (format!("/api/summarize?api_key={a}&API_KEY={b}"), vec![], "query:api_key"),
        ("/api/summarize".into(), vec![bearer(&a), bearer(&b)], "bearer"),
        ("/api/summarize".into(), vec![bearer(&a), format!("X-API-Key: {b}")], "bearer, header:x-api-key"),
        (
            "/api/summarize".into(),
            vec![format!("X-API-Key: {a}"), format!("X_API_Key: {b}")],
            "header:x-api-key",
        ),
        ("/api/summarize".into(), vec![format!("Cookie: session={a}; session={b}")], "cookie:session"),
    ];
    for (target, headers, sources) in &cases {
        let headers: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        let before = stack.nginx.access_log().lines().count();
        let answer = stack.send("POST", target.as_bytes(), "api.example.com", &headers).await;
        assert_eq!(answer.status, 400, "{target} {headers:?}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        let body: serde_json::Value = serde_json::from_str(&answer.body).expect("a JSON body");
        assert_eq!(body["type"], "urn:quotagate:ambiguous-credentials");
        let detail = body["detail"].as_str().expect("a detail");
        assert!(detail.contains(sources), "{detail} should name {sources}");
        assert!(!answer.body.contains(&a) && !answer.body.contains(&b), "a token leaked: {}", answer.body);
        assert_eq!(stack.nginx.access_log().lines().count(), before, "the backend was reached");
    }
    // The same credential twice, quoted or not, is one caller.
    let (auth, key) = (format!("Authorization: Bearer {a}"), format!("X-API-Key: {a}"));
    let answer =
        stack.send("POST", b"/api/summarize", "api.example.com", &[auth.as_bytes(), key.as_bytes()]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "summarize limit=7 plan=free\n"));
    let cookies = format!("Cookie: session=\"{b}\"; session={b}");
    let answer = stack.send("POST", b"/api/summarize", "api.example.com", &[cookies.as_bytes()]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "summarize limit=7 plan=free\n"));
}

#[tokio::test]
async fn a_client_chosen_plan_header_is_not_trusted_without_the_secret() {
    let stack = Stack::start().await;
    let token = fresh_token();
    let auth = format!("Authorization: Bearer {token}");
    let wrong = "X-Quotagate-Plan-Secret: not-the-secret-at-all";
    // Issue 9: `X-Plan: internal` from the client made it unlimited.
    for _ in 0..7 {
        let headers: [&[u8]; 3] = [auth.as_bytes(), b"X-Plan: internal", wrong.as_bytes()];
        let a = stack.send("POST", b"/api/summarize", "api.example.com", &headers).await;
        assert_eq!((a.status, a.body.as_str()), (200, "summarize limit=7 plan=free\n"));
    }
    let headers: [&[u8]; 2] = [auth.as_bytes(), b"X-Plan: internal"];
    let a = stack.send("POST", b"/api/summarize", "api.example.com", &headers).await;
    assert_eq!(a.status, 429, "{a:?}");
    // Through the router whose middleware sets the plan and the secret, the plan is trusted,
    // whatever the client sent.
    let headers: [&[u8]; 3] = [auth.as_bytes(), b"X-Plan: free", wrong.as_bytes()];
    for _ in 0..3 {
        let a = stack.send("POST", b"/api/summarize", "internal.example.com", &headers).await;
        assert_eq!((a.status, a.body.as_str()), (200, "summarize limit= plan=internal\n"));
    }
}

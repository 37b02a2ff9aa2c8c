//! End to end over TLS: a real Traefik whose forwardAuth middleware calls quotagate at an
//! `https://` address, verifying quotagate's certificate against a test CA and presenting a
//! client certificate (`server.tls.client_ca`: only Traefik may ask). Traefik's Go client
//! negotiates HTTP/2 by ALPN and multiplexes every check over a few connections, where plain
//! HTTP/1.1 opens one per check under concurrency (docs/traefik-forwardauth-notes.md).
//!
//! Limits use day windows, as in tests/e2e_traefik.rs.

mod support;

use support::certs::Pki;
use support::{client, free_port, Backend, Quotagate, Traefik};

const LIMITS: &str = r#"
[plans.free]
limits = [{ requests = 10, per = "day" }]

[plans.pro]
limits = [{ requests = 100000, per = "day" }]

[tokens]
"pro-token-123" = "pro"
"#;

struct Stack {
    quotagate: Quotagate,
    backend: Backend,
    traefik: Traefik,
    _pki: Pki,
}

/// quotagate with `[server.tls]` and `client_ca`, Traefik calling it over TLS with the client
/// certificate, and a backend.
async fn stack() -> Stack {
    let pki = Pki::new("e2e");
    let admin = free_port();
    let path = |f: &str| pki.path(f).display().to_string();
    let config = format!(
        "[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n\n[server.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n{LIMITS}",
        path("server.pem"),
        path("server.key"),
        path("ca.pem"),
    );
    let quotagate = Quotagate::builder(&config).admin_port(admin).start().await;
    let backend = Backend::start().await;
    let address = format!("https://127.0.0.1:{}/", quotagate.port());
    let traefik = Traefik::builder(&address, &backend.url())
        .trust_forward_header(false)
        .auth_response_headers(["X-Quotagate-Plan", "X-RateLimit-Remaining"])
        .forward_auth_tls(&pki.path("ca.pem"), &pki.path("client.pem"), &pki.path("client.key"))
        .access_log(false)
        .start()
        .await;
    Stack { quotagate, backend, traefik, _pki: pki }
}

/// `quotagate_connections_accepted_total{transport=..,alpn=..}` from the admin listener.
async fn connections(quotagate: &Quotagate, transport: &str, alpn: &str) -> u64 {
    let series = format!(r#"quotagate_connections_accepted_total{{transport="{transport}",alpn="{alpn}"}}"#);
    support::sample(&quotagate.metrics().await.expect("metrics answer"), &series).map_or(0, |v| v as u64)
}

#[tokio::test]
async fn over_tls_ten_requests_pass_and_the_eleventh_gets_429_with_retry_after() {
    let s = stack().await;
    let http = client();
    let url = format!("{}/api/items", s.traefik.url());
    for i in 0..10 {
        let r = http.get(&url).bearer_auth("demo-token").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        let seen = s.backend.last_request();
        assert_eq!(seen.header("x-ratelimit-remaining"), Some((9 - i).to_string().as_str()));
        assert_eq!(seen.header("x-quotagate-plan"), Some("free"));
    }
    let r = http.get(&url).bearer_auth("demo-token").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(s.backend.request_count(), 10);
    assert_eq!(connections(&s.quotagate, "plain", "none").await, 0);
    assert!(connections(&s.quotagate, "tls", "h2").await >= 1, "Traefik chose h2");
}

#[tokio::test]
async fn two_hundred_checks_from_32_clients_share_a_few_h2_connections() {
    let s = stack().await;
    let url = format!("{}/api/items", s.traefik.url());
    let http = client();
    // One check first, so the burst finds Traefik's connection up. A burst on a cold Traefik
    // can dial several connections at once (Go dials for each waiting request until the first
    // TLS handshake is done, then keeps one and closes the others): up to 18 were seen.
    let r = http.get(&url).bearer_auth("pro-token-123").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..32 {
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            // 32 clients, 200 checks in all: the first 8 clients send 7, the others 6.
            for _ in 0..(if c < 8 { 7 } else { 6 }) {
                let r = http.get(&url).bearer_auth("pro-token-123").send().await.unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.extend(done.unwrap());
    }
    assert_eq!(statuses.len(), 200);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let h2 = connections(&s.quotagate, "tls", "h2").await;
    let http1 = connections(&s.quotagate, "tls", "http/1.1").await;
    eprintln!("1 + 200 checks from 32 clients: {h2} h2 connections, {http1} HTTP/1.1 connections");
    assert!((1..=4).contains(&h2), "{h2} h2 connections for 201 checks");
    assert_eq!(http1, 0);
    assert_eq!(connections(&s.quotagate, "tls", "none").await, 0);
    // The service's own count of checks agrees: every one was answered.
    let text = s.quotagate.metrics().await.expect("metrics answer");
    assert!(
        text.contains(r#"quotagate_decisions_total{outcome="allowed",plan="pro",rule="-"} 201"#),
        "{text}"
    );
}

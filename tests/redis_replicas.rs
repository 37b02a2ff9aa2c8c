//! Replicas sharing one Redis, through real processes: quotagate binaries, redis-server and
//! Traefik, all on 127.0.0.1. Limits use day and month windows so no boundary falls inside a run.

mod support;

use std::time::{Duration, Instant};

use support::{client, Backend, Quotagate, RedisServer, Traefik};

fn config(redis: &str, extra: &str) -> String {
    format!(
        r#"
[identity]
hash_key = "replicas-share-this-secret-key"

[plans.free]
limits = [{{ requests = 10, per = "day" }}]

[plans.monthly]
limits = [{{ requests = 7, per = "month" }}]

[tokens]
"monthly-token" = "monthly"

[store]
kind = "redis"

[store.redis]
url = "{redis}"
command_timeout = "2s"
{extra}
"#
    )
}

/// Sends `n` concurrent checks for `token`, spread round-robin over `urls`; returns how many
/// were allowed, and panics on any answer other than 200 or 429.
async fn burst(urls: &[String], token: &str, n: usize) -> usize {
    let http = client();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (http, url, token) = (http.clone(), urls[i % urls.len()].clone(), token.to_owned());
            tokio::spawn(
                async move { http.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() },
            )
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    allowed
}

async fn metric(q: &Quotagate, name: &str) -> Option<f64> {
    support::sample(&q.metrics().await?, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_redis_let_exactly_the_limit_through() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let replicas = [Quotagate::start(&cfg).await, Quotagate::start(&cfg).await, Quotagate::start(&cfg).await];
    let urls: Vec<String> = replicas.iter().map(|q| format!("{}/", q.url())).collect();
    for q in &replicas {
        q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    }
    assert_eq!(burst(&urls, "shared-token", 300).await, 10, "300 concurrent requests, limit 10 a day");
    assert_eq!(burst(&urls, "monthly-token", 60).await, 7, "a monthly limit is shared the same way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_alternating_between_two_traefiks_gets_the_limit_once() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), "");
    let backend = Backend::start().await;
    let (qa, qb) = (Quotagate::start(&cfg).await, Quotagate::start(&cfg).await);
    let ta = Traefik::builder(&format!("{}/", qa.url()), &backend.url()).start().await;
    let tb = Traefik::builder(&format!("{}/", qb.url()), &backend.url()).start().await;
    for q in [&qa, &qb] {
        q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    }
    let http = client();
    let mut allowed = 0;
    for i in 0..24 {
        let edge = if i % 2 == 0 { ta.url() } else { tb.url() };
        let r = http.get(format!("{edge}/api")).bearer_auth("roaming").send().await.unwrap();
        allowed += usize::from(r.status() == 200);
    }
    assert_eq!(allowed, 10);
    assert_eq!(backend.request_count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_redis_dies_the_breaker_opens_decisions_go_local_and_it_recovers() {
    let mut redis = RedisServer::start();
    let cfg = config(
        &redis.url(),
        "on_error = \"local\"\nbreaker_threshold = 3\nbreaker_reattempt = \"1s\"\nconnect_timeout = \"200ms\"",
    )
    .replace("command_timeout = \"2s\"", "command_timeout = \"100ms\"");
    let q = Quotagate::start(&cfg).await;
    q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    let http = client();
    let url = format!("{}/", q.url());
    for _ in 0..3 {
        assert_eq!(http.get(&url).bearer_auth("a").send().await.unwrap().status(), 200);
    }
    assert_eq!(redis.cli(&["DBSIZE"]), "1", "counted in Redis");

    redis.stop();
    // Load while Redis is gone, bounded in count and time: every check is answered, quickly,
    // from the local store (10 a day for token b).
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut allowed = 0;
    for _ in 0..40 {
        let t = Instant::now();
        let status = http.get(&url).bearer_auth("b").send().await.unwrap().status();
        slowest = slowest.max(t.elapsed());
        assert!(status == 200 || status == 429, "{status}");
        allowed += usize::from(status == 200);
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    assert_eq!(allowed, 10, "the local store enforces the limit meanwhile");
    // The command timeout is 100 ms: no check waits much longer, however Redis fails.
    assert!(slowest < Duration::from_millis(600), "slowest check took {slowest:?}");
    q.wait_for_log("breaker open", Duration::from_secs(5)).await;
    assert_eq!(metric(&q, "quotagate_store_up").await, Some(0.0));
    let ready = http.get(format!("{}/readyz", q.url())).send().await.unwrap();
    assert_eq!(ready.status(), 200, "on_error = local still serves");

    redis.resume();
    // Within a few breaker_reattempt periods a trial request finds Redis and closes the breaker.
    let q = &q;
    let recovered = support::poll(Duration::from_secs(15), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(&url).bearer_auth("c").send().await.ok()?;
            q.log().contains("breaker closed").then_some(())
        }
    })
    .await;
    assert!(recovered.is_some(), "the breaker closed again");
    assert_eq!(metric(q, "quotagate_store_up").await, Some(1.0));
    assert!(redis.cli(&["DBSIZE"]).parse::<u32>().unwrap() >= 1, "counting in Redis again");
}

#[tokio::test]
async fn on_error_deny_fails_closed_and_allow_fails_open() {
    // Nothing listens on this port: Redis is unreachable from the start.
    let nowhere = format!("redis://127.0.0.1:{}/0", support::free_port());
    let deny = Quotagate::start(&config(&nowhere, "on_error = \"deny\"\nbreaker_reattempt = \"2s\"")).await;
    let http = client();
    let r = http.get(format!("{}/", deny.url())).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let ready = http.get(format!("{}/readyz", deny.url())).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    deny.wait_for_log("cannot connect to redis", Duration::from_secs(5)).await;

    let allow = Quotagate::start(&config(&nowhere, "on_error = \"allow\"")).await;
    for _ in 0..15 {
        let r = http.get(format!("{}/", allow.url())).bearer_auth("t").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-ratelimit-remaining").is_none(), "nothing was checked");
    }
}

#[tokio::test]
async fn a_password_protected_redis_needs_the_right_password() {
    let redis = RedisServer::with_password("s3cret-pass");
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right");
    std::fs::write(&right, "s3cret-pass\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-pass\n").unwrap();

    let extra = format!("password_file = \"{}\"\non_error = \"deny\"", right.display());
    let q = Quotagate::start(&config(&redis.url(), &extra)).await;
    q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    let r = client().get(format!("{}/", q.url())).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(redis.cli(&["DBSIZE"]), "1");

    let extra = format!("password_file = \"{}\"\non_error = \"local\"", wrong.display());
    let q = Quotagate::start(&config(&redis.url(), &extra)).await;
    q.wait_for_log("cannot connect to redis", Duration::from_secs(10)).await;
    let log = q.log();
    assert!(log.to_lowercase().contains("password"), "the error says what is wrong:\n{log}");
    assert!(!log.contains("not-the-pass"), "the password leaked into the log");
    // With on_error = local it serves anyway.
    let r = client().get(format!("{}/", q.url())).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "9");

    // A password in the URL works too, and is never printed.
    let url = format!("redis://:s3cret-pass@127.0.0.1:{}/0", redis.port());
    let q = Quotagate::start(&config(&url, "")).await;
    q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    assert!(!q.log().contains("s3cret-pass"), "{}", q.log());
    assert!(q.log().contains(":***@127.0.0.1"), "{}", q.log());
}

/// Script calls Redis has served, from `INFO commandstats`.
fn script_calls(redis: &RedisServer) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    ["cmdstat_evalsha:", "cmdstat_eval:"]
        .iter()
        .filter_map(|name| {
            let line = stats.lines().find(|l| l.starts_with(name))?;
            line.split(['=', ',']).nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test]
async fn the_local_tier_answers_known_denials_without_a_round_trip() {
    let redis = RedisServer::start();
    let q = Quotagate::start(&config(&redis.url(), "local = true")).await;
    q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    let http = client();
    let url = format!("{}/", q.url());
    for _ in 0..10 {
        assert_eq!(http.get(&url).bearer_auth("busy").send().await.unwrap().status(), 200);
    }
    let before = script_calls(&redis);
    let mut retry_after = Vec::new();
    for _ in 0..20 {
        let r = http.get(&url).bearer_auth("busy").send().await.unwrap();
        assert_eq!(r.status(), 429);
        retry_after.push(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(script_calls(&redis) - before, 1, "only the first denial asked Redis");
    // Answers from memory keep counting down to the same instant.
    assert!(retry_after.windows(2).all(|w| w[1] <= w[0] && w[0] - w[1] <= 1), "{retry_after:?}");
    // Other callers still go to Redis, and are not held up by the memory of this one.
    assert_eq!(http.get(&url).bearer_auth("other").send().await.unwrap().status(), 200);
    assert_eq!(script_calls(&redis) - before, 2);
}

#[tokio::test]
async fn rediss_verifies_the_server_against_the_system_or_given_roots() {
    let (redis, ca) = RedisServer::with_tls();
    // SSL_CERT_FILE names the roots to trust, as for any rustls-native-certs program.
    let q = Quotagate::builder(&config(&redis.url(), "on_error = \"deny\""))
        .env("SSL_CERT_FILE", ca.to_str().unwrap())
        .start()
        .await;
    q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    let r = client().get(format!("{}/", q.url())).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(redis.cli(&["DBSIZE"]), "1");

    // Without the CA, the certificate is refused and nothing is sent in the clear.
    let q = Quotagate::builder(&config(&redis.url(), "on_error = \"deny\""))
        .env("SSL_CERT_FILE", "/dev/null")
        .start()
        .await;
    q.wait_for_log("cannot connect to redis", Duration::from_secs(10)).await;
    let r = client().get(format!("{}/", q.url())).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 503);
}

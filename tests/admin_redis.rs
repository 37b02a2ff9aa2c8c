//! Overrides on replicas sharing one Redis, through real processes: a change made on one
//! replica's admin API applies on every replica within a second, survives restarts, and is
//! refused whole (503) when Redis cannot take it. Limits are per day, so no window ends
//! within a run.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{client, free_port, poll, Quotagate, RedisCluster, RedisServer};

const ADMIN_TOKEN: &str = "replicas-admin-token-0123";
const CUSTOMER: &str = "replicated-customer-77";

/// A replica's config; `connection` is `url = "..."` or `cluster = [...]`.
fn config(connection: &str, admin_port: u16, token_file: &Path) -> String {
    format!(
        r#"
[server]
admin_listen = "127.0.0.1:{admin_port}"

[admin]
token_file = {token_file:?}

[identity]
hash_key = "replicas-share-this-secret-key"

[plans.free]
limits = [{{ requests = 100, per = "day" }}]

[plans.pro]
limits = [{{ requests = 1000, per = "day" }}]

[store]
kind = "redis"

[store.redis]
{connection}
command_timeout = "500ms"
"#,
        token_file = token_file.display().to_string(),
    )
}

/// A replica on `redis`, connected.
async fn replica(redis: &RedisServer, dir: &Path) -> Quotagate {
    replica_on(&format!("url = {:?}", redis.url()), dir).await
}

/// A replica on the Redis of `connection`, connected.
async fn replica_on(connection: &str, dir: &Path) -> Quotagate {
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let port = free_port();
    let q = Quotagate::builder(&config(connection, port, &token_file)).admin_port(port).start().await;
    q.wait_for_log("store: redis connected", Duration::from_secs(10)).await;
    q
}

/// The plan a check for `token` is answered with, and the quota its `X-RateLimit-Limit` says.
async fn plan_of(q: &Quotagate, token: &str) -> (String, String) {
    let a = client().get(format!("{}/api/items", q.url())).bearer_auth(token).send().await.unwrap();
    assert_eq!(a.status(), 200);
    let header = |name: &str| a.headers().get(name).map_or("", |v| v.to_str().unwrap()).to_owned();
    (header("x-quotagate-plan"), header("x-ratelimit-limit"))
}

/// Polls every replica until each answers `token` with `plan`; returns how long the last one
/// took, or panics after `within`.
async fn everywhere(
    replicas: &[Quotagate],
    token: &str,
    plan: &str,
    since: Instant,
    within: Duration,
) -> Duration {
    for (i, q) in replicas.iter().enumerate() {
        let left = within.saturating_sub(since.elapsed());
        let seen = poll(left, || async { (plan_of(q, token).await.0 == plan).then_some(()) }).await;
        assert!(seen.is_some(), "replica {i} does not answer {plan} within {within:?}:\n{}", q.log());
    }
    since.elapsed()
}

async fn admin(q: &Quotagate, method: reqwest::Method, body: Value) -> reqwest::Response {
    let url = format!("{}/v1/overrides", q.admin_url());
    client().request(method, url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_override_set_on_one_replica_applies_on_all_three_within_a_second() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let replicas = [
        replica(&redis, dir.path()).await,
        replica(&redis, dir.path()).await,
        replica(&redis, dir.path()).await,
    ];
    for q in &replicas {
        assert_eq!(plan_of(q, CUSTOMER).await, ("free".into(), "100".into()));
    }

    let a = admin(&replicas[0], reqwest::Method::PUT, json!({"token": CUSTOMER, "plan": "pro"})).await;
    assert_eq!(a.status(), 200);
    let set = Instant::now();
    assert_eq!(
        plan_of(&replicas[0], CUSTOMER).await,
        ("pro".into(), "1000".into()),
        "at once where it was set"
    );
    let took = everywhere(&replicas, CUSTOMER, "pro", set, Duration::from_secs(1)).await;
    eprintln!("the override applied on all three replicas {took:?} after it was set");
    for q in &replicas {
        assert_eq!(plan_of(q, CUSTOMER).await.1, "1000", "limited as pro");
    }
    // Redis holds the override by key, never by token.
    let stored = redis.cli(&["HGETALL", "quotagate:{overrides}"]);
    assert!(stored.contains("\"plan\":\"pro\""), "{stored}");
    assert!(!redis.cli(&["KEYS", "*"]).contains(CUSTOMER) && !stored.contains(CUSTOMER), "{stored}");

    // Listed on every replica, removed from another.
    for q in &replicas {
        let url = format!("{}/v1/overrides", q.admin_url());
        let listed: Value =
            client().get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["overrides"].as_array().map(Vec::len), Some(1), "{listed}");
    }
    let a = admin(&replicas[1], reqwest::Method::DELETE, json!({"token": CUSTOMER})).await;
    assert_eq!(a.status(), 200);
    let removed = Instant::now();
    everywhere(&replicas, CUSTOMER, "free", removed, Duration::from_secs(1)).await;
    let a = admin(&replicas[2], reqwest::Method::DELETE, json!({"token": CUSTOMER})).await;
    assert_eq!(a.status(), 404, "removed once, everywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overrides_survive_restarts_of_every_replica() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut first = replica(&redis, dir.path()).await;
    let mut second = replica(&redis, dir.path()).await;
    let a = admin(&first, reqwest::Method::PUT, json!({"token": CUSTOMER, "plan": "pro"})).await;
    assert_eq!(a.status(), 200);
    everywhere(std::slice::from_ref(&second), CUSTOMER, "pro", Instant::now(), Duration::from_secs(1)).await;

    assert!(first.terminate(Duration::from_secs(10)).success());
    let restarted = replica(&redis, dir.path()).await;
    everywhere(std::slice::from_ref(&restarted), CUSTOMER, "pro", Instant::now(), Duration::from_secs(1))
        .await;

    // With no replica left running, Redis still holds it for the next one.
    assert!(second.terminate(Duration::from_secs(10)).success());
    drop(restarted);
    let fresh = replica(&redis, dir.path()).await;
    everywhere(std::slice::from_ref(&fresh), CUSTOMER, "pro", Instant::now(), Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_redis_cannot_take_is_a_503_and_changes_nothing() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let q = replica(&redis, dir.path()).await;
    redis.stop();
    let a = admin(&q, reqwest::Method::PUT, json!({"token": CUSTOMER, "plan": "pro"})).await;
    assert_eq!(a.status(), 503);
    assert_eq!(a.headers().get("retry-after").unwrap(), "1");
    let problem: Value = a.json().await.unwrap();
    assert_eq!(problem["type"], "urn:quotagate:store-unavailable", "{problem}");
    redis.resume();
    let url = format!("{}/v1/overrides", q.admin_url());
    let listed: Value =
        client().get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["overrides"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overrides_work_on_a_redis_cluster_too() {
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    let connection = format!("cluster = [{}]", urls.join(", "));
    let dir = tempfile::tempdir().unwrap();
    let replicas = [replica_on(&connection, dir.path()).await, replica_on(&connection, dir.path()).await];
    let a = admin(&replicas[0], reqwest::Method::PUT, json!({"token": CUSTOMER, "plan": "pro"})).await;
    assert_eq!(a.status(), 200);
    everywhere(&replicas, CUSTOMER, "pro", Instant::now(), Duration::from_secs(1)).await;
    let a = admin(&replicas[1], reqwest::Method::DELETE, json!({"token": CUSTOMER})).await;
    assert_eq!(a.status(), 200);
    everywhere(&replicas, CUSTOMER, "free", Instant::now(), Duration::from_secs(1)).await;
}

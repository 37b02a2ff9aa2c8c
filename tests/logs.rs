//! What the service writes to its logs: JSON when asked, and never a token.

mod support;

use std::time::Duration;

use support::{client, Quotagate};

const CONFIG: &str =
    "[server]\nadmin_listen = \"127.0.0.1:0\"\n[plans.free]\nlimits = [{ requests = 1, per = \"day\" }]\n";

#[tokio::test]
async fn json_logs_at_debug_name_callers_by_fingerprint_only() {
    let config = CONFIG.replace("[server]\nadmin_listen = \"127.0.0.1:0\"\n", "");
    let q = Quotagate::builder(&config)
        .env("QUOTAGATE_LOG", "debug")
        .env("QUOTAGATE_LOG_FORMAT", "json")
        .start()
        .await;
    let http = client();
    for _ in 0..2 {
        http.get(q.url()).bearer_auth("very-secret-token-42").send().await.unwrap();
    }
    http.get(q.url()).bearer_auth("bad token with spaces").send().await.unwrap();
    q.wait_for_log("\"denied\"", Duration::from_secs(5)).await;
    let log = q.log();
    assert!(!log.contains("very-secret-token-42"), "a token leaked into the log:\n{log}");
    assert!(!log.contains("with spaces"), "a token leaked into the log:\n{log}");
    let mut saw_denial = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "denied" {
            saw_denial = true;
            assert!(v["caller"].as_str().unwrap().starts_with("tok:"), "{line}");
        }
    }
    assert!(saw_denial);
}

#[tokio::test]
async fn an_unknown_log_format_is_refused() {
    let err = Quotagate::builder(CONFIG)
        .env("QUOTAGATE_LOG_FORMAT", "xml")
        .try_start()
        .await
        .err()
        .expect("refused");
    assert_eq!(err.status.code(), Some(1));
    assert!(err.log.contains("QUOTAGATE_LOG_FORMAT must be pretty or json"), "{}", err.log);
}

#[tokio::test]
async fn healthcheck_finds_the_service_from_its_config_and_environment() {
    let plain = "[plans.free]\nlimits = [{ requests = 1, per = \"day\" }]\n";
    let q = Quotagate::start(plain).await;
    let config = q.config_path().to_str().unwrap().to_owned();
    let healthcheck = |listen: &str| {
        std::process::Command::new(support::quotagate::BINARY)
            .arg("healthcheck")
            .env("QUOTAGATE_CONFIG", &config)
            .env("QUOTAGATE_LISTEN", listen)
            .output()
            .unwrap()
    };
    // The same config and environment as the service (0.0.0.0 is asked on loopback).
    let ok = healthcheck(&format!("0.0.0.0:{}", q.port()));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let elsewhere = format!("127.0.0.1:{}", support::free_port());
    let bad = healthcheck(&elsewhere);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains(&format!("cannot connect to {elsewhere}")));
}

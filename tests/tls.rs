//! `server.tls` on real sockets: the check listener speaks TLS with ALPN (HTTP/2 or HTTP/1.1),
//! requires client certificates with `client_ca`, survives failed handshakes, and takes a
//! rotated certificate on reload. Certificates are made per test with rcgen (tests/support/certs.rs).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use quotagate::clock::Clock;
use quotagate::config::Config;
use quotagate::server::{self, AppState};
use support::certs::Pki;

const LIMITS: &str = r#"
[plans.free]
limits = [{ requests = 10, per = "day" }]
"#;

/// A service on real sockets with `[server.tls]` (and `client_ca` if `mtls`), its config file
/// in the PKI's folder so paths are relative and a reload re-reads them.
struct Tls {
    state: AppState,
    config_path: std::path::PathBuf,
    main: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Tls {
    async fn start(pki: &Pki, mtls: bool) -> Tls {
        let client_ca = if mtls { "client_ca = \"ca.pem\"\n" } else { "" };
        let config = format!(
            "[server]\nadmin_listen = \"127.0.0.1:0\"\n[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n{client_ca}{LIMITS}"
        );
        let config_path = pki.path("quotagate.toml");
        std::fs::write(&config_path, config).unwrap();
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let state = AppState::new(config, Clock::System);
        let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (main_addr, admin_addr) = (main.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let listeners = server::Listeners { check: main, admin: Some(admin), tickets: None };
        let server = tokio::spawn(server::run(state.clone(), listeners, shutdown, Duration::from_secs(5)));
        Tls { state, config_path, main: main_addr, admin: admin_addr, stop: Some(stop), server: Some(server) }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/api/items", self.main.port())
    }

    /// `quotagate_connections_accepted_total{transport="tls",alpn=ALPN}`, 0 if absent.
    async fn connections(&self, alpn: &str) -> u64 {
        let text = support::client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!(r#"quotagate_connections_accepted_total{{transport="tls",alpn="{alpn}"}}"#);
        support::sample(&text, &series).map_or(0, |v| v as u64)
    }

    /// Stops the service and checks it shut down cleanly.
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("shuts down").unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_tls_client_negotiates_h2_and_gets_ten_200s_then_a_429() {
    let pki = Pki::new("h2");
    let tls = Tls::start(&pki, false).await;
    let client = pki.client(false);
    for i in 0..10 {
        let r = client.get(tls.url()).bearer_auth("demo").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
        assert_eq!(r.headers()["x-ratelimit-remaining"], (9 - i).to_string().as_str());
        assert_eq!(r.headers()["x-quotagate-identity"].to_str().unwrap().len(), "tok:".len() + 8);
    }
    let r = client.get(tls.url()).bearer_auth("demo").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = client.get(tls.url()).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    // Twelve checks, one multiplexed connection.
    assert_eq!(tls.connections("h2").await, 1);

    // A client that speaks only HTTP/1.1 gets the same answers.
    let http1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = http1.get(tls.url()).bearer_auth("other").send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));
    let r = http1.get(tls.url()).bearer_auth("demo").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(tls.connections("http/1.1").await, 1);
    tls.stop().await;
}

#[tokio::test]
async fn a_failed_handshake_is_logged_and_the_listener_keeps_serving() {
    let pki = Pki::new("handshake");
    let tls = Tls::start(&pki, false).await;
    // Plain HTTP to the TLS port: the handshake fails.
    let plain = support::client().get(format!("http://{}/", tls.main)).send().await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
    // A client that does not trust the certificate gives up during the handshake.
    let stranger = Pki::new("stranger");
    assert!(stranger.client(false).get(tls.url()).bearer_auth("demo").send().await.is_err());
    // A client that connects and sends nothing does not block the others.
    let _idle = tokio::net::TcpStream::connect(tls.main).await.unwrap();
    let r = pki.client(false).get(tls.url()).bearer_auth("demo").send().await.unwrap();
    assert_eq!(r.status(), 200);
    tls.stop().await;
}

#[tokio::test]
async fn with_client_ca_only_clients_with_a_certificate_from_it_get_answers() {
    let pki = Pki::new("mtls");
    let tls = Tls::start(&pki, true).await;
    let without = pki.client(false).get(tls.url()).bearer_auth("demo").send().await;
    assert!(without.is_err(), "a client without a certificate got an answer: {without:?}");
    // A certificate from another CA is refused too.
    let other = Pki::new("other");
    let foreign = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(other.client_identity_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(foreign.get(tls.url()).bearer_auth("demo").send().await.is_err());

    let r = pki.client(true).get(tls.url()).bearer_auth("demo").send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2));
    tls.stop().await;
}

#[tokio::test]
async fn a_reload_takes_a_rotated_certificate_and_refuses_a_broken_one() {
    let pki = Pki::new("before");
    let tls = Tls::start(&pki, false).await;
    let old_client = pki.client(false);
    assert_eq!(old_client.get(tls.url()).bearer_auth("demo").send().await.unwrap().status(), 200);

    // The certificate is replaced by one from another CA, as a renewal with a new issuer would.
    let next = Pki::new("after");
    copy(&next.path("server.pem"), &pki.path("server.pem"));
    copy(&next.path("server.key"), &pki.path("server.key"));
    assert!(server::reload::reload(&tls.state, &tls.config_path, None));
    let new_client = next.client(false);
    let r = new_client.get(tls.url()).bearer_auth("demo").send().await.unwrap();
    assert_eq!(r.status(), 200, "new connections get the new certificate");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "8", "counters are kept");
    assert!(pki.client(false).get(tls.url()).send().await.is_err(), "the old CA no longer verifies it");

    // A broken certificate is refused; the one in force stays.
    std::fs::write(pki.path("server.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert!(!server::reload::reload(&tls.state, &tls.config_path, None));
    let r = next.client(false).get(tls.url()).bearer_auth("demo").send().await.unwrap();
    assert_eq!(r.status(), 200);
    tls.stop().await;
}

fn copy(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

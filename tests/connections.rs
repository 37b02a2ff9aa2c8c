//! Slow and idle clients against the real binary on real sockets: the header read timeout, the
//! idle timeouts, the bound on open connections and on TLS handshakes, and the metric and log
//! line each leaves. Timeouts are configured to a few hundred milliseconds, so nothing waits
//! for the defaults; every loop is bounded in count and time.

mod support;

use std::time::{Duration, Instant};

use support::certs::Pki;
use support::{client, free_port, poll, sample, Quotagate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PLAN: &str = "[plans.free]\nlimits = [{ requests = 1000, per = \"day\" }]\n";

/// A check as Traefik sends it, on a keep-alive connection.
const CHECK: &[u8] = b"GET / HTTP/1.1\r\nHost: quotagate\r\nAuthorization: Bearer conn-test\r\n\
X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /api/items\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n";

/// The service with `server` keys added to `[server]`, metrics and health on an admin port so
/// that the check listener's connections are the test's own.
async fn start(server: &str) -> Quotagate {
    let admin = free_port();
    let config = format!("[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n{server}\n{PLAN}");
    Quotagate::builder(&config).admin_port(admin).start().await
}

/// `quotagate_connections_closed_total{listener="check",reason=REASON}`, 0 if absent.
async fn closed(q: &Quotagate, reason: &str) -> u64 {
    let series = format!(r#"quotagate_connections_closed_total{{listener="check",reason="{reason}"}}"#);
    q.metrics().await.and_then(|m| sample(&m, &series)).map_or(0, |v| v as u64)
}

/// `quotagate_connections_open{listener="check"}`.
async fn open(q: &Quotagate) -> Option<u64> {
    q.metrics()
        .await
        .and_then(|m| sample(&m, r#"quotagate_connections_open{listener="check"}"#))
        .map(|v| v as u64)
}

/// Waits (at most `within`) for the server to close `stream`: true if it did. Data the server
/// sends first (a response) is read and ignored.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends one check on `stream` and reads its response head; the status code.
async fn check_on(stream: &mut TcpStream) -> u16 {
    stream.write_all(CHECK).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    // Bodies of 200s are empty: nothing else is left to read on the connection.
    assert!(head.contains("content-length: 0"), "{head}");
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_client_sending_its_request_head_a_byte_at_a_time_is_closed_after_the_header_read_timeout() {
    let q = start("header_read_timeout = \"400ms\"").await;
    let mut stream = TcpStream::connect(("127.0.0.1", q.port())).await.unwrap();
    let started = Instant::now();
    // A head that never ends: one byte every 50 ms, well inside any read timeout per byte.
    let head = b"GET / HTTP/1.1\r\nHost: quotagate\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
    let mut was_closed = false;
    for &byte in head.take(200) {
        if stream.write_all(&[byte]).await.is_err()
            || closed_by_server(&mut stream, Duration::from_millis(50)).await
        {
            was_closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(was_closed, "a slow client still holds its connection after {took:?}");
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(closed(&q, "header_read_timeout").await, 1);
    q.wait_for_log("request head did not arrive in time", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn idle_connections_are_closed_before_and_between_requests() {
    let q = start("header_read_timeout = \"300ms\"").await;
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(("127.0.0.1", q.port())).await.unwrap();
    // A keep-alive connection that served a check, then idles.
    let mut kept = TcpStream::connect(("127.0.0.1", q.port())).await.unwrap();
    assert_eq!(check_on(&mut kept).await, 200);
    let started = Instant::now();
    assert!(
        closed_by_server(&mut kept, Duration::from_secs(3)).await,
        "an idle keep-alive connection stays open"
    );
    // hyper's timer starts when the response is written, a little before the test reads it.
    assert!(started.elapsed() >= Duration::from_millis(100), "closed after {:?}", started.elapsed());
    assert!(closed_by_server(&mut silent, Duration::from_secs(3)).await, "a silent connection stays open");
    // Idle is told apart from slow: both count as idle, none as a slow request head.
    assert_eq!(closed(&q, "idle_timeout").await, 2);
    assert_eq!(closed(&q, "header_read_timeout").await, 0);
    q.wait_for_log("closed an idle connection", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn at_the_connection_bound_a_new_connection_is_closed_at_once_and_checks_work_again_when_a_slot_frees()
{
    // Long timeouts: the held connections stay until the test lets them go.
    let q = start("max_connections = 3\nheader_read_timeout = \"30s\"").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(("127.0.0.1", q.port())).await.unwrap());
    }
    let all_open = poll(Duration::from_secs(5), || async { (open(&q).await == Some(3)).then_some(()) }).await;
    assert!(all_open.is_some(), "the server did not see 3 open connections: {:?}", open(&q).await);

    let started = Instant::now();
    let mut extra = TcpStream::connect(("127.0.0.1", q.port())).await.unwrap();
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(2)).await,
        "a connection over the bound stays open"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "refused only after {:?}", started.elapsed());
    let url = format!("{}/api/items", q.url());
    let refused = client().get(&url).bearer_auth("conn-test").send().await;
    assert!(refused.is_err(), "a check over the bound got {refused:?}");
    assert!(closed(&q, "max_connections").await >= 2);
    q.wait_for_log("connection limit reached", Duration::from_secs(2)).await;

    // One held connection goes away: the next check gets its slot.
    drop(held.pop());
    let freed = poll(Duration::from_secs(5), || async { (open(&q).await == Some(2)).then_some(()) }).await;
    assert!(freed.is_some(), "the slot was not freed: {:?}", open(&q).await);
    let r = client().get(&url).bearer_auth("conn-test").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The service with `[server.tls]` from `pki` and `server` keys.
async fn start_tls(pki: &Pki, server: &str) -> Quotagate {
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let tls = format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let admin = free_port();
    let config = format!("[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n{server}\n{tls}{PLAN}");
    Quotagate::builder(&config).admin_port(admin).start().await
}

#[tokio::test]
async fn tls_handshakes_are_bounded_in_time_and_in_number() {
    let pki = Pki::new("conn");
    let q = start_tls(&pki, "tls_handshake_timeout = \"400ms\"\nmax_tls_handshakes = 1").await;
    // A client that connects and never says hello holds the one handshake slot...
    let mut stalled = TcpStream::connect(("127.0.0.1", q.port())).await.unwrap();
    let holding = poll(Duration::from_secs(5), || async { (open(&q).await == Some(1)).then_some(()) }).await;
    assert!(holding.is_some());
    // ...so another is closed at once...
    let mut second = TcpStream::connect(("127.0.0.1", q.port())).await.unwrap();
    assert!(closed_by_server(&mut second, Duration::from_millis(300)).await, "a second handshake was let in");
    assert_eq!(closed(&q, "max_tls_handshakes").await, 1);
    // ...until the stalled one times out.
    let started = Instant::now();
    assert!(closed_by_server(&mut stalled, Duration::from_secs(3)).await, "a stalled handshake stays open");
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
    assert_eq!(closed(&q, "tls_handshake_timeout").await, 1);
    q.wait_for_log("TLS handshakes in flight", Duration::from_secs(2)).await;
    q.wait_for_log("TLS handshake did not finish in time", Duration::from_secs(2)).await;

    let r = pki
        .client(false)
        .get(format!("https://127.0.0.1:{}/api/items", q.port()))
        .bearer_auth("t")
        .send()
        .await;
    assert_eq!(r.unwrap().status(), 200);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let pki = Pki::new("conn-h2");
    let q = start_tls(&pki, "idle_timeout = \"300ms\"").await;
    let http = pki.client(false);
    let url = format!("https://127.0.0.1:{}/api/items", q.port());
    let r = http.get(&url).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // The client keeps the connection in its pool; the server closes it.
    let gone =
        poll(Duration::from_secs(3), || async { (closed(&q, "idle_timeout").await == 1).then_some(()) })
            .await;
    assert!(gone.is_some(), "the idle HTTP/2 connection stays open");
    assert_eq!(open(&q).await, Some(0));
    // The client notices and dials again.
    let r = http.get(&url).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn connection_settings_out_of_range_are_refused_each_with_its_key() {
    let config = format!(
        "[server]\nheader_read_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\nmax_tls_handshakes = 100001\n{PLAN}"
    );
    let err = quotagate::config::Config::parse(&config, "bad.toml", None).unwrap_err().to_string();
    for expected in [
        "server.header_read_timeout: must be greater than 0s",
        "server.idle_timeout: invalid duration \"soon\"",
        "server.max_connections: must be between 1 and 1000000 (got 0)",
        "server.max_tls_handshakes: must be between 1 and 100000 (got 100001)",
    ] {
        assert!(err.contains(expected), "no {expected:?} in:\n{err}");
    }
    let good = quotagate::config::Config::parse(PLAN, "good.toml", None).unwrap();
    assert_eq!(good.server.connections, quotagate::config::Connections::default());
}

#[tokio::test]
async fn traefik_redials_when_quotagate_has_closed_its_idle_keep_alive_connections() {
    let q = start("header_read_timeout = \"300ms\"").await;
    let backend = support::Backend::start().await;
    let traefik = support::Traefik::builder(&format!("{}/", q.url()), &backend.url())
        .trust_forward_header(false)
        .start()
        .await;
    let url = format!("{}/api/items", traefik.url());
    for round in 0..3 {
        let r = client().get(&url).bearer_auth("conn-test").send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        // Traefik keeps the connection idle in its pool; quotagate closes it.
        let closed_now = poll(Duration::from_secs(3), || async {
            (closed(&q, "idle_timeout").await > round).then_some(())
        })
        .await;
        assert!(closed_now.is_some(), "round {round}: the idle connection was not closed");
    }
    assert_eq!(backend.request_count(), 3);
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_dropped() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let pki = Pki::new("conn-ping");
    let q =
        start_tls(&pki, "http2_keep_alive_interval = \"200ms\"\nhttp2_keep_alive_timeout = \"200ms\"").await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", q.port())).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut stream =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface and an empty SETTINGS frame; then the peer goes silent: it reads
    // nothing more, so the server's pings are never answered.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    stream.flush().await.unwrap();
    let dropped = poll(Duration::from_secs(5), || async {
        (closed(&q, "keep_alive_timeout").await == 1).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "a silent HTTP/2 peer is kept");
    assert_eq!(open(&q).await, Some(0));
    q.wait_for_log("stopped answering pings", Duration::from_secs(2)).await;
}

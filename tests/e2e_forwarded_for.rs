//! What Traefik 3.7 forwards to forwardAuth in `X-Forwarded-For`, and so which client IP
//! quotagate counts, for each combination of forwardAuth `trustForwardHeader` and the
//! entrypoint's `forwardedHeaders.trustedIPs` (and PROXY protocol). The README's advice on
//! `identity.client_ip` rests on these results.
//!
//! The client connects from 127.0.0.5 and sends `X-Forwarded-For: 203.0.113.7`, as a load
//! balancer in front of Traefik would for its client 203.0.113.7 (or as a client forging it
//! would). Traefik connects to its auth servers from 127.0.0.1, so `127.0.0.1` in an answer
//! means quotagate fell back to its peer: every client would share Traefik's budget.
//!
//! One Traefik serves three routers: `/d1` and `/d2` go through quotagates counting by client
//! IP with `depth = 1` and `depth = 2`, `/raw` through a recording auth server that shows the
//! raw header. The backend receives quotagate's `X-Quotagate-Identity` (`ip:ADDRESS`).

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use support::{Backend, Quotagate, Traefik};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));

fn config(depth: u32) -> String {
    format!(
        r#"
[identity]
missing = "ip"
[identity.client_ip]
depth = {depth}
[defaults]
anonymous_plan = "anonymous"
[plans.free]
limits = [{{ requests = 1000, per = "day" }}]
[plans.anonymous]
limits = [{{ requests = 1000, per = "day" }}]
"#
    )
}

struct Stack {
    depth1: Quotagate,
    depth2: Quotagate,
    recorder: Backend,
    backend: Backend,
    traefik: Traefik,
}

/// Where Traefik stands: what its entrypoint trusts.
#[derive(Clone, Copy)]
enum Entrypoint {
    /// No `forwardedHeaders` options: client `X-Forwarded-*` headers are removed.
    Default,
    /// `forwardedHeaders.trustedIPs: [127.0.0.5/32]`: the client is a trusted proxy.
    TrustedIps,
    /// `proxyProtocol.trustedIPs: [127.0.0.5/32]`: the client sends a PROXY protocol header.
    ProxyProtocol,
}

/// The dynamic config: `/d1` -> quotagate depth 1 (the harness's own router), `/d2` -> depth 2,
/// `/raw` -> the recorder, every middleware with `trust`.
fn traefik(
    s: (&Quotagate, &Quotagate, &Backend, &Backend),
    trust: Option<bool>,
) -> support::traefik::Builder {
    let (depth1, depth2, recorder, backend) = s;
    let trust_line = trust.map(|t| format!("trustForwardHeader: {t}\n")).unwrap_or_default();
    let indented = trust_line.trim_end().replace('\n', "\n      ");
    let mut builder = Traefik::builder(&format!("{}/", depth1.url()), &backend.url())
        .auth_response_headers(["X-Quotagate-Identity"])
        .routers_yaml(
            "d2:\n  rule: \"PathPrefix(`/d2`)\"\n  entryPoints: [web]\n  service: backend\n  middlewares: [depth2]\n\
             raw:\n  rule: \"PathPrefix(`/raw`)\"\n  entryPoints: [web]\n  service: backend\n  middlewares: [recorder]\n",
        )
        .middlewares_yaml(&format!(
            "depth2:\n  forwardAuth:\n    address: \"{}/\"\n    authResponseHeaders: [X-Quotagate-Identity]\n    {indented}\n\
             recorder:\n  forwardAuth:\n    address: \"{}/\"\n    {indented}\n",
            depth2.url(),
            recorder.url()
        ));
    if let Some(trust) = trust {
        builder = builder.trust_forward_header(trust);
    }
    builder
}

async fn stack(entrypoint: Entrypoint) -> Stack {
    let depth1 = Quotagate::start(&config(1)).await;
    let depth2 = Quotagate::start(&config(2)).await;
    let recorder = Backend::start().await;
    let backend = Backend::start().await;
    let mut builder = traefik((&depth1, &depth2, &recorder, &backend), Some(false));
    builder = match entrypoint {
        Entrypoint::Default => builder,
        Entrypoint::TrustedIps => {
            builder.entrypoint_yaml("forwardedHeaders:\n  trustedIPs: [\"127.0.0.5/32\"]\n")
        }
        Entrypoint::ProxyProtocol => {
            builder.entrypoint_yaml("proxyProtocol:\n  trustedIPs: [\"127.0.0.5/32\"]\n")
        }
    };
    let traefik = builder.start().await;
    Stack { depth1, depth2, recorder, backend, traefik }
}

impl Stack {
    async fn set_trust(&mut self, trust: Option<bool>) {
        let builder = traefik((&self.depth1, &self.depth2, &self.recorder, &self.backend), trust);
        self.traefik.reconfigure(builder).await;
    }

    /// A request from 127.0.0.5 to `path` with a client `X-Forwarded-For` (and forged
    /// `X-Forwarded-Uri`); returns the backend's copy of it.
    async fn send(&self, path: &str) -> support::Recorded {
        let http = reqwest::Client::builder()
            .no_proxy()
            .local_address(CLIENT)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = http
            .get(format!("{}{path}", self.traefik.url()))
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-uri", "/forged")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        self.backend.last_request()
    }

    /// (raw `X-Forwarded-For` at forwardAuth, its `X-Forwarded-Uri`, quotagate's client IP at
    /// depth 1, at depth 2).
    async fn observe(&self) -> (String, String, String, String) {
        self.send("/raw/x").await;
        let raw = self.recorder.last_request();
        let d1 = self.send("/d1/x").await.header("x-quotagate-identity").unwrap().to_owned();
        let d2 = self.send("/d2/x").await.header("x-quotagate-identity").unwrap().to_owned();
        (
            raw.header("x-forwarded-for").unwrap().to_owned(),
            raw.header("x-forwarded-uri").unwrap().to_owned(),
            d1,
            d2,
        )
    }
}

fn seen(xff: &str, uri: &str, d1: &str, d2: &str) -> (String, String, String, String) {
    (xff.to_owned(), uri.to_owned(), d1.to_owned(), d2.to_owned())
}

#[tokio::test]
async fn on_a_default_entrypoint_quotagate_sees_the_address_that_connected_to_traefik_whatever_the_trust() {
    let mut s = stack(Entrypoint::Default).await;
    // The entrypoint removes the client's X-Forwarded-* first, so trust changes nothing; and
    // with one address in the header, depth 2 falls back to Traefik's own address.
    let expected = seen("127.0.0.5", "/raw/x", "ip:127.0.0.5", "ip:127.0.0.1");
    assert_eq!(s.observe().await, expected, "trustForwardHeader: false");
    s.set_trust(Some(true)).await;
    assert_eq!(s.observe().await, expected, "trustForwardHeader: true");
    s.set_trust(None).await;
    assert_eq!(s.observe().await, expected, "trustForwardHeader unset");
}

#[tokio::test]
async fn behind_a_trusted_proxy_only_trust_forward_header_passes_its_x_forwarded_for_and_its_other_headers_too(
) {
    let mut s = stack(Entrypoint::TrustedIps).await;
    // Trust off: forwardAuth sends only the proxy's address. Every client behind the proxy is
    // one caller at depth 1, and Traefik's own address at depth 2.
    assert_eq!(s.observe().await, seen("127.0.0.5", "/raw/x", "ip:127.0.0.5", "ip:127.0.0.1"), "trust false");
    s.set_trust(None).await;
    assert_eq!(s.observe().await, seen("127.0.0.5", "/raw/x", "ip:127.0.0.5", "ip:127.0.0.1"), "trust unset");
    // Trust on: the proxy's header arrives with the proxy's address appended, so depth 2 is the
    // client the proxy saw. But X-Forwarded-Uri (and -Method, -Host) come from the proxy as
    // well: one that passes a client's copy through lets the client choose the path.
    s.set_trust(Some(true)).await;
    assert_eq!(
        s.observe().await,
        seen("203.0.113.7, 127.0.0.5", "/forged", "ip:127.0.0.5", "ip:203.0.113.7")
    );
}

#[tokio::test]
async fn with_proxy_protocol_traefik_forwards_the_client_address_with_trust_off() {
    let s = stack(Entrypoint::ProxyProtocol).await;
    // A load balancer speaking PROXY protocol v1 for its client 198.51.100.9.
    let request = format!(
        "PROXY TCP4 198.51.100.9 127.0.0.1 40000 {port}\r\n\
         GET /d1/x HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n",
        port = s.traefik.port()
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((CLIENT, 0).into()).unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], s.traefik.port()).into()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(s.backend.last_request().header("x-quotagate-identity"), Some("ip:198.51.100.9"));
}

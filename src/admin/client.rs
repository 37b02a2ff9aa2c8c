//! A client of the admin API, for `quotagate admin ...`: one call, over plain HTTP/1.1 (the
//! admin listener speaks nothing else), with hyper's own client connection, which the tree
//! already builds, rather than a second HTTP stack. Secrets stay out of what it prints: the
//! admin token is sent only in `Authorization`, API tokens only in JSON bodies.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

/// How long one call may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: a page of a thousand overrides is well below it.
const MAX_ANSWER: usize = 4 << 20;

/// What the admin API answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as shown to an operator: pretty JSON, or a problem's status and detail.
    pub fn describe(&self) -> String {
        let json: Option<serde_json::Value> = serde_json::from_str(&self.body).ok();
        match json {
            Some(v) if self.is_success() => {
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| self.body.clone())
            }
            Some(v) if v["detail"].is_string() => {
                format!("{} {}", self.status, v["detail"].as_str().unwrap_or(""))
            }
            _ => format!("{} {}", self.status, self.body.trim()),
        }
    }
}

/// Calls `method path` (`/v1/overrides?limit=10`) of the admin API at `base` (`http://HOST:PORT`,
/// optionally with a path prefix) with the admin token, sending `body` as JSON if given.
pub async fn call(
    base: &str,
    admin_token: &str,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Answer, String> {
    let base: Uri = base.parse().map_err(|_| format!("not a URL: {base:?} (expected http://HOST:PORT)"))?;
    if base.scheme_str() != Some("http") {
        return Err(format!("{base}: the admin listener speaks plain HTTP (expected http://HOST:PORT)"));
    }
    let authority = base.authority().ok_or_else(|| format!("{base}: no host"))?.clone();
    let prefix = base.path().trim_end_matches('/');
    let request = Request::builder()
        .method(method)
        .uri(format!("{prefix}{path}"))
        .header(HOST, authority.as_str())
        .header(AUTHORIZATION, format!("Bearer {admin_token}"))
        .header(CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .map_err(|_| "the admin token is not a valid header value".to_owned())?;
    let port = authority.port_u16().unwrap_or(80);
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|e| format!("{authority}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        Ok(Answer { status, body: String::from_utf8_lossy(&bytes).into_owned() })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{authority} did not answer within {TIMEOUT:?}"))?
}

//! Concurrency tickets from the backend's side: [`close`] hands a ticket back to quotagate's
//! tickets listener (`POST /v1/tickets/close`), and [`closing_backend`] is a [`Backend`] that
//! works a while on each request and then closes the ticket Traefik passed it, as the README
//! tells backends to.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;

use super::{client, Backend};

/// The header that carries a ticket, from quotagate's 200 through Traefik to the backend.
pub const TICKET_HEADER: &str = "x-quotagate-ticket";

/// The header in which a [`closing_backend`] tells the client the status of its close, `none`
/// when the request carried no ticket. The close's answer is the response body.
pub const CLOSE_STATUS_HEADER: &str = "x-test-close-status";

/// Where and how a backend closes its tickets.
#[derive(Clone, Debug)]
pub struct Closer {
    /// quotagate's tickets listener: `http://127.0.0.1:PORT`, no trailing slash.
    pub tickets_url: String,
    /// The bearer token of `server.tickets_token_file`, if one is configured.
    pub token: Option<String>,
    /// The cost to report with each close, if any.
    pub cost: Option<u64>,
}

/// What quotagate answered a close: the status, and the body if it is JSON (else `Null`).
#[derive(Clone, Debug)]
pub struct CloseAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: serde_json::Value,
}

/// Closes `ticket` at `closer.tickets_url` with `closer.cost`. `Err` only if no answer came.
pub async fn close(closer: &Closer, ticket: &str) -> Result<CloseAnswer, reqwest::Error> {
    let mut body = serde_json::json!({ "ticket": ticket });
    if let Some(cost) = closer.cost {
        body["cost"] = cost.into();
    }
    let mut request = client().post(format!("{}/v1/tickets/close", closer.tickets_url)).json(&body);
    if let Some(token) = &closer.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok(CloseAnswer { status, content_type, body })
}

/// A backend that spends `work` on each request, then closes the request's ticket (if it
/// carries one) with `closer`, and answers 200 with the close's status in
/// [`CLOSE_STATUS_HEADER`] and its body as the body; 502 if quotagate did not answer the close.
/// The ticket is closed before the response is ready, so a client holding its answer knows the
/// slot is free again, and the backend's in-flight count covers the work and the close.
pub async fn closing_backend(work: Duration, closer: Closer) -> Backend {
    Backend::serving(move |request| {
        let closer = closer.clone();
        async move {
            tokio::time::sleep(work).await;
            let Some(ticket) = request.header(TICKET_HEADER) else {
                return answer(200, "none", String::new());
            };
            match close(&closer, ticket).await {
                Ok(closed) => answer(200, &closed.status.to_string(), closed.body.to_string()),
                Err(e) => answer(502, "failed", format!("the close got no answer: {e}")),
            }
        }
    })
    .await
}

fn answer(status: u16, close_status: &str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(CLOSE_STATUS_HEADER, close_status)
        .body(Body::from(body))
        .expect("a status, a token-safe header value and a body make a valid response")
}

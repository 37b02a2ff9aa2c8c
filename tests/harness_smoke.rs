//! The end-to-end harness checked on its own: a real Traefik in front of a recording backend,
//! with forwardAuth to a stand-in auth server defined here, not quotagate. If these fail, the
//! harness or the Traefik install is broken, not the service.

mod support;

use axum::body::Body;
use axum::http::{header, Response, StatusCode};
use support::{client, Backend, Recorded, Traefik};

const PROBLEM: &str =
    r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"10 requests per 1m"}"#;

/// Denies every path under `/limited` the way quotagate does; allows the rest with the
/// remaining quota in a header for Traefik to copy onto the request.
fn stand_in_auth(request: &Recorded) -> Response<Body> {
    let uri = request.header("x-forwarded-uri").unwrap_or("/");
    if uri.starts_with("/limited") {
        Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header(header::RETRY_AFTER, "17")
            .header("RateLimit-Policy", r#""per-token";q=10;w=60"#)
            .header("RateLimit", r#""per-token";r=0;t=17"#)
            .header("X-RateLimit-Limit", "10")
            .header("X-RateLimit-Remaining", "0")
            .header("X-RateLimit-Reset", "17")
            .header(header::CONTENT_TYPE, "application/problem+json")
            .body(Body::from(PROBLEM))
            .expect("a valid response")
    } else {
        Response::builder()
            .header("X-RateLimit-Limit", "10")
            .header("X-RateLimit-Remaining", "9")
            .header("X-Not-Listed", "stays with auth")
            .body(Body::from("allowed"))
            .expect("a valid response")
    }
}

async fn setup() -> (Backend, Backend, Traefik) {
    let auth = Backend::responding(stand_in_auth).await;
    let backend = Backend::start().await;
    let traefik = Traefik::builder(&format!("{}/check", auth.url()), &backend.url())
        .auth_response_headers(["X-RateLimit-Limit", "X-RateLimit-Remaining"])
        .start()
        .await;
    (auth, backend, traefik)
}

#[tokio::test]
async fn a_429_from_auth_reaches_the_client_unchanged_and_the_backend_sees_nothing() {
    let (auth, backend, traefik) = setup().await;

    let response = client()
        .post(format!("{}/limited/items?page=2", traefik.url()))
        .body("payload")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = response.headers().clone();
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(get("retry-after").as_deref(), Some("17"));
    assert_eq!(get("ratelimit-policy").as_deref(), Some(r#""per-token";q=10;w=60"#));
    assert_eq!(get("ratelimit").as_deref(), Some(r#""per-token";r=0;t=17"#));
    assert_eq!(get("x-ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(get("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(get("x-ratelimit-reset").as_deref(), Some("17"));
    assert_eq!(get("content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(response.text().await.unwrap(), PROBLEM);

    assert_eq!(backend.request_count(), 0, "a denied request must not reach the backend");
    assert_eq!(auth.request_count(), 1, "one auth call per request, and no readiness probe");
}

#[tokio::test]
async fn an_allowed_request_reaches_the_backend_with_the_listed_auth_headers_only() {
    let (_auth, backend, traefik) = setup().await;

    let response = client()
        .get(format!("{}/v1/items?page=2&q=a%20b", traefik.url()))
        // A client cannot forge a header that authResponseHeaders lists: Traefik replaces it.
        .header("X-RateLimit-Remaining", "999")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), support::backend::BACKEND_BODY);
    let seen = backend.last_request();
    assert_eq!(backend.request_count(), 1);
    assert_eq!(seen.uri, "/v1/items?page=2&q=a%20b");
    assert_eq!(seen.header("x-ratelimit-remaining"), Some("9"));
    assert_eq!(seen.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(seen.header("x-not-listed"), None);
}

#[tokio::test]
async fn auth_gets_a_get_to_its_own_path_describing_the_original_request() {
    let (auth, _backend, traefik) = setup().await;

    let response = client()
        .delete(format!("{}/v1/items/7?force=true", traefik.url()))
        .header("Authorization", "Bearer t0ken")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let check = auth.last_request();
    assert_eq!(check.method, "GET");
    assert_eq!(check.uri, "/check", "Traefik calls the address as configured, without the request path");
    assert_eq!(check.header("x-forwarded-method"), Some("DELETE"));
    assert_eq!(check.header("x-forwarded-uri"), Some("/v1/items/7?force=true"));
    assert_eq!(check.header("x-forwarded-proto"), Some("http"));
    assert_eq!(check.header("x-forwarded-host"), Some(format!("127.0.0.1:{}", traefik.port()).as_str()));
    assert_eq!(check.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(check.header("authorization"), Some("Bearer t0ken"));
    assert!(check.body.is_empty(), "the request body is not forwarded to auth");
}

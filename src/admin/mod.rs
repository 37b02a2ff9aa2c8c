//! The admin API: runtime controls for operators, served on `server.admin_listen` only (never
//! on the check listener) and only while the config has `[admin]` ([`crate::config::Admin`]).
//! Every call needs the admin bearer token ([`auth`]); overrides are [`overrides`]'s, usage,
//! reset and explain live beside them. Like `server`, this module speaks axum.
//!
//! What every endpoint shares is here: API tokens travel in JSON bodies only ([`JsonBody`],
//! [`token_key`]) and are named in answers and logs by fingerprint; every error is
//! problem+json (RFC 9457, [`ApiError`]) naming the field at fault, and no input makes an
//! endpoint answer 500; every call is counted in `quotagate_admin_requests_total{endpoint,
//! status}`, and every change is logged at info by its handler.

pub mod auth;
pub mod client;
pub mod explain;
pub mod overrides;
pub mod usage;

use axum::body::Body;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::config;
use crate::identity::{Identity, Key};
use crate::overrides::key_hex;
use crate::server::AppState;

/// The largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// The admin API's routes, each counted and behind the admin token: merged into the admin
/// listener's router (`server::admin_router`).
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/overrides", put(overrides::put).get(overrides::list).delete(overrides::delete))
        .route("/v1/usage", post(usage::usage))
        .route("/v1/reset", post(usage::reset))
        .route("/v1/explain", post(explain::explain))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .route_layer(middleware::from_fn_with_state(state.clone(), count))
}

/// Counts each call by endpoint (method and route) and status.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = match *req.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        // Any other method is answered 405; its name is the client's, so it is no label.
        _ => "OTHER",
    };
    let route = req.extensions().get::<MatchedPath>().map_or("-", MatchedPath::as_str);
    let endpoint = format!("{method} {route}");
    let response = next.run(req).await;
    state.metrics.admin_request(endpoint, response.status().as_u16());
    response
}

/// An error answer of the admin API: `application/problem+json` with `type`, `title`,
/// `status` and `detail`, and for bad input the `field` at fault (a key path such as
/// `limits[0].requests`) and every problem found (`errors`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    field: Option<String>,
    errors: Vec<config::Problem>,
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, kind, detail: detail.into(), field: None, errors: Vec::new(), challenge: None }
    }

    /// 400: `field` (a key path; `(body)` for the body as a whole) is wrong, as `detail` says.
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        let (field, detail) = (field.into(), detail.into());
        ApiError::invalid(vec![config::Problem { key: field, message: detail }])
    }

    /// 400 for every problem of `problems` (at least one), the first naming `field`.
    pub fn invalid(problems: Vec<config::Problem>) -> ApiError {
        let detail = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "urn:quotagate:invalid-request", detail);
        e.field = problems.first().map(|p| p.key.clone());
        e.errors = problems;
        e
    }

    /// 401, with the `WWW-Authenticate` challenge `challenge`.
    pub fn unauthorized(detail: impl Into<String>, challenge: &'static str) -> ApiError {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "urn:quotagate:admin-unauthorized", detail);
        e.challenge = Some(challenge);
        e
    }

    /// 404: nothing there.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "urn:quotagate:not-found", detail)
    }

    /// 409: the request is valid, but the state of the service refuses it (a bound is reached).
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "urn:quotagate:conflict", detail)
    }

    /// 503: the store cannot take the call now; nothing changed (`Retry-After: 1`).
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "urn:quotagate:store-unavailable", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": self.kind,
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(field) = &self.field {
            body["field"] = json!(field);
            body["errors"] =
                self.errors.iter().map(|p| json!({"field": p.key, "detail": p.message})).collect();
        }
        let mut res = Response::new(Body::from(body.to_string()));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(challenge) = self.challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// A 200 with a JSON body.
pub fn answer(body: &serde_json::Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A JSON object as request body, of type `T`, at most [`MAX_BODY`] bytes. Anything else is a 400
/// naming the field at fault; string values are left out of the messages, since one may be
/// a token in the wrong place.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| {
            ApiError::bad_request("(body)", format!("must be JSON of at most {MAX_BODY} bytes"))
        })?;
        if !bytes.trim_ascii_start().starts_with(b"{") {
            return Err(ApiError::bad_request("(body)", "must be a JSON object"));
        }
        let refused = |field: Option<String>, e: serde_json::Error| {
            let field = field.unwrap_or_else(|| "(body)".to_owned());
            ApiError::bad_request(field, config::without_strings(&e.to_string()))
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| refused(config::field_of(e.path()), e.into_inner()))?;
        de.end().map_err(|e| refused(None, e))?;
        Ok(JsonBody(value))
    }
}

/// The key of `token`, an API token given in a body's `field`: what counters, overrides and
/// fingerprints are made from. A token no request could present (empty, too long, not
/// visible ASCII) is a 400, as it is in `[tokens]`.
pub fn token_key(identity: &Identity, field: &str, token: &str) -> Result<Key, ApiError> {
    match config::unpresentable(identity, token) {
        Some(msg) => Err(ApiError::bad_request(field, msg)),
        None => Ok(identity.hasher.token(token.as_bytes())),
    }
}

/// How answers name a caller: `"fingerprint"` (8 hex digits, as logs and headers show it)
/// and `"key"` (the whole keyed hash, 32 hex digits: unique, and what paging and `DELETE`
/// by key take).
pub fn named(key: Key) -> serde_json::Value {
    json!({ "fingerprint": key.fingerprint().to_string(), "key": key_hex(key) })
}

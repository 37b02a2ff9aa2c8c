//! The admin bearer token: every admin call carries `Authorization: Bearer <token>`, checked
//! against the hash of `[admin] token_file` in the config in force (so a rotated token file
//! applies at the reload its change triggers). Anything else is a 401 with a `Bearer`
//! challenge. The token is never logged; refusals are, at info, with the peer's address.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::server::AppState;

const CHALLENGE: &str = "Bearer realm=\"quotagate-admin\"";
const INVALID: &str = "Bearer realm=\"quotagate-admin\", error=\"invalid_token\"";

/// Lets a call through only with the admin token; 404 while the config has no `[admin]`.
pub async fn require(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let admits = match &state.config.load().admin {
        None => {
            return ApiError::not_found("the admin API is off (set [admin] token_file)").into_response();
        }
        Some(admin) => bearer(req.headers()).map(|token| admin.admits(token)),
    };
    if admits == Some(true) {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let (detail, challenge) = match admits {
        None => ("an admin call needs Authorization: Bearer <the admin token>", CHALLENGE),
        Some(_) => ("wrong admin token", INVALID),
    };
    tracing::info!(peer = ?peer, method = %req.method(), path = %req.uri().path(), "admin: call refused: {detail}");
    ApiError::unauthorized(detail, challenge).into_response()
}

/// The token of the one `Authorization: Bearer` header (scheme in any case); `None` if there
/// is none, or more than one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_bearer_token_is_read_from_exactly_one_authorization_header() {
        assert_eq!(bearer(&headers(&["Bearer abc"])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&["bearer   abc "])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&[])), None);
        assert_eq!(bearer(&headers(&["Basic abc"])), None);
        assert_eq!(bearer(&headers(&["Bearer "])), None);
        assert_eq!(bearer(&headers(&["Bearer"])), None);
        assert_eq!(bearer(&headers(&["Bearer abc", "Bearer abc"])), None, "two headers are refused");
    }
}

//! The request Traefik asks about, as quotagate sees it: method, host, path and query from the
//! `X-Forwarded-*` headers forwardAuth sets, falling back to the check request itself when a
//! header is absent (a direct call, or a proxy that does not set it).
//!
//! The path is normalised before rules see it (percent-decoding, `.` and `..` segments, repeated
//! slashes) so `/api/%73ummarize` or `/docs/../api/summarize` cannot slip past a rule that the
//! backend would route the same way.

use std::borrow::Cow;

use http::header::HOST;
use http::{HeaderMap, HeaderName};
use percent_encoding::percent_decode_str;

// Looked up by parsed name: a `&str` lookup would parse and lowercase-check the name each time.
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The forwarded request: borrowed from the check request's headers where possible.
#[derive(Debug)]
pub struct Forwarded<'a> {
    pub method: &'a str,
    /// Host without port, as sent (hosts match case-insensitively).
    pub host: &'a str,
    /// The normalised path, without query.
    pub path: Cow<'a, str>,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

impl<'a> Forwarded<'a> {
    /// Reads the forwarded request from `headers`; `method` and `uri` are the check request's
    /// own, used when the `X-Forwarded-*` headers are missing.
    pub fn from_headers(headers: &'a HeaderMap, method: &'a str, uri: &'a str) -> Forwarded<'a> {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let method = text(&X_FORWARDED_METHOD).unwrap_or(method);
        let host = text(&X_FORWARDED_HOST).or_else(|| text(&HOST)).unwrap_or("");
        let host = strip_port(host);
        let uri = text(&X_FORWARDED_URI).unwrap_or(uri);
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        Forwarded { method, host, path: normalize_path(path), query }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Decodes percent-escapes and resolves `.`, `..` and empty segments; borrows when the path is
/// already normal.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let needs_work = path.is_empty()
        || !path.starts_with('/')
        || path.contains('%')
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..");
    if !needs_work {
        return Cow::Borrowed(path);
    }
    let mut segments: Vec<Cow<'_, str>> = Vec::new();
    for raw in path.split('/') {
        let seg = percent_decode_str(raw).decode_utf8_lossy();
        match seg.as_ref() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-method", "POST".parse().unwrap());
        h.insert("x-forwarded-host", "api.example.com:443".parse().unwrap());
        h.insert("x-forwarded-uri", "/api/summarize?api_key=abc&x=1".parse().unwrap());
        let f = Forwarded::from_headers(&h, "GET", "/");
        assert_eq!(f.method, "POST");
        assert_eq!(f.host, "api.example.com");
        assert_eq!(f.path, "/api/summarize");
        assert_eq!(f.query, Some("api_key=abc&x=1"));
    }

    #[test]
    fn falls_back_to_the_check_request() {
        let mut h = HeaderMap::new();
        h.insert("host", "localhost:8080".parse().unwrap());
        let f = Forwarded::from_headers(&h, "GET", "/v1/items?q=1");
        assert_eq!(
            (f.method, f.host, f.path.as_ref(), f.query),
            ("GET", "localhost", "/v1/items", Some("q=1"))
        );
    }

    #[test]
    fn normalises_tricky_paths() {
        assert!(matches!(normalize_path("/api/v1"), Cow::Borrowed(_)));
        assert_eq!(normalize_path("/api/%73ummarize"), "/api/summarize");
        assert_eq!(normalize_path("/docs/../api/summarize"), "/api/summarize");
        assert_eq!(normalize_path("//api///summarize/./"), "/api/summarize/");
        assert_eq!(normalize_path("/../../etc"), "/etc");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/%ff"), "/\u{fffd}");
    }

    #[test]
    fn strips_ports_but_not_ipv6_colons() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("example.com:80"), "example.com");
    }
}

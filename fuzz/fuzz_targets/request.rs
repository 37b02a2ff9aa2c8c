//! The forwarded request: `Forwarded::from_headers` on any check request, `normalize_path` on
//! any path. Input: a request head (see `quotagate_fuzz::Head`).
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use quotagate::request::{normalize_path, Forwarded};
use quotagate_fuzz::{rewrite, Head};

fuzz_target!(|data: &[u8]| {
    let head = Head::parse(data);
    let (path, _) = head.uri.split_once('?').unwrap_or((&head.uri, ""));
    assert_normal(&normalize_path(path));

    let f = Forwarded::from_headers(&head.headers, &head.method, &head.uri);
    assert_normal(&f.path);

    // The forwarded headers, when sent, are the request: the check request's own method and URI
    // are only for when they are absent, never a fallback for a value that did not read well.
    let elsewhere = Forwarded::from_headers(&head.headers, "PATCH", "/elsewhere?fallback=1");
    if head.headers.contains_key("x-forwarded-uri") {
        assert_eq!((&f.path, &f.query), (&elsewhere.path, &elsewhere.query), "X-Forwarded-Uri was replaced");
    }
    if head.headers.contains_key("x-forwarded-method") {
        assert_eq!(f.method, elsewhere.method, "X-Forwarded-Method was replaced");
    }

    // Hosts are compared the way Traefik's Host() matcher routes them: case-insensitively, and a
    // fully qualified name (one trailing dot) is the same host.
    let Some(sent) = head.headers.get("x-forwarded-host") else { return };
    let mut other_host = head.headers.clone();
    other_host.insert(http::header::HOST, HeaderValue::from_static("elsewhere.invalid"));
    let f_other = Forwarded::from_headers(&other_host, &head.method, &head.uri);
    assert_eq!(f.host, f_other.host, "X-Forwarded-Host was replaced");
    let upper = with_first(&head.headers, "x-forwarded-host", sent.as_bytes().to_ascii_uppercase());
    let f_upper = Forwarded::from_headers(&upper, &head.method, &head.uri);
    assert_eq!(f.host, f_upper.host, "the host's case matters");
    let bytes = sent.as_bytes();
    if bytes.iter().any(u8::is_ascii_alphabetic) && !bytes.contains(&b':') && !bytes.ends_with(b".") {
        let dotted = with_first(&head.headers, "x-forwarded-host", [bytes, b"."].concat());
        let f_dotted = Forwarded::from_headers(&dotted, &head.method, &head.uri);
        assert_eq!(f.host, f_dotted.host, "a trailing dot makes another host");
    }
});

/// Starts with `/`; no `.`, `..` or empty segment (but for a trailing slash); normalising it
/// again changes nothing.
fn assert_normal(path: &str) {
    let inner = path.strip_prefix('/').unwrap_or_else(|| panic!("{path:?} does not start with /"));
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            assert!(!matches!(segment, "" | "." | ".."), "{path:?} has a segment {segment:?}");
        }
    }
    assert_eq!(normalize_path(path), path, "normalising {path:?} again changes it");
}

/// `headers` with the first value of `name` replaced by `value`.
fn with_first(headers: &HeaderMap, name: &str, value: Vec<u8>) -> HeaderMap {
    let mut value = Some(value);
    rewrite(headers, |n, values| {
        let mut values = values;
        if n == name {
            if let Some(v) = value.take() {
                values[0] = v;
            }
        }
        values
    })
}


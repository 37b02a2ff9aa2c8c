//! The forwarded request: `Forwarded::from_headers` on any check request, `Path::parse` on any
//! path. Input: a request head (see `quotagate_fuzz::Head`).
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use quotagate::request::{Forwarded, Path};
use quotagate_fuzz::{rewrite, Head};

// The API under test, in three functions, so that the invariants below read the same whatever
// shape it takes.

/// The forwarded request, or `None` if it is refused.
fn read<'a>(headers: &'a HeaderMap, method: &'a str, uri: &'a str) -> Option<Forwarded<'a>> {
    Forwarded::from_headers(headers, method, uri).ok()
}

/// The reading with dot segments resolved (nginx's) that rules see first. Other readings keep
/// dot segments on purpose (Express routes them as they come), so only this one is normal.
fn paths<'a>(f: &'a Forwarded<'_>) -> Vec<&'a str> {
    vec![f.path.canonical()]
}

/// The normal form of a raw path (`None`: refused).
fn normalize(raw: &str) -> Option<Vec<String>> {
    Path::parse(raw.as_bytes()).ok().map(|p| vec![p.canonical().to_owned()])
}

fuzz_target!(|data: &[u8]| {
    let head = Head::parse(data);
    let (raw, _) = head.uri.split_once('?').unwrap_or((&head.uri, ""));
    for path in normalize(raw).unwrap_or_default() {
        assert_normal(&path);
    }

    let Some(f) = read(&head.headers, &head.method, &head.uri) else { return };
    for path in paths(&f) {
        assert_normal(path);
    }

    // The forwarded headers, when sent, are the request: the check request's own method, URI
    // and Host are for when they are absent, never a fallback for a value that did not read.
    let elsewhere = read(&head.headers, "PATCH", "/elsewhere?fallback=1");
    if head.headers.contains_key("x-forwarded-uri") {
        let uri = |f: &Forwarded<'_>| format!("{:?}", (&f.path, &f.query));
        assert_eq!(
            Some(uri(&f)),
            elsewhere.as_ref().map(uri),
            "X-Forwarded-Uri was replaced by the check URI"
        );
    }
    if head.headers.contains_key("x-forwarded-method") {
        assert_eq!(Some(f.method), elsewhere.as_ref().map(|e| e.method), "X-Forwarded-Method was replaced");
    }
    let Some(sent) = head.headers.get("x-forwarded-host") else { return };
    let mut other_host = head.headers.clone();
    other_host.insert(http::header::HOST, HeaderValue::from_static("elsewhere.invalid"));
    let host = |f: &Forwarded<'_>| format!("{:?}", f.host);
    let other = read(&other_host, &head.method, &head.uri);
    assert_eq!(Some(host(&f)), other.as_ref().map(host), "X-Forwarded-Host was replaced by Host");

    // Hosts are compared the way Traefik's Host() matcher routes them: case-insensitively, and
    // a fully qualified name (one trailing dot) is the same host. (A variant that is refused
    // proves nothing either way.)
    let upper = with_first(&head.headers, "x-forwarded-host", sent.as_bytes().to_ascii_uppercase());
    if let Some(f_upper) = read(&upper, &head.method, &head.uri) {
        assert_eq!(host(&f), host(&f_upper), "the host's letter case makes another host");
    }
    let bytes = sent.as_bytes();
    if bytes.iter().any(u8::is_ascii_alphabetic) && !bytes.contains(&b':') && !bytes.ends_with(b".") {
        let dotted = with_first(&head.headers, "x-forwarded-host", [bytes, b"."].concat());
        if let Some(f_dotted) = read(&dotted, &head.method, &head.uri) {
            assert_eq!(host(&f), host(&f_dotted), "a trailing dot makes another host");
        };
    }
});

/// Starts with `/`; no `.`, `..` or empty segment (but for a trailing slash); normalising it
/// again changes nothing, unless it still holds a `%` (a decoded `%2525` is `%25`, which a
/// backend that decodes twice reads as `%`: that is a second reading, not a fixed point).
fn assert_normal(path: &str) {
    let inner = path.strip_prefix('/').unwrap_or_else(|| panic!("{path:?} does not start with /"));
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            assert!(!matches!(segment, "" | "." | ".."), "{path:?} has a segment {segment:?}");
        }
    }
    if !path.contains('%') {
        assert_eq!(normalize(path), Some(vec![path.to_owned()]), "normalising {path:?} again changes it");
    }
}

/// `headers` with the first value of `name` replaced by `value`.
fn with_first(headers: &HeaderMap, name: &str, value: Vec<u8>) -> HeaderMap {
    let mut value = Some(value);
    rewrite(headers, |n, mut values| {
        if n == name {
            if let Some(v) = value.take() {
                values[0] = v;
            }
        }
        values
    })
}

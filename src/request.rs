//! The request Traefik asks about, as quotagate sees it: method, host, path and query from the
//! `X-Forwarded-*` headers forwardAuth sets. A direct call that carries none of them is read from
//! the check request itself; a forwarded request without `X-Forwarded-Uri`, or with one of these
//! headers repeated, is refused ([`RequestError`]) rather than guessed.
//!
//! Everything is normalised here, once, before any rule sees it:
//! - the host: lower case, port and one trailing dot removed, IPv6 literals in RFC 5952 form
//!   ([`normalize_host`]), the way Traefik's `Host()` matcher compares hosts;
//! - the path: not one string but every reading a mainstream backend may route by ([`Path`]).
//!   Backends disagree on encoded separators (`%2F`, `%5C`), backslashes, `;` path parameters,
//!   double decoding and dot segments, so a path with any of these has several readings; a rule
//!   matches if any reading matches and an exemption needs all of them (see `policy`).
//!
//! A plain path (`/api/v1/items`: no `%`, `\`, `;`, empty or dot segments, control or non-ASCII
//! bytes) has one reading, borrowed from the header: the common case costs a scan and no
//! allocation.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

// Looked up by parsed name: a `&str` lookup would parse and lowercase-check the name each time.
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The longest path read when it needs decoding. nginx refuses request lines over 8 KiB
/// (`large_client_header_buffers`), and each reading of a longer path would cost its length.
pub const MAX_DECODED_PATH: usize = 8192;

/// Why the forwarded request cannot be read without guessing. Messages name headers, never
/// their values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("{header} appears more than once")]
    Repeated { header: &'static str },
    #[error("{header} is not text")]
    NotText { header: &'static str },
    #[error("X-Forwarded-Uri is missing, though other X-Forwarded-* headers are present")]
    MissingUri,
    #[error("the path holds an encoded NUL byte")]
    NulInPath,
    #[error("the path is {len} bytes long and needs decoding (at most {max} allowed)")]
    PathTooLong { len: usize, max: usize },
}

/// The forwarded request: borrowed from the check request's headers where possible.
#[derive(Debug)]
pub struct Forwarded<'a> {
    pub method: &'a str,
    /// The host in normal form ([`normalize_host`]): no port, lower case.
    pub host: Cow<'a, str>,
    /// The path's readings, without query.
    pub path: Path<'a>,
    /// The raw query, without `?`. Bytes: Traefik passes a client's raw bytes >= 0x80 through.
    pub query: Option<&'a [u8]>,
}

impl<'a> Forwarded<'a> {
    /// Reads the forwarded request from `headers`; `method` and `uri` are the check request's
    /// own, used only when no `X-Forwarded-*` header says otherwise.
    pub fn from_headers(
        headers: &'a HeaderMap,
        method: &'a str,
        uri: &'a str,
    ) -> Result<Forwarded<'a>, RequestError> {
        let method = match single(headers, &X_FORWARDED_METHOD, "X-Forwarded-Method")? {
            Some(v) => v.to_str().map_err(|_| RequestError::NotText { header: "X-Forwarded-Method" })?,
            None => method,
        };
        let host = match single(headers, &X_FORWARDED_HOST, "X-Forwarded-Host")? {
            Some(v) => Some(v.to_str().map_err(|_| RequestError::NotText { header: "X-Forwarded-Host" })?),
            None => single(headers, &HOST, "Host")?.and_then(|v| v.to_str().ok()),
        };
        let host = normalize_host(host.unwrap_or(""));
        let uri = match single(headers, &X_FORWARDED_URI, "X-Forwarded-Uri")? {
            Some(v) => v.as_bytes(),
            // Traefik always sends X-Forwarded-Uri with the others: without it, the check
            // request's own URI (`/`) would dodge every path rule.
            None if [&X_FORWARDED_METHOD, &X_FORWARDED_HOST, &X_FORWARDED_PROTO, &X_FORWARDED_PORT]
                .into_iter()
                .any(|name| headers.contains_key(name)) =>
            {
                return Err(RequestError::MissingUri)
            }
            None => uri.as_bytes(),
        };
        // A fragment is never part of a request target; nginx, Node and Python drop it, so a
        // proxy that passes `#` on must not hide the path before it.
        let uri = uri.iter().position(|&b| b == b'#').map_or(uri, |i| &uri[..i]);
        let (path, query) = match uri.iter().position(|&b| b == b'?') {
            Some(i) => (&uri[..i], Some(&uri[i + 1..])),
            None => (uri, None),
        };
        Ok(Forwarded { method, host, path: Path::parse(path)?, query })
    }
}

/// The one value of header `name`, if present; an error if it is repeated.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<&'a HeaderValue>, RequestError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(RequestError::Repeated { header: label }),
        None => Ok(first),
    }
}

/// A host as Traefik's `Host()` matcher compares it: port removed, ASCII lower case, one
/// trailing dot removed (`API.Example.com.:443` is `api.example.com`), and an IPv6 literal in
/// its RFC 5952 text inside brackets (`[0:0::1]:80` is `[::1]`). Borrows when nothing changes.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let inside = rest.split_once(']').map_or(rest, |(h, _)| h);
        return match inside.parse::<Ipv6Addr>() {
            Ok(ip) => Cow::Owned(format!("[{ip}]")),
            // Not an address: kept as written but for case and one trailing dot, as any other
            // name, so it can only match a rule that names it the same way.
            Err(_) => lower(host.strip_suffix('.').unwrap_or(host)),
        };
    }
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    lower(host)
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A path as the backend may read it: one reading for a plain path, several when backends
/// disagree about its spelling. The first reading is nginx's (decoded once, `%2F` a separator,
/// dot segments resolved), used for logs.
///
/// The readings are every combination of these choices that the path makes a difference to:
/// - decoded once, or twice (`%252F`: nginx's `proxy_pass` with a URI decodes before the
///   backend decodes again);
/// - an encoded `/` is a separator (nginx, WSGI's `PATH_INFO`, Go's `URL.Path`) or data inside
///   a segment (Go 1.22's `ServeMux`, Express; written back as `%2F`);
/// - a backslash, raw or encoded, is a separator (WHATWG URL parsers, IIS) or a character;
/// - `;` starts a path parameter that is dropped from its segment (Tomcat, Spring, Jetty:
///   `/api;x=1/summarize`, `/docs/..;/api`) or is a character;
/// - `.` and `..` segments are resolved (nginx, Go) or kept (Express, Werkzeug).
///
/// Every reading: empty segments dropped, invalid escapes (`%zz`) kept literally, bytes that are
/// not UTF-8 (raw, or overlong encodings like `%C0%AF`) read as U+FFFD, never as a separator.
/// An encoded NUL is refused ([`RequestError::NulInPath`]): nginx refuses it too, and C-based
/// code may cut the path there.
#[derive(Clone, Debug)]
pub struct Path<'a> {
    readings: SmallVec<[Cow<'a, str>; 1]>,
}

impl<'a> Path<'a> {
    /// Reads a raw path (the part of `X-Forwarded-Uri` before `?`).
    pub fn parse(raw: &'a [u8]) -> Result<Path<'a>, RequestError> {
        if is_plain(raw) {
            let text = std::str::from_utf8(raw).expect("a plain path is ASCII");
            let mut readings = SmallVec::new();
            readings.push(Cow::Borrowed(text));
            return Ok(Path { readings });
        }
        if raw.len() > MAX_DECODED_PATH {
            return Err(RequestError::PathTooLong { len: raw.len(), max: MAX_DECODED_PATH });
        }
        let once = decode(raw.iter().copied());
        let mut depths: SmallVec<[Vec<Unit>; 2]> = SmallVec::new();
        let twice = decode(once.iter().map(|u| u.byte));
        let decodes_again = twice.len() != once.len();
        depths.push(once);
        if decodes_again {
            depths.push(twice);
        }
        let mut readings: SmallVec<[Cow<'a, str>; 1]> = SmallVec::new();
        for units in &depths {
            if units.iter().any(|u| u.byte == 0) {
                return Err(RequestError::NulInPath);
            }
            let has = |f: fn(&Unit) -> bool| units.iter().any(f);
            // Choices this spelling makes no difference to are not varied.
            let slashes: &[bool] =
                if has(|u| u.byte == b'/' && u.encoded) { &[true, false] } else { &[true] };
            let backslashes: &[bool] = if has(|u| u.byte == b'\\') { &[false, true] } else { &[false] };
            let params: &[bool] = if has(|u| u.byte == b';') { &[false, true] } else { &[false] };
            for &encoded_slash_splits in slashes {
                for &backslash_splits in backslashes {
                    for &strip_params in params {
                        let mut choice = Choice {
                            encoded_slash_splits,
                            backslash_splits,
                            strip_params,
                            resolve_dots: true,
                        };
                        let (resolved, saw_dots) = read(units, choice);
                        push_new(&mut readings, resolved);
                        if saw_dots {
                            choice.resolve_dots = false;
                            push_new(&mut readings, read(units, choice).0);
                        }
                    }
                }
            }
        }
        Ok(Path { readings })
    }

    /// nginx's reading.
    pub fn canonical(&self) -> &str {
        &self.readings[0]
    }

    /// Every reading, nginx's first; no two alike.
    pub fn readings(&self) -> impl Iterator<Item = &str> {
        self.readings.iter().map(|r| r.as_ref())
    }

    /// Whether backends may disagree about this path.
    pub fn is_ambiguous(&self) -> bool {
        self.readings.len() > 1
    }
}

fn push_new<'a>(readings: &mut SmallVec<[Cow<'a, str>; 1]>, reading: String) {
    if !readings.iter().any(|r| *r == reading) {
        readings.push(Cow::Owned(reading));
    }
}

/// Starts with `/` and has none of: `%`, `\`, `;`, an empty, `.` or `..` segment (but a
/// trailing `/`), a control, space or non-ASCII byte. Such a path reads the same everywhere.
fn is_plain(raw: &[u8]) -> bool {
    if raw.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    for (i, &b) in raw.iter().enumerate().skip(1) {
        match b {
            b'%' | b'\\' | b';' | ..=b' ' | 0x7f.. => return false,
            b'/' => {
                if matches!(&raw[segment_start..i], b"" | b"." | b"..") {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    !matches!(&raw[segment_start..], b"." | b"..")
}

/// A byte of a decoded path, and whether it was percent-encoded in what the last decoder read.
#[derive(Clone, Copy, Debug)]
struct Unit {
    byte: u8,
    encoded: bool,
}

/// One pass of percent-decoding; invalid escapes stay as written, in either hex case.
fn decode(bytes: impl Iterator<Item = u8>) -> Vec<Unit> {
    let bytes: SmallVec<[u8; 256]> = bytes.collect();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(Unit { byte: hi << 4 | lo, encoded: true });
                i += 3;
                continue;
            }
        }
        out.push(Unit { byte: bytes[i], encoded: false });
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// How one backend reads a decoded path; see [`Path`].
#[derive(Clone, Copy, Debug)]
struct Choice {
    encoded_slash_splits: bool,
    backslash_splits: bool,
    strip_params: bool,
    resolve_dots: bool,
}

/// The path as a backend making `choice` routes it, and whether it had dot segments.
fn read(units: &[Unit], choice: Choice) -> (String, bool) {
    let splits = |u: &Unit| match u.byte {
        b'/' => !u.encoded || choice.encoded_slash_splits,
        b'\\' => choice.backslash_splits,
        _ => false,
    };
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut saw_dots = false;
    for segment in units.split(splits) {
        let mut bytes = Vec::with_capacity(segment.len());
        for u in segment {
            match u.byte {
                // A `/` that is data stays encoded, so no rule mistakes it for a separator.
                b'/' => bytes.extend_from_slice(b"%2F"),
                b => bytes.push(b),
            }
        }
        if choice.strip_params {
            if let Some(i) = bytes.iter().position(|&b| b == b';') {
                bytes.truncate(i);
            }
        }
        match bytes.as_slice() {
            b"" => {}
            b"." | b".." if choice.resolve_dots => {
                saw_dots = true;
                if bytes == b".." {
                    segments.pop();
                }
            }
            b"." | b".." => {
                saw_dots = true;
                segments.push(bytes);
            }
            _ => segments.push(bytes),
        }
    }
    let mut out = Vec::with_capacity(units.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || (units.last().is_some_and(splits) && !segments.is_empty()) {
        out.push(b'/');
    }
    let text = match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    (text, saw_dots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn readings(raw: &str) -> Vec<String> {
        Path::parse(raw.as_bytes()).unwrap().readings().map(str::to_owned).collect()
    }

    #[test]
    fn reads_the_forwarded_headers() {
        let h = headers(&[
            ("x-forwarded-method", b"POST"),
            ("x-forwarded-host", b"Api.Example.com.:443"),
            ("x-forwarded-uri", b"/api/summarize?api_key=abc&x=1"),
        ]);
        let f = Forwarded::from_headers(&h, "GET", "/").unwrap();
        assert_eq!(f.method, "POST");
        assert_eq!(f.host, "api.example.com");
        assert_eq!(f.path.canonical(), "/api/summarize");
        assert_eq!(f.query, Some(&b"api_key=abc&x=1"[..]));
    }

    #[test]
    fn a_direct_call_is_read_from_the_check_request() {
        let h = headers(&[("host", b"localhost:8080")]);
        let f = Forwarded::from_headers(&h, "GET", "/v1/items?q=1").unwrap();
        assert_eq!(
            (f.method, f.host.as_ref(), f.path.canonical(), f.query),
            ("GET", "localhost", "/v1/items", Some(&b"q=1"[..]))
        );
    }

    #[test]
    fn a_raw_byte_in_the_forwarded_query_is_read_not_replaced() {
        // Traefik passes the client's raw query bytes through; the old code fell back to `/`.
        let h = headers(&[("x-forwarded-method", b"POST"), ("x-forwarded-uri", b"/api/summarize?q=caf\xe9")]);
        let f = Forwarded::from_headers(&h, "GET", "/").unwrap();
        assert_eq!(f.path.canonical(), "/api/summarize");
        assert_eq!(f.query, Some(&b"q=caf\xe9"[..]));
        let h = headers(&[("x-forwarded-uri", b"/api/summ\xe9")]);
        assert_eq!(Forwarded::from_headers(&h, "GET", "/").unwrap().path.canonical(), "/api/summ\u{fffd}");
    }

    #[test]
    fn a_fragment_ends_the_path_and_the_query() {
        for (uri, path, query) in [
            (&b"/api/summarize#x"[..], "/api/summarize", None),
            (b"/api/summarize?a=1#x", "/api/summarize", Some(&b"a=1"[..])),
            (b"/docs#/../api/summarize", "/docs", None),
        ] {
            let h = headers(&[("x-forwarded-uri", uri)]);
            let f = Forwarded::from_headers(&h, "GET", "/").unwrap();
            assert_eq!((f.path.canonical(), f.query), (path, query));
        }
    }

    #[test]
    fn a_forwarded_request_without_its_uri_is_refused() {
        for other in ["x-forwarded-method", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"] {
            let h = headers(&[(other, b"x")]);
            assert_eq!(
                Forwarded::from_headers(&h, "GET", "/").unwrap_err(),
                RequestError::MissingUri,
                "{other}"
            );
        }
        // X-Forwarded-For alone is any proxy's: a direct call through a load balancer.
        let h = headers(&[("x-forwarded-for", b"192.0.2.1")]);
        assert!(Forwarded::from_headers(&h, "GET", "/x").is_ok());
    }

    #[test]
    fn repeated_forwarded_headers_are_refused() {
        for name in ["x-forwarded-uri", "x-forwarded-method", "x-forwarded-host"] {
            let h = headers(&[("x-forwarded-uri", b"/a"), (name, b"/b")]);
            let h = if name == "x-forwarded-uri" {
                h
            } else {
                headers(&[("x-forwarded-uri", b"/a"), (name, b"a"), (name, b"b")])
            };
            assert!(
                matches!(Forwarded::from_headers(&h, "GET", "/"), Err(RequestError::Repeated { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn a_plain_path_is_borrowed_with_one_reading() {
        for raw in ["/", "/api/v1/items", "/api/summarize/", "/a.b/c..d/.e", "/x+y/~z"] {
            let path = Path::parse(raw.as_bytes()).unwrap();
            assert!(matches!(path.readings[0], Cow::Borrowed(_)), "{raw}");
            assert_eq!(readings(raw), [raw], "{raw}");
        }
    }

    /// Each spelling with every reading quotagate gives it. The first reading is what nginx
    /// 1.22 serves (checked through Traefik 3.7.15 and tests/e2e_spellings.rs).
    #[test]
    fn spellings_and_their_readings() {
        let table: &[(&str, &[&str])] = &[
            ("/api/%73ummarize", &["/api/summarize"]),
            ("/api/sum%6Darize", &["/api/summarize"]),
            ("/api/sum%6darize", &["/api/summarize"]),
            ("//api///summarize/./", &["/api/summarize/", "/api/summarize/./"]),
            ("/docs/../api/summarize", &["/api/summarize", "/docs/../api/summarize"]),
            ("/../../etc", &["/etc", "/../../etc"]),
            ("/docs/%2E%2E/api/summarize", &["/api/summarize", "/docs/../api/summarize"]),
            // Encoded slashes: a separator to nginx, data to Go 1.22's ServeMux and Express.
            (
                "/docs/..%2Fapi%2Fsummarize",
                &["/api/summarize", "/docs/../api/summarize", "/docs/..%2Fapi%2Fsummarize"],
            ),
            (
                "/docs%2F..%2Fapi%2Fsummarize",
                &["/api/summarize", "/docs/../api/summarize", "/docs%2F..%2Fapi%2Fsummarize"],
            ),
            (
                "/api/x%2F..%2Fsummarize",
                &["/api/summarize", "/api/x/../summarize", "/api/x%2F..%2Fsummarize"],
            ),
            ("/api%2fsummarize", &["/api/summarize", "/api%2Fsummarize"]),
            // Backslashes: a character to nginx, a separator to WHATWG URL parsers.
            ("/api%5Csummarize", &["/api\\summarize", "/api/summarize"]),
            ("/api\\summarize", &["/api\\summarize", "/api/summarize"]),
            (
                "/docs/..%5Capi%5Csummarize",
                &["/docs/..\\api\\summarize", "/api/summarize", "/docs/../api/summarize"],
            ),
            // Path parameters: characters to nginx, dropped by Tomcat and Spring.
            ("/api;x=1/summarize", &["/api;x=1/summarize", "/api/summarize"]),
            ("/api/summarize;jsessionid=1", &["/api/summarize;jsessionid=1", "/api/summarize"]),
            (
                "/docs/..;/api/summarize",
                &["/docs/..;/api/summarize", "/api/summarize", "/docs/../api/summarize"],
            ),
            // Double encoding: nginx decodes once, a backend behind `proxy_pass http://b/;` twice.
            (
                "/docs/..%252Fapi%252Fsummarize",
                &["/docs/..%2Fapi%2Fsummarize", "/api/summarize", "/docs/../api/summarize"],
            ),
            // Invalid escapes stay literal; `+` is a plus; overlong UTF-8 is never a slash.
            ("/api/summarize%zz", &["/api/summarize%zz"]),
            ("/api/summarize%", &["/api/summarize%"]),
            ("/api/summ+arize", &["/api/summ+arize"]),
            ("/api%C0%AFsummarize", &["/api\u{fffd}\u{fffd}summarize"]),
            ("/api/summ%E9", &["/api/summ\u{fffd}"]),
            ("", &["/"]),
            ("*", &["/*"]),
        ];
        for (raw, expected) in table {
            assert_eq!(readings(raw), *expected, "{raw}");
        }
    }

    #[test]
    fn an_encoded_nul_is_refused_at_any_depth() {
        // `%2500` is `%00` to nginx and NUL to a backend that decodes again.
        for raw in ["/api/summarize%00", "/a%00b/c", "/api/summarize%2500"] {
            assert_eq!(Path::parse(raw.as_bytes()).unwrap_err(), RequestError::NulInPath, "{raw}");
        }
    }

    #[test]
    fn a_long_path_is_read_only_if_plain() {
        let plain = format!("/{}", "a".repeat(MAX_DECODED_PATH * 2));
        assert!(Path::parse(plain.as_bytes()).is_ok());
        let odd = format!("/{}%2F", "a".repeat(MAX_DECODED_PATH));
        assert!(matches!(Path::parse(odd.as_bytes()), Err(RequestError::PathTooLong { .. })));
    }

    #[test]
    fn hosts_are_normalised_like_traefiks_host_matcher() {
        for (given, normal) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.COM", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com:80", "api.example.com"),
            ("api.example.com.:443", "api.example.com"),
            ("api.example.com:", "api.example.com"),
            ("api.example.com..", "api.example.com."),
            ("[::1]:8080", "[::1]"),
            ("[0:0::1]", "[::1]"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("[not-v6]", "[not-v6]"),
            // Found by the request fuzz target: a bracket that opens no address is a name.
            ("[Pi.example.com.", "[pi.example.com"),
            ("", ""),
        ] {
            assert_eq!(normalize_host(given), normal, "{given}");
        }
        assert!(matches!(normalize_host("api.example.com:443"), Cow::Borrowed(_)));
    }
}

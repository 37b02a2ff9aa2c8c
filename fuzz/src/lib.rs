//! What the HTTP fuzz targets share: their input encoding, a check request written as an
//! HTTP/1.1 request head, so that the fuzzer can put any byte in a header name or value and a
//! corpus file reads like the request it stands for.
//!
//! ```text
//! GET /                                       the check request's own method and URI
//! X-Forwarded-Method: POST                    then one header a line, in order
//! X-Forwarded-Uri: /api/summarize?q=caf<E9>   (the byte 0xE9 itself, not an escape)
//! ```
//!
//! Lines end with `\n`; a `\r` before it is dropped. The first line is split at its first space
//! into method and URI, read as UTF-8 lossily (axum hands quotagate `&str`s); an empty URI is `/`.
//! Every other line is split at its first `:` into name and value; the value loses its leading
//! and trailing spaces and tabs, as HTTP/1.1 parsers do. A line whose name or value `http`
//! refuses is skipped: hyper would have refused the request before quotagate saw it. Repeated
//! headers stay repeated, in order.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A check request, decoded from fuzzer bytes.
#[derive(Clone, Debug)]
pub struct Head {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

impl Head {
    pub fn parse(data: &[u8]) -> Head {
        let mut lines = data.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let first = String::from_utf8_lossy(lines.next().unwrap_or_default());
        let (method, uri) = first.split_once(' ').unwrap_or((&first, ""));
        let uri = if uri.is_empty() { "/" } else { uri };
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                headers.append(name, value);
            }
        }
        Head { method: method.to_owned(), uri: uri.to_owned(), headers }
    }
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// `headers` with each name's values, in order, replaced by what `f` makes of them (a value
/// `http` refuses is left out).
pub fn rewrite(
    headers: &HeaderMap,
    mut f: impl FnMut(&HeaderName, Vec<Vec<u8>>) -> Vec<Vec<u8>>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in headers.keys() {
        let values = headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect();
        for value in f(name, values) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                out.append(name.clone(), value);
            }
        }
    }
    out
}

/// `a&b&c` -> `c&b&a`: the same parameters, the other way round.
pub fn reverse_query(query: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = query.split(|&b| b == b'&').collect();
    parts.reverse();
    parts.join(&b'&')
}

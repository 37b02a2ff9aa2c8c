//! Identity extraction: `Identity::identify` on any check request, with a config that enables
//! every token source. Input: a request head (see `quotagate_fuzz::Head`).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use quotagate::config::Config;
use quotagate::identity::{Caller, Identity, IdentityError, Source};
use quotagate::request::Forwarded;
use quotagate_fuzz::{reverse_query, rewrite, Head};

const CONFIG: &str = r#"
[plans.free]
limits = [{ requests = 5, per = "day" }]

[plans.anonymous]
limits = [{ requests = 5, per = "day" }]

[identity]
sources = ["bearer", "token", "header:X-API-Key", "query:api_key", "cookie:session", "host"]
missing = "ip"
max_token_length = 64
hash_key = "fuzzing-hash-key-not-a-secret-0123456789"

[identity.client_ip]
depth = 2
"#;

static IDENTITY: LazyLock<Identity> = LazyLock::new(|| {
    Config::parse(CONFIG, "fuzz identity", None).expect("the fuzz config is valid").identity
});

/// The credential sources alone (the host is not a credential), in the configured order and
/// reversed.
static CREDENTIALS: LazyLock<[Identity; 2]> = LazyLock::new(|| {
    let mut forward = IDENTITY.clone();
    forward.sources.retain(|s| *s != Source::Host);
    let mut reversed = forward.clone();
    reversed.sources.reverse();
    [forward, reversed]
});

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2));

/// `None` if the forwarded request itself is refused (before identity is asked).
fn identify(head: &Head) -> Option<Result<Caller, IdentityError>> {
    identify_by(&IDENTITY, head)
}

fn identify_by(identity: &Identity, head: &Head) -> Option<Result<Caller, IdentityError>> {
    let req = Forwarded::from_headers(&head.headers, &head.method, &head.uri).ok()?;
    Some(identity.identify(&head.headers, &req, PEER))
}

/// The caller, if one was found: what two readings of one request must agree on.
fn caller(found: &Option<Result<Caller, IdentityError>>) -> Option<&Caller> {
    found.as_ref().and_then(|r| r.as_ref().ok())
}

fuzz_target!(|data: &[u8]| {
    let head = Head::parse(data);
    let Some(found) = identify(&head) else { return };
    assert_secret(&found);
    let found = Some(found);

    // Which of two credentials counts must not depend on their order: a backend may read the
    // other one (PHP and Rails take the last repeated parameter).
    let mut reversed = head.clone();
    reversed.headers = rewrite(&head.headers, |name, mut values| {
        match name.as_str() {
            "authorization" | "x-api-key" => values.reverse(),
            "cookie" => {
                values.reverse();
                values = values.iter().map(|v| reverse_cookies(v)).collect();
            }
            "x-forwarded-uri" => values = values.iter().map(|v| with_reversed_query(v)).collect(),
            _ => {}
        }
        values
    });
    reversed.uri = String::from_utf8_lossy(&with_reversed_query(head.uri.as_bytes())).into_owned();
    let other = identify(&reversed);
    assert_eq!(caller(&found), caller(&other), "the order of credentials matters: {found:?} vs {other:?}");

    // Nor may the order of the sources: two sources with different values are two credentials.
    let [forward, backward] = &*CREDENTIALS;
    let (by_forward, by_backward) = (identify_by(forward, &head), identify_by(backward, &head));
    assert_eq!(
        caller(&by_forward),
        caller(&by_backward),
        "the order of sources matters: {by_forward:?} vs {by_backward:?}"
    );

    // `session="abc"` is `session=abc`, as Go's Request.Cookie reads it.
    let mut unquoted = head.clone();
    unquoted.headers = rewrite(&head.headers, |name, values| {
        if name == "cookie" {
            values.iter().map(|v| unquote_cookies(v)).collect()
        } else {
            values
        }
    });
    let other = identify(&unquoted);
    assert_eq!(caller(&found), caller(&other), "quoting a cookie matters: {found:?} vs {other:?}");
});

/// A caller shows only a fingerprint or an IP; an error names only where it looked, never what
/// it found (its other parts are numbers and static text).
fn assert_secret(found: &Result<Caller, IdentityError>) {
    let places: Vec<String> = IDENTITY.sources.iter().map(ToString::to_string).collect();
    match found {
        Ok(caller @ (Caller::Token(_) | Caller::Host(_))) => {
            let shown = caller.to_string();
            let (_, hex) = shown.split_once(':').expect("kind:fingerprint");
            assert!(hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{shown}");
        }
        // No token was found: the address is what it shows.
        Ok(Caller::Ip(..)) => {}
        Err(IdentityError::Missing { sources }) => assert_eq!(*sources, places.join(", ")),
        Err(IdentityError::TooLong { place, .. } | IdentityError::Malformed { place, .. }) => {
            assert!(places.contains(place), "an error names {place:?}")
        }
        Err(IdentityError::Ambiguous { sources }) => {
            for place in sources.split(", ") {
                assert!(places.iter().any(|p| p == place), "an error names {place:?}")
            }
        }
    }
}

/// The query's parameters reversed; a fragment (`#...`, which ends the query) stays at the end.
fn with_reversed_query(uri: &[u8]) -> Vec<u8> {
    let end = uri.iter().position(|&b| b == b'#').unwrap_or(uri.len());
    let (uri, fragment) = uri.split_at(end);
    match uri.iter().position(|&b| b == b'?') {
        Some(i) => [&uri[..=i], &reverse_query(&uri[i + 1..])[..], fragment].concat(),
        None => [uri, fragment].concat(),
    }
}

fn cookie_pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b';').map(|p| p.trim_ascii()).filter(|p| !p.is_empty())
}

fn reverse_cookies(value: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<&[u8]> = cookie_pairs(value).collect();
    pairs.reverse();
    pairs.join(&b"; "[..])
}

fn unquote_cookies(value: &[u8]) -> Vec<u8> {
    let pairs: Vec<Vec<u8>> = cookie_pairs(value)
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => {
                let v = &pair[i + 1..];
                let v = match v {
                    [b'"', inner @ .., b'"'] => inner,
                    v => v,
                };
                [&pair[..=i], v].concat()
            }
            None => pair.to_vec(),
        })
        .collect();
    pairs.join(&b"; "[..])
}

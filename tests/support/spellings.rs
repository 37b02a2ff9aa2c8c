//! Spellings of a path that nginx routes to that path: percent-encoded characters in either hex
//! case, repeated slashes, `.` segments, detours through `..` (literal, `%2e%2e`, or split by
//! encoded slashes), and `%2F` as a separator. nginx decodes once, merges slashes and resolves
//! dot segments after decoding, so each of these reaches `location = PATH`. tests/e2e_spellings.rs
//! checks a sample against a real nginx; tests/spellings_props.rs checks quotagate's rules on
//! many more.

use proptest::prelude::*;

/// A spelling of the path made of `segments` (`["api", "summarize"]` for `/api/summarize`).
pub fn nginx_spelling(segments: &'static [&'static str]) -> impl Strategy<Value = String> {
    let parts: Vec<_> = segments.iter().map(|s| (separator(), segment(s))).collect();
    parts.prop_map(|parts| {
        let mut out = String::new();
        for (sep, seg) in parts {
            // A request target starts with `/`; `/%2F` is `//` to nginx, merged into one.
            if out.is_empty() && !sep.starts_with('/') {
                out.push('/');
            }
            out.push_str(&sep);
            out.push_str(&seg);
        }
        out
    })
}

/// `s` with any of its characters percent-encoded, in upper or lower case hex.
fn segment(s: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec((any::<bool>(), any::<bool>()), s.len()).prop_map(move |choices| {
        s.bytes()
            .zip(choices)
            .map(|(b, (encode, upper))| match (encode, upper) {
                (false, _) => (b as char).to_string(),
                (true, true) => format!("%{b:02X}"),
                (true, false) => format!("%{b:02x}"),
            })
            .collect()
    })
}

/// What may stand between two segments (or before the first) and still read as one `/`.
fn separator() -> impl Strategy<Value = String> {
    let detour = "[a-z]{1,6}";
    prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just("/./".to_owned()),
        Just("/%2e/".to_owned()),
        Just("%2F".to_owned()),
        Just("/%2f".to_owned()),
        Just("%2F.%2F".to_owned()),
        detour.prop_map(|x| format!("/{x}/../")),
        detour.prop_map(|x| format!("/{x}/%2e%2E/")),
        detour.prop_map(|x| format!("/{x}%2F..%2F")),
        detour.prop_map(|x| format!("%2F{x}%2F%2E%2E/")),
    ]
}

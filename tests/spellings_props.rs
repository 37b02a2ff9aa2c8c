//! Paths as backends read them, against quotagate's rules: a rule on a path matches every
//! spelling nginx routes to that path, and an exemption never covers a spelling that some
//! backend routes outside it. The spelling table of single cases is in src/request.rs; the
//! same spellings through a real Traefik and nginx are in tests/e2e_spellings.rs.

mod support;

use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use quotagate::config::Config;
use quotagate::policy::Rule;
use quotagate::request::Forwarded;
use support::spellings::nginx_spelling;

const CONFIG: &str = r#"
[identity]
sources = ["bearer"]

[defaults]
plan = "free"

[plans.free]
limits = [{ requests = 100, per = "day" }]

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
limits."*" = [{ requests = 2, per = "day" }]

[[rules]]
name = "docs"
path_prefix = "/docs"
exempt = true

[[rules]]
name = "export"
path = "/api/*/export"
limits."*" = [{ requests = 1, per = "day" }]

[[rules]]
name = "hosted"
host = "api.example.com"
limits."*" = [{ requests = 5, per = "day" }]
"#;

fn config() -> &'static Config {
    static CONFIG_ONCE: LazyLock<Config> =
        LazyLock::new(|| Config::parse(CONFIG, "spellings_props", None).expect("the test config is valid"));
    &CONFIG_ONCE
}

fn rule<'c>(config: &'c Config, name: &str) -> &'c Rule {
    config.policy.rules.iter().find(|r| &*r.name == name).expect("a rule of the test config")
}

/// Headers of a forwardAuth check for `method target` on `host`.
fn check(method: &str, target: &[u8], host: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-method", HeaderValue::from_str(method).unwrap());
    h.insert("x-forwarded-host", HeaderValue::from_str(host).unwrap());
    h.insert("x-forwarded-uri", HeaderValue::from_bytes(target).unwrap());
    h
}

/// Whether rule `name` applies to `method target` (the request must be readable).
fn applies(config: &Config, name: &str, method: &str, target: &str) -> bool {
    let headers = check(method, target.as_bytes(), "api.example.com");
    let req = Forwarded::from_headers(&headers, "GET", "/").unwrap_or_else(|e| panic!("{target}: {e}"));
    rule(config, name).matches(&req)
}

#[test]
fn rules_and_exemptions_on_each_spelling() {
    let config = config();
    // (target, summarize rule applies, docs exemption applies)
    let table: &[(&str, bool, bool)] = &[
        ("/api/summarize", true, false),
        ("/api/summarize/", true, false),
        ("/api/summarize?x=1", true, false),
        ("/api/%73ummarize", true, false),
        ("/api//summarize", true, false),
        ("/docs/../api/summarize", true, false),
        // Issue 9: these were exempt or missed the rule; nginx serves all three as
        // /api/summarize.
        ("/docs/..%2Fapi%2Fsummarize", true, false),
        ("/docs%2F..%2Fapi%2Fsummarize", true, false),
        ("/api/x%2F..%2Fsummarize", true, false),
        // Stricter than nginx, as other backends read them.
        ("/docs/..%5Capi%5Csummarize", true, false),
        ("/docs/..;/api/summarize", true, false),
        ("/api;v=1/summarize", true, false),
        ("/docs/..%252Fapi%252Fsummarize", true, false),
        ("/API/Summarize", true, false),
        // Data slashes: one segment to Express and Go's ServeMux, which route by the prefix.
        ("/api/summarize/..%2F..%2Fdocs", true, false),
        // What stays exempt: every reading inside /docs.
        ("/docs", false, true),
        ("/docs/guide", false, true),
        ("/docs/a%2Fb", false, true),
        ("/docs/x/../y", false, true),
        ("/docs/%2e/guide", false, true),
        // Case-sensitive backends route /DOCS elsewhere: not exempt.
        ("/DOCS/guide", false, false),
        ("/docsx", false, false),
    ];
    for (target, summarize, docs) in table {
        assert_eq!(applies(config, "summarize", "POST", target), *summarize, "summarize on {target}");
        assert_eq!(applies(config, "docs", "POST", target), *docs, "docs on {target}");
    }
}

#[test]
fn globs_match_any_case_and_an_optional_trailing_slash() {
    let config = config();
    for target in ["/api/v1/export", "/API/V1/Export", "/api/v1/export/", "/api/v1%2F..%2Fv2/export"] {
        assert!(applies(config, "export", "GET", target), "{target}");
    }
    assert!(!applies(config, "export", "GET", "/api/v1/x/export"));
}

#[test]
fn host_rules_see_hosts_as_traefiks_host_matcher_does() {
    let config = config();
    for host in ["api.example.com", "API.Example.com", "api.example.com.", "api.example.com.:443"] {
        let headers = check("GET", b"/x", host);
        let req = Forwarded::from_headers(&headers, "GET", "/").unwrap();
        assert!(rule(config, "hosted").matches(&req), "{host}");
    }
    let headers = check("GET", b"/x", "api.example.com..");
    assert!(!rule(config, "hosted").matches(&Forwarded::from_headers(&headers, "GET", "/").unwrap()));
}

#[test]
fn a_raw_byte_in_the_query_does_not_hide_the_path() {
    let config = config();
    let headers = check("POST", b"/api/summarize?q=caf\xe9", "api.example.com");
    let req = Forwarded::from_headers(&headers, "GET", "/").unwrap();
    assert!(rule(config, "summarize").matches(&req));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Any spelling nginx routes to /api/summarize is counted by the rule on /api/summarize,
    /// and is never exempt as /docs; a spelling of /docs/guide stays inside /docs for rules.
    #[test]
    fn every_nginx_spelling_of_a_path_is_matched_by_its_rule(
        spelling in nginx_spelling(&["api", "summarize"]),
        docs in nginx_spelling(&["docs", "guide"]),
    ) {
        let config = config();
        prop_assert!(applies(config, "summarize", "POST", &spelling), "summarize missed {}", spelling);
        prop_assert!(!applies(config, "docs", "POST", &spelling), "docs exempted {}", spelling);
        prop_assert!(!applies(config, "summarize", "POST", &docs), "summarize matched {}", docs);
    }

    /// A detour through /docs never makes a request exempt: `/docs/<anything>/..` spellings
    /// that leave /docs are charged.
    #[test]
    fn a_detour_through_an_exempt_prefix_is_not_exempt(
        spelling in nginx_spelling(&["api", "summarize"]),
        via in prop_oneof![Just("/docs/.."), Just("/docs%2F.."), Just("/docs/..%2F"), Just("/docs/%2e%2e")],
    ) {
        let config = config();
        let target = format!("{via}{spelling}");
        prop_assert!(applies(config, "summarize", "POST", &target), "summarize missed {}", target);
        prop_assert!(!applies(config, "docs", "POST", &target), "docs exempted {}", target);
    }

    /// No input panics: any bytes as X-Forwarded-Uri either read or are refused.
    #[test]
    fn any_forwarded_uri_reads_or_is_refused(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&raw) {
            headers.insert("x-forwarded-uri", v);
            if let Ok(req) = Forwarded::from_headers(&headers, "GET", "/") {
                prop_assert!(req.path.readings().all(|r| r.starts_with('/')));
                prop_assert!(req.path.readings().count() <= 32);
            }
        }
    }
}

//! The plan header and its secret: `identity.plan_header` names the caller's plan only beside
//! the secret of `identity.plan_header_secret_file`, and `check-config` warns about a plan
//! header trusted without one. Also the `identity.ambiguous` key.

use std::process::Command;

use http::{HeaderMap, HeaderValue};
use quotagate::config::Config;
use quotagate::identity::{Ambiguous, Caller, Key};

const SECRET: &str = "0123456789abcdef-plan-secret";

fn config_with(identity: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    let text = format!(
        "[identity]\n{identity}\n[defaults]\nplan = \"free\"\n\
         [plans.free]\nlimits = [{{ requests = 5, per = \"day\" }}]\n[plans.internal]\nunlimited = true\n"
    );
    (dir, text)
}

fn parse(identity: &str) -> Result<Config, Vec<String>> {
    let (dir, text) = config_with(identity);
    Config::parse(&text, "test.toml", Some(dir.path())).map_err(|e| e.problems())
}

/// The config's warnings about the plan header.
fn plan_warnings(config: &Config) -> Vec<String> {
    config.warnings.iter().filter(|w| w.key.starts_with("identity.plan")).map(|w| w.to_string()).collect()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn the_plan_header_counts_only_beside_the_secret() {
    let config =
        parse("plan_header = \"X-Plan\"\nplan_header_secret_file = \"secret\"").expect("a valid config");
    let p = &config.policy;
    let caller = Caller::Token(Key(1));
    let plan = |pairs: &[(&str, &str)]| &*p.plan(p.plan_of(&caller, &headers(pairs)).unwrap()).name;
    assert_eq!(plan(&[("x-plan", "internal")]), "free", "no secret");
    assert_eq!(plan(&[("x-plan", "internal"), ("x-quotagate-plan-secret", "wrong")]), "free");
    assert_eq!(
        plan(&[("x-plan", "internal"), ("x-quotagate-plan-secret", &SECRET[..SECRET.len() - 1])]),
        "free"
    );
    assert_eq!(plan(&[("x-plan", "internal"), ("x-quotagate-plan-secret", SECRET)]), "internal");
    // Repeated, the secret or the plan header is not trusted.
    let twice =
        [("x-plan", "internal"), ("x-quotagate-plan-secret", SECRET), ("x-quotagate-plan-secret", "x")];
    assert_eq!(plan(&twice), "free");
    let twice = [("x-plan", "internal"), ("x-plan", "internal"), ("x-quotagate-plan-secret", SECRET)];
    assert_eq!(plan(&twice), "free");
    assert_eq!(plan_warnings(&config), Vec::<String>::new());
    assert!(!format!("{p:?}").contains(SECRET), "the secret is in the policy's Debug output");
}

#[test]
fn the_secret_header_can_be_renamed() {
    let config = parse(
        "plan_header = \"X-Plan\"\nplan_header_secret_file = \"secret\"\nplan_secret_header = \"X-Auth-Secret\"",
    )
    .expect("a valid config");
    let p = &config.policy;
    let caller = Caller::Token(Key(1));
    let with = headers(&[("x-plan", "internal"), ("x-auth-secret", SECRET)]);
    assert_eq!(&*p.plan(p.plan_of(&caller, &with).unwrap()).name, "internal");
}

#[test]
fn a_plan_header_without_a_secret_is_trusted_with_a_warning() {
    let config = parse("plan_header = \"X-Plan\"").expect("a valid config");
    let warnings = plan_warnings(&config);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("identity.plan_header: x-plan is trusted without"), "{}", warnings[0]);
    let p = &config.policy;
    let plan = p.plan_of(&Caller::Token(Key(1)), &headers(&[("x-plan", "internal")])).unwrap();
    assert_eq!(&*p.plan(plan).name, "internal");
}

#[test]
fn check_config_prints_the_warning() {
    let (dir, text) = config_with("plan_header = \"X-Plan\"");
    let file = dir.path().join("q.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quotagate")).arg("check-config").arg(&file).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: identity.plan_header: x-plan is trusted without"), "{stderr}");
    // The shipped configs trust no plan header without a secret.
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for entry in std::fs::read_dir(configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&path).unwrap();
            assert_eq!(plan_warnings(&config), Vec::<String>::new(), "{}", path.display());
        }
    }
}

#[test]
fn bad_secret_settings_are_refused() {
    let cases = [
        ("plan_header = \"X-Plan\"\nplan_header_secret_file = \"nope\"", "identity.plan_header_secret_file: cannot read"),
        ("plan_header_secret_file = \"secret\"", "identity.plan_header_secret_file: set identity.plan_header too"),
        ("plan_header = \"X-Plan\"\nplan_secret_header = \"X-S\"", "identity.plan_secret_header: set identity.plan_header_secret_file too"),
        (
            "plan_header = \"X-Plan\"\nplan_header_secret_file = \"secret\"\nplan_secret_header = \"bad header\"",
            "identity.plan_secret_header: invalid header name \"bad header\"",
        ),
        ("ambiguous = \"last\"", "identity.ambiguous: unknown value \"last\""),
    ];
    for (identity, expected) in cases {
        let problems = parse(identity).unwrap_err();
        assert!(problems.iter().any(|p| p.starts_with(expected)), "{identity}: {problems:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short"), "too-short").unwrap();
    let text = "[identity]\nplan_header = \"X-Plan\"\nplan_header_secret_file = \"short\"\n";
    let problems = Config::parse(text, "t", Some(dir.path())).unwrap_err().problems();
    assert!(problems.iter().any(|p| p.contains("at least 16 bytes long (got 9 bytes)")), "{problems:?}");
    assert!(!problems.iter().any(|p| p.contains("too-short")), "the secret is in a message: {problems:?}");
}

#[test]
fn ambiguous_defaults_to_reject() {
    assert_eq!(parse("").unwrap().identity.ambiguous, Ambiguous::Reject);
    assert_eq!(parse("ambiguous = \"first\"").unwrap().identity.ambiguous, Ambiguous::First);
}

//! Config validation: every example config passes, and each bad input gets its exact message.

mod support;

use std::path::Path;

use quotagate::config::Config;

const BASE: &str = r#"
[plans.free]
limits = [{ requests = 10, per = "minute" }]
"#;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, "test.toml", None) {
        Ok(_) => vec![],
        Err(e) => e.problems(),
    }
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "expected the example configs in {}", dir.display());
}

#[test]
fn the_embedded_default_gives_ten_requests_a_minute() {
    let config = Config::embedded();
    let free = config.policy.plan(config.policy.default_plan);
    assert_eq!(&*free.name, "free");
    assert_eq!(free.limits.len(), 1);
    assert_eq!(free.limits[0].quota(), 10);
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
}

#[test]
fn bad_inputs_get_exact_messages() {
    let table: &[(&str, &[&str])] = &[
        (
            r#"[plans.free]
limits = [{ requests = 10, per = "minute" }, { requests = 0, per = "day" }]"#,
            &["plans.free.limits[1].requests: must be greater than 0 (got 0)"],
        ),
        (
            r#"[plans.free]
limits = [{ requests = 10, per = "fortnight" }]"#,
            &[r#"plans.free.limits[0].per: unknown window "fortnight" (expected second, minute, hour, day, week, month or whole seconds like "15m")"#],
        ),
        (
            r#"[plans.free]
limits = [{ requests = 10, per = "minute", algorithm = "leaky" }]"#,
            &[r#"plans.free.limits[0].algorithm: unknown algorithm "leaky" (expected "fixed" or "sliding")"#],
        ),
        (
            r#"[plans.free]
limits = [{ requests = 10, average = 5 }]"#,
            &[r#"plans.free.limits[0]: mixes window keys and bucket keys (a limit is { requests, per } (with algorithm = "fixed" or "sliding"), { average, period, burst } or { concurrent, hold })"#],
        ),
        (
            r#"[plans.free]
limits = [{ average = -1, period = "soon", burst = -1 }]"#,
            &[
                "plans.free.limits[0].average: must be greater than 0 (got -1)",
                r#"plans.free.limits[0].period: invalid duration "soon" (expected e.g. "30s", "1m", "2h")"#,
                "plans.free.limits[0].burst: must be greater than 0 (got -1)",
            ],
        ),
        (
            r#"[plans.free]
limits = [{ requests = 5000000000, per = "month" }]"#,
            &["plans.free.limits[0].requests: must be at most 4294967295 (got 5000000000)"],
        ),
        (
            r#"[plans.free]
limits = [{ requests = 10, per = "minute" }, { requests = 20, per = "60s" }]"#,
            &[r#"plans.free.limits[1]: has the same window as limit "minute" in this list (merge them)"#],
        ),
        (
            "[plans.free]\nunlimited = false",
            &["plans.free: has no limits (add limits, or set unlimited = true)"],
        ),
        (
            "[defaults]\nplan = \"gold\"\n[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]",
            &[r#"defaults.plan: unknown plan "gold" (known: "free")"#],
        ),
        (
            "[server]\nlisen = \"0.0.0.0:80\"\nlisten = \"nowhere\"\n[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[store]\nkinds = 1",
            &[
                "server.lisen: unknown key",
                "store.kinds: unknown key",
                r#"server.listen: invalid address "nowhere" (expected IP:PORT, e.g. "0.0.0.0:8080")"#,
            ],
        ),
        (
            "[identity]\nsources = [\"bearer\", \"jwt\", \"header:\"]\nmissing = \"ip\"\n[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]",
            &[
                r#"identity.sources[1]: unknown source "jwt" (expected "bearer", "token", "header:NAME", "query:NAME", "cookie:NAME" or "host")"#,
                r#"identity.sources[2]: unknown source "header:" (expected "bearer", "token", "header:NAME", "query:NAME", "cookie:NAME" or "host")"#,
                r#"identity.missing: "ip" limits callers without a token under plan "anonymous", which is not defined (known: "free")"#,
            ],
        ),
        (
            "[identity]\nhash_key = \"short\"\n[identity.client_ip]\ndepth = 1\nexcluded = [\"10.0.0.0/8\"]\n[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]",
            &[
                "identity.client_ip: set either depth or excluded, not both (as in Traefik's ipStrategy)",
                "identity.hash_key: must be at least 16 bytes long (got 5 bytes)",
            ],
        ),
        (
            "[identity]\nallow_ips = [\"10.0.0.0/33\"]\n[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]",
            &[r#"identity.allow_ips[0]: invalid network "10.0.0.0/33" (expected an IP or CIDR, e.g. "10.0.0.0/8")"#],
        ),
        (
            "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[tokens]\n\"secret-token-1\" = \"gold\"",
            &[r#"tokens[fingerprint 043e5ccb]: unknown plan "gold" (known: "free")"#],
        ),
        (
            "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[[rules]]\npath_prefix = \"api\"\n[[rules]]\nname = \"x\"\npath_prefix = \"api\"\nmethods = [\"P0ST\"]\nlimits.gold = [{ requests = 1, per = \"second\" }]\n[[rules]]\nname = \"x\"\nexempt = true\nlimits.free = [{ requests = 1, per = \"second\" }]",
            &[
                "rules[0].name: missing (every rule needs a name: its counters are kept under it)",
                "rules[1].path_prefix: must start with '/' (got \"api\")",
                "rules[1].methods[0]: invalid method \"P0ST\"",
                r#"rules[1].limits.gold: unknown plan "gold" (known: "free", or "*" for any plan)"#,
                r#"rules[2].name: "x" is used by an earlier rule"#,
                "rules[2].limits: an exempt rule has no limits (remove limits or exempt)",
            ],
        ),
        (
            "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[store]\nkind = \"etcd\"\nmax_keys = 0",
            &["store.max_keys: must be greater than 0 (got 0)", r#"store.kind: unknown store "etcd" (expected "memory" or "redis")"#],
        ),
        (
            "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"http://:hunter2@cache:6379\"\non_error = \"panic\"\nbreaker_threshold = 0\ncommand_timeout = \"0s\"",
            &[
                r#"store.redis.url: unsupported scheme "http" (expected redis:// or rediss://)"#,
                r#"store.redis.on_error: unknown value "panic" (expected "local", "allow" or "deny")"#,
                "store.redis.breaker_threshold: must be between 1 and 1000 (got 0)",
                "store.redis.command_timeout: must be longer than 0s",
            ],
        ),
        (
            "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[store]\nkind = \"redis\"",
            &[r#"store.redis: missing: kind = "redis" needs [store.redis] with url or cluster"#],
        ),
        (
            "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"redis://x:6379\"\npassword_env = \"QUOTAGATE_TEST_UNSET_VARIABLE\"\n[store.memory]\nsnapshot = { path = \"c.snap\", interval = \"100ms\" }",
            &[
                "store.memory.snapshot.interval: must be at least 1s (got 100ms)",
                "store.redis.password_env: environment variable QUOTAGATE_TEST_UNSET_VARIABLE is not set",
            ],
        ),
    ];
    for (text, expected) in table {
        let got = problems(text);
        assert_eq!(got, *expected, "for config:\n{text}");
    }
}

#[test]
fn all_problems_are_reported_at_once_with_the_file_name() {
    let err = Config::parse(
        "[plans.free]\nlimits = [{ requests = 0, per = \"minute\" }, { requests = 1, per = \"eon\" }]",
        "config/bad.toml",
        None,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("invalid config config/bad.toml\n  plans.free.limits[0].requests: must be greater than 0 (got 0)\n  plans.free.limits[1].per: unknown window"), "{text}");
}

#[test]
fn syntax_errors_give_a_position_but_not_the_line() {
    let err =
        Config::parse(&format!("{BASE}[tokens]\nsecret-token-xyz = pro\n"), "t.toml", None).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("line 5, column"), "{text}");
    assert!(!text.contains("secret-token-xyz"), "a token leaked into: {text}");
}

#[test]
fn tokens_never_appear_in_messages() {
    let err = Config::parse(&format!("{BASE}[tokens]\n\"my secret token\" = \"nope\"\n"), "t.toml", None)
        .unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("my secret token"), "{text}");
    assert!(text.contains("could never be presented"), "{text}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let err = Config::load(Path::new("/nonexistent/quotagate.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read /nonexistent/quotagate.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn redis_passwords_never_appear_in_messages_or_summaries() {
    let text = "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"redis://:hunter2@cache:6379/0\"";
    let config = Config::parse(text, "t.toml", None).unwrap();
    assert!(config.summary().contains("redis://:***@cache:6379/0"), "{}", config.summary());
    assert!(!config.summary().contains("hunter2"));
    let debug = format!("{:?}", config.store);
    assert!(!debug.contains("hunter2") && debug.contains(":***@cache"), "{debug}");
    let bad = text.replace("redis://", "http://");
    let err = Config::parse(&bad, "t.toml", None).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn tls_files_get_clear_messages_naming_the_file() {
    let pki = support::certs::Pki::new("config");
    let dir = pki.dir();
    let d = dir.display().to_string();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    std::fs::write(dir.join("secret.key"), "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==\n")
        .unwrap();
    std::fs::write(
        dir.join("bad64.key"),
        "-----BEGIN PRIVATE KEY-----\nsecret!material\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    pki.issue_server("other");
    let tls =
        |body: &str| format!("[server]\nadmin_listen = \"127.0.0.1:8081\"\n[server.tls]\n{body}\n{BASE}");
    let table: &[(String, Vec<String>)] = &[
        (tls(""), vec![
            "server.tls.cert: missing (path to a PEM certificate chain, leaf first)".into(),
            "server.tls.key: missing (path to the PEM private key of the certificate)".into(),
        ]),
        (tls("cert = \"nope.pem\"\nkey = \"server.key\""), vec![
            format!("server.tls.cert: cannot read {d}/nope.pem: No such file or directory (os error 2)"),
        ]),
        (tls("cert = \"empty.pem\"\nkey = \"empty.pem\""), vec![
            format!("server.tls.cert: {d}/empty.pem: no PEM certificate found"),
            format!("server.tls.key: {d}/empty.pem: no PEM private key found"),
        ]),
        (tls("cert = \"server.pem\"\nkey = \"secret.key\""), vec![
            format!("server.tls.key: {d}/secret.key: a PEM section has no END line"),
        ]),
        (tls("cert = \"server.pem\"\nkey = \"bad64.key\""), vec![
            format!("server.tls.key: {d}/bad64.key: a PEM section is not valid base64"),
        ]),
        (tls("cert = \"server.pem\"\nkey = \"other.key\""), vec![
            format!("server.tls: the key in {d}/other.key does not belong to the certificate in {d}/server.pem"),
        ]),
        (tls("cert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"empty.pem\""), vec![
            format!("server.tls.client_ca: {d}/empty.pem: no PEM certificate found"),
        ]),
        (tls("cert = \"server.pem\"\nkey = \"server.key\"\nciphers = \"all\""), vec![
            "server.tls.ciphers: unknown key".into(),
        ]),
        (format!("[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n{BASE}"), vec![
            r#"server.admin_listen: required when server.tls is set: /healthz (quotagate healthcheck), /readyz and /metrics stay plain HTTP there (e.g. "0.0.0.0:8081")"#.into(),
        ]),
    ];
    for (text, expected) in table {
        let got = match Config::parse(text, "test.toml", Some(dir)) {
            Ok(_) => vec![],
            Err(e) => e.problems(),
        };
        assert_eq!(&got, expected, "for config:\n{text}");
        for line in &got {
            assert!(!line.contains("c2VjcmV0") && !line.contains("secret!"), "key material in {line}");
        }
    }

    let ok = Config::parse(
        &tls("cert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\""),
        "test.toml",
        Some(dir),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok.tls.is_some());
    assert!(ok.files.contains(&dir.join("server.pem")), "a rotated certificate triggers a reload");
    assert!(
        ok.summary()
            .ends_with("listen 0.0.0.0:8080 (TLS, h2, client certificates required), admin 127.0.0.1:8081"),
        "{}",
        ok.summary()
    );
}

#[test]
fn an_empty_file_says_there_is_no_plan_and_how_to_add_one() {
    assert_eq!(
        problems(""),
        [
            r#"plans: no plan is defined (add one, e.g. [plans.free] with limits = [{ requests = 10, per = "minute" }])"#
        ]
    );
    assert_eq!(
        problems("[tokens]\n\"tok-1\" = \"pro\""),
        [
            r#"plans: no plan is defined (add one, e.g. [plans.free] with limits = [{ requests = 10, per = "minute" }])"#,
            r#"tokens[fingerprint 46c41558]: unknown plan "pro" (no plan is defined)"#,
        ]
    );
}

#[test]
fn an_empty_source_list_is_refused_unless_callers_are_limited_by_ip() {
    assert_eq!(
        problems(&format!("[identity]\nsources = []\n{BASE}")),
        [
            r#"identity.sources: is empty, so every request would be refused as carrying no token (list where tokens are found, e.g. ["bearer"], or set identity.missing = "ip" to limit by client IP alone)"#
        ]
    );
    let by_ip = format!("[identity]\nsources = []\nmissing = \"ip\"\n[plans.anonymous]\nlimits = [{{ requests = 1, per = \"second\" }}]\n{BASE}");
    let config = Config::parse(&by_ip, "t.toml", None).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.identity.sources.is_empty());
}

#[test]
fn a_rule_host_must_be_a_host_name() {
    let rule = |host: &str| {
        format!("{BASE}[[rules]]\nname = \"r\"\nhost = {host:?}\nlimits.free = [{{ requests = 1, per = \"second\" }}]")
    };
    assert_eq!(problems(&rule("")), ["rules[0].host: is empty (leave host out to match every host)"]);
    assert_eq!(problems(&rule(".")), ["rules[0].host: is empty (leave host out to match every host)"]);
    for bad in ["https://api.example.com", "api.example.com/v1", "api.example.com:8443", "api example.com"] {
        assert_eq!(
            problems(&rule(bad)),
            [format!(
                "rules[0].host: is not a host name (got {bad:?}; write the name alone, without scheme, port or path, e.g. \"api.example.com\")"
            )],
        );
    }
    // An IPv6 literal is a host, not a glob with a character class.
    let v6 = Config::parse(&rule("[::1]"), "t.toml", None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(format!("{:?}", v6.policy.rules[0].host), r#"Exact("[::1]")"#);
    // A fully qualified name is the same host, as Traefik's Host() matcher has it.
    let config = Config::parse(&rule("API.example.com."), "t.toml", None).unwrap_or_else(|e| panic!("{e}"));
    let same = Config::parse(&rule("api.example.com"), "t.toml", None).unwrap();
    assert_eq!(format!("{:?}", config.policy.rules[0].host), format!("{:?}", same.policy.rules[0].host));
}

#[test]
fn a_token_in_both_token_lists_with_two_plans_is_refused_by_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens.toml"),
        "[tokens]\n\"shared-token-1\" = \"pro\"\n\"file-only\" = \"pro\"\n",
    )
    .unwrap();
    let config = |plan: &str| {
        format!(
            "tokens_file = \"tokens.toml\"\n{BASE}[plans.pro]\nlimits = [{{ requests = 99, per = \"second\" }}]\n[tokens]\n\"shared-token-1\" = \"{plan}\"\n"
        )
    };
    let err = Config::parse(&config("free"), "t.toml", Some(dir.path())).unwrap_err();
    let listed = err.problems();
    let fingerprint = {
        let ok = Config::parse(&config("pro"), "t.toml", Some(dir.path())).unwrap();
        let hash = ok.identity.hasher.token(b"shared-token-1");
        hash.fingerprint().to_string()
    };
    assert_eq!(
        listed,
        [format!(
            "tokens[fingerprint {fingerprint}]: is listed in [tokens] with plan \"free\" and in tokens_file with plan \"pro\" (keep one)"
        )]
    );
    assert!(!err.to_string().contains("shared-token-1"), "{err}");

    // The same plan twice is harmless, but said.
    let ok = Config::parse(&config("pro"), "t.toml", Some(dir.path())).unwrap();
    let warnings: Vec<String> = ok.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.contains(&format!(
            "tokens[fingerprint {fingerprint}]: is listed in [tokens] and in tokens_file, both with plan \"pro\""
        )),
        "{warnings:?}"
    );
    assert_eq!(ok.policy.tokens.len(), 2);
}

#[test]
fn type_errors_are_all_reported_with_their_key_paths_beside_other_problems() {
    let text = r#"
[server]
listen = 8080
watch_interval = "2s"

[identity]
sources = ["bearer", 3, "header:X-API-Key"]
hash_key = 1234567890123456789
allow_ips = [10, 11]

[plans.free]
limits = [{ requests = "ten", per = "minute" }, { requests = 0, per = "day" }, "hourly"]

[plans.pro]
unlimited = "yes"

[tokens]
"tok-number" = 7

[[rules]]
name = "r"
nmae = "typo"
methods = "POST"
limits.free = [{ requests = 1, per = "second" }]

[store]
max_keys = 1.5
kind = "redis"
[store.redis]
cluster = "redis://:hunter2@cache:6379"
"#;
    assert_eq!(
        problems(text),
        [
            "server.listen: must be a string (got 8080)",
            "identity.sources[1]: must be a string (got 3)",
            "identity.hash_key: must be a string (got a number or boolean)",
            "identity.allow_ips[0]: must be a string (got 10)",
            "identity.allow_ips[1]: must be a string (got 11)",
            r#"plans.free.limits[0].requests: must be an integer (got "ten")"#,
            r#"plans.free.limits[2]: must be a table (got "hourly")"#,
            r#"plans.pro.unlimited: must be a boolean (got "yes")"#,
            r#"rules[0].methods: must be an array (got "POST")"#,
            "store.max_keys: must be an integer (got 1.5)",
            r#"store.redis.cluster: must be an array (got "redis://:***@cache:6379")"#,
            r#"rules[0].nmae: unknown key"#,
            "plans.free.limits[1].requests: must be greater than 0 (got 0)",
            "tokens[fingerprint 2f68c70c]: must be a plan name, a string (got 7)",
        ]
    );
    let err = Config::parse(text, "t.toml", None).unwrap_err().to_string();
    assert!(!err.contains("1234567890123456789"), "the hash key leaked: {err}");
    assert!(!err.contains("hunter2"), "a password leaked: {err}");
}

#[test]
fn the_built_in_hash_key_is_a_warning() {
    let config = Config::parse(BASE, "t.toml", None).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["identity.hash_key: not set, so the built-in key is used: whoever reads Redis keys or a snapshot can test guessed tokens against them (set identity.hash_key_file to a file of 16 bytes or more, e.g. from `openssl rand -hex 32`)"]
    );
    let keyed =
        Config::parse(&format!("[identity]\nhash_key = \"0123456789abcdef\"\n{BASE}"), "t.toml", None)
            .unwrap();
    assert!(keyed.warnings.is_empty(), "{:?}", keyed.warnings);
}

/// Every scalar of `value`, by path, for the property below.
fn leaves(value: &toml::Value, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let mut p = path.clone();
                p.push(k.clone());
                leaves(v, p, out);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let mut p = path.clone();
                p.push(format!("#{i}"));
                leaves(v, p, out);
            }
        }
        _ => out.push(path),
    }
}

fn replace(value: &mut toml::Value, path: &[String], with: toml::Value) {
    let Some((first, rest)) = path.split_first() else {
        *value = with;
        return;
    };
    let next = match (value, first.strip_prefix('#')) {
        (toml::Value::Array(a), Some(i)) => &mut a[i.parse::<usize>().unwrap()],
        (toml::Value::Table(t), None) => t.get_mut(first).unwrap(),
        _ => unreachable!("paths come from leaves()"),
    };
    replace(next, rest, with);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Any values of any type at any keys of the full example: a report, never a panic or a
    /// hang, and a key path for every problem.
    #[test]
    fn values_of_any_type_anywhere_get_a_report(
        picks in proptest::collection::vec((0usize..1000, 0u8..7), 1..6),
    ) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let text = std::fs::read_to_string(dir.join("quotagate.toml")).unwrap();
        let mut value: toml::Value = toml::from_str(&text).unwrap();
        let mut paths = Vec::new();
        leaves(&value, Vec::new(), &mut paths);
        for (at, kind) in picks {
            let with = match kind {
                0 => toml::Value::Integer(-3),
                1 => toml::Value::String("x".into()),
                2 => toml::Value::Boolean(true),
                3 => toml::Value::Float(0.5),
                4 => toml::Value::Array(vec![toml::Value::Integer(1), toml::Value::String("a".into())]),
                5 => toml::Value::Table(toml::Table::new()),
                _ => toml::Value::Array(Vec::new()),
            };
            replace(&mut value, &paths[at % paths.len()], with);
        }
        let mutated = toml::to_string(&value).unwrap();
        if let Err(e) = Config::parse(&mutated, "t.toml", Some(&dir)) {
            let problems = e.problems();
            proptest::prop_assert!(!problems.is_empty());
            for p in &problems {
                proptest::prop_assert!(p.contains(": "), "{p}");
            }
        }
    }
}

#[test]
fn windows_and_buckets_longer_than_100_days_are_refused() {
    // The stores count in exact integer nanoseconds, the Redis script in doubles: 100 days
    // keeps every wait below 2^53 ns.
    let text = r#"[plans.free]
limits = [
  { requests = 10, per = "365d" },
  { requests = 10, per = "100d", name = "longest" },
  { average = 1, period = "30d", burst = 4 },
  { average = 1, period = "25d", burst = 4, name = "deep" },
  { average = 1000, period = "1s", burst = 4294967295, name = "huge" },
]"#;
    assert_eq!(
        problems(text),
        [
            "plans.free.limits[0].per: a window spans at most 100 days (got 365 days)",
            "plans.free.limits[2]: a bucket's burst * period / average spans at most 100 days (got 120 days)",
        ]
    );
}

/// A config with a concurrency limit in a plan and in a rule, a rule cost, limits counting
/// requests, and the ticket listener: what part 7 adds, on top of `BASE`.
const TICKETS: &str = r#"
[server]
tickets_listen = "127.0.0.1:8082"

[plans.pro]
limits = [
  { requests = 600, per = "minute", counts = "requests" },
  { requests = 1_000_000, per = "month" },
  { concurrent = 4, hold = "2m" },
]

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
cost = 5
limits.pro = [{ concurrent = 1 }]
limits.free = [{ requests = 2, per = "minute", counts = "requests" }]
"#;

#[test]
fn concurrency_limits_costs_and_counts_are_read_as_written() {
    use quotagate::limiter::{Algorithm, Counts, SECOND};
    let config = Config::parse(&format!("{BASE}{TICKETS}"), "t.toml", None).unwrap_or_else(|e| panic!("{e}"));
    let policy = &config.policy;
    let pro = policy.plan(policy.plan_named("pro").unwrap());
    let shapes: Vec<_> = pro.limits.iter().map(|l| (&*l.name, l.counts, l.algorithm)).collect();
    let four = std::num::NonZeroU32::new(4).unwrap();
    assert_eq!(shapes[0].1, Counts::Requests);
    assert_eq!(shapes[1].1, Counts::Cost, "limits count cost by default");
    assert_eq!(
        shapes[2],
        ("concurrent", Counts::Cost, Algorithm::Concurrent { max: four, hold: 120 * SECOND })
    );
    let rule = &policy.rules[0];
    assert_eq!(rule.cost, 5);
    let pro_id = policy.plan_named("pro").unwrap();
    let one = std::num::NonZeroU32::new(1).unwrap();
    let limit = &rule.per_plan[usize::from(pro_id.0)].as_ref().unwrap()[0];
    assert_eq!(&*limit.name, "summarize.concurrent", "a rule's concurrency limit is named after the rule");
    assert_eq!(
        limit.algorithm,
        Algorithm::Concurrent { max: one, hold: 60 * SECOND },
        "without a hold, answers.ticket_hold (1m by default) applies"
    );
    assert_eq!(config.server.tickets_listen, Some("127.0.0.1:8082".parse().unwrap()));
    assert_eq!(config.server.tickets_token, None);
    assert!(
        config.summary().ends_with("listen 0.0.0.0:8080, tickets 127.0.0.1:8082"),
        "{}",
        config.summary()
    );

    // `ticket_hold` is the default hold of every concurrency limit that sets none.
    let held = format!("{BASE}{TICKETS}[answers]\ntickets = \"always\"\nticket_hold = \"90s\"\n");
    let config = Config::parse(&held, "t.toml", None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.answers.tickets, quotagate::config::Tickets::Always);
    assert_eq!(config.answers.ticket_hold, std::time::Duration::from_secs(90));
    let limit = &config.policy.rules[0].per_plan[usize::from(pro_id.0)].as_ref().unwrap()[0];
    assert_eq!(limit.algorithm, Algorithm::Concurrent { max: one, hold: 90 * SECOND });
    // The defaults: tickets only for requests holding a slot, kept a minute.
    let plain = Config::parse(BASE, "t.toml", None).unwrap();
    assert_eq!(plain.answers.tickets, quotagate::config::Tickets::Concurrent);
    assert_eq!(plain.answers.ticket_hold, std::time::Duration::from_secs(60));
    assert_eq!(plain.policy.plans[0].limits[0].counts, Counts::Cost);
    assert_eq!(plain.server.tickets_listen, None);
}

#[test]
fn bad_concurrency_cost_and_ticket_values_get_exact_messages() {
    let listen = "[server]\ntickets_listen = \"127.0.0.1:8082\"\n";
    let plan = |limits: &str| format!("{listen}[plans.free]\nlimits = [{limits}]\n");
    let rule = |body: &str| format!("{listen}{BASE}[[rules]]\nname = \"r\"\npath_prefix = \"/r\"\n{body}\n");
    let table: Vec<(String, Vec<&str>)> = vec![
        (plan("{ concurrent = 0, hold = \"soon\" }"), vec![
            "plans.free.limits[0].concurrent: must be greater than 0 (got 0)",
            r#"plans.free.limits[0].hold: invalid duration "soon" (expected e.g. "30s", "1m", "2h")"#,
        ]),
        (plan("{ concurrent = 2, hold = \"0s\" }, { requests = 1, per = \"second\" }"), vec![
            "plans.free.limits[0].hold: must be longer than 0s",
        ]),
        (plan("{ concurrent = 2, hold = \"101d\" }"), vec![
            r#"plans.free.limits[0].hold: must be at most 100 days (got "101d")"#,
        ]),
        (plan("{ hold = \"1m\" }"), vec![
            "plans.free.limits[0].concurrent: missing (how many requests may be in flight at once)",
        ]),
        (plan("{ concurrent = 2, requests = 5, per = \"minute\" }"), vec![
            r#"plans.free.limits[0]: mixes window keys and concurrency keys (a limit is { requests, per } (with algorithm = "fixed" or "sliding"), { average, period, burst } or { concurrent, hold })"#,
        ]),
        (plan("{ concurrent = 2, average = 5 }"), vec![
            r#"plans.free.limits[0]: mixes bucket keys and concurrency keys (a limit is { requests, per } (with algorithm = "fixed" or "sliding"), { average, period, burst } or { concurrent, hold })"#,
        ]),
        (plan("{ concurrent = 2, average = 0 }"), vec![
            r#"plans.free.limits[0]: mixes bucket keys and concurrency keys (a limit is { requests, per } (with algorithm = "fixed" or "sliding"), { average, period, burst } or { concurrent, hold })"#,
        ]),
        (plan("{ concurrent = 2, counts = \"requests\" }"), vec![
            "plans.free.limits[0].counts: a concurrency limit holds one slot per request, whatever the request costs (remove counts)",
        ]),
        (plan("{ concurrent = 2 }, { concurrent = 3, name = \"more\" }"), vec![
            r#"plans.free.limits[1]: is a second concurrency limit in this list, beside "concurrent" (a list holds at most one)"#,
        ]),
        (plan("{ requests = 5, per = \"minute\", counts = \"tokens\" }, { average = 0, counts = \"each\" }"), vec![
            r#"plans.free.limits[0].counts: unknown value "tokens" (expected "cost" or "requests")"#,
            r#"plans.free.limits[1].counts: unknown value "each" (expected "cost" or "requests")"#,
        ]),
        (plan("{ counts = \"requests\" }"), vec![
            r#"plans.free.limits[0]: is empty (a limit is { requests, per } (with algorithm = "fixed" or "sliding"), { average, period, burst } or { concurrent, hold })"#,
        ]),
        (rule("cost = 0\nlimits.free = [{ requests = 1, per = \"second\" }]"), vec![
            "rules[0].cost: must be between 1 and 1000000 (got 0)",
        ]),
        (rule("cost = 1_000_001\nlimits.free = [{ requests = 1, per = \"second\" }]"), vec![
            "rules[0].cost: must be between 1 and 1000000 (got 1000001)",
        ]),
        (rule("cost = \"5\"\nlimits.free = [{ requests = 1, per = \"second\" }]"), vec![
            r#"rules[0].cost: must be an integer (got "5")"#,
        ]),
        (rule("cost = 2\nexempt = true"), vec![
            "rules[0].cost: an exempt rule costs nothing (remove cost or exempt)",
        ]),
        (rule(""), vec![
            "rules[0]: has no limits and no cost (add limits.<plan> = [...] or cost, or set exempt = true)",
        ]),
        // A cost alone prices an endpoint in the plans' limits.
        (rule("cost = 2"), vec![]),
        (format!("{listen}{BASE}[answers]\ntickets = \"sometimes\"\nticket_hold = \"0s\""), vec![
            r#"answers.tickets: unknown value "sometimes" (expected "concurrent" or "always")"#,
            "answers.ticket_hold: must be longer than 0s",
        ]),
        (format!("{listen}{BASE}[answers]\nticket_hold = \"200d\""), vec![
            r#"answers.ticket_hold: must be at most 100 days (got "200d")"#,
        ]),
        (format!("[server]\ntickets_listen = \"localhost:8082\"\n{BASE}"), vec![
            r#"server.tickets_listen: invalid address "localhost:8082" (expected IP:PORT, e.g. "0.0.0.0:8080")"#,
        ]),
    ];
    for (text, expected) in &table {
        assert_eq!(&problems(text), expected, "for config:\n{text}");
    }
}

#[test]
fn a_config_that_issues_tickets_is_refused_without_a_listener_to_close_them() {
    let concurrent = "[plans.free]\nlimits = [{ requests = 10, per = \"minute\" }, { concurrent = 2 }]\n";
    assert_eq!(
        problems(concurrent),
        [
            r#"server.tickets_listen: missing: plans.free.limits[1] is a concurrency limit, and backends free its slots by closing tickets (POST /v1/tickets/close), which is served only on server.tickets_listen (e.g. "0.0.0.0:8082"); without it every slot stays taken for its whole hold"#
        ]
    );
    // In a rule, and dry-run: its slots are held too.
    let in_rule =
        format!("{BASE}[[rules]]\nname = \"r\"\ndry_run = true\nlimits.\"*\" = [{{ concurrent = 1 }}]\n");
    assert_eq!(
        problems(&in_rule),
        [
            r#"server.tickets_listen: missing: rules[0].limits."*"[0] is a concurrency limit, and backends free its slots by closing tickets (POST /v1/tickets/close), which is served only on server.tickets_listen (e.g. "0.0.0.0:8082"); without it every slot stays taken for its whole hold"#
        ]
    );
    assert_eq!(
        problems(&format!("{BASE}[answers]\ntickets = \"always\"\n")),
        [
            r#"server.tickets_listen: missing: answers.tickets = "always" gives admitted requests tickets to close (POST /v1/tickets/close), which is served only on server.tickets_listen (e.g. "0.0.0.0:8082"); without it backends could never close them"#
        ]
    );
    // A listener of the wrong type is reported as such, not as missing too.
    assert_eq!(
        problems(&format!("[server]\ntickets_listen = 8082\n{concurrent}")),
        ["server.tickets_listen: must be a string (got 8082)"]
    );
    // With the listener, both are fine; without tickets, no listener is needed.
    let listen = "[server]\ntickets_listen = \"0.0.0.0:8082\"\n";
    assert_eq!(problems(&format!("{listen}{concurrent}")), Vec::<String>::new());
    assert_eq!(problems(&format!("{listen}{BASE}[answers]\ntickets = \"always\"\n")), Vec::<String>::new());
    assert_eq!(problems(&format!("{BASE}[answers]\ntickets = \"concurrent\"\n")), Vec::<String>::new());
}

#[test]
fn the_ticket_listener_binds_apart_from_the_other_listeners() {
    let server = |body: &str| format!("[server]\n{body}\n{BASE}");
    let table: &[(&str, &[&str])] = &[
        (
            "listen = \"0.0.0.0:8080\"\ntickets_listen = \"0.0.0.0:8080\"",
            &["server.tickets_listen: must differ from server.listen (both 0.0.0.0:8080)"],
        ),
        (
            "listen = \"0.0.0.0:8080\"\ntickets_listen = \"10.0.0.5:8080\"",
            &["server.tickets_listen: must differ from server.listen (10.0.0.5:8080 and 0.0.0.0:8080 both take port 8080)"],
        ),
        (
            "listen = \"[::]:8080\"\ntickets_listen = \"127.0.0.1:8080\"",
            &["server.tickets_listen: must differ from server.listen (127.0.0.1:8080 and [::]:8080 both take port 8080)"],
        ),
        (
            "admin_listen = \"127.0.0.1:8081\"\ntickets_listen = \"127.0.0.1:8081\"",
            &["server.tickets_listen: must differ from server.admin_listen (both 127.0.0.1:8081)"],
        ),
        (
            "listen = \"127.0.0.1:8080\"\nadmin_listen = \"0.0.0.0:8080\"",
            &["server.admin_listen: must differ from server.listen (0.0.0.0:8080 and 127.0.0.1:8080 both take port 8080)"],
        ),
        // Apart: another port, two specific IPs, another family, or port 0 (any free port).
        ("listen = \"0.0.0.0:8080\"\nadmin_listen = \"0.0.0.0:8081\"\ntickets_listen = \"0.0.0.0:8082\"", &[]),
        ("listen = \"10.0.0.5:8080\"\ntickets_listen = \"10.0.0.6:8080\"", &[]),
        ("listen = \"0.0.0.0:8080\"\ntickets_listen = \"[::1]:8080\"", &[]),
        ("listen = \"127.0.0.1:0\"\ntickets_listen = \"127.0.0.1:0\"", &[]),
    ];
    for (body, expected) in table {
        assert_eq!(problems(&server(body)), *expected, "for [server]\n{body}");
    }
}

#[test]
fn a_rule_cost_no_cost_counting_quota_it_meets_can_hold_is_refused_naming_both() {
    let text = r#"
[plans.free]
limits = [{ requests = 10, per = "minute" }, { requests = 3, per = "hour" }]
[plans.pro]
limits = [{ average = 10, burst = 4 }, { requests = 2, per = "day", counts = "requests" }]
[plans.internal]
unlimited = true
[[rules]]
name = "big"
path_prefix = "/big"
cost = 5
limits.pro = [{ requests = 4, per = "minute", name = "tight" }, { concurrent = 1 }]
limits.internal = [{ requests = 1, per = "minute" }]
limits."*" = [{ requests = 2, per = "second" }]
[server]
tickets_listen = "127.0.0.1:8082"
"#;
    assert_eq!(
        problems(text),
        [
            r#"rules[0].cost: a request costing 5 can never pass limit "hour" of plan "free", which counts cost and has a quota of 3 (lower the cost, raise that quota, or set counts = "requests" on it)"#,
            r#"rules[0].cost: a request costing 5 can never pass limit "bucket" of plan "pro", which counts cost and has a quota of 4 (lower the cost, raise that quota, or set counts = "requests" on it)"#,
            r#"rules[0].cost: a request costing 5 can never pass limit "tight" of this rule for plan "pro", which counts cost and has a quota of 4 (lower the cost, raise that quota, or set counts = "requests" on it)"#,
            r#"rules[0].cost: a request costing 5 can never pass limit "big.second" of this rule for any plan ("*"), which counts cost and has a quota of 2 (lower the cost, raise that quota, or set counts = "requests" on it)"#,
        ]
    );
    // Counting requests, a quota below the cost is fine; a dry-run rule's cost never counts
    // against the plans' limits, only against its own; `limits."*"` that no plan meets, and
    // the limits of an unlimited plan, are never met.
    let fine = r#"
[plans.free]
limits = [{ requests = 3, per = "hour", counts = "requests" }]
[plans.internal]
unlimited = true
[[rules]]
name = "big"
path_prefix = "/big"
cost = 5
limits.free = [{ requests = 1, per = "minute", counts = "requests" }]
limits.internal = [{ requests = 1, per = "minute" }]
limits."*" = [{ requests = 1, per = "second" }]
[[rules]]
name = "try"
path_prefix = "/try"
dry_run = true
cost = 7
limits.free = [{ requests = 7, per = "minute" }]
"#;
    assert_eq!(problems(fine), Vec::<String>::new());
    let over = fine.replace(
        "limits.free = [{ requests = 7, per = \"minute\" }]",
        "limits.free = [{ requests = 6, per = \"minute\" }]",
    );
    assert_eq!(
        problems(&over),
        [
            r#"rules[1].cost: a request costing 7 can never pass limit "try.minute" of this rule for plan "free", which counts cost and has a quota of 6 (lower the cost, raise that quota, or set counts = "requests" on it)"#
        ]
    );
}

#[test]
fn the_ticket_token_is_read_trimmed_and_kept_only_as_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let token = "backend-token-0123456789";
    std::fs::write(dir.path().join("tickets"), format!("  {token}\n")).unwrap();
    std::fs::write(dir.path().join("short"), "short-token\n").unwrap();
    std::fs::write(dir.path().join("spaced"), "a token with spaces in it\n").unwrap();
    let config = |file: &str| {
        format!("[server]\ntickets_listen = \"127.0.0.1:8082\"\ntickets_token_file = \"{file}\"\n{BASE}")
    };
    let ok = Config::parse(&config("tickets"), "t.toml", Some(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.server.tickets_token, Some(blake3::hash(token.as_bytes())));
    assert!(ok.files.contains(&dir.path().join("tickets")), "a rotated token triggers a reload");
    assert!(ok.summary().ends_with("tickets 127.0.0.1:8082 (bearer token required)"), "{}", ok.summary());
    assert!(!format!("{ok:?}").contains(token), "the token is kept in clear");

    let d = dir.path().display();
    let table: &[(String, Vec<String>)] = &[
        (config("short"), vec![
            "server.tickets_token_file: the token must be at least 16 bytes long (got 11 bytes)".into(),
        ]),
        (config("spaced"), vec![
            "server.tickets_token_file: the token must be visible ASCII without spaces (backends send it as Authorization: Bearer <token>)".into(),
        ]),
        (config("missing"), vec![
            format!("server.tickets_token_file: cannot read {d}/missing: No such file or directory (os error 2)"),
        ]),
        (format!("[server]\ntickets_token_file = \"tickets\"\n{BASE}"), vec![
            "server.tickets_token_file: set server.tickets_listen too".into(),
        ]),
    ];
    for (text, expected) in table {
        let err = Config::parse(text, "t.toml", Some(dir.path())).unwrap_err();
        assert_eq!(&err.problems(), expected, "for config:\n{text}");
        assert!(!err.to_string().contains("short-token") && !err.to_string().contains("with spaces"));
    }
}

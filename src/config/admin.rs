//! `[admin]`: the admin API on `server.admin_listen` (`token_file`, `max_overrides`), and the
//! config's own checks offered to it: a list of limits given as JSON ([`override_limits`]) is
//! validated by the very code that validates a plan's limits, with the same messages.

use std::fmt;

use serde::Deserialize;

use super::error::Problem;
use super::raw::RawLimit;
use super::read::{ignored_key, key_path};
use super::server::Server;
use super::validate::Validator;
use crate::identity::Identity;
use crate::limiter::Limit;
use crate::policy::Plan;

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAdmin {
    token_file: Option<String>,
    max_overrides: Option<i64>,
}

/// Overrides kept at most, unless `admin.max_overrides` says otherwise.
const DEFAULT_MAX_OVERRIDES: usize = 100_000;
const MOST_OVERRIDES: i64 = 10_000_000;

/// Validated `[admin]`: the admin API is served on `server.admin_listen`.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    /// BLAKE3 of the bearer token every admin call must carry (from `token_file`, trimmed).
    token: blake3::Hash,
    /// How many overrides `PUT /v1/overrides` may keep (`max_overrides`).
    pub max_overrides: usize,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("token", &"..").field("max_overrides", &self.max_overrides).finish()
    }
}

impl Admin {
    /// Whether `presented` is the admin token. Hashing first makes the time taken independent
    /// of where the bytes differ, and `blake3::Hash` compares in constant time.
    pub fn admits(&self, presented: &[u8]) -> bool {
        blake3::hash(presented) == self.token
    }
}

impl Validator {
    /// `[admin]`, which needs `server.admin_listen`: the admin API is never served on the
    /// check listener. The token file is read now (and watched for changes, like the config).
    pub(super) fn admin(&mut self, raw: Option<RawAdmin>, server: Option<&Server>) -> Option<Admin> {
        let raw = raw?;
        if server.is_some_and(|s| s.admin_listen.is_none()) {
            self.problem(
                "admin",
                "needs server.admin_listen: the admin API is served there only, never on the check listener (e.g. \"127.0.0.1:8081\")",
            );
        }
        let max_overrides = match raw.max_overrides {
            None => Some(DEFAULT_MAX_OVERRIDES),
            Some(n @ 1..=MOST_OVERRIDES) => usize::try_from(n).ok(),
            Some(n) => {
                self.problem(
                    "admin.max_overrides",
                    format!("must be between 1 and {MOST_OVERRIDES} (got {n})"),
                );
                None
            }
        };
        let Some(file) = raw.token_file else {
            self.problem("admin.token_file", "missing (a file holding the admin API's bearer token)");
            return None;
        };
        let token = self.bearer_token_file("admin.token_file", &file, "admin calls")?;
        Some(Admin { token, max_overrides: max_overrides? })
    }
}

/// Validates `limits`, a JSON array of limits in a plan's syntax (`{"requests": 100, "per":
/// "minute"}`, `{"average": 5, "burst": 10}`), with the checks and messages of `[plans]`; each
/// problem's key starts with `limits`. An empty list, or one whose every bucket has `average
/// = 0`, limits nothing and is refused: moving the token to an unlimited plan says that.
pub(crate) fn override_limits(limits: &serde_json::Value) -> Result<Vec<Limit>, Vec<Problem>> {
    let problem = |key: String, message: String| vec![Problem { key, message }];
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(format!("limits{}", ignored_key(&path)));
    let de = serde_ignored::Deserializer::new(limits, &mut record);
    let raw: Vec<RawLimit> = match serde_path_to_error::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => {
            let at = field_of(e.path()).unwrap_or_default();
            return Err(problem(format!("limits{at}"), without_strings(&e.into_inner().to_string())));
        }
    };
    if !unknown.is_empty() {
        return Err(unknown.into_iter().map(|key| Problem { key, message: "unknown key".into() }).collect());
    }
    if raw.is_empty() {
        let msg = "must hold at least one limit (to lift the limits, give an unlimited plan)";
        return Err(problem("limits".into(), msg.into()));
    }
    let mut v = Validator::new(None);
    let out = v.limits("limits", &raw, None);
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    if out.is_empty() {
        let msg =
            "every limit has average = 0, which limits nothing (to lift the limits, give an unlimited plan)";
        return Err(problem("limits".into(), msg.into()));
    }
    Ok(out)
}

/// `message` with the string values serde quotes (`string "abc"`) left out.
pub(crate) fn without_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let quoted = &rest[at + "string \"".len()..];
        // The value is written as Rust's `{:?}` writes it: a quote inside is escaped.
        let mut escaped = false;
        let end = quoted.char_indices().find(|&(_, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes
        });
        rest = end.map_or("", |(i, _)| &quoted[i + 1..]);
    }
    out.push_str(rest);
    out
}

/// The key path (`limits[0].requests`) of where serde stopped; `None` at the top level.
pub(crate) fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let segments: Vec<_> =
        path.iter().filter(|s| !matches!(s, serde_path_to_error::Segment::Unknown)).cloned().collect();
    (!segments.is_empty()).then(|| key_path(&segments))
}

/// Why no request could ever present `token`, as `[tokens]` says it, if so.
pub(crate) fn unpresentable(identity: &Identity, token: &str) -> Option<String> {
    super::policy::unpresentable(identity, token)
}

/// `unknown plan "gold" (known: "free", "pro")`: the config's message for a plan name that
/// names none of `plans`.
pub(crate) fn unknown_plan(name: &str, plans: &[Plan]) -> String {
    super::policy::unknown_plan(name, plans, "")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(text, "t.toml", None).map_err(|e| e.problems())
    }

    const PLAN: &str = "[plans.free]\nlimits = [{ requests = 9, per = \"minute\" }]\n";

    #[test]
    fn admin_needs_admin_listen_and_a_long_enough_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin");
        std::fs::write(&file, "  short\n").unwrap();
        let text = format!("{PLAN}[admin]\ntoken_file = {:?}\n", file.display().to_string());
        let problems = parse(&text).unwrap_err();
        assert!(problems.iter().any(|p| p.starts_with("admin: needs server.admin_listen")), "{problems:?}");
        assert!(
            problems
                .contains(&"admin.token_file: the token must be at least 16 bytes long (got 5 bytes)".into()),
            "{problems:?}"
        );
        assert!(!problems.iter().any(|p| p.contains("short")), "the token's content is never shown");

        std::fs::write(&file, "an-admin-token-of-some-length\n").unwrap();
        let text = format!(
            "[server]\nadmin_listen = \"127.0.0.1:9\"\n{PLAN}[admin]\ntoken_file = {:?}\n",
            file.display().to_string()
        );
        let config = parse(&text).unwrap();
        let admin = config.admin.clone().expect("[admin] is configured");
        assert!(admin.admits(b"an-admin-token-of-some-length"), "trimmed as read");
        assert!(!admin.admits(b"an-admin-token-of-some-lengtH"));
        assert_eq!(admin.max_overrides, DEFAULT_MAX_OVERRIDES);
        assert!(!format!("{admin:?}").contains("of-some"), "{admin:?}");
        assert!(config.files.contains(&file), "the token file is watched for changes");
        assert!(config.summary().ends_with("admin 127.0.0.1:9 with the admin API"), "{}", config.summary());
    }

    #[test]
    fn bad_admin_keys_are_reported_with_their_key_paths() {
        let text = format!(
            "[server]\nadmin_listen = \"127.0.0.1:9\"\n{PLAN}[admin]\nmax_overrides = 0\ntoken = \"x\"\n"
        );
        let problems = parse(&text).unwrap_err();
        assert!(problems.contains(&"admin.token: unknown key".into()), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("admin.token_file: missing")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with("admin.max_overrides: must be between 1")),
            "{problems:?}"
        );
        assert!(parse(PLAN).unwrap().admin.is_none(), "no [admin], no admin API");
    }

    #[test]
    fn override_limits_are_checked_as_a_plans_are() {
        let limits =
            override_limits(&json!([{"requests": 100, "per": "minute"}, {"average": 5, "burst": 10}]))
                .unwrap();
        assert_eq!(limits.iter().map(|l| &*l.name).collect::<Vec<_>>(), ["minute", "bucket"]);

        let keys = |value: serde_json::Value| -> Vec<String> {
            override_limits(&value).unwrap_err().into_iter().map(|p| p.to_string()).collect()
        };
        assert_eq!(
            keys(json!([{"requests": 0, "per": "minute"}])),
            ["limits[0].requests: must be greater than 0 (got 0)"]
        );
        let wrong_type = keys(json!([{"requests": 5, "per": "minute"}, {"requests": "ten", "per": "day"}]));
        assert!(
            wrong_type[0].starts_with("limits[1].requests: invalid type: a string, expected"),
            "{wrong_type:?}"
        );
        assert_eq!(
            keys(json!([{"requests": 5, "per": "minute", "burts": 3}])),
            ["limits[0].burts: unknown key"]
        );
        assert!(keys(json!({"requests": 5}))[0].starts_with("limits: invalid type: map"));
        assert!(keys(json!([]))[0].starts_with("limits: must hold at least one limit"));
        assert!(keys(json!([{"average": 0}]))[0].starts_with("limits: every limit has average = 0"));
        let same = keys(json!([{"requests": 5, "per": "minute"}, {"requests": 50, "per": "minute"}]));
        assert!(same[0].starts_with("limits[1]: has the same window as limit \"minute\""), "{same:?}");
    }

    #[test]
    fn string_values_are_left_out_of_messages() {
        assert_eq!(
            without_strings("invalid type: string \"s3cr\\\"et\", expected i64 at line 1 column 9"),
            "invalid type: a string, expected i64 at line 1 column 9"
        );
        assert_eq!(without_strings("string \"a\" and string \"b\""), "a string and a string");
        assert_eq!(without_strings("missing field `token`"), "missing field `token`");
        assert_eq!(without_strings("cut: string \"abc"), "cut: a string");
    }
}

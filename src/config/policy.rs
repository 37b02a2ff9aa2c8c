//! `[plans]`, `[tokens]`, `tokens_file` and `[defaults]`: the plans and which caller gets
//! which, validated into a [`Policy`] (rules come from `rules.rs`, limits from `limits.rs`).
//! A token's key path is its fingerprint, never the token.

use std::collections::{BTreeMap, HashMap};

use toml::Value;

use super::identity::Extras;
use super::leaf::{quoted, segment, valid_name, NAME_RULE};
use super::raw::{RawDefaults, RawPlan, RawRule, RawTokensFile};
use super::validate::Validator;
use crate::identity::{Identity, Missing};
use crate::policy::{Mode, Plan, PlanId, Policy, Rule, UnknownTokens};

/// `[tokens]` and the tokens of `tokens_file`, as read: token -> plan name.
pub(super) struct Tokens {
    pub(super) inline: BTreeMap<String, Value>,
    pub(super) file: BTreeMap<String, Value>,
}

/// `unknown plan "gold" (known: "free", "pro")`, or that there is none.
pub(super) fn unknown_plan(name: &str, plans: &[Plan], or: &str) -> String {
    if plans.is_empty() {
        return format!("unknown plan {} (no plan is defined)", quoted(name));
    }
    let known = plans.iter().map(|p| quoted(&p.name)).collect::<Vec<_>>().join(", ");
    format!("unknown plan {} (known: {known}{or})", quoted(name))
}

/// Why no request could ever present `token` (empty, too long, not visible ASCII), if so.
pub(super) fn unpresentable(identity: &Identity, token: &str) -> Option<String> {
    let presentable = !token.is_empty()
        && token.len() <= identity.max_token_length
        && token.bytes().all(|b| (0x21..=0x7e).contains(&b));
    let max = identity.max_token_length;
    (!presentable).then(|| {
        format!("a token must be 1 to {max} visible ASCII characters (this one could never be presented)")
    })
}

/// A plan as written for a token: its name, or what stands there instead.
fn plan_text(plan: &Value) -> String {
    match plan {
        Value::String(s) => quoted(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
        other => other.to_string(),
    }
}

impl Validator {
    /// The tokens of `tokens_file`; none if it cannot be read (a problem says why).
    pub(super) fn tokens_file(&mut self, file: &str) -> BTreeMap<String, Value> {
        let path = self.resolve(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.problem("tokens_file", format!("cannot read {}: {e}", path.display()));
                return BTreeMap::new();
            }
        };
        match toml::from_str::<RawTokensFile>(&text) {
            Ok(raw) => {
                self.files.push(path);
                raw.tokens
            }
            Err(e) => {
                // toml's message quotes the offending line, which may hold a token: give the
                // position only.
                let at = e.span().map(|s| format!(" at byte {}", s.start)).unwrap_or_default();
                let msg = format!(
                    "{} is not a valid tokens file{at} (expected [tokens] \"token\" = \"plan\")",
                    path.display()
                );
                self.problem("tokens_file", msg);
                BTreeMap::new()
            }
        }
    }

    pub(super) fn policy(
        &mut self,
        raw_plans: BTreeMap<String, RawPlan>,
        raw_tokens: Tokens,
        raw_rules: Vec<RawRule>,
        defaults: RawDefaults,
        extras: Extras,
        identity: Option<&Identity>,
    ) -> Option<Policy> {
        let mut plans = Vec::new();
        for (name, plan) in raw_plans {
            let key = format!("plans.{}", segment(&name));
            if !valid_name(&name) {
                self.problem(&key, format!("invalid plan name {} ({NAME_RULE})", quoted(&name)));
            }
            if plan.unlimited && !plan.limits.is_empty() {
                self.problem(
                    format!("{key}.limits"),
                    "an unlimited plan has no limits (remove limits or unlimited)",
                );
            }
            if !plan.unlimited && plan.limits.is_empty() {
                self.problem(&key, "has no limits (add limits, or set unlimited = true)");
            }
            let limits = self.limits(&format!("{key}.limits"), &plan.limits, None);
            // Every limit with average = 0 (no limit, as in Traefik): the plan limits nothing.
            let unlimited = plan.unlimited || (limits.is_empty() && !plan.limits.is_empty());
            plans.push(Plan::new(name, unlimited, limits));
        }
        if plans.len() > usize::from(u16::MAX) {
            self.problem("plans", format!("too many plans ({}, at most {})", plans.len(), u16::MAX));
            return None;
        }
        if plans.is_empty() {
            self.problem(
                "plans",
                "no plan is defined (add one, e.g. [plans.free] with limits = [{ requests = 10, per = \"minute\" }])",
            );
        }
        let find = |name: &str| plans.iter().position(|p| &*p.name == name).map(|i| PlanId(i as u16));

        let default_name = defaults.plan.as_deref().unwrap_or("free");
        let default_plan = find(default_name);
        // With no plan at all, `plans` says so, once.
        if default_plan.is_none() && !plans.is_empty() {
            self.problem("defaults.plan", unknown_plan(default_name, &plans, ""));
        }
        let reject = self.choice(
            "defaults.unknown_tokens",
            "value",
            defaults.unknown_tokens.as_deref().unwrap_or("plan"),
            &[("plan", false), ("reject", true)],
        );
        let unknown_tokens = match reject {
            Some(true) => Some(UnknownTokens::Reject),
            Some(false) => default_plan.map(UnknownTokens::Plan),
            None => None,
        };
        let anonymous_name = defaults.anonymous_plan.as_deref().unwrap_or("anonymous");
        let anonymous = match find(anonymous_name) {
            Some(p) => Some(p),
            None if defaults.anonymous_plan.is_some() => {
                self.problem("defaults.anonymous_plan", unknown_plan(anonymous_name, &plans, ""));
                None
            }
            None if extras.missing == Some(Missing::Ip) && !plans.is_empty() => {
                let known = plans.iter().map(|p| quoted(&p.name)).collect::<Vec<_>>().join(", ");
                let msg = format!(
                    "\"ip\" limits callers without a token under plan {}, which is not defined (known: {known})",
                    quoted(anonymous_name),
                );
                self.problem("identity.missing", msg);
                None
            }
            // Callers without a token are rejected, so no caller gets this plan.
            None => default_plan,
        };

        let mut tokens = HashMap::default();
        if let Some(identity) = identity {
            let listed = raw_tokens.inline.iter().map(|(t, p)| (t, p, false));
            let listed = listed.chain(raw_tokens.file.iter().map(|(t, p)| (t, p, true)));
            for (token, plan, in_file) in listed {
                let hash = identity.hasher.token(token.as_bytes());
                let key = format!("tokens[fingerprint {}]", hash.fingerprint());
                if let Some(inline) = raw_tokens.inline.get(token).filter(|_| in_file) {
                    if inline == plan {
                        let msg = format!(
                            "is listed in [tokens] and in tokens_file, both with plan {}",
                            plan_text(plan)
                        );
                        self.warn(key, msg);
                    } else {
                        let msg = format!(
                            "is listed in [tokens] with plan {} and in tokens_file with plan {} (keep one)",
                            plan_text(inline),
                            plan_text(plan)
                        );
                        self.problem(key, msg);
                    }
                    continue;
                }
                if let Some(msg) = unpresentable(identity, token) {
                    self.problem(&key, msg);
                }
                let Value::String(plan) = plan else {
                    self.problem(&key, format!("must be a plan name, a string (got {})", plan_text(plan)));
                    continue;
                };
                match find(plan) {
                    Some(p) => {
                        tokens.insert(hash, p);
                    }
                    None => self.problem(&key, unknown_plan(plan, &plans, "")),
                }
            }
        }

        let mut rules: Vec<Rule> = Vec::new();
        for (i, raw) in raw_rules.into_iter().enumerate() {
            if let Some(rule) = self.rule(i, raw, &plans, &rules) {
                rules.push(rule);
            }
        }

        Some(Policy {
            tokens,
            unknown_tokens: unknown_tokens?,
            anonymous: anonymous?,
            default_plan: default_plan?,
            plan_header: extras.plan_header,
            plan_secret: extras.plan_secret,
            rules,
            allow: extras.allow,
            count_denied: defaults.count_denied,
            mode: if defaults.dry_run { Mode::DryRun } else { Mode::Enforce },
            plans,
        })
    }
}

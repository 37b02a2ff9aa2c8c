//! `[plans]`, `[tokens]`, `tokens_file` and `[defaults]`: the plans and which caller gets
//! which, validated into a [`Policy`] (rules come from `rules.rs`, limits from `limits.rs`).
//! A token's key path is its fingerprint, never the token.

use std::collections::{BTreeMap, HashMap};

use super::identity::Extras;
use super::leaf::{quoted, segment, valid_name, NAME_RULE};
use super::raw::{RawDefaults, RawPlan, RawRule, RawTokensFile};
use super::validate::Validator;
use crate::identity::{Identity, Missing};
use crate::policy::{Plan, PlanId, Policy, Rule, UnknownTokens};

impl Validator {
    pub(super) fn tokens_file(&mut self, file: &str, tokens: &mut BTreeMap<String, String>) {
        let path = self.resolve(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => return self.problem("tokens_file", format!("cannot read {}: {e}", path.display())),
        };
        match toml::from_str::<RawTokensFile>(&text) {
            Ok(raw) => {
                tokens.extend(raw.tokens);
                self.files.push(path);
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
            }
        }
    }

    pub(super) fn policy(
        &mut self,
        raw_plans: BTreeMap<String, RawPlan>,
        raw_tokens: BTreeMap<String, String>,
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
            plans.push(Plan::new(name, plan.unlimited, limits));
        }
        if plans.len() > usize::from(u16::MAX) {
            self.problem("plans", format!("too many plans ({}, at most {})", plans.len(), u16::MAX));
            return None;
        }
        let known = || plans.iter().map(|p| quoted(&p.name)).collect::<Vec<_>>().join(", ");
        let find = |name: &str| plans.iter().position(|p| &*p.name == name).map(|i| PlanId(i as u16));

        let default_name = defaults.plan.as_deref().unwrap_or("free");
        let default_plan = find(default_name);
        if default_plan.is_none() {
            let msg = format!("unknown plan {} (known: {})", quoted(default_name), known());
            self.problem("defaults.plan", msg);
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
                let msg = format!("unknown plan {} (known: {})", quoted(anonymous_name), known());
                self.problem("defaults.anonymous_plan", msg);
                None
            }
            None if extras.missing == Some(Missing::Ip) => {
                let msg = format!(
                    "\"ip\" limits callers without a token under plan {}, which is not defined (known: {})",
                    quoted(anonymous_name),
                    known()
                );
                self.problem("identity.missing", msg);
                None
            }
            // Callers without a token are rejected, so no caller gets this plan.
            None => default_plan,
        };

        let mut tokens = HashMap::default();
        if let Some(identity) = identity {
            for (token, plan) in &raw_tokens {
                let hash = identity.hasher.token(token.as_bytes());
                let key = format!("tokens[fingerprint {}]", hash.fingerprint());
                let presentable = !token.is_empty()
                    && token.len() <= identity.max_token_length
                    && token.bytes().all(|b| (0x21..=0x7e).contains(&b));
                if !presentable {
                    let msg = format!(
                        "a token must be 1 to {} visible ASCII characters (this one could never be presented)",
                        identity.max_token_length
                    );
                    self.problem(&key, msg);
                }
                match find(plan) {
                    Some(p) => {
                        tokens.insert(hash, p);
                    }
                    None => self.problem(&key, format!("unknown plan {} (known: {})", quoted(plan), known())),
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
            rules,
            allow: extras.allow,
            count_denied: defaults.count_denied,
            dry_run: defaults.dry_run,
            plans,
        })
    }
}

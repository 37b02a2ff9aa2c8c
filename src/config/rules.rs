//! `[[rules]]`: which requests (host, path, methods) get extra limits per plan, or none
//! (`exempt`), and what they cost (`cost`). Each rule counts under its own scope, derived from
//! its name.

use globset::Glob;

use super::leaf::{quoted, segment, valid_name, NAME_RULE};
use super::policy::unknown_plan;
use super::raw::RawRule;
use super::validate::Validator;
use crate::limiter::Limit;
use crate::policy::{HostMatch, Mode, PathGlob, PathMatch, Plan, PlanId, Rule, RuleId, PLAN_SCOPE};

/// The largest `cost` of a rule: a million requests' worth, far below what any counter holds.
const MAX_COST: u32 = 1_000_000;

impl Validator {
    pub(super) fn rule(&mut self, i: usize, raw: RawRule, plans: &[Plan], earlier: &[Rule]) -> Option<Rule> {
        let key = format!("rules[{i}]");
        let name = match raw.name {
            Some(n) if valid_name(&n) => n,
            Some(n) => {
                self.problem(
                    format!("{key}.name"),
                    format!("invalid rule name {} ({NAME_RULE})", quoted(&n)),
                );
                return None;
            }
            None => {
                self.problem(
                    format!("{key}.name"),
                    "missing (every rule needs a name: its counters are kept under it)",
                );
                return None;
            }
        };
        if earlier.iter().any(|r| *r.name == *name) {
            self.problem(format!("{key}.name"), format!("{} is used by an earlier rule", quoted(&name)));
        }
        let scope = rule_scope(&name);
        if let Some(why) = scope_taken(scope, &name, earlier) {
            self.problem(format!("{key}.name"), why);
        }
        let host = match raw.host {
            None => HostMatch::Any,
            Some(h) => self.host(&format!("{key}.host"), &h),
        };
        let path = match (raw.path_prefix, raw.path) {
            (Some(_), Some(_)) => {
                self.problem(&key, "set either path_prefix or path, not both");
                PathMatch::Any
            }
            (Some(p), None) if !p.starts_with('/') => {
                self.problem(
                    format!("{key}.path_prefix"),
                    format!("must start with '/' (got {})", quoted(&p)),
                );
                PathMatch::Any
            }
            (Some(p), None) => PathMatch::Prefix(p),
            (None, Some(p)) if !p.starts_with('/') => {
                self.problem(format!("{key}.path"), format!("must start with '/' (got {})", quoted(&p)));
                PathMatch::Any
            }
            (None, Some(p)) => match PathGlob::new(&p) {
                Ok(g) => PathMatch::Glob(g),
                Err(e) => {
                    self.problem(
                        format!("{key}.path"),
                        format!("invalid pattern {}: {}", quoted(&p), e.kind()),
                    );
                    PathMatch::Any
                }
            },
            (None, None) => PathMatch::Any,
        };
        let mut methods = Vec::new();
        for (j, m) in raw.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                self.problem(format!("{key}.methods[{j}]"), format!("invalid method {}", quoted(m)));
            } else {
                methods.push(m.to_ascii_uppercase());
            }
        }
        if raw.exempt && !raw.limits.is_empty() {
            self.problem(format!("{key}.limits"), "an exempt rule has no limits (remove limits or exempt)");
        }
        // A rule with a cost and no limits of its own prices an endpoint in the plans' limits.
        if !raw.exempt && raw.limits.is_empty() && raw.cost.is_none() {
            self.problem(
                &key,
                "has no limits and no cost (add limits.<plan> = [...] or cost, or set exempt = true)",
            );
        }
        let cost = match raw.cost {
            None => 1,
            Some(_) if raw.exempt => {
                self.problem(format!("{key}.cost"), "an exempt rule costs nothing (remove cost or exempt)");
                1
            }
            Some(c) if (1..=i64::from(MAX_COST)).contains(&c) => u32::try_from(c).expect("at most MAX_COST"),
            Some(c) => {
                self.problem(format!("{key}.cost"), format!("must be between 1 and {MAX_COST} (got {c})"));
                1
            }
        };
        let mut per_plan = vec![None; plans.len()];
        let mut any_plan = Vec::new();
        for (plan, limits) in &raw.limits {
            let lkey = format!("{key}.limits.{}", segment(plan));
            let parsed = self.limits(&lkey, limits, Some(&name));
            if plan == "*" {
                any_plan = parsed;
            } else if let Some(p) = plans.iter().position(|p| *p.name == **plan) {
                per_plan[p] = Some(parsed);
            } else {
                self.problem(lkey, unknown_plan(plan, plans, ", or \"*\" for any plan"));
            }
        }
        let rule = Rule {
            id: RuleId(earlier.len()),
            scope,
            name: name.into(),
            host,
            path,
            methods,
            exempt: raw.exempt,
            mode: if raw.dry_run { Mode::DryRun } else { Mode::Enforce },
            cost,
            per_plan,
            any_plan,
        };
        self.names_unique(&key, &rule, plans, earlier);
        self.cost_fits(&key, &rule, plans);
        Some(rule)
    }

    /// A rule's `cost` fits every quota counting cost that its requests always meet: the
    /// rule's own limits and, for an enforced rule, every plan's own limits (a dry-run rule's
    /// cost counts only in its own scope; see `Policy::applicable`). A request costing more
    /// than such a quota could never pass. Quotas of other rules are met only where both rules
    /// match, which the config cannot tell.
    fn cost_fits(&mut self, key: &str, rule: &Rule, plans: &[Plan]) {
        let mut lists: Vec<(String, &[Limit])> = Vec::new();
        if rule.mode == Mode::Enforce {
            lists.extend(plans.iter().map(|p| (format!("plan {}", quoted(&p.name)), p.limits.as_slice())));
        }
        // An unlimited plan meets no limit at all, and `limits."*"` only meets the plans without
        // an entry of their own.
        let limited = plans.iter().zip(&rule.per_plan).filter(|(p, _)| !p.unlimited);
        let mut any_plan = false;
        for (plan, limits) in limited {
            match limits {
                Some(limits) => lists.push((format!("this rule for plan {}", quoted(&plan.name)), limits)),
                None => any_plan = true,
            }
        }
        if any_plan {
            lists.push(("this rule for any plan (\"*\")".to_owned(), &rule.any_plan));
        }
        for (whose, limits) in lists {
            for limit in limits.iter().filter(|l| l.weight(rule.cost) > l.quota()) {
                let msg = format!(
                    "a request costing {} can never pass limit {} of {whose}, which counts cost and has a quota of {} \
                     (lower the cost, raise that quota, or set counts = \"requests\" on it)",
                    rule.cost,
                    quoted(&limit.name),
                    limit.quota()
                );
                self.problem(format!("{key}.cost"), msg);
            }
        }
    }

    /// A rule's limits are named apart from the other limits one request can meet: its plan's
    /// and every other rule's for that plan (any rules may match together). The answer names
    /// each limit (`RateLimit-Policy`, `violated-policies`), so a shared name would be two
    /// policies a client cannot tell apart. Unnamed rule limits are qualified with the rule's
    /// name (`summarize.minute`), so only an explicit name can clash. Limits of different plans
    /// never meet and may share names.
    fn names_unique(&mut self, key: &str, rule: &Rule, plans: &[Plan], earlier: &[Rule]) {
        let mut reported = std::collections::BTreeSet::new();
        for (p, plan) in plans.iter().enumerate() {
            let plan_id = PlanId(p as u16);
            let (list, lkey) = match &rule.per_plan[p] {
                Some(limits) => (limits.as_slice(), format!("{key}.limits.{}", segment(&plan.name))),
                None => (rule.any_plan.as_slice(), format!("{key}.limits.\"*\"")),
            };
            for (j, limit) in list.iter().enumerate() {
                let name = &*limit.name;
                let clash = if plan.limits.iter().any(|l| *l.name == *name) {
                    format!("a limit of plan {}", quoted(&plan.name))
                } else if let Some(r) =
                    earlier.iter().find(|r| r.limits_for(plan_id).iter().any(|l| *l.name == *name))
                {
                    format!("a limit of rule {} for plan {}", quoted(&r.name), quoted(&plan.name))
                } else {
                    continue;
                };
                let at = format!("{lkey}[{j}].name");
                if reported.insert(at.clone()) {
                    let msg = format!(
                        "{} is also the name of {clash} (names must be unique within an answer)",
                        quoted(name)
                    );
                    self.problem(at, msg);
                }
            }
        }
    }

    /// `host`: a host name or a glob over host names, matched against the request's host in
    /// the form the request reading gives it (lower case, no trailing dot).
    fn host(&mut self, key: &str, raw: &str) -> HostMatch {
        let h = raw.to_ascii_lowercase();
        // One trailing dot names the same host (`api.example.com.` is fully qualified).
        let h = h.strip_suffix('.').unwrap_or(&h);
        if h.is_empty() {
            self.problem(key, "is empty (leave host out to match every host)");
            return HostMatch::Any;
        }
        let not_a_name = h.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '@' | '\\'))
            || (h.contains(':') && !h.starts_with('['));
        if not_a_name {
            let msg = format!(
                "is not a host name (got {}; write the name alone, without scheme, port or path, e.g. \"api.example.com\")",
                quoted(raw)
            );
            self.problem(key, msg);
            return HostMatch::Any;
        }
        // An IPv6 literal is written in brackets, which a glob would read as a character class.
        let ipv6 = h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        if ipv6 || !h.contains(['*', '?', '[']) {
            return HostMatch::exact(h);
        }
        match Glob::new(h) {
            Ok(g) => HostMatch::Glob(g.compile_matcher()),
            Err(e) => {
                self.problem(key, format!("invalid pattern {}: {}", quoted(raw), e.kind()));
                HostMatch::Any
            }
        }
    }
}

/// A rule's counter scope: a stable 32-bit hash of its name. Two names may share one; see
/// [`scope_taken`].
fn rule_scope(name: &str) -> u32 {
    let h = blake3::hash(name.as_bytes());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"))
}

/// Why `scope` cannot be the scope of rule `name`: it is the plans' own scope, or an earlier
/// rule's. Counters are kept per (scope, caller), so a shared scope would make two rules (or a
/// rule and the plan) count into each other's windows.
fn scope_taken(scope: u32, name: &str, earlier: &[Rule]) -> Option<String> {
    const RENAME: &str = "rule scopes are a 32-bit hash of the name: rename the rule";
    if scope == PLAN_SCOPE {
        return Some(format!("{} counts under the plans' own scope ({RENAME})", quoted(name)));
    }
    let other = earlier.iter().find(|r| r.scope == scope && *r.name != *name)?;
    Some(format!("{} counts under the same scope as rule {} ({RENAME})", quoted(name), quoted(&other.name)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    /// Two rule names whose 32-bit scopes collide, found by brute force (a birthday search:
    /// about 80 000 names for even odds).
    fn colliding_names() -> (String, String) {
        let mut seen = HashMap::new();
        for i in 0..2_000_000u32 {
            let name = format!("r{i}");
            if let Some(other) = seen.insert(rule_scope(&name), name.clone()) {
                return (other, name);
            }
        }
        panic!("no collision among 2 million names");
    }

    #[test]
    fn two_rules_whose_names_hash_alike_are_refused() {
        let (a, b) = colliding_names();
        assert_eq!(rule_scope(&a), rule_scope(&b));
        let text = format!(
            "[plans.free]\nlimits = [{{ requests = 9, per = \"minute\" }}]\n\
             [[rules]]\nname = \"{a}\"\npath_prefix = \"/a\"\nlimits.free = [{{ requests = 1, per = \"second\" }}]\n\
             [[rules]]\nname = \"{b}\"\npath_prefix = \"/b\"\nlimits.free = [{{ requests = 1, per = \"second\" }}]\n"
        );
        let problems = Config::parse(&text, "t.toml", None).unwrap_err().problems();
        assert_eq!(
            problems,
            [format!(
                "rules[1].name: \"{b}\" counts under the same scope as rule \"{a}\" (rule scopes are a 32-bit hash of the name: rename the rule)"
            )]
        );
    }

    #[test]
    fn a_rule_may_not_count_under_the_plans_scope() {
        assert_eq!(
            scope_taken(PLAN_SCOPE, "unlucky", &[]).as_deref(),
            Some("\"unlucky\" counts under the plans' own scope (rule scopes are a 32-bit hash of the name: rename the rule)")
        );
        assert_eq!(scope_taken(rule_scope("lucky"), "lucky", &[]), None);
    }

    #[test]
    fn a_rule_limit_may_not_share_a_name_with_a_limit_it_can_meet() {
        let text = "[plans.free]\nlimits = [{ requests = 9, per = \"minute\" }]\n\
             [plans.pro]\nlimits = [{ name = \"hourly\", requests = 99, per = \"hour\" }]\n\
             [[rules]]\nname = \"a\"\npath_prefix = \"/a\"\nlimits.free = [{ name = \"minute\", requests = 1, per = \"second\" }]\n\
             [[rules]]\nname = \"b\"\npath_prefix = \"/b\"\nlimits.\"*\" = [{ name = \"a.hour\", requests = 1, per = \"hour\" }]\n\
             [[rules]]\nname = \"c\"\npath_prefix = \"/c\"\nlimits.free = [{ requests = 1, per = \"hour\" }, { name = \"a.hour\", requests = 1, per = \"day\" }]\n\
             [[rules]]\nname = \"d\"\npath_prefix = \"/d\"\nlimits.\"*\" = [{ name = \"hourly\", requests = 1, per = \"day\" }]\n";
        let problems = Config::parse(text, "t.toml", None).unwrap_err().problems();
        assert_eq!(
            problems,
            [
                "rules[0].limits.free[0].name: \"minute\" is also the name of a limit of plan \"free\" (names must be unique within an answer)",
                "rules[2].limits.free[1].name: \"a.hour\" is also the name of a limit of rule \"b\" for plan \"free\" (names must be unique within an answer)",
                "rules[3].limits.\"*\"[0].name: \"hourly\" is also the name of a limit of plan \"pro\" (names must be unique within an answer)",
            ]
        );
        // Limits that never meet may share a name; unnamed, rule limits are qualified with the
        // rule's name and never clash.
        let ok = "[plans.free]\nlimits = [{ requests = 9, per = \"minute\" }]\n\
             [plans.pro]\nlimits = [{ name = \"hourly\", requests = 99, per = \"hour\" }]\n\
             [[rules]]\nname = \"a\"\npath_prefix = \"/a\"\nlimits.free = [{ requests = 1, per = \"minute\" }]\nlimits.pro = [{ name = \"minute\", requests = 1, per = \"minute\" }]\n\
             [[rules]]\nname = \"b\"\npath_prefix = \"/\"\nlimits.free = [{ name = \"hourly\", requests = 1, per = \"hour\" }]\n";
        let config = Config::parse(ok, "t.toml", None).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<_> =
            config.policy.rules.iter().map(|r| r.per_plan[0].as_ref().unwrap()[0].name.clone()).collect();
        assert_eq!(names.iter().map(|n| &**n).collect::<Vec<_>>(), ["a.minute", "hourly"]);
    }
}

//! `[[rules]]`: which requests (host, path, methods) get extra limits per plan, or none
//! (`exempt`). Each rule counts under its own scope, derived from its name.

use globset::{Glob, GlobBuilder};

use super::leaf::{quoted, segment, valid_name, NAME_RULE};
use super::raw::RawRule;
use super::validate::Validator;
use crate::policy::{HostMatch, PathMatch, Plan, Rule};

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
        let host = match raw.host {
            None => HostMatch::Any,
            Some(h) if h.contains(['*', '?', '[']) => match Glob::new(&h.to_ascii_lowercase()) {
                Ok(g) => HostMatch::Glob(g.compile_matcher()),
                Err(e) => {
                    self.problem(
                        format!("{key}.host"),
                        format!("invalid pattern {}: {}", quoted(&h), e.kind()),
                    );
                    HostMatch::Any
                }
            },
            Some(h) => HostMatch::Exact(h.to_ascii_lowercase()),
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
            (None, Some(p)) => match GlobBuilder::new(&p).literal_separator(true).build() {
                Ok(g) => PathMatch::Glob(g.compile_matcher()),
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
        if !raw.exempt && raw.limits.is_empty() {
            self.problem(&key, "has no limits (add limits.<plan> = [...], or exempt = true)");
        }
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
                let known = plans.iter().map(|p| quoted(&p.name)).collect::<Vec<_>>().join(", ");
                self.problem(
                    lkey,
                    format!("unknown plan {} (known: {known}, or \"*\" for any plan)", quoted(plan)),
                );
            }
        }
        Some(Rule {
            scope: rule_scope(&name),
            name: name.into(),
            host,
            path,
            methods,
            exempt: raw.exempt,
            dry_run: raw.dry_run,
            per_plan,
            any_plan,
        })
    }
}

/// A rule's counter scope: a stable hash of its name, never [`crate::policy::PLAN_SCOPE`].
fn rule_scope(name: &str) -> u32 {
    let h = blake3::hash(name.as_bytes());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes")).max(1)
}

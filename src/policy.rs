//! Which limits apply to a request: the caller's plan (from the token map, a trusted plan
//! header, or the defaults) and the rules matching the forwarded host, path and method.
//!
//! Counters are kept per (scope, caller): scope [`PLAN_SCOPE`] holds the plan's own limits, and
//! each rule has a scope of its own derived from its name, so reloading a config that keeps a
//! rule's name keeps its counters. How counters are stored is `store`'s business.
//!
//! Each scope carries its [`Mode`]: the store checks the enforced scopes together, all or
//! nothing, and each dry-run scope on its own, so a dry-run rule can never change what the
//! enforced ones decide.
//!
//! Each scope also carries the request's cost ([`Scope::cost`]): the largest `cost` of the
//! matching enforced rules (1 if none), which every limit counting cost takes from its quota. A
//! dry-run rule's own scope counts the larger of that and its own cost; a dry-run rule never
//! changes what the enforced scopes count.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use crate::identity::{Caller, Key};
use crate::limiter::{Algorithm, Limit, Nanos};
use crate::request::{normalize_host, Forwarded};

/// The scope of a plan's own limits.
pub const PLAN_SCOPE: u32 = 0;

/// Index of a plan in [`Policy::plans`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanId(pub u16);

/// Token hashes to plans. The keys are keyed BLAKE3 hashes already, uniform and unknowable
/// without the hashing key, so a fast non-keyed hash (Fx) is enough; SipHash would only cost time.
pub type Tokens = HashMap<Key, PlanId, FxBuildHasher>;

/// Index of a rule in [`Policy::rules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: Arc<str>,
    pub unlimited: bool,
    pub limits: Vec<Limit>,
    /// `name` as the `X-Quotagate-Plan` header value, made once here rather than per response;
    /// `None` if the name cannot be a header value (the header is then left out).
    pub header: Option<HeaderValue>,
}

impl Plan {
    pub fn new(name: impl Into<Arc<str>>, unlimited: bool, limits: Vec<Limit>) -> Plan {
        let name = name.into();
        let header = HeaderValue::from_str(&name).ok();
        Plan { name, unlimited, limits, header }
    }
}

/// How a rule matches a path.
#[derive(Clone, Debug)]
pub enum PathMatch {
    Any,
    /// A prefix that matches whole segments: `/docs` matches `/docs` and `/docs/x`, not `/docsx`.
    Prefix(String),
    Glob(PathGlob),
}

/// A path glob (`*` stays within a segment), compiled as written and ASCII case-insensitive.
#[derive(Clone, Debug)]
pub struct PathGlob {
    exact: GlobMatcher,
    folded: GlobMatcher,
}

impl PathGlob {
    pub fn new(pattern: &str) -> Result<PathGlob, globset::Error> {
        let build = |fold| {
            GlobBuilder::new(pattern)
                .literal_separator(true)
                .case_insensitive(fold)
                .build()
                .map(|g| g.compile_matcher())
        };
        Ok(PathGlob { exact: build(false)?, folded: build(true)? })
    }

    /// The pattern, as written.
    pub fn pattern(&self) -> &str {
        self.exact.glob().glob()
    }
}

impl PathMatch {
    /// Whether one reading of a path lies under this pattern. `loose` also accepts what the
    /// most lenient routers route here: any ASCII case and an optional trailing slash (Express
    /// and ASP.NET by default). Rules that add limits compare loosely; exemptions exactly.
    fn covers(&self, path: &str, loose: bool) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => {
                let (p, b) = (prefix.as_bytes(), path.as_bytes());
                let same = |a: &[u8], b: &[u8]| if loose { a.eq_ignore_ascii_case(b) } else { a == b };
                let under = b.len() >= p.len()
                    && same(&b[..p.len()], p)
                    && (p.ends_with(b"/") || b.len() == p.len() || b[p.len()] == b'/');
                // `/docs/` also names `/docs` to a router that ignores trailing slashes.
                under || (loose && p.len() > 1 && p.ends_with(b"/") && same(b, &p[..p.len() - 1]))
            }
            PathMatch::Glob(g) if loose => {
                g.folded.is_match(path)
                    || (path.len() > 1 && path.strip_suffix('/').is_some_and(|p| g.folded.is_match(p)))
            }
            PathMatch::Glob(g) => g.exact.is_match(path),
        }
    }
}

/// How a rule matches a host. Hosts are compared in [`normalize_host`]'s form.
#[derive(Clone, Debug)]
pub enum HostMatch {
    Any,
    /// In normal form.
    Exact(String),
    /// `*.example.com` style, lowercase.
    Glob(GlobMatcher),
}

impl HostMatch {
    /// Matches `host` (any case, port or trailing dot) exactly.
    pub fn exact(host: &str) -> HostMatch {
        HostMatch::Exact(normalize_host(host).into_owned())
    }
}

/// Whether a scope's limits decide the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Checked and counted with the other enforced scopes, all or nothing; over a limit denies.
    Enforce,
    /// Checked and counted on its own, and reported; never denies, and never keeps the enforced
    /// scopes from counting.
    DryRun,
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// This rule's index in [`Policy::rules`], for tables built beside the policy (metrics).
    pub id: RuleId,
    pub name: Arc<str>,
    pub scope: u32,
    pub host: HostMatch,
    pub path: PathMatch,
    /// Uppercase method names; empty matches any.
    pub methods: Vec<String>,
    pub exempt: bool,
    pub mode: Mode,
    /// What a request matching this rule costs (`cost`, 1 by default); see [`Scope::cost`].
    pub cost: u32,
    /// Limits by plan index; `None` uses `any_plan`.
    pub per_plan: Vec<Option<Vec<Limit>>>,
    /// Limits for plans without their own entry (`limits."*"`).
    pub any_plan: Vec<Limit>,
}

impl Rule {
    /// Whether the rule applies to `req`. A rule that adds limits applies when any reading of
    /// the path falls under it (some backend may route the request there); an exempting rule
    /// only when every reading does (no backend routes it elsewhere).
    pub fn matches(&self, req: &Forwarded<'_>) -> bool {
        self.matching(req).all()
    }

    /// Which of the rule's criteria `req` meets (see [`Rule::matches`]).
    pub fn matching(&self, req: &Forwarded<'_>) -> Matching {
        let host = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => *req.host == **h,
            HostMatch::Glob(g) => g.is_match(req.host.as_ref()),
        };
        let method =
            self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(req.method));
        let path = if self.exempt {
            req.path.readings().all(|r| self.path.covers(r, false))
        } else {
            req.path.readings().any(|r| self.path.covers(r, true))
        };
        Matching { host, method, path }
    }

    /// The limits this rule adds for `plan`: its own list for the plan, else `limits."*"`.
    pub(crate) fn limits_for(&self, plan: PlanId) -> &[Limit] {
        match self.per_plan.get(usize::from(plan.0)) {
            Some(Some(limits)) => limits,
            _ => &self.any_plan,
        }
    }
}

/// Which criteria of a rule one request meets: the rule applies when all do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matching {
    pub host: bool,
    pub method: bool,
    pub path: bool,
}

impl Matching {
    pub fn all(self) -> bool {
        self.host && self.method && self.path
    }
}

/// What unknown tokens get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownTokens {
    Plan(PlanId),
    Reject,
}

/// The validated policy. Built by `config`; swapped whole on reload.
#[derive(Clone, Debug)]
pub struct Policy {
    pub plans: Vec<Plan>,
    /// Token hashes to plans; tokens themselves are not kept.
    pub tokens: Tokens,
    pub unknown_tokens: UnknownTokens,
    /// The plan of callers identified by IP or host.
    pub anonymous: PlanId,
    pub default_plan: PlanId,
    /// A header naming the plan, set by an earlier middleware and trusted only when configured.
    pub plan_header: Option<http::HeaderName>,
    /// When set, `plan_header` is trusted only in requests that carry this secret.
    pub plan_secret: Option<PlanSecret>,
    pub rules: Vec<Rule>,
    /// Client networks never limited.
    pub allow: Vec<IpNet>,
    pub count_denied: bool,
    /// `defaults.dry_run`: [`Mode::DryRun`] makes every scope dry-run, whatever its rule says.
    pub mode: Mode,
}

/// The shared secret an earlier middleware sends beside `plan_header`, so that a plan header a
/// client forged (Traefik forwards client headers by default) is not trusted. Only its hash is
/// kept.
#[derive(Clone)]
pub struct PlanSecret {
    pub header: HeaderName,
    hash: blake3::Hash,
}

impl fmt::Debug for PlanSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlanSecret({}: ..)", self.header)
    }
}

impl PlanSecret {
    pub fn new(header: HeaderName, secret: &[u8]) -> PlanSecret {
        PlanSecret { header, hash: blake3::hash(secret) }
    }

    /// Whether `headers` carry the secret, once. `blake3::Hash` compares in constant time, and
    /// hashing first makes the comparison independent of where the bytes differ.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        only(headers, &self.header).is_some_and(|v| blake3::hash(v.as_bytes().trim_ascii()) == self.hash)
    }
}

/// The value of `name`, if it appears exactly once.
fn only<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    values.next().is_none().then_some(first).flatten()
}

/// Where a caller's plan came from, for the admin API's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanSource {
    /// An override of the admin API set it (never [`Policy::plan_and_source`]'s answer: the
    /// overrides are the server's, beside the policy).
    Override,
    /// The trusted plan header named it.
    PlanHeader,
    /// The token is in `[tokens]` (or `tokens_file`).
    Tokens,
    /// An unknown token: `defaults.unknown_tokens`.
    UnknownTokens,
    /// A caller identified by its host: the default plan.
    Default,
    /// A caller identified by its IP: the anonymous plan.
    Anonymous,
}

impl PlanSource {
    /// How answers name it: `override`, `plan_header`, `tokens`, `unknown_tokens`, `default`,
    /// `anonymous`.
    pub fn name(self) -> &'static str {
        match self {
            PlanSource::Override => "override",
            PlanSource::PlanHeader => "plan_header",
            PlanSource::Tokens => "tokens",
            PlanSource::UnknownTokens => "unknown_tokens",
            PlanSource::Default => "default",
            PlanSource::Anonymous => "anonymous",
        }
    }
}

/// Why a caller gets no plan.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown API token")]
    UnknownToken,
}

/// The limits that apply to one request.
#[derive(Debug)]
pub enum Applicable<'p> {
    /// An exempt rule matched: nothing is checked or counted.
    Exempt(&'p Rule),
    /// No limit applies (an unlimited plan, or one without limits and no matching rule).
    Unlimited,
    /// These scopes, never empty, sorted by scope id (the order stores lock entries in).
    Limited(Scopes<'p>),
}

/// The scopes of one request: inline for up to four, which covers a plan and three rules.
pub type Scopes<'p> = SmallVec<[Scope<'p>; 4]>;

/// The limits of one scope for one request, with what they are about: the scope's counters
/// (`id`), whether they decide the answer (`mode`) and the rule they come from, so that verdicts
/// can carry them and nothing downstream looks them up again.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'p> {
    pub id: u32,
    pub mode: Mode,
    /// `None` for the plan's own limits.
    pub rule: Option<&'p Rule>,
    pub limits: &'p [Limit],
    /// What the request costs in this scope: what each of its limits that counts cost
    /// ([`crate::limiter::Counts::Cost`]) takes from its quota. At least 1.
    pub cost: u32,
}

impl<'p> Scope<'p> {
    /// An enforced scope of `limits` under counter scope `id`, belonging to no rule, for a
    /// request of cost 1.
    pub fn enforced(id: u32, limits: &'p [Limit]) -> Scope<'p> {
        Scope { id, mode: Mode::Enforce, rule: None, limits, cost: 1 }
    }

    /// This scope for a request of cost `cost`.
    pub fn costing(mut self, cost: u32) -> Scope<'p> {
        self.cost = cost.max(1);
        self
    }

    /// How long a request's slot in this scope's concurrency limit is held, in nanoseconds:
    /// `None` if the scope has no concurrency limit (config allows at most one per scope).
    pub fn hold(&self) -> Option<Nanos> {
        self.limits.iter().find_map(|l| match l.algorithm {
            Algorithm::Concurrent { hold, .. } => Some(hold),
            _ => None,
        })
    }

    /// Whether a request admitted in this scope holds a slot of a concurrency limit.
    pub fn holds_slot(&self) -> bool {
        self.hold().is_some()
    }
}

/// The longest hold among the concurrency limits of `scopes`, dry-run ones included (their
/// slots are held too): how long a request's ticket holds its slots. `None` if no scope holds
/// a slot, so that the request gets a ticket only with `answers.tickets = "always"`.
pub fn slot_hold(scopes: &[Scope<'_>]) -> Option<Nanos> {
    scopes.iter().filter_map(Scope::hold).max()
}

impl Policy {
    pub fn plan(&self, id: PlanId) -> &Plan {
        &self.plans[usize::from(id.0)]
    }

    pub fn plan_named(&self, name: &str) -> Option<PlanId> {
        self.plans.iter().position(|p| &*p.name == name).map(|i| PlanId(i as u16))
    }

    pub fn is_allowed_ip(&self, ip: std::net::IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&ip))
    }

    /// The caller's plan: the trusted plan header if it names a plan, else the token map, else
    /// the defaults.
    ///
    /// With a [`PlanSecret`], the plan header counts only beside the secret; a repeated plan
    /// header never counts.
    pub fn plan_of(&self, caller: &Caller, headers: &HeaderMap) -> Result<PlanId, PolicyError> {
        self.plan_and_source(caller, headers).map(|(plan, _)| plan)
    }

    /// [`Policy::plan_of`], and where the plan came from.
    pub fn plan_and_source(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
    ) -> Result<(PlanId, PlanSource), PolicyError> {
        if let Some(name) = &self.plan_header {
            let trusted = self.plan_secret.as_ref().is_none_or(|s| s.admits(headers));
            let named = only(headers, name)
                .filter(|_| trusted)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.plan_named(v.trim()));
            if let Some(plan) = named {
                return Ok((plan, PlanSource::PlanHeader));
            }
        }
        match caller {
            Caller::Token(key) => match self.tokens.get(key) {
                Some(plan) => Ok((*plan, PlanSource::Tokens)),
                None => match self.unknown_tokens {
                    UnknownTokens::Plan(plan) => Ok((plan, PlanSource::UnknownTokens)),
                    UnknownTokens::Reject => Err(PolicyError::UnknownToken),
                },
            },
            Caller::Host(_) => Ok((self.default_plan, PlanSource::Default)),
            Caller::Ip(..) => Ok((self.anonymous, PlanSource::Anonymous)),
        }
    }

    /// Every scope that can apply to a caller on `plan` (with `own`, an override's limits, in
    /// place of the plan's own), whatever the request: the plan's own limits and each rule's
    /// limits for the plan, at cost 1, sorted by scope id. None for an unlimited plan without
    /// `own`, which no rule limits either. For the admin API's usage and resets.
    pub fn every_scope<'p>(&'p self, plan: PlanId, own: Option<&'p [Limit]>) -> Scopes<'p> {
        let p = self.plan(plan);
        if p.unlimited && own.is_none() {
            return Scopes::new();
        }
        let mut scopes: Scopes<'p> = self.plan_scope(own.unwrap_or(&p.limits)).into_iter().collect();
        scopes.extend(self.rules.iter().filter(|r| !r.exempt).filter_map(|r| self.rule_scope(r, plan)));
        scopes.sort_by_key(|s| s.id);
        scopes
    }

    /// The limits that apply to `req` for a caller on `plan`, each scope with the request's
    /// cost there (see the module's documentation). Costs follow each rule's own mode, so that
    /// `defaults.dry_run` tries out what enforcing would count.
    pub fn applicable<'p>(&'p self, plan: PlanId, req: &Forwarded<'_>) -> Applicable<'p> {
        self.applicable_with(plan, None, req)
    }

    /// [`Policy::applicable`], with `own` (an override's limits) in place of the plan's own
    /// limits when given: the plan is then limited by them, whatever it says, and its rules
    /// apply as for any limited plan.
    pub fn applicable_with<'p>(
        &'p self,
        plan: PlanId,
        own: Option<&'p [Limit]>,
        req: &Forwarded<'_>,
    ) -> Applicable<'p> {
        let p = self.plan(plan);
        if p.unlimited && own.is_none() {
            return Applicable::Unlimited;
        }
        let own = own.unwrap_or(&p.limits);
        let mut scopes = Scopes::new();
        scopes.extend(self.plan_scope(own));
        // A matching rule costs what it says even where it adds no limit for this plan: its
        // cost is the endpoint's, and the plan's quotas count it.
        let mut cost = 1;
        for rule in self.rules.iter().filter(|r| r.matches(req)) {
            if rule.exempt {
                return Applicable::Exempt(rule);
            }
            if rule.mode == Mode::Enforce {
                cost = cost.max(rule.cost);
            }
            scopes.extend(self.rule_scope(rule, plan));
        }
        if scopes.is_empty() {
            return Applicable::Unlimited;
        }
        for scope in &mut scopes {
            scope.cost = match scope.rule {
                Some(rule) if rule.mode == Mode::DryRun => cost.max(rule.cost),
                _ => cost,
            };
        }
        scopes.sort_by_key(|s| s.id);
        Applicable::Limited(scopes)
    }

    /// The scopes of a request admitted earlier, rebuilt from what its ticket names: the plan's
    /// own scope and the rules' scopes among `scope_ids`, under the current config, with their
    /// current modes, sorted by scope id. Ids no longer configured (a rule renamed or removed,
    /// or that adds no limit for this plan now) are skipped, and so is an id listed twice. Each
    /// scope costs 1: a cost reported at close is the caller's to pass to the store.
    pub fn scopes_of(&self, plan: PlanId, scope_ids: &[u32]) -> Scopes<'_> {
        self.scopes_of_with(plan, None, scope_ids)
    }

    /// [`Policy::scopes_of`] for a caller whose override gives the plan's own scope `own`
    /// limits instead of the plan's, as [`Policy::applicable_with`] does.
    pub fn scopes_of_with<'p>(
        &'p self,
        plan: PlanId,
        own: Option<&'p [Limit]>,
        scope_ids: &[u32],
    ) -> Scopes<'p> {
        let mut scopes = Scopes::new();
        let Some(p) = self.plans.get(usize::from(plan.0)) else { return scopes };
        for &id in scope_ids {
            if scopes.iter().any(|s: &Scope<'_>| s.id == id) {
                continue;
            }
            let scope = if id == PLAN_SCOPE {
                self.plan_scope(own.unwrap_or(&p.limits))
            } else {
                self.rules.iter().find(|r| r.scope == id).and_then(|r| self.rule_scope(r, plan))
            };
            scopes.extend(scope);
        }
        scopes.sort_by_key(|s| s.id);
        scopes
    }

    /// The plan's own scope of `limits` (the plan's, or an override's), at cost 1; `None` if
    /// there are none.
    fn plan_scope<'p>(&self, limits: &'p [Limit]) -> Option<Scope<'p>> {
        let scope = Scope { id: PLAN_SCOPE, mode: self.mode, rule: None, limits, cost: 1 };
        (!limits.is_empty()).then_some(scope)
    }

    /// `rule`'s scope for a caller on `plan`, at cost 1 (dry-run if `defaults.dry_run` is);
    /// `None` if the rule adds no limit for that plan.
    fn rule_scope<'p>(&self, rule: &'p Rule, plan: PlanId) -> Option<Scope<'p>> {
        let limits = rule.limits_for(plan);
        let mode = if self.mode == Mode::DryRun { Mode::DryRun } else { rule.mode };
        (!limits.is_empty()).then_some(Scope { id: rule.scope, mode, rule: Some(rule), limits, cost: 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::limiter::SECOND;

    const CONFIG: &str = r#"
[server]
tickets_listen = "127.0.0.1:8082"
[plans.free]
limits = [{ requests = 100, per = "minute" }, { requests = 50, per = "hour", counts = "requests" }]
[plans.pro]
limits = [{ concurrent = 4, hold = "2m" }]
[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
cost = 5
limits.free = [{ requests = 10, per = "minute" }]
limits.pro = [{ concurrent = 1, hold = "30s" }]
[[rules]]
name = "long"
path_prefix = "/api/summarize/long"
cost = 8
limits.free = [{ requests = 10, per = "minute" }]
[[rules]]
name = "export"
path_prefix = "/api/export"
cost = 3
[[rules]]
name = "trial"
path_prefix = "/api"
dry_run = true
cost = 20
limits.free = [{ requests = 40, per = "minute" }]
[[rules]]
name = "cheap-trial"
path_prefix = "/api/summarize"
dry_run = true
cost = 2
limits.free = [{ requests = 40, per = "minute" }]
"#;

    fn policy(extra: &str) -> Policy {
        let text = format!("{extra}{CONFIG}");
        Config::parse(&text, "t.toml", None).unwrap_or_else(|e| panic!("{e}")).policy
    }

    /// Each scope of `scopes` as (plan or rule name, mode, cost), in scope order.
    fn costs<'p>(scopes: &[Scope<'p>]) -> Vec<(&'p str, Mode, u32)> {
        scopes.iter().map(|s| (s.rule.map_or("plan", |r| &*r.name), s.mode, s.cost)).collect()
    }

    /// The scopes of a POST to `path` by a caller on `plan`, by name and sorted by name.
    fn applicable<'p>(policy: &'p Policy, plan: &str, path: &str) -> Vec<(&'p str, Mode, u32)> {
        let headers = HeaderMap::new();
        let req = Forwarded::from_headers(&headers, "POST", path).expect("a plain request");
        let plan = policy.plan_named(plan).expect("a configured plan");
        let Applicable::Limited(scopes) = policy.applicable(plan, &req) else { panic!("limited") };
        let mut named = costs(&scopes);
        named.sort_by_key(|(name, ..)| *name);
        named
    }

    fn scope_of(policy: &Policy, rule: &str) -> u32 {
        policy.rules.iter().find(|r| &*r.name == rule).expect("a configured rule").scope
    }

    #[test]
    fn a_request_costs_the_largest_cost_of_its_enforced_rules_in_every_scope() {
        use Mode::{DryRun, Enforce};
        let p = policy("");
        assert_eq!(
            applicable(&p, "free", "/api/summarize/long"),
            [
                ("cheap-trial", DryRun, 8),
                ("long", Enforce, 8),
                ("plan", Enforce, 8),
                ("summarize", Enforce, 8),
                ("trial", DryRun, 20),
            ],
            "a dry-run rule's own scope counts the larger of its cost and the enforced one"
        );
        assert_eq!(
            applicable(&p, "free", "/api/summarize"),
            [
                ("cheap-trial", DryRun, 5),
                ("plan", Enforce, 5),
                ("summarize", Enforce, 5),
                ("trial", DryRun, 20)
            ]
        );
        assert_eq!(
            applicable(&p, "free", "/api/other"),
            [("plan", Enforce, 1), ("trial", DryRun, 20)],
            "a dry-run rule's cost never changes what the enforced scopes count"
        );
        assert_eq!(applicable(&p, "free", "/elsewhere"), [("plan", Enforce, 1)]);
        // A rule costs what it says where it adds no limit: the plan counts it.
        assert_eq!(applicable(&p, "free", "/api/export"), [("plan", Enforce, 3), ("trial", DryRun, 20)]);
    }

    #[test]
    fn under_defaults_dry_run_costs_are_what_enforcing_would_count() {
        use Mode::DryRun;
        let p = policy("[defaults]\ndry_run = true\n");
        assert_eq!(
            applicable(&p, "free", "/api/summarize"),
            [
                ("cheap-trial", DryRun, 5),
                ("plan", DryRun, 5),
                ("summarize", DryRun, 5),
                ("trial", DryRun, 20)
            ]
        );
    }

    #[test]
    fn a_ticket_s_scopes_are_rebuilt_from_the_current_config_by_id() {
        use Mode::{DryRun, Enforce};
        let p = policy("");
        let free = p.plan_named("free").unwrap();
        let (summarize, trial, long) =
            (scope_of(&p, "summarize"), scope_of(&p, "trial"), scope_of(&p, "long"));
        let gone = 0x5eed_0001;
        assert!(p.rules.iter().all(|r| r.scope != gone));
        let scopes = p.scopes_of(free, &[trial, summarize, gone, PLAN_SCOPE, summarize]);
        let mut want =
            vec![(PLAN_SCOPE, "plan", Enforce), (summarize, "summarize", Enforce), (trial, "trial", DryRun)];
        want.sort_by_key(|(id, ..)| *id);
        let got: Vec<_> =
            scopes.iter().map(|s| (s.id, s.rule.map_or("plan", |r| &*r.name), s.mode)).collect();
        assert_eq!(got, want, "sorted by id, unknown and repeated ids skipped");
        assert!(scopes.iter().all(|s| s.cost == 1));
        for s in &scopes {
            let expected = match s.rule {
                None => &p.plan(free).limits[..],
                Some(r) => r.limits_for(free),
            };
            assert_eq!(s.limits, expected);
        }

        // A rule that adds no limit for the plan now has nothing to release or charge there.
        let pro = p.plan_named("pro").unwrap();
        let names: Vec<_> =
            costs(&p.scopes_of(pro, &[PLAN_SCOPE, long, summarize])).iter().map(|c| c.0).collect();
        assert_eq!(names, ["plan", "summarize"], "the plan's scope, 0, comes first");
        assert!(p.scopes_of(pro, &[long, gone]).is_empty());
        assert!(p.scopes_of(PlanId(999), &[PLAN_SCOPE]).is_empty(), "a plan id out of range is no plan");

        // The modes are the current config's.
        let dry = policy("[defaults]\ndry_run = true\n");
        assert!(dry.scopes_of(free, &[PLAN_SCOPE, summarize]).iter().all(|s| s.mode == DryRun));
    }

    #[test]
    fn a_request_holds_a_slot_for_the_longest_hold_of_its_concurrency_limits() {
        let p = policy("");
        let pro = p.plan_named("pro").unwrap();
        let free = p.plan_named("free").unwrap();
        let summarize = scope_of(&p, "summarize");
        let scopes = p.scopes_of(pro, &[PLAN_SCOPE, summarize]);
        let holds: Vec<_> = scopes.iter().map(|s| (s.id, s.hold())).collect();
        assert!(holds.contains(&(PLAN_SCOPE, Some(120 * SECOND))), "{holds:?}");
        assert!(holds.contains(&(summarize, Some(30 * SECOND))), "{holds:?}");
        assert!(scopes.iter().all(Scope::holds_slot));
        assert_eq!(slot_hold(&scopes), Some(120 * SECOND));
        assert_eq!(slot_hold(&p.scopes_of(pro, &[summarize])), Some(30 * SECOND));

        let windows = p.scopes_of(free, &[PLAN_SCOPE, summarize]);
        assert!(!windows.iter().any(Scope::holds_slot));
        assert_eq!(slot_hold(&windows), None);
        assert_eq!(slot_hold(&[]), None);
    }
}

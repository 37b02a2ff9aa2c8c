//! Logs (tracing) and metrics (Prometheus text, `quotagate_*`). The registry belongs to the
//! server state rather than a global, so tests can run several servers in one process.
//!
//! Counting a decision is on every check's path, so its counter is looked up in the label
//! family (hashing the label set, a read lock) only the first time a label set occurs; after
//! that the counter (which shares its atomic with the family's) is taken from a table of slots
//! by plan, rule and outcome ([`Decisions`]), built for each config as it is put in force and
//! kept beside it. The policy knows nothing of metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::policy::{PlanId, Policy, RuleId};

/// Log format, from `QUOTAGATE_LOG_FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "pretty" | "text" => Some(LogFormat::Pretty),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Installs the global tracing subscriber. `filter` is an `EnvFilter` directive such as
/// `info` or `quotagate=debug`.
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid QUOTAGATE_LOG {filter:?}: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// A label value shared with the policy (plan and rule names).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// What happened to a check.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Within every limit.
    allowed,
    /// Over a limit: 429.
    denied,
    /// Within every enforced limit but over a dry-run one: let through.
    dry_run_denied,
    /// An exempt rule matched.
    exempt,
    /// An unlimited plan.
    unlimited,
    /// The client IP is allow-listed.
    allow_listed,
    /// No usable token, or an unknown one: 400/401.
    rejected,
    /// The store could not decide and `on_error = "deny"`: 503.
    unavailable,
    /// The store could not decide and `on_error = "allow"`: let through unchecked.
    unchecked,
}

impl Outcome {
    const COUNT: usize = 9;

    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::allowed,
        Outcome::denied,
        Outcome::dry_run_denied,
        Outcome::exempt,
        Outcome::unlimited,
        Outcome::allow_listed,
        Outcome::rejected,
        Outcome::unavailable,
        Outcome::unchecked,
    ];
}

/// Rules beyond this index take the family path: a plan's table stays under 150 KB.
const MAX_CACHED_RULES: usize = 1024;
const _: () = assert!(Outcome::unchecked as usize + 1 == Outcome::COUNT, "Outcome::COUNT is the last + 1");

/// The decision counters of one config, for one [`Metrics`]: made by [`Metrics::decisions`] when
/// the config is put in force, and swapped with it. Slots are filled on first use, so that the
/// exposition shows only label sets that occurred, as the family alone would; a plan's slots
/// are allocated the first time the plan is seen. A reload builds a new table, and the family
/// keeps the series, so a counter found again after a reload continues where it was.
pub struct Decisions {
    family: Family<DecisionLabels, Counter>,
    /// By [`PlanId`].
    plans: Box<[PlanCounters]>,
    /// Rule names by [`RuleId`].
    rules: Box<[Arc<str>]>,
    /// Slots in each plan's table.
    slots_per_plan: usize,
    /// Decisions without a plan (plan and rule `"-"`), by outcome.
    unplanned: [OnceLock<Counter>; Outcome::COUNT],
}

struct PlanCounters {
    name: Arc<str>,
    /// `(rule index + 1) * Outcome::COUNT + outcome`, rule index 0 meaning no rule.
    slots: OnceLock<Box<[OnceLock<Counter>]>>,
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions")
            .field("plans", &self.plans.len())
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Decisions {
    /// Counts one decision; the plan and rule labels are `"-"` where none applies. `plan` and
    /// `rule` belong to the policy this table was made for.
    pub fn count(&self, outcome: Outcome, plan: Option<PlanId>, rule: Option<RuleId>) {
        let Some(plan) = plan else {
            self.unplanned[outcome as usize].get_or_init(|| self.counter(outcome, None, None)).inc();
            return;
        };
        let counters = &self.plans[usize::from(plan.0)];
        let slots =
            counters.slots.get_or_init(|| (0..self.slots_per_plan).map(|_| OnceLock::new()).collect());
        let slot = rule.map_or(0, |r| r.0 + 1) * Outcome::COUNT + outcome as usize;
        let rule = rule.map(|r| &self.rules[r.0]);
        match slots.get(slot) {
            Some(counter) => counter.get_or_init(|| self.counter(outcome, Some(&counters.name), rule)).inc(),
            None => self.counter(outcome, Some(&counters.name), rule).inc(),
        };
    }

    /// The family's counter for one label set.
    fn counter(&self, outcome: Outcome, plan: Option<&Arc<str>>, rule: Option<&Arc<str>>) -> Counter {
        let name = |n: Option<&Arc<str>>| Name(n.map_or_else(|| Arc::from("-"), Arc::clone));
        let labels = DecisionLabels { outcome, plan: name(plan), rule: name(rule) };
        self.family.get_or_create(&labels).clone()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: Outcome,
    plan: Name,
    rule: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    transport: &'static str,
    alpn: &'static str,
}

/// Why the server closed a connection (or refused one) on its own: a bound was hit or a
/// timeout ran out. `quotagate_connections_closed_total{listener,reason}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CloseReason {
    /// `server.max_connections` open already: closed as soon as accepted.
    max_connections,
    /// `server.max_tls_handshakes` in flight already: closed before its handshake.
    max_tls_handshakes,
    /// No TLS handshake within `server.tls_handshake_timeout`.
    tls_handshake_timeout,
    /// HTTP/1.1: no complete request head within `server.header_read_timeout`.
    header_read_timeout,
    /// HTTP/2: no open stream for `server.idle_timeout`.
    idle_timeout,
    /// HTTP/2: a keep-alive ping went unanswered for `server.http2_keep_alive_timeout`.
    keep_alive_timeout,
}

impl CloseReason {
    /// The label value, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::max_connections => "max_connections",
            CloseReason::max_tls_handshakes => "max_tls_handshakes",
            CloseReason::tls_handshake_timeout => "tls_handshake_timeout",
            CloseReason::header_read_timeout => "header_read_timeout",
            CloseReason::idle_timeout => "idle_timeout",
            CloseReason::keep_alive_timeout => "keep_alive_timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: CloseReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdminLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// What a `POST /v1/tickets/close` came to: `quotagate_tickets_closed_total{result}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CloseResult {
    /// The ticket was open: its slots were freed and its cost charged (200).
    closed,
    /// Closed already, expired, or unknown to the store (404).
    unknown,
    /// A malformed or forged ticket, or a body that is not a close request (400).
    invalid,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TicketCloseLabels {
    result: CloseResult,
}

/// The store's figures as of now, for [`Metrics::render`].
#[derive(Clone, Copy, Debug)]
pub struct StoreFigures {
    /// Counter entries held in memory (for Redis, its local fallback).
    pub live_keys: u64,
    /// Whether the store answers (Redis connected, breaker closed).
    pub up: bool,
    /// Redis commands that failed or timed out since start.
    pub errors: u64,
    /// Concurrency slots held now, where the store can tell (memory: exactly; Redis: `None`).
    pub tickets_in_flight: Option<u64>,
    /// Concurrency slots freed by their `hold` since start, as the store saw them expire.
    pub tickets_expired: u64,
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    live_keys: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    store_up: Gauge,
    store_errors: Gauge,
    connections: Family<ConnectionLabels, Counter>,
    connections_closed: Family<ClosedLabels, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    admin_requests: Family<AdminLabels, Counter>,
    tickets_issued: Counter,
    tickets_closed: Family<TicketCloseLabels, Counter>,
    tickets_refused: Counter,
    tickets_expired: Counter,
    /// The store's expiry total the counter has caught up with.
    tickets_expired_seen: AtomicU64,
    /// Registered only for a store that can tell ([`Metrics::with_in_flight`]).
    tickets_in_flight: Option<Gauge>,
    ticket_cost_reported: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("quotagate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Checks answered, by outcome, plan and rule", decisions.clone());
        // 1 µs to ~16 ms: a check is micro-seconds; anything slower is worth seeing.
        let latency = Histogram::new(exponential_buckets(1e-6, 2.0, 15));
        registry.register(
            "check_duration_seconds",
            "Time to decide one check, without HTTP",
            latency.clone(),
        );
        let live_keys = Gauge::default();
        registry.register("store_live_keys", "Counter entries held by the store", live_keys.clone());
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("config_reloads", "Config reloads, by result", reloads.clone());
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 if the store answers (Redis connected, breaker closed), else 0",
            store_up.clone(),
        );
        let store_errors = Gauge::default();
        registry.register(
            "store_errors",
            "Redis commands that failed or timed out since start",
            store_errors.clone(),
        );
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted on the check listener, by transport (plain, tls) and ALPN protocol",
            connections.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections the server closed on its own, by listener (check, admin, tickets) and reason (a bound hit or a timeout)",
            connections_closed.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by listener (check, admin, tickets); bounded by server.max_connections",
            connections_open.clone(),
        );
        let admin_requests = Family::<AdminLabels, Counter>::default();
        registry.register(
            "admin_requests",
            "Calls of the admin API, by endpoint (method and route) and status",
            admin_requests.clone(),
        );
        let tickets_issued = Counter::default();
        registry.register(
            "tickets_issued",
            "Tickets handed to admitted requests (X-Quotagate-Ticket)",
            tickets_issued.clone(),
        );
        let tickets_closed = Family::<TicketCloseLabels, Counter>::default();
        registry.register(
            "tickets_closed",
            "POST /v1/tickets/close answered, by result (closed, unknown: closed already or expired, invalid: malformed or forged)",
            tickets_closed.clone(),
        );
        let tickets_refused = Counter::default();
        registry.register(
            "tickets_refused",
            "Requests denied (429) by a concurrency limit",
            tickets_refused.clone(),
        );
        let tickets_expired = Counter::default();
        registry.register(
            "tickets_expired",
            "Concurrency slots freed by their hold, never closed, as the store saw them expire",
            tickets_expired.clone(),
        );
        let ticket_cost_reported = Counter::default();
        registry.register(
            "ticket_cost_reported",
            "Cost units backends reported when closing tickets, charged on top of admission",
            ticket_cost_reported.clone(),
        );
        Metrics {
            registry,
            decisions,
            latency,
            live_keys,
            reloads,
            store_up,
            store_errors,
            connections,
            connections_closed,
            connections_open,
            admin_requests,
            tickets_issued,
            tickets_closed,
            tickets_refused,
            tickets_expired,
            tickets_expired_seen: AtomicU64::new(0),
            tickets_in_flight: None,
            ticket_cost_reported,
        }
    }

    /// The decision counters for `policy`, to keep beside it while it is in force.
    pub fn decisions(&self, policy: &Policy) -> Decisions {
        Decisions {
            family: self.decisions.clone(),
            plans: policy
                .plans
                .iter()
                .map(|p| PlanCounters { name: p.name.clone(), slots: OnceLock::new() })
                .collect(),
            rules: policy.rules.iter().map(|r| r.name.clone()).collect(),
            slots_per_plan: (policy.rules.len().min(MAX_CACHED_RULES) + 1) * Outcome::COUNT,
            unplanned: Default::default(),
        }
    }

    pub fn check_took(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// Counts one connection on the check listener: `transport` is `"plain"` or `"tls"`,
    /// `alpn` the protocol a TLS client chose (`"h2"`, `"http/1.1"`, `"none"`; `"none"` for plain).
    pub fn connection_accepted(&self, transport: &'static str, alpn: &'static str) {
        self.connections.get_or_create(&ConnectionLabels { transport, alpn }).inc();
    }

    /// Counts one connection on `listener` (`"check"`, `"admin"` or `"tickets"`) that the server closed
    /// for `reason`.
    pub fn connection_closed(&self, listener: &'static str, reason: CloseReason) {
        self.connections_closed.get_or_create(&ClosedLabels { listener, reason }).inc();
    }

    /// The gauge of connections open on `listener`; the server raises it for each connection it
    /// keeps and lowers it when the connection ends.
    pub fn connections_open(&self, listener: &'static str) -> Gauge {
        self.connections_open.get_or_create(&ListenerLabels { listener }).clone()
    }

    /// Counts one call of the admin API: `endpoint` is its method and route
    /// (`"PUT /v1/overrides"`, one of a fixed set), `status` what it answered.
    pub fn admin_request(&self, endpoint: String, status: u16) {
        self.admin_requests.get_or_create(&AdminLabels { endpoint, status }).inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// These metrics with `quotagate_tickets_in_flight`, for a store that counts the slots it
    /// holds (the memory store; Redis would have to read every caller's slots).
    pub fn with_in_flight(mut self) -> Metrics {
        let gauge = Gauge::default();
        self.registry.register("tickets_in_flight", "Concurrency slots held now", gauge.clone());
        self.tickets_in_flight = Some(gauge);
        self
    }

    /// Counts one ticket handed to an admitted request.
    pub fn ticket_issued(&self) {
        self.tickets_issued.inc();
    }

    /// Counts one request denied by a concurrency limit.
    pub fn ticket_refused(&self) {
        self.tickets_refused.inc();
    }

    /// Counts one close request by its `result`, and (when `closed`) the cost it reported.
    pub fn ticket_closed(&self, result: CloseResult, reported_cost: u32) {
        self.tickets_closed.get_or_create(&TicketCloseLabels { result }).inc();
        if result == CloseResult::closed {
            self.ticket_cost_reported.inc_by(u64::from(reported_cost));
        }
    }

    /// Prometheus text exposition, with the store's figures as of now.
    pub fn render(&self, store: StoreFigures) -> String {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.live_keys.set(gauge(store.live_keys));
        self.store_up.set(i64::from(store.up));
        self.store_errors.set(gauge(store.errors));
        if let (Some(g), Some(n)) = (&self.tickets_in_flight, store.tickets_in_flight) {
            g.set(gauge(n));
        }
        // The store counts expiries; the counter catches up with its total, which never falls.
        // `fetch_max` gives concurrent renders disjoint shares of the difference.
        let seen = self.tickets_expired_seen.fetch_max(store.tickets_expired, Ordering::Relaxed);
        self.tickets_expired.inc_by(store.tickets_expired.saturating_sub(seen));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_listed_in_order_and_the_readme_names_each() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        let readme = include_str!("../README.md");
        let (_, after) =
            readme.split_once("quotagate_decisions_total{outcome,plan,rule}").expect("the metrics list");
        let (list, _) = after.split_once("quotagate_check_duration_seconds").expect("the next metric");
        for o in Outcome::ALL {
            assert!(list.contains(&format!("`{o:?}`")), "the README's outcome list lacks {o:?}");
        }
    }
}

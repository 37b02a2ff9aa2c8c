//! [`Quotagate`]: the service binary under test (`CARGO_BIN_EXE_quotagate`), started as
//! `quotagate serve --config FILE --listen 127.0.0.1:PORT` with a config the test writes, and
//! ready once `GET /healthz` answers 200 (and, with [`Builder::tickets_listener`], the tickets
//! listener accepts connections). The config file stays in place so a test can rewrite
//! it and [`Quotagate::reload`] (SIGHUP) to test hot reload. A panic while a `Quotagate` is alive
//! prints its log when the value drops.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use super::process::Process;
use super::{client, free_port, STARTUP_TIMEOUT};

/// The binary Cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_quotagate");

/// Options for a [`Quotagate`]; see [`Quotagate::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    config: String,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    admin_port: Option<u16>,
    tickets_listener: bool,
}

/// Why [`Builder::try_start`] returned no running service: it exited before it was healthy.
#[derive(Debug)]
pub struct StartError {
    pub status: ExitStatus,
    /// Its stdout and stderr.
    pub log: String,
}

impl Builder {
    /// Sets an environment variable, e.g. `("QUOTAGATE_LOG", "debug")`. The test's own
    /// environment is inherited, so `QUOTAGATE_LOG=debug cargo test` works too.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds arguments after `serve --config FILE --listen ADDR`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Says the config sets `server.admin_listen = "127.0.0.1:PORT"`: readiness is then probed
    /// there (with `server.tls`, the main listener speaks TLS and has no `/healthz`).
    pub fn admin_port(mut self, port: u16) -> Self {
        self.admin_port = Some(port);
        self
    }

    /// Serves `POST /v1/tickets/close` too: the config gets `server.tickets_listen =
    /// "127.0.0.1:PORT"` (a new free port at each start attempt, like the main listener's), and
    /// [`Quotagate::tickets_url`] says where.
    pub fn tickets_listener(mut self) -> Self {
        self.tickets_listener = true;
        self
    }

    /// Starts the service and waits until it is healthy; panics with its log if it is not
    /// within [`STARTUP_TIMEOUT`].
    pub async fn start(self) -> Quotagate {
        match self.try_start().await {
            Ok(quotagate) => quotagate,
            Err(e) => panic!("quotagate exited before it was healthy ({}):\n{}", e.status, e.log),
        }
    }

    /// Starts the service and waits until it is healthy, or returns how it exited: for tests
    /// of startup failures such as an invalid config. Panics if it neither becomes healthy nor
    /// exits within [`STARTUP_TIMEOUT`].
    pub async fn try_start(self) -> Result<Quotagate, StartError> {
        let dir = tempfile::Builder::new().prefix("quotagate-").tempdir().expect("create a temp dir");
        let config_path = dir.path().join("quotagate.toml");
        let mut last_error = None;
        // The port is free when chosen but may be taken before the service binds it: then it
        // exits with "address in use" and we try again with a new port.
        for attempt in 1..=3 {
            let port = free_port();
            let tickets_port = self.tickets_listener.then(free_port);
            let config = match tickets_port {
                Some(tickets) => with_tickets_listen(&self.config, tickets),
                None => self.config.clone(),
            };
            std::fs::write(&config_path, config).expect("write the quotagate config");
            let mut command = Command::new(BINARY);
            command
                .arg("serve")
                .arg("--config")
                .arg(&config_path)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(&self.args)
                .current_dir(dir.path());
            for (key, value) in &self.env {
                command.env(key, value);
            }
            let log = dir.path().join(format!("quotagate-{attempt}.log"));
            let process = Process::spawn("quotagate", &command, &log);
            let mut quotagate = Quotagate {
                process,
                port,
                admin_port: self.admin_port,
                tickets_port,
                config_path: config_path.clone(),
                dir: None,
            };
            match quotagate.wait_healthy().await {
                Ok(()) => {
                    quotagate.dir = Some(dir);
                    return Ok(quotagate);
                }
                Err(status) => {
                    let log = quotagate.process.log();
                    let port_taken = log.contains("in use") || log.contains("os error 98");
                    last_error = Some(StartError { status, log });
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }
}

/// `config` (TOML) with `server.tickets_listen` set to `127.0.0.1:port`. Comments are lost;
/// the meaning is kept.
fn with_tickets_listen(config: &str, port: u16) -> String {
    let mut table: toml::Table =
        config.parse().unwrap_or_else(|e| panic!("the test's config is not TOML: {e}"));
    let server = table.entry("server").or_insert_with(|| toml::Table::new().into());
    let toml::Value::Table(server) = server else { panic!("`server` in the test's config is not a table") };
    server.insert("tickets_listen".to_owned(), format!("127.0.0.1:{port}").into());
    toml::to_string(&table).expect("a TOML table serializes")
}

/// A running quotagate, killed on drop; its log is printed if the test is failing.
pub struct Quotagate {
    process: Process,
    port: u16,
    admin_port: Option<u16>,
    tickets_port: Option<u16>,
    config_path: PathBuf,
    // Dropped after `process` (fields drop in order), so the log is still there to print.
    dir: Option<tempfile::TempDir>,
}

impl Quotagate {
    /// Starts the service with `config` (TOML) and default options.
    pub async fn start(config: &str) -> Quotagate {
        Quotagate::builder(config).start().await
    }

    /// Options for a service whose config file will hold `config` (TOML).
    pub fn builder(config: &str) -> Builder {
        Builder {
            config: config.to_owned(),
            env: Vec::new(),
            args: Vec::new(),
            admin_port: None,
            tickets_listener: false,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash; also the forwardAuth address to give
    /// Traefik (every path but the reserved ones is a check).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served: `server.admin_listen` if the
    /// builder was told of it, else the main listener. No trailing slash.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port.unwrap_or(self.port))
    }

    /// `http://127.0.0.1:PORT` of `server.tickets_listen`, where backends close their tickets;
    /// no trailing slash. Panics unless the builder was given [`Builder::tickets_listener`].
    pub fn tickets_url(&self) -> String {
        let port = self.tickets_port.expect("started without Builder::tickets_listener");
        format!("http://127.0.0.1:{port}")
    }

    /// The Prometheus text at `/metrics`, or `None` if the service does not answer.
    pub async fn metrics(&self) -> Option<String> {
        client().get(format!("{}/metrics", self.admin_url())).send().await.ok()?.text().await.ok()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The config file the service was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the config file's content. The new file is written beside it and renamed over
    /// it, so the service never reads half a file (its file watcher may pick the change up
    /// before any [`Quotagate::reload`]).
    pub fn write_config(&self, config: &str) {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, config).expect("write the new quotagate config");
        std::fs::rename(&tmp, &self.config_path).expect("replace the quotagate config");
    }

    /// Sends SIGHUP: the service re-reads its config file. Returns at once; wait for the effect
    /// (e.g. with [`super::poll`] or [`Quotagate::wait_for_log`]).
    pub fn reload(&mut self) {
        self.process.signal("HUP");
    }

    /// Sends SIGTERM and waits up to `timeout` for the service to exit; returns its status, or
    /// panics with its log if it is still running then.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.process.signal("TERM");
        match self.process.wait_timeout(timeout) {
            Some(status) => status,
            // The log is printed when `self` drops during the panic.
            None => panic!("quotagate still runs {timeout:?} after SIGTERM"),
        }
    }

    /// Everything the service wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits until the log contains `needle`, for at most `timeout`; panics with the log if it
    /// does not.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in quotagate's log after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints the service's log to stderr (shown by the test runner when the test fails; a
    /// failing test prints it anyway when the value drops).
    pub fn dump_log(&self) {
        eprintln!("{}", self.process.report());
    }

    /// Polls `GET /healthz` until it answers 200. `Err(status)` if the process exits first;
    /// panics if neither happens within [`STARTUP_TIMEOUT`].
    async fn wait_healthy(&mut self) -> Result<(), ExitStatus> {
        let http = client();
        let url = format!("{}/healthz", self.admin_url());
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.process.exit_status() {
                return Err(status);
            }
            let last = match http.get(&url).send().await {
                Ok(response) if response.status() == 200 => match self.tickets_port {
                    None => return Ok(()),
                    Some(port) => match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        Ok(_) => return Ok(()),
                        Err(e) => format!("the tickets listener on port {port} refuses connections: {e}"),
                    },
                },
                Ok(response) => format!("GET /healthz answered {}", response.status()),
                Err(e) => format!("GET /healthz failed: {e}"),
            };
            assert!(Instant::now() < deadline, "quotagate not healthy after {STARTUP_TIMEOUT:?}: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

//! [`Nginx`]: a real nginx (from apt: `nginx-light` or `nginx`), started for one test in the
//! foreground (`daemon off`) on a free port of 127.0.0.1, with its own temporary prefix, config,
//! logs and pid file. It stands for a backend whose routing is the truth: a test gives it
//! `location` blocks that answer with `return`, so the body says which location served the
//! request, and therefore which path nginx routed it to.
//!
//! The binary is `$QUOTAGATE_NGINX`, else `nginx` on `PATH`, else `/usr/sbin/nginx`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Process;
use super::{free_port, STARTUP_TIMEOUT};

/// The nginx binary to run; panics with install instructions if there is none.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUOTAGATE_NGINX") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "QUOTAGATE_NGINX={} is not a file", path.display());
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("nginx")).find(|p| p.is_file()));
    if let Some(found) = on_path {
        return found;
    }
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    panic!(
        "nginx not found: these tests route through a real nginx.\n\
         Install it with `apt-get install nginx-light` (scripts/test.sh does this), or set \
         QUOTAGATE_NGINX=/path/to/nginx."
    );
}

/// A running nginx, stopped on drop; its error log is printed if the test is failing.
pub struct Nginx {
    process: Process,
    port: u16,
    // Dropped after `process` (fields drop in order), so the logs are still there to print.
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with one `server` holding `locations` (nginx config text, e.g.
    /// `location = /api/summarize { return 200 "summarize\n"; }`) and waits until it answers.
    pub async fn start(locations: &str) -> Nginx {
        let dir = tempfile::Builder::new().prefix("nginx-").tempdir().expect("create a temp dir");
        for sub in ["logs", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create nginx's folders");
        }
        let mut failures = Vec::new();
        // The port is free when chosen but may be taken before nginx binds it: then nginx exits
        // with "Address already in use" and we try a new port.
        for attempt in 1..=3 {
            let port = free_port();
            let conf = dir.path().join(format!("nginx-{attempt}.conf"));
            std::fs::write(&conf, config(dir.path(), port, locations)).expect("write nginx.conf");
            let log = dir.path().join(format!("nginx-{attempt}.log"));
            let mut command = Command::new(binary());
            command
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("logs/error.log"))
                .current_dir(dir.path());
            let mut process = Process::spawn("nginx", &command, &log);
            match wait_ready(&mut process, port).await {
                Ok(()) => return Nginx { process, port, dir },
                Err(why) => {
                    let errors =
                        std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default();
                    let taken = errors.contains("Address already in use");
                    failures.push(format!("attempt {attempt}: {why}\n{}\n{errors}", process.report()));
                    drop(process);
                    if !taken {
                        break;
                    }
                }
            }
        }
        panic!("nginx did not start:\n{}", failures.join("\n"));
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access log so far: one line per request, `$request_method $request_uri -> $uri`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let errors = std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default();
            eprintln!(
                "----- nginx error log -----\n{errors}\n----- nginx access log -----\n{}",
                self.access_log()
            );
        }
    }
}

fn config(prefix: &std::path::Path, port: u16, locations: &str) -> String {
    let p = prefix.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format routed '$request_method $request_uri -> $uri';
    access_log {p}/logs/access.log routed;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        location = /__ready {{ return 204; }}
{locations}
    }}
}}
"#
    )
}

/// Waits until nginx answers `/__ready`, or exits.
async fn wait_ready(process: &mut Process, port: u16) -> Result<(), String> {
    let http = super::client();
    let url = format!("http://127.0.0.1:{port}/__ready");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = process.exit_status() {
            return Err(format!("nginx exited ({status})"));
        }
        let last = match http.get(&url).send().await {
            Ok(r) if r.status() == 204 => return Ok(()),
            Ok(r) => format!("GET /__ready answered {}", r.status()),
            Err(e) => format!("GET /__ready failed: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(format!("not ready after {STARTUP_TIMEOUT:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

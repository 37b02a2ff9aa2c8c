//! [`RedisServer`]: a real `redis-server` on a free 127.0.0.1 port (`--save "" --appendonly no`),
//! killed on drop, that a test can stop and start again on the same port. [`RedisCluster`]:
//! three masters joined with `redis-cli --cluster create`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Process;
use super::{free_port, STARTUP_TIMEOUT};

/// Where `redis-server` is: `QUOTAGATE_REDIS_SERVER`, else on PATH. Panics with how to install.
fn binary(name: &str) -> String {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output();
    match found {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => panic!("{name} not found: these tests start a real Redis. Install it with `apt-get install redis-server` (scripts/test.sh does this)."),
    }
}

/// A running redis-server.
pub struct RedisServer {
    process: Option<Process>,
    port: u16,
    password: Option<String>,
    extra: Vec<String>,
    /// Extra `redis-cli` arguments (TLS).
    cli_extra: Vec<String>,
    tls: bool,
    dir: tempfile::TempDir,
    starts: u32,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::with_args(None, &[])
    }

    /// With `requirepass`.
    pub fn with_password(password: &str) -> RedisServer {
        RedisServer::with_args(Some(password), &[])
    }

    pub fn with_args(password: Option<&str>, extra: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("redis-").tempdir().expect("a temp dir");
        let mut server = RedisServer {
            process: None,
            port: free_port(),
            password: password.map(str::to_owned),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cli_extra: Vec::new(),
            tls: false,
            dir,
            starts: 0,
        };
        server.resume();
        server
    }

    /// A server that speaks only TLS, with a certificate for 127.0.0.1 signed by a CA made for
    /// it (`openssl` CLI); returns the server and the CA's PEM file.
    pub fn with_tls() -> (RedisServer, PathBuf) {
        let dir = tempfile::Builder::new().prefix("redis-tls-").tempdir().expect("a temp dir");
        let d = dir.path();
        let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=quotagate test CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
printf 'subjectAltName=IP:127.0.0.1\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf
"#;
        let out = Command::new("sh").arg("-c").arg(script).current_dir(d).output().expect("run openssl");
        assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
        let ca = d.join("ca.pem");
        let p = |name: &str| d.join(name).display().to_string();
        let port = free_port();
        let extra = [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            p("server.pem"),
            "--tls-key-file".to_owned(),
            p("server.key"),
            "--tls-ca-cert-file".to_owned(),
            p("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let mut server = RedisServer {
            process: None,
            port,
            password: None,
            extra: extra.to_vec(),
            cli_extra: vec!["--tls".to_owned(), "--cacert".to_owned(), p("ca.pem")],
            tls: true,
            dir,
            starts: 0,
        };
        server.resume();
        (server, ca)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` with TLS), without the password.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL): every connection drops at once.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the server again on the same port, empty; waits until it answers PING.
    pub fn resume(&mut self) {
        assert!(self.process.is_none(), "redis-server is already running");
        self.starts += 1;
        let mut command = Command::new(binary("redis-server"));
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &self.dir.path().display().to_string()]);
        if let Some(p) = &self.password {
            command.args(["--requirepass", p]);
        }
        command.args(&self.extra);
        let log = self.dir.path().join(format!("redis-{}.log", self.starts));
        self.process = Some(Process::spawn("redis-server", &command, &log));
        self.wait_ready();
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new(binary("redis-cli"));
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            command.args(["--no-auth-warning", "-a", p]);
        }
        command.args(&self.cli_extra);
        let out = command.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned() + String::from_utf8_lossy(&out.stderr).trim()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if self.cli(&["PING"]).contains("PONG") {
                return;
            }
            if let Some(p) = self.process.as_mut() {
                if let Some(status) = p.exit_status() {
                    panic!("redis-server exited ({status}):\n{}", p.report());
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer PING within {STARTUP_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// A Redis Cluster of three masters, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::with_args(
                    None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new(binary("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !cluster.nodes.iter().all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port())).collect()
    }
}

/// The `[store.redis]` of a config with `connection` (`url = "..."` or `cluster = [...]`),
/// a 2 s command timeout and `on_error = "deny"`, so that a failing Redis fails the test.
pub fn store_config(connection: &str) -> quotagate::config::RedisConfig {
    let text = format!(
        "[plans.free]\nlimits = [{{ requests = 1, per = \"day\" }}]\n[store]\nkind = \"redis\"\n[store.redis]\n{connection}\ncommand_timeout = \"2s\"\non_error = \"deny\"\n"
    );
    match quotagate::config::Config::parse(&text, "test.toml", None)
        .unwrap_or_else(|e| panic!("{e}"))
        .store
        .backend
    {
        quotagate::config::Backend::Redis(r) => r,
        quotagate::config::Backend::Memory => unreachable!("kind = \"redis\""),
    }
}

/// A Redis store on `server` whose script counts at the `now` each check is given
/// (`Redis::with_caller_clock`), so that a test drives time; connected, with the
/// current-thread runtime to drive it. `local` turns on the local tier of denials.
pub fn caller_clock_store(
    server: &RedisServer,
    local: bool,
) -> (tokio::runtime::Runtime, quotagate::store::Store) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let mut config = store_config(&format!("url = \"{}\"", server.url()));
    config.local = local;
    let redis = std::sync::Arc::new(quotagate::store::Redis::new(config, 1000).with_caller_clock());
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), redis.clone().connect()).await.expect("connects")
    });
    (runtime, quotagate::store::Store::Redis(redis))
}

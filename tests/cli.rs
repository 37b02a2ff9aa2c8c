//! The command line: check-config, healthcheck, --version and --help, run as a user would;
//! and the container files' commands (Dockerfile, docker-compose.yml, production.yml), run as
//! the container engine would run them.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::process::Process;

fn quotagate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quotagate")).args(args).output().expect("the binary runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn check_config_summarises_a_good_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/contract.toml");
    let out = quotagate(&["check-config", path]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(
        stdout.contains("4 plans (burst, free, internal, pro), 2 rules (summarize, docs), 2 tokens"),
        "{stdout}"
    );
    assert!(!stdout.contains("pro-token-123"), "tokens are never printed");
}

#[test]
fn check_config_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[plans.free]\nlimits = [{ requests = 0, per = \"minute\" }]\n[defaults]\nplan = \"gold\"\n[tokens]\n\"tok-abc\" = \"x\"\n",
    )
    .unwrap();
    let out = quotagate(&["check-config", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "error: invalid config {}\n  plans.free.limits[0].requests: must be greater than 0 (got 0)\n  defaults.plan: unknown plan \"gold\" (known: \"free\")\n",
        path.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(stderr.contains("tokens[fingerprint "), "{stderr}");
    assert!(!stderr.contains("tok-abc"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config_with_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let out = quotagate(&["serve", "--config", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("server.listen: invalid address \"nowhere\""), "{stderr}");
}

#[test]
fn healthcheck_fails_clearly_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let out = quotagate(&["healthcheck", "--url", &url]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{stderr}");
    let out = quotagate(&["healthcheck", "--url", "https://example.com/"]);
    assert!(text(&out).1.contains("unsupported URL"));
}

#[test]
fn version_and_help_explain_themselves() {
    let out = quotagate(&["--version"]);
    assert!(text(&out).0.starts_with(&format!("quotagate {}", env!("CARGO_PKG_VERSION"))));
    let out = quotagate(&["--help"]);
    let (stdout, _) = text(&out);
    for needle in ["check-config", "healthcheck", "Examples:", "QUOTAGATE_LOG_FORMAT"] {
        assert!(stdout.contains(needle), "{needle} missing from --help:\n{stdout}");
    }
}

#[test]
fn a_missing_file_is_said_once() {
    let out = quotagate(&["check-config", "/nonexistent/quotagate.toml"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr,
        "error: cannot read /nonexistent/quotagate.toml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn check_config_warns_of_the_built_in_hash_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.toml");
    std::fs::write(&path, "[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n").unwrap();
    let out = quotagate(&["check-config", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(
        stderr.starts_with("warning: identity.hash_key: not set, so the built-in key is used"),
        "{stderr}"
    );
    std::fs::write(&path, "[identity]\nhash_key = \"0123456789abcdef\"\n[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n").unwrap();
    let out = quotagate(&["check-config", path.to_str().unwrap()]);
    assert_eq!(text(&out).1, "", "no warning with a hash key");
}

#[test]
fn check_config_says_a_bucket_with_average_0_limits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.toml");
    let text_ = "[plans.free]\nlimits = [{ average = 0, burst = 5 }]\n\
                 [plans.pro]\nlimits = [{ average = 0 }, { requests = 9, per = \"minute\" }]\n";
    std::fs::write(&path, text_).unwrap();
    let out = quotagate(&["check-config", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("no limit (average = 0): plans.free.limits[0], plans.pro.limits[0]"), "{stdout}");
}

#[tokio::test]
async fn serve_warns_of_the_built_in_hash_key_at_start() {
    let q = support::Quotagate::start("[plans.free]\nlimits = [{ requests = 1, per = \"second\" }]\n").await;
    q.wait_for_log("identity.hash_key", Duration::from_secs(5)).await;
    assert!(q.log().contains("the built-in key is used"), "{}", q.log());
}

/// The container engine's view of one way to ship quotagate: what it runs, with which
/// environment, and what its health check runs.
struct Shipped {
    what: &'static str,
    serve: Vec<String>,
    healthcheck: Vec<String>,
    env: BTreeMap<String, String>,
}

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array (exec form) after `prefix` on a line of `text`.
fn exec_form(text: &str, prefix: &str) -> Option<Vec<String>> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .map(|rest| serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{prefix} {rest}: {e}")))
}

/// `${NAME:-default}` replaced by its default, as with an empty environment.
fn with_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closing brace") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, d)| d));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.trim_matches('"').to_owned()
}

/// The Dockerfile's runtime stage: ENV, ENTRYPOINT + CMD, and the HEALTHCHECK command.
fn dockerfile() -> Shipped {
    let text = repo_file("Dockerfile");
    let runtime = &text[text.find("AS runtime").expect("a runtime stage")..];
    let runtime = &runtime[..runtime.find("\nFROM ").unwrap_or(runtime.len())];
    let joined = runtime.replace("\\\n", " ");
    let mut env = BTreeMap::new();
    for line in joined.lines().filter_map(|l| l.strip_prefix("ENV ")) {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    // Instructions start a line; a HEALTHCHECK's own CMD is on the joined HEALTHCHECK line.
    let instruction = |name: &str| -> Vec<String> {
        let rest = joined.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name}"));
        serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{name}{rest}: {e}"))
    };
    let mut serve = instruction("ENTRYPOINT ");
    serve.extend(instruction("CMD "));
    let healthcheck = joined
        .lines()
        .find_map(|l| l.strip_prefix("HEALTHCHECK "))
        .and_then(|l| l.split_once(" CMD "))
        .map(|(_, cmd)| serde_json::from_str(cmd.trim()).expect("HEALTHCHECK CMD in exec form"))
        .expect("a HEALTHCHECK");
    Shipped { what: "Dockerfile", serve, healthcheck, env }
}

/// The `quotagate` service of a compose file or stack, on top of the image.
fn service(file: &'static str, image: &Shipped) -> Shipped {
    let text = repo_file(file);
    let start = text.find("\n  quotagate:\n").unwrap_or_else(|| panic!("{file}: no quotagate service"));
    let block: Vec<&str> = text[start + 1..]
        .lines()
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("   ") || l.trim_start().starts_with('#'))
        .collect();
    let block = block.join("\n");
    let mut env = image.env.clone();
    let mut in_env = false;
    for line in block.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line == "    environment:" {
            in_env = true;
        } else if in_env && line.starts_with("      ") {
            let (k, v) = line.trim().split_once(':').expect("KEY: value");
            env.insert(k.to_owned(), with_defaults(v.trim()));
        } else {
            in_env = false;
        }
    }
    let mut serve = vec![image.serve[0].clone()];
    match exec_form(&block, "command:") {
        Some(command) => serve.extend(command.iter().map(|a| with_defaults(a))),
        None => serve.extend(image.serve[1..].iter().cloned()),
    }
    let healthcheck = match exec_form(&block, "test:") {
        Some(test) => {
            assert_eq!(test[0], "CMD", "{file}: healthcheck test in exec form");
            test[1..].to_vec()
        }
        None => image.healthcheck.clone(),
    };
    Shipped { what: file, serve, healthcheck, env }
}

/// Runs `argv` as the container would: `/quotagate` is the binary under test, and paths under
/// `/etc/quotagate/` are in `dir`.
fn container_command(argv: &[String], env: &BTreeMap<String, String>, dir: &Path) -> Command {
    let inside = |s: &str| s.replace("/etc/quotagate/", &format!("{}/", dir.display()));
    assert_eq!(argv[0], "/quotagate", "the image's binary");
    let mut command = Command::new(env!("CARGO_BIN_EXE_quotagate"));
    command.args(argv[1..].iter().map(|a| inside(a)));
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, inside(v));
    }
    command
}

#[test]
fn the_shipped_healthchecks_find_a_service_whose_admin_listen_moved() {
    let image = dockerfile();
    let shipped = [service("docker-compose.yml", &image), service("production.yml", &image), image];
    for s in &shipped {
        let dir = tempfile::tempdir().unwrap();
        let (listen, admin) = (support::free_port(), support::free_port());
        let config = format!(
            "[server]\nlisten = \"0.0.0.0:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [identity]\nhash_key = \"0123456789abcdef\"\n\
             [plans.free]\nlimits = [{{ requests = 1, per = \"second\" }}]\n"
        );
        // Where each file puts its config; a plain image run names it with -e.
        std::fs::write(dir.path().join("quotagate.toml"), &config).unwrap();
        let mut env = s.env.clone();
        if s.what == "Dockerfile" {
            env.insert("QUOTAGATE_CONFIG".into(), "/etc/quotagate/quotagate.toml".into());
        }
        let serve = container_command(&s.serve, &env, dir.path());
        let server = Process::spawn("quotagate", &serve, &dir.path().join("serve.log"));
        let probe = format!("http://127.0.0.1:{admin}/healthz");
        let deadline = Instant::now() + support::STARTUP_TIMEOUT;
        while !quotagate(&["healthcheck", "--url", &probe]).status.success() {
            assert!(Instant::now() < deadline, "{}: not healthy at {probe}:\n{}", s.what, server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let check = container_command(&s.healthcheck, &env, dir.path()).output().unwrap();
        assert!(
            check.status.success(),
            "{}: `{}` with the service's environment {env:?} failed: {}",
            s.what,
            s.healthcheck.join(" "),
            String::from_utf8_lossy(&check.stderr)
        );
        drop(server);
    }
}

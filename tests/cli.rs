//! The command line: check-config, healthcheck, --version and --help, run as a user would.

use std::process::{Command, Output};

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

//! The admin API against its OpenAPI document (`docs/admin-api.yaml`): schemathesis (PyPI)
//! generates requests from the document, valid and not, sends them to a live quotagate with
//! the admin token, and checks that nothing answers 5xx and that every answer (status,
//! content type, headers, body) is one the document allows. Examples per operation are
//! bounded, so the run stays well under a minute.
//!
//! schemathesis is `$QUOTAGATE_SCHEMATHESIS`, else `<repo>/.venv/bin/schemathesis` (what
//! `scripts/test.sh` installs), else on PATH. Without it the test says so and passes, unless
//! `CI=true`, where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{free_port, Quotagate};

/// The admin token of the service under test (a test secret, not a credential).
const ADMIN_TOKEN: &str = "schemathesis-admin-token-0123456789";

/// Requests schemathesis makes per operation and phase, at most.
const MAX_EXAMPLES: &str = "30";

fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("QUOTAGATE_SCHEMATHESIS") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "QUOTAGATE_SCHEMATHESIS={} is not a file", path.display());
        return Some(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("schemathesis")).find(|p| p.is_file()))
}

/// A config with every kind of limit, rules for some plans and not others, a dry-run rule, an
/// exempt one, and tokens in `[tokens]`; the memory store.
fn config(token_file: &Path, admin_port: u16) -> String {
    format!(
        r#"
[server]
admin_listen = "127.0.0.1:{admin_port}"

[admin]
token_file = "{token_file}"

[identity]
sources = ["bearer", "header:x-api-key"]
hash_key = "schemathesis test hash key, 32 bytes or more"

[defaults]
plan = "free"

[plans.free]
limits = [{{ requests = 5, per = "minute" }}, {{ requests = 100, per = "month", algorithm = "sliding" }}]

[plans.pro]
limits = [{{ average = 10, period = "1s", burst = 20 }}]

[plans.internal]
unlimited = true

[tokens]
"sk_pro_1" = "pro"

[[rules]]
name = "summarize"
path_prefix = "/api/summarize"
methods = ["POST"]
limits.free = [{{ requests = 1, per = "hour" }}]
limits."*" = [{{ requests = 10, per = "hour" }}]

[[rules]]
name = "shadow"
path_prefix = "/api"
dry_run = true
limits."*" = [{{ requests = 3, per = "day" }}]

[[rules]]
name = "health"
path_prefix = "/health"
exempt = true
"#,
        token_file = token_file.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_as_its_openapi_document_says() {
    let Some(binary) = schemathesis() else {
        let why = "schemathesis not found: install it with `.venv/bin/pip install schemathesis` \
                   (scripts/test.sh does), or set QUOTAGATE_SCHEMATHESIS";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}; CI must run this test");
        eprintln!("skipped: {why}");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("write the admin token");
    let admin_port = free_port();
    let quotagate = Quotagate::builder(&config(&token_file, admin_port)).admin_port(admin_port).start().await;

    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/admin-api.yaml");
    let mut command = Command::new(&binary);
    command
        .arg("run")
        .arg(&spec)
        .args(["--url", &quotagate.admin_url()])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,negative_data_rejection",
        ])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "5"])
        .args(["--workers", "2"])
        .args(["--no-color", "--warnings", "off"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(dir.path().join("junit.xml"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1");
    let run = tokio::task::spawn_blocking(move || command.output());
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("schemathesis finishes within 2 minutes")
        .expect("the blocking task runs")
        .expect("schemathesis starts");
    let report =
        format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        quotagate.dump_log();
    }
    assert!(output.status.success(), "schemathesis found answers the document does not allow:\n{report}");
    // It tested every operation of the document.
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).expect("schemathesis wrote its report");
    for operation in [
        "POST /v1/usage",
        "POST /v1/reset",
        "PUT /v1/overrides",
        "GET /v1/overrides",
        "DELETE /v1/overrides",
        "POST /v1/explain",
    ] {
        let case = junit.split("<testcase ").find(|c| c.starts_with(&format!("name=\"{operation}\"")));
        let case = case.unwrap_or_else(|| panic!("schemathesis did not test {operation}:\n{junit}"));
        let case = case.split("</testcase>").next().unwrap_or(case);
        assert!(!case.contains("<skipped"), "schemathesis skipped {operation}:\n{junit}");
    }
    // No request let an API token or the admin token into the log.
    let log = quotagate.log();
    assert!(!log.contains(ADMIN_TOKEN) && !log.contains("sk_pro_1"), "a token in the log:\n{log}");
}

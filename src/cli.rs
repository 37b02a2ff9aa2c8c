//! `quotagate admin ...`: the admin API's calls for operators, one subcommand each. The admin
//! token comes from `--token-file`, an API token from `--api-token-file` or stdin: never from
//! the command line, where `ps` and shell histories would show it. Answers print as JSON on
//! stdout; a refusal prints its status and detail and exits 1.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use http::Method;
use quotagate::admin::client::{self, Answer};
use serde_json::{json, Value};

/// Where the admin API is, and its token.
#[derive(Args)]
pub struct Target {
    /// The admin listener: http://HOST:PORT (server.admin_listen).
    #[arg(long, env = "QUOTAGATE_ADMIN_URL")]
    url: String,
    /// A file holding the admin token ([admin] token_file).
    #[arg(long, env = "QUOTAGATE_ADMIN_TOKEN_FILE")]
    token_file: PathBuf,
}

/// The API token a call is about.
#[derive(Args)]
pub struct ApiToken {
    /// A file holding the API token; without it the token is read from stdin.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AdminCall {
    /// A token's plan and what is left of each limit that can apply (POST /v1/usage); nothing
    /// is counted.
    Usage {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        token: ApiToken,
    },
    /// Clears a token's counters, all of them or one plan's or rule's (POST /v1/reset).
    Reset {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        token: ApiToken,
        /// Only this plan's or rule's counters.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Sets, lists or removes a token's override of its plan and limits (/v1/overrides).
    #[command(subcommand)]
    Override(OverrideCall),
    /// What quotagate would answer a request, and why, without counting it (POST /v1/explain).
    Explain {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        token: ApiToken,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request's host, e.g. api.example.com.
        #[arg(long)]
        host: String,
        /// The request's path and query, e.g. "/api/summarize?x=1".
        #[arg(long)]
        uri: String,
        /// A header of the request, "Name: value" (repeatable; not for secrets: give the token
        /// with --api-token-file or on stdin).
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The header the token goes in: Authorization (as "Bearer <token>") or another
        /// (the token as it is).
        #[arg(long, default_value = "Authorization")]
        token_header: String,
        /// Explain a request without a token (nothing is read from stdin).
        #[arg(long, conflicts_with = "api_token_file")]
        no_token: bool,
    },
}

#[derive(Subcommand)]
pub enum OverrideCall {
    /// Sets (replaces) a token's override: a plan and/or limits, until an optional expiry
    /// (PUT /v1/overrides).
    Set {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        token: ApiToken,
        /// The plan that replaces the token's.
        #[arg(long)]
        plan: Option<String>,
        /// Limits that replace the plan's own, as JSON in a plan's syntax, e.g.
        /// '[{"requests": 1000, "per": "day"}]'.
        #[arg(long)]
        limits: Option<String>,
        /// When it stops applying (RFC 3339, e.g. 2026-12-31T23:59:59Z).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Lists the overrides in force, a page at a time (GET /v1/overrides).
    List {
        #[command(flatten)]
        target: Target,
        /// Where the page starts: the next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Overrides per page (1 to 1000; default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Removes a token's override (DELETE /v1/overrides).
    Delete {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        token: ApiToken,
        /// The override's key as listed, instead of the token (for a token that is lost).
        #[arg(long, conflicts_with = "api_token_file")]
        key: Option<String>,
    },
}

/// Runs one admin call and prints its answer.
pub fn admin(call: AdminCall) -> anyhow::Result<()> {
    let (target, method, path, body) = request(call)?;
    let token = secret(&target.token_file).context("--token-file")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer: Answer = runtime
        .block_on(client::call(&target.url, &token, method, &path, body.as_ref()))
        .map_err(anyhow::Error::msg)?;
    if !answer.is_success() {
        bail!("{}", answer.describe());
    }
    println!("{}", answer.describe());
    Ok(())
}

/// The call's target, method, path and body; reads the API token where the call needs one.
fn request(call: AdminCall) -> anyhow::Result<(Target, Method, String, Option<Value>)> {
    Ok(match call {
        AdminCall::Usage { target, token } => {
            (target, Method::POST, "/v1/usage".into(), Some(json!({ "token": token.read()? })))
        }
        AdminCall::Reset { target, token, scope } => {
            let mut body = json!({ "token": token.read()? });
            if let Some(scope) = scope {
                body["scope"] = json!(scope);
            }
            (target, Method::POST, "/v1/reset".into(), Some(body))
        }
        AdminCall::Override(OverrideCall::Set { target, token, plan, limits, expires_at }) => {
            let limits = match limits {
                Some(text) => Some(serde_json::from_str::<Value>(&text).context("--limits is not JSON")?),
                None => None,
            };
            let mut body = json!({ "token": token.read()? });
            for (key, value) in [
                ("plan", plan.map(Value::from)),
                ("limits", limits),
                ("expires_at", expires_at.map(Value::from)),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            (target, Method::PUT, "/v1/overrides".into(), Some(body))
        }
        AdminCall::Override(OverrideCall::List { target, cursor, limit }) => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(cursor) = cursor {
                query.append_pair("cursor", &cursor);
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            let query = query.finish();
            let path =
                if query.is_empty() { "/v1/overrides".to_owned() } else { format!("/v1/overrides?{query}") };
            (target, Method::GET, path, None)
        }
        AdminCall::Override(OverrideCall::Delete { target, token, key }) => {
            let body = match key {
                Some(key) => json!({ "key": key }),
                None => json!({ "token": token.read()? }),
            };
            (target, Method::DELETE, "/v1/overrides".into(), Some(body))
        }
        AdminCall::Explain { target, token, method, host, uri, headers, token_header, no_token } => {
            let mut map = serde_json::Map::new();
            for header in headers {
                let Some((name, value)) = header.split_once(':') else {
                    bail!("--header {header:?}: expected \"Name: value\"");
                };
                map.insert(name.trim().to_owned(), json!(value.trim()));
            }
            if !no_token {
                let token = token.read()?;
                let value = if token_header.eq_ignore_ascii_case("authorization") {
                    format!("Bearer {token}")
                } else {
                    token
                };
                map.insert(token_header, json!(value));
            }
            let body = json!({ "method": method, "host": host, "uri": uri, "headers": map });
            (target, Method::POST, "/v1/explain".into(), Some(body))
        }
    })
}

impl ApiToken {
    /// The API token: from the file, else from stdin; trimmed, never empty.
    fn read(&self) -> anyhow::Result<String> {
        if let Some(file) = &self.api_token_file {
            return secret(file).context("--api-token-file");
        }
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading the API token from stdin (end with Ctrl-D)");
        }
        let mut token = String::new();
        stdin.lock().read_to_string(&mut token).context("cannot read the API token from stdin")?;
        let token = token.trim();
        if token.is_empty() {
            bail!("no API token on stdin (give --api-token-file FILE, or pipe the token in)");
        }
        Ok(token.to_owned())
    }
}

/// A secret file's content, trimmed; an error names the file, never the content.
fn secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(text.to_owned())
}

//! The `quotagate` binary: command line -> config -> telemetry -> server; `admin` calls the
//! admin API of a running service ([`cli`]).

#[path = "cli.rs"]
mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use quotagate::config::Config;
use quotagate::{clock::Clock, server, telemetry};

const EXAMPLES: &str = "\
Examples:
  quotagate                                  serve the embedded default (10 requests/minute per token)
  quotagate serve --config quotagate.toml    serve with a config file (reloaded on SIGHUP and on change)
  quotagate check-config quotagate.toml      validate a config and print a summary
  quotagate healthcheck                      exit 0 if this service's /healthz answers (same config and env)
  quotagate admin override set --plan pro --url http://127.0.0.1:8081 --token-file F --api-token-file T
                                             move the customer of the API token in T to pro
  quotagate admin usage --url http://127.0.0.1:8081 --token-file F < T
                                             its usage, the API token on stdin (never on argv)

Environment: QUOTAGATE_CONFIG, QUOTAGATE_LISTEN, QUOTAGATE_LOG (e.g. info, quotagate=debug),
QUOTAGATE_LOG_FORMAT (pretty | json); for admin: QUOTAGATE_ADMIN_URL, QUOTAGATE_ADMIN_TOKEN_FILE.";

/// A rate-limit service for Traefik's forwardAuth middleware.
#[derive(Parser)]
#[command(version, about, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand)]
enum Command {
    /// Serve forwardAuth checks (the default).
    Serve(Serve),
    /// Validate a config file: print a summary, or every problem and exit 1.
    CheckConfig { file: PathBuf },
    /// Exit 0 if the service's /healthz answers 200 (for container health checks). Without
    /// --url, asks the address the service itself would use: the config's admin_listen or
    /// listen (QUOTAGATE_CONFIG, QUOTAGATE_LISTEN apply), on loopback.
    Healthcheck {
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        serve: Serve,
    },
    /// Call the admin API of a running service (usage, reset, override, explain).
    #[command(subcommand)]
    Admin(cli::AdminCall),
}

#[derive(Args, Default)]
struct Serve {
    /// Config file; the embedded default if absent.
    #[arg(long, env = "QUOTAGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen.
    #[arg(long, env = "QUOTAGATE_LISTEN")]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Healthcheck { url, serve }) => healthcheck(url, serve),
        Some(Command::Admin(call)) => cli::admin(call),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    println!("ok: {}", config.summary());
    Ok(())
}

fn healthcheck(url: Option<String>, args: Serve) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url,
        None => {
            let config = load(&args)?;
            let mut addr = config.server.admin_listen.unwrap_or(config.server.listen);
            if addr.ip().is_unspecified() {
                let loopback: std::net::IpAddr =
                    if addr.is_ipv4() { [127, 0, 0, 1].into() } else { [0u16, 0, 0, 0, 0, 0, 0, 1].into() };
                addr.set_ip(loopback);
            }
            format!("http://{addr}/healthz")
        }
    };
    runtime().block_on(server::healthcheck(&url)).map_err(anyhow::Error::msg)
}

/// The config `serve` would run with: the file or the embedded default, `--listen` applied.
fn load(args: &Serve) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    Ok(config)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime can start")
}

fn serve(args: Serve) -> anyhow::Result<()> {
    let config = load(&args)?;
    let log = std::env::var("QUOTAGATE_LOG").unwrap_or_else(|_| "info".into());
    let format = std::env::var("QUOTAGATE_LOG_FORMAT").unwrap_or_else(|_| "pretty".into());
    let format =
        telemetry::LogFormat::parse(&format).context("QUOTAGATE_LOG_FORMAT must be pretty or json")?;
    telemetry::init(&log, format).map_err(anyhow::Error::msg)?;
    for warning in &config.warnings {
        tracing::warn!(key = %warning.key, "config: {}", warning.message);
    }
    runtime().block_on(server::serve(config, args.config, args.listen, Clock::System))
}

//! Hot reload: on SIGHUP, and when the config file (or its tokens file) changes, the config is
//! read and validated again and swapped in whole. Counters live in the store, which is kept, so
//! nothing counted is lost. A broken file is refused with its problems logged and the config in
//! force stays.
//!
//! Changes are found by polling file metadata (`server.watch_interval`, default 2 s) rather
//! than inotify: polling sees edits through bind mounts, Docker configs and symlink swaps alike
//! and costs one `stat` per file per interval.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::signal::unix::{signal, SignalKind};

use super::AppState;
use crate::config::Config;

/// What identifies a file's content cheaply: modification time, length and inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|f| stamp(f)).collect()
}

/// Reloads `path` into `state` now. `listen` is the command line's `--listen`, which overrides
/// the file as it did at start. Returns whether the new config is in force.
pub fn reload(state: &AppState, path: &Path, listen: Option<SocketAddr>) -> bool {
    match Config::load(path) {
        Ok(mut new) => {
            if let Some(listen) = listen {
                new.server.listen = listen;
            }
            let old = state.config.load();
            if new.server != old.server || new.store != old.store {
                tracing::warn!(
                    "server and store settings take effect at the next restart; the rest applies now"
                );
            }
            for warning in &new.warnings {
                tracing::warn!(key = %warning.key, "config: {}", warning.message);
            }
            if new.identity.hasher.key_id() != old.identity.hasher.key_id() {
                // Counters are kept per hashed caller: under a new key every caller is new.
                tracing::warn!(
                    "identity.hash_key changed: every caller counts from zero under the new key (snapshots are written under it from now on)"
                );
            }
            tracing::info!(summary = %new.summary(), "config reloaded");
            state.install(new);
            state.metrics.reload(true);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the previous config stays in force");
            state.metrics.reload(false);
            false
        }
    }
}

/// Watches for SIGHUP and file changes until the process ends. `path` is the config file.
pub async fn watch(state: AppState, path: PathBuf, listen: Option<SocketAddr>) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload on signal disabled");
            return;
        }
    };
    let interval = state.config.load().server.watch_interval;
    let mut ticker = interval.map(tokio::time::interval);
    let mut seen = stamps(&state.config.load().files);
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!(path = %path.display(), "SIGHUP: reloading config");
                reload(&state, &path, listen);
            }
            () = tick => {
                let now = stamps(&state.config.load().files);
                if now == seen {
                    continue;
                }
                tracing::info!(path = %path.display(), "config file changed: reloading");
                reload(&state, &path, listen);
            }
        }
        // Whatever the outcome, remember what was seen so a broken file is reported once.
        seen = stamps(&state.config.load().files);
    }
}

//! The benchmark ceiling: an axum server that answers 200 with an empty body to everything,
//! on the same runtime settings as quotagate (tokio multi-thread, default worker count). It is
//! the physical limit of "an HTTP server answering a GET" on this machine, and doubles as the
//! demo and test backend in the container stacks.
//!
//! `cargo run --release --example ceiling -- 127.0.0.1:9000` (default `0.0.0.0:8080`).

use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "0.0.0.0:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("ceiling listening on {}", listener.local_addr()?);
    let app = Router::new().fallback(|| async {});
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be handled");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! `pantheon`: load the configuration, set up logging, bind, run until
//! SIGTERM/SIGINT, drain.

use anyhow::Context;
use pantheon_gateway::config::{Config, EXIT_CONFIG};
use pantheon_gateway::{Gateway, telemetry};
use std::net::SocketAddr;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprint!("pantheon: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(
        server = %config.server_id,
        region = %config.region,
        "pantheon listening on http://{local} (WebSocket: ws://localhost:{}/ws)",
        local.port()
    );
    Gateway::new(config).run(listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

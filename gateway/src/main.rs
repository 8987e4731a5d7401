//! `pantheon`: load the configuration, set up logging, bind, run until
//! SIGTERM/SIGINT, drain.

use anyhow::Context;
use pantheon_certs::{DevCert, MAX_VALIDITY, Store, write_dev_cert_to_dir};
use pantheon_gateway::config::{Config, EXIT_CONFIG};
use pantheon_gateway::{Gateway, telemetry, webtransport};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// `pantheon gen-cert`: write a development certificate browsers accept for
/// `serverCertificateHashes` (ECDSA P-256, localhost, valid 13 days).
#[derive(Debug, clap::Parser)]
#[command(name = "pantheon gen-cert")]
struct GenCert {
    /// Directory for `cert.pem` and `key.pem` (the key file is mode 0600).
    #[arg(long, default_value = ".")]
    out_dir: std::path::PathBuf,
}

fn gen_cert(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = <GenCert as clap::Parser>::parse_from(args);
    let cert = DevCert::generate(time::OffsetDateTime::now_utc(), MAX_VALIDITY)
        .context("generating the certificate")?;
    let (cert_path, key_path) = write_dev_cert_to_dir(&cert, &args.out_dir)
        .with_context(|| format!("writing to {}", args.out_dir.display()))?;
    let hash = cert.hash();
    println!("certificate: {}", cert_path.display());
    println!("key:         {}", key_path.display());
    println!("sha-256:     {}", hash.value);
    println!("expires:     {}", hash.expires_at);
    println!(
        "use with: TLS_CERT={} TLS_KEY={}",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args();
    if std::env::args().nth(1).as_deref() == Some("gen-cert") {
        let program = argv.next().unwrap_or_default();
        return gen_cert(std::iter::once(format!("{program} gen-cert")).chain(argv.skip(1)));
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprint!("pantheon: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    if let Some(redis) = &config.redis
        && let (Some(tls), None) = (&redis.tls, &redis.cluster_nodes)
        && let Err(why) = pantheon_gateway::bus::redis::check_tls(&redis.connection, tls).await
    {
        eprintln!(
            "pantheon: invalid configuration:\n  REDIS_CA_CERT: the Redis server's certificate was refused: {why}"
        );
        std::process::exit(EXIT_CONFIG);
    }
    // Each connection is a descriptor; the default soft limit (1024) is far
    // below MAX_CONNECTIONS.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < config.max_connections + 64 => tracing::warn!(
            limit = n,
            max_connections = config.max_connections,
            "open-file limit is below MAX_CONNECTIONS"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let certs = match Store::new(config.cert_source()) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("pantheon: invalid configuration:\n  TLS_CERT/TLS_KEY: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let wt_addr = SocketAddr::new(config.host, config.wt_port);
    let wt = webtransport::Listener::bind(wt_addr, &certs, &config)
        .with_context(|| format!("binding UDP {wt_addr} for WebTransport"))?;
    let wt_local = wt.local_addr()?;
    tracing::info!(
        server = %config.server_id,
        region = %config.region,
        "pantheon listening on http://{local} (WebSocket: ws://localhost:{}/ws; WebTransport: https://localhost:{}{})",
        local.port(),
        wt_local.port(),
        webtransport::PATH,
    );
    match certs.current_hash() {
        Some(hash) => tracing::info!(
            algorithm = hash.algorithm,
            value = %hash.value,
            expires_at = %hash.expires_at,
            "self-signed WebTransport certificate; its hash is served at http://localhost:{}/webtransport/cert-hash",
            local.port()
        ),
        None => tracing::info!("WebTransport certificate from TLS_CERT/TLS_KEY"),
    }
    Gateway::builder(config)
        .webtransport(certs, wt)
        .build()
        .run(listener, shutdown_signal())
        .await?;
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

//! Structured logging with `tracing`: levels from `RUST_LOG` (default
//! `info`), format from `LOG_FORMAT`.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    // web_transport_quinn warns once per session that ends without a close
    // capsule (every lost connection): routine here, so only its errors show.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,web_transport_quinn=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

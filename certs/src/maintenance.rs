//! The background task that keeps a [`Store`] current.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

impl Store {
    /// Every `interval`, runs [`Store::poll`] on the blocking pool: files
    /// are re-read and reloaded when their contents change, a self-signed
    /// certificate is rotated when at most [`crate::ROTATE_BEFORE`] of it
    /// remains. A failure is logged with `tracing` and the old certificate
    /// kept. The task ends when `cancel` fires.
    ///
    /// # Panics
    ///
    /// If `interval` is zero, as [`tokio::time::interval`] does.
    pub fn spawn_maintenance(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let store = Arc::clone(&self);
                let pass =
                    tokio::task::spawn_blocking(move || store.poll(OffsetDateTime::now_utc()));
                match pass.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::error!(
                        %error,
                        "TLS certificate not reloaded; still serving the previous one"
                    ),
                    Err(error) => tracing::error!(%error, "TLS certificate maintenance failed"),
                }
            }
        })
    }
}

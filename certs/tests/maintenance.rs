//! The maintenance task reloads replaced files on its timer (paused time).
#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::time::Duration;

use pantheon_certs::{DevCert, MAX_VALIDITY, Source, Store, write_dev_cert, write_dev_cert_to_dir};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Lets the maintenance task and its blocking pass run to completion.
async fn settle(store: &Store, until: impl Fn(&Store) -> bool) {
    for _ in 0..1000 {
        if until(store) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("store never reached the expected state");
}

#[tokio::test(start_paused = true)]
async fn maintenance_reloads_replaced_files_and_stops_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let (first, second) = (
        DevCert::generate(now, MAX_VALIDITY).unwrap(),
        DevCert::generate(now, MAX_VALIDITY).unwrap(),
    );
    let (cert, key) = write_dev_cert_to_dir(&first, dir.path()).unwrap();
    let store = Arc::new(
        Store::new(Source::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap(),
    );
    let cancel = CancellationToken::new();
    let task = Arc::clone(&store).spawn_maintenance(Duration::from_secs(30), cancel.clone());

    write_dev_cert(&second, &cert, &key).unwrap();
    settle(&store, |s| &s.current_der() == second.cert_der()).await;

    // A broken replacement is logged and the certificate kept.
    std::fs::write(&cert, "garbage").unwrap();
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert_eq!(&store.current_der(), second.cert_der());

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the task ends on cancellation")
        .unwrap();
}

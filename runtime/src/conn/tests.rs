//! `Conn::release` (crate-internal, so tested here) under cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use super::Conn;
use crate::error::Error;
use crate::provider::{HealthCheck, Provider};

struct Counting(Arc<AtomicU64>);

impl Provider for Counting {
    type Raw = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    async fn is_open(&self, _raw: &()) -> bool {
        true
    }
    async fn close(&self, _raw: &()) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn release_dropped_while_waiting_for_users_still_closes_exactly_once() {
    let closes = Arc::new(AtomicU64::new(0));
    let c =
        Conn::with_policy("c", Counting(closes.clone()), HealthCheck::DEFAULT, true, Duration::from_secs(10));
    let held = c.get().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(1), c.release()).await.is_err(), "waits for the user");
    assert_eq!(closes.load(SeqCst), 0);
    drop(held);
    // Let every other task run until it blocks.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(closes.load(SeqCst), 1, "the dropped release still closed the client");
    assert!(matches!(c.get().await, Err(Error::LoginRequired { .. })), "released for good");
    c.release().await;
    assert_eq!((closes.load(SeqCst), c.counters().closes), (1, 1));
}

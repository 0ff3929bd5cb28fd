//! Counting messages in flight, so the offline driver can wait until every
//! actor has handled everything sent before the next block (SPEC R3).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// A count of messages sent but not yet handled, engine-wide.
#[derive(Debug, Default)]
pub struct Quiescence {
    inflight: AtomicI64,
    idle: Notify,
}

/// The engine did not settle in time: some actor is stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("actors did not settle within {0:?}")]
pub struct SettleTimeout(pub Duration);

impl Quiescence {
    /// A fresh counter.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts `n` more messages in flight.
    pub fn sent(&self, n: i64) {
        self.inflight.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` messages handled (or lost with a dead actor).
    pub fn handled(&self, n: i64) {
        if self.inflight.fetch_sub(n, Ordering::AcqRel) - n <= 0 {
            self.idle.notify_waiters();
        }
    }

    /// Messages in flight now.
    #[must_use]
    pub fn inflight(&self) -> i64 {
        self.inflight.load(Ordering::Acquire)
    }

    /// Waits until nothing is in flight.
    ///
    /// # Errors
    /// [`SettleTimeout`] if that takes longer than `limit`.
    pub async fn settle(&self, limit: Duration) -> Result<(), SettleTimeout> {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the check, so a notification in between is kept.
                notified.as_mut().enable();
                if self.inflight() <= 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| SettleTimeout(limit))
    }
}

/// Decrements on drop, so a message counts as handled even if its handler fails.
#[derive(Debug)]
pub struct HandledGuard<'a>(&'a Quiescence);

impl<'a> HandledGuard<'a> {
    /// Guards one message of the engine-wide count.
    #[must_use]
    pub fn new(q: &'a Quiescence) -> Self {
        Self(q)
    }
}

impl Drop for HandledGuard<'_> {
    fn drop(&mut self) {
        self.0.handled(1);
    }
}

/// One message in flight, travelling with it: counted when taken, handled
/// when dropped. However the message ends (handled, its handler panicking,
/// lost in a dead actor's mailbox, refused by a closed one) it is
/// uncounted exactly once, so a restart never has to guess what was lost.
#[derive(Debug)]
pub struct Ticket(Arc<Quiescence>);

impl Ticket {
    /// Counts one message in flight on `q`.
    #[must_use]
    pub fn new(q: &Arc<Quiescence>) -> Self {
        q.sent(1);
        Self(Arc::clone(q))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.handled(1);
    }
}

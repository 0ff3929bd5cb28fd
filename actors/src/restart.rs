//! Restart in place (SPEC R2) for the actors whose references are held
//! all over the engine — the event pump, the device manager, background
//! loaders, avatar links. A panic while one handles a message is caught at
//! the message boundary; the actor rebuilds what the message may have left
//! half-done from what it owns for good (the renderer's rings, the open
//! output stream, the source's config, the peer) and goes on with the same
//! mailbox, so no message queued behind the fault is lost and every
//! reference to it stays valid. Session actors, which own nothing anyone
//! else holds, are restarted by the engine supervisor instead.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future whose panics become an `Err` with the panic's message.
struct Contained<F: Future>(Pin<Box<F>>);

impl<F: Future> Future for Contained<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// Runs `f`; a panic inside it is returned as its message.
///
/// # Errors
/// The panic's message when `f` panicked.
pub async fn contain<F: Future>(f: F) -> Result<F::Output, String> {
    Contained(Box::pin(f)).await
}

/// Books a restart in place: counted in `actor_restarts` and logged, with
/// the actor's name and the panic's message.
pub fn restarted(telemetry: &sotto_rt::Telemetry, actor: &str, why: &str) {
    telemetry
        .actor_restarts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::error!(actor, error = %why, "fault; restarted in place");
}

/// The text of a panic payload.
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_value_passes_through() {
        assert_eq!(contain(async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_panic_becomes_its_message() {
        let failed = contain(async {
            tokio::task::yield_now().await;
            panic!("after a yield")
        })
        .await;
        assert_eq!(failed, Err::<(), _>("after a yield".to_owned()));
        let n = 3;
        let failed = contain(async move { panic!("n = {n}") }).await;
        assert_eq!(failed, Err::<(), _>("n = 3".to_owned()));
    }
}

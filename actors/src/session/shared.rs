//! What a session's handle, actor, supervisor and event pump share: the
//! mailbox, counters, listeners and sinks orphaned by a failed actor.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ractor::ActorRef;
use sotto_rt::{SampleTime, SessionId, VoiceTelemetry};
use tokio::sync::mpsc;

use super::*;
use crate::quiesce::{Quiescence, Ticket};
use crate::sink::AudioSink;

/// A listener callback for session events.
pub type EventCallback = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

/// What the session's handle, actor, supervisor and event pump share.
pub struct SessionShared {
    /// The session's slot.
    pub id: SessionId,
    /// Its config.
    pub config: SessionConfig,
    /// Output rate.
    pub sample_rate: u32,
    /// The live actor (replaced on restart).
    pub actor: Mutex<Option<ActorRef<Envelope>>>,
    /// The live voice's telemetry (replaced on restart).
    pub telemetry: Mutex<Arc<VoiceTelemetry>>,
    /// The live voice's generation.
    pub generation: AtomicU32,
    /// Speech frames written into the ring.
    pub pushed_frames: AtomicU64,
    /// Speech frames waiting for room.
    pub pending_frames: AtomicU64,
    /// The session wants a `Tick` after the next render.
    pub wants_tick: AtomicBool,
    /// The engine-wide in-flight count.
    pub quiesce: Arc<Quiescence>,
    /// The telemetry of the renderer (shard) the session renders on: the
    /// output sample clock, its late blocks.
    pub renderer: Arc<sotto_rt::Telemetry>,
    subscribers: Mutex<Vec<mpsc::Sender<SessionEvent>>>,
    /// Events a subscriber that did not read lost (its queue was full).
    pub events_dropped: AtomicU64,
    callback: Mutex<Option<EventCallback>>,
    closed: AtomicBool,
    /// Sinks of an actor that failed, waiting for its successor.
    pub(super) orphans: Mutex<Vec<Box<dyn AudioSink>>>,
    /// The reading end of the session's own output, until a reader takes it.
    pub frames: Mutex<Option<crate::frames::Framer>>,
    /// Woken when the session closes, for readers waiting on its output.
    pub closing: tokio::sync::Notify,
    pub(super) has_orphans: AtomicBool,
    /// The application's messages in the mailbox now (see [`MAILBOX_LIMIT`]).
    from_app: Arc<AtomicUsize>,
    /// The application's messages refused because the mailbox was full.
    pub mailbox_refused: AtomicU64,
    /// Frames of the current turn a phone line's carrier confirmed played
    /// (SPEC T3); [`u64::MAX`] while no line confirms anything.
    pub confirmed_frames: AtomicU64,
}

/// Messages from the application a session's mailbox holds at most
/// (SPEC S5). Every control call and push is one message, sent at once
/// whether or not its future is awaited, so a caller that spins on them
/// faster than the session handles them meets this bound, not a growing
/// heap. The engine's own messages (rendered events, ticks, background
/// feeds) are paced by the engine and never refused.
pub const MAILBOX_LIMIT: usize = 4096;

/// Why the application's message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The session is gone.
    #[error("session is closed")]
    Closed,
    /// The session's mailbox already holds [`MAILBOX_LIMIT`] of the
    /// application's messages.
    #[error("session mailbox full")]
    Full,
}

impl From<SessionClosed> for SendError {
    fn from(_: SessionClosed) -> Self {
        Self::Closed
    }
}

impl std::fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionShared")
            .field("id", &self.id)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// The session is gone (removed or the engine stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session is closed")]
pub struct SessionClosed;

impl SessionShared {
    /// Shared state for a new session.
    #[must_use]
    pub fn new(
        id: SessionId,
        config: SessionConfig,
        sample_rate: u32,
        quiesce: Arc<Quiescence>,
        renderer: Arc<sotto_rt::Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            config,
            sample_rate,
            actor: Mutex::new(None),
            telemetry: Mutex::new(Arc::new(VoiceTelemetry::default())),
            generation: AtomicU32::new(0),
            pushed_frames: AtomicU64::new(0),
            pending_frames: AtomicU64::new(0),
            wants_tick: AtomicBool::new(false),
            quiesce,
            renderer,
            subscribers: Mutex::new(Vec::new()),
            events_dropped: AtomicU64::new(0),
            callback: Mutex::new(None),
            closed: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            frames: Mutex::new(None),
            closing: tokio::sync::Notify::new(),
            has_orphans: AtomicBool::new(false),
            from_app: Arc::new(AtomicUsize::new(0)),
            mailbox_refused: AtomicU64::new(0),
            confirmed_frames: AtomicU64::new(u64::MAX),
        })
    }

    /// Now, on the output sample clock.
    #[must_use]
    pub fn clock(&self) -> SampleTime {
        self.renderer.clock()
    }

    /// Sends a message to the live actor, counted for quiescence.
    ///
    /// # Errors
    /// [`SessionClosed`] if the session has no live actor.
    pub fn send(&self, msg: SessionMsg) -> Result<(), SessionClosed> {
        self.cast(msg, None)
    }

    /// Sends one of the application's messages, within the session's
    /// [`MAILBOX_LIMIT`].
    ///
    /// # Errors
    /// [`SendError::Full`] when the mailbox holds the limit already;
    /// [`SendError::Closed`] when the session is gone.
    pub fn send_from_app(&self, msg: SessionMsg) -> Result<(), SendError> {
        if self.from_app.fetch_add(1, Ordering::AcqRel) >= MAILBOX_LIMIT {
            self.from_app.fetch_sub(1, Ordering::AcqRel);
            self.mailbox_refused.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Full);
        }
        // Taken before the send: the slot frees itself however it ends.
        let slot = MailboxSlot(Arc::clone(&self.from_app));
        Ok(self.cast(msg, Some(slot))?)
    }

    /// The application's messages in the mailbox, not yet handled.
    #[must_use]
    pub fn mailbox_len(&self) -> usize {
        self.from_app.load(Ordering::Acquire)
    }

    fn cast(&self, msg: SessionMsg, slot: Option<MailboxSlot>) -> Result<(), SessionClosed> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SessionClosed);
        }
        let actor = self.actor.lock().map_err(|_| SessionClosed)?.clone();
        let actor = actor.ok_or(SessionClosed)?;
        let ticket = Ticket::new(&self.quiesce);
        // A refused message comes back and is dropped with its ticket.
        actor
            .cast(Envelope {
                msg,
                _ticket: ticket,
                _slot: slot,
            })
            .map_err(|_| SessionClosed)
    }

    /// Whether the session was removed or the engine stopped.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the session closed; later sends fail.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.notify_waiters();
        if let Ok(mut s) = self.subscribers.lock() {
            s.clear();
        }
    }

    /// The live voice's telemetry.
    #[must_use]
    pub fn voice_telemetry(&self) -> Arc<VoiceTelemetry> {
        self.telemetry
            .lock()
            .map(|t| Arc::clone(&t))
            .unwrap_or_default()
    }

    /// A new event stream, holding at most [`EVENT_QUEUE`] unread events
    /// (newer ones are dropped and counted in `events_dropped`).
    #[must_use]
    pub fn subscribe(&self) -> mpsc::Receiver<SessionEvent> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        if let Ok(mut s) = self.subscribers.lock() {
            s.push(tx);
        }
        rx
    }

    /// Sets (or clears) the event callback.
    pub fn set_callback(&self, cb: Option<EventCallback>) {
        if let Ok(mut c) = self.callback.lock() {
            *c = cb;
        }
    }

    /// Delivers an event to every subscriber and the callback.
    pub fn emit(&self, event: SessionEvent) {
        tracing::debug!(session = %self.config.name, ?event.kind, at = event.at.0, "session event");
        if let Ok(mut subs) = self.subscribers.lock() {
            // A reader that stopped reading must not grow memory.
            subs.retain(|tx| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.events_dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        let cb = self.callback.lock().ok().and_then(|c| c.clone());
        if let Some(cb) = cb {
            cb(&event);
        }
    }
}

/// Unread events an event stream holds before newer ones are dropped.
pub const EVENT_QUEUE: usize = 4096;

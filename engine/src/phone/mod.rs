//! Phone calls over a carrier's media stream (SPEC T1–T4): a session
//! serves a call the carrier hands over as a WebSocket of small audio
//! messages (Twilio's Media Streams). The session's output goes out as
//! μ-law at 8 kHz, paced from the sample clock with a small lead, so an
//! interrupt's fade is rendered into audio not yet sent and the caller
//! hears the fade, not a cut; a mark after each 20 ms tells, when the
//! carrier echoes it, how far the caller has heard (confirmed playout);
//! the caller's audio is the session's microphone; DTMF digits are
//! session events.
//!
//! The engine does not own the socket: the application accepts the
//! WebSocket (any library) and hands Sotto its two directions as a
//! [`MediaStreamSocket`]. `sotto serve --phone` does it with axum.

mod leg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{EchoConfig, Engine, SessionError, SessionHandle};

/// Whose media stream protocol a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Provider {
    /// Twilio's bidirectional Media Streams (`<Connect><Stream>`): JSON
    /// text messages, μ-law at 8 kHz in 20 ms frames, `mark` and `clear`.
    #[default]
    Twilio,
}

/// How a phone call's leg runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneConfig {
    /// The carrier's protocol.
    pub provider: Provider,
    /// How far ahead of the caller's ear audio is sent (SPEC T2): what the
    /// carrier holds, so its jitter never starves the line, and at most
    /// what a `clear` drops.
    pub lead: Duration,
    /// How long the carrier has to send `start` after the socket opens.
    pub start_timeout: Duration,
    /// How long the carrier may send nothing (it sends 20 ms of audio
    /// every 20 ms) before the call counts as gone.
    pub idle_timeout: Duration,
    /// Messages a second taken from the carrier (50 are media); past it
    /// the stream is closed.
    pub max_messages_per_second: u32,
    /// The caller's audio through echo cancellation, noise suppression
    /// and gain control against the session's own output, for lines
    /// without their own.
    pub processing: Option<EchoConfig>,
    /// How much of the caller's audio the microphone holds unread.
    pub mic_queue: Duration,
}

impl Default for PhoneConfig {
    fn default() -> Self {
        Self {
            provider: Provider::Twilio,
            lead: Duration::from_millis(60),
            start_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_messages_per_second: 250,
            processing: None,
            mic_queue: Duration::from_secs(2),
        }
    }
}

/// One WebSocket message, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message (Twilio's are all text).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// Close, with a code and reason (RFC 6455 §7.4).
    Close(u16, String),
}

/// A media stream's WebSocket as the application accepted it: what the
/// carrier sends, and where to put what goes to it. When the leg is over
/// it sends a [`WsMessage::Close`] and drops `outgoing`; the application
/// then closes the socket. Closing `incoming` ends the call.
#[derive(Debug)]
pub struct MediaStreamSocket {
    /// Messages from the carrier.
    pub incoming: mpsc::Receiver<WsMessage>,
    /// Messages to the carrier.
    pub outgoing: mpsc::Sender<WsMessage>,
}

/// What happened on a phone call, from [`PhoneCallHandle::next_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhoneEvent {
    /// The carrier started the stream.
    Started {
        /// The stream's id.
        stream: String,
        /// The call's id.
        call: String,
        /// The stream's custom parameters, in order.
        parameters: Vec<(String, String)>,
    },
    /// The caller pressed a key (also a session event).
    Dtmf {
        /// The key.
        digit: char,
    },
    /// A message from the carrier was not taken; the call goes on.
    Rejected {
        /// Why.
        reason: String,
    },
    /// The call is over: the carrier stopped it or went, it was hung up,
    /// or the carrier broke the protocol. The session goes on; its output
    /// is free again.
    Ended {
        /// Why.
        reason: String,
    },
}

/// How far the caller has heard, as the carrier confirmed it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PhonePlayout {
    /// Frames (at the engine's rate) of the session's output sent so far.
    pub sent_frames: u64,
    /// Frames of the output the carrier has confirmed played (its mark
    /// echoes).
    pub confirmed_frames: u64,
    /// Marks the carrier echoed as played.
    pub marks_played: u64,
    /// Marks echoed because of a `clear`: flushed, not played.
    pub marks_flushed: u64,
    /// `clear`s sent (hard stops).
    pub clears: u64,
    /// 20 ms frames the socket could not take in time (dropped).
    pub frames_dropped: u64,
    /// Caller's audio received, in 8 kHz samples.
    pub samples_received: u64,
    /// Messages from the carrier not taken.
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    sent_frames: AtomicU64,
    confirmed_frames: AtomicU64,
    marks_played: AtomicU64,
    marks_flushed: AtomicU64,
    clears: AtomicU64,
    frames_dropped: AtomicU64,
    samples_received: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> PhonePlayout {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PhonePlayout {
            sent_frames: get(&self.sent_frames),
            confirmed_frames: get(&self.confirmed_frames),
            marks_played: get(&self.marks_played),
            marks_flushed: get(&self.marks_flushed),
            clears: get(&self.clears),
            frames_dropped: get(&self.frames_dropped),
            samples_received: get(&self.samples_received),
            rejected: get(&self.rejected),
        }
    }
}

/// A session serving a phone call: its events, playout and what the
/// caller says. Dropping it hangs up.
pub struct PhoneCallHandle {
    counters: Arc<Counters>,
    events: mpsc::Receiver<PhoneEvent>,
    mic: Option<mpsc::Receiver<Vec<f32>>>,
    hang_up: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PhoneCallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneCallHandle")
            .field("playout", &self.playout())
            .finish_non_exhaustive()
    }
}

impl PhoneCallHandle {
    /// The next event; `None` once the call is over and its events read.
    pub async fn next_event(&mut self) -> Option<PhoneEvent> {
        self.events.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_next_event(&mut self) -> Option<PhoneEvent> {
        self.events.try_recv().ok()
    }

    /// What was sent and what the carrier confirmed played.
    #[must_use]
    pub fn playout(&self) -> PhonePlayout {
        self.counters.snapshot()
    }

    /// A reader of the playout that outlives the handle's borrow.
    #[must_use]
    pub fn playout_reader(&self) -> Arc<dyn Fn() -> PhonePlayout + Send + Sync> {
        let counters = Arc::clone(&self.counters);
        Arc::new(move || counters.snapshot())
    }

    /// Takes the caller's audio out of the handle: 10 ms chunks,
    /// interleaved at the engine's rate and channels; `None` once the
    /// call is over.
    pub fn take_mic(&mut self) -> Option<mpsc::Receiver<Vec<f32>>> {
        self.mic.take()
    }

    /// Hangs up: what the carrier holds is cleared, the socket closed; waits
    /// until the leg is over and the session's output free.
    pub async fn hang_up(mut self) {
        if let Some(tx) = self.hang_up.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PhoneCallHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.hang_up.take() {
            let _ = tx.send(());
        }
    }
}

/// Events a phone call keeps unread.
const PHONE_EVENTS: usize = 64;

impl Engine {
    /// Serves a phone call the carrier hands over as `socket` (SPEC T1–T4):
    /// the session's output to the caller, paced from the sample clock
    /// with `config.lead` ahead; the caller's audio as its microphone;
    /// marks confirming what the caller heard. Returns at once; the
    /// carrier's `start` comes as [`PhoneEvent::Started`], a stream that
    /// never starts ends the call after `config.start_timeout`.
    ///
    /// # Errors
    /// [`SessionError::Closed`] for an engine that is not running,
    /// [`SessionError::Offline`] on the offline clock (a phone line runs
    /// in real time), [`SessionError::CallConfig`] for a lead outside
    /// 20–1000 ms or a processing config the echo module refuses, and
    /// the errors of taking the session's output.
    pub async fn accept_media_stream(
        &self,
        session: &SessionHandle,
        socket: MediaStreamSocket,
        config: PhoneConfig,
    ) -> Result<PhoneCallHandle, SessionError> {
        if self.running().is_err() {
            return Err(SessionError::Closed);
        }
        if matches!(self.config().clock, crate::Clock::Offline) {
            return Err(SessionError::Offline);
        }
        if !(Duration::from_millis(20)..=Duration::from_secs(1)).contains(&config.lead) {
            return Err(SessionError::CallConfig(format!(
                "a lead of {:?} is outside 20 ms..=1 s",
                config.lead
            )));
        }
        let echo = match config.processing {
            Some(c) => Some(
                sotto_media::echo::EchoPath::finding_delay(c)
                    .map_err(|e| SessionError::CallConfig(e.to_string()))?,
            ),
            None => None,
        };
        let encoder = sotto_media::call::G711Encoder::new(sotto_media::g711::Law::Ulaw)
            .map_err(|e| SessionError::CallConfig(e.to_string()))?;
        let frames = session.frames()?;
        let counters = Arc::new(Counters::default());
        let (events_tx, events) = mpsc::channel(PHONE_EVENTS);
        let mic_chunks = (config.mic_queue.as_millis() / 10).clamp(1, 6_000) as usize;
        let (mic_tx, mic) = mpsc::channel(mic_chunks);
        let (hang_up, hung_up) = oneshot::channel();
        let leg = leg::Leg {
            telemetry: self.renderer_telemetry(),
            lag: self.reader_lag(),
            session: session.clone(),
            rate: self.config().sample_rate,
            channels: self.config().channels,
            config,
            counters: Arc::clone(&counters),
            events: events_tx,
        };
        let task = tokio::spawn(leg.run(socket, frames, encoder, echo, mic_tx, hung_up));
        Ok(PhoneCallHandle {
            counters,
            events,
            mic: Some(mic),
            hang_up: Some(hang_up),
            task: Some(task),
        })
    }
}

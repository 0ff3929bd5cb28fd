//! Rooms on an SFU (SPEC F1–F4): a session joins a Janus VideoRoom as a
//! participant. It publishes its own output as Opus by offering (as a
//! WHIP client does), subscribes to the other participants' audio by
//! answering Janus's offers, and hears them, mixed, as its microphone:
//! echo-cancelled against its own output like a call's. The room's fan-out,
//! NAT traversal and clients are the SFU's; many Sotto processes can serve
//! rooms on one SFU, each taking only its own participants with it.
//!
//! A room's task owns everything: the long poll that carries Janus's
//! events and keeps its session alive, the publisher's peer, a task per
//! subscription, and the media thread (encoder, echo canceller, mixer) a
//! call has. A Janus lost under a live room is rejoined with backoff; past
//! the last attempt the room reports itself lost and ends.

mod feed;
mod janus;
mod membership;
mod subscription;
mod task;

pub use feed::RoomFeed;
use membership::Membership;
use task::Room;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sotto_media::call::{Counters, Media, MicOut};
use sotto_media::echo::EchoPath;
use sotto_media::opus::OpusEncoder;
use sotto_net::janus::Publisher;
use tokio::sync::{mpsc, oneshot};

use crate::call::Outgoing;
use crate::{CallConfig, CallStats, Engine, SessionError, SessionHandle};
use janus::Janus;

/// Which participants a room's session hears.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subscribe {
    /// Every participant that publishes audio.
    #[default]
    AllAudio,
    /// Only participants with these display names.
    Named(Vec<String>),
    /// Every participant that publishes audio but those with these
    /// display names (the session's own avatar, say, published as a feed
    /// of its own).
    AllBut(Vec<String>),
    /// Nobody: the session only speaks.
    Nobody,
}

impl Subscribe {
    fn wants(&self, p: &Publisher) -> bool {
        p.audio
            && match self {
                Self::AllAudio => true,
                Self::Named(names) => names.contains(&p.display),
                Self::AllBut(names) => !names.contains(&p.display),
                Self::Nobody => false,
            }
    }
}

/// What to pass to [`Engine::join_room`]: which SFU and room, as whom,
/// whom to hear, and how the media goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    /// Janus's HTTP API, `http://host:8088/janus`.
    pub url: String,
    /// The VideoRoom's numeric id.
    pub room: u64,
    /// The room's PIN, when it has one.
    pub pin: Option<String>,
    /// Janus's API token, when Janus asks for one.
    pub token: Option<String>,
    /// The name other participants see.
    pub display: String,
    /// Whom to hear.
    pub subscribe: Subscribe,
    /// The media: packet length, bit rate, the address media binds (an
    /// address the SFU can reach: Janus gathers no loopback candidates),
    /// the microphone's queue and processing; `connect_timeout` bounds how
    /// long a peer may take to connect.
    pub media: CallConfig,
    /// How long one request to Janus may take.
    pub request_timeout: Duration,
    /// Attempts to rejoin after Janus is lost, before the room is.
    pub rejoin_attempts: u32,
    /// The wait before the first rejoin; it doubles each attempt, to 8 s.
    pub rejoin_backoff: Duration,
    /// How often the Janus session is kept alive: well under Janus's
    /// `session_timeout` (60 s by default), which is also how soon the
    /// room sees a participant whose process died leave.
    pub keepalive: Duration,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8088/janus".into(),
            room: 1234,
            pin: None,
            token: None,
            display: "sotto".into(),
            subscribe: Subscribe::AllAudio,
            // Every packet sent, silence too (see `CallConfig::dtx`).
            media: CallConfig {
                dtx: false,
                ..CallConfig::default()
            },
            request_timeout: Duration::from_secs(5),
            rejoin_attempts: 5,
            rejoin_backoff: Duration::from_millis(500),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// Why a room could not be joined, or was lost; or why a WHIP endpoint
/// refused a publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The configuration is out of range (an address that is not a URL, a
    /// name too long).
    #[error("room config: {0}")]
    Config(String),
    /// Janus did not answer: refused, reset or too slow.
    #[error("the SFU is unreachable: {0}")]
    Unreachable(String),
    /// Janus answered something that is not its API.
    #[error("the SFU answered garbage: {0}")]
    Protocol(String),
    /// The room does not exist.
    #[error("no such room: {0}")]
    NoSuchRoom(String),
    /// A wrong PIN or token.
    #[error("not allowed in: {0}")]
    Unauthorized(String),
    /// Janus or its plugin refused a request.
    #[error("the SFU refused ({code}): {reason}")]
    Refused {
        /// The SFU's code.
        code: u32,
        /// In words.
        reason: String,
    },
    /// Janus forgot the session (restarted, or timed it out).
    #[error("the SFU lost the session: {0}")]
    SessionLost(String),
    /// A peer connection could not be set up.
    #[error("webrtc: {0}")]
    Net(String),
}

/// What happened in a room, from [`RoomHandle::next_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// The session is in the room and publishing, as feed `id`.
    Joined {
        /// Its feed id in the room.
        id: u64,
    },
    /// A participant publishes audio the session may hear.
    ParticipantJoined {
        /// Its feed id.
        id: u64,
        /// Its display name.
        display: String,
    },
    /// The session hears a participant: its audio is in the microphone.
    Hearing {
        /// Its feed id.
        id: u64,
    },
    /// A participant left or stopped publishing; a subscription to it
    /// is closed.
    ParticipantLeft {
        /// Its feed id.
        id: u64,
    },
    /// The SFU was lost; the room is being joined again.
    Reconnecting {
        /// Which attempt comes next (from 1).
        attempt: u32,
        /// What was lost.
        reason: String,
    },
    /// The room is over: left, or lost for good. The session goes on;
    /// its output is free again.
    Ended {
        /// Why.
        reason: String,
    },
}

/// A session in a room: its events, counters and what it hears. Dropping
/// it leaves the room.
pub struct RoomHandle {
    id: u64,
    counters: Arc<Counters>,
    events: mpsc::Receiver<RoomEvent>,
    mic: Option<mpsc::Receiver<Vec<f32>>>,
    leave: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHandle")
            .field("id", &self.id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RoomHandle {
    /// The session's feed id in the room, as other participants see it
    /// (a rejoin gets a new one, announced by [`RoomEvent::Joined`]).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The counters so far: packets out, and what the microphone got.
    #[must_use]
    pub fn stats(&self) -> CallStats {
        self.counters.snapshot()
    }

    /// A reader of the room's counters that outlives the handle's borrow.
    #[must_use]
    pub fn stats_reader(&self) -> Arc<dyn Fn() -> CallStats + Send + Sync> {
        let counters = Arc::clone(&self.counters);
        Arc::new(move || counters.snapshot())
    }

    /// The next event; `None` once the room is over and its events read.
    pub async fn next_event(&mut self) -> Option<RoomEvent> {
        self.events.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_next_event(&mut self) -> Option<RoomEvent> {
        self.events.try_recv().ok()
    }

    /// Takes the microphone out of the handle: 10 ms chunks of everyone
    /// heard, mixed, interleaved at the engine's rate and channels; `None`
    /// once the room is over.
    pub fn take_mic(&mut self) -> Option<mpsc::Receiver<Vec<f32>>> {
        self.mic.take()
    }

    /// Leaves the room and waits until every peer is closed, the Janus
    /// session destroyed and the session's output free.
    pub async fn leave(mut self) {
        if let Some(tx) = self.leave.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RoomHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.leave.take() {
            let _ = tx.send(());
        }
    }
}

/// Events a room keeps unread: joins and departures of a busy room.
pub(super) const ROOM_EVENTS: usize = 64;

/// The longest display name or PIN sent.
const MAX_NAME: usize = 128;

/// The Janus `config` names, once its names are in bounds.
fn janus_for(config: &RoomConfig) -> Result<Arc<Janus>, RoomError> {
    if config.display.len() > MAX_NAME || config.pin.as_ref().is_some_and(|p| p.len() > MAX_NAME) {
        return Err(RoomError::Config(format!(
            "display names and PINs are at most {MAX_NAME} bytes"
        )));
    }
    Ok(Arc::new(Janus::new(
        &config.url,
        config.token.clone(),
        config.request_timeout,
    )?))
}

impl Engine {
    /// Joins `session` to a room on a Janus SFU (SPEC F1–F3): publishes its
    /// own output and hears the participants `config` names. Returns once
    /// the session is in the room and its offer answered; the media
    /// connects shortly after.
    ///
    /// # Errors
    /// [`SessionError::Room`] for a Janus unreachable, slow or answering
    /// garbage (within `request_timeout`), a room that does not exist, a
    /// wrong PIN; the [`Engine::accept_call`] errors for the session and
    /// the media.
    pub async fn join_room(
        &self,
        session: &SessionHandle,
        config: RoomConfig,
    ) -> Result<RoomHandle, SessionError> {
        self.can_carry_media(&config.media)?;
        let janus = janus_for(&config)?;
        let rate = self.config().sample_rate;
        let channels = self.config().channels;
        let opus_channels = channels.min(2);
        let encoder =
            OpusEncoder::new(opus_channels, config.media.packet, config.media.bitrate, 10)
                .map_err(|e| SessionError::CallConfig(e.to_string()))?;
        let echo = match config.media.processing {
            Some(c) => Some(
                EchoPath::finding_delay(c).map_err(|e| SessionError::CallConfig(e.to_string()))?,
            ),
            None => None,
        };
        let frames = session.frames()?;
        let membership = match Membership::join(&janus, &config).await {
            Ok(m) => m,
            Err(e) => {
                frames.release();
                return Err(e.into());
            }
        };
        let counters = Arc::new(Counters::default());
        let (events_tx, events) = mpsc::channel(ROOM_EVENTS);
        let mic_chunks = (config.media.mic_queue.as_millis() / 10).clamp(1, 6_000) as usize;
        let (mic_tx, mic) = mpsc::channel(mic_chunks);
        let (leave, left) = oneshot::channel();
        let id = membership.at.id;
        let media = Media {
            encoder: sotto_media::call::Encoder::Opus(encoder),
            packet: config.media.packet,
            opus_channels,
            echo,
            mic: MicOut::new(rate, channels, Arc::clone(&counters), mic_tx),
            counters: Arc::clone(&counters),
            dtx: config.media.dtx,
        };
        let room = Room {
            telemetry: self.renderer_telemetry(),
            lag: self.reader_lag(),
            outgoing: Outgoing::new(rate, channels, opus_channels, config.media.packet),
            janus,
            config,
            counters: Arc::clone(&counters),
            events: events_tx,
            subscriptions: HashMap::new(),
        };
        let task = tokio::spawn(room.run(membership, frames, media, left));
        Ok(RoomHandle {
            id,
            counters,
            events,
            mic: Some(mic),
            leave: Some(leave),
            task: Some(task),
        })
    }
}

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

mod janus;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_media::call::{Counters, Encoded, Media, MicOut, Work};
use sotto_media::echo::EchoPath;
use sotto_media::opus::OpusEncoder;
use sotto_net::call::{accept_answer, answer_subscription, offer_publish, CallPeer};
use sotto_net::janus::{self as api, Jsep, Publisher, Reply, RoomNews};
use tokio::sync::{mpsc, oneshot};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::call::{receive_feed, Outgoing};
use crate::{CallConfig, CallStats, Engine, OutputFrames, SessionError, SessionHandle};
use janus::Janus;

/// Which participants a room's session hears.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subscribe {
    /// Every participant that publishes audio.
    #[default]
    AllAudio,
    /// Only participants with these display names.
    Named(Vec<String>),
    /// Nobody: the session only speaks.
    Nobody,
}

impl Subscribe {
    fn wants(&self, p: &Publisher) -> bool {
        p.audio
            && match self {
                Self::AllAudio => true,
                Self::Named(names) => names.contains(&p.display),
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
const ROOM_EVENTS: usize = 64;

/// The longest display name or PIN sent.
const MAX_NAME: usize = 128;

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
        if self.running().is_err() {
            return Err(SessionError::Closed);
        }
        if matches!(self.config().clock, crate::Clock::Offline) {
            return Err(SessionError::Offline);
        }
        if !(6_000..=510_000).contains(&config.media.bitrate) {
            return Err(SessionError::CallConfig(format!(
                "bitrate {} is outside 6000..=510000",
                config.media.bitrate
            )));
        }
        if config.display.len() > MAX_NAME
            || config.pin.as_ref().is_some_and(|p| p.len() > MAX_NAME)
        {
            return Err(RoomError::Config(format!(
                "display names and PINs are at most {MAX_NAME} bytes"
            ))
            .into());
        }
        let janus = Arc::new(Janus::new(
            &config.url,
            config.token.clone(),
            config.request_timeout,
        )?);
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
        let id = membership.id;
        let media = Media {
            encoder,
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

/// Events routed to a subscription's task, by its handle.
type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<Reply>>>>;

/// Replies a subscription's handle gets in its life: a few.
const SUBSCRIPTION_EVENTS: usize = 8;

/// One presence in a room: the Janus session, the publisher's handle and
/// peer, and the long poll routing events.
struct Membership {
    session: u64,
    handle: u64,
    id: u64,
    private_id: u64,
    publishers: Vec<Publisher>,
    publisher: CallPeer,
    /// The publisher handle's and the session's events.
    replies: mpsc::Receiver<Result<Reply, RoomError>>,
    routes: Routes,
    poller: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Creates a Janus session, joins the room as a publisher and
    /// publishes; undone on any error.
    async fn join(janus: &Arc<Janus>, config: &RoomConfig) -> Result<Self, RoomError> {
        let session = janus.create().await?;
        let routes: Routes = Arc::default();
        let (tx, mut replies) = mpsc::channel(ROOM_EVENTS);
        let poller = tokio::spawn(long_poll(
            Arc::clone(janus),
            session,
            tx,
            Arc::clone(&routes),
            config.keepalive.max(Duration::from_millis(100)),
        ));
        let joined = async {
            let handle = janus.attach(session).await?;
            let pin = config.pin.as_deref();
            let join = api::join_publisher(config.room, &config.display, pin);
            let tx = janus.message(session, handle, join, None).await?;
            let reply = answer_to(&mut replies, &tx, config.request_timeout).await?;
            let Some(RoomNews::Joined {
                id,
                private_id,
                publishers,
            }) = reply.news()
            else {
                return Err(refusal(&reply));
            };
            let bind = config.media.bind;
            let (offer, mut publisher) =
                offer_publish(bind).await.map_err(|e| RoomError::Net(e.0))?;
            let publish = api::publish(&config.display);
            let tx = janus
                .message(session, handle, publish, Some(Jsep::offer(offer)))
                .await;
            let answer = match tx {
                Ok(tx) => answer_to(&mut replies, &tx, config.request_timeout).await,
                Err(e) => Err(e),
            };
            let answered = match answer {
                Ok(reply) => match (reply.news(), reply.jsep) {
                    (Some(RoomNews::Ok), Some(jsep)) if jsep.kind == "answer" => {
                        accept_answer(&mut publisher, &jsep.sdp)
                            .await
                            .map_err(|e| RoomError::Protocol(e.to_string()))
                    }
                    (news, _) => Err(news.map_or_else(
                        || RoomError::Protocol("a publish without an answer".into()),
                        |n| refusal_of(&n),
                    )),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = answered {
                let _ = publisher.peer.close().await;
                return Err(e);
            }
            Ok((handle, id, private_id, publishers, publisher))
        }
        .await;
        match joined {
            Ok((handle, id, private_id, publishers, publisher)) => Ok(Self {
                session,
                handle,
                id,
                private_id,
                publishers,
                publisher,
                replies,
                routes,
                poller,
            }),
            Err(e) => {
                poller.abort();
                janus.destroy(session).await;
                Err(e)
            }
        }
    }

    /// Leaves: the publisher's peer closed, the Janus session destroyed
    /// (when Janus is still there), the long poll stopped.
    async fn close(self, janus: &Janus) {
        let _ = self.publisher.peer.close().await;
        self.poller.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), janus.destroy(self.session)).await;
    }
}

/// The plugin's reply to transaction `tx`, skipping other events; within
/// `limit`.
async fn answer_to(
    replies: &mut mpsc::Receiver<Result<Reply, RoomError>>,
    tx: &str,
    limit: Duration,
) -> Result<Reply, RoomError> {
    let wait = async {
        while let Some(reply) = replies.recv().await {
            let reply = reply?;
            if reply.janus == "event" && reply.transaction.as_deref() == Some(tx) {
                return Ok(reply);
            }
        }
        Err(RoomError::SessionLost("the long poll ended".into()))
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| RoomError::Unreachable(format!("no answer from the room in {limit:?}")))?
}

/// The error a plugin reply carries, or a protocol error.
fn refusal(reply: &Reply) -> RoomError {
    reply.news().map_or_else(
        || RoomError::Protocol("an unexpected reply".into()),
        |n| refusal_of(&n),
    )
}

fn refusal_of(news: &RoomNews) -> RoomError {
    match news {
        RoomNews::Error { code: 426, reason } => RoomError::NoSuchRoom(reason.clone()),
        RoomNews::Error { code: 433, reason } => RoomError::Unauthorized(reason.clone()),
        // A room with a PIN asked without one.
        RoomNews::Error { code: 429, reason } if reason.contains("(pin)") => {
            RoomError::Unauthorized(format!("the room needs a PIN ({reason})"))
        }
        RoomNews::Error { code, reason } => RoomError::Refused {
            code: *code,
            reason: reason.clone(),
        },
        other => RoomError::Protocol(format!("unexpected {other:?}")),
    }
}

/// Polls the session's events until Janus fails or the session is gone:
/// each reply to its subscription's route, or to `tx`; the failure last.
/// Beside it, a keepalive every `keepalive`.
async fn long_poll(
    janus: Arc<Janus>,
    session: u64,
    tx: mpsc::Sender<Result<Reply, RoomError>>,
    routes: Routes,
    keepalive: Duration,
) {
    let alive = {
        let janus = Arc::clone(&janus);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(keepalive);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = janus.keepalive(session).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        })
    };
    // Stops the keepalives with the poll, however it ends (aborted too).
    struct Stop(tokio::task::JoinHandle<()>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _stop = Stop(alive);
    loop {
        match janus.poll(session).await {
            Ok(replies) => {
                for reply in replies {
                    let route = reply.sender.and_then(|h| {
                        routes
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get(&h)
                            .cloned()
                    });
                    let sent = match route {
                        // A subscription that stopped reading is being torn down.
                        Some(route) => route.try_send(reply).map_err(|_| ()),
                        None => tx.send(Ok(reply)).await.map_err(|_| ()),
                    };
                    if sent.is_err() && tx.is_closed() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// A room's moving parts, owned by its task.
struct Room {
    telemetry: Arc<sotto_rt::Telemetry>,
    lag: Arc<crate::admission::ReaderLag>,
    outgoing: Outgoing,
    janus: Arc<Janus>,
    config: RoomConfig,
    counters: Arc<Counters>,
    events: mpsc::Sender<RoomEvent>,
    subscriptions: HashMap<u64, Subscription>,
}

/// Packets waiting for the network, as a call's.
const PACKET_QUEUE: usize = 8;
/// Work waiting for the media thread, as a call's.
const WORK_QUEUE: usize = 32;
/// The longest wait between rejoin attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The most subscriptions a room holds.
const MAX_SUBSCRIPTIONS: usize = 16;

/// Why a membership ended.
enum Exit {
    Left,
    Lost(String),
    OutputClosed,
}

impl Room {
    async fn run(
        mut self,
        first: Membership,
        mut frames: OutputFrames,
        media: Media,
        mut left: oneshot::Receiver<()>,
    ) {
        let (work, work_in) = mpsc::channel::<Work>(WORK_QUEUE);
        let (encoded_tx, mut encoded) = mpsc::channel::<Encoded>(PACKET_QUEUE);
        let media_thread = tokio::task::spawn_blocking(move || media.run(work_in, encoded_tx));
        let mut membership = Some(first);
        let reason = loop {
            let Some(mut m) = membership.take() else {
                break "no membership".to_owned();
            };
            let mut attempt = 0;
            let _ = self.events.try_send(RoomEvent::Joined { id: m.id });
            // What rendered while joining is in the past (see calls).
            while frames.try_next_frame().is_some() {}
            for p in std::mem::take(&mut m.publishers) {
                self.heard_of(&m, p, &work);
            }
            let exit = self
                .serve(&mut m, &mut frames, &mut encoded, &work, &mut left)
                .await;
            self.unsubscribe_all(&work).await;
            m.close(&self.janus).await;
            let why = match exit {
                Exit::Left => break "left".to_owned(),
                Exit::OutputClosed => break "the session's output closed".to_owned(),
                Exit::Lost(why) => why,
            };
            // Rejoin with backoff, still draining the output so the
            // session's reader does not fall behind.
            let mut backoff = self.config.rejoin_backoff;
            let mut rejoined = None;
            while attempt < self.config.rejoin_attempts {
                attempt += 1;
                let _ = self.events.try_send(RoomEvent::Reconnecting {
                    attempt,
                    reason: why.clone(),
                });
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                let stop = loop {
                    tokio::select! {
                        () = &mut wait => break false,
                        _ = &mut left => break true,
                        f = frames.next_frame() => if f.is_err() { break true },
                    }
                };
                if stop {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                let join = Membership::join(&self.janus, &self.config);
                tokio::pin!(join);
                let joined = loop {
                    tokio::select! {
                        r = &mut join => break Some(r),
                        _ = &mut left => break None,
                        f = frames.next_frame() => if f.is_err() { break None },
                    }
                };
                match joined {
                    Some(Ok(m)) => {
                        rejoined = Some(m);
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::info!(attempt, error = %e, "rejoining the room failed")
                    }
                    None => break,
                }
            }
            match rejoined {
                Some(m) => membership = Some(m),
                None if attempt >= self.config.rejoin_attempts => {
                    break format!("the SFU was lost ({why}) and {attempt} rejoins failed");
                }
                None => break "left".to_owned(),
            }
        };
        drop(work);
        drop(encoded);
        let _ = media_thread.await;
        frames.release();
        let _ = self.events.try_send(RoomEvent::Ended { reason });
    }

    /// Carries one membership: the output out, Janus's events in, until
    /// the room is left or lost.
    async fn serve(
        &mut self,
        m: &mut Membership,
        frames: &mut OutputFrames,
        encoded: &mut mpsc::Receiver<Encoded>,
        work: &mpsc::Sender<Work>,
        left: &mut oneshot::Receiver<()>,
    ) -> Exit {
        let lost_before = frames.lost_frames();
        // Packets go out once the publisher's connection is up; before,
        // they would only be refused by its transport.
        let mut up = false;
        loop {
            tokio::select! {
                _ = &mut *left => return Exit::Left,
                state = m.publisher.events.state.recv() => match state {
                    Some(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) | None => {
                        return Exit::Lost("the publisher's connection failed".into());
                    }
                    Some(RTCPeerConnectionState::Connected) => up = true,
                    Some(_) => {}
                },
                reply = m.replies.recv() => match reply {
                    Some(Ok(reply)) => {
                        if let Some(why) = self.on_reply(m, &reply, work) {
                            return Exit::Lost(why);
                        }
                    }
                    Some(Err(e)) => return Exit::Lost(e.to_string()),
                    None => return Exit::Lost("the long poll ended".into()),
                },
                frame = frames.next_frame() => {
                    let Ok(frame) = frame else { return Exit::OutputClosed };
                    self.counters.frames_lost.store(
                        frames.lost_frames() - lost_before,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    self.outgoing.frame(&frame, &self.telemetry, &self.lag, work, &self.counters);
                },
                Some(packet) = encoded.recv() => if up {
                    self.outgoing
                        .send(&mut m.publisher.sender, &packet, &self.telemetry, &self.counters)
                        .await;
                },
            }
        }
    }

    /// Acts on a Janus event for the publisher or the session; `Some`
    /// when it ends the membership.
    fn on_reply(
        &mut self,
        m: &Membership,
        reply: &Reply,
        work: &mpsc::Sender<Work>,
    ) -> Option<String> {
        match reply.janus.as_str() {
            "hangup" if reply.sender == Some(m.handle) => {
                return Some(format!(
                    "the SFU hung up the publisher ({})",
                    reply.reason.as_deref().unwrap_or("no reason")
                ));
            }
            "detached" if reply.sender == Some(m.handle) => {
                return Some("the SFU detached the publisher".into());
            }
            "timeout" => return Some("the SFU timed the session out".into()),
            _ => {}
        }
        match reply.news()? {
            RoomNews::Publishers(list) => {
                for p in list {
                    self.heard_of(m, p, work);
                }
            }
            RoomNews::Leaving(id) | RoomNews::Unpublished(id) => {
                if let Some(s) = self.subscriptions.remove(&id) {
                    s.stop();
                }
                if id != m.id {
                    let _ = self.events.try_send(RoomEvent::ParticipantLeft { id });
                }
            }
            RoomNews::Destroyed => return Some("the room was destroyed".into()),
            _ => {}
        }
        None
    }

    /// A publisher appeared: announced, and subscribed to if wanted.
    fn heard_of(&mut self, m: &Membership, p: Publisher, work: &mpsc::Sender<Work>) {
        if p.id == m.id || self.subscriptions.contains_key(&p.id) {
            return;
        }
        if !self.config.subscribe.wants(&p) || self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return;
        }
        let _ = self.events.try_send(RoomEvent::ParticipantJoined {
            id: p.id,
            display: p.display.clone(),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(subscribe(
            Arc::clone(&self.janus),
            SubscriptionPlan {
                session: m.session,
                room: self.config.room,
                feed: p.id,
                private_id: m.private_id,
                pin: self.config.pin.clone(),
                bind: self.config.media.bind,
                limit: self.config.request_timeout,
                connect_limit: self.config.media.connect_timeout,
            },
            Arc::clone(&m.routes),
            Arc::clone(&self.counters),
            work.clone(),
            self.events.clone(),
            stopped,
        ));
        self.subscriptions.insert(p.id, Subscription { stop, task });
    }

    async fn unsubscribe_all(&mut self, _work: &mpsc::Sender<Work>) {
        for (_, s) in self.subscriptions.drain() {
            let _ = s.stop.send(());
            let _ = s.task.await;
        }
    }
}

/// A subscription's task and the way to stop it.
struct Subscription {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Stops it; the task closes its peer and detaches on its own.
    fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// What a subscription needs to know.
struct SubscriptionPlan {
    session: u64,
    room: u64,
    feed: u64,
    private_id: u64,
    pin: Option<String>,
    bind: IpAddr,
    limit: Duration,
    connect_limit: Duration,
}

/// Subscribes to one feed: attaches a handle, joins as its subscriber,
/// answers Janus's offer, and decodes its audio into the microphone until
/// stopped or the feed ends; then closes the peer and detaches.
async fn subscribe(
    janus: Arc<Janus>,
    plan: SubscriptionPlan,
    routes: Routes,
    counters: Arc<Counters>,
    work: mpsc::Sender<Work>,
    events: mpsc::Sender<RoomEvent>,
    mut stopped: oneshot::Receiver<()>,
) {
    let feed = plan.feed;
    let Ok(handle) = janus.attach(plan.session).await else {
        return;
    };
    let (tx, mut replies) = mpsc::channel(SUBSCRIPTION_EVENTS);
    let route = |on: bool| {
        let mut r = routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            r.insert(handle, tx.clone());
        } else {
            r.remove(&handle);
        }
    };
    route(true);
    let mut peer = None;
    let run = async {
        let join = api::join_subscriber(plan.room, feed, plan.private_id, plan.pin.as_deref());
        let t = janus.message(plan.session, handle, join, None).await?;
        let offer = tokio::time::timeout(plan.limit, async {
            while let Some(reply) = replies.recv().await {
                if reply.transaction.as_deref() == Some(&t) && reply.janus == "event" {
                    return match (reply.news(), reply.jsep.clone()) {
                        (Some(RoomNews::Attached), Some(jsep)) => Ok(jsep.sdp),
                        _ => Err(refusal(&reply)),
                    };
                }
            }
            Err(RoomError::SessionLost("the long poll ended".into()))
        })
        .await
        .map_err(|_| RoomError::Unreachable("no offer for the subscription".into()))??;
        let (answer, pc, mut pc_events) = answer_subscription(&offer, plan.bind)
            .await
            .map_err(|e| RoomError::Net(e.to_string()))?;
        peer = Some(Arc::clone(&pc));
        janus
            .message(
                plan.session,
                handle,
                api::start(),
                Some(Jsep::answer(answer)),
            )
            .await?;
        let track = tokio::time::timeout(plan.connect_limit, pc_events.tracks.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| RoomError::Net("the feed sent no audio".into()))?;
        let _ = events.try_send(RoomEvent::Hearing { id: feed });
        let hear = receive_feed(track, feed, counters, work.clone());
        tokio::pin!(hear);
        loop {
            tokio::select! {
                () = &mut hear => break,
                state = pc_events.state.recv() => match state {
                    Some(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) | None => break,
                    Some(_) => {}
                },
                reply = replies.recv() => match reply {
                    Some(r) if r.janus == "hangup" || r.janus == "detached" => break,
                    Some(_) => {}
                    None => break,
                },
            }
        }
        Ok::<(), RoomError>(())
    };
    tokio::select! {
        r = run => if let Err(e) = r {
            tracing::info!(feed, error = %e, "a subscription ended");
        },
        _ = &mut stopped => {}
    }
    route(false);
    if let Some(pc) = peer {
        let _ = pc.close().await;
    }
    let _ = work.send(Work::FeedGone(feed)).await;
    let _ = tokio::time::timeout(plan.limit, janus.detach(plan.session, handle)).await;
}

//! The agent side (SPEC A2–A4, O12): the `AvatarLink` actor connects to an
//! avatar through its dispatcher, streams the session's ingested speech as
//! PCM on an unreliable data channel and segment ends and interrupts on a
//! reliable one, and turns the avatar's acknowledgements into session
//! events. [`AvatarTee`] is the session sink that feeds it.
//!
//! Beyond the reference: segments are numbered, a missing acknowledgement
//! times out with an event (and the segment end is sent once more, which
//! recovers a lost one) instead of hanging the link, and a dropped
//! connection detaches the sink so the session's own output plays again.

mod connect;
mod tee;

use connect::connect;
pub use tee::AvatarTee;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use webrtc::data_channel::DataChannel;

use crate::restart::{contain, restarted};
use crate::session::{SessionEvent, SessionEventKind, SessionMsg, SessionShared};
use sotto_net::avatar::{chunks, Control, StreamEnded, INTERRUPT};
use sotto_net::peer::{NetError, Peer};

/// What to pass to `Engine::attach_avatar`: where the avatar server is and
/// how the agent proves it may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// The dispatcher's join URL (`http://127.0.0.1:PORT/join`).
    pub dispatcher_url: String,
    /// The room.
    pub room_name: String,
    /// Signed credentials (SPEC A1).
    pub token: String,
    /// The avatar's participant id.
    pub participant_id: String,
    /// Where the avatar would signal; passed through.
    pub signaling_base_url: Option<String>,
    /// How long a segment's acknowledgement may take.
    pub ack_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl LinkConfig {
    /// A config with the default timeouts (2 s for acks, 10 s to connect).
    #[must_use]
    pub fn new(dispatcher_url: &str, room_name: &str, token: &str, participant_id: &str) -> Self {
        Self {
            dispatcher_url: dispatcher_url.to_owned(),
            room_name: room_name.to_owned(),
            token: token.to_owned(),
            participant_id: participant_id.to_owned(),
            signaling_base_url: None,
            ack_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the link could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No dispatcher URL: nothing to spin up (SPEC A2).
    #[error("no dispatcher URL")]
    NoDispatcher,
    /// A room is required (SPEC A2).
    #[error("no room name")]
    NoRoom,
    /// The dispatcher answered with an HTTP error (401 for a bad token).
    #[error("dispatcher answered {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// What it said.
        body: String,
    },
    /// The dispatcher could not be reached.
    #[error("dispatcher unreachable: {0}")]
    Unreachable(String),
    /// The WebRTC side failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Counters of one link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// PCM bytes sent.
    pub bytes_sent: AtomicU64,
    /// PCM chunks sent.
    pub chunks_sent: AtomicU64,
    /// Sends that failed.
    pub send_errors: AtomicU64,
    /// PCM chunks dropped because the peer stalled and the send buffer
    /// was full.
    pub chunks_dropped: AtomicU64,
    /// Acknowledgements received.
    pub acks: AtomicU64,
    /// Acknowledgements that timed out.
    pub ack_timeouts: AtomicU64,
    /// Segments ended (their end sent).
    pub segments: AtomicU64,
    /// Segments settled: acknowledged, cut by an interrupt, or given up
    /// on after a resend.
    pub settled: AtomicU64,
    /// Samples handed to the link and not yet sent.
    pub backlog: AtomicU64,
    /// Samples dropped because the link had stopped sending and was the
    /// session's queue and [`LINK_BACKLOG`] behind.
    pub backlog_dropped: AtomicU64,
    /// Interrupts and segment ends handed to the link and not yet sent.
    pub control_backlog: AtomicU64,
    /// Messages sent on the control channel.
    pub control_sent: AtomicU64,
    /// Acknowledgements handled: counted, and their event emitted.
    pub acks_handled: AtomicU64,
    /// Interrupts and segment ends dropped because
    /// [`LINK_CONTROL_BACKLOG`] were already waiting (SPEC S5). An
    /// interrupt right after another, with nothing sent between, is
    /// redundant and not sent at all; it is not counted here.
    pub control_dropped: AtomicU64,
}

/// Interrupts and segment ends that may wait for the link before more are
/// dropped: a caller spinning on them cannot grow the link's mailbox.
pub const LINK_CONTROL_BACKLOG: u64 = 256;

/// Audio the link may fall behind beyond the session's queue before newer
/// audio is dropped: the mailbox between them is bounded by this and the
/// queue. A link that sends keeps it near zero: the session hands it
/// speech only as its queue takes it in.
pub const LINK_BACKLOG: Duration = Duration::from_secs(5);

impl LinkStats {
    /// Whether every segment ended so far has settled.
    #[must_use]
    pub fn idle(&self) -> bool {
        self.settled.load(Ordering::Acquire) >= self.segments.load(Ordering::Acquire)
    }
}

/// Messages of the link actor.
#[derive(Debug)]
pub enum LinkMsg {
    /// Ingested speech, interleaved at the session's format.
    Audio(Vec<f32>),
    /// The turn's synthesis is complete.
    SegmentEnd,
    /// Barge-in; the avatar fades the first `fade_frames` (at the link's
    /// rate) of what it holds.
    Interrupt {
        /// The session's fade tail limit.
        fade_frames: u64,
    },
    /// An acknowledgement arrived.
    Ack(StreamEnded),
    /// Time to check that segment `0` was acknowledged (`1`: retries so far).
    CheckAck(u64, u32),
    /// The connection is gone.
    Closed(String),
    /// Fault injection for supervision tests: handling it panics.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// What the link actor starts with.
pub struct LinkArgs {
    /// Where to connect.
    pub config: LinkConfig,
    /// The session it serves.
    pub session: Arc<SessionShared>,
    /// The sink's name in the session.
    pub sink_name: String,
    /// PCM format sent.
    pub sample_rate: u32,
    /// PCM channels sent.
    pub channels: usize,
    /// Whether the link is up; the sink fails writes once it is not.
    pub alive: Arc<AtomicBool>,
    /// Its counters.
    pub stats: Arc<LinkStats>,
}

/// The link's state.
pub struct LinkState {
    args: LinkArgs,
    pc: Peer,
    audio: Arc<dyn DataChannel>,
    control: Arc<dyn DataChannel>,
    /// The segment being streamed.
    current: u64,
    /// Segments whose end was sent and not yet acknowledged, with their
    /// sample counts.
    pending: Vec<u64>,
    counts: Vec<(u64, u64)>,
    /// Samples sent in the current segment.
    segment_samples: u64,
    /// When the avatar, playing in real time what it was sent, will have
    /// played the last of it: a segment's acknowledgement is awaited from
    /// its end's due time, not from when it was sent.
    due: Instant,
    pcm: Vec<u8>,
}

/// The agent-side avatar link actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AvatarLink;

impl Actor for AvatarLink {
    type Msg = LinkMsg;
    type State = LinkState;
    type Arguments = LinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LinkMsg>,
        args: LinkArgs,
    ) -> Result<LinkState, ActorProcessingErr> {
        let (pc, audio, control) = connect(&args, &myself).await?;
        args.alive.store(true, Ordering::Release);
        emit(
            &args.session,
            SessionEventKind::AvatarConnected {
                participant: args.config.participant_id.clone(),
            },
        );
        Ok(LinkState {
            args,
            pc,
            audio,
            control,
            current: 1,
            pending: Vec::new(),
            counts: Vec::new(),
            segment_samples: 0,
            due: Instant::now(),
            pcm: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<LinkMsg>,
        state: &mut LinkState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.alive.store(false, Ordering::Release);
        let _ = state.control.close().await;
        let _ = state.pc.close().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<LinkMsg>,
        msg: LinkMsg,
        state: &mut LinkState,
    ) -> Result<(), ActorProcessingErr> {
        // The peer, its channels and the pending acks are kept: a fault
        // while handling one message restarts the link in place, still
        // connected, and the session hears about it.
        if let Err(why) = contain(state.handle(&myself, msg)).await {
            let session = &state.args.session;
            restarted(&session.renderer, "avatar link", &why);
            emit(
                session,
                SessionEventKind::Error {
                    message: format!("avatar link restarted after a fault: {why}"),
                },
            );
        }
        Ok(())
    }
}

impl LinkState {
    async fn handle(&mut self, myself: &ActorRef<LinkMsg>, msg: LinkMsg) {
        match msg {
            // The backlogs count down once a message is sent, not when it
            // is taken: at zero nothing handed to the link is unsent.
            LinkMsg::Audio(frames) => {
                self.send_audio(&frames).await;
                let n = frames.len() as u64;
                self.args.stats.backlog.fetch_sub(n, Ordering::AcqRel);
            }
            LinkMsg::SegmentEnd => {
                let id = self.current;
                self.current += 1;
                self.pending.push(id);
                self.counts
                    .push((id, std::mem::take(&mut self.segment_samples)));
                self.send_segment_end(id).await;
                self.args
                    .stats
                    .control_backlog
                    .fetch_sub(1, Ordering::AcqRel);
                let until_played = self.due.saturating_duration_since(Instant::now());
                myself.send_after(until_played + self.args.config.ack_timeout, move || {
                    LinkMsg::CheckAck(id, 0)
                });
            }
            LinkMsg::Interrupt { fade_frames } => {
                self.segment_samples = 0;
                // The avatar drops what it holds past the fade.
                self.due = Instant::now();
                // The fade first, on the same ordered channel: an avatar
                // that does not know it ignores it and cuts at INTERRUPT.
                let fade = Control::InterruptFade {
                    frames: fade_frames,
                };
                if let Ok(text) = serde_json::to_string(&fade) {
                    self.send_control(&text).await;
                }
                self.send_control(INTERRUPT).await;
                self.args
                    .stats
                    .control_backlog
                    .fetch_sub(1, Ordering::AcqRel);
            }
            LinkMsg::Ack(ack) => {
                self.acked(&ack);
                self.args.stats.acks_handled.fetch_add(1, Ordering::Release);
            }
            LinkMsg::CheckAck(id, tries) => {
                if self.pending.contains(&id) {
                    self.args.stats.ack_timeouts.fetch_add(1, Ordering::Relaxed);
                    emit(
                        &self.args.session,
                        SessionEventKind::AvatarAckTimeout { segment: id },
                    );
                    if tries == 0 {
                        // The end may have been lost: say it again, once.
                        self.send_segment_end(id).await;
                        myself.send_after(self.args.config.ack_timeout, move || {
                            LinkMsg::CheckAck(id, 1)
                        });
                    } else {
                        self.forget(id);
                    }
                }
            }
            LinkMsg::Closed(reason) => {
                if self.args.alive.swap(false, Ordering::AcqRel) {
                    emit(
                        &self.args.session,
                        SessionEventKind::AvatarDisconnected {
                            reason: reason.clone(),
                        },
                    );
                    let _ = self.args.session.send(SessionMsg::RemoveSink {
                        name: self.args.sink_name.clone(),
                        reason: Some(format!("avatar link dropped: {reason}")),
                    });
                }
                myself.stop(None);
            }
            #[cfg(feature = "fault-injection")]
            LinkMsg::Panic => panic!("injected avatar link fault"),
        }
    }

    fn forget(&mut self, id: u64) {
        if self.pending.contains(&id) {
            self.args.stats.settled.fetch_add(1, Ordering::AcqRel);
        }
        self.pending.retain(|&p| p != id);
        self.counts.retain(|&(p, _)| p != id);
    }

    async fn send_audio(&mut self, frames: &[f32]) {
        self.segment_samples += frames.len() as u64;
        let per_second = f64::from(self.args.sample_rate) * self.args.channels.max(1) as f64;
        let lasts = Duration::from_secs_f64(frames.len() as f64 / per_second.max(1.0));
        self.due = self.due.max(Instant::now()) + lasts;
        self.pcm.clear();
        self.pcm.extend(
            frames
                .iter()
                .flat_map(|&s| sotto_rt::to_s16(s).to_le_bytes()),
        );
        for chunk in chunks(&self.pcm) {
            match self.audio.try_send(BytesMut::from(chunk)).await {
                Ok(()) => {
                    self.args
                        .stats
                        .bytes_sent
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    self.args.stats.chunks_sent.fetch_add(1, Ordering::Relaxed);
                }
                // The channel is unreliable anyway: a stalled peer loses
                // audio rather than growing memory.
                Err(webrtc::error::Error::ErrSendBufferFull) => {
                    self.args
                        .stats
                        .chunks_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                // A closed channel stops sending without a storm (SPEC A3):
                // the connection watch reports it once.
                Err(_) => {
                    self.args.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }

    async fn send_segment_end(&mut self, id: u64) {
        let samples = self.counts.iter().find(|&&(p, _)| p == id).map(|&(_, n)| n);
        let text = serde_json::to_string(&Control::SegmentEnd {
            id: Some(id),
            samples,
        });
        match text {
            Ok(t) => self.send_control(&t).await,
            Err(_) => {
                self.args.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends one text message on the control channel, counted.
    async fn send_control(&mut self, text: &str) {
        if self.control.send_text(text).await.is_ok() {
            self.args.stats.control_sent.fetch_add(1, Ordering::Release);
        } else {
            self.args.stats.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn acked(&mut self, ack: &StreamEnded) {
        self.args.stats.acks.fetch_add(1, Ordering::Relaxed);
        let segment = if ack.interrupted {
            // An interrupt ends the segment being played and every one
            // queued behind it; the turn being streamed is cut too.
            let cut = ack
                .segment_id
                .or_else(|| self.pending.first().copied())
                .unwrap_or(self.current);
            let cut_pending = self.pending.len() as u64;
            self.args
                .stats
                .settled
                .fetch_add(cut_pending, Ordering::AcqRel);
            self.pending.clear();
            self.counts.clear();
            if cut >= self.current {
                self.current = cut + 1;
            }
            cut
        } else {
            let Some(id) = ack.segment_id else {
                // An avatar without ids: the oldest segment ended.
                if self.pending.is_empty() {
                    return;
                }
                let id = self.pending[0];
                self.forget(id);
                self.emit_ack(id, ack);
                return;
            };
            if !self.pending.contains(&id) {
                // Acknowledged again after a resend: said already.
                return;
            }
            self.forget(id);
            id
        };
        self.emit_ack(segment, ack);
    }

    fn emit_ack(&self, segment: u64, ack: &StreamEnded) {
        emit(
            &self.args.session,
            SessionEventKind::AvatarSegmentEnded {
                segment,
                playback_position: ack.playback_position,
                interrupted: ack.interrupted,
            },
        );
    }
}

fn emit(session: &SessionShared, kind: SessionEventKind) {
    session.emit(SessionEvent {
        session: session.id,
        at: session.clock(),
        kind,
    });
}

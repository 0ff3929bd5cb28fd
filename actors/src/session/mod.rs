//! The session actor: one agent output stream (SPEC O1–O10, O12).
//!
//! It owns the control ends of its voice, converts pushed bytes, keeps the
//! bounded queue's waiting pushes, and turns renderer events into session
//! events. One mailbox keeps pushes, interrupts and turn marks in order.
//! Runs on the tokio runtime.

mod config;
mod events;
mod messages;
mod queue;
mod shared;
mod state;

pub use config::*;
pub use events::*;
pub use messages::*;
use queue::*;
pub use shared::*;
use sotto_rt::FrameCount;
pub use state::*;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sotto_rt::{ClipCommand, StreamPos, VoiceCommand};

use crate::ingest::Ingest;

/// The session actor.
#[derive(Debug, Clone, Copy)]
pub struct Session;

impl Actor for Session {
    type Msg = Envelope;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Envelope>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let input = args.shared.config.input;
        let ingest = Ingest::new(input, args.sample_rate, args.channels)?;
        let background_ingest = Ingest::new(input, args.sample_rate, args.channels)?;
        let fade_frames = config::fade_frames(args.shared.config.fade, args.sample_rate);
        args.shared.pushed_frames.store(0, Ordering::Relaxed);
        args.shared.pending_frames.store(0, Ordering::Relaxed);
        let mut state = SessionState {
            shared: args.shared,
            voice: args.voice,
            generation: args.generation,
            sample_rate: args.sample_rate,
            channels: args.channels,
            clock: args.clock,
            ingest,
            background_ingest,
            #[cfg(feature = "fault-injection")]
            ingest_fault: false,
            pending: VecDeque::new(),
            background_pending: VecDeque::new(),
            waiting: [0; 2],
            decoded: Vec::new(),
            teed: Vec::new(),
            command_backlog: VecDeque::new(),
            clip_backlog: VecDeque::new(),
            pushed: StreamPos(0),
            background_pushed: StreamPos(0),
            turn_start: StreamPos(0),
            accepting: true,
            manual: false,
            paused: false,
            synthesis_complete: false,
            cut_by_interrupt: 0,
            fade_frames,
            waiters: Vec::new(),
            sinks: Vec::new(),
        };
        state.adopt_orphans();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Envelope>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // Removed or shut down: every sink is finished, so what it writes
        // is complete.
        for mut sink in std::mem::take(&mut state.sinks) {
            if let Err(e) = sink.finish() {
                tracing::warn!(session = %state.shared.config.name, sink = sink.name(), error = %e, "sink did not finish");
            }
        }
        // The stopped state travels on to the supervisor, which may be busy
        // waiting for this very stop: pushes and waiters still queued are
        // answered (closed) here, not when it gets round to the state.
        state.pending.clear();
        state.background_pending.clear();
        state.waiting = [0; 2];
        state.waiters.clear();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Envelope>,
        envelope: Envelope,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let shared = Arc::clone(&state.shared);
        // The ticket lives to the end of the handler, even through a panic.
        let Envelope {
            msg,
            _ticket,
            _slot,
        } = envelope;
        state.adopt_orphans();
        match msg {
            SessionMsg::Push {
                input,
                bytes,
                reply,
            } => state.push(
                input,
                &bytes,
                PushReply {
                    tx: reply,
                    feed: None,
                },
            ),
            SessionMsg::BeginSynthesis => {
                if state.pending.is_empty() {
                    state.begin_turn();
                } else if !matches!(state.pending.back(), Some(Pending::Begin)) {
                    // Two turn starts with nothing between are one.
                    state.pending.push_back(Pending::Begin);
                }
            }
            SessionMsg::EndSynthesis => state.end_synthesis(),
            SessionMsg::Interrupt => state.interrupt(),
            SessionMsg::Pause => {
                if state.paused {
                    tracing::warn!(session = %shared.config.name, "pause while paused ignored");
                } else {
                    state.paused = true;
                    state.command(VoiceCommand::Pause);
                }
            }
            SessionMsg::Resume => {
                if state.paused {
                    state.paused = false;
                    state.command(VoiceCommand::Resume);
                } else {
                    tracing::warn!(session = %shared.config.name, "resume while playing ignored");
                }
            }
            SessionMsg::EnableInput { manual } => {
                state.accepting = true;
                state.manual = manual;
            }
            SessionMsg::DisableInput => state.accepting = false,
            SessionMsg::Clear(reply) => {
                let dropped = state.clear();
                let _ = reply.send(dropped);
            }
            SessionMsg::SetFade(d) => {
                let frames = config::fade_frames(d, state.sample_rate);
                state.fade_frames = frames;
                state.command(VoiceCommand::SetFade { frames });
            }
            SessionMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            SessionMsg::WaitPlayout(reply) => {
                if state.queue_empty() {
                    let _ = reply.send(());
                } else {
                    state.waiters.push(reply);
                }
            }
            SessionMsg::AddSink(sink) => {
                if sink.publishes_voice() {
                    state.command(VoiceCommand::SetDirectMuted(true));
                }
                state.sinks.push(sink);
            }
            SessionMsg::RemoveSink { name, reason } => state.remove_sink(&name, reason),
            SessionMsg::SetDuck(duck) => {
                let cfg = duck.map(|d| d.voice(state.sample_rate));
                state.command(VoiceCommand::SetDuck(cfg));
            }
            SessionMsg::Rendered(event) => state.rendered(event),
            SessionMsg::Tick => {}
            #[cfg(feature = "fault-injection")]
            SessionMsg::Panic => panic!("injected session fault"),
            #[cfg(feature = "fault-injection")]
            SessionMsg::PanicInIngest => state.ingest_fault = true,
            SessionMsg::PushFrames {
                input,
                frames,
                reply,
            } => {
                let reply = PushReply {
                    tx: reply,
                    feed: Some(Arc::clone(&shared.quiesce)),
                };
                if input == Input::Speech && !state.accepting {
                    let dropped = (frames.len() / state.channels) as u64;
                    state.emit(state.now(), SessionEventKind::DroppedInput { bytes: 0 });
                    reply.send(PushOutcome {
                        dropped_frames: FrameCount(dropped),
                        ..PushOutcome::default()
                    });
                } else {
                    state.queue_frames(input, frames, reply);
                }
            }
            SessionMsg::PlayClip {
                id,
                clip,
                gain,
                looping,
                after_ring,
            } => state.clip(ClipCommand::Play {
                id,
                clip,
                gain,
                looping,
                after_ring,
            }),
            SessionMsg::ClipGain { id, gain } => state.clip(ClipCommand::SetGain { id, gain }),
            SessionMsg::StopClip { id } => state.clip(ClipCommand::Stop { id }),
            SessionMsg::ClearBackground(reply) => {
                let _ = reply.send(state.clear_background());
            }
            SessionMsg::SetBackgroundGain(gain) => {
                state.command(VoiceCommand::SetBackgroundGain(gain));
            }
        }
        state.progress();
        Ok(())
    }
}

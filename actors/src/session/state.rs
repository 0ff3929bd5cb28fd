//! The session actor's state: turn marks, interrupts, sinks and the
//! renderer's events turned into session events.

use ractor::RpcReplyPort;
use sotto_rt::FrameCount;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sotto_rt::{
    ClipCommand, Event, EventKind, SampleTime, StreamPos, VoiceCommand, VoiceControl,
    VoiceTelemetry,
};
use tokio::sync::oneshot;

use super::*;
use crate::ingest::Ingest;
use crate::sink::AudioSink;

/// Startup arguments of a session actor.
pub struct SessionArgs {
    /// Shared state.
    pub shared: Arc<SessionShared>,
    /// Control ends of the fresh voice.
    pub voice: VoiceControl,
    /// The voice's generation.
    pub generation: u32,
    /// Output rate.
    pub sample_rate: u32,
    /// Output channels.
    pub channels: usize,
    /// Renderer-wide telemetry (for the sample clock).
    pub clock: Arc<sotto_rt::Telemetry>,
}

/// The session actor's state.
pub struct SessionState {
    pub(super) shared: Arc<SessionShared>,
    pub(super) voice: VoiceControl,
    pub(super) generation: u32,
    pub(super) sample_rate: u32,
    pub(super) channels: usize,
    pub(super) clock: Arc<sotto_rt::Telemetry>,
    pub(super) ingest: Ingest,
    pub(super) background_ingest: Ingest,
    /// Fault injection: the next conversion panics.
    #[cfg(feature = "fault-injection")]
    pub(super) ingest_fault: bool,
    pub(super) pending: VecDeque<Pending>,
    pub(super) background_pending: VecDeque<Pending>,
    /// Samples waiting in `pending` and `background_pending`.
    pub(super) waiting: [usize; 2],
    /// Decoded frames of the push being handled; kept for its capacity.
    pub(super) decoded: Vec<f32>,
    /// Frames a waiting push just moved into the ring, for the sinks;
    /// kept for its capacity.
    pub(super) teed: Vec<f32>,
    pub(super) command_backlog: VecDeque<VoiceCommand>,
    pub(super) clip_backlog: VecDeque<ClipCommand>,
    /// Speech frames written into the voice's ring so far.
    pub(super) pushed: StreamPos,
    /// Background frames written so far.
    pub(super) background_pushed: StreamPos,
    /// Where the current turn began (SPEC O9).
    pub(super) turn_start: StreamPos,
    pub(super) accepting: bool,
    pub(super) manual: bool,
    pub(super) paused: bool,
    pub(super) synthesis_complete: bool,
    pub(super) cut_by_interrupt: u64,
    /// The fade tail limit now in force, in frames (SPEC O5): sinks that
    /// play the voice themselves fade by it too (C7).
    pub(super) fade_frames: u32,
    pub(super) waiters: Vec<RpcReplyPort<()>>,
    pub(super) sinks: Vec<Box<dyn AudioSink>>,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        // Only a failed actor still holds sinks here (a stopped one finished
        // them): they go on with the session's next actor.
        if self.sinks.is_empty() {
            return;
        }
        let sinks = std::mem::take(&mut self.sinks);
        let mut orphans = match self.shared.orphans.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        orphans.extend(sinks);
        self.shared.has_orphans.store(true, Ordering::Release);
    }
}

impl SessionState {
    pub(super) fn telemetry(&self) -> &VoiceTelemetry {
        &self.voice.telemetry
    }

    pub(super) fn now(&self) -> SampleTime {
        self.clock.clock()
    }

    pub(super) fn emit(&self, at: SampleTime, kind: SessionEventKind) {
        self.shared.emit(SessionEvent {
            session: self.shared.id,
            at,
            kind,
        });
    }

    pub(super) fn command(&mut self, cmd: VoiceCommand) {
        if !self.command_backlog.is_empty() {
            self.command_backlog.push_back(cmd);
            return;
        }
        if self.voice.send(cmd).is_err() {
            // The renderer is not draining (no block rendered yet); keep order.
            self.command_backlog.push_back(cmd);
        }
    }

    /// Takes over the sinks of a failed predecessor. Its state may be
    /// dropped after this actor started (the supervisor hears of the
    /// failure first), so this is checked on every message, not only at
    /// start.
    pub(super) fn adopt_orphans(&mut self) {
        // A plain load on every message; the swap only when there is work.
        if !self.shared.has_orphans.load(Ordering::Acquire)
            || !self.shared.has_orphans.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let orphans = match self.shared.orphans.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for sink in orphans {
            if sink.publishes_voice() {
                self.command(VoiceCommand::SetDirectMuted(true));
            }
            self.sinks.push(sink);
        }
    }

    pub(super) fn tee(&mut self, frames: &[f32]) {
        if self.sinks.is_empty() || frames.is_empty() {
            return;
        }
        let (rate, ch) = (self.sample_rate, self.channels);
        let mut failed = Vec::new();
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = sink.write(frames, rate, ch) {
                failed.push((i, e));
            }
        }
        for (i, err) in failed.into_iter().rev() {
            let sink = self.sinks.remove(i);
            self.detached(sink, Some(err.to_string()));
        }
    }

    pub(super) fn remove_sink(&mut self, name: &str, reason: Option<String>) {
        let mut i = 0;
        while i < self.sinks.len() {
            if self.sinks[i].name() == name {
                let sink = self.sinks.remove(i);
                self.detached(sink, reason.clone());
            } else {
                i += 1;
            }
        }
    }

    /// A sink is gone: finish it, say why if it failed, and unmute the
    /// direct output when no other sink publishes the voice.
    pub(super) fn detached(&mut self, mut sink: Box<dyn AudioSink>, reason: Option<String>) {
        let finished = sink.finish().err().map(|e| e.to_string());
        if let Some(reason) = reason.or(finished) {
            tracing::warn!(session = %self.shared.config.name, sink = sink.name(), error = %reason, "sink failed, detached");
            self.emit(
                self.now(),
                SessionEventKind::SinkDetached {
                    sink: sink.name().to_owned(),
                    reason,
                },
            );
        }
        if sink.publishes_voice() && !self.sinks.iter().any(|s| s.publishes_voice()) {
            self.command(VoiceCommand::SetDirectMuted(false));
        }
    }

    pub(super) fn begin_turn(&mut self) {
        self.turn_start = self.pushed;
        self.synthesis_complete = false;
        self.command(VoiceCommand::BeginTurn { start: self.pushed });
    }

    pub(super) fn end_synthesis(&mut self) {
        let mut tail = Vec::new();
        self.ingest.flush(&mut tail);
        if !tail.is_empty() {
            self.waiting[Input::Speech as usize] += tail.len();
            let (tx, _) = oneshot::channel();
            self.pending.push_back(Pending::Frames {
                frames: tail,
                offset: 0,
                accepted: 0,
                reply: PushReply {
                    tx: tx.into(),
                    feed: None,
                },
            });
        }
        // Behind a waiting push, a completion right after another adds
        // nothing (both apply once the push is in, while it plays): one
        // mark stands for both, so a caller spinning on it cannot grow
        // the queue.
        if !matches!(self.pending.back(), Some(Pending::Complete)) {
            self.pending.push_back(Pending::Complete);
        }
    }

    pub(super) fn complete(&mut self) {
        // The sinks hear the end after the turn's last frame, which has
        // just entered the ring.
        for sink in &mut self.sinks {
            sink.segment_end();
        }
        self.synthesis_complete = true;
        self.command(VoiceCommand::SynthesisComplete { end: self.pushed });
        let t = self.telemetry();
        let speaking = self.pushed.0 > t.consumed() || t.is_speaking();
        if !speaking {
            self.fire_last_audio(self.now());
        }
    }

    pub(super) fn fire_last_audio(&mut self, at: SampleTime) {
        self.synthesis_complete = false;
        self.emit(at, SessionEventKind::LastAudio);
    }
    pub(super) fn clip(&mut self, cmd: ClipCommand) {
        if !self.clip_backlog.is_empty() {
            self.clip_backlog.push_back(cmd);
            return;
        }
        if let Err(cmd) = self.voice.send_clip(cmd) {
            self.clip_backlog.push_back(cmd);
        }
    }

    pub(super) fn interrupt(&mut self) {
        let cut = self.cut_pending();
        self.cut_by_interrupt = cut;
        self.command(VoiceCommand::Interrupt { fence: self.pushed });
        self.paused = false;
        self.synthesis_complete = false;
        self.accepting = !self.manual;
        for sink in &mut self.sinks {
            sink.interrupt(u64::from(self.fade_frames));
        }
    }

    pub(super) fn snapshot(&self) -> (u64, u64) {
        let t = self.telemetry();
        let pushed = self.pushed.since(self.turn_start);
        let played = if t.turn_start.load(Ordering::Relaxed) == self.turn_start.0 {
            t.turn_played()
        } else {
            // The renderer has not applied the new anchor yet; every frame at
            // or after it that was consumed was played.
            t.consumed().saturating_sub(self.turn_start.0)
        };
        (played.min(pushed), pushed)
    }

    pub(super) fn rendered(&mut self, event: Event) {
        if event.generation != self.generation {
            return;
        }
        let at = event.at;
        let kind = match event.kind {
            EventKind::FirstAudio { .. } => SessionEventKind::FirstAudio,
            EventKind::StoppedSpeaking { position } => {
                self.emit(at, SessionEventKind::StoppedSpeaking);
                if self.synthesis_complete && self.pending.is_empty() && position >= self.pushed {
                    self.fire_last_audio(at);
                }
                return;
            }
            EventKind::Interrupted {
                tail_frames,
                skipped_frames,
            } => SessionEventKind::Interrupted {
                tail_frames: FrameCount(tail_frames),
                dropped_frames: FrameCount(
                    skipped_frames + std::mem::take(&mut self.cut_by_interrupt),
                ),
            },
            EventKind::Cleared { skipped_frames } => SessionEventKind::Cleared {
                dropped_frames: FrameCount(
                    skipped_frames + std::mem::take(&mut self.cut_by_interrupt),
                ),
            },
            EventKind::FadeDone => SessionEventKind::FadeDone,
            EventKind::Underrun => SessionEventKind::Underrun,
            EventKind::Paused => SessionEventKind::Paused,
            EventKind::Resumed => SessionEventKind::Resumed,
            EventKind::Retired => return,
            EventKind::ClipStarted { id } => SessionEventKind::BackgroundStarted { source: id },
            EventKind::ClipWrapped { id, pass } => {
                SessionEventKind::BackgroundLoopWrapped { source: id, pass }
            }
            EventKind::ClipEnded { id, stopped } => SessionEventKind::BackgroundEnded {
                source: id,
                stopped,
            },
        };
        self.emit(at, kind);
    }
}

//! The bounded queue's bookkeeping (SPEC O2, O5): pushes converted and
//! written into the voice's rings, pushes waiting for room, and what an
//! interrupt or a clear cuts from them.

use ractor::RpcReplyPort;
use sotto_rt::FrameCount;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sotto_rt::VoiceCommand;

use super::*;
use crate::quiesce::Quiescence;

/// Where a push's outcome goes. A background feed blocked on it counts as
/// busy for quiescence from the moment it is woken, so the offline clock
/// never renders past audio the feed was about to queue.
pub(super) struct PushReply {
    pub(super) tx: RpcReplyPort<PushOutcome>,
    pub(super) feed: Option<Arc<Quiescence>>,
}

impl PushReply {
    pub(super) fn send(self, outcome: PushOutcome) {
        if let Some(q) = &self.feed {
            q.sent(1);
        }
        if self.tx.send(outcome).is_err() {
            if let Some(q) = &self.feed {
                q.handled(1);
            }
        }
    }
}

/// A push waiting for room in the queue, or a mark queued behind one.
pub(super) enum Pending {
    Frames {
        frames: Vec<f32>,
        offset: usize,
        accepted: u64,
        reply: PushReply,
    },
    Begin,
    Complete,
}

impl SessionState {
    pub(super) fn push(&mut self, input: Input, bytes: &[u8], reply: PushReply) {
        if !self.accepting && input == Input::Speech {
            tracing::debug!(session = %self.shared.config.name, bytes = bytes.len(), "input disabled, push dropped");
            self.emit(
                self.now(),
                SessionEventKind::DroppedInput {
                    bytes: bytes.len() as u64,
                },
            );
            reply.send(PushOutcome {
                dropped_bytes: bytes.len() as u64,
                ..PushOutcome::default()
            });
            return;
        }
        let mut frames = std::mem::take(&mut self.decoded);
        frames.clear();
        #[cfg(feature = "fault-injection")]
        assert!(
            !std::mem::take(&mut self.ingest_fault),
            "injected ingest fault"
        );
        match input {
            Input::Speech => self.ingest.push(bytes, &mut frames),
            Input::Background => self.background_ingest.push(bytes, &mut frames),
        }
        self.queue_frames(input, frames, reply);
    }

    /// Queues converted frames: what fits goes straight into the ring (when
    /// nothing waits ahead), the rest waits for room.
    pub(super) fn queue_frames(&mut self, input: Input, frames: Vec<f32>, reply: PushReply) {
        let ch = self.channels;
        let slot = input as usize;
        let (queue, tx) = match input {
            Input::Speech => (&mut self.pending, &mut self.voice.speech_tx),
            Input::Background => (&mut self.background_pending, &mut self.voice.background_tx),
        };
        // Nothing waiting ahead of it: what fits goes straight into the
        // ring, and only the rest is copied to wait for room.
        let written = if queue.is_empty() {
            write_frames(tx, &frames, ch)
        } else {
            0
        };
        let rest = frames.len() - written * ch;
        let limit = MAX_WAITING.as_secs() as usize * self.sample_rate as usize * ch;
        let overflow = rest > 0 && self.waiting[slot] + rest > limit;
        if overflow {
            reply.send(PushOutcome {
                accepted_frames: FrameCount(written as u64),
                dropped_frames: FrameCount((rest / ch) as u64),
                ..PushOutcome::default()
            });
        } else if rest == 0 {
            reply.send(PushOutcome {
                accepted_frames: FrameCount(written as u64),
                ..PushOutcome::default()
            });
        } else {
            queue.push_back(Pending::Frames {
                frames: frames[written * ch..].to_vec(),
                offset: 0,
                accepted: written as u64,
                reply,
            });
            self.waiting[slot] += rest;
        }
        match input {
            Input::Speech => {
                self.pushed = self.pushed.plus(written as u64);
                // The sinks see speech as it enters the ring, no sooner: an
                // avatar is fed at the pace the session plays, however fast
                // the agent pushes, and what an interrupt cuts from the
                // waiting pushes never reaches it.
                self.tee(&frames[..written * ch]);
            }
            Input::Background => {
                self.background_pushed = self.background_pushed.plus(written as u64);
            }
        }
        if overflow {
            tracing::warn!(session = %self.shared.config.name, frames = rest / ch, ?input, "queue overflow, push dropped");
            self.emit(
                self.now(),
                SessionEventKind::QueueOverflow {
                    dropped_frames: FrameCount((rest / ch) as u64),
                    background: input == Input::Background,
                },
            );
        }
        // A one-off huge push does not pin its buffer for the session's life.
        if frames.capacity() <= MAX_KEPT_DECODE_SAMPLES {
            self.decoded = frames;
        }
    }

    /// Cuts every waiting push; returns frames dropped. Turn marks queued
    /// behind them are applied (`Begin`) or discarded (`Complete`).
    pub(super) fn cut_pending(&mut self) -> u64 {
        let (mut dropped, begin) = cut(&mut self.pending, self.channels);
        self.waiting[Input::Speech as usize] = 0;
        // Audio inside the resampler was taken in and never played.
        dropped += self.ingest.held_frames();
        self.ingest.reset();
        if begin {
            self.begin_turn();
        }
        dropped
    }

    /// Drops the background input: what waits for room and what is queued.
    pub(super) fn clear_background(&mut self) -> u64 {
        let (dropped, _) = cut(&mut self.background_pending, self.channels);
        self.waiting[Input::Background as usize] = 0;
        self.background_ingest.reset();
        self.command(VoiceCommand::ClearBackground {
            fence: self.background_pushed,
        });
        dropped
    }

    pub(super) fn clear(&mut self) -> u64 {
        let cut = self.cut_pending();
        let queued = self.pushed.0.saturating_sub(self.telemetry().consumed());
        self.cut_by_interrupt = cut;
        self.command(VoiceCommand::Clear { fence: self.pushed });
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
        cut + queued
    }

    pub(super) fn queue_empty(&self) -> bool {
        self.pending.is_empty() && self.telemetry().consumed() >= self.pushed.0
    }

    /// Moves waiting work forward as far as the rings allow.
    pub(super) fn progress(&mut self) {
        while let Some(cmd) = self.command_backlog.front().copied() {
            if self.voice.send(cmd).is_err() {
                break;
            }
            self.command_backlog.pop_front();
        }
        while let Some(cmd) = self.clip_backlog.pop_front() {
            if let Err(cmd) = self.voice.send_clip(cmd) {
                self.clip_backlog.push_front(cmd);
                break;
            }
        }
        self.voice.collect_clips();
        self.drain_speech();
        let ch = self.channels;
        loop {
            let (written, done) = advance_front(
                &mut self.background_pending,
                &mut self.voice.background_tx,
                ch,
                None,
            );
            self.background_pushed = self.background_pushed.plus(written);
            let left = &mut self.waiting[Input::Background as usize];
            *left = left.saturating_sub(written as usize * ch);
            if !done {
                break;
            }
        }
        if !self.waiters.is_empty() && self.queue_empty() {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
        // Kept as pushes queue and drain, not summed over the queue here.
        let pending_frames = (self.waiting[Input::Speech as usize] / ch) as u64;
        self.shared
            .pending_frames
            .store(pending_frames, Ordering::Relaxed);
        self.shared
            .pushed_frames
            .store(self.pushed.0, Ordering::Relaxed);
        let wants = !self.pending.is_empty()
            || !self.background_pending.is_empty()
            || !self.clip_backlog.is_empty()
            || !self.waiters.is_empty()
            || !self.command_backlog.is_empty();
        self.shared.wants_tick.store(wants, Ordering::Relaxed);
    }

    pub(super) fn drain_speech(&mut self) {
        let ch = self.channels;
        loop {
            match self.pending.front() {
                Some(Pending::Frames { .. }) => {
                    let mut teed = std::mem::take(&mut self.teed);
                    teed.clear();
                    let tee = (!self.sinks.is_empty()).then_some(&mut teed);
                    let (written, done) =
                        advance_front(&mut self.pending, &mut self.voice.speech_tx, ch, tee);
                    self.tee(&teed);
                    self.teed = teed;
                    self.pushed = self.pushed.plus(written);
                    let left = &mut self.waiting[Input::Speech as usize];
                    *left = left.saturating_sub(written as usize * ch);
                    if !done {
                        return;
                    }
                }
                Some(Pending::Begin) => {
                    self.pending.pop_front();
                    self.begin_turn();
                }
                Some(Pending::Complete) => {
                    self.pending.pop_front();
                    self.complete();
                }
                None => return,
            }
        }
    }
}

/// Empties a queue of waiting pushes, telling each how much was dropped;
/// returns the frames dropped and whether a turn start was among them.
pub(super) fn cut(queue: &mut VecDeque<Pending>, ch: usize) -> (u64, bool) {
    let mut dropped = 0;
    let mut begin = false;
    for item in queue.drain(..) {
        match item {
            Pending::Frames {
                frames,
                offset,
                accepted,
                reply,
            } => {
                let left = ((frames.len() - offset) / ch) as u64;
                dropped += left;
                reply.send(PushOutcome {
                    accepted_frames: FrameCount(accepted),
                    dropped_frames: FrameCount(left),
                    dropped_bytes: 0,
                });
            }
            Pending::Begin => begin = true,
            Pending::Complete => {}
        }
    }
    (dropped, begin)
}

/// Writes as many whole frames as fit; returns frames written.
pub(super) fn write_frames(tx: &mut rtrb::Producer<f32>, samples: &[f32], ch: usize) -> usize {
    let room = tx.slots() / ch * ch;
    let n = room.min(samples.len() / ch * ch);
    if n == 0 {
        return 0;
    }
    let (written, _) = tx.push_partial_slice(&samples[..n]);
    written.len() / ch
}

/// Moves the front push's frames into the ring as far as they fit; once all
/// of them are in, resolves its reply and pops it. Returns the frames
/// written and whether the push is done.
pub(super) fn advance_front(
    pending: &mut VecDeque<Pending>,
    tx: &mut rtrb::Producer<f32>,
    ch: usize,
    tee: Option<&mut Vec<f32>>,
) -> (u64, bool) {
    let Some(Pending::Frames {
        frames,
        offset,
        accepted,
        ..
    }) = pending.front_mut()
    else {
        return (0, false);
    };
    let n = write_frames(tx, &frames[*offset..], ch);
    if let Some(tee) = tee {
        tee.extend_from_slice(&frames[*offset..*offset + n * ch]);
    }
    *offset += n * ch;
    *accepted += n as u64;
    if *offset < frames.len() {
        return (n as u64, false);
    }
    if let Some(Pending::Frames {
        accepted, reply, ..
    }) = pending.pop_front()
    {
        reply.send(PushOutcome {
            accepted_frames: FrameCount(accepted),
            ..PushOutcome::default()
        });
    }
    (n as u64, true)
}

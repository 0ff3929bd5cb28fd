//! Speech (SPEC O5, O6, O9): the fence an interrupt sets, the fade tail
//! it leaves, pause and resume ramps, and the counters of what played.
//! Runs on the audio thread.

use super::*;
use crate::dsp::{PauseState, Tail};
use crate::renderer::EventOut;
use crate::{EventKind, SampleTime, StreamPos};

impl Voice {
    /// Drops queued speech up to position `target` (as far as it has arrived).
    pub(super) fn discard_to(&mut self, target: u64) {
        let want = target.saturating_sub(self.consumed);
        if want == 0 {
            return;
        }
        let avail = (self.speech_rx.slots() / self.channels) as u64;
        let n = want.min(avail) as usize;
        if let Ok(chunk) = self.speech_rx.read_chunk(n * self.channels) {
            chunk.commit_all();
            self.consumed += n as u64;
        }
    }

    /// An interrupt (SPEC O5): what is audible now fades; what is not is
    /// dropped. Playing, the tail is the fade curve; during a pause ramp
    /// down, the ramp goes on to zero and is the tail; fully paused,
    /// nothing is heard again; during a resume ramp, the fade plays under
    /// the ramp still rising.
    pub(super) fn interrupt(&mut self, fence: u64, now: SampleTime, events: &mut EventOut<'_>) {
        if let Some(tail) = &mut self.tail {
            // A tail is already playing: keep it as it is; only move the fence.
            self.skip_until = self.skip_until.max(fence);
            match self.pause {
                PauseState::Paused => {
                    self.tail = None;
                    self.ramp_tail = false;
                    self.pause = PauseState::Playing;
                }
                PauseState::RampDown { .. } => {
                    if let Some(left) = self.pause.ramp_left(self.pause_ramp_frames) {
                        tail.cut_to(u64::from(left));
                    }
                    self.ramp_tail = true;
                }
                PauseState::Playing | PauseState::RampUp { .. } => {}
            }
            let after_tail = self.consumed + self.tail.map_or(0, |t| t.remaining());
            let skipped_frames = self.skip_until.saturating_sub(after_tail);
            self.after_interrupt(fence);
            self.event(
                events,
                now,
                EventKind::Interrupted {
                    tail_frames: 0,
                    skipped_frames,
                },
            );
            return;
        }
        self.discard_to(self.skip_until);
        let start = self.consumed;
        let pending = fence.saturating_sub(start);
        let tail_frames = match self.pause {
            PauseState::Paused => 0,
            PauseState::RampDown { .. } => {
                let left = self.pause.ramp_left(self.pause_ramp_frames).unwrap_or(0);
                pending.min(u64::from(left))
            }
            PauseState::Playing | PauseState::RampUp { .. } => {
                pending.min(u64::from(self.fade_frames))
            }
        };
        self.skip_until = self.skip_until.max(fence);
        if tail_frames > 0 {
            if let PauseState::RampDown { .. } = self.pause {
                self.tail = Some(Tail::flat(tail_frames));
                self.ramp_tail = true;
            } else {
                self.tail = Some(Tail::new(tail_frames));
            }
        } else {
            self.discard_to(self.skip_until);
            // The next turn must not start frozen.
            self.pause = PauseState::Playing;
        }
        self.after_interrupt(fence);
        self.event(
            events,
            now,
            EventKind::Interrupted {
                tail_frames,
                skipped_frames: pending - tail_frames,
            },
        );
    }

    pub(super) fn after_interrupt(&mut self, fence: u64) {
        self.first_audio_from = Some(fence);
        self.drain_ok_at = fence;
        self.starved = false;
    }

    /// Fills `scratch[..filled]` with speech; returns `filled`. The rest of
    /// the block is left for silence.
    pub(super) fn render_speech(
        &mut self,
        scratch: &mut [f32],
        n: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) -> usize {
        let ch = self.channels;
        let mut filled = 0usize;
        while filled < n {
            if self.pause == PauseState::Paused {
                break;
            }
            if self.tail.is_none() && self.consumed < self.skip_until {
                self.discard_to(self.skip_until);
                if self.consumed < self.skip_until {
                    break;
                }
            }
            let avail = self.speech_rx.slots() / ch;
            if avail == 0 {
                break;
            }
            let mut take = (n - filled).min(avail);
            if let Some(tail) = &self.tail {
                take = take.min(tail.remaining() as usize);
            }
            if let Some(left) = self.pause.ramp_left(self.pause_ramp_frames) {
                take = take.min(left as usize);
            }
            if take == 0 {
                // No state may stall the loop: silence beats a hung thread.
                break;
            }
            let dst = &mut scratch[filled * ch..(filled + take) * ch];
            let Ok(chunk) = self.speech_rx.read_chunk(take * ch) else {
                break;
            };
            let (a, b) = chunk.as_slices();
            dst[..a.len()].copy_from_slice(a);
            dst[a.len()..].copy_from_slice(b);
            chunk.commit_all();

            if let Some(tail) = &mut self.tail {
                tail.apply(dst, ch);
                if tail.remaining() == 0 {
                    self.tail = None;
                    let at = now.plus((filled + take) as u64);
                    events.push(self.session, self.generation, at, EventKind::FadeDone);
                }
            }
            if self.pause != PauseState::Playing {
                for frame in dst.chunks_exact_mut(ch) {
                    let (g, next) = self.pause.step(self.pause_ramp_frames);
                    self.pause = next;
                    for s in frame {
                        *s *= g;
                    }
                }
            }
            if self.ramp_tail && self.tail.is_none() {
                // The ramp's tail is over: the next turn plays.
                self.ramp_tail = false;
                self.pause = PauseState::Playing;
            }
            self.account(filled, take, now, events);
            filled += take;
        }
        filled
    }

    /// Books `take` frames played from the ring, starting `filled` frames
    /// into the block: counters and the turn's first-audio event.
    pub(super) fn account(
        &mut self,
        filled: usize,
        take: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) {
        let start = self.consumed;
        let end = start + take as u64;
        if let Some(from) = self.first_audio_from {
            if end > from {
                let position = from.max(start);
                let at = now.plus(filled as u64 + (position - start));
                self.first_audio_from = None;
                events.push(
                    self.session,
                    self.generation,
                    at,
                    EventKind::FirstAudio {
                        position: StreamPos(position),
                    },
                );
            }
        }
        self.turn_played += end.saturating_sub(start.max(self.turn_start));
        self.played += take as u64;
        self.consumed = end;
    }

    /// Copies the next `frames` speech frames into `scratch` and consumes them.
    pub(super) fn copy_speech(&mut self, scratch: &mut [f32], frames: usize) {
        let len = frames * self.channels;
        if let Ok(chunk) = self.speech_rx.read_chunk(len) {
            let (a, b) = chunk.as_slices();
            scratch[..a.len()].copy_from_slice(a);
            scratch[a.len()..len].copy_from_slice(b);
            chunk.commit_all();
        }
    }
}

//! The speaking state (SPEC O7, O8): speaking while audio is queued and
//! for a grace period after the last real sample, with the events at the
//! exact samples where it starts and stops. Runs on the audio thread.

use std::sync::atomic::Ordering;

use super::*;
use crate::dsp::PauseState;
use crate::renderer::EventOut;
use crate::{EventKind, SampleTime, StreamPos};

impl Voice {
    /// Updates the speaking state after a block of `n` frames whose first
    /// `filled` were real speech. `unread` of those are still in the ring
    /// (the direct path reads them after this call): they are not queued
    /// audio, or a turn ending inside the block would be seen a block late.
    pub(super) fn update_speaking(
        &mut self,
        n: usize,
        filled: usize,
        unread: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) {
        let block_end = now.plus(n as u64);
        if filled > 0 {
            self.speaking = true;
            self.starved = false;
            self.last_real_end = now.plus(filled as u64);
        }
        let queued = self.speech_rx.slots() / self.channels > unread || self.tail.is_some();
        if queued {
            if self.pause == PauseState::Paused && self.speaking {
                // Frozen audio still counts as speaking (SPEC O7).
                self.last_real_end = block_end;
            }
            return;
        }
        if filled < n && self.speaking && !self.starved && self.consumed != self.drain_ok_at {
            self.starved = true;
            self.telemetry.underruns.fetch_add(1, Ordering::Relaxed);
            events.push(
                self.session,
                self.generation,
                now.plus(filled as u64),
                EventKind::Underrun,
            );
        }
        if self.speaking {
            let deadline = self.last_real_end.plus(u64::from(self.grace_frames));
            if block_end >= deadline {
                self.speaking = false;
                // The duck lets go at the deadline's own sample.
                self.duck_hold = deadline.0.saturating_sub(now.0) as usize;
                events.push(
                    self.session,
                    self.generation,
                    deadline,
                    EventKind::StoppedSpeaking {
                        position: StreamPos(self.consumed),
                    },
                );
            }
        }
    }
}

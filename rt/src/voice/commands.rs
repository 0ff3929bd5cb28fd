//! Voice and clip commands from the control side, applied between blocks.
//! Runs on the audio thread.

use std::sync::Arc;

use super::*;
use crate::dsp::Ramp;
use crate::renderer::EventOut;
use crate::{ClipCommand, EventKind, SampleTime, VoiceCommand};

impl Voice {
    /// Applies this voice's pending commands. Runs on the audio thread.
    pub(crate) fn apply_commands(&mut self, now: SampleTime, events: &mut EventOut<'_>) {
        while let Ok(cmd) = self.command_rx.pop() {
            match cmd {
                VoiceCommand::Interrupt { fence } => self.interrupt(fence.0, now, events),
                VoiceCommand::Clear { fence } => {
                    let before = self.consumed;
                    self.tail = None;
                    if std::mem::take(&mut self.ramp_tail) {
                        self.pause = crate::dsp::PauseState::Playing;
                    }
                    self.skip_until = self.skip_until.max(fence.0);
                    self.discard_to(self.skip_until);
                    self.drain_ok_at = self.skip_until;
                    let skipped_frames = self.consumed - before;
                    self.event(events, now, EventKind::Cleared { skipped_frames });
                }
                VoiceCommand::Pause => {
                    // A pause asked for now outlasts a tail's end.
                    self.ramp_tail = false;
                    self.pause = self.pause.pause(self.pause_ramp_frames);
                    self.event(events, now, EventKind::Paused);
                }
                VoiceCommand::Resume => {
                    self.ramp_tail = false;
                    self.pause = self.pause.resume(self.pause_ramp_frames);
                    self.event(events, now, EventKind::Resumed);
                }
                VoiceCommand::BeginTurn { start } => {
                    self.turn_start = start.0;
                    // Frames at or after `start` consumed before this command arrived
                    // were all played: a skip before it cannot reach past `start`.
                    self.turn_played = self.consumed.saturating_sub(start.0);
                    if self.turn_played > 0 {
                        self.first_audio_from = None;
                        self.event(events, now, EventKind::FirstAudio { position: start });
                    } else {
                        self.first_audio_from = Some(start.0);
                    }
                }
                VoiceCommand::SynthesisComplete { end } => self.drain_ok_at = end.0,
                VoiceCommand::SetFade { frames } => self.fade_frames = frames,
                VoiceCommand::SetDirectMuted(muted) => self.direct_muted = muted,
                VoiceCommand::SetDuck(duck) => self.duck = duck,
                VoiceCommand::ClearBackground { fence } => {
                    // Ramps out what plays now, then drops the rest up to the
                    // fence and comes back at the gain it had.
                    let restore = match self.clearing {
                        Some((_, restore)) => restore,
                        None => self.background_gain.target(),
                    };
                    self.clearing = Some((fence.0, restore));
                    self.background_gain.head(0.0, self.gain_ramp_frames);
                }
                VoiceCommand::SetBackgroundGain(gain) => match &mut self.clearing {
                    Some((_, restore)) => *restore = gain,
                    None => self.background_gain.head(gain, self.gain_ramp_frames),
                },
                VoiceCommand::SetSaturation(s) => self.saturation = s,
            }
        }
        while let Ok(cmd) = self.clip_rx.pop() {
            self.apply_clip(cmd, now, events);
        }
    }

    pub(super) fn apply_clip(
        &mut self,
        cmd: ClipCommand,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) {
        match cmd {
            ClipCommand::Play {
                id,
                clip,
                gain,
                looping,
                after_ring,
            } => {
                if let Some(old) = self.clip.take() {
                    self.event(
                        events,
                        now,
                        EventKind::ClipEnded {
                            id: old.id,
                            stopped: true,
                        },
                    );
                    self.release(old.clip);
                }
                if clip.len() < self.channels {
                    // Nothing to play: it ends where it starts.
                    self.event(events, now, EventKind::ClipStarted { id });
                    let ended = EventKind::ClipEnded { id, stopped: false };
                    self.event(events, now, ended);
                    self.release(clip);
                    return;
                }
                // Starts from silence, so the first sample is not a step;
                // taking over from the ring, it goes on at the ring's level.
                let mut ramp = Ramp::new(if after_ring { gain } else { 0.0 });
                ramp.head(gain, self.gain_ramp_frames);
                self.clip = Some(ClipPlayer {
                    id,
                    clip,
                    pos: 0,
                    pass: 1,
                    looping,
                    gain: ramp,
                    stopping: false,
                    armed: after_ring,
                });
                if !after_ring {
                    self.event(events, now, EventKind::ClipStarted { id });
                }
            }
            ClipCommand::SetGain { id, gain } => {
                if let Some(p) = self.clip.as_mut().filter(|p| p.id == id && !p.stopping) {
                    p.gain.head(gain, self.gain_ramp_frames);
                }
            }
            ClipCommand::Stop { id } => {
                if let Some(p) = self.clip.as_mut().filter(|p| p.id == id) {
                    p.stopping = true;
                    p.gain.head(0.0, self.gain_ramp_frames);
                }
            }
        }
    }

    /// Hands a clip back to the control side; never frees it here.
    pub(super) fn release(&mut self, clip: Arc<[f32]>) {
        if let Err(rtrb::PushError::Full(clip)) = self.clip_return_tx.push(clip) {
            if self.clip_parked.is_none() {
                self.clip_parked = Some(clip);
            } else {
                // Unreachable with the ring sizes above; leaking beats freeing
                // on the audio thread.
                std::mem::forget(clip);
            }
        }
    }
}

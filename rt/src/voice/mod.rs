//! One session's voice: its speech and background rings, the interrupt
//! fence and fade tail, pause ramps, ducking and the speaking state.
//!
//! Built on the control side ([`Voice::new`]), moved into the renderer
//! inside a [`Command::AddVoice`](crate::Command), and from then on touched
//! only by the audio thread until it is retired whole.

mod background;
mod commands;
mod duck;
mod speaking;
mod speech;
#[cfg(test)]
mod tests;

use background::{ClipPlayer, CLIP_RING};
pub use duck::DuckConfig;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::dsp::{PauseState, Ramp, Saturation, Tail};
use crate::renderer::EventOut;
use crate::{
    ClipCommand, Doorbells, EventKind, OutputId, SampleTime, SessionId, VoiceCommand,
    VoiceTelemetry,
};

/// Everything a voice needs, fixed at construction. Control side.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    /// The session's slot.
    pub session: SessionId,
    /// Bumped each time the session's voice is rebuilt.
    pub generation: u32,
    /// Interleaved channels; must match the renderer.
    pub channels: usize,
    /// Speech ring size: the session's bounded queue (SPEC O2).
    pub speech_capacity_frames: usize,
    /// Background ring size.
    pub background_capacity_frames: usize,
    /// Voice command ring size.
    pub command_capacity: usize,
    /// Fade tail limit on interrupt (SPEC O5).
    pub fade_frames: u32,
    /// Speaking grace period after the last real frame (SPEC O7).
    pub grace_frames: u32,
    /// Length of the pause and resume ramps (SPEC O6).
    pub pause_ramp_frames: u32,
    /// Background ducking, if any.
    pub duck: Option<DuckConfig>,
    /// Linear gain of the background input.
    pub background_gain: f32,
    /// Length of the ramp of a background or clip gain change, in frames.
    pub gain_ramp_frames: u32,
    /// How speech + background is kept inside full scale.
    pub saturation: Saturation,
    /// The renderer's [`RendererControl::doorbells`](crate::RendererControl);
    /// without them the renderer polls this voice's commands every block.
    pub doorbells: Option<Doorbells>,
    /// The output the voice renders into (SPEC C1); `None`: the renderer's
    /// own buffer (the device or the offline mix).
    pub output: Option<OutputId>,
}

/// The control side's ends of a voice.
#[derive(Debug)]
pub struct VoiceControl {
    /// Speech samples, interleaved at the output rate and channel count.
    pub speech_tx: Producer<f32>,
    /// Background samples, same format.
    pub background_tx: Producer<f32>,
    /// What the voice reports.
    pub telemetry: Arc<VoiceTelemetry>,
    command_tx: Producer<VoiceCommand>,
    clip_tx: Producer<ClipCommand>,
    clip_returns: Consumer<Arc<[f32]>>,
    doorbells: Option<Doorbells>,
    session: SessionId,
}

impl VoiceControl {
    /// Queues a command for the voice, applied at the start of the next
    /// render block.
    ///
    /// # Errors
    /// Gives the command back when the voice's command ring is full.
    pub fn send(&mut self, command: VoiceCommand) -> Result<(), VoiceCommand> {
        self.command_tx
            .push(command)
            .map_err(|rtrb::PushError::Full(c)| c)?;
        self.ring();
        Ok(())
    }

    /// Queues a clip command for the voice.
    ///
    /// # Errors
    /// Gives the command back when the voice's clip ring is full.
    pub fn send_clip(&mut self, command: ClipCommand) -> Result<(), ClipCommand> {
        self.clip_tx
            .push(command)
            .map_err(|rtrb::PushError::Full(c)| c)?;
        self.ring();
        Ok(())
    }

    /// Drops the clips the voice has handed back; returns how many.
    pub fn collect_clips(&mut self) -> usize {
        let mut n = 0;
        while self.clip_returns.pop().is_ok() {
            n += 1;
        }
        n
    }

    fn ring(&self) {
        if let Some(bells) = &self.doorbells {
            bells.ring(self.session);
        }
    }
}

/// A session's voice inside the renderer.
#[derive(Debug)]
pub struct Voice {
    session: SessionId,
    generation: u32,
    channels: usize,
    speech_rx: Consumer<f32>,
    background_rx: Consumer<f32>,
    command_rx: Consumer<VoiceCommand>,
    clip_rx: Consumer<ClipCommand>,
    clip_return_tx: Producer<Arc<[f32]>>,
    /// A released clip the return ring had no room for; sent next block.
    clip_parked: Option<Arc<[f32]>>,
    clip: Option<ClipPlayer>,
    telemetry: Arc<VoiceTelemetry>,
    doorbells: Option<Doorbells>,
    output: Option<OutputId>,
    /// Set by the renderer: its doorbells announce this voice's commands.
    pub(crate) belled: bool,

    consumed: u64,
    played: u64,
    turn_start: u64,
    turn_played: u64,
    background_frames: u64,

    skip_until: u64,
    tail: Option<Tail>,
    /// The tail plays out a pause ramp an interrupt came during; when it
    /// ends, the next turn starts unpaused.
    ramp_tail: bool,
    fade_frames: u32,
    pause: PauseState,
    pause_ramp_frames: u32,

    first_audio_from: Option<u64>,
    speaking: bool,
    last_real_end: SampleTime,
    grace_frames: u32,
    starved: bool,
    drain_ok_at: u64,

    direct_muted: bool,
    duck: Option<DuckConfig>,
    duck_gain: Ramp,
    /// A background clear ramping out: its fence and the gain to return to.
    clearing: Option<(u64, f32)>,
    /// Frames of this block that keep the duck's previous target.
    duck_hold: usize,
    background_gain: Ramp,
    gain_ramp_frames: u32,
    saturation: Saturation,
}

impl Voice {
    /// Builds a voice and its control ends. Control side: allocates the rings.
    #[must_use]
    pub fn new(config: &VoiceConfig) -> (VoiceControl, Voice) {
        let ch = config.channels.max(1);
        let (speech_tx, speech_rx) = RingBuffer::new(config.speech_capacity_frames.max(1) * ch);
        let (background_tx, background_rx) =
            RingBuffer::new(config.background_capacity_frames.max(1) * ch);
        let (command_tx, command_rx) = RingBuffer::new(config.command_capacity.max(1));
        let (clip_tx, clip_rx) = RingBuffer::new(CLIP_RING);
        // Every Play can displace one clip, and one more may be playing.
        let (clip_return_tx, clip_returns) = RingBuffer::new(CLIP_RING + 1);
        let telemetry = Arc::new(VoiceTelemetry::default());
        telemetry.duck_gain.store(1.0, Ordering::Relaxed);
        let voice = Voice {
            session: config.session,
            generation: config.generation,
            channels: ch,
            speech_rx,
            background_rx,
            command_rx,
            clip_rx,
            clip_return_tx,
            clip_parked: None,
            clip: None,
            telemetry: Arc::clone(&telemetry),
            doorbells: config.doorbells.clone(),
            output: config.output,
            belled: false,
            consumed: 0,
            played: 0,
            turn_start: 0,
            turn_played: 0,
            background_frames: 0,
            skip_until: 0,
            tail: None,
            ramp_tail: false,
            fade_frames: config.fade_frames,
            pause: PauseState::Playing,
            pause_ramp_frames: config.pause_ramp_frames.max(1),
            first_audio_from: Some(0),
            speaking: false,
            last_real_end: SampleTime(0),
            grace_frames: config.grace_frames,
            starved: false,
            drain_ok_at: 0,
            direct_muted: false,
            duck: config.duck,
            duck_gain: Ramp::new(1.0),
            duck_hold: 0,
            clearing: None,
            background_gain: Ramp::new(config.background_gain),
            gain_ramp_frames: config.gain_ramp_frames.max(1),
            saturation: config.saturation,
        };
        let control = VoiceControl {
            speech_tx,
            background_tx,
            command_tx,
            clip_tx,
            clip_returns,
            telemetry,
            doorbells: config.doorbells.clone(),
            session: config.session,
        };
        (control, voice)
    }

    /// The session this voice plays for.
    #[must_use]
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The voice's generation.
    #[must_use]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether commands for this voice are announced on `bells`.
    pub(crate) fn rings(&self, bells: &Doorbells) -> bool {
        self.doorbells.as_ref().is_some_and(|d| d.same(bells))
    }

    /// Interleaved channel count.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The output the voice renders into; `None` for the renderer's own.
    #[must_use]
    pub fn output(&self) -> Option<OutputId> {
        self.output
    }

    fn event(&self, events: &mut EventOut<'_>, at: SampleTime, kind: EventKind) {
        events.push(self.session, self.generation, at, kind);
    }

    /// Renders this voice and adds it into `out` (interleaved). `scratch`
    /// is the renderer's work space, shared by every voice so it stays in
    /// cache; it must be at least twice as long as `out`. Runs on the audio
    /// thread.
    pub(crate) fn process(
        &mut self,
        out: &mut [f32],
        scratch: &mut [f32],
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) {
        if let Some(clip) = self.clip_parked.take() {
            self.release(clip);
        }
        let ch = self.channels;
        let n = out.len().min(scratch.len() / 2) / ch;
        let (scratch, bg) = scratch.split_at_mut(n * ch);
        let filled = if self.steady() && self.clip_is_direct(n) {
            let filled = n.min(self.speech_rx.slots() / ch);
            self.account(0, filled, now, events);
            self.update_speaking(n, filled, filled, now, events);
            if self.duck_gain.steady() && self.duck_gain.value() == self.duck_target() {
                self.duck_hold = 0;
                self.mix_direct(out, n, filled, now, events);
                self.publish();
                return;
            }
            // A duck ramp starts in this block: take the general path.
            self.copy_speech(scratch, filled);
            filled
        } else {
            let filled = self.render_speech(scratch, n, now, events);
            self.update_speaking(n, filled, 0, now, events);
            filled
        };
        let active = self.mix_background(scratch, bg, n, filled, now, events);
        if active > 0 && !self.direct_muted {
            let len = active * ch;
            self.saturation.add_into(&mut out[..len], &scratch[..len]);
        }
        self.publish();
    }

    fn publish(&self) {
        let t = &self.telemetry;
        t.consumed_frames.store(self.consumed, Ordering::Relaxed);
        t.played_frames.store(self.played, Ordering::Relaxed);
        t.turn_played_frames
            .store(self.turn_played, Ordering::Relaxed);
        t.turn_start.store(self.turn_start, Ordering::Relaxed);
        t.background_frames
            .store(self.background_frames, Ordering::Relaxed);
        let queued = self.speech_rx.slots() / self.channels;
        t.queued_frames.store(queued as u64, Ordering::Relaxed);
        t.speaking.store(self.speaking, Ordering::Relaxed);
        t.duck_gain.store(self.duck_gain.value(), Ordering::Relaxed);
    }
}

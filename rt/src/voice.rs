//! One session's voice: its speech and background rings, the interrupt
//! fence and fade tail, pause ramps, ducking and the speaking state.
//!
//! Built on the control side ([`Voice::new`]), moved into the renderer
//! inside a [`Command::AddVoice`](crate::Command), and from then on touched
//! only by the audio thread until it is retired whole.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::dsp::{mix_sources, PauseState, Ramp, Saturation, Tail};
use crate::renderer::EventOut;
use crate::{
    ClipCommand, Doorbells, EventKind, SampleTime, SessionId, VoiceCommand, VoiceTelemetry,
};

/// Background ducking under speech (SPEC O11, beyond).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DuckConfig {
    /// Background gain while the voice speaks (linear, e.g. 0.25 for −12 dB).
    pub gain: f32,
    /// Length of the ramp from unity down to `gain`, in frames.
    pub down_frames: u32,
    /// Length of the ramp from `gain` back up to unity, in frames.
    pub up_frames: u32,
}

impl DuckConfig {
    /// Gain change per frame of the ramp towards `target` from `from`.
    fn step(&self, from: f32, target: f32) -> f32 {
        let frames = if target < from {
            self.down_frames
        } else {
            self.up_frames
        };
        (1.0 - self.gain).abs() / frames.max(1) as f32
    }
}

/// Clip ring and return ring size per voice.
const CLIP_RING: usize = 8;

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

/// A decoded clip playing from memory.
#[derive(Debug)]
struct ClipPlayer {
    id: u32,
    clip: Arc<[f32]>,
    /// Next sample (not frame) to play.
    pos: usize,
    pass: u32,
    looping: bool,
    gain: Ramp,
    stopping: bool,
    /// Waiting for the background ring to run dry.
    armed: bool,
}

impl ClipPlayer {
    /// Starts the next pass at sample `pos`; returns its event.
    fn wrap(&mut self, pos: usize) -> EventKind {
        self.pos = pos;
        self.pass += 1;
        EventKind::ClipWrapped {
            id: self.id,
            pass: self.pass,
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
    /// Set by the renderer: its doorbells announce this voice's commands.
    pub(crate) belled: bool,

    consumed: u64,
    played: u64,
    turn_start: u64,
    turn_played: u64,
    background_frames: u64,

    skip_until: u64,
    tail: Option<Tail>,
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
            belled: false,
            consumed: 0,
            played: 0,
            turn_start: 0,
            turn_played: 0,
            background_frames: 0,
            skip_until: 0,
            tail: None,
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

    fn event(&self, events: &mut EventOut<'_>, at: SampleTime, kind: EventKind) {
        events.push(self.session, self.generation, at, kind);
    }

    /// Drops queued speech up to position `target` (as far as it has arrived).
    fn discard_to(&mut self, target: u64) {
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

    /// Applies this voice's pending commands. Runs on the audio thread.
    pub(crate) fn apply_commands(&mut self, now: SampleTime, events: &mut EventOut<'_>) {
        while let Ok(cmd) = self.command_rx.pop() {
            match cmd {
                VoiceCommand::Interrupt { fence } => self.interrupt(fence, now, events),
                VoiceCommand::Clear { fence } => {
                    let before = self.consumed;
                    self.tail = None;
                    self.skip_until = self.skip_until.max(fence);
                    self.discard_to(self.skip_until);
                    self.drain_ok_at = self.skip_until;
                    let skipped_frames = self.consumed - before;
                    self.event(events, now, EventKind::Cleared { skipped_frames });
                }
                VoiceCommand::Pause => {
                    self.pause = self.pause.pause(self.pause_ramp_frames);
                    self.event(events, now, EventKind::Paused);
                }
                VoiceCommand::Resume => {
                    self.pause = self.pause.resume(self.pause_ramp_frames);
                    self.event(events, now, EventKind::Resumed);
                }
                VoiceCommand::BeginTurn { start } => {
                    self.turn_start = start;
                    // Frames at or after `start` consumed before this command arrived
                    // were all played: a skip before it cannot reach past `start`.
                    self.turn_played = self.consumed.saturating_sub(start);
                    if self.turn_played > 0 {
                        self.first_audio_from = None;
                        self.event(events, now, EventKind::FirstAudio { position: start });
                    } else {
                        self.first_audio_from = Some(start);
                    }
                }
                VoiceCommand::SynthesisComplete { end } => self.drain_ok_at = end,
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
                    self.clearing = Some((fence, restore));
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

    fn apply_clip(&mut self, cmd: ClipCommand, now: SampleTime, events: &mut EventOut<'_>) {
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
    fn release(&mut self, clip: Arc<[f32]>) {
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

    fn interrupt(&mut self, fence: u64, now: SampleTime, events: &mut EventOut<'_>) {
        let mut tail_frames = 0;
        if let Some(tail) = self.tail {
            // A tail is already playing: keep it as it is; only move the fence.
            self.skip_until = self.skip_until.max(fence);
            let after_tail = self.consumed + tail.remaining();
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
        let silent = matches!(self.pause, PauseState::Paused | PauseState::RampDown { .. });
        if !silent {
            tail_frames = pending.min(u64::from(self.fade_frames));
        }
        self.skip_until = self.skip_until.max(fence);
        if tail_frames > 0 {
            self.tail = Some(Tail::new(tail_frames));
        } else {
            self.discard_to(self.skip_until);
        }
        // Paused audio is discarded without a tail; the next turn must not
        // start frozen.
        self.pause = PauseState::Playing;
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

    fn after_interrupt(&mut self, fence: u64) {
        self.first_audio_from = Some(fence);
        self.drain_ok_at = fence;
        self.starved = false;
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
            self.update_speaking(n, filled, now, events);
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
            self.update_speaking(n, filled, now, events);
            filled
        };
        let active = self.mix_background(scratch, bg, n, filled, now, events);
        if active > 0 && !self.direct_muted {
            let len = active * ch;
            self.saturation.add_into(&mut out[..len], &scratch[..len]);
        }
        self.publish();
    }

    /// Fills `scratch[..filled]` with speech; returns `filled`. The rest of
    /// the block is left for silence.
    fn render_speech(
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
            self.account(filled, take, now, events);
            filled += take;
        }
        filled
    }

    /// Books `take` frames played from the ring, starting `filled` frames
    /// into the block: counters and the turn's first-audio event.
    fn account(&mut self, filled: usize, take: usize, now: SampleTime, events: &mut EventOut<'_>) {
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
                    EventKind::FirstAudio { position },
                );
            }
        }
        self.turn_played += end.saturating_sub(start.max(self.turn_start));
        self.played += take as u64;
        self.consumed = end;
    }

    /// No tail, no ramp, nothing to skip and audible: the samples pass
    /// through at unity gain.
    fn steady(&self) -> bool {
        self.tail.is_none()
            && self.pause == PauseState::Playing
            && self.consumed >= self.skip_until
            && !self.direct_muted
            && self.background_gain.steady()
            && self.clearing.is_none()
    }

    /// The background gain the duck is heading for.
    fn duck_target(&self) -> f32 {
        match self.duck {
            Some(duck) if self.speaking => duck.gain,
            _ => 1.0,
        }
    }

    /// Copies the next `frames` speech frames into `scratch` and consumes them.
    fn copy_speech(&mut self, scratch: &mut [f32], frames: usize) {
        let len = frames * self.channels;
        if let Ok(chunk) = self.speech_rx.read_chunk(len) {
            let (a, b) = chunk.as_slices();
            scratch[..a.len()].copy_from_slice(a);
            scratch[a.len()..len].copy_from_slice(b);
            chunk.commit_all();
        }
    }

    /// The steady case in one pass: `filled` speech frames and whatever
    /// background there is — the ring's, or a clip at least a block long
    /// at a steady gain (see [`Voice::clip_is_direct`]) — go straight from
    /// memory into `out`, saturated, with no copy in between.
    fn mix_direct(
        &mut self,
        out: &mut [f32],
        n: usize,
        filled: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) {
        let ch = self.channels;
        let Ok(speech) = self.speech_rx.read_chunk(filled * ch) else {
            return;
        };
        let duck = self.duck_gain.value();
        if let Some(p) = self.clip.as_mut() {
            let len = p.clip.len() / ch * ch;
            let first = (len - p.pos).min(n * ch);
            let second = n * ch - first;
            mix_sources(
                &mut out[..n * ch],
                speech.as_slices(),
                (&p.clip[p.pos..p.pos + first], &p.clip[..second]),
                p.gain.value() * duck,
                self.saturation,
            );
            p.pos += first;
            if p.pos == len {
                let kind = p.wrap(second);
                let at = now.plus((first / ch) as u64);
                events.push(self.session, self.generation, at, kind);
            }
        } else {
            let take = n.min(self.background_rx.slots() / ch);
            let Ok(background) = self.background_rx.read_chunk(take * ch) else {
                return;
            };
            mix_sources(
                &mut out[..filled.max(take) * ch],
                speech.as_slices(),
                background.as_slices(),
                self.background_gain.value() * duck,
                self.saturation,
            );
            background.commit_all();
            self.background_frames += take as u64;
        }
        speech.commit_all();
    }

    /// Whether the playing clip, if any, can be mixed in one pass: steady
    /// gain, at least a block long, and no ring background beside it.
    fn clip_is_direct(&self, n: usize) -> bool {
        self.clip.as_ref().is_none_or(|p| {
            p.gain.steady()
                && !p.stopping
                && !p.armed
                && p.clip.len() / self.channels >= n
                && self.background_rx.slots() < self.channels
        })
    }

    fn update_speaking(
        &mut self,
        n: usize,
        filled: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) {
        let block_end = now.plus(n as u64);
        if filled > 0 {
            self.speaking = true;
            self.starved = false;
            self.last_real_end = now.plus(filled as u64);
        }
        let queued = self.speech_rx.slots() >= self.channels || self.tail.is_some();
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
                        position: self.consumed,
                    },
                );
            }
        }
    }

    /// Adds the background (ring and clip, ducked) under the speech in
    /// `scratch`; returns frames touched. `bg` is work space.
    fn mix_background(
        &mut self,
        scratch: &mut [f32],
        bg: &mut [f32],
        n: usize,
        filled: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) -> usize {
        let ch = self.channels;
        let hold = std::mem::take(&mut self.duck_hold).min(n);
        if hold == 0 {
            self.retarget_duck();
        }
        let ring = self.ring_background(bg, n);
        let clip = self.clip_background(bg, n, ring, now, events);
        let frames = ring.max(clip);
        if frames == 0 {
            self.duck_gain.skip(hold);
            self.retarget_duck();
            self.duck_gain.skip(n - hold);
            return filled;
        }
        if frames > filled {
            scratch[filled * ch..frames * ch].fill(0.0);
        }
        let dst = &mut scratch[..frames * ch];
        let src = &bg[..frames * ch];
        if hold == 0 && self.duck_gain.steady() {
            let g = self.duck_gain.value();
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s * g;
            }
        } else {
            for (k, (d, s)) in dst
                .chunks_exact_mut(ch)
                .zip(src.chunks_exact(ch))
                .enumerate()
            {
                if k == hold {
                    self.retarget_duck();
                }
                let g = self.duck_gain.next();
                d.iter_mut().zip(s).for_each(|(d, s)| *d += s * g);
            }
            if hold >= frames {
                self.duck_gain.skip(hold - frames);
                self.retarget_duck();
                self.duck_gain.skip(n - hold);
            } else {
                self.duck_gain.skip(n - frames);
            }
            self.duck_gain.settle();
        }
        frames.max(filled)
    }

    /// Points the duck at the gain the speaking state calls for.
    fn retarget_duck(&mut self) {
        let target = self.duck_target();
        if target != self.duck_gain.target() {
            let from = self.duck_gain.value();
            let step = self.duck.map_or(1.0, |d| d.step(from, target));
            self.duck_gain.head_at(target, step);
        }
    }

    /// Writes the background ring's next frames, at the background gain,
    /// into `bg`; returns how many.
    fn ring_background(&mut self, bg: &mut [f32], n: usize) -> usize {
        let ch = self.channels;
        if let Some((fence, restore)) = self.clearing {
            if self.background_gain.value() == 0.0 {
                // Ramped out: drop what is left before the fence.
                let want = fence.saturating_sub(self.background_frames);
                let k = want.min((self.background_rx.slots() / ch) as u64) as usize;
                if let Ok(chunk) = self.background_rx.read_chunk(k * ch) {
                    chunk.commit_all();
                    self.background_frames += k as u64;
                }
                self.background_gain = Ramp::new(restore);
                self.clearing = None;
            }
        }
        let mut take = n.min(self.background_rx.slots() / ch);
        if let Some((fence, _)) = self.clearing {
            // Audio pushed after the clear waits for the ramp to end.
            take = take.min(fence.saturating_sub(self.background_frames) as usize);
        }
        let chunk = match self.background_rx.read_chunk(take * ch) {
            Ok(chunk) if take > 0 => chunk,
            _ => {
                self.background_gain.skip(n);
                return 0;
            }
        };
        let (a, b) = chunk.as_slices();
        let dst = &mut bg[..take * ch];
        let gain = &mut self.background_gain;
        if gain.steady() {
            let g = gain.value();
            // Two plain loops, one per ring slice, so both vectorise.
            let (da, db) = dst.split_at_mut(a.len());
            da.iter_mut().zip(a).for_each(|(d, s)| *d = s * g);
            db.iter_mut().zip(b).for_each(|(d, s)| *d = s * g);
        } else {
            for (frame, src) in dst.chunks_exact_mut(ch).zip(FramePairs::new(a, b, ch)) {
                let g = gain.next();
                frame.iter_mut().zip(src).for_each(|(d, s)| *d = s * g);
            }
            gain.skip(n - take);
            gain.settle();
        }
        chunk.commit_all();
        self.background_frames += take as u64;
        take
    }

    /// Adds the playing clip's next frames into `bg`, whose first `ring`
    /// frames are already written; returns frames the clip produced.
    fn clip_background(
        &mut self,
        bg: &mut [f32],
        n: usize,
        ring: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) -> usize {
        let ch = self.channels;
        let (session, generation) = (self.session, self.generation);
        let Some(p) = self.clip.as_mut() else {
            return 0;
        };
        let mut k = 0;
        let mut ended = None;
        if p.armed {
            if p.stopping {
                ended = Some(true);
            } else if ring == n {
                // The ring still plays the first pass.
                return 0;
            } else {
                // The ring ran dry at frame `ring`: the second pass starts there.
                p.armed = false;
                k = ring;
                let kind = p.wrap(0);
                events.push(session, generation, now.plus(k as u64), kind);
            }
        }
        if ring < n {
            bg[ring * ch..n * ch].fill(0.0);
        }
        let len = p.clip.len() / ch * ch;
        while k < n && ended.is_none() {
            // Up to the clip's end, so the wrap is sample-contiguous.
            let m = ((len - p.pos) / ch).min(n - k);
            let src = &p.clip[p.pos..p.pos + m * ch];
            let dst = &mut bg[k * ch..(k + m) * ch];
            if p.gain.steady() {
                let g = p.gain.value();
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s * g);
            } else {
                for (d, s) in dst.chunks_exact_mut(ch).zip(src.chunks_exact(ch)) {
                    let g = p.gain.next();
                    d.iter_mut().zip(s).for_each(|(d, s)| *d += s * g);
                }
                p.gain.settle();
            }
            p.pos += m * ch;
            k += m;
            if p.stopping && p.gain.steady() {
                ended = Some(true);
                break;
            }
            if p.pos >= len {
                if !p.looping {
                    ended = Some(false);
                    break;
                }
                let kind = p.wrap(0);
                events.push(session, generation, now.plus(k as u64), kind);
            }
        }
        if let Some(stopped) = ended {
            if let Some(p) = self.clip.take() {
                let kind = EventKind::ClipEnded { id: p.id, stopped };
                events.push(session, generation, now.plus(k as u64), kind);
                self.release(p.clip);
            }
        }
        k
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

/// Iterates the frames of a ring chunk split in two slices.
struct FramePairs<'a> {
    a: std::slice::ChunksExact<'a, f32>,
    b: std::slice::ChunksExact<'a, f32>,
}

impl<'a> FramePairs<'a> {
    fn new(a: &'a [f32], b: &'a [f32], ch: usize) -> Self {
        Self {
            a: a.chunks_exact(ch),
            b: b.chunks_exact(ch),
        }
    }
}

impl<'a> Iterator for FramePairs<'a> {
    type Item = &'a [f32];
    fn next(&mut self) -> Option<Self::Item> {
        self.a.next().or_else(|| self.b.next())
    }
}

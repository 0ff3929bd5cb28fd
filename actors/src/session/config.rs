//! How a session is set up: its config, the ducking of its background,
//! and the conversion to its voice's config. Control side.

use std::time::Duration;

use sotto_rt::{DuckConfig, Saturation, SessionId};

use crate::frames::FrameLength;

use crate::ingest::InputFormat;

/// Background ducking under speech: the background drops by `depth_db`
/// while the session speaks, through ramps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Duck {
    /// Gain change while speaking, in dB (negative; default −12).
    pub depth_db: f32,
    /// Ramp down when speech starts (default 50 ms).
    pub down: Duration,
    /// Ramp back up after speech stops (default 250 ms).
    pub up: Duration,
}

impl Default for Duck {
    fn default() -> Self {
        Self {
            depth_db: -12.0,
            down: Duration::from_millis(50),
            up: Duration::from_millis(250),
        }
    }
}

impl Duck {
    fn validate(&self) -> Result<(), String> {
        if !(-120.0..=0.0).contains(&self.depth_db) {
            return Err(format!(
                "duck depth {} dB must be within -120..=0",
                self.depth_db
            ));
        }
        if self.down > Duration::from_secs(10) || self.up > Duration::from_secs(10) {
            return Err("duck ramps must be at most 10 s".into());
        }
        Ok(())
    }

    /// The voice's form of it at `rate`.
    pub(super) fn voice(&self, rate: u32) -> DuckConfig {
        let frames = |d: Duration| frames_of(d, rate).clamp(1, u64::from(u32::MAX)) as u32;
        DuckConfig {
            gain: 10f32.powf(self.depth_db / 20.0),
            down_frames: frames(self.down),
            up_frames: frames(self.up),
        }
    }
}

/// What to pass to `Engine::create_session`: the session's input format,
/// output, fades and limits. Durations convert to frames at the output rate.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A name for events and traces.
    pub name: String,
    /// Format of pushed speech and background bytes.
    pub input: InputFormat,
    /// Speech queue bound (SPEC O2); default 1 s.
    pub queue: Duration,
    /// Background queue bound; default 1 s.
    pub background_queue: Duration,
    /// Fade tail limit on interrupt (SPEC O5); default 0.4 s.
    pub fade: Duration,
    /// Speaking grace period (SPEC O7); default 0.2 s.
    pub grace: Duration,
    /// Pause and resume ramps (SPEC O6); default 5 ms.
    pub pause_ramp: Duration,
    /// Background ducking under speech; off by default.
    pub duck: Option<Duck>,
    /// Linear background gain.
    pub background_gain: f32,
    /// Ramp of every background volume change; default 20 ms.
    pub gain_ramp: Duration,
    /// How speech + background is kept inside full scale.
    pub saturation: Saturation,
    /// Where the session's audio goes (SPEC C1): by default an output of
    /// its own, read as frames, that also plays into the main mix.
    pub output: SessionOutput,
}

/// Where a session renders (SPEC C1). Every session renders into exactly
/// one output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SessionOutput {
    /// An output of the session's own: a call.
    Own(OutputConfig),
    /// The engine's main mix only (the device, the offline render).
    Main,
    /// A shared output several sessions mix into, made by the application
    /// (a room mix); the session renders on that output's shard.
    Shared(SharedOutputId),
}

impl Default for SessionOutput {
    fn default() -> Self {
        Self::Own(OutputConfig::default())
    }
}

impl SessionOutput {
    /// The session's own output, if it has one.
    #[must_use]
    pub fn own(&self) -> Option<OutputConfig> {
        match self {
            Self::Own(o) => Some(*o),
            Self::Main | Self::Shared(_) => None,
        }
    }
}

/// A shared output's number, given by `Engine::create_output`: put it in
/// `SessionOutput::Shared` to join a session to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedOutputId(pub(crate) u32);

/// How a shared output is set up (SPEC C1): like an own output, and a name.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedOutputConfig {
    /// A name for traces.
    pub name: String,
    /// Its frames and bound, and whether it also plays into the main mix
    /// (off by default: a room mix goes to its room).
    pub output: OutputConfig,
}

impl Default for SharedOutputConfig {
    fn default() -> Self {
        Self {
            name: "room".into(),
            output: OutputConfig {
                also_main: false,
                ..OutputConfig::default()
            },
        }
    }
}

/// A session's own output: what its frames look like and how far a slow
/// reader may fall behind (SPEC C1–C3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputConfig {
    /// Frame length; 20 ms by default.
    pub frame: FrameLength,
    /// How much a reader may lag before its oldest frames are dropped
    /// (counted); 200 ms by default.
    pub bound: Duration,
    /// Also play into the engine's main output (the device, the offline
    /// render), so it stays the sum of every session; on by default.
    pub also_main: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            frame: FrameLength::default(),
            bound: Duration::from_millis(200),
            also_main: true,
        }
    }
}

impl SessionConfig {
    /// How much audio may wait for room in the queue, per input, beyond
    /// the ring: a caller that never awaits its pushes cannot grow memory
    /// past it.
    pub const MAX_WAITING: std::time::Duration = MAX_WAITING;
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            name: "session".into(),
            input: InputFormat {
                sample_rate: 24_000,
                channels: 1,
                sample_format: crate::SampleFormat::S16,
            },
            queue: Duration::from_millis(1000),
            background_queue: Duration::from_millis(1000),
            fade: Duration::from_millis(400),
            grace: Duration::from_millis(200),
            pause_ramp: Duration::from_millis(5),
            duck: None,
            background_gain: 1.0,
            gain_ramp: Duration::from_millis(20),
            saturation: Saturation::Hard,
            output: SessionOutput::default(),
        }
    }
}

impl SessionConfig {
    /// Checks every duration and gain is in range; the message names the field.
    ///
    /// # Errors
    /// A message naming the value out of range.
    pub fn validate(&self) -> Result<(), String> {
        let hour = Duration::from_secs(3600);
        let max_queue = Duration::from_secs(600);
        if self.queue.is_zero() || self.queue > max_queue {
            return Err(format!("queue {:?} must be within (0, 600 s]", self.queue));
        }
        if self.background_queue.is_zero() || self.background_queue > max_queue {
            return Err(format!(
                "background queue {:?} must be within (0, 600 s]",
                self.background_queue
            ));
        }
        if self.fade > hour || self.grace > hour || self.pause_ramp > Duration::from_secs(1) {
            return Err("fade, grace or pause ramp is absurdly long".into());
        }
        if !(0.0..=4.0).contains(&self.background_gain) {
            return Err(format!(
                "background gain {} must be within 0..=4",
                self.background_gain
            ));
        }
        if let Some(duck) = &self.duck {
            duck.validate()?;
        }
        if self.gain_ramp > Duration::from_secs(10) {
            return Err("gain ramp must be at most 10 s".into());
        }
        if let Some(o) = self.output.own() {
            o.validate()?;
        }
        Ok(())
    }
}

impl OutputConfig {
    /// Checks the bound holds at least a frame and at most 10 s.
    ///
    /// # Errors
    /// A message naming the bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.bound < self.frame.duration() || self.bound > Duration::from_secs(10) {
            return Err(format!(
                "output bound {:?} must be within one frame ({:?}) and 10 s",
                self.bound,
                self.frame.duration()
            ));
        }
        Ok(())
    }
}

pub use sotto_rt::frames_of;

/// Largest decode buffer a session keeps between pushes (256 KiB).
pub(super) const MAX_KEPT_DECODE_SAMPLES: usize = 64 * 1024;

/// How much audio may wait for room in a session's queue, per input,
/// beyond the ring. A caller that awaits its pushes never gets near it; one
/// that never awaits cannot grow memory past it.
pub const MAX_WAITING: std::time::Duration = std::time::Duration::from_secs(300);

/// A shared output's slot in the renderer: after every session's own.
#[must_use]
pub fn shared_output_id(
    renderer: &sotto_rt::RendererConfig,
    id: SharedOutputId,
) -> sotto_rt::OutputId {
    sotto_rt::OutputId((renderer.max_sessions as u32).saturating_add(id.0))
}

/// A fade tail limit in frames at `rate`, as the voice and the sinks take it.
pub(super) fn fade_frames(fade: Duration, rate: u32) -> u32 {
    frames_of(fade, rate).min(u64::from(u32::MAX)) as u32
}

/// Converts a session's config to its voice's config.
#[must_use]
pub fn voice_config(
    c: &SessionConfig,
    renderer: &sotto_rt::RendererConfig,
    session: SessionId,
    generation: u32,
    doorbells: &sotto_rt::Doorbells,
) -> sotto_rt::VoiceConfig {
    let rate = renderer.sample_rate;
    let frames = |d: Duration| frames_of(d, rate);
    sotto_rt::VoiceConfig {
        session,
        generation,
        channels: renderer.channels,
        speech_capacity_frames: frames(c.queue).max(1) as usize,
        background_capacity_frames: frames(c.background_queue).max(1) as usize,
        command_capacity: 256,
        fade_frames: fade_frames(c.fade, rate),
        grace_frames: frames(c.grace).min(u64::from(u32::MAX)) as u32,
        pause_ramp_frames: frames(c.pause_ramp).clamp(1, u64::from(u32::MAX)) as u32,
        duck: c.duck.map(|d| d.voice(rate)),
        background_gain: c.background_gain,
        gain_ramp_frames: frames(c.gain_ramp).clamp(1, u64::from(u32::MAX)) as u32,
        saturation: c.saturation,
        doorbells: Some(doorbells.clone()),
        output: match c.output {
            SessionOutput::Own(_) => Some(sotto_rt::OutputId(session.slot())),
            SessionOutput::Main => None,
            SessionOutput::Shared(id) => Some(shared_output_id(renderer, id)),
        },
    }
}

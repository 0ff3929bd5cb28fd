//! How an engine is set up: its clock and its config, checked before
//! anything starts.

use std::time::Duration;

use sotto_rt::Saturation;

use super::*;

/// Who drives the renderer: the application (offline, for tests and
/// files), a real-time thread, or a sound card.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Clock {
    /// Rendered on request by [`Engine::render`], as fast as possible; deterministic.
    #[default]
    Offline,
    /// A real-time thread named `sotto-audio`; keeps up to `capture` of the
    /// output for [`Engine::take_captured`].
    Virtual {
        /// How much output to keep (`None`: discard).
        capture: Option<Duration>,
        /// Wait for [`Engine::run_clock`] before rendering the first block.
        deferred: bool,
    },
    /// A sound card: the renderer runs in the device's callback (SPEC D2).
    /// When the device cannot be opened the engine runs on the virtual
    /// clock instead and says why ([`Engine::device_fallback`]).
    Device {
        /// The device's name (see `sotto devices`); `None`: the default.
        name: Option<String>,
        /// Play silence until [`Engine::run_clock`].
        deferred: bool,
    },
}

/// What to pass to [`Engine::start`]: the rate, channels, clock and limits
/// of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Output rate in Hz (8 kHz to 192 kHz).
    pub sample_rate: u32,
    /// Output channels (1 to 8).
    pub channels: usize,
    /// Frames per render block.
    pub block_frames: usize,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// The driver.
    pub clock: Clock,
    /// How the master sum is kept inside full scale.
    pub saturation: Saturation,
    /// Render shards on the virtual clock (SPEC C4): real-time threads
    /// `sotto-audio-K`, 1 to 64, by default one per available core. The
    /// device and offline clocks render on one.
    pub render_threads: usize,
    /// When a new call may be set up (SPEC S4): see [`Engine::admit`].
    ///
    /// [`Engine::admit`]: crate::Engine::admit
    pub admission: crate::AdmissionConfig,
}

impl EngineConfig {
    /// One render thread per core the process may use, at least one: the
    /// default of [`EngineConfig::render_threads`].
    #[must_use]
    pub fn default_render_threads() -> usize {
        default_render_threads()
    }
}

/// One render thread per core the process may use, at least one.
pub(crate) fn default_render_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sample_rate: 24_000,
            channels: 1,
            block_frames: 480,
            max_sessions: 64,
            clock: Clock::Offline,
            saturation: Saturation::Hard,
            render_threads: default_render_threads(),
            admission: crate::AdmissionConfig::default(),
        }
    }
}

/// How long [`Engine::shutdown`] may take.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

pub(super) fn validate(c: &EngineConfig) -> Result<(), EngineError> {
    if !(8_000..=192_000).contains(&c.sample_rate) {
        return Err(EngineError::Config(format!(
            "sample rate {} Hz is outside 8000..=192000",
            c.sample_rate
        )));
    }
    if !(1..=8).contains(&c.channels) {
        return Err(EngineError::Config(format!(
            "{} channels is outside 1..=8",
            c.channels
        )));
    }
    if c.block_frames == 0 || c.block_frames > c.sample_rate as usize {
        return Err(EngineError::Config(format!(
            "block of {} frames must be within 1..=1 s",
            c.block_frames
        )));
    }
    if c.max_sessions == 0 || c.max_sessions > 65_536 {
        return Err(EngineError::Config(format!(
            "max_sessions {} is outside 1..=65536",
            c.max_sessions
        )));
    }
    c.admission.check().map_err(EngineError::Config)?;
    if !(1..=64).contains(&c.render_threads) {
        return Err(EngineError::Config(format!(
            "render_threads {} is outside 1..=64",
            c.render_threads
        )));
    }
    Ok(())
}

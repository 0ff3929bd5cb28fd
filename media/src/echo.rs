//! Echo cancellation (SPEC D4) with the WebRTC audio processing module:
//! echo cancellation, noise suppression, high-pass filter and automatic
//! gain control, each switchable, on 10 ms chunks at 48 kHz.
//!
//! The module takes locks inside, so it never runs in a device callback:
//! the live path feeds it from a processing thread, and `sotto
//! echo-cancel` feeds it recorded files through the same [`EchoPath`].

use webrtc_audio_processing::{
    Config, EchoCancellation, EchoCancellationSuppressionLevel, GainControl, GainControlMode,
    InitializationConfig, NoiseSuppression, NoiseSuppressionLevel, Processor,
};

/// The module's rate.
pub const RATE: u32 = 48_000;
/// Samples in one 10 ms mono chunk at [`RATE`].
pub const CHUNK: usize = 480;

/// What to pass to `Engine::open_input` or a call to cancel echo: which
/// stages run (all on by default) and the stream delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoConfig {
    /// Acoustic echo cancellation.
    pub echo_cancellation: bool,
    /// Noise suppression.
    pub noise_suppression: bool,
    /// High-pass filter.
    pub high_pass: bool,
    /// Automatic gain control.
    pub gain_control: bool,
    /// Time from a sample leaving the renderer to its echo reaching the
    /// module's capture input, in ms: output plus input latency.
    pub delay_ms: u32,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            echo_cancellation: true,
            noise_suppression: true,
            high_pass: true,
            gain_control: true,
            delay_ms: 0,
        }
    }
}

/// Why the processing module failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("echo processing failed: {0}")]
pub struct EchoError(String);

impl EchoError {
    /// An error for `reason`.
    #[must_use]
    pub fn new(reason: String) -> Self {
        Self(reason)
    }
}

/// Mono 48 kHz far-end (what was rendered) and microphone frames in, the
/// cleaned microphone out.
pub struct EchoPath {
    processor: Processor,
    config: EchoConfig,
    /// The module finds the delay itself (a call's far end, whose delay
    /// nobody here can measure).
    find_delay: bool,
}

impl std::fmt::Debug for EchoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoPath")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EchoPath {
    /// A processing module with `config`'s stages.
    ///
    /// # Errors
    /// [`EchoError`] if the module cannot be created.
    pub fn new(config: EchoConfig) -> Result<Self, EchoError> {
        let init = InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            ..InitializationConfig::default()
        };
        let processor = Processor::new(&init).map_err(|e| EchoError(e.to_string()))?;
        let mut path = Self {
            processor,
            config,
            find_delay: false,
        };
        path.apply();
        Ok(path)
    }

    /// A processing module for an echo whose delay is not known and may
    /// change (a call's far end: the network, its jitter buffer, its
    /// device): the module estimates the delay from the two streams, with
    /// `config.delay_ms` as its first guess. Its residual suppression is
    /// the module's lowest, so that a caller talking over the agent comes
    /// through (the echo is still cut by 50 dB and more, see the call echo
    /// test).
    ///
    /// # Errors
    /// [`EchoError`] if the module cannot be created.
    pub fn finding_delay(config: EchoConfig) -> Result<Self, EchoError> {
        let mut path = Self::new(config)?;
        path.find_delay = true;
        path.apply();
        Ok(path)
    }

    fn apply(&mut self) {
        let c = self.config;
        self.processor.set_config(Config {
            echo_cancellation: c.echo_cancellation.then_some(EchoCancellation {
                suppression_level: if self.find_delay {
                    EchoCancellationSuppressionLevel::Low
                } else {
                    EchoCancellationSuppressionLevel::High
                },
                enable_extended_filter: true,
                enable_delay_agnostic: self.find_delay,
                stream_delay_ms: Some(c.delay_ms.min(500) as i32),
            }),
            noise_suppression: c.noise_suppression.then_some(NoiseSuppression {
                suppression_level: NoiseSuppressionLevel::High,
            }),
            gain_control: c.gain_control.then_some(GainControl {
                mode: GainControlMode::AdaptiveDigital,
                target_level_dbfs: 3,
                compression_gain_db: 9,
                enable_limiter: true,
            }),
            enable_high_pass_filter: c.high_pass,
            ..Config::default()
        });
    }

    /// Updates the stream delay (it is measured continuously live).
    pub fn set_delay_ms(&mut self, delay_ms: u32) {
        if delay_ms != self.config.delay_ms {
            self.config.delay_ms = delay_ms;
            self.apply();
        }
    }

    /// Processes one 10 ms pair: `far` is what the output rendered, `mic`
    /// what was captured at the same time; `mic` is cleaned in place.
    ///
    /// # Errors
    /// [`EchoError`] when a chunk is not [`CHUNK`] samples or the module fails.
    pub fn process(&mut self, far: &[f32], mic: &mut [f32]) -> Result<(), EchoError> {
        self.process_render(far)?;
        self.process_capture(mic)
    }

    /// Gives the module 10 ms of what the output rendered (the reverse
    /// stream), at the time the output rendered it.
    ///
    /// # Errors
    /// [`EchoError`] when the chunk is not [`CHUNK`] samples or the module fails.
    pub fn process_render(&mut self, far: &[f32]) -> Result<(), EchoError> {
        check_len(far.len())?;
        // The module filters its input in place; the caller's copy stays.
        let mut render = [0.0f32; CHUNK];
        render.copy_from_slice(far);
        self.processor
            .process_render_frame(&mut render)
            .map_err(|e| EchoError(e.to_string()))
    }

    /// Cleans 10 ms of microphone audio in place.
    ///
    /// # Errors
    /// [`EchoError`] when the chunk is not [`CHUNK`] samples or the module fails.
    pub fn process_capture(&mut self, mic: &mut [f32]) -> Result<(), EchoError> {
        check_len(mic.len())?;
        self.processor
            .process_capture_frame(mic)
            .map_err(|e| EchoError(e.to_string()))
    }

    /// The stream delay in use, in ms.
    #[must_use]
    pub fn delay_ms(&self) -> u32 {
        self.config.delay_ms
    }

    /// Runs whole recordings through the path, 10 ms at a time; the
    /// output is as long as `mic` (a partial last frame is padded).
    ///
    /// # Errors
    /// As [`EchoPath::process`].
    pub fn process_all(&mut self, far: &[f32], mic: &[f32]) -> Result<Vec<f32>, EchoError> {
        let mut out = Vec::with_capacity(mic.len() + CHUNK);
        let mut f = [0.0f32; CHUNK];
        let mut m = [0.0f32; CHUNK];
        for (k, chunk) in mic.chunks(CHUNK).enumerate() {
            f.fill(0.0);
            let at = k * CHUNK;
            if at < far.len() {
                let n = (far.len() - at).min(CHUNK);
                f[..n].copy_from_slice(&far[at..at + n]);
            }
            m.fill(0.0);
            m[..chunk.len()].copy_from_slice(chunk);
            self.process(&f, &mut m)?;
            out.extend_from_slice(&m[..chunk.len()]);
        }
        Ok(out)
    }
}

fn check_len(n: usize) -> Result<(), EchoError> {
    if n == CHUNK {
        Ok(())
    } else {
        Err(EchoError(format!(
            "chunks must be {CHUNK} samples, got {n}"
        )))
    }
}

/// Echo return loss enhancement in dB: how much quieter `out` is than
/// `mic` (both echo only).
#[must_use]
pub fn erle_db(mic: &[f32], out: &[f32]) -> f64 {
    let power = |s: &[f32]| s.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
    10.0 * (power(mic) / power(out).max(1e-20)).log10()
}

//! Tee sinks (SPEC O12): every accepted chunk of a session's speech is
//! handed to its sinks as it is ingested. Runs in the session actor.

use std::fmt;

/// Why a sink gave up; the session detaches it and plays on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// A receiver of a session's ingested speech.
pub trait AudioSink: Send + 'static {
    /// A short name for events and traces.
    fn name(&self) -> &str;

    /// True if this sink publishes the voice itself (an avatar link): the
    /// session's direct output is silent while one is attached.
    fn publishes_voice(&self) -> bool {
        false
    }

    /// Takes one chunk of interleaved f32 frames at the output format.
    ///
    /// # Errors
    /// Any [`SinkError`] detaches the sink.
    fn write(&mut self, frames: &[f32], sample_rate: u32, channels: usize)
        -> Result<(), SinkError>;

    /// The turn was interrupted: drop what is buffered.
    fn interrupt(&mut self) {}

    /// The synthesis of the turn is complete.
    fn segment_end(&mut self) {}
}

impl fmt::Debug for dyn AudioSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioSink")
            .field("name", &self.name())
            .finish()
    }
}

/// A sink that keeps everything in memory, shared with whoever holds a clone.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    name: String,
    publishes_voice: bool,
    inner: std::sync::Arc<std::sync::Mutex<RecorderLog>>,
}

/// What a [`Recorder`] saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecorderLog {
    /// Every frame written.
    pub frames: Vec<f32>,
    /// Interrupts seen.
    pub interrupts: usize,
    /// Segment ends seen.
    pub segment_ends: usize,
}

impl Recorder {
    /// A recorder named `name`; `publishes_voice` makes it act as an avatar link.
    #[must_use]
    pub fn new(name: &str, publishes_voice: bool) -> Self {
        Self {
            name: name.to_owned(),
            publishes_voice,
            inner: Default::default(),
        }
    }

    /// A copy of what was recorded.
    #[must_use]
    pub fn log(&self) -> RecorderLog {
        self.inner.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl AudioSink for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn publishes_voice(&self) -> bool {
        self.publishes_voice
    }

    fn write(&mut self, frames: &[f32], _: u32, _: usize) -> Result<(), SinkError> {
        let mut log = self
            .inner
            .lock()
            .map_err(|_| SinkError("recorder poisoned".into()))?;
        log.frames.extend_from_slice(frames);
        Ok(())
    }

    fn interrupt(&mut self) {
        if let Ok(mut log) = self.inner.lock() {
            log.interrupts += 1;
        }
    }

    fn segment_end(&mut self) {
        if let Ok(mut log) = self.inner.lock() {
            log.segment_ends += 1;
        }
    }
}

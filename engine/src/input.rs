//! A microphone: a sound card's input stream cut into 10 ms chunks,
//! optionally through echo cancellation.

use sotto_actors::capture::input::DeviceInput as Capture;

use crate::{CaptureChunk, EchoStats, EngineError, InputConfig};

/// A running input stream (SPEC D3): 10 ms [`CaptureChunk`]s through a
/// bounded queue, cleaned by echo cancellation when opened with it through
/// [`Engine::open_input`](crate::Engine::open_input). Dropping it stops the
/// stream.
pub struct DeviceInput(Capture);

impl std::fmt::Debug for DeviceInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInput")
            .field("device", &self.0.name())
            .finish_non_exhaustive()
    }
}

impl DeviceInput {
    /// Opens an input stream without an engine and without echo
    /// cancellation: the device's chunks as they are.
    ///
    /// # Errors
    /// [`EngineError::NoDevice`], [`EngineError::DeviceFormat`] or
    /// [`EngineError::DeviceStream`], naming the device.
    pub fn open(config: &InputConfig) -> Result<Self, EngineError> {
        Ok(Self(Capture::open(config)?))
    }

    pub(crate) fn new(capture: Capture) -> Self {
        Self(capture)
    }

    /// The next 10 ms chunk, waiting for it.
    pub async fn next_chunk(&mut self) -> CaptureChunk {
        self.0.next_chunk().await
    }

    /// The next 10 ms chunk if one is queued.
    pub fn try_chunk(&mut self) -> Option<CaptureChunk> {
        self.0.try_chunk()
    }

    /// 10 ms chunks dropped because the reader lagged.
    #[must_use]
    pub fn dropped_chunks(&self) -> u64 {
        self.0.dropped_chunks()
    }

    /// What the echo cancellation has done so far, when it runs.
    #[must_use]
    pub fn echo_stats(&self) -> Option<&EchoStats> {
        self.0.echo_stats()
    }

    /// Errors the host reported on this stream.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.0.errors()
    }

    /// Allocations or frees inside the capture callback (counted with the
    /// `rt-audit` feature; SPEC R1 says zero).
    #[must_use]
    pub fn alloc_violations(&self) -> u64 {
        self.0.alloc_violations()
    }

    /// The device's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.0.name()
    }
}

//! The offline driver: renders as fast as possible, block by block, and
//! lets every actor settle between blocks, so the same messages at the same
//! sample times give the same bytes (SPEC R3).

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use sotto_rt::{Renderer, SampleTime, Telemetry};

use super::guarded_render;
use crate::pump::{send_pump, PumpMsg};
use crate::quiesce::{Quiescence, SettleTimeout};

/// How long actors may take to settle between two blocks before the render fails.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Owns the renderer and renders on request.
#[derive(Debug)]
pub struct OfflineDriver {
    renderer: Renderer,
    telemetry: Arc<Telemetry>,
    pump: ActorRef<PumpMsg>,
    quiesce: Arc<Quiescence>,
    block: Vec<f32>,
    block_frames: usize,
    channels: usize,
}

impl OfflineDriver {
    /// A driver rendering blocks of `block_frames`.
    #[must_use]
    pub fn new(
        renderer: Renderer,
        telemetry: Arc<Telemetry>,
        pump: ActorRef<PumpMsg>,
        quiesce: Arc<Quiescence>,
        block_frames: usize,
    ) -> Self {
        let channels = renderer.config().channels;
        let block_frames = block_frames.clamp(1, renderer.config().max_block_frames);
        Self {
            renderer,
            telemetry,
            pump,
            quiesce,
            block: vec![0.0; block_frames * channels],
            block_frames,
            channels,
        }
    }

    /// The sample clock.
    #[must_use]
    pub fn clock(&self) -> SampleTime {
        self.renderer.clock()
    }

    /// Waits until every actor has handled what was sent to it.
    ///
    /// # Errors
    /// [`SettleTimeout`] if an actor is stuck.
    pub async fn settle(&self) -> Result<(), SettleTimeout> {
        self.quiesce.settle(SETTLE_LIMIT).await
    }

    /// Renders `frames` more frames, appending them to `out` (interleaved).
    ///
    /// # Errors
    /// [`SettleTimeout`] if an actor is stuck.
    pub async fn render(&mut self, frames: u64, out: &mut Vec<f32>) -> Result<(), SettleTimeout> {
        let mut left = frames;
        while left > 0 {
            let n = (self.block_frames as u64).min(left) as usize;
            self.quiesce.settle(SETTLE_LIMIT).await?;
            let buf = &mut self.block[..n * self.channels];
            guarded_render(&mut self.renderer, buf, &self.telemetry);
            out.extend_from_slice(buf);
            send_pump(&self.pump, &self.quiesce, PumpMsg::Pump(None));
            self.quiesce.settle(SETTLE_LIMIT).await?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Gives the renderer back.
    #[must_use]
    pub fn into_renderer(self) -> Renderer {
        self.renderer
    }
}

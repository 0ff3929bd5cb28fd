//! Rendering on the offline clock, and what the virtual clock captured:
//! the calls that move the sample clock from the caller's side.

use std::time::Duration;

use sotto_actors::device_manager::DeviceMsg;

use super::*;

impl Engine {
    /// Renders `frames` frames on the offline clock and returns them
    /// (interleaved). Every message sent before the call is applied first.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] on the virtual clock; [`EngineError::Stuck`].
    pub async fn render(&self, frames: u64) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::with_capacity(frames as usize * self.inner.config.channels);
        self.render_into(frames, &mut out).await?;
        Ok(out)
    }

    /// Like [`Engine::render`], appending to `out`.
    ///
    /// # Errors
    /// As [`Engine::render`].
    pub async fn render_into(&self, frames: u64, out: &mut Vec<f32>) -> Result<(), EngineError> {
        // A render waiting for the driver counts as rendering: waits that
        // need the clock to move see it coming.
        let _rendering = self.inner.offline.as_ref().map(|p| p.rendering());
        let mut driver = self.inner.driver.lock().await;
        match &mut *driver {
            Driver::Offline(d) => Ok(d.render(frames, out).await?),
            Driver::Virtual { .. } | Driver::Device { .. } => {
                Err(EngineError::WrongClock("offline"))
            }
            Driver::Stopped => Err(EngineError::Stopped),
        }
    }

    /// Renders `d` of output on the offline clock.
    ///
    /// # Errors
    /// As [`Engine::render`].
    pub async fn render_for(&self, d: Duration) -> Result<Vec<f32>, EngineError> {
        self.render(sotto_actors::session::frames_of(
            d,
            self.inner.config.sample_rate,
        ))
        .await
    }

    /// Waits until every actor has handled every message sent so far.
    ///
    /// # Errors
    /// [`EngineError::Stuck`].
    pub async fn settle(&self) -> Result<(), EngineError> {
        Ok(self
            .inner
            .quiesce
            .settle(sotto_actors::driver::offline::SETTLE_LIMIT)
            .await?)
    }

    /// Starts a deferred virtual clock (see [`Clock::Virtual`]).
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] on the offline clock.
    pub async fn run_clock(&self) -> Result<(), EngineError> {
        match &*self.inner.driver.lock().await {
            Driver::Virtual { clock, .. } => {
                clock.run();
                Ok(())
            }
            Driver::Device { manager, .. } => {
                ractor::call!(manager, DeviceMsg::Run).map_err(|_| EngineError::Stopped)
            }
            Driver::Offline(_) => Err(EngineError::WrongClock("virtual")),
            Driver::Stopped => Err(EngineError::Stopped),
        }
    }

    /// Takes the output captured so far on the virtual clock.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] on the offline clock.
    pub async fn take_captured(&self) -> Result<Vec<f32>, EngineError> {
        let mut driver = self.inner.driver.lock().await;
        match &mut *driver {
            Driver::Virtual { capture, .. } => {
                let mut out = Vec::new();
                if let Some(rx) = capture {
                    let n = rx.slots();
                    if let Ok(chunk) = rx.read_chunk(n) {
                        let (a, b) = chunk.as_slices();
                        out.extend_from_slice(a);
                        out.extend_from_slice(b);
                        chunk.commit_all();
                    }
                }
                Ok(out)
            }
            Driver::Offline(_) | Driver::Device { .. } => Err(EngineError::WrongClock("virtual")),
            Driver::Stopped => Err(EngineError::Stopped),
        }
    }
}

//! Shared outputs (SPEC C1): room mixes made, read and removed by id.

use std::sync::Arc;

use sotto_actors::supervisor::SupervisorMsg;

use super::{Engine, EngineError};
use crate::frames::{OutputFrames, Owner};
use crate::{SessionError, SharedOutputId};

impl Engine {
    /// Makes a shared output (SPEC C1): a room mix that sessions join with
    /// [`SessionOutput::Shared`](crate::SessionOutput) and the id returned;
    /// its sum is saturated like the main mix, and read as frames with
    /// [`Engine::output_frames`]. It renders on the least loaded shard, or
    /// on shard 0 when it also plays into the main mix (`config.also_main`).
    /// `name` names it in logs.
    ///
    /// # Errors
    /// [`EngineError::Create`] for a bad bound or no free output slot (one
    /// per session slot); [`EngineError::Stopped`] after shutdown.
    pub async fn create_output(
        &self,
        name: &str,
        config: crate::OutputConfig,
    ) -> Result<SharedOutputId, EngineError> {
        self.running()?;
        let config = sotto_actors::SharedOutputConfig {
            name: name.to_owned(),
            output: config,
        };
        let shared = self
            .ask_supervisor(|reply| SupervisorMsg::CreateOutput(config, reply))
            .await??;
        let id = shared.id;
        let mut outputs = lock(&self.inner.outputs);
        outputs.retain(|(other, _)| *other != id);
        outputs.push((id, shared));
        Ok(id)
    }

    /// A shared output's frames; one reader at a time.
    ///
    /// # Errors
    /// [`SessionError::Taken`] when a reader already has them;
    /// [`SessionError::Closed`] when the output was removed.
    pub fn output_frames(&self, output: SharedOutputId) -> Result<OutputFrames, SessionError> {
        let shared = lock(&self.inner.outputs)
            .iter()
            .find(|(id, _)| *id == output)
            .map(|(_, shared)| Arc::clone(shared))
            .ok_or(SessionError::Closed)?;
        let framer = shared.take_framer().ok_or(SessionError::Taken)?;
        Ok(OutputFrames::new(
            framer,
            Arc::clone(&self.inner.rendered),
            self.inner.offline.is_some(),
            Owner::Shared(shared),
        ))
    }

    /// Removes a shared output. Its reader gets what was rendered, then
    /// [`SessionError::Closed`](crate::SessionError); sessions still in it
    /// play on, heard by nobody, until they are removed.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] after shutdown.
    pub async fn remove_output(&self, output: SharedOutputId) -> Result<(), EngineError> {
        lock(&self.inner.outputs).retain(|(id, _)| *id != output);
        self.ask_supervisor(|reply| SupervisorMsg::RemoveOutput(output, reply))
            .await
    }
}

/// The shared outputs' list, even after a panic elsewhere held it (a
/// panicking holder leaves it consistent: every change is one push or
/// retain).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! Attaching an avatar link to a session (SPEC A1–A7, O12).

use std::sync::atomic::Ordering;

use ractor::ActorStatus;

use super::*;
use crate::handle::SessionHandle;

impl Engine {
    /// Connects `session` to an avatar (SPEC O12, A2): its speech streams
    /// to the avatar, which publishes the voice, and the session's own
    /// output is silent until the link is detached or drops.
    ///
    /// # Errors
    /// [`EngineError::AvatarRefused`] when the avatar server answers with
    /// an HTTP error (401 for a bad token); [`EngineError::AvatarConfig`]
    /// for no dispatcher or room; [`EngineError::AvatarUnreachable`] when
    /// the connection cannot be made.
    pub async fn attach_avatar(
        &self,
        session: &SessionHandle,
        config: crate::LinkConfig,
    ) -> Result<crate::AvatarHandle, EngineError> {
        self.running()?;
        let handle = crate::AvatarHandle::attach(
            session,
            config,
            self.inner.config.sample_rate,
            self.inner.config.channels,
        )
        .await?;
        let link = handle.link().clone();
        if let Ok(mut links) = self.inner.links.lock() {
            links.retain(|l| {
                !matches!(l.get_status(), ActorStatus::Stopping | ActorStatus::Stopped)
            });
            links.push(link.clone());
        }
        // Shutdown may have taken the list between the check and the push.
        if self.inner.stopped.load(Ordering::Acquire) {
            link.stop(None);
            return Err(EngineError::Stopped);
        }
        Ok(handle)
    }
}

//! The background source handle (SPEC B1–B7).

use ractor::{ActorRef, RpcReplyPort};
use sotto_actors::background::LoaderMsg;

use crate::EngineError;
use sotto_actors::SessionEvent;
use tokio::sync::{mpsc, oneshot};

use crate::SessionHandle;

/// Starts, stops and sets the volume of one background source of a
/// session. Cheap to clone.
///
/// Its events ([`SessionEventKind::BackgroundStarted`] and the other
/// `Background*` kinds) arrive on the session's event stream, named by
/// [`BackgroundHandle::id`].
///
/// [`SessionEventKind::BackgroundStarted`]: crate::SessionEventKind::BackgroundStarted
#[derive(Clone)]
pub struct BackgroundHandle {
    id: u32,
    loader: ActorRef<LoaderMsg>,
    session: SessionHandle,
}

impl std::fmt::Debug for BackgroundHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundHandle")
            .field("id", &self.id)
            .field("session", &self.session.id())
            .finish()
    }
}

impl BackgroundHandle {
    pub(crate) fn new(id: u32, loader: ActorRef<LoaderMsg>, session: SessionHandle) -> Self {
        Self {
            id,
            loader,
            session,
        }
    }

    /// Names this source in session events.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    async fn request<T>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> LoaderMsg,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.loader
            .cast(msg(tx.into()))
            .map_err(|_| EngineError::BackgroundClosed)?;
        rx.await.map_err(|_| EngineError::BackgroundClosed)
    }

    /// Opens the file and starts playing it; a no-op while it plays.
    /// Returns once the file's headers are read and the first audio is on
    /// its way, or with the reason it cannot play (also sent as a
    /// `BackgroundError` event).
    ///
    /// # Errors
    /// [`EngineError::NoSuchFile`], [`EngineError::EmptyFile`],
    /// [`EngineError::Unsupported`], [`EngineError::Corrupt`] and the like for a file that cannot play,
    /// or [`EngineError::BackgroundClosed`].
    pub async fn start(&self) -> Result<(), EngineError> {
        Ok(self.request(LoaderMsg::Start).await??)
    }

    /// Stops at once, releasing the decoder, the decoded cache and whatever
    /// is queued. The audio ramps out in a few milliseconds, without a click.
    ///
    /// # Errors
    /// [`EngineError::BackgroundClosed`].
    pub async fn stop(&self) -> Result<(), EngineError> {
        self.request(LoaderMsg::Stop).await
    }

    /// Changes the volume (0..=2) through a ramp.
    ///
    /// # Errors
    /// [`EngineError::Volume`] or [`EngineError::BackgroundClosed`].
    pub async fn set_volume(&self, volume: f32) -> Result<(), EngineError> {
        Ok(self
            .request(|tx| LoaderMsg::SetVolume(volume, tx))
            .await??)
    }

    /// The session's events; this source's carry its id.
    #[must_use]
    pub fn events(&self) -> mpsc::Receiver<SessionEvent> {
        self.session.events()
    }

    /// Fault injection for supervision tests: the loader panics.
    ///
    /// # Errors
    /// [`EngineError::BackgroundClosed`].
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self) -> Result<(), EngineError> {
        self.loader
            .cast(LoaderMsg::Panic)
            .map_err(|_| EngineError::BackgroundClosed)
    }
}

//! The agent side of an avatar link, on a session (SPEC O12, A2–A4).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorRef, SpawnErr};
use sotto_actors::avatar_link::{
    AvatarLink, AvatarTee, LinkArgs, LinkConfig, LinkError, LinkMsg, LinkStats,
};
use sotto_actors::session::{SessionMsg, SessionShared};

use crate::engine::EngineError;
use crate::handle::SessionHandle;

/// Links made so far: each sink gets its own name.
static LINKS: AtomicU64 = AtomicU64::new(1);

/// A session's avatar link. While it is up, the session's direct output is
/// silent and the avatar publishes the voice; every counter and event of
/// the session keeps working, and the avatar's acknowledgements arrive as
/// session events.
#[derive(Debug)]
pub struct AvatarHandle {
    link: ActorRef<LinkMsg>,
    session: Arc<SessionShared>,
    name: String,
    alive: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
}

impl AvatarHandle {
    /// Connects `session` to the avatar behind `config`'s dispatcher.
    pub(crate) async fn attach(
        session: &SessionHandle,
        config: LinkConfig,
        sample_rate: u32,
        channels: usize,
    ) -> Result<Self, EngineError> {
        let shared = Arc::clone(session.shared());
        let name = format!(
            "avatar:{}#{}",
            config.participant_id,
            LINKS.fetch_add(1, Ordering::Relaxed)
        );
        let alive = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LinkStats::default());
        let args = LinkArgs {
            config,
            session: Arc::clone(&shared),
            sink_name: name.clone(),
            sample_rate,
            channels,
            alive: Arc::clone(&alive),
            stats: Arc::clone(&stats),
        };
        let (link, _) = Actor::spawn(None, AvatarLink, args)
            .await
            .map_err(|e| match e {
                SpawnErr::StartupFailed(inner) => match inner.downcast::<LinkError>() {
                    Ok(link) => EngineError::from(*link),
                    Err(other) => EngineError::Start {
                        what: "avatar link",
                        reason: other.to_string(),
                    },
                },
                other => EngineError::Start {
                    what: "avatar link",
                    reason: other.to_string(),
                },
            })?;
        let tee = AvatarTee::new(
            name.clone(),
            link.clone(),
            Arc::clone(&alive),
            Arc::clone(&stats),
            u64::from(sample_rate) * channels as u64,
            shared.config.queue,
        );
        if shared.send(SessionMsg::AddSink(Box::new(tee))).is_err() {
            link.stop(None);
            return Err(EngineError::Stopped);
        }
        Ok(Self {
            link,
            session: shared,
            name,
            alive,
            stats,
        })
    }

    /// Fault injection for supervision tests: the link actor panics while
    /// handling a message.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] when the link is gone.
    #[doc(hidden)]
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self) -> Result<(), EngineError> {
        self.link
            .send_message(LinkMsg::Panic)
            .map_err(|_| EngineError::Stopped)
    }

    /// The link actor.
    pub(crate) fn link(&self) -> &ActorRef<LinkMsg> {
        &self.link
    }

    /// Whether the link is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The link's counters now.
    #[must_use]
    pub fn stats(&self) -> crate::LinkStats {
        crate::LinkStats::read(&self.stats)
    }

    /// Waits until every segment ended so far is acknowledged, cut or
    /// given up on, for at most `limit`.
    pub async fn wait_idle(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.stats.idle() && self.is_connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Takes the avatar off: the session's own output plays again. A new
    /// link can be attached afterwards.
    pub fn detach(self) {
        self.alive.store(false, Ordering::Release);
        let _ = self.session.send(SessionMsg::RemoveSink {
            name: self.name.clone(),
            reason: None,
        });
        self.link.stop(None);
    }
}

//! The in-process avatar a scenario attaches: its server, its links, and
//! the offline render's lockstep with it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sotto::EngineError;
use sotto::LinkConfig;
use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink};
use sotto_avatar::sink::{FileSink, MemorySink};
use sotto_server::avatar::{AvatarServer, ServerConfig};
use sotto_server::token;

use super::{Run, ScenarioError};

/// Longest wait, offline, for the in-process avatar to catch up with the
/// render before a block; past it (a chunk lost on the unreliable channel)
/// the render goes on.
const AVATAR_LOCKSTEP: Duration = Duration::from_secs(2);

impl Run {
    /// A link to the in-process avatar server on loopback, started at the
    /// first attach; the avatar writes `voice.wav` and `video.y4m` into
    /// the step's `path` when it has one.
    pub(super) async fn avatar_link(
        &mut self,
        path: Option<&str>,
    ) -> Result<LinkConfig, ScenarioError> {
        let out = path.map(PathBuf::from);
        if self.avatar_server.is_none() {
            let secret = format!("scenario-{}", std::process::id());
            let rate = self.engine.config().sample_rate;
            let channels = self.engine.config().channels;
            let config = ServerConfig {
                secret: secret.clone(),
                fps: 25,
                cooldown: Duration::from_millis(300),
                stereo: false,
                renderer: Arc::new(|| Box::new(FaceRenderer::default()) as Box<dyn AvatarRenderer>),
                // The avatar plays in the render's time (SPEC R3): offline
                // it is driven, and waited for, block by block.
                publish: None,
                clock: Some({
                    let engine = self.engine.clone();
                    Arc::new(move || engine.clock().0)
                }),
                sink: Arc::new(move |_| match &out {
                    Some(dir) => match FileSink::create(dir, rate, channels as u16, 25) {
                        Ok(f) => Box::new(f) as Box<dyn AvatarSink>,
                        Err(e) => {
                            tracing::warn!(error = %e, "avatar output folder; keeping nothing");
                            Box::new(MemorySink::new(channels))
                        }
                    },
                    None => Box::new(MemorySink::new(channels)),
                }),
            };
            let server = AvatarServer::start(([127, 0, 0, 1], 0).into(), config)
                .await
                .map_err(|e| {
                    ScenarioError::Engine(EngineError::Start {
                        what: "avatar server",
                        reason: e.to_string(),
                    })
                })?;
            self.avatar_server = Some((server, secret));
        }
        let Some((server, secret)) = &self.avatar_server else {
            unreachable!("started above");
        };
        let creds = token::create("sotto", secret, None, token::DEFAULT_TTL)
            .map_err(|e| ScenarioError::Engine(EngineError::Config(e.to_string())))?;
        Ok(LinkConfig::new(
            &server.join_url(),
            "scenario",
            &creds.token,
            &creds.participant_id,
        ))
    }

    /// Takes a link off, keeping its counts for [`Run::avatar_lockstep`].
    pub(super) fn retire(&mut self, avatar: sotto::AvatarHandle) {
        let s = avatar.stats();
        self.retired[0] += s.bytes_sent / 2;
        self.retired[1] += s.control_sent;
        self.retired[2] += s.acks_handled;
        avatar.detach();
    }

    /// Offline, waits until the in-process avatar has caught up with the
    /// render (SPEC R3: exact and deterministic with an avatar too): every
    /// link has sent all it was handed, every PCM sample and control
    /// message it sent has arrived and been
    /// handled, every playout has played up to the sample clock, and every
    /// acknowledgement it sent has been handled by its link. Returns at
    /// once on a real-time clock or without an avatar; gives up after
    /// [`AVATAR_LOCKSTEP`] (audio lost on the unreliable channel, a peer
    /// gone) and from then on does not wait again.
    pub(super) async fn avatar_lockstep(&self) {
        let Some((server, _)) = &self.avatar_server else {
            return;
        };
        if !self.offline || self.lockstep_off.load(Ordering::Relaxed) {
            return;
        }
        // The sessions first: what they hand their links is counted there.
        let _ = self.engine.settle().await;
        let now = self.engine.clock().0;
        let deadline = tokio::time::Instant::now() + AVATAR_LOCKSTEP;
        loop {
            let mut sent = self.retired;
            let mut unsent = 0;
            for a in self.avatars.values() {
                let s = a.stats();
                unsent += s.backlog + s.control_backlog;
                sent[0] += s.bytes_sent / 2;
                sent[1] += s.control_sent;
                sent[2] += s.acks_handled;
            }
            let s = server.stats();
            let settled = unsent == 0
                && s.pcm_arrived >= sent[0]
                && s.control_arrived >= sent[1]
                && sent[2] >= s.acks_sent
                && server.clocked_playouts() >= self.avatars.len()
                && server.caught_up(now);
            if settled {
                // What the acknowledgements set off reaches the sessions.
                let _ = self.engine.settle().await;
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    at = now,
                    "the avatar did not catch up with the offline render; not waiting for it again"
                );
                self.lockstep_off.store(true, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

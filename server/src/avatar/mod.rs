//! The avatar server (SPEC A2, A5–A7): an HTTP dispatcher that verifies the
//! agent's token and answers its WebRTC offer, then runs each connection's
//! task (`connection.rs`) and, when it publishes, its viewers' routes
//! ([`viewers`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::oneshot;
use webrtc::peer_connection::RTCSessionDescription;

use crate::token;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink, Playout, PlayoutConfig};
use sotto_avatar::publish::{PublishConfig, Publisher, PublisherSink};
use sotto_avatar::sink::BothSinks;
use viewers::{Published, ViewersConfig};

use crate::accept::{serve_limited, ServerLimits};

mod connection;
mod feeds;
#[cfg(feature = "test-routes")]
mod reports;
pub mod viewers;
use sotto_media::vp8::Vp8Config;
use sotto_net::avatar::{JoinRequest, JoinResponse, MAX_JOIN_BODY};
use sotto_net::peer::{complete_local, loopback_peer};

/// Makes a renderer for each connection.
pub type RendererFactory = Arc<dyn Fn() -> Box<dyn AvatarRenderer> + Send + Sync>;
/// Makes a sink for each connection.
pub type SinkFactory = Arc<dyn Fn(&JoinRequest) -> Box<dyn AvatarSink> + Send + Sync>;
/// A sample clock at the agents' rate, for an avatar in the agent's own
/// process: `sotto render` hands it the engine's, so the avatar plays in
/// the render's time, offline as fast as the render goes.
pub type SampleClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How the avatar server runs.
#[derive(Clone)]
pub struct ServerConfig {
    /// The secret tokens are signed with.
    pub secret: String,
    /// Video frames per second.
    pub fps: u32,
    /// Audio dropped after an interrupt (SPEC A5).
    pub cooldown: Duration,
    /// Play mono agents' voices as stereo (SPEC A5); sinks then get two
    /// channels.
    pub stereo: bool,
    /// A renderer per connection.
    pub renderer: RendererFactory,
    /// A sink per connection.
    pub sink: SinkFactory,
    /// Pace every playout by this clock instead of the wall clock: one
    /// tick per 20 ms of it, the interrupt cooldown counted on it too.
    /// `None` (a server of its own): the wall clock.
    pub clock: Option<SampleClock>,
    /// Publish each avatar's voice and face to WebRTC viewers (SPEC W5;
    /// see [`viewers`]); `None`: nobody can watch.
    pub publish: Option<ViewersConfig>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("fps", &self.fps)
            .field("cooldown", &self.cooldown)
            .finish_non_exhaustive()
    }
}

crate::stats::counters! {
    /// What the server counted, readable while it runs.
    ServerStats / Counters {
        /// Joins refused for a bad request or token (no peer connection made).
        refused,
        /// Joins refused because `max_peers` were live (503).
        busy,
        /// Peers torn down because they did not connect in time.
        never_connected,
        /// HTTP connections closed at once because `max_connections` were open.
        connections_refused,
        /// Of those, closed because `max_connections_per_client` were open
        /// from one client.
        client_refused,
        /// Joins and viewers set up for a client that had gone before the
        /// answer, and torn down at once.
        abandoned,
        /// Peer connections made.
        peers,
        /// Connections whose task has ended.
        ended,
        /// Messages ignored: malformed, oversized or on the wrong channel.
        malformed,
        /// Interrupts handled.
        resets,
        /// Samples dropped in an interrupt's cooldown.
        cooldown_dropped,
        /// PCM samples that arrived on audio channels and were handled, those
        /// a cooldown dropped included.
        pcm_arrived,
        /// Messages that arrived on control channels and were handled.
        control_arrived,
        /// Acknowledgements sent.
        acks_sent,
        /// Viewers taken.
        viewers,
        /// Viewers refused (a bad offer or token, no such avatar, full).
        viewers_refused,
    }
}

/// A running avatar server.
#[derive(Debug)]
pub struct AvatarServer {
    addr: SocketAddr,
    stats: Arc<Counters>,
    shared: Arc<AvatarServerState>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for AvatarServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvatarServerState").finish_non_exhaustive()
    }
}

pub(crate) struct AvatarServerState {
    pub(crate) config: ServerConfig,
    pub(crate) limits: ServerLimits,
    pub(crate) stats: Arc<Counters>,
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: Faults,
    /// Where each connected playout has got to on [`ServerConfig::clock`].
    pub(crate) progress: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
    /// The avatars viewers can watch now.
    pub(crate) avatars: std::sync::Mutex<Vec<Published>>,
    /// Reports test pages posted, by avatar.
    #[cfg(feature = "test-routes")]
    pub(crate) reports: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
}

/// Faults the tests inject.
#[cfg(feature = "fault-injection")]
#[derive(Default)]
pub(crate) struct Faults {
    /// Segment ends still to ignore, as if lost.
    pub(crate) lose_segment_ends: std::sync::atomic::AtomicU32,
    /// Every live connection, to drop them all.
    pub(crate) peers: std::sync::Mutex<Vec<sotto_net::Peer>>,
}

impl AvatarServer {
    /// Listens on `addr` (port 0: any free port) and serves `POST /join`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr, config: ServerConfig) -> std::io::Result<Self> {
        Self::start_with_limits(addr, config, ServerLimits::default()).await
    }

    /// [`AvatarServer::start`] with caps of its own.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start_with_limits(
        addr: SocketAddr,
        config: ServerConfig,
        limits: ServerLimits,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Counters::default());
        let shared = Arc::new(AvatarServerState {
            config,
            limits,
            stats: Arc::clone(&stats),
            #[cfg(feature = "fault-injection")]
            faults: Faults::default(),
            progress: std::sync::Mutex::default(),
            avatars: std::sync::Mutex::default(),
            #[cfg(feature = "test-routes")]
            reports: std::sync::Mutex::default(),
        });
        let mut app = Router::new().route("/join", post(join));
        if shared.config.publish.is_some() {
            app = app.merge(viewers::routes());
            #[cfg(feature = "test-routes")]
            {
                app = app.merge(reports::routes());
            }
        }
        let app = app.with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let counted = Arc::clone(&stats);
        let refused = move |why| {
            counted.connections_refused.fetch_add(1, Ordering::Relaxed);
            if why == crate::accept::Crowded::Client {
                counted.client_refused.fetch_add(1, Ordering::Relaxed);
            }
        };
        tokio::spawn(serve_limited(listener, app, limits, refused, stopped));
        Ok(Self {
            addr,
            stats,
            shared,
            stop: Some(stop),
        })
    }

    /// Fault injection: the next `n` segment ends are ignored, as if lost.
    #[cfg(feature = "fault-injection")]
    pub fn inject_lost_segment_ends(&self, n: u32) {
        self.shared
            .faults
            .lose_segment_ends
            .store(n, Ordering::Relaxed);
    }

    /// Fault injection: every connection drops, as if the avatar vanished.
    #[cfg(feature = "fault-injection")]
    pub async fn disconnect_all(&self) {
        let peers = self
            .shared
            .faults
            .peers
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for pc in peers {
            let _ = pc.close().await;
        }
    }

    /// Whether every connected playout has played up to `samples` of
    /// [`ServerConfig::clock`] (always, without one). With the counters of
    /// [`AvatarServer::stats`] this lets a render in the same process wait
    /// for the avatar before its clock moves on.
    #[must_use]
    pub fn caught_up(&self, samples: u64) -> bool {
        self.shared
            .progress
            .lock()
            .map(|p| p.iter().all(|at| at.load(Ordering::Acquire) >= samples))
            .unwrap_or(true)
    }

    /// Connections playing on [`ServerConfig::clock`] now.
    #[must_use]
    pub fn clocked_playouts(&self) -> usize {
        self.shared.progress.lock().map_or(0, |p| p.len())
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page a person watches the avatars from (with
    /// [`ServerConfig::publish`]).
    #[must_use]
    pub fn watch_url(&self) -> String {
        format!("http://{}/watch", self.addr)
    }

    /// Ids of the avatars viewers can watch now (as their paths name
    /// them: `/avatars/{id}/viewers`), oldest first.
    #[must_use]
    pub fn published(&self) -> Vec<String> {
        self.shared
            .avatars
            .lock()
            .map(|a| a.iter().map(|p| p.id.clone()).collect())
            .unwrap_or_default()
    }

    /// Avatar `id`'s publisher, while it plays.
    #[must_use]
    pub fn publisher(&self, id: &str) -> Option<Publisher> {
        let avatars = self.shared.avatars.lock().ok()?;
        avatars
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.publisher.clone())
    }

    /// The dispatcher URL agents post to.
    #[must_use]
    pub fn join_url(&self) -> String {
        format!("http://{}/join", self.addr)
    }

    /// Its counters.
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        self.stats.snapshot()
    }
}

impl Drop for AvatarServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `POST /join` (SPEC A2, S1, S2): 415 for a body that is not JSON, 413
/// past [`MAX_JOIN_BODY`] (on its declared length, before any of it is
/// read), 408 for one too slow, 400 for a number or name out of bounds or
/// an offer that can never connect and 401 for a bad token, all before
/// anything is made; 503 past `max_peers`.
///
/// The peer is set up in a task of its own: an agent that goes before its
/// answer leaves nothing behind.
async fn join(
    State(shared): State<Arc<AvatarServerState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let refused = |code: StatusCode, why: &str| {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        crate::http::refuse(code, why)
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a join is application/json",
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_JOIN_BODY as u64) {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "the join is too long");
    }
    let bytes = match crate::http::read_body(body, MAX_JOIN_BODY, &shared.limits).await {
        Ok(b) => b,
        Err(r) => return refused(r.code, &r.why),
    };
    let req: JoinRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(_) => return refused(StatusCode::BAD_REQUEST, "not a join request"),
    };
    if let Err(e) = req.validate() {
        return refused(StatusCode::BAD_REQUEST, &e.to_string());
    }
    if let Err(e) = token::verify_for(
        &req.token,
        &shared.config.secret,
        &req.participant_id,
        &req.room_name,
    ) {
        return refused(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let rules = sotto_net::sdp::OfferRules {
        opus_audio: false,
        loopback: true,
    };
    let offer = match sotto_net::sdp::vet_offer(&req.offer, rules) {
        Ok(v) => {
            sotto_net::sdp::log_dropped(v.dropped);
            v.sdp
        }
        Err(why) => return refused(StatusCode::BAD_REQUEST, &format!("bad offer: {why}")),
    };
    let live =
        shared.stats.peers.load(Ordering::Relaxed) - shared.stats.ended.load(Ordering::Relaxed);
    if live >= shared.limits.max_peers as u64 {
        shared.stats.busy.fetch_add(1, Ordering::Relaxed);
        return crate::http::refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many avatar connections; try again later",
        );
    }
    let (answered, answer) = oneshot::channel();
    tokio::spawn(set_up(Arc::clone(&shared), req, offer, answered));
    match answer.await {
        Ok(Ok(answer)) => Json(JoinResponse { answer }).into_response(),
        Ok(Err((code, why))) => crate::http::refuse(code, &why),
        Err(_) => crate::http::refuse(StatusCode::INTERNAL_SERVER_ERROR, "the join was lost"),
    }
}

/// Sets up the peer for a join and answers on `answered`; with nobody
/// there to take the answer, closes it again.
async fn set_up(
    shared: Arc<AvatarServerState>,
    req: JoinRequest,
    offer: String,
    answered: oneshot::Sender<Result<String, (StatusCode, String)>>,
) {
    let renderer = (shared.config.renderer)();
    let published = match &shared.config.publish {
        Some(publishing) => match publisher_for(&req, publishing, &shared.config, &*renderer) {
            Ok(p) => Some(p),
            Err(e) => {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = answered.send(Err(e));
                return;
            }
        },
        None => None,
    };
    let Ok(offer) = RTCSessionDescription::offer(offer) else {
        let _ = answered.send(Err((StatusCode::BAD_REQUEST, "bad offer: not SDP".into())));
        return;
    };
    let (pc, mut events) = match loopback_peer().await {
        Ok(p) => p,
        Err(e) => {
            let _ = answered.send(Err((StatusCode::INTERNAL_SERVER_ERROR, e.0)));
            return;
        }
    };
    shared.stats.peers.fetch_add(1, Ordering::Relaxed);
    let answer = async {
        pc.set_remote_description(offer)
            .await
            .map_err(|e| format!("bad offer: {e}"))?;
        let answer = pc.create_answer(None).await.map_err(|e| e.to_string())?;
        complete_local(&pc, &mut events, answer)
            .await
            .map_err(|e| e.0)
    }
    .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = pc.close().await;
            shared.stats.ended.fetch_add(1, Ordering::Relaxed);
            let _ = answered.send(Err((StatusCode::BAD_REQUEST, e)));
            return;
        }
    };
    let config = PlayoutConfig {
        sample_rate: req.sample_rate,
        channels: usize::from(req.channels.max(1)),
        fps: shared.config.fps,
        cooldown: shared.config.cooldown,
        stereo: shared.config.stereo,
        ..PlayoutConfig::default()
    };
    let mut sink = (shared.config.sink)(&req);
    let mut avatar = None;
    if let Some((publisher, publisher_sink)) = published {
        sink = Box::new(BothSinks(sink, Box::new(publisher_sink)));
        let id = crate::http::random_id();
        let feed = shared
            .config
            .publish
            .as_ref()
            .and_then(|p| p.rooms.as_ref())
            .zip(feeds::room_of(&req.room_name))
            .map(|(rooms, room)| {
                let (stop, stopped) = oneshot::channel();
                let config = sotto::RoomConfig {
                    room,
                    display: req.participant_id.clone(),
                    ..rooms.clone()
                };
                tokio::spawn(feeds::publish(publisher.clone(), config, stopped));
                stop
            });
        if let Ok(mut avatars) = shared.avatars.lock() {
            avatars.push(Published {
                id: id.clone(),
                participant_id: req.participant_id.clone(),
                room_name: req.room_name.clone(),
                publisher,
                viewers: Vec::new(),
                _feed: feed,
            });
        }
        avatar = Some(id);
    }
    // Viewers find the avatar from the moment its agent has the answer.
    if answered.send(Ok(answer)).is_err() {
        // The agent went before its answer: nobody will connect.
        let _ = pc.close().await;
        shared.stats.ended.fetch_add(1, Ordering::Relaxed);
        shared.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        unpublish(&shared, avatar).await;
        return;
    }
    let playout = Playout::new(config, renderer, sink);
    #[cfg(feature = "fault-injection")]
    if let Ok(mut peers) = shared.faults.peers.lock() {
        peers.push(Arc::clone(&pc));
    }
    connection::connection(pc, events, playout, Arc::clone(&shared)).await;
    unpublish(&shared, avatar).await;
}

/// Avatar `id` is gone: so are its viewers.
async fn unpublish(shared: &AvatarServerState, id: Option<String>) {
    let publisher = id.and_then(|id| {
        let mut avatars = shared.avatars.lock().ok()?;
        let k = avatars.iter().position(|a| a.id == id)?;
        Some(avatars.remove(k).publisher)
    });
    if let Some(p) = publisher {
        p.close().await;
    }
}

/// The publisher of an agent's avatar: its voice at the agent's rate and
/// channels (stereo when the server makes it so), its face at the
/// renderer's size. A voice Opus cannot take (22.05 or 44.1 kHz) is a 400:
/// the server was asked to publish and cannot.
fn publisher_for(
    req: &JoinRequest,
    publishing: &ViewersConfig,
    config: &ServerConfig,
    renderer: &dyn AvatarRenderer,
) -> Result<(Publisher, PublisherSink), (StatusCode, String)> {
    let (width, height) = renderer.size();
    let channels = match usize::from(req.channels.max(1)) {
        1 if config.stereo => 2,
        c => c,
    };
    Publisher::new(PublishConfig {
        video: Vp8Config {
            width,
            height,
            fps: config.fps,
            bitrate_kbps: publishing.video_bitrate_kbps,
            ..Vp8Config::default()
        },
        voice_rate: req.sample_rate,
        voice_channels: channels,
        voice_bitrate: publishing.voice_bitrate,
        max_viewers: publishing.max_viewers,
        ..PublishConfig::default()
    })
    .map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "this avatar is published, and its voice cannot be ({e}): \
                 send 8, 12, 16, 24 or 48 kHz"
            ),
        )
    })
}

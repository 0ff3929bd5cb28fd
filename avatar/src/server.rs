//! The avatar server (SPEC A2, A5–A7): an HTTP dispatcher that verifies the
//! agent's token and answers its WebRTC offer, then, per connection, a
//! task that turns data-channel messages into [`Playout`] input, ticks it
//! every 20 ms and sends the acknowledgements back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

use crate::playout::{AvatarRenderer, AvatarSink, Playout, PlayoutConfig};
use crate::publish::{PublishConfig, Publisher, PublisherSink};
use crate::sink::BothSinks;
use crate::token;
use crate::viewers::{Published, Publishing};
use sotto_net::avatar::{Control, JoinRequest, JoinResponse, CONTROL_LABEL, MAX_JOIN_BODY};
use sotto_net::peer::{complete_local, loopback_peer, Peer, PeerEvents};
use sotto_net::vp8::Vp8Config;

/// The voice track's frame period (SPEC A7).
const TICK: Duration = Duration::from_millis(20);
/// Messages waiting between the data channels and the playout.
const INBOX: usize = 4096;

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
    /// see [`crate::viewers`]); `None`: nobody can watch.
    pub publish: Option<Publishing>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("fps", &self.fps)
            .field("cooldown", &self.cooldown)
            .finish_non_exhaustive()
    }
}

/// Caps that keep one client from taking the server (SPEC S2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Live peer connections at most; a join past it is a 503.
    pub max_peers: usize,
    /// A peer not connected this long after its answer is torn down.
    pub connect_timeout: Duration,
    /// Open HTTP connections at most; one past it is closed at once.
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection is closed this long after it opened, whatever it is
    /// doing: one request (no keep-alive), body and answer included.
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_peers: 64,
            connect_timeout: Duration::from_secs(5),
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What the server counted, readable while it runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Joins refused for a bad request or token (no peer connection made).
    pub refused: AtomicU64,
    /// Joins refused because `max_peers` were live (503).
    pub busy: AtomicU64,
    /// Peers torn down because they did not connect in time.
    pub never_connected: AtomicU64,
    /// HTTP connections closed at once because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Peer connections made.
    pub peers: AtomicU64,
    /// Connections whose task has ended.
    pub ended: AtomicU64,
    /// Messages ignored: malformed, oversized or on the wrong channel.
    pub malformed: AtomicU64,
    /// Interrupts handled.
    pub resets: AtomicU64,
    /// Samples dropped in an interrupt's cooldown.
    pub cooldown_dropped: AtomicU64,
    /// PCM samples that arrived on audio channels and were handled, those
    /// a cooldown dropped included.
    pub pcm_arrived: AtomicU64,
    /// Messages that arrived on control channels and were handled.
    pub control_arrived: AtomicU64,
    /// Acknowledgements sent.
    pub acks_sent: AtomicU64,
    /// Viewers taken.
    pub viewers: AtomicU64,
    /// Viewers refused (a bad offer or token, no such avatar, full).
    pub viewers_refused: AtomicU64,
}

/// A running avatar server.
#[derive(Debug)]
pub struct AvatarServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    limits: ServerLimits,
    pub(crate) stats: Arc<ServerStats>,
    faults: Faults,
    /// Where each connected playout has got to on [`ServerConfig::clock`].
    progress: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
    /// The avatars viewers can watch now.
    pub(crate) avatars: std::sync::Mutex<Vec<Published>>,
    /// Avatars published so far: the next one's id.
    next_avatar: AtomicU64,
    /// Reports test pages posted, by avatar and viewer.
    pub(crate) reports: std::sync::Mutex<Vec<((u64, u64), bytes::Bytes)>>,
}

/// Faults the tests inject.
#[derive(Default)]
struct Faults {
    /// Segment ends still to ignore, as if lost.
    lose_segment_ends: std::sync::atomic::AtomicU32,
    /// Every live connection, to drop them all.
    peers: std::sync::Mutex<Vec<Peer>>,
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
        let stats = Arc::new(ServerStats::default());
        let shared = Arc::new(Shared {
            config,
            limits,
            stats: Arc::clone(&stats),
            faults: Faults::default(),
            progress: std::sync::Mutex::default(),
            avatars: std::sync::Mutex::default(),
            next_avatar: AtomicU64::new(1),
            reports: std::sync::Mutex::default(),
        });
        let mut app = Router::new().route(
            "/join",
            post(join).layer(DefaultBodyLimit::max(MAX_JOIN_BODY)),
        );
        if shared.config.publish.is_some() {
            app = app.merge(crate::viewers::routes());
        }
        let app = app.with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let counted = Arc::clone(&stats);
        let refused = move || {
            counted.connections_refused.fetch_add(1, Ordering::Relaxed);
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

    /// Ids of the avatars viewers can watch now, oldest first.
    #[must_use]
    pub fn published(&self) -> Vec<u64> {
        self.shared
            .avatars
            .lock()
            .map(|a| a.iter().map(|p| p.id).collect())
            .unwrap_or_default()
    }

    /// Avatar `id`'s publisher, while it plays.
    #[must_use]
    pub fn publisher(&self, id: u64) -> Option<Publisher> {
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
    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
    }
}

impl Drop for AvatarServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` on `listener` until `stopped`: at most `max_connections`
/// open (one past it is closed at once and `refused` told), each one
/// request with its header and total timeouts (SPEC S2). The avatar
/// dispatcher and the call server (`sotto serve`) both run on it.
pub async fn serve_limited(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    refused: impl Fn() + Send + 'static,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stopped => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or the like: let connections finish.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refused();
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.request_timeout, conn).await;
            drop(permit);
        });
    }
}

/// `POST /join` (SPEC A2, S1): 400 for a number or name out of bounds and
/// 401 for a bad token, both before anything is made; a body over
/// [`MAX_JOIN_BODY`] is refused (413) before it is read.
async fn join(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, (StatusCode, String)> {
    if let Err(e) = req.validate() {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Err((StatusCode::BAD_REQUEST, e.to_string()));
    }
    if let Err(e) = token::verify_for(
        &req.token,
        &shared.config.secret,
        &req.participant_id,
        &req.room_name,
    ) {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Err((StatusCode::UNAUTHORIZED, e.to_string()));
    }
    let live =
        shared.stats.peers.load(Ordering::Relaxed) - shared.stats.ended.load(Ordering::Relaxed);
    if live >= shared.limits.max_peers as u64 {
        shared.stats.busy.fetch_add(1, Ordering::Relaxed);
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "too many avatar connections; try again later".into(),
        ));
    }
    let renderer = (shared.config.renderer)();
    let published = match &shared.config.publish {
        Some(publishing) => Some(publisher_for(&req, publishing, &shared.config, &*renderer)?),
        None => None,
    };
    let bad = |code: StatusCode| move |e: String| (code, e);
    let offer = RTCSessionDescription::offer(req.offer.clone())
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad offer: {e}")))?;
    let (pc, mut events) = loopback_peer()
        .await
        .map_err(|e| e.0)
        .map_err(bad(StatusCode::INTERNAL_SERVER_ERROR))?;
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
            return Err((StatusCode::BAD_REQUEST, e));
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
        let id = shared.next_avatar.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut avatars) = shared.avatars.lock() {
            avatars.push(Published {
                id,
                participant_id: req.participant_id.clone(),
                room_name: req.room_name.clone(),
                publisher,
            });
        }
        avatar = Some(id);
    }
    let playout = Playout::new(config, renderer, sink);
    if let Ok(mut peers) = shared.faults.peers.lock() {
        peers.push(Arc::clone(&pc));
    }
    tokio::spawn(async move {
        connection(pc, events, playout, Arc::clone(&shared)).await;
        // The avatar is gone: so are its viewers.
        let publisher = avatar.and_then(|id| {
            let mut avatars = shared.avatars.lock().ok()?;
            let k = avatars.iter().position(|a| a.id == id)?;
            Some(avatars.remove(k).publisher)
        });
        if let Some(p) = publisher {
            p.close().await;
        }
    });
    Ok(Json(JoinResponse { answer }))
}

/// The publisher of an agent's avatar: its voice at the agent's rate and
/// channels (stereo when the server makes it so), its face at the
/// renderer's size. A voice Opus cannot take (22.05 or 44.1 kHz) is a 400:
/// the server was asked to publish and cannot.
fn publisher_for(
    req: &JoinRequest,
    publishing: &Publishing,
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

/// A data-channel message, tagged with its channel.
enum Inbound {
    Message {
        control: bool,
        text: bool,
        data: bytes::BytesMut,
    },
    Closed {
        control: bool,
    },
}

/// Reads one channel into the inbox until it closes.
async fn read_channel(channel: Arc<dyn DataChannel>, control: bool, inbox: mpsc::Sender<Inbound>) {
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnMessage(m) => {
                let msg = Inbound::Message {
                    control,
                    text: m.is_string,
                    data: m.data,
                };
                if inbox.send(msg).await.is_err() {
                    return;
                }
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    let _ = inbox.send(Inbound::Closed { control }).await;
}

/// One agent's connection: plays until the agent goes away.
async fn connection(pc: Peer, mut events: PeerEvents, mut playout: Playout, shared: Arc<Shared>) {
    let stats = Arc::clone(&shared.stats);
    let (inbox_tx, mut inbox) = mpsc::channel(INBOX);
    let mut control: Option<Arc<dyn DataChannel>> = None;
    // On a sample clock the loop looks at it every millisecond and plays
    // every tick it has passed; on the wall clock it ticks every 20 ms.
    let clock = shared.config.clock.clone();
    let mut tick = tokio::time::interval(if clock.is_some() {
        Duration::from_millis(1)
    } else {
        TICK
    });
    let rate = playout.sample_rate();
    let tick_frames = u64::from(rate / 50).max(1);
    let origin = Instant::now();
    let sample_now = |c: &SampleClock| origin + sotto_rt::duration_of(c(), rate);
    let mut ticked: Option<u64> = None;
    let progress = Arc::new(AtomicU64::new(0));
    let mut acks = Vec::new();
    let mut counted = playout.stats();
    // Until the agent connects nothing plays (no video is made for nobody)
    // and the peer is torn down when it does not connect in time.
    let mut connected = false;
    let give_up = tokio::time::sleep(shared.limits.connect_timeout);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            Some(channel) = events.channels.recv() => {
                // A channel only opens over a connection.
                connected = true;
                let is_control = channel.label().await.is_ok_and(|l| l == CONTROL_LABEL);
                if is_control {
                    control = Some(Arc::clone(&channel));
                }
                tokio::spawn(read_channel(channel, is_control, inbox_tx.clone()));
            }
            Some(inbound) = inbox.recv() => match inbound {
                Inbound::Message { control: on_control, text, data } => {
                    let now = clock.as_ref().map_or_else(Instant::now, sample_now);
                    if !(on_control && text && lost_segment_end(&shared, &data)) {
                        if let (Some(ack), Some(c)) = (playout.on_message(on_control, text, &data, now), &control) {
                            send_ack(c, ack, &stats).await;
                        }
                    }
                    if on_control {
                        stats.control_arrived.fetch_add(1, Ordering::Release);
                    } else {
                        stats.pcm_arrived.fetch_add(data.len() as u64 / 2, Ordering::Release);
                    }
                }
                // The agent closed its control channel: it is gone.
                Inbound::Closed { control: true } => break,
                Inbound::Closed { control: false } => {}
            },
            () = &mut give_up, if !connected => {
                stats.never_connected.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ = tick.tick() => {
                if !connected {
                    continue;
                }
                let seen = match &clock {
                    None => {
                        playout.tick(&mut acks);
                        None
                    }
                    Some(c) => {
                        let now = c();
                        let mut done = *ticked.get_or_insert_with(|| {
                            // Playing starts where the clock is now.
                            if let Ok(mut p) = shared.progress.lock() {
                                p.push(Arc::clone(&progress));
                            }
                            now / tick_frames
                        });
                        while (done + 1) * tick_frames <= now {
                            playout.tick(&mut acks);
                            done += 1;
                        }
                        ticked = Some(done);
                        Some(now)
                    }
                };
                if let Some(c) = &control {
                    for ack in acks.drain(..) {
                        send_ack(c, ack, &stats).await;
                    }
                }
                acks.clear();
                if let Some(now) = seen {
                    // Every tick due by `now` is played and acknowledged.
                    progress.store(now, Ordering::Release);
                }
            }
            Some(state) = events.state.recv() => {
                if state == RTCPeerConnectionState::Connected {
                    connected = true;
                }
                if matches!(
                    state,
                    RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                        | RTCPeerConnectionState::Disconnected
                ) {
                    break;
                }
            }
        }
        let now = playout.stats();
        stats
            .malformed
            .fetch_add(now.malformed - counted.malformed, Ordering::Relaxed);
        stats
            .resets
            .fetch_add(now.resets - counted.resets, Ordering::Relaxed);
        stats.cooldown_dropped.fetch_add(
            now.cooldown_dropped - counted.cooldown_dropped,
            Ordering::Relaxed,
        );
        counted = now;
    }
    playout.finish();
    if let Ok(mut p) = shared.progress.lock() {
        p.retain(|at| !Arc::ptr_eq(at, &progress));
    }
    let _ = pc.close().await;
    if let Ok(mut peers) = shared.faults.peers.lock() {
        peers.retain(|p| !Arc::ptr_eq(p, &pc));
    }
    stats.ended.fetch_add(1, Ordering::Relaxed);
}

/// Whether this message is a segment end a test asked to lose.
fn lost_segment_end(shared: &Shared, data: &[u8]) -> bool {
    let lose = &shared.faults.lose_segment_ends;
    if lose.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let is_end = std::str::from_utf8(data)
        .ok()
        .and_then(|t| serde_json::from_str::<Control>(t).ok())
        .is_some_and(|c| matches!(c, Control::SegmentEnd { .. }));
    is_end
        && lose
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
}

async fn send_ack(
    channel: &Arc<dyn DataChannel>,
    data: sotto_net::avatar::StreamEnded,
    stats: &ServerStats,
) {
    if let Ok(text) = serde_json::to_string(&Control::StreamEnded { data }) {
        // A gone agent is noticed by the connection state; nothing to do here.
        if channel.send_text(&text).await.is_ok() {
            stats.acks_sent.fetch_add(1, Ordering::Release);
        }
    }
}

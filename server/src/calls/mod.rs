//! `sotto serve` (SPEC W3, W4, S1–S5): calls over WebRTC to browsers,
//! signalled as WHIP does it. `POST /calls` with an SDP offer
//! (`application/sdp`, at most 32 KiB) answers `201 Created` with the SDP
//! answer and a `Location`; `DELETE` on it ends the call; `OPTIONS` answers
//! a page from another origin (CORS). Each call is a session of its own
//! with a demo agent speaking into it (see [`agent`]). `GET /` is a page
//! where a person talks to that agent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::accept::{serve_limited, ServerLimits};
use crate::http::{
    path_number as call_id, preflight, refuse, script, with_cors as cors, Authorized, Gate,
    OfferHeaders, SdpOffer,
};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sotto::{CallConfig, Engine, OutputConfig, SessionConfig, SessionOutput};
use tokio::sync::oneshot;

pub mod agent;
#[cfg(feature = "test-routes")]
mod recordings;

pub use agent::Utterance;

pub use crate::http::MAX_OFFER_BYTES;

/// Events a call keeps for its page to read; older ones are dropped.
const EVENTS_KEPT: usize = 256;

/// How the server runs.
#[derive(Clone)]
pub struct ServeConfig {
    /// Calls must carry `Authorization: Bearer TOKEN` signed with this
    /// (SPEC S3); `None` takes calls without one.
    pub token_secret: Option<String>,
    /// Connection caps and timeouts; `max_peers` is the most calls at once
    /// (a call past it is a 503).
    pub limits: ServerLimits,
    /// What the demo agent utterances: call N speaks the (N−1)-th, round the
    /// list (one unless a test gives each call its own voice).
    pub utterances: Vec<Arc<Utterance>>,
    /// How calls send and take audio.
    pub call: CallConfig,
    /// Keeps what a page posts back as its recording, and what each call's
    /// microphone brought, for tests to read (feature `test-routes`).
    #[cfg(feature = "test-routes")]
    pub keep_recordings: bool,
    /// An avatar server each call's agent speaks through (its voice and
    /// face published there, the call's own output silent); the page
    /// watches it beside the call.
    pub avatar: Option<AvatarAttach>,
}

impl Default for ServeConfig {
    /// No token asked, the default caps and call config, nothing to say
    /// yet (a server needs at least one [`Utterance`] to start).
    fn default() -> Self {
        Self {
            token_secret: None,
            limits: ServerLimits::default(),
            utterances: Vec::new(),
            call: CallConfig::default(),
            #[cfg(feature = "test-routes")]
            keep_recordings: false,
            avatar: None,
        }
    }
}

/// An avatar server calls attach to (SPEC O12, W5).
#[derive(Debug, Clone)]
pub struct AvatarAttach {
    /// Its dispatcher (`http://127.0.0.1:PORT/join`).
    pub join_url: String,
    /// The secret its tokens are signed with: each call mints its own.
    pub secret: String,
    /// Where its viewers' routes are (`http://127.0.0.1:PORT`), for the
    /// page.
    pub watch_base: String,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("token", &self.token_secret.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

crate::stats::counters! {
    /// What the server counted.
    ServeStats / Counters {
        /// Calls taken.
        calls,
        /// Calls over (hung up, the far end gone, never connected).
        ended,
        /// Offers refused as bad (400) or unauthorised (401).
        refused,
        /// Calls refused because the server was full (503).
        busy,
        /// Connections closed at once because too many were open.
        connections_refused,
    }
}

/// A call the server holds: what ends it, and its events for the page.
struct Live {
    hang_up: Option<oneshot::Sender<()>>,
    log: Arc<Mutex<agent::EventLog>>,
    #[cfg(feature = "test-routes")]
    recorded: Arc<Mutex<recordings::Recorded>>,
    stats: Option<Arc<dyn Fn() -> sotto::CallStats + Send + Sync>>,
}

struct CallServerState {
    engine: Engine,
    config: ServeConfig,
    calls: Mutex<HashMap<u64, Live>>,
    next: AtomicU64,
    stats: Arc<Counters>,
}

/// A running call server.
pub struct CallServer {
    addr: SocketAddr,
    shared: Arc<CallServerState>,
    stop: Option<oneshot::Sender<()>>,
}

impl CallServer {
    /// Serves calls on `addr` through `engine` (which must run on a
    /// real-time clock).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        engine: Engine,
        config: ServeConfig,
    ) -> std::io::Result<Self> {
        if config.utterances.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the agent needs something to say",
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Counters::default());
        let limits = config.limits;
        let shared = Arc::new(CallServerState {
            engine,
            config,
            calls: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            stats: Arc::clone(&stats),
        });
        let app = Router::new()
            .route("/", get(page))
            .route("/config", get(page_config))
            // An offer's limit, not the recordings': a body past it is
            // refused before it is read (413).
            .route("/sotto.js", get(script))
            .route("/calls", post(create).options(preflight))
            .route("/calls/{id}", axum::routing::delete(end).options(preflight))
            .route("/calls/{id}/events", get(events))
            .route("/calls/{id}/stats", get(call_stats))
            .with_state(Arc::clone(&shared));
        #[cfg(feature = "test-routes")]
        let app = app.merge(recordings::routes().with_state(Arc::clone(&shared)));
        let (stop, stopped) = oneshot::channel();
        let counted = Arc::clone(&stats);
        let refused = move || {
            counted.connections_refused.fetch_add(1, Ordering::Relaxed);
        };
        tokio::spawn(serve_limited(listener, app, limits, refused, stopped));
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    #[must_use]
    pub fn stats(&self) -> ServeStats {
        self.shared.stats.snapshot()
    }

    /// Calls live now.
    #[must_use]
    pub fn live_calls(&self) -> usize {
        self.shared.calls.lock().map_or(0, |c| c.len())
    }
}

impl Drop for CallServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Ok(mut calls) = self.shared.calls.lock() {
            for (_, mut live) in calls.drain() {
                if let Some(tx) = live.hang_up.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
}

impl Gate for CallServerState {
    fn secret(&self) -> Option<&str> {
        self.config.token_secret.as_deref()
    }

    fn refused(&self) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// `GET /config`: what the page needs to know of the server (where the
/// avatar is watched, when calls speak through one).
async fn page_config(State(shared): State<Arc<CallServerState>>) -> Response {
    let avatar = shared.config.avatar.as_ref().map(|a| a.watch_base.clone());
    let mut r = serde_json::json!({ "avatar": avatar })
        .to_string()
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Attaches call `id`'s session to the avatar: a token minted for it, the
/// avatar named after the call (so its page finds it). A call whose
/// avatar cannot be had goes on with its voice in the call.
async fn attach_avatar(
    engine: &Engine,
    session: &sotto::SessionHandle,
    avatar: &AvatarAttach,
    id: u64,
) -> Option<sotto::AvatarHandle> {
    let participant = format!("call-{id}");
    let room = format!("call-{id}");
    let creds = crate::token::create(
        "sotto-serve",
        &avatar.secret,
        Some(&participant),
        crate::token::DEFAULT_TTL,
    )
    .ok()?;
    let link = sotto::LinkConfig::new(&avatar.join_url, &room, &creds.token, &participant);
    engine.attach_avatar(session, link).await.ok()
}

/// `POST /calls` (SPEC W3, S1, S3): 415 for a body that is not
/// `application/sdp`, 413 past [`MAX_OFFER_BYTES`], 401 for a missing or
/// bad token when one is required, 503 past the call cap, 400 for an offer
/// that cannot be answered; 201 with the answer otherwise.
async fn create(
    State(shared): State<Arc<CallServerState>>,
    OfferHeaders: OfferHeaders,
    Authorized(claims): Authorized,
    body: axum::body::Body,
) -> Response {
    let stats = &shared.stats;
    let offer = match SdpOffer::read(body).await {
        Ok(SdpOffer(offer)) => offer,
        Err(refusal) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return refusal.into_response();
        }
    };
    let offer = offer.as_str();
    let name = claims.map(|c| c.participant_id);
    // The cap counts a call from its reservation here.
    let id = {
        let Ok(mut calls) = shared.calls.lock() else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "server state lost");
        };
        if calls.len() >= shared.config.limits.max_peers {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many calls; try again later",
            );
        }
        let id = shared.next.fetch_add(1, Ordering::Relaxed);
        calls.insert(
            id,
            Live {
                hang_up: None,
                log: Arc::new(Mutex::new(agent::EventLog::new(EVENTS_KEPT))),
                #[cfg(feature = "test-routes")]
                recorded: Arc::new(Mutex::new(recordings::Recorded::default())),
                stats: None,
            },
        );
        id
    };
    let forget = move |shared: &CallServerState| {
        if let Ok(mut calls) = shared.calls.lock() {
            calls.remove(&id);
        }
    };
    let says = &shared.config.utterances;
    let say = Arc::clone(&says[(id as usize - 1) % says.len()]);
    // A name from a token is shown, never used as a path; it is kept short.
    let name = name.map_or_else(|| format!("call-{id}"), |n| crate::events::printable(&n));
    let session = match shared
        .engine
        .create_session(SessionConfig {
            name,
            output: SessionOutput::Own(OutputConfig::default()),
            input: say.input,
            ..SessionConfig::default()
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            forget(&shared);
            stats.busy.fetch_add(1, Ordering::Relaxed);
            return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    let (answer, call) = match shared
        .engine
        .accept_call(&session, offer, shared.config.call.clone())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            forget(&shared);
            let _ = shared.engine.remove_session(&session).await;
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let code = match e {
                sotto::SessionError::BadOffer(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return refuse(code, &e.to_string());
        }
    };
    let (hang_up, hung_up) = oneshot::channel();
    let (log, mic_kept) = {
        let Ok(mut calls) = shared.calls.lock() else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "server state lost");
        };
        let Some(live) = calls.get_mut(&id) else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "call lost");
        };
        live.hang_up = Some(hang_up);
        live.stats = Some(call.stats_reader());
        #[cfg(feature = "test-routes")]
        let mic_kept = shared
            .config
            .keep_recordings
            .then(|| recordings::mic_keeper(Arc::clone(&live.recorded)));
        #[cfg(not(feature = "test-routes"))]
        let mic_kept = None;
        (Arc::clone(&live.log), mic_kept)
    };
    let avatar = match &shared.config.avatar {
        Some(a) => attach_avatar(&shared.engine, &session, a, id).await,
        None => None,
    };
    stats.calls.fetch_add(1, Ordering::Relaxed);
    let task_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        agent::run(
            task_shared.engine.clone(),
            session,
            call,
            (say, avatar.is_some()),
            log,
            mic_kept,
            hung_up,
        )
        .await;
        if let Some(a) = avatar {
            a.detach();
        }
        forget(&task_shared);
        task_shared.stats.ended.fetch_add(1, Ordering::Relaxed);
    });
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/calls/{id}")) {
        h.insert(header::LOCATION, v);
    }
    cors(r)
}

/// `DELETE /calls/{id}`: 204, or 404 for no such call.
async fn end(State(shared): State<Arc<CallServerState>>, Path(raw): Path<String>) -> Response {
    let hang_up = call_id(&raw).and_then(|id| {
        let mut calls = shared.calls.lock().ok()?;
        calls.get_mut(&id)?.hang_up.take()
    });
    match hang_up {
        Some(tx) => {
            let _ = tx.send(());
            cors(StatusCode::NO_CONTENT.into_response())
        }
        None => refuse(StatusCode::NOT_FOUND, "no such call"),
    }
}

/// `GET /calls/{id}/stats`: the call's counters as JSON (packets each
/// way, losses, jitter, the microphone's level), for its page to show.
async fn call_stats(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
) -> Response {
    let reader = call_id(&raw).and_then(|id| {
        let calls = shared.calls.lock().ok()?;
        calls.get(&id)?.stats.clone()
    });
    let Some(reader) = reader else {
        return refuse(StatusCode::NOT_FOUND, "no such call");
    };
    let s = reader();
    let body = serde_json::json!({
        "packets_sent": s.packets_sent,
        "silent_packets": s.silent_packets,
        "send_age_ms": s.send_age_ms,
        "frames_lost": s.frames_lost,
        "packets_received": s.packets_received,
        "packets_lost": s.packets_lost,
        "packets_concealed": s.packets_concealed,
        "jitter_ms": s.jitter_ms,
        "mic_level_db": s.mic_level_db,
        "mic_dropped": s.mic_dropped,
    });
    let mut r = body.to_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cors(r)
}

/// `GET /calls/{id}/events?after=N`: the call's events after the N-th, as
/// JSON, for its page to show.
async fn events(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    uri: Uri,
) -> Response {
    let after = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let log = call_id(&raw).and_then(|id| {
        let calls = shared.calls.lock().ok()?;
        Some(Arc::clone(&calls.get(&id)?.log))
    });
    let Some(log) = log else {
        return refuse(StatusCode::NOT_FOUND, "no such call");
    };
    let body = log.lock().map(|l| l.since(after)).unwrap_or_default();
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cors(r)
}

//! `sotto serve` (SPEC W3, W4, S1–S7): calls over WebRTC to browsers,
//! signalled as WHIP does it. `POST /calls` with an SDP offer
//! (`application/sdp`, at most 32 KiB) answers `201 Created` with the SDP
//! answer, a `Location` (`/calls/ID`, ID 128 random bits) and the call's
//! key (`Sotto-Key`); `DELETE` on the location ends the call, `GET
//! …/events`, `…/stats` and `…/avatar` read it, each only with
//! `Authorization: Bearer` the key or the token that made the call (401
//! without one, 404 for any other); `OPTIONS` answers a page from another
//! origin (CORS). Each call is a session of its own with a demo agent
//! speaking into it (see [`agent`]). `GET /` is a page where a person talks
//! to that agent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::accept::{serve_limited, ServerLimits};
use crate::http::{
    bearer, canonical_id, preflight, refuse, same_secret, script, with_cors as cors, Gate, Refusal,
};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sotto::{CallConfig, Engine};
use tokio::sync::oneshot;

pub mod agent;
mod phone;
#[cfg(feature = "test-routes")]
mod recordings;
mod rooms;
mod setup;

pub use agent::Utterance;
pub use rooms::HostError;

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
    /// Calls live at once for one participant (a token's `participantId`);
    /// one more is a 429. With no token asked, not counted.
    pub max_calls_per_participant: usize,
    /// The longest lifetime (`exp` − `iat`) a call's token may have; a
    /// token that claims longer is refused (401), so a leaked one is
    /// good for a short while only.
    pub max_token_lifetime: std::time::Duration,
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
    /// Serves phone calls a carrier hands over as media streams (SPEC
    /// T1): `POST /twilio/voice` and `GET /twilio/stream`; 404 without.
    pub phone: bool,
}

impl Default for ServeConfig {
    /// No token asked, the default caps and call config, nothing to say
    /// yet (a server needs at least one [`Utterance`] to start).
    fn default() -> Self {
        Self {
            token_secret: None,
            limits: ServerLimits::default(),
            max_calls_per_participant: 4,
            max_token_lifetime: crate::token::CALL_TOKEN_LIFETIME,
            utterances: Vec::new(),
            call: CallConfig::default(),
            #[cfg(feature = "test-routes")]
            keep_recordings: false,
            avatar: None,
            phone: false,
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
    /// The secret its viewer tokens are signed with: each call's page is
    /// handed one for its own avatar only.
    pub viewer_secret: String,
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
        /// Calls refused because the server was full (503) or their
        /// participant had its share (429).
        busy,
        /// Requests for a call without its key or token (401, 404).
        unauthorised,
        /// Calls set up for a client that had gone before its answer.
        abandoned,
        /// Calls refused (503) because the engine had not the budget for
        /// one more now (`Engine::admit`).
        not_admitted,
        /// Connections closed at once because too many were open.
        connections_refused,
        /// Of those, closed because too many were open from one client.
        client_refused,
    }
}

/// A call the server holds: who may ask for it, what ends it, and its
/// events for the page.
struct Live {
    /// The n-th call taken (from 1): how a test finds it.
    #[cfg(feature = "test-routes")]
    ordinal: u64,
    /// The secret its `201` handed back.
    key: String,
    /// The bearer token that made it, when one was asked for.
    token: Option<String>,
    /// The participant it counts against.
    participant: Option<String>,
    hang_up: Option<oneshot::Sender<()>>,
    /// A `DELETE` ended it: a later one finds no such call, though its
    /// task may still be closing it.
    ended: bool,
    log: Arc<Mutex<agent::EventLog>>,
    #[cfg(feature = "test-routes")]
    recorded: Arc<Mutex<recordings::Recorded>>,
    stats: Option<Arc<dyn Fn() -> sotto::CallStats + Send + Sync>>,
}

struct CallServerState {
    engine: Engine,
    config: ServeConfig,
    /// Live calls by id.
    calls: Mutex<HashMap<String, Live>>,
    /// Calls taken so far.
    taken: AtomicU64,
    stats: Arc<Counters>,
    /// The room the agent was sent into, for `/room`.
    hosted: Mutex<Option<rooms::Hosted>>,
    /// Tickets phone calls' TwiML handed out.
    tickets: Mutex<phone::Tickets>,
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
            taken: AtomicU64::new(0),
            stats: Arc::clone(&stats),
            hosted: Mutex::new(None),
            tickets: Mutex::new(phone::Tickets::default()),
        });
        let app = Router::new()
            .route("/", get(page))
            .route("/sotto.js", get(script))
            .route("/calls", post(setup::create).options(preflight))
            .route("/calls/{id}", axum::routing::delete(end).options(preflight))
            .route("/calls/{id}/events", get(events).options(preflight))
            .route("/calls/{id}/stats", get(call_stats).options(preflight))
            .route("/calls/{id}/avatar", get(avatar_of).options(preflight))
            .with_state(Arc::clone(&shared))
            .merge(rooms::routes().with_state(Arc::clone(&shared)))
            .merge(phone::routes().with_state(Arc::clone(&shared)));
        #[cfg(feature = "test-routes")]
        let app = app.merge(recordings::routes().with_state(Arc::clone(&shared)));
        let (stop, stopped) = oneshot::channel();
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

/// Attaches a session to the avatar as `participant` in `room`: a token
/// minted for it. A call's avatar is named after the call (so its page
/// finds it); a room's names the room's number (so the avatar server
/// publishes it into the room). A session whose avatar cannot be had goes
/// on with its own voice.
async fn attach_avatar(
    engine: &Engine,
    session: &sotto::SessionHandle,
    avatar: &AvatarAttach,
    room: &str,
    participant: &str,
) -> Option<sotto::AvatarHandle> {
    let creds = crate::token::create(
        "sotto-serve",
        &avatar.secret,
        Some(participant),
        crate::token::DEFAULT_TTL,
    )
    .ok()?;
    let link = sotto::LinkConfig::new(&avatar.join_url, room, &creds.token, participant);
    engine.attach_avatar(session, link).await.ok()
}

/// What `f` reads of call `raw`, when the request's bearer is the call's
/// key or the token that made it: 401 with no bearer, 404 for no such call
/// and for a bearer that is not its (a stranger learns nothing of which
/// calls exist).
fn with_call<T>(
    shared: &CallServerState,
    headers: &HeaderMap,
    raw: &str,
    f: impl FnOnce(&mut Live) -> T,
) -> Result<T, Refusal> {
    let Some(presented) = bearer(headers) else {
        shared.stats.unauthorised.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the call's key is required (Authorization: Bearer KEY)",
        ));
    };
    let found = canonical_id(raw)
        .then(|| shared.calls.lock().ok())
        .flatten()
        .and_then(|mut calls| {
            let live = calls.get_mut(raw)?;
            let theirs = same_secret(presented, &live.key)
                || live
                    .token
                    .as_deref()
                    .is_some_and(|t| same_secret(presented, t));
            theirs.then(|| f(live))
        });
    found.ok_or_else(|| {
        shared.stats.unauthorised.fetch_add(1, Ordering::Relaxed);
        Refusal::new(StatusCode::NOT_FOUND, "no such call")
    })
}

/// `DELETE /calls/{id}`: 204 (the call ends), 401 or 404.
async fn end(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ended = with_call(&shared, &headers, &raw, |live| {
        // A call set up now hangs up as soon as it can (`setup::set_up`).
        (!std::mem::replace(&mut live.ended, true)).then(|| live.hang_up.take())
    });
    match ended {
        Ok(Some(hang_up)) => {
            if let Some(tx) = hang_up {
                let _ = tx.send(());
            }
            cors(StatusCode::NO_CONTENT.into_response())
        }
        // Ended already: as gone as a call that never was.
        Ok(None) => refuse(StatusCode::NOT_FOUND, "no such call"),
        Err(r) => r.into_response(),
    }
}

/// `GET /calls/{id}/stats`: the call's counters as JSON (packets each
/// way, losses, jitter, the microphone's level), for its page to show.
async fn call_stats(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    let reader = match with_call(&shared, &headers, &raw, |live| live.stats.clone()) {
        Ok(Some(r)) => r,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, "no such call"),
        Err(r) => return r.into_response(),
    };
    stats_json(&*reader)
}

/// A call's counters as JSON.
fn stats_json(reader: &(dyn Fn() -> sotto::CallStats + Send + Sync)) -> Response {
    let s = reader();
    crate::http::json(&serde_json::json!({
        "packets_sent": s.packets_sent,
        "silent_packets": s.silent_packets,
        "send_age_ms": s.send_age_ms,
        "frames_lost": s.frames_lost,
        "encoder_dropped": s.encoder_dropped,
        "packets_received": s.packets_received,
        "packets_lost": s.packets_lost,
        "packets_concealed": s.packets_concealed,
        "jitter_ms": s.jitter_ms,
        "mic_level_db": s.mic_level_db,
        "mic_dropped": s.mic_dropped,
    }))
}

/// `GET /calls/{id}/events?after=N`: the call's events after the N-th, as
/// JSON, for its page to show.
async fn events(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let after = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let log = match with_call(&shared, &headers, &raw, |live| Arc::clone(&live.log)) {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let body = log.lock().map(|l| l.since(after)).unwrap_or_default();
    crate::http::typed(body, "application/json")
}

/// `GET /calls/{id}/avatar`: where the call's agent can be watched, and a
/// viewer token for its avatar alone (`null` when calls have no avatar).
async fn avatar_of(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = with_call(&shared, &headers, &raw, |_| ()) {
        return r.into_response();
    }
    let Some(avatar) = &shared.config.avatar else {
        return crate::http::json(&serde_json::Value::Null);
    };
    let room = format!("call-{raw}");
    let token = crate::token::viewer(
        &avatar.viewer_secret,
        &room,
        crate::token::CALL_TOKEN_LIFETIME,
    );
    match token {
        Ok(token) => crate::http::json(&serde_json::json!({
            "watch": avatar.watch_base,
            "room": room,
            "token": token,
        })),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

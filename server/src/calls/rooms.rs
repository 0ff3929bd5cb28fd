//! The demo agent in a room on an SFU (SPEC F1, F5): `CallServer::host_room`
//! joins a session to a Janus VideoRoom and runs the same agent a call
//! has on it; `GET /room` is a page that joins the same room from a
//! browser with Janus's own `janus.js` and talks to the agent through the
//! SFU. The room lives in the server's table beside its calls (its events
//! and, for tests, its recordings read the same way).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use sotto::{EngineError, RoomConfig, SessionError, Subscribe};
use tokio::sync::oneshot;

use super::{agent, refuse, CallServer, CallServerState, Live, EVENTS_KEPT};

/// Where Debian's `libjs-janus-gateway` puts Janus's JavaScript client.
const JANUS_JS: &str = "/usr/share/javascript/janus-gateway/janus.js";

/// The room the server's agent is in, for its page.
#[derive(Debug, Clone)]
pub(super) struct Hosted {
    url: String,
    room: u64,
    ordinal: u64,
    /// The display name of the agent's avatar's feed, when it has one.
    face: Option<String>,
}

/// `GET /room`, `GET /room/config`, `GET /janus.js`.
pub(super) fn routes() -> Router<Arc<CallServerState>> {
    Router::new()
        .route("/room", get(page))
        .route("/room/config", get(config))
        .route("/janus.js", get(janus_js))
}

/// Why the agent could not be sent into a room.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The engine would not make its session.
    #[error(transparent)]
    Session(#[from] EngineError),
    /// The room could not be joined.
    #[error(transparent)]
    Room(#[from] SessionError),
}

impl CallServer {
    /// Joins the demo agent to a room (SPEC F1): a session of its own,
    /// speaking and barging out as a call's agent does, whoever joins the
    /// room hearing it through the SFU. Returns the room's ordinal among
    /// the server's calls (how a test reads its events).
    ///
    /// # Errors
    /// [`HostError`]: the session cannot be made, or the room cannot be
    /// joined.
    /// `page_url` is the address of the same Janus that the `/room` page
    /// hands `janus.js` (its WebSocket API, say: `janus.js` keeps a session
    /// alive only over WebSocket); `None`: the room's own URL.
    pub async fn host_room(
        &self,
        room: RoomConfig,
        page_url: Option<String>,
    ) -> Result<u64, HostError> {
        let shared = &self.shared;
        let ordinal = shared.taken.fetch_add(1, Ordering::Relaxed) + 1;
        let says = &shared.config.utterances;
        let say = Arc::clone(&says[(ordinal as usize - 1) % says.len()]);
        let session = shared
            .engine
            .create_session(sotto::SessionConfig {
                name: format!("room-{}", room.room),
                input: say.input,
                ..sotto::SessionConfig::default()
            })
            .await?;
        let (url, number) = (page_url.unwrap_or_else(|| room.url.clone()), room.room);
        // With an avatar, its feed is the agent's voice in the room: the
        // agent does not hear it as a participant.
        let face = shared
            .config
            .avatar
            .as_ref()
            .map(|_| format!("{}-face", room.display));
        let mut room = room;
        if let (Some(face), Subscribe::AllAudio) = (&face, &room.subscribe) {
            room.subscribe = Subscribe::AllBut(vec![face.clone()]);
        }
        let handle = match shared.engine.join_room(&session, room).await {
            Ok(h) => h,
            Err(e) => {
                let _ = shared.engine.remove_session(&session).await;
                return Err(e.into());
            }
        };
        let avatar = match (&shared.config.avatar, &face) {
            (Some(a), Some(face)) => {
                super::attach_avatar(&shared.engine, &session, a, &number.to_string(), face).await
            }
            _ => None,
        };
        let id = crate::http::random_id();
        let log = Arc::new(Mutex::new(agent::EventLog::new(EVENTS_KEPT)));
        #[cfg(feature = "test-routes")]
        let recorded = Arc::new(Mutex::new(super::recordings::Recorded::default()));
        #[cfg(feature = "test-routes")]
        let mic_kept = shared
            .config
            .keep_recordings
            .then(|| super::recordings::mic_keeper(Arc::clone(&recorded)));
        #[cfg(not(feature = "test-routes"))]
        let mic_kept = None;
        let (hang_up, hung_up) = oneshot::channel();
        let stats = {
            // The room's counters, for `/calls/{id}/stats` and the tests.
            let reader = handle.stats_reader();
            Some(reader)
        };
        if let Ok(mut calls) = shared.calls.lock() {
            calls.insert(
                id.clone(),
                Live {
                    #[cfg(feature = "test-routes")]
                    ordinal,
                    key: crate::http::random_id(),
                    token: None,
                    participant: None,
                    hang_up: Some(hang_up),
                    ended: false,
                    log: Arc::clone(&log),
                    #[cfg(feature = "test-routes")]
                    recorded,
                    stats,
                },
            );
        }
        if let Ok(mut hosted) = shared.hosted.lock() {
            // The page joins the first room hosted.
            hosted.get_or_insert(Hosted {
                url,
                room: number,
                ordinal,
                face: avatar.as_ref().and(face),
            });
        }
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            agent::run(
                shared.engine.clone(),
                session,
                agent::Link::Room(handle),
                say,
                log,
                mic_kept,
                (hung_up, None),
            )
            .await;
            if let Some(a) = avatar {
                a.detach();
            }
            if let Ok(mut calls) = shared.calls.lock() {
                calls.remove(&id);
            }
            if let Ok(mut hosted) = shared.hosted.lock() {
                if hosted.as_ref().is_some_and(|h| h.ordinal == ordinal) {
                    *hosted = None;
                }
            }
        });
        Ok(ordinal)
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("room.html"))
}

/// `GET /room/config`: the SFU and room the agent is in (404 when it is
/// in none) and its avatar's feed; with recordings kept, where a test
/// page posts what it heard and saw.
async fn config(State(shared): State<Arc<CallServerState>>) -> Response {
    let hosted = shared.hosted.lock().ok().and_then(|h| h.clone());
    let Some(h) = hosted else {
        return refuse(StatusCode::NOT_FOUND, "the agent is in no room");
    };
    #[cfg_attr(not(feature = "test-routes"), allow(unused_mut))]
    let mut body = json!({"janus": h.url, "room": h.room, "face": h.face});
    #[cfg(feature = "test-routes")]
    if shared.config.keep_recordings {
        body["recording"] = json!(format!("/test/calls/{}/recording", h.ordinal));
        body["faceReport"] = json!(format!("/test/calls/{}/face", h.ordinal));
    }
    crate::http::typed(body.to_string(), "application/json")
}

/// `GET /janus.js`: Janus's JavaScript client as Debian installs it (404
/// with the package to install when it is not).
async fn janus_js() -> Response {
    match tokio::task::spawn_blocking(|| std::fs::read(JANUS_JS)).await {
        Ok(Ok(bytes)) => crate::http::typed(bytes, "text/javascript"),
        _ => refuse(
            StatusCode::NOT_FOUND,
            "janus.js is not installed (Debian: libjs-janus-gateway)",
        ),
    }
}

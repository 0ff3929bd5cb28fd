//! Watching an avatar (SPEC W5, S1–S7): the avatar server's routes for
//! viewers, signalled as WHEP does it, and a page to watch from.
//!
//! - `GET /avatars`: the avatars playing now, as JSON.
//! - `POST /avatars/{id}/viewers` with an SDP offer (`application/sdp`, at
//!   most 32 KiB): `201 Created`, the answer, a `Location` and the viewer's
//!   key (`Sotto-Key`).
//! - `DELETE` on that location: the viewer leaves (`204`).
//! - `GET` on it: where the viewer's RTP timestamps start, as JSON.
//! - `GET /watch`: a page that watches the first avatar it may.
//!
//! Avatar and viewer ids are 128 random bits. With a viewer secret
//! ([`ViewersConfig::viewer_secret`]) every route but the page asks for
//! `Authorization: Bearer`: a token signed with it granting `operator`
//! (every avatar) or `allow_view` with a `room` (that room's avatars), or,
//! on a viewer's own location, the key its `201` handed back. Without one
//! (401), with one for something else (404: a stranger learns nothing of
//! what exists). A list asked with a viewer's token holds its room's
//! avatars only.
//!
//! With the `test-routes` feature and `ViewersConfig::keep_reports`, a test
//! page may also post what it received to `…/report` (see `reports`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use sotto_avatar::publish::{Publisher, ViewerError};

use super::AvatarServerState;
use crate::http::{
    bearer, canonical_id, created_sdp, json, preflight, random_id, refuse, same_secret, script,
    with_cors as cors, Gate, OfferHeaders, Refusal, SdpOffer,
};
use crate::token::{self, Claims};

/// How a server publishes its avatars to viewers.
#[derive(Debug, Clone)]
pub struct ViewersConfig {
    /// Opus bit rate of the voice, bits per second.
    pub voice_bitrate: u32,
    /// VP8 bit rate of the face, kbit/s.
    pub video_bitrate_kbps: u32,
    /// Viewers of one avatar at once; one more is a 503. A feed into a
    /// room ([`ViewersConfig::rooms`]) counts as one.
    pub max_viewers: usize,
    /// Publishes each avatar whose agent's join names a room that is a
    /// number into that room of this Janus as well (SPEC F1): its voice
    /// and face as a feed beside the agent's, displayed as the agent's
    /// participant id. The config's `room` and `display` are each
    /// avatar's; its `media.bind` is where the feed's peer binds (an
    /// address the SFU can reach). `None`: no avatar goes into a room.
    pub rooms: Option<sotto::RoomConfig>,
    /// Viewers must carry `Authorization: Bearer TOKEN` signed with this,
    /// granting `allow_view` for the avatar's room or `operator` (SPEC
    /// S3); `None` lets anyone who reaches the server watch (for a
    /// trusted network only).
    pub viewer_secret: Option<String>,
    /// Keeps what a page posts back as its report, for tests to read
    /// (feature `test-routes`).
    #[cfg(feature = "test-routes")]
    pub keep_reports: bool,
}

impl Default for ViewersConfig {
    fn default() -> Self {
        Self {
            voice_bitrate: 48_000,
            video_bitrate_kbps: 800,
            max_viewers: 8,
            rooms: None,
            viewer_secret: None,
            #[cfg(feature = "test-routes")]
            keep_reports: false,
        }
    }
}

/// An avatar playing now, as viewers find it.
pub(crate) struct Published {
    /// Its id in the viewers' paths (128 random bits).
    pub(crate) id: String,
    /// The agent's participant and room, as its join named them.
    pub(crate) participant_id: String,
    pub(crate) room_name: String,
    pub(crate) publisher: Publisher,
    /// Its viewers as their paths name them.
    pub(crate) viewers: Vec<ViewerAccess>,
    /// Its feed in a room on an SFU, stopped when this is dropped.
    pub(crate) _feed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A viewer as its path names it: its id there, the publisher's for it,
/// and the key that lets its holder read or end it.
pub(crate) struct ViewerAccess {
    pub(crate) id: String,
    pub(crate) inner: u64,
    pub(crate) key: String,
}

/// Who is asking, as far as the viewer routes care.
enum Asker {
    /// No secret is set: anyone may watch anything.
    Anyone,
    /// An operator: every avatar.
    Operator,
    /// A viewer of one room.
    Room(String),
    /// A bearer that is no token here (perhaps a viewer's key).
    Key(String),
}

impl Asker {
    /// Whether it may watch an avatar in `room`.
    fn may_watch(&self, room: &str) -> bool {
        match self {
            Self::Anyone | Self::Operator => true,
            Self::Room(r) => r == room,
            Self::Key(_) => false,
        }
    }
}

/// Who `headers` say is asking: 401 when a secret is set and no bearer is
/// given.
fn asker(shared: &AvatarServerState, headers: &HeaderMap) -> Result<Asker, Refusal> {
    let Some(secret) = shared.secret() else {
        return Ok(Asker::Anyone);
    };
    let Some(presented) = bearer(headers) else {
        shared.refused();
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "a viewer token is required (Authorization: Bearer TOKEN)",
        ));
    };
    Ok(
        match token::verify_granting(presented, secret, &[token::OPERATOR, token::ALLOW_VIEW]) {
            Ok(Claims { permissions, .. }) if permissions.iter().any(|p| p == token::OPERATOR) => {
                Asker::Operator
            }
            Ok(Claims {
                room: Some(room), ..
            }) => Asker::Room(room),
            _ => Asker::Key(presented.to_owned()),
        },
    )
}

/// The routes, for a server that publishes.
pub(crate) fn routes() -> Router<Arc<AvatarServerState>> {
    Router::new()
        .route("/watch", get(page))
        .route("/sotto.js", get(script))
        .route(
            "/avatars/{id}/viewers",
            axum::routing::post(add).options(preflight),
        )
        .route("/avatars", get(list).options(preflight))
        .route(
            "/avatars/{id}/viewers/{viewer}",
            get(viewer).delete(leave).options(preflight),
        )
}

async fn page() -> Html<&'static str> {
    Html(include_str!("watch.html"))
}

/// Avatar `raw`'s publisher, when `may` lets the asker see its room.
fn publisher(
    shared: &AvatarServerState,
    raw: &str,
    may: impl FnOnce(&Published) -> bool,
) -> Option<Publisher> {
    if !canonical_id(raw) {
        return None;
    }
    let avatars = shared.avatars.lock().ok()?;
    let a = avatars.iter().find(|a| a.id == raw)?;
    may(a).then(|| a.publisher.clone())
}

/// `GET /avatars`: id, participant, room and viewers of each avatar
/// playing now that the asker may watch; 401 without a token when one is
/// asked for.
async fn list(State(shared): State<Arc<AvatarServerState>>, headers: HeaderMap) -> Response {
    let asker = match asker(&shared, &headers) {
        Ok(Asker::Key(_)) => {
            shared.refused();
            return refuse(StatusCode::UNAUTHORIZED, "not a viewer token");
        }
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let list: Vec<serde_json::Value> = shared
        .avatars
        .lock()
        .map(|avatars| {
            avatars
                .iter()
                .filter(|a| asker.may_watch(&a.room_name))
                .map(|a| {
                    let s = a.publisher.stats();
                    serde_json::json!({
                        "id": a.id,
                        "participant_id": a.participant_id,
                        "room_name": a.room_name,
                        "viewers": s.viewers,
                        "frames_encoded": s.frames_encoded,
                        "dropped": s.dropped,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json(&serde_json::Value::Array(list))
}

/// `POST /avatars/{id}/viewers` (SPEC W5, S1, S3, S6): 415 for a body
/// that is not `application/sdp`, 413 past the offer limit, 401 for a
/// missing or bad token when one is required, 404 for no such avatar (or
/// none the token is for), all before the body is read; 408 for a body too
/// slow, 400 for an offer that can never connect, 503 past the viewer cap;
/// 201 otherwise. The viewer is set up in a task of its own: a client
/// that goes before its answer leaves no viewer behind.
async fn add(
    State(shared): State<Arc<AvatarServerState>>,
    OfferHeaders: OfferHeaders,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let stats = &shared.stats;
    let refused = |r: Refusal| {
        stats.viewers_refused.fetch_add(1, Ordering::Relaxed);
        r.into_response()
    };
    let asker = match asker(&shared, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    // What the headers and the path can tell comes before the body.
    let Some(publisher) = publisher(&shared, &raw, |a| asker.may_watch(&a.room_name)) else {
        return refused(Refusal::new(StatusCode::NOT_FOUND, "no such avatar"));
    };
    let offer = match SdpOffer::read(body, &shared.limits).await {
        Ok(SdpOffer(offer)) => offer,
        Err(r) => return refused(r),
    };
    let (answered, answer) = tokio::sync::oneshot::channel();
    let task_publisher = publisher.clone();
    tokio::spawn(async move {
        let added = task_publisher.add_viewer(&offer).await;
        if let Err(Ok(viewer)) = answered.send(added) {
            // The viewer went before its answer.
            task_publisher.remove_viewer(viewer.id).await;
        }
    });
    let refused = |code, why: &str| refused(Refusal::new(code, why));
    let viewer = match answer.await {
        Ok(Ok(v)) => v,
        Ok(Err(ViewerError::Full)) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many viewers; try again later",
            );
        }
        Ok(Err(ViewerError::BadOffer(why))) => return refused(StatusCode::BAD_REQUEST, &why),
        Ok(Err(e)) => return refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => return refused(StatusCode::INTERNAL_SERVER_ERROR, "the viewer was lost"),
    };
    let (id, key) = (random_id(), random_id());
    let kept = shared.avatars.lock().ok().and_then(|mut avatars| {
        let a = avatars.iter_mut().find(|a| a.id == raw)?;
        a.viewers.push(ViewerAccess {
            id: id.clone(),
            inner: viewer.id,
            key: key.clone(),
        });
        Some(())
    });
    if kept.is_none() {
        // The avatar went meanwhile.
        publisher.remove_viewer(viewer.id).await;
        return refused(StatusCode::NOT_FOUND, "no such avatar");
    }
    stats.viewers.fetch_add(1, Ordering::Relaxed);
    created_sdp(viewer.answer, &format!("/avatars/{raw}/viewers/{id}"), &key)
}

/// Viewer `viewer` of avatar `raw`, when the request may reach it (its
/// key, or a token for the avatar's room): the publisher and the
/// publisher's id for it. 401 without a bearer where one is asked for, 404
/// otherwise.
pub(crate) fn viewer_of(
    shared: &AvatarServerState,
    headers: &HeaderMap,
    raw: &str,
    viewer: &str,
    leaving: bool,
) -> Result<(Publisher, u64), Refusal> {
    let asker = asker(shared, headers)?;
    let not_found = || {
        shared.refused();
        Refusal::new(StatusCode::NOT_FOUND, "no such viewer")
    };
    if !canonical_id(raw) || !canonical_id(viewer) {
        return Err(not_found());
    }
    let Ok(mut avatars) = shared.avatars.lock() else {
        return Err(not_found());
    };
    let Some(a) = avatars.iter_mut().find(|a| a.id == raw) else {
        return Err(not_found());
    };
    let Some(k) = a.viewers.iter().position(|v| v.id == viewer) else {
        return Err(not_found());
    };
    let allowed = match &asker {
        Asker::Key(key) => same_secret(key, &a.viewers[k].key),
        other => other.may_watch(&a.room_name),
    };
    if !allowed {
        return Err(not_found());
    }
    let inner = if leaving {
        a.viewers.remove(k).inner
    } else {
        a.viewers[k].inner
    };
    Ok((a.publisher.clone(), inner))
}

/// `DELETE /avatars/{id}/viewers/{viewer}`: 204, or 401, or 404.
async fn leave(
    State(shared): State<Arc<AvatarServerState>>,
    Path((raw, viewer)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match viewer_of(&shared, &headers, &raw, &viewer, true) {
        Ok((publisher, inner)) => {
            publisher.remove_viewer(inner).await;
            cors(StatusCode::NO_CONTENT.into_response())
        }
        Err(r) => r.into_response(),
    }
}

/// `GET /avatars/{id}/viewers/{viewer}`: where its tracks' RTP timestamps
/// start (pts 0 of the voice's clock), and the publisher's counters.
async fn viewer(
    State(shared): State<Arc<AvatarServerState>>,
    Path((raw, viewer)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (publisher, inner) = match viewer_of(&shared, &headers, &raw, &viewer, false) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some((voice_origin, face_origin)) = publisher.origins(inner) else {
        return refuse(StatusCode::NOT_FOUND, "no such viewer");
    };
    let s = publisher.stats();
    json(&serde_json::json!({
        "voice_origin": voice_origin,
        "face_origin": face_origin,
        "voice_clock": sotto_media::opus::OPUS_RATE,
        "face_clock": sotto_media::vp8::VIDEO_RATE,
        "frames_encoded": s.frames_encoded,
        "voice_packets": s.voice_packets,
        "dropped": s.dropped,
        "encoder_dropped": s.encoder_dropped,
        "key_frames_asked": s.key_frames_asked,
    }))
}

impl Gate for AvatarServerState {
    fn secret(&self) -> Option<&str> {
        self.config.publish.as_ref()?.viewer_secret.as_deref()
    }

    fn refused(&self) {
        self.stats.viewers_refused.fetch_add(1, Ordering::Relaxed);
    }
}

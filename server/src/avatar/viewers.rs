//! Watching an avatar (SPEC W5, S1–S5): the avatar server's routes for
//! viewers, signalled as WHEP does it, and a page to watch from.
//!
//! - `GET /avatars`: the avatars playing now, as JSON.
//! - `POST /avatars/{id}/viewers` with an SDP offer (`application/sdp`, at
//!   most 32 KiB): `201 Created`, the answer, and a `Location`.
//! - `DELETE` on that location: the viewer leaves (`204`, or `404`).
//! - `GET` on it: where the viewer's RTP timestamps start, as JSON.
//! - `GET /watch`: a page that watches the first avatar playing.
//!
//! With the `test-routes` feature and `ViewersConfig::keep_reports`, a test
//! page may also post what it received to `…/report` (see `reports`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use sotto_avatar::publish::{Publisher, ViewerError};

use super::AvatarServerState;
use crate::http::{
    json, path_number as number, preflight, refuse, script, with_cors as cors, Authorized, Gate,
    OfferHeaders, Refusal, SdpOffer,
};

/// How a server publishes its avatars to viewers.
#[derive(Debug, Clone)]
pub struct ViewersConfig {
    /// Opus bit rate of the voice, bits per second.
    pub voice_bitrate: u32,
    /// VP8 bit rate of the face, kbit/s.
    pub video_bitrate_kbps: u32,
    /// Viewers of one avatar at once; one more is a 503.
    pub max_viewers: usize,
    /// Viewers must carry `Authorization: Bearer TOKEN` signed with this
    /// (SPEC S3); `None` takes any viewer.
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
            viewer_secret: None,
            #[cfg(feature = "test-routes")]
            keep_reports: false,
        }
    }
}

/// An avatar playing now, as viewers find it.
pub(crate) struct Published {
    /// Its id in the viewers' paths.
    pub(crate) id: u64,
    /// The agent's participant and room, as its join named them.
    pub(crate) participant_id: String,
    pub(crate) room_name: String,
    pub(crate) publisher: Publisher,
}

/// The routes, for a server that publishes.
pub(crate) fn routes() -> Router<Arc<AvatarServerState>> {
    Router::new()
        .route("/watch", get(page))
        .route("/sotto.js", get(script))
        .route("/avatars", get(list))
        .route(
            "/avatars/{id}/viewers",
            axum::routing::post(add).options(preflight),
        )
        .route(
            "/avatars/{id}/viewers/{viewer}",
            get(viewer).delete(leave).options(preflight),
        )
}

async fn page() -> Html<&'static str> {
    Html(include_str!("watch.html"))
}

/// A number in a path; anything else (or one too long to be ours) is none.
fn publisher(shared: &AvatarServerState, raw: &str) -> Option<Publisher> {
    let id = number(raw)?;
    let avatars = shared.avatars.lock().ok()?;
    avatars
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.publisher.clone())
}

/// `GET /avatars`: id, participant, room and viewers of each avatar
/// playing now.
async fn list(State(shared): State<Arc<AvatarServerState>>) -> Response {
    let list: Vec<serde_json::Value> = shared
        .avatars
        .lock()
        .map(|avatars| {
            avatars
                .iter()
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

/// `POST /avatars/{id}/viewers` (SPEC W5, S1, S3): 415 for a body that is
/// not `application/sdp`, 413 past the offer limit, 401 for a missing or
/// bad token when one is required, 404 for no such avatar, 503 past the
/// viewer cap, 400 for an offer that cannot be answered; 201 otherwise.
async fn add(
    State(shared): State<Arc<AvatarServerState>>,
    OfferHeaders: OfferHeaders,
    Authorized(_): Authorized,
    Path(raw): Path<String>,
    body: axum::body::Body,
) -> Response {
    let stats = &shared.stats;
    let refused = |r: Refusal| {
        stats.viewers_refused.fetch_add(1, Ordering::Relaxed);
        r.into_response()
    };
    // What the headers and the path can tell comes before the body.
    let Some(publisher) = publisher(&shared, &raw) else {
        return refused(Refusal::new(StatusCode::NOT_FOUND, "no such avatar"));
    };
    let offer = match SdpOffer::read(body).await {
        Ok(SdpOffer(offer)) => offer,
        Err(r) => return refused(r),
    };
    let offer = offer.as_str();
    let refused = |code, why: &str| refused(Refusal::new(code, why));
    let viewer = match publisher.add_viewer(offer).await {
        Ok(v) => v,
        Err(ViewerError::Full) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many viewers; try again later",
            )
        }
        Err(ViewerError::BadOffer(why)) => return refused(StatusCode::BAD_REQUEST, &why),
        Err(e) => return refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    stats.viewers.fetch_add(1, Ordering::Relaxed);
    let mut r = (StatusCode::CREATED, viewer.answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    // `raw` is a number (it found the avatar): safe in a header.
    if let Ok(v) = HeaderValue::from_str(&format!("/avatars/{raw}/viewers/{}", viewer.id)) {
        h.insert(header::LOCATION, v);
    }
    cors(r)
}

/// `DELETE /avatars/{id}/viewers/{viewer}`: 204, or 404 for no such viewer.
async fn leave(
    State(shared): State<Arc<AvatarServerState>>,
    Path((raw, viewer)): Path<(String, String)>,
) -> Response {
    let (Some(publisher), Some(viewer)) = (publisher(&shared, &raw), number(&viewer)) else {
        return refuse(StatusCode::NOT_FOUND, "no such viewer");
    };
    if publisher.remove_viewer(viewer).await {
        cors(StatusCode::NO_CONTENT.into_response())
    } else {
        refuse(StatusCode::NOT_FOUND, "no such viewer")
    }
}

/// `GET /avatars/{id}/viewers/{viewer}`: where its tracks' RTP timestamps
/// start (pts 0 of the voice's clock), and the publisher's counters.
async fn viewer(
    State(shared): State<Arc<AvatarServerState>>,
    Path((raw, viewer)): Path<(String, String)>,
) -> Response {
    let found =
        publisher(&shared, &raw).and_then(|p| Some((p.origins(number(&viewer)?)?, p.stats())));
    let Some(((voice_origin, face_origin), s)) = found else {
        return refuse(StatusCode::NOT_FOUND, "no such viewer");
    };
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

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
//! With [`Publishing::keep_reports`] (tests) a page may also post what it
//! received to `…/report`; a real server answers those with 404.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::publish::{Publisher, ViewerError};
use crate::server::Shared;

/// How a server publishes its avatars to viewers.
#[derive(Debug, Clone)]
pub struct Publishing {
    /// Opus bit rate of the voice, bits per second.
    pub voice_bitrate: u32,
    /// VP8 bit rate of the face, kbit/s.
    pub video_bitrate_kbps: u32,
    /// Viewers of one avatar at once; one more is a 503.
    pub max_viewers: usize,
    /// Viewers must carry `Authorization: Bearer TOKEN` signed with this
    /// (SPEC S3); `None` takes any viewer.
    pub viewer_secret: Option<String>,
    /// Keeps what a page posts back as its report (tests only).
    pub keep_reports: bool,
}

impl Default for Publishing {
    fn default() -> Self {
        Self {
            voice_bitrate: 48_000,
            video_bitrate_kbps: 800,
            max_viewers: 8,
            viewer_secret: None,
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

/// The longest offer taken; a browser's is 4–6 KiB.
const MAX_OFFER_BYTES: usize = sotto_net::call::MAX_OFFER_BYTES;
/// A report a test page posts: a minute of 48 kHz f32 voice and a few
/// thousand frames' numbers.
const REPORT_LIMIT: usize = 16 << 20;
/// Reports kept at once; the oldest goes.
const REPORTS_KEPT: usize = 8;

/// The routes, for a server that publishes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/watch", get(page))
        .route("/avatars", get(list))
        .route(
            "/avatars/{id}/viewers",
            axum::routing::post(add)
                .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES + 1))
                .options(preflight),
        )
        .route(
            "/avatars/{id}/viewers/{viewer}",
            get(viewer).delete(leave).options(preflight),
        )
        .route(
            "/avatars/{id}/viewers/{viewer}/report",
            axum::routing::post(put_report)
                .layer(DefaultBodyLimit::max(REPORT_LIMIT))
                .get(report),
        )
}

/// `r` answerable to a page of any origin (CORS) for `methods`, its
/// `Location` readable there. The call server's routes use it too.
pub fn with_cors(mut r: Response, methods: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
    r
}

fn cors(r: Response) -> Response {
    with_cors(r, "GET, POST, DELETE, OPTIONS")
}

fn refuse(code: StatusCode, why: &str) -> Response {
    cors((code, why.to_owned()).into_response())
}

fn json(value: &serde_json::Value) -> Response {
    let mut r = value.to_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cors(r)
}

async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

async fn page() -> Html<&'static str> {
    Html(include_str!("watch.html"))
}

/// A number in a path; anything else (or one too long to be ours) is none.
fn number(raw: &str) -> Option<u64> {
    if raw.len() > 20 {
        return None;
    }
    raw.parse().ok()
}

fn publisher(shared: &Shared, raw: &str) -> Option<Publisher> {
    let id = number(raw)?;
    let avatars = shared.avatars.lock().ok()?;
    avatars
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.publisher.clone())
}

/// `GET /avatars`: id, participant, room and viewers of each avatar
/// playing now.
async fn list(State(shared): State<Arc<Shared>>) -> Response {
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
    State(shared): State<Arc<Shared>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let stats = &shared.stats;
    let refused = |code, why: &str| {
        stats.viewers_refused.fetch_add(1, Ordering::Relaxed);
        refuse(code, why)
    };
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"));
    if !sdp_type {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be application/sdp",
        );
    }
    if body.len() > MAX_OFFER_BYTES {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too long");
    }
    let Some(publishing) = &shared.config.publish else {
        return refused(StatusCode::NOT_FOUND, "this server publishes nothing");
    };
    if let Some(secret) = &publishing.viewer_secret {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = token else {
            return refused(StatusCode::UNAUTHORIZED, "a bearer token is required");
        };
        if let Err(e) = crate::token::verify(token, secret) {
            return refused(StatusCode::UNAUTHORIZED, &e.to_string());
        }
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return refused(StatusCode::BAD_REQUEST, "the offer is not text");
    };
    let Some(publisher) = publisher(&shared, &raw) else {
        return refused(StatusCode::NOT_FOUND, "no such avatar");
    };
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
    State(shared): State<Arc<Shared>>,
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
    State(shared): State<Arc<Shared>>,
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
        "voice_clock": sotto_net::opus::OPUS_RATE,
        "face_clock": sotto_net::vp8::VIDEO_RATE,
        "frames_encoded": s.frames_encoded,
        "voice_packets": s.voice_packets,
        "dropped": s.dropped,
        "encoder_dropped": s.encoder_dropped,
        "key_frames_asked": s.key_frames_asked,
    }))
}

/// The report slot of a viewer, or why there is none (a 404).
fn report_key(shared: &Shared, raw: &str, viewer: &str) -> Result<(u64, u64), &'static str> {
    if !shared
        .config
        .publish
        .as_ref()
        .is_some_and(|p| p.keep_reports)
    {
        return Err("reports are not kept");
    }
    match (number(raw), number(viewer)) {
        (Some(a), Some(v)) => Ok((a, v)),
        _ => Err("no such viewer"),
    }
}

/// `POST …/report`: what a test page received, kept as it came.
async fn put_report(
    State(shared): State<Arc<Shared>>,
    Path((raw, viewer)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let key = match report_key(&shared, &raw, &viewer) {
        Ok(k) => k,
        Err(why) => return refuse(StatusCode::NOT_FOUND, why),
    };
    if let Ok(mut reports) = shared.reports.lock() {
        if reports.len() >= REPORTS_KEPT {
            reports.remove(0);
        }
        reports.push((key, body));
    }
    cors(StatusCode::NO_CONTENT.into_response())
}

/// `GET …/report`: the report a page posted; 404 until there is one.
async fn report(
    State(shared): State<Arc<Shared>>,
    Path((raw, viewer)): Path<(String, String)>,
) -> Response {
    let key = match report_key(&shared, &raw, &viewer) {
        Ok(k) => k,
        Err(why) => return refuse(StatusCode::NOT_FOUND, why),
    };
    let found = shared
        .reports
        .lock()
        .ok()
        .and_then(|r| r.iter().find(|(k, _)| *k == key).map(|(_, b)| b.clone()));
    match found {
        Some(bytes) => cors(bytes.into_response()),
        None => refuse(StatusCode::NOT_FOUND, "no report"),
    }
}

//! What a test can ask the call server for when it keeps recordings
//! (`ServeConfig::keep_recordings`): what the page heard (it posts it
//! back) and what the call's microphone brought. The routes exist only
//! with the `test-routes` feature, never in the program a user runs.
//!
//! The page posts to its call's location with the call's key; a test,
//! which never sees the key, reads by the call's ordinal (the n-th taken)
//! under `/test/calls/{n}/…`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use super::{cors, refuse, with_call, CallServerState};

/// The routes: `POST /calls/{id}/recording`, `GET
/// /test/calls/{n}/recording`, `/test/calls/{n}/face`, `GET
/// /test/calls/{n}/mic`.
pub(super) fn routes() -> Router<Arc<CallServerState>> {
    Router::new()
        .route(
            "/calls/{id}/recording",
            post(put)
                .layer(DefaultBodyLimit::max(RECORDING_LIMIT))
                .options(crate::http::preflight),
        )
        .route(
            "/test/calls/{n}/recording",
            get(heard)
                .post(put_nth)
                .layer(DefaultBodyLimit::max(RECORDING_LIMIT)),
        )
        .route(
            "/test/calls/{n}/face",
            get(face)
                .post(put_face)
                .layer(DefaultBodyLimit::max(FACE_LIMIT)),
        )
        .route("/test/calls/{n}/mic", get(mic))
        .route("/test/calls/{n}/events", get(events))
        .route("/test/calls/{n}/stats", get(stats))
}

/// A recording a test page posts back: 60 s of 48 kHz f32 at most.
const RECORDING_LIMIT: usize = 60 * 48_000 * 4;
/// The page's report beside it (JSON: when the first sound played, the
/// jitter buffer's delay): a few dozen bytes.
const REPORT_LIMIT: usize = 1024;
/// What a room page saw of the agent's face (JSON: each frame's time and
/// mouth, the voice's level beside them).
const FACE_LIMIT: usize = 256 << 10;
/// Microphone samples kept per call: 60 s of 48 kHz mono.
const MIC_LIMIT: usize = 60 * 48_000;
/// The header the page's report comes in.
const REPORT: &str = "x-sotto-report";

/// One call's recordings.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    heard: Option<(Vec<u8>, String)>,
    face: Option<axum::body::Bytes>,
    mic: Vec<f32>,
}

impl Recorded {
    /// Keeps a chunk of the microphone, up to [`MIC_LIMIT`] samples.
    fn keep_mic(&mut self, chunk: &[f32]) {
        let room = MIC_LIMIT.saturating_sub(self.mic.len());
        self.mic.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// A keeper of the call's microphone into `recorded`.
pub(super) fn mic_keeper(recorded: Arc<std::sync::Mutex<Recorded>>) -> super::agent::MicKeeper {
    Box::new(move |chunk| {
        if let Ok(mut r) = recorded.lock() {
            r.keep_mic(chunk);
        }
    })
}

/// What `f` reads of the n-th call taken, or why there is none (a 404).
fn nth<T>(
    shared: &CallServerState,
    raw: &str,
    f: impl FnOnce(&super::Live) -> T,
) -> Result<T, &'static str> {
    if !shared.config.keep_recordings {
        return Err("recordings are not kept");
    }
    let n: u64 = raw.parse().map_err(|_| "no such call")?;
    let calls = shared.calls.lock().map_err(|_| "no such call")?;
    calls
        .values()
        .find(|l| l.ordinal == n)
        .map(f)
        .ok_or("no such call")
}

/// The recordings of the n-th call taken.
fn slot(
    shared: &CallServerState,
    raw: &str,
) -> Result<Arc<std::sync::Mutex<Recorded>>, &'static str> {
    nth(shared, raw, |l| Arc::clone(&l.recorded))
}

/// `GET /test/calls/{n}/stats`: the n-th call's counters.
async fn stats(State(shared): State<Arc<CallServerState>>, Path(raw): Path<String>) -> Response {
    match nth(&shared, &raw, |l| l.stats.clone()) {
        Ok(Some(reader)) => super::stats_json(&*reader),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "not set up yet"),
        Err(why) => refuse(StatusCode::NOT_FOUND, why),
    }
}

/// `GET /test/calls/{n}/events`: the n-th call's events, as its page
/// reads them.
async fn events(State(shared): State<Arc<CallServerState>>, Path(raw): Path<String>) -> Response {
    match nth(&shared, &raw, |l| Arc::clone(&l.log)) {
        Ok(log) => crate::http::typed(
            log.lock().map(|l| l.since(0)).unwrap_or_default(),
            "application/json",
        ),
        Err(why) => refuse(StatusCode::NOT_FOUND, why),
    }
}

/// `POST /calls/{id}/recording`: what the page heard (f32 little-endian,
/// 48 kHz mono) and its report in the `X-Sotto-Report` header.
async fn put(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !shared.config.keep_recordings {
        return refuse(StatusCode::NOT_FOUND, "recordings are not kept");
    }
    let slot = match with_call(&shared, &headers, &raw, |l| Arc::clone(&l.recorded)) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    keep(&slot, &headers, &body)
}

/// `POST /test/calls/{n}/recording`: what a test page that has no call
/// key (the room page) heard, as [`put`] takes it.
async fn put_nth(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let slot = match slot(&shared, &raw) {
        Ok(s) => s,
        Err(why) => return refuse(StatusCode::NOT_FOUND, why),
    };
    keep(&slot, &headers, &body)
}

/// Keeps a page's recording and its report in `slot`.
fn keep(slot: &std::sync::Mutex<Recorded>, headers: &HeaderMap, body: &[u8]) -> Response {
    let report = headers
        .get(REPORT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("{}");
    if report.len() > REPORT_LIMIT {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the report is too long");
    }
    if let Ok(mut r) = slot.lock() {
        r.heard = Some((body.to_vec(), report.to_owned()));
    }
    cors(StatusCode::NO_CONTENT.into_response())
}

/// `GET /test/calls/{n}/recording`: the recording a page posted, its report in
/// `X-Sotto-Report`; 404 until there is one.
async fn heard(State(shared): State<Arc<CallServerState>>, Path(raw): Path<String>) -> Response {
    let slot = match slot(&shared, &raw) {
        Ok(s) => s,
        Err(why) => return refuse(StatusCode::NOT_FOUND, why),
    };
    let got = slot.lock().ok().and_then(|r| r.heard.clone());
    match got {
        Some((bytes, report)) => {
            let mut r = bytes.into_response();
            if let Ok(v) = HeaderValue::from_str(&report) {
                r.headers_mut().insert(REPORT, v);
            }
            r
        }
        None => refuse(StatusCode::NOT_FOUND, "no recording"),
    }
}

/// `POST /test/calls/{n}/face`: what the room page saw of the face.
async fn put_face(
    State(shared): State<Arc<CallServerState>>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match slot(&shared, &raw) {
        Ok(slot) => {
            if let Ok(mut r) = slot.lock() {
                r.face = Some(body);
            }
            cors(StatusCode::NO_CONTENT.into_response())
        }
        Err(why) => refuse(StatusCode::NOT_FOUND, why),
    }
}

/// `GET /test/calls/{n}/face`: what the room page posted of the face; 404
/// until it has.
async fn face(State(shared): State<Arc<CallServerState>>, Path(raw): Path<String>) -> Response {
    let got = slot(&shared, &raw).map(|s| s.lock().ok().and_then(|r| r.face.clone()));
    match got {
        Ok(Some(body)) => crate::http::typed(body, "application/json"),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "no face report"),
        Err(why) => refuse(StatusCode::NOT_FOUND, why),
    }
}

/// `GET /test/calls/{n}/mic`: the call's microphone as the agent got it so
/// far (f32 little-endian at the engine's rate and channels).
async fn mic(State(shared): State<Arc<CallServerState>>, Path(raw): Path<String>) -> Response {
    let slot = match slot(&shared, &raw) {
        Ok(s) => s,
        Err(why) => return refuse(StatusCode::NOT_FOUND, why),
    };
    let bytes: Vec<u8> = slot
        .lock()
        .map(|r| r.mic.iter().flat_map(|s| s.to_le_bytes()).collect())
        .unwrap_or_default();
    bytes.into_response()
}

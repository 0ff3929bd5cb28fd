//! What a test page received, posted back for the test to read: the page
//! posts to its viewer's location with the viewer's key (`POST
//! /avatars/{id}/viewers/{viewer}/report`), a test reads the avatar's
//! latest (`GET /test/avatars/{id}/report`). Only with the `test-routes`
//! feature, and then only when `ViewersConfig::keep_reports`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::AvatarServerState;
use crate::http::{refuse, with_cors as cors};

/// A report a test page posts: a minute of 48 kHz f32 voice and a few
/// thousand frames' numbers.
const REPORT_LIMIT: usize = 16 << 20;
/// Reports kept at once; the oldest goes.
const REPORTS_KEPT: usize = 8;

/// The routes.
pub(super) fn routes() -> Router<Arc<AvatarServerState>> {
    Router::new()
        .route(
            "/avatars/{id}/viewers/{viewer}/report",
            axum::routing::post(put_report)
                .layer(DefaultBodyLimit::max(REPORT_LIMIT))
                .options(crate::http::preflight),
        )
        .route("/test/avatars/{id}/report", axum::routing::get(report))
}

fn kept(shared: &AvatarServerState) -> bool {
    shared
        .config
        .publish
        .as_ref()
        .is_some_and(|p| p.keep_reports)
}

/// `POST …/report`: what a test page received, kept as it came.
async fn put_report(
    State(shared): State<Arc<AvatarServerState>>,
    Path((raw, viewer)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !kept(&shared) {
        return refuse(StatusCode::NOT_FOUND, "reports are not kept");
    }
    if let Err(r) = super::viewers::viewer_of(&shared, &headers, &raw, &viewer, false) {
        return r.into_response();
    }
    if let Ok(mut reports) = shared.reports.lock() {
        if reports.len() >= REPORTS_KEPT {
            reports.remove(0);
        }
        reports.push((raw, body.to_vec()));
    }
    cors(StatusCode::NO_CONTENT.into_response())
}

/// `GET /test/avatars/{id}/report`: the latest report a page posted for
/// avatar `id`; 404 until there is one.
async fn report(State(shared): State<Arc<AvatarServerState>>, Path(raw): Path<String>) -> Response {
    if !kept(&shared) {
        return refuse(StatusCode::NOT_FOUND, "reports are not kept");
    }
    let found = shared.reports.lock().ok().and_then(|r| {
        r.iter()
            .rev()
            .find(|(k, _)| *k == raw)
            .map(|(_, b)| b.clone())
    });
    match found {
        Some(bytes) => bytes.into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no report"),
    }
}

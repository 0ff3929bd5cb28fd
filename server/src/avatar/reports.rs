//! What a test page received, posted back for the test to read
//! (`POST`/`GET /avatars/{id}/viewers/{viewer}/report`). Only with the
//! `test-routes` feature, and then only when `ViewersConfig::keep_reports`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::AvatarServerState;
use crate::http::{path_number as number, refuse, with_cors as cors};

/// A report a test page posts: a minute of 48 kHz f32 voice and a few
/// thousand frames' numbers.
const REPORT_LIMIT: usize = 16 << 20;
/// Reports kept at once; the oldest goes.
const REPORTS_KEPT: usize = 8;

/// The routes.
pub(super) fn routes() -> Router<Arc<AvatarServerState>> {
    Router::new().route(
        "/avatars/{id}/viewers/{viewer}/report",
        axum::routing::post(put_report)
            .layer(DefaultBodyLimit::max(REPORT_LIMIT))
            .get(report),
    )
}

/// The report slot of a viewer, or why there is none (a 404).
fn report_key(
    shared: &AvatarServerState,
    raw: &str,
    viewer: &str,
) -> Result<(u64, u64), &'static str> {
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
    State(shared): State<Arc<AvatarServerState>>,
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
    State(shared): State<Arc<AvatarServerState>>,
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

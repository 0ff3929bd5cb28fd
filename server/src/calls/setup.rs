//! A call's set-up (SPEC S5–S7): its place reserved, admission asked,
//! the offer answered and the session made, in a task of its own so a
//! client that goes away midway leaves nothing behind.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sotto::{OutputConfig, SessionConfig, SessionOutput};
use tokio::sync::oneshot;

#[cfg(feature = "test-routes")]
use super::recordings;
use super::{agent, attach_avatar, CallServerState, Live, EVENTS_KEPT};
use crate::http::{
    bearer, created_sdp, random_id, refuse, Authorized, OfferHeaders, Refusal, SdpOffer,
};

/// `503` with `Retry-After` (SPEC S7): the server has no room now.
fn busy(why: &str) -> Response {
    refuse(StatusCode::SERVICE_UNAVAILABLE, why)
}

/// A call's place in the server's table until the call is set up; a set-up
/// that fails or is abandoned midway takes it out again when dropped.
pub(super) struct Reserved {
    shared: Arc<CallServerState>,
    pub(super) id: String,
    pub(super) kept: bool,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if !self.kept {
            if let Ok(mut calls) = self.shared.calls.lock() {
                calls.remove(&self.id);
            }
        }
    }
}

/// Takes a place for a new call, if the server and the participant have
/// room: 503 past `max_peers`, 429 past the participant's share.
pub(super) fn reserve(
    shared: &Arc<CallServerState>,
    token: Option<String>,
    participant: Option<String>,
) -> Result<(Reserved, u64, String), Refusal> {
    let stats = &shared.stats;
    let Ok(mut calls) = shared.calls.lock() else {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server state lost",
        ));
    };
    if calls.len() >= shared.config.limits.max_peers {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many calls; try again later",
        ));
    }
    if let Some(p) = &participant {
        let theirs = calls
            .values()
            .filter(|l| l.participant.as_ref() == Some(p))
            .count();
        if theirs >= shared.config.max_calls_per_participant {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "this participant has as many calls as it may",
            ));
        }
    }
    let id = random_id();
    let key = random_id();
    let ordinal = shared.taken.fetch_add(1, Ordering::Relaxed) + 1;
    calls.insert(
        id.clone(),
        Live {
            #[cfg(feature = "test-routes")]
            ordinal,
            key: key.clone(),
            token,
            participant,
            hang_up: None,
            ended: false,
            log: Arc::new(Mutex::new(agent::EventLog::new(EVENTS_KEPT))),
            #[cfg(feature = "test-routes")]
            recorded: Arc::new(Mutex::new(recordings::Recorded::default())),
            stats: None,
        },
    );
    let reserved = Reserved {
        shared: Arc::clone(shared),
        id,
        kept: false,
    };
    Ok((reserved, ordinal, key))
}

/// `POST /calls` (SPEC W3, S1–S3, S6, S7): 415 for a body that is not
/// `application/sdp`, 413 past [`MAX_OFFER_BYTES`], 401 for a missing or
/// bad token when one is required (or one living too long), 503 past the
/// call cap and 429 past the participant's, all before the body is read;
/// 408 for a body too slow, 400 for an offer that can never connect; 201
/// with the answer, the call's `Location` and its key otherwise.
///
/// The call is set up in a task of its own: a client that goes before its
/// answer leaves nothing behind (the call it would have had is ended at
/// once), wherever in the set-up it went.
pub(super) async fn create(
    State(shared): State<Arc<CallServerState>>,
    OfferHeaders: OfferHeaders,
    Authorized(claims): Authorized,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let stats = &shared.stats;
    let refused = |r: Refusal| {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        r.into_response()
    };
    if let Some(c) = &claims {
        let lifetime = c.exp.saturating_sub(c.iat);
        if lifetime > shared.config.max_token_lifetime.as_secs() {
            return refused(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid token: it lives too long for a call",
            ));
        }
    }
    // Room first, so that a full server reads no body.
    {
        let full = shared
            .calls
            .lock()
            .map_or(true, |c| c.len() >= shared.config.limits.max_peers);
        if full {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            return busy("too many calls; try again later");
        }
    }
    let offer = match SdpOffer::read(body, &shared.config.limits).await {
        Ok(SdpOffer(offer)) => offer,
        Err(r) => return refused(r),
    };
    // What can never connect is refused before a session is made.
    let rules = sotto_net::sdp::OfferRules {
        opus_audio: true,
        loopback: shared.config.call.bind.is_loopback(),
    };
    if let Err(why) = sotto_net::sdp::vet_offer(&offer, rules) {
        return refused(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("bad offer: {why}"),
        ));
    }
    // Only while the engine has the budget for one more (SPEC S7): the
    // calls already running come first.
    let permit = match shared.engine.admit() {
        Ok(p) => p,
        Err(why) => {
            stats.not_admitted.fetch_add(1, Ordering::Relaxed);
            let mut r = busy(&format!("not now: {why}"));
            let secs = why.retry_after().as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    };
    let token = claims.as_ref().and(bearer(&headers)).map(str::to_owned);
    let participant = claims.map(|c| c.participant_id);
    let (reserved, ordinal, key) = match reserve(&shared, token, participant.clone()) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let (answered, answer) = oneshot::channel();
    tokio::spawn(set_up(
        Arc::clone(&shared),
        (reserved, permit),
        ordinal,
        participant,
        offer,
        answered,
    ));
    match answer.await {
        Ok(Ok((id, sdp))) => created_sdp(sdp, &format!("/calls/{id}"), &key),
        Ok(Err(r)) => r,
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the call was lost"),
    }
}

/// What a set-up answers: the call's id and SDP answer, or the refusal.
type SetUp = Result<(String, String), Response>;

/// Sets up the call `reserved` holds a place for, and answers on
/// `answered`; when nobody is there to take the answer, ends the call.
/// The admission `permit` is held until the call connects or ends.
async fn set_up(
    shared: Arc<CallServerState>,
    (mut reserved, permit): (Reserved, sotto::CallPermit),
    ordinal: u64,
    participant: Option<String>,
    offer: String,
    answered: oneshot::Sender<SetUp>,
) {
    let stats = &shared.stats;
    let id = reserved.id.clone();
    let says = &shared.config.utterances;
    let say = Arc::clone(&says[(ordinal as usize - 1) % says.len()]);
    // A name from a token is shown, never used as a path; it is kept short.
    let name = participant.map_or_else(
        || format!("call-{ordinal}"),
        |n| crate::events::printable(&n),
    );
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
            stats.busy.fetch_add(1, Ordering::Relaxed);
            let _ = answered.send(Err(busy(&e.to_string())));
            return;
        }
    };
    let (answer, call) = match shared
        .engine
        .accept_call(&session, &offer, shared.config.call.clone())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let _ = shared.engine.remove_session(&session).await;
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let code = match e {
                sotto::SessionError::BadOffer(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let _ = answered.send(Err(refuse(code, &e.to_string())));
            return;
        }
    };
    let (hang_up, hung_up) = oneshot::channel();
    let found = shared.calls.lock().ok().and_then(|mut calls| {
        let live = calls.get_mut(&id)?;
        if live.ended {
            // Deleted while it was set up: over at once.
            let _ = hang_up.send(());
        } else {
            live.hang_up = Some(hang_up);
        }
        live.stats = Some(call.stats_reader());
        #[cfg(feature = "test-routes")]
        let mic_kept = shared
            .config
            .keep_recordings
            .then(|| recordings::mic_keeper(Arc::clone(&live.recorded)));
        #[cfg(not(feature = "test-routes"))]
        let mic_kept = None;
        Some((Arc::clone(&live.log), mic_kept))
    });
    let Some((log, mic_kept)) = found else {
        let _ = shared.engine.remove_session(&session).await;
        let _ = answered.send(Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "call lost")));
        return;
    };
    let avatar = match &shared.config.avatar {
        Some(a) => {
            let name = format!("call-{id}");
            attach_avatar(&shared.engine, &session, a, &name, &name).await
        }
        None => None,
    };
    // From here the call's own task owns its place in the table.
    reserved.kept = true;
    drop(reserved);
    stats.calls.fetch_add(1, Ordering::Relaxed);
    let (mut hung_up, gone) = (hung_up, answered.send(Ok((id.clone(), answer))).is_err());
    if gone {
        // Nobody took the answer: the call would only wait out its
        // connect timeout. It ends now.
        stats.abandoned.fetch_add(1, Ordering::Relaxed);
        hung_up = {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(());
            rx
        };
    }
    agent::run(
        shared.engine.clone(),
        session,
        agent::Link::Call(call),
        say,
        log,
        mic_kept,
        (hung_up, Some(permit)),
    )
    .await;
    if let Some(a) = avatar {
        a.detach();
    }
    if let Ok(mut calls) = shared.calls.lock() {
        calls.remove(&id);
    }
    stats.ended.fetch_add(1, Ordering::Relaxed);
}

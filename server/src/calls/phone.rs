//! Phone calls (SPEC T1, T4, S1–S5): a carrier hands a call over as a
//! WebSocket media stream, and the demo agent talks to the caller as it
//! does to a browser.
//!
//! - `POST /twilio/voice`: Twilio's voice webhook. The answer is TwiML that
//!   connects the call to `/twilio/stream` (`wss://` behind a TLS proxy, as
//!   `X-Forwarded-Proto` says, `ws://` otherwise, on the request's `Host`),
//!   with a single-use ticket as a `<Parameter>`. With a token secret, the
//!   webhook's URL must carry a call token (`?token=…`; Twilio cannot send
//!   a bearer): 401 otherwise.
//! - `GET /twilio/stream`: the WebSocket. Messages are at most
//!   [`MAX_MESSAGE`] bytes; the `start` must come within 5 s and carry a
//!   live ticket, or the socket is closed before any session is made.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sotto::{MediaStreamSocket, PhoneConfig, SessionConfig, WsMessage};
use sotto_net::phone::{Inbound, MAX_MESSAGE};
use tokio::sync::{mpsc, oneshot};

use super::{agent, refuse, setup, CallServerState};

/// How long a ticket handed out in TwiML stays good.
const TICKET_LIFE: Duration = Duration::from_secs(60);
/// Tickets outstanding at most: past it, the oldest go.
const MAX_TICKETS: usize = 1_024;
/// How long the carrier has to send its `start`.
const START_LIMIT: Duration = Duration::from_secs(5);
/// Messages queued each way between the socket and the call.
const SOCKET_QUEUE: usize = 64;
/// Messages taken before the `start` at most (`connected` is one).
const BEFORE_START: usize = 4;

/// The tickets TwiML has handed out and not yet used, with when each
/// lapses.
#[derive(Debug, Default)]
pub(super) struct Tickets(HashMap<String, Instant>);

impl Tickets {
    fn issue(&mut self) -> String {
        let now = Instant::now();
        self.0.retain(|_, until| *until > now);
        if self.0.len() >= MAX_TICKETS {
            if let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(k, _)| k.clone())
            {
                self.0.remove(&oldest);
            }
        }
        let ticket = crate::http::random_id();
        self.0.insert(ticket.clone(), now + TICKET_LIFE);
        ticket
    }

    /// Uses `ticket`: true once, while it lives.
    fn redeem(&mut self, ticket: &str) -> bool {
        self.0
            .remove(ticket)
            .is_some_and(|until| until > Instant::now())
    }
}

/// `POST /twilio/voice`, `GET /twilio/stream`.
pub(super) fn routes() -> Router<Arc<CallServerState>> {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/stream", get(stream))
}

/// A `Host` header fit to put in a URL: a name or address and a port.
fn host(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(header::HOST)?.to_str().ok()?;
    (!h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
    .then_some(h)
}

/// `POST /twilio/voice`: TwiML connecting the call to the stream.
async fn voice(
    State(shared): State<Arc<CallServerState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !shared.config.phone {
        return refuse(StatusCode::NOT_FOUND, "phone calls are not served here");
    }
    if let Some(secret) = &shared.config.token_secret {
        let good = query
            .get("token")
            .is_some_and(|t| crate::token::verify(t, secret).is_ok());
        if !good {
            shared.stats.unauthorised.fetch_add(1, Ordering::Relaxed);
            return refuse(StatusCode::UNAUTHORIZED, "the webhook's URL needs ?token=");
        }
    }
    let Some(host) = host(&headers) else {
        return refuse(StatusCode::BAD_REQUEST, "no usable Host header");
    };
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let scheme = if secure { "wss" } else { "ws" };
    let Ok(ticket) = shared.tickets.lock().map(|mut t| t.issue()) else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "server state lost");
    };
    let twiml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Connect>\
         <Stream url=\"{scheme}://{host}/twilio/stream\">\
         <Parameter name=\"ticket\" value=\"{ticket}\"/></Stream></Connect></Response>"
    );
    crate::http::typed(twiml, "text/xml")
}

/// `GET /twilio/stream`: the carrier's WebSocket.
async fn stream(State(shared): State<Arc<CallServerState>>, ws: WebSocketUpgrade) -> Response {
    if !shared.config.phone {
        return refuse(StatusCode::NOT_FOUND, "phone calls are not served here");
    }
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(shared, socket))
        .into_response()
}

/// Closes `socket` with `code` and `reason`.
async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.chars().take(100).collect::<String>().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The messages up to the `start`, once its ticket is good; or the close
/// to send.
async fn until_start(
    shared: &CallServerState,
    socket: &mut WebSocket,
) -> Result<Vec<String>, (u16, &'static str)> {
    let mut taken = Vec::new();
    let read = async {
        while let Some(Ok(message)) = socket.recv().await {
            let text = match message {
                Message::Text(text) => text.to_string(),
                Message::Close(_) => break,
                _ => continue,
            };
            match Inbound::parse(&text) {
                Ok(Inbound::Connected { .. }) if taken.len() < BEFORE_START => taken.push(text),
                Ok(Inbound::Start(start)) => {
                    let ticket = start
                        .custom_parameters
                        .iter()
                        .find(|(k, _)| k == "ticket")
                        .map(|(_, v)| v.as_str());
                    let good = ticket.is_some_and(|t| {
                        shared
                            .tickets
                            .lock()
                            .is_ok_and(|mut tickets| tickets.redeem(t))
                    });
                    if !good {
                        return Err((1008, "no live ticket in the start"));
                    }
                    taken.push(text);
                    return Ok(());
                }
                _ => return Err((1002, "the stream must open with connected and start")),
            }
        }
        Err((1000, "the carrier went before the start"))
    };
    match tokio::time::timeout(START_LIMIT, read).await {
        Ok(Ok(())) => Ok(taken),
        Ok(Err(e)) => Err(e),
        Err(_) => Err((1008, "the stream never started")),
    }
}

/// One phone call: checked, admitted, given a session and the agent.
async fn serve(shared: Arc<CallServerState>, mut socket: WebSocket) {
    let taken = match until_start(&shared, &mut socket).await {
        Ok(t) => t,
        Err((code, why)) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            close(socket, code, why).await;
            return;
        }
    };
    let permit = match shared.engine.admit() {
        Ok(p) => p,
        Err(why) => {
            shared.stats.not_admitted.fetch_add(1, Ordering::Relaxed);
            close(socket, 1013, &format!("not now: {why}")).await;
            return;
        }
    };
    let (mut reserved, ordinal, _key) = match setup::reserve(&shared, None, None) {
        Ok(r) => r,
        Err(_) => {
            close(socket, 1013, "too many calls").await;
            return;
        }
    };
    let says = &shared.config.utterances;
    let say = Arc::clone(&says[(ordinal as usize - 1) % says.len()]);
    let session = match shared
        .engine
        .create_session(SessionConfig {
            name: format!("phone-{ordinal}"),
            input: say.input,
            ..SessionConfig::default()
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            shared.stats.busy.fetch_add(1, Ordering::Relaxed);
            close(socket, 1013, &e.to_string()).await;
            return;
        }
    };
    let (in_tx, incoming) = mpsc::channel(SOCKET_QUEUE);
    let (outgoing, mut out_rx) = mpsc::channel(SOCKET_QUEUE);
    for text in taken {
        let _ = in_tx.try_send(WsMessage::Text(text));
    }
    let config = PhoneConfig {
        processing: shared.config.call.processing,
        ..PhoneConfig::default()
    };
    let leg = shared
        .engine
        .accept_media_stream(&session, MediaStreamSocket { incoming, outgoing }, config)
        .await;
    let leg = match leg {
        Ok(l) => l,
        Err(e) => {
            let _ = shared.engine.remove_session(&session).await;
            close(socket, 1011, &e.to_string()).await;
            return;
        }
    };
    let id = reserved.id.clone();
    let (hang_up, hung_up) = oneshot::channel();
    let found = shared.calls.lock().ok().and_then(|mut calls| {
        let live = calls.get_mut(&id)?;
        live.hang_up = Some(hang_up);
        #[cfg(feature = "test-routes")]
        let mic_kept = shared
            .config
            .keep_recordings
            .then(|| super::recordings::mic_keeper(Arc::clone(&live.recorded)));
        #[cfg(not(feature = "test-routes"))]
        let mic_kept = None;
        Some((Arc::clone(&live.log), mic_kept))
    });
    let Some((log, mic_kept)) = found else {
        let _ = shared.engine.remove_session(&session).await;
        return;
    };
    reserved.kept = true;
    drop(reserved);
    shared.stats.calls.fetch_add(1, Ordering::Relaxed);
    // The socket's two directions, bridged to the leg's channels.
    let pump = tokio::spawn(async move {
        loop {
            tokio::select! {
                m = socket.recv() => {
                    let m = match m {
                        Some(Ok(Message::Text(t))) => WsMessage::Text(t.to_string()),
                        Some(Ok(Message::Binary(b))) => WsMessage::Binary(b.to_vec()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    };
                    // A carrier faster than the leg reads loses messages,
                    // never grows memory (the leg closes a flood itself).
                    let _ = in_tx.try_send(m);
                }
                out = out_rx.recv() => match out {
                    Some(WsMessage::Text(t)) => {
                        if socket.send(Message::Text(t.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(WsMessage::Binary(b)) => {
                        if socket.send(Message::Binary(b.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(WsMessage::Close(code, reason)) => {
                        close(socket, code, &reason).await;
                        return;
                    }
                    None => break,
                },
            }
        }
    });
    agent::run(
        shared.engine.clone(),
        session,
        agent::Link::Phone(leg),
        say,
        log,
        mic_kept,
        (hung_up, Some(permit)),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    if let Ok(mut calls) = shared.calls.lock() {
        calls.remove(&id);
    }
    shared.stats.ended.fetch_add(1, Ordering::Relaxed);
}

//! Publishing a session's output to a WHIP endpoint (SPEC F2; RFC 9725),
//! the standard ingest of most SFUs: the offer POSTed whole (no
//! trickle), `201 Created` with the answer and the resource's `Location`,
//! `DELETE` of that resource on hang-up. The media is a call's: Opus whose
//! RTP timestamps are the frames' pts, sent once connected.

use std::sync::Arc;
use std::time::Duration;

use sotto_media::call::{Counters, Encoded, Media, MicOut, Work};
use sotto_media::opus::OpusEncoder;
use sotto_net::call::{accept_answer, offer_publish, MAX_OFFER_BYTES};
use tokio::sync::{mpsc, oneshot};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::call::Outgoing;
use crate::{CallConfig, CallEvent, CallStats, Engine, RoomError, SessionError, SessionHandle};

/// A session publishing to a WHIP endpoint. Dropping it hangs up (the
/// resource is deleted).
pub struct WhipHandle {
    resource: String,
    counters: Arc<Counters>,
    events: mpsc::Receiver<CallEvent>,
    hang_up: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for WhipHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipHandle")
            .field("resource", &self.resource)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WhipHandle {
    /// The resource the endpoint made (its `Location`), deleted on hang-up.
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> CallStats {
        self.counters.snapshot()
    }

    /// The next event ([`CallEvent::Connected`], [`CallEvent::Ended`]);
    /// `None` once over and read.
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    /// Stops publishing: the resource deleted, the peer closed, the
    /// session's output free again.
    pub async fn hang_up(mut self) {
        if let Some(tx) = self.hang_up.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WhipHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.hang_up.take() {
            let _ = tx.send(());
        }
    }
}

/// How long the endpoint may take to answer, and to delete on hang-up.
const WHIP_TIMEOUT: Duration = Duration::from_secs(5);

impl Engine {
    /// Publishes `session`'s own output to the WHIP endpoint at `url`
    /// (with `token` as its bearer token when it asks for one): offers,
    /// takes the answer, and sends once connected. `config` as for a call
    /// (its microphone settings unused: WHIP only sends).
    ///
    /// # Errors
    /// [`SessionError::Room`]: the endpoint unreachable or slow
    /// (`Unreachable`), refusing the token (`Unauthorized`), unknown
    /// (`NoSuchRoom`), refusing otherwise (`Refused` with the HTTP status),
    /// answering without a `Location` or SDP (`Protocol`); the
    /// [`Engine::accept_call`] errors for the session and the media.
    pub async fn publish_whip(
        &self,
        session: &SessionHandle,
        url: &str,
        token: Option<&str>,
        config: CallConfig,
    ) -> Result<WhipHandle, SessionError> {
        self.can_carry_media(&config)?;
        let endpoint = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| RoomError::Config(format!("not an http(s) URL: {url:?}")))?;
        let rate = self.config().sample_rate;
        let channels = self.config().channels;
        let opus_channels = channels.min(2);
        let encoder = OpusEncoder::new(opus_channels, config.packet, config.bitrate, 10)
            .map_err(|e| SessionError::CallConfig(e.to_string()))?;
        let frames = session.frames()?;
        let http = reqwest::Client::builder()
            .timeout(WHIP_TIMEOUT)
            .build()
            .map_err(|e| RoomError::Unreachable(e.to_string()))?;
        let (offer, mut peer) = match offer_publish(config.bind).await {
            Ok(p) => p,
            Err(e) => {
                frames.release();
                return Err(SessionError::Net(e.0));
            }
        };
        let posted = post_offer(&http, &endpoint, token, offer).await;
        let resource = match posted {
            Ok((answer, resource)) => match accept_answer(&mut peer, &answer).await {
                Ok(()) => Ok(resource),
                Err(e) => {
                    delete(&http, &resource, token).await;
                    Err(RoomError::Protocol(e.to_string()))
                }
            },
            Err(e) => Err(e),
        };
        let resource = match resource {
            Ok(r) => r,
            Err(e) => {
                let _ = peer.peer.close().await;
                frames.release();
                return Err(e.into());
            }
        };
        let counters = Arc::new(Counters::default());
        let (events_tx, events) = mpsc::channel(8);
        let (hang_up, hung_up) = oneshot::channel();
        // Nothing comes back over WHIP: the microphone goes nowhere.
        let (mic_tx, _) = mpsc::channel(1);
        let media = Media {
            encoder: sotto_media::call::Encoder::Opus(encoder),
            packet: config.packet,
            opus_channels,
            echo: None,
            mic: MicOut::new(rate, channels, Arc::clone(&counters), mic_tx),
            counters: Arc::clone(&counters),
            dtx: config.dtx,
        };
        let outgoing = Outgoing::new(rate, channels, opus_channels, config.packet);
        let telemetry = self.renderer_telemetry();
        let lag = self.reader_lag();
        let task = {
            let counters = Arc::clone(&counters);
            let resource = resource.clone();
            let token = token.map(str::to_owned);
            tokio::spawn(async move {
                let (work, work_in) = mpsc::channel::<Work>(32);
                let (encoded_tx, mut encoded) = mpsc::channel::<Encoded>(8);
                let media_thread =
                    tokio::task::spawn_blocking(move || media.run(work_in, encoded_tx));
                let mut frames = frames;
                let mut outgoing = outgoing;
                let mut hung_up = hung_up;
                let mut up = false;
                let connect = tokio::time::sleep(config.connect_timeout);
                tokio::pin!(connect);
                let reason = loop {
                    tokio::select! {
                        _ = &mut hung_up => break "hung up",
                        () = &mut connect, if !up => break "the endpoint's media never connected",
                        state = peer.events.state.recv() => match state {
                            Some(RTCPeerConnectionState::Connected) => {
                                up = true;
                                let _ = events_tx.try_send(CallEvent::Connected);
                            }
                            Some(RTCPeerConnectionState::Failed
                                | RTCPeerConnectionState::Disconnected
                                | RTCPeerConnectionState::Closed) | None => break "the endpoint is gone",
                            Some(_) => {}
                        },
                        frame = frames.next_frame() => {
                            let Ok(frame) = frame else { break "the session's output closed" };
                            if up {
                                outgoing.frame(&frame, &telemetry, &lag, &work, &counters);
                            }
                        },
                        Some(packet) = encoded.recv() => {
                            outgoing.send(&mut peer.sender, &packet, &telemetry, &counters).await;
                        },
                    }
                };
                drop(work);
                drop(encoded);
                let _ = media_thread.await;
                let _ = peer.peer.close().await;
                delete(&http, &resource, token.as_deref()).await;
                frames.release();
                let _ = events_tx.try_send(CallEvent::Ended {
                    reason: reason.to_owned(),
                });
            })
        };
        Ok(WhipHandle {
            resource,
            counters,
            events,
            hang_up: Some(hang_up),
            task: Some(task),
        })
    }
}

/// POSTs `offer` to `endpoint`: the answer and the resource's URL.
async fn post_offer(
    http: &reqwest::Client,
    endpoint: &reqwest::Url,
    token: Option<&str>,
    offer: String,
) -> Result<(String, String), RoomError> {
    let mut request = http
        .post(endpoint.clone())
        .header("content-type", "application/sdp")
        .header("accept", "application/sdp")
        .body(offer);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| RoomError::Unreachable(e.without_url().to_string()))?;
    let status = response.status().as_u16();
    match status {
        201 => {}
        401 | 403 => return Err(RoomError::Unauthorized(format!("HTTP {status}"))),
        404 => {
            return Err(RoomError::NoSuchRoom(
                "no such WHIP endpoint (HTTP 404)".into(),
            ))
        }
        _ => {
            return Err(RoomError::Refused {
                code: u32::from(status),
                reason: "the WHIP endpoint refused the offer".into(),
            })
        }
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| endpoint.join(l).ok())
        .ok_or_else(|| RoomError::Protocol("a 201 without a Location".into()))?;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| RoomError::Unreachable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_OFFER_BYTES {
            return Err(RoomError::Protocol("an answer too long".into()));
        }
        body.extend_from_slice(&chunk);
    }
    let answer =
        String::from_utf8(body).map_err(|_| RoomError::Protocol("an answer not text".into()))?;
    if !answer.starts_with("v=0") {
        return Err(RoomError::Protocol("a 201 without SDP".into()));
    }
    Ok((answer, location.to_string()))
}

/// DELETEs the resource (once; what the endpoint says is its business).
async fn delete(http: &reqwest::Client, resource: &str, token: Option<&str>) {
    let mut request = http.delete(resource);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let _ = request.send().await;
}

//! Janus's HTTP transport as a participant uses it: requests are POSTs
//! answered at once (`success`, `ack`, `error`); the plugin's events come
//! back through a long poll (`GET /janus/<session>`), which also keeps the
//! session alive. HTTP rather than WebSocket: it is the transport every
//! Janus enables by default, it needs no extra dependency, and a long
//! poll that fails is as clear a sign of a lost Janus as a closed socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sotto_net::janus::{Jsep, Reply, Request, MAX_REPLY_BYTES};

use super::RoomError;

/// How long Janus holds a long poll with nothing to say (30 s), with room
/// to spare.
const POLL_LIMIT: Duration = Duration::from_secs(40);

/// Events one long poll may return.
const POLL_EVENTS: u32 = 10;

/// A Janus server, reached over HTTP.
pub(crate) struct Janus {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    request_timeout: Duration,
    transactions: AtomicU64,
}

impl Janus {
    /// Janus at `url` (`http://host:port/janus`).
    pub(crate) fn new(
        url: &str,
        token: Option<String>,
        request_timeout: Duration,
    ) -> Result<Self, RoomError> {
        let url = url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 1_024 {
            return Err(RoomError::Config(format!(
                "the SFU's address must be an http(s) URL, not {url:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(request_timeout)
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| RoomError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: url.to_owned(),
            token,
            request_timeout,
            transactions: AtomicU64::new(1),
        })
    }

    fn transaction(&self) -> String {
        format!(
            "sotto-{}",
            self.transactions.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn request<'a>(&'a self, janus: &'a str) -> Request<'a> {
        Request {
            janus,
            transaction: self.transaction(),
            plugin: None,
            body: None,
            jsep: None,
            token: self.token.as_deref(),
        }
    }

    /// Sends `request` to `path` and reads the one reply, bounded in size
    /// and time; Janus's own errors become [`RoomError`]s.
    async fn post(&self, path: &str, request: &Request<'_>) -> Result<Reply, RoomError> {
        let url = format!("{}{path}", self.base);
        let send = self.http.post(&url).json(request).send();
        let reply = tokio::time::timeout(self.request_timeout, async {
            let response = send.await.map_err(unreachable)?;
            read_bounded(response).await
        })
        .await
        .map_err(|_| {
            RoomError::Unreachable(format!(
                "no reply to {:?} in {:?}",
                request.janus, self.request_timeout
            ))
        })??;
        let reply = Reply::parse_many(&reply)
            .map_err(RoomError::Protocol)?
            .into_iter()
            .next()
            .ok_or_else(|| RoomError::Protocol("an empty reply".into()))?;
        if let Some(e) = &reply.error {
            return Err(match e.code {
                458 => RoomError::SessionLost(e.reason.clone()),
                403 => RoomError::Unauthorized(e.reason.clone()),
                _ => RoomError::Refused {
                    code: e.code,
                    reason: e.reason.chars().take(200).collect(),
                },
            });
        }
        if reply.transaction.as_deref() != Some(request.transaction.as_str()) {
            return Err(RoomError::Protocol("a reply to another request".into()));
        }
        Ok(reply)
    }

    /// Creates a Janus session: its id.
    pub(crate) async fn create(&self) -> Result<u64, RoomError> {
        let reply = self.post("", &self.request("create")).await?;
        reply
            .id()
            .ok_or_else(|| RoomError::Protocol("a session without an id".into()))
    }

    /// Attaches the VideoRoom plugin in `session`: the handle's id.
    pub(crate) async fn attach(&self, session: u64) -> Result<u64, RoomError> {
        let mut request = self.request("attach");
        request.plugin = Some(sotto_net::janus::VIDEOROOM);
        let reply = self.post(&format!("/{session}"), &request).await?;
        reply
            .id()
            .ok_or_else(|| RoomError::Protocol("a handle without an id".into()))
    }

    /// Sends the plugin `body` (and `jsep`) on `handle`: the transaction,
    /// whose event comes through the long poll.
    pub(crate) async fn message(
        &self,
        session: u64,
        handle: u64,
        body: Value,
        jsep: Option<Jsep>,
    ) -> Result<String, RoomError> {
        let mut request = self.request("message");
        request.body = Some(body);
        request.jsep = jsep;
        let reply = self.post(&format!("/{session}/{handle}"), &request).await?;
        match reply.janus.as_str() {
            "ack" | "success" => Ok(request.transaction),
            other => Err(RoomError::Protocol(format!("{other:?} to a message"))),
        }
    }

    /// Detaches `handle` (its peer connection with it).
    pub(crate) async fn detach(&self, session: u64, handle: u64) {
        let _ = self
            .post(&format!("/{session}/{handle}"), &self.request("detach"))
            .await;
    }

    /// Tells Janus the session is alive (between long polls, which Janus
    /// holds up to 30 s, a `session_timeout` shorter than that would
    /// otherwise end it).
    pub(crate) async fn keepalive(&self, session: u64) -> Result<(), RoomError> {
        self.post(&format!("/{session}"), &self.request("keepalive"))
            .await
            .map(drop)
    }

    /// Destroys `session` and everything in it.
    pub(crate) async fn destroy(&self, session: u64) {
        let _ = self
            .post(&format!("/{session}"), &self.request("destroy"))
            .await;
    }

    /// Waits for the session's next events (a `keepalive` after 30 s of
    /// nothing).
    pub(crate) async fn poll(&self, session: u64) -> Result<Vec<Reply>, RoomError> {
        let mut url = format!("{}/{session}?maxev={POLL_EVENTS}", self.base);
        if let Some(token) = &self.token {
            url.push_str("&token=");
            url.extend(token.bytes().map(|b| {
                // Tokens are ASCII; anything else is escaped.
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            }));
        }
        let body = tokio::time::timeout(POLL_LIMIT, async {
            let response = self.http.get(&url).send().await.map_err(unreachable)?;
            read_bounded(response).await
        })
        .await
        .map_err(|_| RoomError::Unreachable("the long poll went unanswered".into()))??;
        let replies = Reply::parse_many(&body).map_err(RoomError::Protocol)?;
        if let Some(e) = replies.iter().find_map(|r| r.error.as_ref()) {
            return Err(if e.code == 458 {
                RoomError::SessionLost(e.reason.clone())
            } else {
                RoomError::Protocol(e.reason.chars().take(200).collect())
            });
        }
        Ok(replies)
    }
}

/// An HTTP failure in words, with its causes (reqwest's own says only
/// "error sending request").
fn unreachable(e: reqwest::Error) -> RoomError {
    let e = e.without_url();
    let mut words = e.to_string();
    let mut cause = std::error::Error::source(&e);
    // A chain is a handful deep (hyper, io); bounded all the same.
    for _ in 0..4 {
        let Some(c) = cause else { break };
        words.push_str(": ");
        words.push_str(&c.to_string());
        cause = c.source();
    }
    RoomError::Unreachable(words)
}

/// A response's body, at most [`MAX_REPLY_BYTES`], read as it comes.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, RoomError> {
    let status = response.status();
    if !status.is_success() {
        return Err(RoomError::Protocol(format!("HTTP {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(RoomError::Protocol(format!(
                "a reply over {MAX_REPLY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

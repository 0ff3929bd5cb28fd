//! One presence in a room: the Janus session, the publisher joined and
//! publishing, and the long poll that routes Janus's events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_net::call::{accept_answer, offer_publish, CallPeer};
use sotto_net::janus::{self as api, Jsep, Publisher, Reply, RoomNews};
use tokio::sync::mpsc;

use super::janus::Janus;
use super::{RoomConfig, RoomError, ROOM_EVENTS};

/// Events routed to a subscription's task, by its handle.
pub(super) type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<Reply>>>>;

/// Replies a subscription's handle gets in its life: a few.
pub(super) const SUBSCRIPTION_EVENTS: usize = 8;

/// One presence in a room: the Janus session, the publisher's handle
/// joined, and the long poll routing events. What it publishes is the
/// caller's offer ([`Presence::publish`]).
pub(super) struct Presence {
    pub(super) session: u64,
    pub(super) handle: u64,
    pub(super) id: u64,
    pub(super) private_id: u64,
    pub(super) publishers: Vec<Publisher>,
    /// The publisher handle's and the session's events.
    pub(super) replies: mpsc::Receiver<Result<Reply, RoomError>>,
    pub(super) routes: Routes,
    pub(super) poller: tokio::task::JoinHandle<()>,
}

impl Presence {
    /// Creates a Janus session and joins the room as a publisher (not yet
    /// publishing); undone on any error.
    pub(super) async fn open(janus: &Arc<Janus>, config: &RoomConfig) -> Result<Self, RoomError> {
        let session = janus.create().await?;
        let routes: Routes = Arc::default();
        let (tx, mut replies) = mpsc::channel(ROOM_EVENTS);
        let poller = tokio::spawn(long_poll(
            Arc::clone(janus),
            session,
            tx,
            Arc::clone(&routes),
            config.keepalive.max(Duration::from_millis(100)),
        ));
        let joined = async {
            let handle = janus.attach(session).await?;
            let pin = config.pin.as_deref();
            let join = api::join_publisher(config.room, &config.display, pin);
            let tx = janus.message(session, handle, join, None).await?;
            let reply = answer_to(&mut replies, &tx, config.request_timeout).await?;
            match reply.news() {
                Some(RoomNews::Joined {
                    id,
                    private_id,
                    publishers,
                }) => Ok((handle, id, private_id, publishers)),
                _ => Err(refusal(&reply)),
            }
        }
        .await;
        match joined {
            Ok((handle, id, private_id, publishers)) => Ok(Self {
                session,
                handle,
                id,
                private_id,
                publishers,
                replies,
                routes,
                poller,
            }),
            Err(e) => {
                poller.abort();
                janus.destroy(session).await;
                Err(e)
            }
        }
    }

    /// Publishes `offer` as the presence's feed: Janus's answer.
    pub(super) async fn publish(
        &mut self,
        janus: &Janus,
        config: &RoomConfig,
        offer: String,
    ) -> Result<String, RoomError> {
        let publish = api::publish(&config.display);
        let tx = janus
            .message(self.session, self.handle, publish, Some(Jsep::offer(offer)))
            .await?;
        let reply = answer_to(&mut self.replies, &tx, config.request_timeout).await?;
        match (reply.news(), reply.jsep) {
            (Some(RoomNews::Ok), Some(jsep)) if jsep.kind == "answer" => Ok(jsep.sdp),
            (news, _) => Err(news.map_or_else(
                || RoomError::Protocol("a publish without an answer".into()),
                |n| refusal_of(&n),
            )),
        }
    }

    /// Why a Janus event ends this presence, if it does: the publisher
    /// hung up or detached, the session timed out, the room destroyed.
    pub(super) fn ended_by(&self, reply: &Reply) -> Option<String> {
        match reply.janus.as_str() {
            "hangup" if reply.sender == Some(self.handle) => Some(format!(
                "the SFU hung up the publisher ({})",
                reply.reason.as_deref().unwrap_or("no reason")
            )),
            "detached" if reply.sender == Some(self.handle) => {
                Some("the SFU detached the publisher".into())
            }
            "timeout" => Some("the SFU timed the session out".into()),
            _ => matches!(reply.news(), Some(RoomNews::Destroyed))
                .then(|| "the room was destroyed".into()),
        }
    }

    /// Leaves: the Janus session destroyed (when Janus is still there),
    /// the long poll stopped.
    pub(super) async fn close(self, janus: &Janus) {
        self.poller.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), janus.destroy(self.session)).await;
    }
}

/// The session's own presence: publishing its output from a peer of its
/// own.
pub(super) struct Membership {
    pub(super) at: Presence,
    pub(super) publisher: CallPeer,
}

impl Membership {
    /// Joins the room as a publisher and publishes the session's output;
    /// undone on any error.
    pub(super) async fn join(janus: &Arc<Janus>, config: &RoomConfig) -> Result<Self, RoomError> {
        let mut at = Presence::open(janus, config).await?;
        let published = async {
            let (offer, mut publisher) = offer_publish(config.media.bind)
                .await
                .map_err(|e| RoomError::Net(e.0))?;
            let answered = match at.publish(janus, config, offer).await {
                Ok(answer) => accept_answer(&mut publisher, &answer)
                    .await
                    .map_err(|e| RoomError::Protocol(e.to_string())),
                Err(e) => Err(e),
            };
            match answered {
                Ok(()) => Ok(publisher),
                Err(e) => {
                    let _ = publisher.peer.close().await;
                    Err(e)
                }
            }
        }
        .await;
        match published {
            Ok(publisher) => Ok(Self { at, publisher }),
            Err(e) => {
                at.close(janus).await;
                Err(e)
            }
        }
    }

    /// Leaves: the publisher's peer closed, then the presence.
    pub(super) async fn close(self, janus: &Janus) {
        let _ = self.publisher.peer.close().await;
        self.at.close(janus).await;
    }
}

/// The plugin's reply to transaction `tx`, skipping other events; within
/// `limit`.
pub(super) async fn answer_to(
    replies: &mut mpsc::Receiver<Result<Reply, RoomError>>,
    tx: &str,
    limit: Duration,
) -> Result<Reply, RoomError> {
    let wait = async {
        while let Some(reply) = replies.recv().await {
            let reply = reply?;
            if reply.janus == "event" && reply.transaction.as_deref() == Some(tx) {
                return Ok(reply);
            }
        }
        Err(RoomError::SessionLost("the long poll ended".into()))
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| RoomError::Unreachable(format!("no answer from the room in {limit:?}")))?
}

/// The error a plugin reply carries, or a protocol error.
pub(super) fn refusal(reply: &Reply) -> RoomError {
    reply.news().map_or_else(
        || RoomError::Protocol("an unexpected reply".into()),
        |n| refusal_of(&n),
    )
}

pub(super) fn refusal_of(news: &RoomNews) -> RoomError {
    match news {
        RoomNews::Error { code: 426, reason } => RoomError::NoSuchRoom(reason.clone()),
        RoomNews::Error { code: 433, reason } => RoomError::Unauthorized(reason.clone()),
        // A room with a PIN asked without one.
        RoomNews::Error { code: 429, reason } if reason.contains("(pin)") => {
            RoomError::Unauthorized(format!("the room needs a PIN ({reason})"))
        }
        RoomNews::Error { code, reason } => RoomError::Refused {
            code: *code,
            reason: reason.clone(),
        },
        other => RoomError::Protocol(format!("unexpected {other:?}")),
    }
}

/// Polls the session's events until Janus fails or the session is gone:
/// each reply to its subscription's route, or to `tx`; the failure last.
/// Beside it, a keepalive every `keepalive`.
pub(super) async fn long_poll(
    janus: Arc<Janus>,
    session: u64,
    tx: mpsc::Sender<Result<Reply, RoomError>>,
    routes: Routes,
    keepalive: Duration,
) {
    let alive = {
        let janus = Arc::clone(&janus);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(keepalive);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = janus.keepalive(session).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        })
    };
    // Stops the keepalives with the poll, however it ends (aborted too).
    struct Stop(tokio::task::JoinHandle<()>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _stop = Stop(alive);
    loop {
        match janus.poll(session).await {
            Ok(replies) => {
                for reply in replies {
                    let route = reply.sender.and_then(|h| {
                        routes
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get(&h)
                            .cloned()
                    });
                    let sent = match route {
                        // A subscription that stopped reading is being torn down.
                        Some(route) => route.try_send(reply).map_err(|_| ()),
                        None => tx.send(Ok(reply)).await.map_err(|_| ()),
                    };
                    if sent.is_err() && tx.is_closed() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

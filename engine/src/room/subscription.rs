//! A subscription: one participant's feed heard, from Janus's offer to
//! the decoded audio in the room's microphone mix.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sotto_media::call::{Counters, Work};
use sotto_net::call::answer_subscription;
use sotto_net::janus::{self as api, Jsep, RoomNews};
use tokio::sync::{mpsc, oneshot};
use webrtc::peer_connection::RTCPeerConnectionState;

use super::janus::Janus;
use super::membership::{refusal, Routes, SUBSCRIPTION_EVENTS};
use super::{RoomError, RoomEvent};
use crate::call::receive_feed;

/// A subscription's task and the way to stop it.
pub(super) struct Subscription {
    pub(super) stop: oneshot::Sender<()>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Stops it; the task closes its peer and detaches on its own.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// What a subscription needs to know.
pub(super) struct SubscriptionPlan {
    pub(super) session: u64,
    pub(super) room: u64,
    pub(super) feed: u64,
    pub(super) private_id: u64,
    pub(super) pin: Option<String>,
    pub(super) bind: IpAddr,
    pub(super) limit: Duration,
    pub(super) connect_limit: Duration,
}

/// Subscribes to one feed: attaches a handle, joins as its subscriber,
/// answers Janus's offer, and decodes its audio into the microphone until
/// stopped or the feed ends; then closes the peer and detaches.
pub(super) async fn subscribe(
    janus: Arc<Janus>,
    plan: SubscriptionPlan,
    routes: Routes,
    counters: Arc<Counters>,
    work: mpsc::Sender<Work>,
    events: mpsc::Sender<RoomEvent>,
    mut stopped: oneshot::Receiver<()>,
) {
    let feed = plan.feed;
    let Ok(handle) = janus.attach(plan.session).await else {
        return;
    };
    let (tx, mut replies) = mpsc::channel(SUBSCRIPTION_EVENTS);
    let route = |on: bool| {
        let mut r = routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            r.insert(handle, tx.clone());
        } else {
            r.remove(&handle);
        }
    };
    route(true);
    let mut peer = None;
    let run = async {
        let join = api::join_subscriber(plan.room, feed, plan.private_id, plan.pin.as_deref());
        let t = janus.message(plan.session, handle, join, None).await?;
        let offer = tokio::time::timeout(plan.limit, async {
            while let Some(reply) = replies.recv().await {
                if reply.transaction.as_deref() == Some(&t) && reply.janus == "event" {
                    return match (reply.news(), reply.jsep.clone()) {
                        (Some(RoomNews::Attached), Some(jsep)) => Ok(jsep.sdp),
                        _ => Err(refusal(&reply)),
                    };
                }
            }
            Err(RoomError::SessionLost("the long poll ended".into()))
        })
        .await
        .map_err(|_| RoomError::Unreachable("no offer for the subscription".into()))??;
        let (answer, pc, mut pc_events) = answer_subscription(&offer, plan.bind)
            .await
            .map_err(|e| RoomError::Net(e.to_string()))?;
        peer = Some(Arc::clone(&pc));
        janus
            .message(
                plan.session,
                handle,
                api::start(),
                Some(Jsep::answer(answer)),
            )
            .await?;
        let track = tokio::time::timeout(plan.connect_limit, pc_events.tracks.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| RoomError::Net("the feed sent no audio".into()))?;
        let _ = events.try_send(RoomEvent::Hearing { id: feed });
        let hear = receive_feed(track, feed, counters, work.clone());
        tokio::pin!(hear);
        loop {
            tokio::select! {
                () = &mut hear => break,
                state = pc_events.state.recv() => match state {
                    Some(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) | None => break,
                    Some(_) => {}
                },
                reply = replies.recv() => match reply {
                    Some(r) if r.janus == "hangup" || r.janus == "detached" => break,
                    Some(_) => {}
                    None => break,
                },
            }
        }
        Ok::<(), RoomError>(())
    };
    tokio::select! {
        r = run => if let Err(e) = r {
            tracing::info!(feed, error = %e, "a subscription ended");
        },
        _ = &mut stopped => {}
    }
    route(false);
    if let Some(pc) = peer {
        let _ = pc.close().await;
    }
    let _ = work.send(Work::FeedGone(feed)).await;
    let _ = tokio::time::timeout(plan.limit, janus.detach(plan.session, handle)).await;
}

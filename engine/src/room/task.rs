//! A room's task: the session's output out through the publisher, Janus's
//! events in, subscriptions started and stopped, and the room joined
//! again when Janus is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sotto_media::call::{Counters, Encoded, Media, Work};
use sotto_net::janus::{Publisher, Reply, RoomNews};
use tokio::sync::{mpsc, oneshot};
use webrtc::peer_connection::RTCPeerConnectionState;

use super::janus::Janus;
use super::membership::Membership;
use super::subscription::{subscribe, Subscription, SubscriptionPlan};
use super::{RoomConfig, RoomEvent};
use crate::call::Outgoing;
use crate::OutputFrames;

/// A room's moving parts, owned by its task.
pub(super) struct Room {
    pub(super) telemetry: Arc<sotto_rt::Telemetry>,
    pub(super) lag: Arc<crate::admission::ReaderLag>,
    pub(super) outgoing: Outgoing,
    pub(super) janus: Arc<Janus>,
    pub(super) config: RoomConfig,
    pub(super) counters: Arc<Counters>,
    pub(super) events: mpsc::Sender<RoomEvent>,
    pub(super) subscriptions: HashMap<u64, Subscription>,
}

/// Packets waiting for the network, as a call's.
const PACKET_QUEUE: usize = 8;
/// Work waiting for the media thread, as a call's.
const WORK_QUEUE: usize = 32;
/// The longest wait between rejoin attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The most subscriptions a room holds.
const MAX_SUBSCRIPTIONS: usize = 16;

/// Why a membership ended.
enum Exit {
    Left,
    Lost(String),
    OutputClosed,
}

impl Room {
    pub(super) async fn run(
        mut self,
        first: Membership,
        mut frames: OutputFrames,
        media: Media,
        mut left: oneshot::Receiver<()>,
    ) {
        let (work, work_in) = mpsc::channel::<Work>(WORK_QUEUE);
        let (encoded_tx, mut encoded) = mpsc::channel::<Encoded>(PACKET_QUEUE);
        let media_thread = tokio::task::spawn_blocking(move || media.run(work_in, encoded_tx));
        let mut membership = Some(first);
        let reason = loop {
            let Some(mut m) = membership.take() else {
                break "no membership".to_owned();
            };
            let mut attempt = 0;
            let _ = self.events.try_send(RoomEvent::Joined { id: m.at.id });
            // What rendered while joining is in the past (see calls).
            while frames.try_next_frame().is_some() {}
            for p in std::mem::take(&mut m.at.publishers) {
                self.heard_of(&m, p, &work);
            }
            let exit = self
                .serve(&mut m, &mut frames, &mut encoded, &work, &mut left)
                .await;
            self.unsubscribe_all(&work).await;
            m.close(&self.janus).await;
            let why = match exit {
                Exit::Left => break "left".to_owned(),
                Exit::OutputClosed => break "the session's output closed".to_owned(),
                Exit::Lost(why) => why,
            };
            // Rejoin with backoff, still draining the output so the
            // session's reader does not fall behind.
            let mut backoff = self.config.rejoin_backoff;
            let mut rejoined = None;
            while attempt < self.config.rejoin_attempts {
                attempt += 1;
                let _ = self.events.try_send(RoomEvent::Reconnecting {
                    attempt,
                    reason: why.clone(),
                });
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                let stop = loop {
                    tokio::select! {
                        () = &mut wait => break false,
                        _ = &mut left => break true,
                        f = frames.next_frame() => if f.is_err() { break true },
                    }
                };
                if stop {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                let join = Membership::join(&self.janus, &self.config);
                tokio::pin!(join);
                let joined = loop {
                    tokio::select! {
                        r = &mut join => break Some(r),
                        _ = &mut left => break None,
                        f = frames.next_frame() => if f.is_err() { break None },
                    }
                };
                match joined {
                    Some(Ok(m)) => {
                        rejoined = Some(m);
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::info!(attempt, error = %e, "rejoining the room failed")
                    }
                    None => break,
                }
            }
            match rejoined {
                Some(m) => membership = Some(m),
                None if attempt >= self.config.rejoin_attempts => {
                    break format!("the SFU was lost ({why}) and {attempt} rejoins failed");
                }
                None => break "left".to_owned(),
            }
        };
        drop(work);
        drop(encoded);
        let _ = media_thread.await;
        frames.release();
        let _ = self.events.try_send(RoomEvent::Ended { reason });
    }

    /// Carries one membership: the output out, Janus's events in, until
    /// the room is left or lost.
    async fn serve(
        &mut self,
        m: &mut Membership,
        frames: &mut OutputFrames,
        encoded: &mut mpsc::Receiver<Encoded>,
        work: &mpsc::Sender<Work>,
        left: &mut oneshot::Receiver<()>,
    ) -> Exit {
        let lost_before = frames.lost_frames();
        // Packets go out once the publisher's connection is up; before,
        // they would only be refused by its transport.
        let mut up = false;
        loop {
            tokio::select! {
                _ = &mut *left => return Exit::Left,
                state = m.publisher.events.state.recv() => match state {
                    Some(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) | None => {
                        return Exit::Lost("the publisher's connection failed".into());
                    }
                    Some(RTCPeerConnectionState::Connected) => up = true,
                    Some(_) => {}
                },
                reply = m.at.replies.recv() => match reply {
                    Some(Ok(reply)) => {
                        if let Some(why) = self.on_reply(m, &reply, work) {
                            return Exit::Lost(why);
                        }
                    }
                    Some(Err(e)) => return Exit::Lost(e.to_string()),
                    None => return Exit::Lost("the long poll ended".into()),
                },
                frame = frames.next_frame() => {
                    let Ok(frame) = frame else { return Exit::OutputClosed };
                    self.counters.frames_lost.store(
                        frames.lost_frames() - lost_before,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    self.outgoing.frame(&frame, &self.telemetry, &self.lag, work, &self.counters);
                },
                Some(packet) = encoded.recv() => if up {
                    self.outgoing
                        .send(&mut m.publisher.sender, &packet, &self.telemetry, &self.counters)
                        .await;
                },
            }
        }
    }

    /// Acts on a Janus event for the publisher or the session; `Some`
    /// when it ends the membership.
    fn on_reply(
        &mut self,
        m: &Membership,
        reply: &Reply,
        work: &mpsc::Sender<Work>,
    ) -> Option<String> {
        if let Some(why) = m.at.ended_by(reply) {
            return Some(why);
        }
        match reply.news()? {
            RoomNews::Publishers(list) => {
                for p in list {
                    self.heard_of(m, p, work);
                }
            }
            RoomNews::Leaving(id) | RoomNews::Unpublished(id) => {
                if let Some(s) = self.subscriptions.remove(&id) {
                    s.stop();
                }
                if id != m.at.id {
                    let _ = self.events.try_send(RoomEvent::ParticipantLeft { id });
                }
            }
            _ => {}
        }
        None
    }

    /// A publisher appeared: announced, and subscribed to if wanted.
    fn heard_of(&mut self, m: &Membership, p: Publisher, work: &mpsc::Sender<Work>) {
        if p.id == m.at.id || self.subscriptions.contains_key(&p.id) {
            return;
        }
        if !self.config.subscribe.wants(&p) || self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return;
        }
        let _ = self.events.try_send(RoomEvent::ParticipantJoined {
            id: p.id,
            display: p.display.clone(),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(subscribe(
            Arc::clone(&self.janus),
            SubscriptionPlan {
                session: m.at.session,
                room: self.config.room,
                feed: p.id,
                private_id: m.at.private_id,
                pin: self.config.pin.clone(),
                bind: self.config.media.bind,
                limit: self.config.request_timeout,
                connect_limit: self.config.media.connect_timeout,
            },
            Arc::clone(&m.at.routes),
            Arc::clone(&self.counters),
            work.clone(),
            self.events.clone(),
            stopped,
        ));
        self.subscriptions.insert(p.id, Subscription { stop, task });
    }

    async fn unsubscribe_all(&mut self, _work: &mpsc::Sender<Work>) {
        for (_, s) in self.subscriptions.drain() {
            let _ = s.stop.send(());
            let _ = s.task.await;
        }
    }
}

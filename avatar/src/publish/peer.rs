//! A viewer's peer: the avatar's tracks on it, its life once connected,
//! and the offering side of a publisher (the voice and face offered to a
//! peer that answers: an SFU taking the avatar into a room).

use std::sync::atomic::Ordering;

use sotto_net::call::{offer_opus_type, opus_track_in, OpusSender};
use sotto_net::video::{vp8_track, Vp8Sender};
use sotto_net::{av_peer, NetError};
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

use super::{Media, Publisher, PublisherState, Viewer, ViewerError};

/// A viewer's peer with the voice and face tracks on it, before its
/// description is settled.
pub(super) struct Tracks {
    pub(super) peer: sotto_net::Peer,
    pub(super) events: sotto_net::PeerEvents,
    pub(super) id: u64,
    pub(super) voice: OpusSender,
    pub(super) face: Vp8Sender,
}

impl Tracks {
    pub(super) async fn new(
        shared: &PublisherState,
        bind: std::net::IpAddr,
    ) -> Result<Self, ViewerError> {
        let (peer, events) = av_peer(bind).await?;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // One media stream: a browser plays the two tracks in sync.
        let stream = format!("avatar-{id}");
        let (voice_track, voice) = opus_track_in(Some(&stream));
        let (face_track, face) = vp8_track(Some(&stream));
        let added = async {
            peer.add_track(voice_track).await?;
            peer.add_track(face_track).await
        }
        .await;
        if let Err(e) = added {
            let _ = peer.close().await;
            return Err(NetError::from(e).into());
        }
        Ok(Self {
            peer,
            events,
            id,
            voice,
            face,
        })
    }

    /// The viewer, once `sdp` (the answer, whichever side made it) has
    /// settled the payload types.
    pub(super) fn viewer(&mut self, sdp: String) -> Viewer {
        self.voice
            .set_payload_type(offer_opus_type(&sdp).unwrap_or(sotto_net::peer::OPUS_PAYLOAD_TYPE));
        self.face.set_payload_type(
            sdp_payload_type(&sdp, "vp8/90000").unwrap_or(sotto_net::peer::VP8_PAYLOAD_TYPE),
        );
        Viewer {
            id: self.id,
            answer: sdp,
            voice_origin: self.voice.origin(),
            face_origin: self.face.origin(),
        }
    }
}

/// The voice and face offered to a peer that answers
/// ([`Publisher::offer_feed`]): its offer to send, then
/// [`FeedOffer::accept`] with the answer. Dropped unaccepted, its peer is
/// closed and its place given back.
pub struct FeedOffer {
    /// The offer (every candidate in it).
    pub sdp: String,
    pub(super) tracks: Option<Tracks>,
    pub(super) publisher: Publisher,
}

impl std::fmt::Debug for FeedOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedOffer").finish_non_exhaustive()
    }
}

/// A feed taken by the peer it was offered to: a viewer of the
/// publisher's, and word of when it is over.
#[derive(Debug)]
pub struct Feed {
    /// The viewer it is ([`Publisher::remove_viewer`] ends it).
    pub viewer: Viewer,
    ended: tokio::sync::oneshot::Receiver<()>,
}

impl Feed {
    /// Resolves once the feed is over: its peer failed, did not connect
    /// in time, or was removed.
    pub async fn ended(&mut self) {
        let _ = (&mut self.ended).await;
    }
}

impl FeedOffer {
    /// Applies the peer's `answer`: the feed's packets flow once it
    /// connects.
    ///
    /// # Errors
    /// [`ViewerError::BadOffer`] for an answer that is not SDP or does not
    /// fit the offer (the offer is then given up).
    pub async fn accept(mut self, answer: &str) -> Result<Feed, ViewerError> {
        let Some(mut tracks) = self.tracks.take() else {
            return Err(ViewerError::BadOffer("the offer was given up".into()));
        };
        let bad = |why: &str| ViewerError::BadOffer(format!("the answer: {why}"));
        let applied = if answer.len() > sotto_net::call::MAX_OFFER_BYTES {
            Err(bad("too long"))
        } else {
            match RTCSessionDescription::answer(answer.to_owned()) {
                Ok(desc) => tracks
                    .peer
                    .set_remote_description(desc)
                    .await
                    .map_err(|e| bad(&e.to_string())),
                Err(_) => Err(bad("not SDP")),
            }
        };
        if let Err(e) = applied {
            let _ = tracks.peer.close().await;
            self.publisher.shared.taken.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        let viewer = tracks.viewer(answer.to_owned());
        let (tx, ended) = tokio::sync::oneshot::channel();
        let viewer = self.publisher.watch_with(tracks, viewer, Some(tx));
        Ok(Feed { viewer, ended })
    }
}

impl Drop for FeedOffer {
    fn drop(&mut self) {
        if let Some(tracks) = self.tracks.take() {
            self.publisher.shared.taken.fetch_sub(1, Ordering::AcqRel);
            // Closing waits on the peer's tasks: off the dropping thread.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tracks.peer.close().await;
                });
            }
        }
    }
}

/// The payload type an SDP gives `codec` (`a=rtpmap:N vp8/90000`).
fn sdp_payload_type(sdp: &str, codec: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let (pt, name) = l.trim().strip_prefix("a=rtpmap:")?.split_once(' ')?;
        name.to_ascii_lowercase()
            .starts_with(codec)
            .then(|| pt.parse().ok())
            .flatten()
    })
}

/// A viewer's life: its packets out until it goes.
pub(super) async fn watch(
    events: &mut sotto_net::PeerEvents,
    mut rx: mpsc::Receiver<Media>,
    voice: &mut OpusSender,
    face: &mut Vp8Sender,
) {
    loop {
        tokio::select! {
            state = events.state.recv() => match state {
                Some(RTCPeerConnectionState::Disconnected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed) | None => return,
                Some(_) => {}
            },
            media = rx.recv() => match media {
                Some(Media::Voice(bytes, ts48, marker)) => {
                    let _ = voice.send(&bytes, ts48, marker).await;
                }
                Some(Media::Video(frame, ts90)) => {
                    let _ = face.send(&frame, ts90).await;
                }
                None => return,
            },
        }
    }
}

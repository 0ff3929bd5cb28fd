//! A feed someone else's peer publishes into a room: Sotto keeps the
//! Janus side (session, keepalives, the publisher joined) and hands the
//! offer in and the answer back. An avatar's voice and face go into its
//! agent's room this way, as a feed beside the agent's own (SPEC F1).

use std::sync::Arc;

use super::janus::Janus;
use super::membership::Presence;
use super::{janus_for, RoomConfig, RoomError};

/// A feed published into a room from an offer made elsewhere (a peer that
/// sends video, say). It holds the room's Janus session; dropping it stops
/// the keepalives (Janus forgets the feed within its session timeout),
/// [`RoomFeed::leave`] leaves at once.
pub struct RoomFeed {
    janus: Arc<Janus>,
    at: Option<Presence>,
}

impl std::fmt::Debug for RoomFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomFeed")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl RoomFeed {
    /// Joins `config`'s room as `config.display` and publishes `offer`
    /// (SDP, every candidate in it): the feed and the SFU's answer, to
    /// apply to the peer that offered. `config.media` and `subscribe` are
    /// not used: the media is the offering peer's, and a feed hears
    /// nobody.
    ///
    /// # Errors
    /// As [`crate::Engine::join_room`]: [`RoomError`] for a Janus
    /// unreachable, slow or answering garbage (within `request_timeout`),
    /// a room that does not exist, a wrong PIN, or an offer it refuses.
    pub async fn publish(config: &RoomConfig, offer: &str) -> Result<(Self, String), RoomError> {
        if offer.len() > sotto_net::call::MAX_OFFER_BYTES {
            return Err(RoomError::Config("the offer is too long".into()));
        }
        let janus = janus_for(config)?;
        let mut at = Presence::open(&janus, config).await?;
        match at.publish(&janus, config, offer.to_owned()).await {
            Ok(answer) => Ok((
                Self {
                    janus,
                    at: Some(at),
                },
                answer,
            )),
            Err(e) => {
                at.close(&janus).await;
                Err(e)
            }
        }
    }

    /// The feed's id in the room, as other participants see it.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.at.as_ref().map_or(0, |at| at.id)
    }

    /// Resolves when the SFU loses the feed: Janus gone or restarted, the
    /// session timed out, the publisher hung up, the room destroyed. The
    /// feed is over then; publish again to come back.
    pub async fn lost(&mut self) -> RoomError {
        let Some(at) = self.at.as_mut() else {
            return RoomError::SessionLost("the feed has left".into());
        };
        loop {
            match at.replies.recv().await {
                Some(Ok(reply)) => {
                    if let Some(why) = at.ended_by(&reply) {
                        return RoomError::SessionLost(why);
                    }
                }
                Some(Err(e)) => return e,
                None => return RoomError::SessionLost("the long poll ended".into()),
            }
        }
    }

    /// Leaves the room: the Janus session destroyed, the keepalives
    /// stopped. The offering peer is the caller's to close.
    pub async fn leave(mut self) {
        if let Some(at) = self.at.take() {
            at.close(&self.janus).await;
        }
    }
}

impl Drop for RoomFeed {
    fn drop(&mut self) {
        if let Some(at) = self.at.take() {
            at.poller.abort();
        }
    }
}

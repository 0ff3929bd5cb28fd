//! Avatars in rooms on an SFU (SPEC F1): an avatar whose agent's join
//! names a Janus room (its room name is the room's number) is published
//! into that room as a feed of its own, voice and face, beside the
//! agent's. The room's viewers are then the SFU's fan-out, not ours. The
//! feed is offered from the avatar's publisher (it counts as one of its
//! viewers) and comes back with backoff when the SFU loses it, until the
//! avatar goes.

use std::time::Duration;

use sotto::{RoomConfig, RoomFeed};
use sotto_avatar::publish::Publisher;
use tokio::sync::oneshot;

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The room `room_name` names, when it names one: digits only, the
/// VideoRoom's numeric id.
pub(crate) fn room_of(room_name: &str) -> Option<u64> {
    if room_name.is_empty() || !room_name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    room_name.parse().ok()
}

/// Publishes `publisher` into `config`'s room until `stop` fires (or its
/// sender is dropped: the avatar is gone), coming back after each loss;
/// past `config.rejoin_attempts` failures in a row it gives up.
pub(crate) async fn publish(
    publisher: Publisher,
    config: RoomConfig,
    mut stop: oneshot::Receiver<()>,
) {
    let mut failures = 0;
    let mut backoff = config.rejoin_backoff;
    loop {
        match publish_once(&publisher, &config, &mut stop).await {
            Outcome::Stopped => return,
            Outcome::Lost(why) => {
                tracing::info!(room = config.room, reason = %why, "the avatar's feed was lost");
                failures = 0;
                backoff = config.rejoin_backoff;
            }
            Outcome::Failed(why) => {
                failures += 1;
                tracing::info!(room = config.room, failures, reason = %why, "the avatar's feed could not be published");
                if failures > config.rejoin_attempts {
                    tracing::warn!(room = config.room, "the avatar's feed gives up on the room");
                    return;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Outcome {
    /// Published, then lost.
    Lost(String),
    /// Not published.
    Failed(String),
    /// The avatar has gone.
    Stopped,
}

/// One publication: offered, answered, carried until it ends or `stop`
/// fires; left cleanly either way.
async fn publish_once(
    publisher: &Publisher,
    config: &RoomConfig,
    stop: &mut oneshot::Receiver<()>,
) -> Outcome {
    let offer = match publisher.offer_feed(config.media.bind).await {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let published = tokio::select! {
        p = RoomFeed::publish(config, &offer.sdp) => p,
        _ = &mut *stop => return Outcome::Stopped,
    };
    let (mut room, answer) = match published {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut feed = match offer.accept(&answer).await {
        Ok(f) => f,
        Err(e) => {
            room.leave().await;
            return Outcome::Failed(e.to_string());
        }
    };
    let outcome = tokio::select! {
        lost = room.lost() => Outcome::Lost(lost.to_string()),
        () = feed.ended() => Outcome::Lost("the feed's connection ended".into()),
        _ = &mut *stop => Outcome::Stopped,
    };
    publisher.remove_viewer(feed.viewer.id).await;
    room.leave().await;
    outcome
}

//! The wire protocol between an agent and an avatar (SPEC A2–A4): the join
//! request the dispatcher takes, PCM chunks on the unreliable channel,
//! control messages and acknowledgements on the reliable one.

use serde::{Deserialize, Serialize};

/// Largest PCM chunk on the unreliable channel, in bytes.
pub const MAX_CHUNK: usize = 15_000;
/// The interrupt message, as text on the reliable channel.
pub const INTERRUPT: &str = "INTERRUPT";
/// Label of the unreliable PCM channel.
pub const AUDIO_LABEL: &str = "audio";
/// Label of the reliable control channel.
pub const CONTROL_LABEL: &str = "control";

/// What the agent posts to the dispatcher (SPEC A2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The room the avatar joins.
    pub room_name: String,
    /// Signed credentials (SPEC A1).
    pub token: String,
    /// The avatar's participant id.
    pub participant_id: String,
    /// Where the avatar would signal; unused on loopback.
    #[serde(default)]
    pub signaling_base_url: Option<String>,
    /// The agent's WebRTC offer (SDP, all candidates included).
    pub offer: String,
    /// PCM sample rate of the audio chunks.
    #[serde(default = "default_rate")]
    pub sample_rate: u32,
    /// PCM channels of the audio chunks.
    #[serde(default = "default_channels")]
    pub channels: u16,
}

fn default_rate() -> u32 {
    24_000
}

fn default_channels() -> u16 {
    1
}

/// Sample rates an avatar accepts (the engine's input rates, SPEC O3).
pub const JOIN_RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];
/// Longest room name or participant id, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest token, in bytes.
pub const MAX_TOKEN: usize = 4_096;
/// Longest SDP offer, in bytes.
pub const MAX_OFFER: usize = 32_768;
/// Largest join request body, in bytes: every field at its longest, and room.
pub const MAX_JOIN_BODY: usize = 64 * 1024;

/// Why a join request is refused before anything is made for it (SPEC S1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The rate is not one of [`JOIN_RATES`].
    #[error("sample_rate must be one of 8000, 16000, 22050, 24000, 44100, 48000")]
    Rate,
    /// Not 1 or 2 channels.
    #[error("channels must be 1 or 2")]
    Channels,
    /// A name is empty, too long, or has a character other than ASCII
    /// letters, digits, `-`, `_` and `.`, or starts with `.`.
    #[error("{0} must be 1 to 64 of A-Z a-z 0-9 - _ . and not start with '.'")]
    Name(&'static str),
    /// A field is longer than its limit.
    #[error("{0} is too long")]
    TooLong(&'static str),
}

impl JoinRequest {
    /// Checks every number and name before anything is sized or named by
    /// them: names from the network never reach a path unchecked (S4).
    ///
    /// # Errors
    /// The first field out of bounds.
    pub fn validate(&self) -> Result<(), JoinError> {
        if !JOIN_RATES.contains(&self.sample_rate) {
            return Err(JoinError::Rate);
        }
        if !(1..=2).contains(&self.channels) {
            return Err(JoinError::Channels);
        }
        check_name(&self.room_name, "room_name")?;
        check_name(&self.participant_id, "participant_id")?;
        if self.token.len() > MAX_TOKEN {
            return Err(JoinError::TooLong("token"));
        }
        if self.offer.len() > MAX_OFFER {
            return Err(JoinError::TooLong("offer"));
        }
        if self
            .signaling_base_url
            .as_ref()
            .is_some_and(|u| u.len() > 2_048)
        {
            return Err(JoinError::TooLong("signaling_base_url"));
        }
        Ok(())
    }
}

/// Whether `name` is safe as one path component and in logs: 1 to
/// [`MAX_NAME`] letters, digits, `-`, `_` and `.`, not starting with `.`.
#[must_use]
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `Ok` for a [`safe_name`], else the field it is in.
fn check_name(name: &str, field: &'static str) -> Result<(), JoinError> {
    if safe_name(name) {
        Ok(())
    } else {
        Err(JoinError::Name(field))
    }
}

/// The dispatcher's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The avatar's WebRTC answer (SDP).
    pub answer: String,
}

/// JSON messages on the reliable channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Agent → avatar: the segment's audio is all sent (SPEC A3). The id
    /// is Sotto's; a peer without ids sends none.
    SegmentEnd {
        /// Which segment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// PCM samples (interleaved) the segment sent. The two channels
        /// are not ordered with each other, so the end can overtake the
        /// segment's last chunks; with the count the avatar waits for
        /// them. Sotto's; a peer without it sends none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        samples: Option<u64>,
    },
    /// Agent → avatar, just before an `INTERRUPT`: fade the first
    /// `frames` (per channel, at the PCM rate) of what is queued with the
    /// session's curve, `10^(-3t)` ending at exactly 0, and drop the rest
    /// (SPEC O5, C7). Sotto's; without it an interrupt cuts.
    InterruptFade {
        /// The fade tail limit.
        frames: u64,
    },
    /// Avatar → agent: a segment finished playing or was cut (SPEC A4).
    StreamEnded {
        /// What happened.
        data: StreamEnded,
    },
}

/// The acknowledgement's payload (SPEC A4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnded {
    /// Seconds of the segment played, counted in samples.
    pub playback_position: f64,
    /// Whether an interrupt cut it.
    pub interrupted: bool,
    /// The segment, when the agent named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<u64>,
}

/// Splits s16 PCM bytes into chunks of at most [`MAX_CHUNK`] bytes, each
/// of even length (SPEC A3).
pub fn chunks(pcm: &[u8]) -> impl Iterator<Item = &[u8]> {
    pcm.chunks(MAX_CHUNK & !1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        let end = serde_json::to_string(&Control::SegmentEnd {
            id: None,
            samples: None,
        })
        .unwrap();
        assert_eq!(end, r#"{"type":"segment_end"}"#);
        let ack: Control = serde_json::from_str(
            r#"{"type":"stream_ended","data":{"playback_position":1.5,"interrupted":true}}"#,
        )
        .unwrap();
        assert_eq!(
            ack,
            Control::StreamEnded {
                data: StreamEnded {
                    playback_position: 1.5,
                    interrupted: true,
                    segment_id: None
                }
            }
        );
    }

    #[test]
    fn chunks_stay_small_in_whole_samples() {
        let pcm = vec![0u8; 40_002];
        let sizes: Vec<usize> = chunks(&pcm).map(<[u8]>::len).collect();
        assert_eq!(sizes, vec![15_000, 15_000, 10_002]);
    }
}

//! Telephony media streams (SPEC T1): the messages a carrier and Sotto
//! exchange over a call's WebSocket. Twilio's bidirectional Media Streams
//! exactly as its documentation has them: in, `connected`, `start`,
//! `media`, `dtmf`, `mark` and `stop`; out, `media`, `mark` and `clear`
//! only. Every number and name from the carrier is checked here before it
//! sizes or names anything: a message is at most [`MAX_MESSAGE`] bytes, a
//! payload at most [`MAX_PAYLOAD`], custom parameters at most
//! [`MAX_PARAMETERS`] of [`MAX_NAME`] bytes.

use serde::Deserialize;
use serde_json::json;

/// The longest message taken from a carrier: a 20 ms μ-law frame is about
/// 300 bytes of JSON, a `start` with its parameters a few KiB.
pub const MAX_MESSAGE: usize = 16 << 10;
/// The longest media payload taken, in bytes after base64: a second of
/// 8 kHz audio (carriers send 20 ms).
pub const MAX_PAYLOAD: usize = 8_000;
/// Custom parameters taken from a `start`.
pub const MAX_PARAMETERS: usize = 16;
/// The longest id, mark name, parameter name or value.
pub const MAX_NAME: usize = 256;

/// Why a message from the carrier was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Longer than [`MAX_MESSAGE`].
    #[error("a message of {0} bytes (at most {MAX_MESSAGE})")]
    TooLong(usize),
    /// Not JSON, or not the shape its event has.
    #[error("not a media stream message: {0}")]
    Malformed(String),
    /// An event the protocol does not have.
    #[error("an unknown event {0:?}")]
    UnknownEvent(String),
    /// A field out of bounds (a payload too long, not base64, a name too
    /// long, too many parameters).
    #[error("{0}")]
    OutOfBounds(String),
}

/// The audio a stream carries, as its `start` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MediaFormat {
    /// `audio/x-mulaw` for Twilio.
    pub encoding: String,
    /// Samples per second (8000).
    #[serde(rename = "sampleRate")]
    pub sample_rate: u32,
    /// Channels (1).
    pub channels: u32,
}

/// What a `start` says of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The stream's id, which every message Sotto sends names.
    pub stream_sid: String,
    /// The carrier's account.
    pub account_sid: String,
    /// The call's id.
    pub call_sid: String,
    /// Which tracks come (`inbound`, `outbound`).
    pub tracks: Vec<String>,
    /// The audio.
    pub media_format: MediaFormat,
    /// The `<Parameter>`s the stream was started with, in order.
    pub custom_parameters: Vec<(String, String)>,
}

/// A message from the carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound {
    /// The socket is open: the protocol and its version.
    Connected {
        /// `Call`.
        protocol: String,
        /// `1.0.0`.
        version: String,
    },
    /// The stream starts.
    Start(Start),
    /// 20 ms of the caller's audio.
    Media {
        /// The codes, base64 decoded.
        payload: Vec<u8>,
        /// The chunk's number, from 1, when given.
        chunk: Option<u64>,
        /// Milliseconds since the stream started, when given.
        timestamp: Option<u64>,
    },
    /// The caller pressed a key.
    Dtmf {
        /// The key: `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
    },
    /// A mark Sotto sent, back: the audio before it has played (or was
    /// cleared).
    Mark {
        /// Its name as sent.
        name: String,
    },
    /// The stream is over.
    Stop,
}

#[derive(Deserialize)]
struct Raw {
    event: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    start: Option<RawStart>,
    #[serde(default)]
    media: Option<RawMedia>,
    #[serde(default)]
    dtmf: Option<RawDtmf>,
    #[serde(default)]
    mark: Option<RawMark>,
}

#[derive(Deserialize)]
struct RawStart {
    #[serde(rename = "streamSid")]
    stream_sid: String,
    #[serde(rename = "accountSid", default)]
    account_sid: String,
    #[serde(rename = "callSid", default)]
    call_sid: String,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(rename = "mediaFormat")]
    media_format: MediaFormat,
    #[serde(rename = "customParameters", default)]
    custom_parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawMedia {
    payload: String,
    #[serde(default)]
    chunk: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
struct RawDtmf {
    digit: String,
}

#[derive(Deserialize)]
struct RawMark {
    name: String,
}

fn bounded(what: &str, s: String) -> Result<String, MessageError> {
    if s.len() > MAX_NAME {
        return Err(MessageError::OutOfBounds(format!(
            "{what} longer than {MAX_NAME} bytes"
        )));
    }
    Ok(s)
}

fn missing(event: &str, field: &str) -> MessageError {
    MessageError::Malformed(format!("a {event} without {field}"))
}

impl Inbound {
    /// Parses one text message.
    ///
    /// # Errors
    /// [`MessageError`]: too long, not JSON or not the event's shape, an
    /// unknown event, a field out of bounds.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        if text.len() > MAX_MESSAGE {
            return Err(MessageError::TooLong(text.len()));
        }
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| MessageError::Malformed(e.to_string()))?;
        match raw.event.as_str() {
            "connected" => Ok(Self::Connected {
                protocol: bounded("a protocol", raw.protocol.unwrap_or_default())?,
                version: bounded("a version", raw.version.unwrap_or_default())?,
            }),
            "start" => {
                let s = raw.start.ok_or_else(|| missing("start", "start"))?;
                if s.custom_parameters.len() > MAX_PARAMETERS || s.tracks.len() > 2 {
                    return Err(MessageError::OutOfBounds(format!(
                        "at most {MAX_PARAMETERS} parameters and 2 tracks"
                    )));
                }
                let mut custom_parameters = Vec::with_capacity(s.custom_parameters.len());
                for (k, v) in s.custom_parameters {
                    let v = match v {
                        serde_json::Value::String(v) => v,
                        other => other.to_string(),
                    };
                    custom_parameters.push((bounded("a parameter", k)?, bounded("a value", v)?));
                }
                Ok(Self::Start(Start {
                    stream_sid: bounded("a stream id", s.stream_sid)?,
                    account_sid: bounded("an account id", s.account_sid)?,
                    call_sid: bounded("a call id", s.call_sid)?,
                    tracks: s
                        .tracks
                        .into_iter()
                        .map(|t| bounded("a track", t))
                        .collect::<Result<_, _>>()?,
                    media_format: s.media_format,
                    custom_parameters,
                }))
            }
            "media" => {
                let m = raw.media.ok_or_else(|| missing("media", "media"))?;
                if m.payload.len() > MAX_PAYLOAD * 4 / 3 + 4 {
                    return Err(MessageError::OutOfBounds(format!(
                        "a payload over {MAX_PAYLOAD} bytes"
                    )));
                }
                let payload = base64_decode(&m.payload).ok_or_else(|| {
                    MessageError::OutOfBounds("a payload that is not base64".into())
                })?;
                let number = |s: Option<String>| s.and_then(|s| s.parse().ok());
                Ok(Self::Media {
                    payload,
                    chunk: number(m.chunk),
                    timestamp: number(m.timestamp),
                })
            }
            "dtmf" => {
                let d = raw.dtmf.ok_or_else(|| missing("dtmf", "dtmf"))?;
                let mut chars = d.digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_digit() || "*#ABCD".contains(c) => {
                        Ok(Self::Dtmf { digit: c })
                    }
                    _ => Err(MessageError::OutOfBounds(format!(
                        "a DTMF digit {:?}",
                        d.digit.chars().take(8).collect::<String>()
                    ))),
                }
            }
            "mark" => {
                let m = raw.mark.ok_or_else(|| missing("mark", "mark"))?;
                Ok(Self::Mark {
                    name: bounded("a mark name", m.name)?,
                })
            }
            "stop" => Ok(Self::Stop),
            other => Err(MessageError::UnknownEvent(other.chars().take(32).collect())),
        }
    }
}

/// An outbound `media` message: `codes` (μ-law) for stream `sid`.
#[must_use]
pub fn media(sid: &str, codes: &[u8]) -> String {
    json!({"event": "media", "streamSid": sid, "media": {"payload": base64_encode(codes)}})
        .to_string()
}

/// An outbound `mark` message named `name`.
#[must_use]
pub fn mark(sid: &str, name: &str) -> String {
    json!({"event": "mark", "streamSid": sid, "mark": {"name": name}}).to_string()
}

/// An outbound `clear` message: the carrier drops what it holds.
#[must_use]
pub fn clear(sid: &str) -> String {
    json!({"event": "clear", "streamSid": sid}).to_string()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
#[must_use]
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional); `None` for anything else.
#[must_use]
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone 6 bits is not a byte: that is not base64.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilios_documented_messages_parse() {
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"token":"abc"}},"streamSid":"MZ1"}"#;
        let Inbound::Start(s) = Inbound::parse(start).unwrap() else {
            panic!("a start")
        };
        assert_eq!(s.stream_sid, "MZ1");
        assert_eq!(s.media_format.sample_rate, 8000);
        assert_eq!(s.custom_parameters, vec![("token".into(), "abc".into())]);
        let media = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"//7/"},"streamSid":"MZ1"}"#;
        assert_eq!(
            Inbound::parse(media).unwrap(),
            Inbound::Media {
                payload: vec![0xFF, 0xFE, 0xFF],
                chunk: Some(1),
                timestamp: Some(5)
            }
        );
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#;
        assert_eq!(Inbound::parse(dtmf).unwrap(), Inbound::Dtmf { digit: '1' });
        let mark =
            r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"my label"}}"#;
        assert_eq!(
            Inbound::parse(mark).unwrap(),
            Inbound::Mark {
                name: "my label".into()
            }
        );
        let stop = r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC1","callSid":"CA1"},"streamSid":"MZ1"}"#;
        assert_eq!(Inbound::parse(stop).unwrap(), Inbound::Stop);
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        assert!(matches!(
            Inbound::parse("{not json"),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            Inbound::parse(r#"{"event":"dance"}"#),
            Err(MessageError::UnknownEvent(_))
        ));
        assert!(matches!(
            Inbound::parse(r#"{"event":"media"}"#),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            Inbound::parse(r#"{"event":"media","media":{"payload":"***"}}"#),
            Err(MessageError::OutOfBounds(_))
        ));
        assert!(matches!(
            Inbound::parse(r#"{"event":"dtmf","dtmf":{"digit":"12"}}"#),
            Err(MessageError::OutOfBounds(_))
        ));
        let long = format!(
            r#"{{"event":"mark","mark":{{"name":"{}"}}}}"#,
            "x".repeat(MAX_MESSAGE)
        );
        assert!(matches!(
            Inbound::parse(&long),
            Err(MessageError::TooLong(_))
        ));
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_decode("A"), None);
    }
}

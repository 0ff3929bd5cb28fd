//! The Janus API as a room participant speaks it (SPEC F1–F3): the
//! envelope every request and reply shares, and the VideoRoom plugin's
//! requests and the parts of its events a participant acts on.
//!
//! Only the types and their checks live here; the transport (HTTP with a
//! long poll) lives with the participant in `sotto`. Everything read from
//! Janus is bounded before it is used: a reply is at most
//! [`MAX_REPLY_BYTES`], a publisher list at most [`MAX_PUBLISHERS`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The VideoRoom plugin's package name.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";

/// The longest reply read from Janus: an SDP offer with a few media
/// sections and candidates is 3–6 KiB, a long poll of ten events ten times
/// that.
pub const MAX_REPLY_BYTES: usize = 256 << 10;

/// The most publishers one event may list that are looked at.
pub const MAX_PUBLISHERS: usize = 64;

/// The longest display name kept (longer ones are cut).
pub const MAX_DISPLAY: usize = 128;

/// A request's envelope: `janus` the verb, a transaction to match the
/// reply, the plugin's `body` and a `jsep` when there is SDP.
#[derive(Debug, Clone, Serialize)]
pub struct Request<'a> {
    /// The verb: `create`, `attach`, `message`, `keepalive`, `detach`,
    /// `destroy`.
    pub janus: &'a str,
    /// Matches the reply (and a plugin's later event) to this request.
    pub transaction: String,
    /// For `attach`: the plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<&'a str>,
    /// For `message`: the plugin's request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// An offer or answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsep: Option<Jsep>,
    /// The API token, when Janus asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
}

/// SDP as Janus carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jsep {
    /// `offer` or `answer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The description.
    pub sdp: String,
}

impl Jsep {
    /// An offer.
    #[must_use]
    pub fn offer(sdp: String) -> Self {
        Self {
            kind: "offer".into(),
            sdp,
        }
    }

    /// An answer.
    #[must_use]
    pub fn answer(sdp: String) -> Self {
        Self {
            kind: "answer".into(),
            sdp,
        }
    }
}

/// Any reply or event from Janus, as far as a participant reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Reply {
    /// `success`, `ack`, `error`, `event`, `webrtcup`, `media`, `hangup`,
    /// `detached`, `slowlink`, `timeout`, `keepalive`, …
    #[serde(default)]
    pub janus: String,
    /// The request this answers, when it answers one.
    #[serde(default)]
    pub transaction: Option<String>,
    /// The handle an event is about.
    #[serde(default)]
    pub sender: Option<u64>,
    /// `success` of `create` and `attach`: the new id.
    #[serde(default)]
    pub data: Option<IdData>,
    /// Janus's own error.
    #[serde(default)]
    pub error: Option<JanusError>,
    /// The plugin's reply.
    #[serde(default)]
    pub plugindata: Option<PluginData>,
    /// SDP the plugin sends.
    #[serde(default)]
    pub jsep: Option<Jsep>,
    /// `hangup`: why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The id in a `success` reply.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct IdData {
    /// The session's or the handle's id.
    pub id: u64,
}

/// An error from Janus itself (not the plugin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct JanusError {
    /// Janus's code (458: no such session, 459: no such handle, …).
    #[serde(default)]
    pub code: u32,
    /// In words.
    #[serde(default)]
    pub reason: String,
}

/// A plugin's reply.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginData {
    /// The plugin's own fields.
    #[serde(default)]
    pub data: Value,
}

/// A publisher in a room, as Janus lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// Its feed id.
    pub id: u64,
    /// Its display name (cut at [`MAX_DISPLAY`]).
    pub display: String,
    /// Whether it publishes audio.
    pub audio: bool,
}

/// What a VideoRoom event tells a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomNews {
    /// Joined as a publisher: this participant's id, its private id and
    /// who publishes already.
    Joined {
        /// This participant's feed id.
        id: u64,
        /// Its private id (ties its subscriptions to it).
        private_id: u64,
        /// Who publishes already.
        publishers: Vec<Publisher>,
    },
    /// Publishers that started since.
    Publishers(Vec<Publisher>),
    /// A participant left the room.
    Leaving(u64),
    /// A publisher stopped publishing.
    Unpublished(u64),
    /// A subscription is ready: its offer comes in the `jsep`.
    Attached,
    /// A request went through (`configured`, `started`, …).
    Ok,
    /// The room was destroyed under the participant.
    Destroyed,
    /// The plugin refused a request.
    Error {
        /// The plugin's code (426: no such room, 433: unauthorized, …).
        code: u32,
        /// In words.
        reason: String,
    },
    /// Anything else (talking, …): nothing to act on.
    Other,
}

impl Reply {
    /// Parses one reply (or a long poll's array of them) from `bytes`.
    ///
    /// # Errors
    /// When it is too long or not Janus's JSON.
    pub fn parse_many(bytes: &[u8]) -> Result<Vec<Self>, String> {
        if bytes.len() > MAX_REPLY_BYTES {
            return Err(format!("a reply over {MAX_REPLY_BYTES} bytes"));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
        let items = match value {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            _ => return Err("not a Janus reply".into()),
        };
        items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(|e| format!("not a Janus reply ({e})")))
            .collect()
    }

    /// The id of a `success` to `create` or `attach`.
    #[must_use]
    pub fn id(&self) -> Option<u64> {
        self.data.map(|d| d.id)
    }

    /// What the VideoRoom plugin says, if this carries its data.
    #[must_use]
    pub fn news(&self) -> Option<RoomNews> {
        let data = &self.plugindata.as_ref()?.data;
        let u = |k: &str| data.get(k).and_then(Value::as_u64);
        if let Some(code) = u("error_code") {
            let reason = data.get("error").and_then(Value::as_str).unwrap_or("");
            return Some(RoomNews::Error {
                code: code as u32,
                reason: reason.chars().take(200).collect(),
            });
        }
        let kind = data.get("videoroom").and_then(Value::as_str)?;
        Some(match kind {
            "joined" => RoomNews::Joined {
                id: u("id")?,
                private_id: u("private_id").unwrap_or(0),
                publishers: publishers(data),
            },
            "attached" => RoomNews::Attached,
            "destroyed" => RoomNews::Destroyed,
            "event" | "updated" => {
                if let Some(id) = u("leaving") {
                    RoomNews::Leaving(id)
                } else if let Some(id) = u("unpublished") {
                    RoomNews::Unpublished(id)
                } else if data.get("publishers").is_some() {
                    RoomNews::Publishers(publishers(data))
                } else if data.get("configured").is_some() || data.get("started").is_some() {
                    RoomNews::Ok
                } else {
                    RoomNews::Other
                }
            }
            _ => RoomNews::Other,
        })
    }
}

/// The publishers an event lists, at most [`MAX_PUBLISHERS`].
fn publishers(data: &Value) -> Vec<Publisher> {
    let Some(list) = data.get("publishers").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .take(MAX_PUBLISHERS)
        .filter_map(|p| {
            let id = p.get("id")?.as_u64()?;
            let display = p
                .get("display")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(MAX_DISPLAY)
                .collect();
            // Janus 1.x lists streams; older ones an audio codec.
            let audio = p.get("streams").and_then(Value::as_array).map_or_else(
                || p.get("audio_codec").is_some(),
                |streams| {
                    streams.iter().any(|s| {
                        s.get("type").and_then(Value::as_str) == Some("audio")
                            && s.get("disabled").and_then(Value::as_bool) != Some(true)
                    })
                },
            );
            Some(Publisher { id, display, audio })
        })
        .collect()
}

/// The VideoRoom's `join` as a publisher of `room`.
#[must_use]
pub fn join_publisher(room: u64, display: &str, pin: Option<&str>) -> Value {
    let mut body =
        json!({"request": "join", "ptype": "publisher", "room": room, "display": display});
    if let Some(pin) = pin {
        body["pin"] = pin.into();
    }
    body
}

/// The VideoRoom's `publish`, audio only or with video.
#[must_use]
pub fn publish(display: &str) -> Value {
    json!({"request": "publish", "display": display})
}

/// The VideoRoom's `join` as a subscriber of `feed` in `room`, tied to the
/// publisher `private_id`.
#[must_use]
pub fn join_subscriber(room: u64, feed: u64, private_id: u64, pin: Option<&str>) -> Value {
    let mut body = json!({
        "request": "join", "ptype": "subscriber", "room": room,
        "streams": [{"feed": feed}], "private_id": private_id,
    });
    if let Some(pin) = pin {
        body["pin"] = pin.into();
    }
    body
}

/// The VideoRoom's `start`, sent with the subscriber's answer.
#[must_use]
pub fn start() -> Value {
    json!({"request": "start"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joined_event_lists_who_publishes_audio() {
        let text = br#"{"janus":"event","session_id":1,"sender":2,"transaction":"t1",
            "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"joined","room":1234,
            "id":77,"private_id":99,"publishers":[
              {"id":5,"display":"ann","streams":[{"type":"audio","mid":"0"}]},
              {"id":6,"display":"bob","streams":[{"type":"video","mid":"0"}]}]}}}"#;
        let replies = Reply::parse_many(text).unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].sender, Some(2));
        let Some(RoomNews::Joined {
            id,
            private_id,
            publishers,
        }) = replies[0].news()
        else {
            panic!("not joined");
        };
        assert_eq!((id, private_id), (77, 99));
        assert_eq!(publishers.len(), 2);
        assert!(publishers[0].audio && !publishers[1].audio);
    }

    #[test]
    fn plugin_errors_and_departures_are_read() {
        let e = br#"{"janus":"event","plugindata":{"data":{"videoroom":"event","error_code":426,"error":"No such room (9)"}}}"#;
        assert_eq!(
            Reply::parse_many(e).unwrap()[0].news(),
            Some(RoomNews::Error {
                code: 426,
                reason: "No such room (9)".into()
            })
        );
        let l = br#"[{"janus":"event","plugindata":{"data":{"videoroom":"event","leaving":5}}},{"janus":"keepalive"}]"#;
        let r = Reply::parse_many(l).unwrap();
        assert_eq!(r[0].news(), Some(RoomNews::Leaving(5)));
        assert_eq!(r[1].news(), None);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Reply::parse_many(b"<html>").is_err());
        assert!(Reply::parse_many(b"42").is_err());
        assert!(Reply::parse_many(&vec![b' '; MAX_REPLY_BYTES + 1]).is_err());
    }
}

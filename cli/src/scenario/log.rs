//! What a render leaves: the samples, and the event log with exact
//! sample times (JSON lines).

use serde_json::{json, Map, Value};

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// Output frame.
    pub sample: u64,
    /// Session name.
    pub session: String,
    /// Event name.
    pub event: String,
    /// Extra fields.
    pub fields: Map<String, Value>,
    pub(super) order: (usize, u64),
}

impl LogEvent {
    /// The JSON line.
    #[must_use]
    pub fn to_json(&self, sample_rate: u32) -> Value {
        let mut obj = Map::new();
        obj.insert("sample".into(), json!(self.sample));
        obj.insert(
            "t".into(),
            json!((self.sample as f64 / f64::from(sample_rate) * 1e6).round() / 1e6),
        );
        obj.insert("session".into(), json!(self.session));
        obj.insert("event".into(), json!(self.event));
        for (k, v) in &self.fields {
            obj.insert(k.clone(), v.clone());
        }
        Value::Object(obj)
    }
}

/// A finished render.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Interleaved output, when kept in memory (empty when written to a
    /// file as it rendered, see [`RenderOptions::files`](super::RenderOptions)).
    pub samples: Vec<f32>,
    /// The render's length in frames.
    pub frames: u64,
    /// The first channel's envelope, for the picture.
    pub envelope: crate::plot::Envelope,
    /// Output rate.
    pub sample_rate: u32,
    /// Output channels.
    pub channels: usize,
    /// Every event, in sample order.
    pub events: Vec<LogEvent>,
    /// Late blocks on the virtual clock (0 offline).
    pub late_blocks: u64,
    /// Why a requested device was not used (the virtual clock ran instead).
    pub device_fallback: Option<String>,
    /// Each session's own output, by session name, when asked for
    /// ([`RenderOptions::sessions`](super::RenderOptions)).
    pub sessions: Vec<(String, Vec<f32>)>,
}

pub use sotto_server::events::describe;

//! What a render leaves: the samples, and the event log with exact
//! sample times (JSON lines).

use serde_json::{json, Map, Value};
use sotto::SessionEventKind;

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

/// The event-log name and fields of a session event.
#[must_use]
pub fn describe(kind: &SessionEventKind) -> (&'static str, Map<String, Value>) {
    let mut f = Map::new();
    let name = match kind {
        SessionEventKind::FirstAudio => "first_audio",
        SessionEventKind::LastAudio => "last_audio",
        SessionEventKind::StoppedSpeaking => "stopped_speaking",
        SessionEventKind::Interrupted {
            tail_frames,
            dropped_frames,
        } => {
            f.insert("tail_frames".into(), json!(tail_frames));
            f.insert("dropped_frames".into(), json!(dropped_frames));
            "interrupted"
        }
        SessionEventKind::FadeDone => "fade_done",
        SessionEventKind::Cleared { dropped_frames } => {
            f.insert("dropped_frames".into(), json!(dropped_frames));
            "cleared"
        }
        SessionEventKind::Paused => "paused",
        SessionEventKind::Resumed => "resumed",
        SessionEventKind::DroppedInput { bytes } => {
            f.insert("bytes".into(), json!(bytes));
            "dropped_input"
        }
        SessionEventKind::Underrun => "underrun",
        SessionEventKind::QueueOverflow {
            dropped_frames,
            background,
        } => {
            f.insert("dropped_frames".into(), json!(dropped_frames));
            f.insert("background".into(), json!(background));
            "queue_overflow"
        }
        SessionEventKind::FramesLost { frames, total } => {
            f.insert("frames".into(), json!(frames));
            f.insert("total".into(), json!(total));
            "frames_lost"
        }
        SessionEventKind::SinkDetached { sink, reason } => {
            f.insert("sink".into(), json!(sink));
            f.insert("message".into(), json!(reason));
            "sink_detached"
        }
        SessionEventKind::Error { message } => {
            f.insert("message".into(), json!(message));
            "error"
        }
        SessionEventKind::AvatarConnected { participant } => {
            f.insert("participant".into(), json!(participant));
            "avatar_connected"
        }
        SessionEventKind::AvatarSegmentEnded {
            segment,
            playback_position,
            interrupted,
        } => {
            f.insert("segment".into(), json!(segment));
            f.insert("playback_position".into(), json!(playback_position));
            f.insert("interrupted".into(), json!(interrupted));
            "avatar_segment_ended"
        }
        SessionEventKind::AvatarAckTimeout { segment } => {
            f.insert("segment".into(), json!(segment));
            "avatar_ack_timeout"
        }
        SessionEventKind::AvatarDisconnected { reason } => {
            f.insert("message".into(), json!(reason));
            "avatar_disconnected"
        }
        SessionEventKind::BackgroundStarted { source } => {
            f.insert("source".into(), json!(source));
            "background_started"
        }
        SessionEventKind::BackgroundLoopWrapped { source, pass } => {
            f.insert("source".into(), json!(source));
            f.insert("pass".into(), json!(pass));
            "background_loop_wrapped"
        }
        SessionEventKind::BackgroundEnded { source, stopped } => {
            f.insert("source".into(), json!(source));
            f.insert("stopped".into(), json!(stopped));
            "background_ended"
        }
        SessionEventKind::BackgroundError { source, message } => {
            f.insert("source".into(), json!(source));
            f.insert("message".into(), json!(message));
            "background_error"
        }
        SessionEventKind::BackgroundWarning { source, message } => {
            f.insert("source".into(), json!(source));
            f.insert("message".into(), json!(message));
            "background_warning"
        }
        _ => "other",
    };
    (name, f)
}

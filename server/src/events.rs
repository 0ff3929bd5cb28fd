//! Session events as the servers and the program write them (JSON names
//! and fields), and names from the network made safe to show.

use serde_json::{json, Map, Value};
use sotto::SessionEventKind;

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
            f.insert("tail_frames".into(), json!(tail_frames.get()));
            f.insert("dropped_frames".into(), json!(dropped_frames.get()));
            "interrupted"
        }
        SessionEventKind::FadeDone => "fade_done",
        SessionEventKind::Cleared { dropped_frames } => {
            f.insert("dropped_frames".into(), json!(dropped_frames.get()));
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
            f.insert("dropped_frames".into(), json!(dropped_frames.get()));
            f.insert("background".into(), json!(background));
            "queue_overflow"
        }
        SessionEventKind::FramesLost { frames, total } => {
            f.insert("frames".into(), json!(frames.get()));
            f.insert("total".into(), json!(total.get()));
            "frames_lost"
        }
        SessionEventKind::SinkDetached { sink, reason } => {
            f.insert("sink".into(), json!(sink));
            f.insert("message".into(), json!(reason));
            "sink_detached"
        }
        SessionEventKind::Dtmf { digit } => {
            f.insert("digit".into(), json!(digit.to_string()));
            "dtmf"
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

/// A name from a file or the network as it may be shown on a terminal: at
/// most 64 characters (then `…`), control characters escaped, so nothing
/// it holds can move the cursor or flood the screen.
#[must_use]
pub fn printable(name: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::printable("agent"), "agent");
        assert_eq!(super::printable("a\u{1b}[2J\nb"), "a\\u{1b}[2J\\nb");
    }

    #[test]
    fn long_names_are_cut() {
        let long = "x".repeat(100);
        assert_eq!(super::printable(&long).chars().count(), 65);
    }
}

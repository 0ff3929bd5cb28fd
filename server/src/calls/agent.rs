//! The demo agent behind each call of `sotto serve` (SPEC W4): it speaks
//! its speech as streamed TTS, pauses the moment the caller makes a sound,
//! resumes if that was a blip (under 300 ms: a false interruption), and
//! barges in — an interrupt with the session's fade — once the caller has
//! spoken for 200 ms. When the caller has been quiet for a second and the
//! agent has had nothing to say for as long, it speaks again: turn after
//! turn to a caller who only listens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sotto::{
    CallEvent, CallHandle, Engine, InputFormat, RoomEvent, RoomHandle, SessionEventKind,
    SessionHandle,
};
use tokio::sync::{mpsc, oneshot};

/// What the agent utterances: bytes in its input format.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// The speech.
    pub bytes: Vec<u8>,
    /// Its format.
    pub input: InputFormat,
}

impl Utterance {
    /// Reads a 16-bit PCM WAV file (any rate the engine takes, mono or
    /// stereo).
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn from_wav(path: &std::path::Path) -> Result<Self, String> {
        let shown = path.display();
        let mut reader =
            hound::WavReader::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let spec = reader.spec();
        if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
            return Err(format!("{shown}: the speech must be 16-bit PCM"));
        }
        if !sotto::InputFormat::RATES.contains(&spec.sample_rate)
            || !(1..=2).contains(&spec.channels)
        {
            return Err(format!(
                "{shown}: {} Hz x {} channels; the speech must be mono or stereo at 8000, 16000, 22050, 24000, 44100 or 48000 Hz",
                spec.sample_rate, spec.channels
            ));
        }
        // A minute at most: the agent's turn, not an audiobook.
        if reader.duration() > spec.sample_rate * 60 {
            return Err(format!("{shown}: the speech may be at most 60 s"));
        }
        let mut bytes = Vec::new();
        for s in reader.samples::<i16>() {
            let s = s.map_err(|e| format!("corrupt WAV {shown}: {e}"))?;
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        Ok(Self {
            bytes,
            input: InputFormat {
                sample_rate: spec.sample_rate,
                channels: usize::from(spec.channels),
                sample_format: sotto::SampleFormat::S16,
            },
        })
    }
}

/// A call's events as its page reads them: numbered, the oldest dropped
/// past the bound.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<(u64, serde_json::Value)>,
    next: u64,
    bound: usize,
}

impl EventLog {
    /// An empty log of at most `bound` events.
    #[must_use]
    pub fn new(bound: usize) -> Self {
        Self {
            events: VecDeque::new(),
            next: 1,
            bound: bound.max(1),
        }
    }

    /// Adds an event named `event` at `t` seconds with `fields`.
    pub fn push(
        &mut self,
        event: &str,
        t: f64,
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) {
        fields.insert("event".into(), json!(event));
        fields.insert("t".into(), json!((t * 1000.0).round() / 1000.0));
        fields.insert("n".into(), json!(self.next));
        if self.events.len() == self.bound {
            self.events.pop_front();
        }
        self.events
            .push_back((self.next, serde_json::Value::Object(fields)));
        self.next += 1;
    }

    /// The events after the `after`-th, as a JSON array.
    #[must_use]
    pub fn since(&self, after: u64) -> String {
        let list: Vec<&serde_json::Value> = self
            .events
            .iter()
            .filter(|(n, _)| *n > after)
            .map(|(_, v)| v)
            .collect();
        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
    }
}

/// A 10 ms chunk louder than this (RMS, full scale 1) is the caller
/// speaking: about −34 dBFS.
const VOICE_RMS: f32 = 0.02;
/// Speech this long is a barge-in.
const BARGE_IN: Duration = Duration::from_millis(200);
/// Sound shorter than this, ended, was a blip: playback resumes.
const BLIP: Duration = Duration::from_millis(300);
/// Quiet this long ends a burst of the caller's sound.
const BURST_GAP: Duration = Duration::from_millis(80);
/// Quiet this long after a barge-in or the end of its turn, and the agent
/// speaks again.
const SPEAK_AGAIN: Duration = Duration::from_secs(1);

/// The caller's sound, chunk by chunk.
#[derive(Debug, Default)]
struct Listener {
    voiced_ms: u64,
    quiet_ms: u64,
    /// How long the agent has had nothing to say (its turn over, or
    /// barged out of it).
    idle_ms: u64,
    /// It has spoken again since it last fell idle.
    spoke_again: bool,
    paused: bool,
    barged: bool,
}

/// What the agent does on a chunk of the caller's sound.
#[derive(Debug, PartialEq, Eq)]
enum Act {
    Pause,
    Resume,
    Interrupt,
    SpeakAgain,
}

impl Listener {
    fn chunk(&mut self, rms: f32, agent_speaking: bool) -> Option<Act> {
        if agent_speaking && !self.barged {
            self.idle_ms = 0;
            self.spoke_again = false;
        } else {
            self.idle_ms += 10;
        }
        if rms > VOICE_RMS {
            self.quiet_ms = 0;
            self.voiced_ms += 10;
            if self.voiced_ms == 10 && agent_speaking && !self.barged {
                self.paused = true;
                return Some(Act::Pause);
            }
            if self.voiced_ms >= BARGE_IN.as_millis() as u64 && agent_speaking && !self.barged {
                self.barged = true;
                self.paused = false;
                return Some(Act::Interrupt);
            }
            return None;
        }
        self.quiet_ms += 10;
        if self.voiced_ms > 0 && self.quiet_ms >= BURST_GAP.as_millis() as u64 {
            let was = std::mem::take(&mut self.voiced_ms);
            if self.paused && was < BLIP.as_millis() as u64 {
                self.paused = false;
                return Some(Act::Resume);
            }
        }
        // A second of the caller's quiet with the agent idle as long: it
        // speaks again, once per idle spell (its next turn starts a new one).
        let second = SPEAK_AGAIN.as_millis() as u64;
        if self.quiet_ms >= second && self.idle_ms >= second && !self.spoke_again {
            self.barged = false;
            self.spoke_again = true;
            return Some(Act::SpeakAgain);
        }
        None
    }
}

/// Says `say` as a turn, pushed at once in 100 ms pieces as a fast TTS
/// streams it: the session's queue holds the agent back (and feeds an
/// avatar as it plays), so nothing needs pacing here.
fn speak(session: &SessionHandle, say: &Utterance) {
    if session.mark_synthesis_start().is_err() {
        return;
    }
    let chunk = say.input.sample_rate as usize / 10 * say.input.channels * 2;
    for piece in say.bytes.chunks(chunk.max(2)) {
        // Sent at once; the outcome is the session's business.
        drop(session.push(piece.to_vec()));
    }
    let _ = session.mark_synthesis_complete();
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// What the agent talks through: a call a browser made, a room on an SFU
/// it joined, or a phone call a carrier handed over.
pub(super) enum Link {
    /// A call (SPEC W3).
    Call(CallHandle),
    /// A room (SPEC F1).
    Room(RoomHandle),
    /// A phone call over a carrier's media stream (SPEC T1).
    Phone(sotto::PhoneCallHandle),
}

/// What a link's events mean to the agent.
enum News {
    /// Someone hears and is heard: a call connected, a room's participant
    /// subscribed to.
    Up,
    /// Over, and why.
    Ended(String),
    /// Worth a line in the log.
    Note(&'static str),
    /// Nothing to act on.
    Other,
}

impl Link {
    fn take_mic(&mut self) -> Option<mpsc::Receiver<Vec<f32>>> {
        match self {
            Self::Call(c) => c.take_mic(),
            Self::Room(r) => r.take_mic(),
            Self::Phone(p) => p.take_mic(),
        }
    }

    async fn next(&mut self) -> Option<News> {
        Some(match self {
            Self::Call(c) => match c.next_event().await? {
                CallEvent::Connected => News::Up,
                CallEvent::Ended { reason } => News::Ended(reason),
                _ => News::Other,
            },
            Self::Room(r) => match r.next_event().await? {
                RoomEvent::Hearing { .. } => News::Up,
                RoomEvent::Ended { reason } => News::Ended(reason),
                RoomEvent::Joined { .. } => News::Note("room_joined"),
                RoomEvent::ParticipantLeft { .. } => News::Note("participant_left"),
                RoomEvent::Reconnecting { .. } => News::Note("room_reconnecting"),
                _ => News::Other,
            },
            Self::Phone(p) => match p.next_event().await? {
                sotto::PhoneEvent::Started { .. } => News::Up,
                sotto::PhoneEvent::Ended { reason } => News::Ended(reason),
                sotto::PhoneEvent::Rejected { .. } => News::Note("rejected"),
                _ => News::Other,
            },
        })
    }

    async fn close(self) {
        match self {
            Self::Call(c) => c.hang_up().await,
            Self::Room(r) => r.leave().await,
            Self::Phone(p) => p.hang_up().await,
        }
    }
}

/// Keeps the call's microphone for a test to read (feature `test-routes`).
pub(super) type MicKeeper = Box<dyn FnMut(&[f32]) + Send>;

/// Runs the agent on `session` until the call (or room) ends or `stop`,
/// then hangs up (or leaves) and removes the session. It says `say`.
pub(super) async fn run(
    engine: Engine,
    session: SessionHandle,
    mut call: Link,
    say: Arc<Utterance>,
    log: Arc<Mutex<EventLog>>,
    mut mic_kept: Option<MicKeeper>,
    (mut stop, permit): (oneshot::Receiver<()>, Option<sotto::CallPermit>),
) {
    // Held while the call is set up: once it connects (or ends), another
    // may be set up in its place.
    let mut permit = permit;
    let mut events = session.events();
    let rate = f64::from(engine.config().sample_rate);
    let note = |log: &Mutex<EventLog>, event: &str, t: f64| {
        if let Ok(mut l) = log.lock() {
            l.push(event, t, serde_json::Map::new());
        }
    };
    let Some(mut mic) = call.take_mic() else {
        return;
    };
    let mut listener = Listener::default();
    let mut speaking = false;
    let mut connected = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = call.next() => match event {
                Some(News::Up) if !connected => {
                    connected = true;
                    drop(permit.take());
                    note(&log, "connected", engine.clock().0 as f64 / rate);
                    speak(&session, &say);
                }
                Some(News::Up) => note(&log, "hearing", engine.clock().0 as f64 / rate),
                Some(News::Note(what)) => note(&log, what, engine.clock().0 as f64 / rate),
                Some(News::Ended(reason)) => {
                    let mut fields = serde_json::Map::new();
                    fields.insert("reason".into(), json!(reason));
                    if let Ok(mut l) = log.lock() {
                        l.push("call_ended", engine.clock().0 as f64 / rate, fields);
                    }
                    break;
                }
                Some(_) => {}
                None => break,
            },
            Some(e) = events.recv() => {
                let (name, mut fields) = crate::events::describe(&e.kind);
                if matches!(e.kind, SessionEventKind::FirstAudio) {
                    // When its first sample played here, on the wall clock,
                    // for a page to measure how much later it heard it.
                    let behind = engine.clock().0.saturating_sub(e.at.0) as f64 / rate;
                    let wall = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64() - behind);
                    fields.insert("wall_ms".into(), json!((wall * 1000.0).round()));
                }
                match e.kind {
                    SessionEventKind::FirstAudio => speaking = true,
                    SessionEventKind::LastAudio | SessionEventKind::FadeDone => speaking = false,
                    // Interrupted while paused: nothing to fade, done now.
                    SessionEventKind::Interrupted { tail_frames, .. } if tail_frames.0 == 0 => {
                        speaking = false;
                    }
                    _ => {}
                }
                if let Ok(mut l) = log.lock() {
                    l.push(name, e.at.0 as f64 / rate, fields);
                }
            },
            chunk = mic.recv(), if connected => {
                let Some(chunk) = chunk else { break };
                if let Some(keep) = &mut mic_kept {
                    keep(&chunk);
                }
                let level = rms(&chunk);
                match listener.chunk(level, speaking) {
                    Some(Act::Pause) => { let _ = session.pause(); }
                    Some(Act::Resume) => { let _ = session.resume(); }
                    Some(Act::Interrupt) => {
                        let _ = session.interrupt();
                    }
                    Some(Act::SpeakAgain) => speak(&session, &say),
                    None => {}
                }
            },
        }
    }
    call.close().await;
    let _ = engine.remove_session(&session).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(l: &mut Listener, ms: u64, rms: f32, speaking: bool) -> Vec<Act> {
        (0..ms / 10)
            .filter_map(|_| l.chunk(rms, speaking))
            .collect()
    }

    #[test]
    fn a_blip_pauses_and_resumes_and_speech_barges_in() {
        let mut l = Listener::default();
        // A 150 ms blip while the agent speaks: paused, then resumed.
        assert_eq!(feed(&mut l, 150, 0.1, true), [Act::Pause]);
        assert_eq!(feed(&mut l, 100, 0.0, true), [Act::Resume]);
        // Speech: paused at once, interrupted at 200 ms.
        assert_eq!(feed(&mut l, 400, 0.1, true), [Act::Pause, Act::Interrupt]);
        // Quiet for a second: the agent speaks again.
        assert_eq!(feed(&mut l, 1_000, 0.0, false), [Act::SpeakAgain]);
        // Sound while the agent is quiet changes nothing.
        assert_eq!(feed(&mut l, 300, 0.1, false), []);
    }

    #[test]
    fn a_quiet_caller_hears_turn_after_turn() {
        let mut l = Listener::default();
        // The first turn, then a second of nothing: the next turn.
        assert_eq!(feed(&mut l, 2_000, 0.0, true), []);
        assert_eq!(feed(&mut l, 1_000, 0.0, false), [Act::SpeakAgain]);
        // Until it starts, nothing more is asked.
        assert_eq!(feed(&mut l, 500, 0.0, false), []);
        // It plays and ends: a second later, the next.
        assert_eq!(feed(&mut l, 2_000, 0.0, true), []);
        assert_eq!(feed(&mut l, 1_000, 0.0, false), [Act::SpeakAgain]);
    }

    #[test]
    fn the_log_keeps_its_newest_events() {
        let mut log = EventLog::new(2);
        for name in ["a", "b", "c"] {
            log.push(name, 0.5, serde_json::Map::new());
        }
        let all: Vec<serde_json::Value> = serde_json::from_str(&log.since(0)).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0]["event"], "b");
        assert_eq!(log.since(3), "[]");
    }
}

//! Twilio's side of a Media Stream, written from its documentation, for
//! tests of phone calls (SPEC T1–T4): a WebSocket client that sends
//! `connected`, `start` (with the TwiML's `<Parameter>`s) and 20 ms μ-law
//! `media` in real time from its own microphone; plays what it receives
//! on its own 20 ms clock from a buffer (what it "heard"); echoes each
//! `mark` once the audio sent before it has played; and on `clear` drops
//! its buffer and echoes every pending mark at once, as the docs say.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sotto_media::g711::Law;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the double has seen and done, readable while it runs.
#[derive(Debug, Default, Clone)]
pub struct Heard {
    /// What it played, 8 kHz, from its first tick: silence where its
    /// buffer was empty.
    pub played: Vec<f32>,
    /// Samples played when the first audio arrived (where `played`
    /// starts holding the stream).
    pub started_at: Option<usize>,
    /// Marks echoed as played: name, and samples played of the stream
    /// when echoed.
    pub marks: Vec<(String, usize)>,
    /// Marks echoed because of a `clear`.
    pub flushed: Vec<String>,
    /// `clear`s received, and samples played at each.
    pub clears: Vec<usize>,
    /// Samples received in `media`.
    pub received: usize,
    /// Ticks its buffer was empty after audio had started.
    pub underruns: usize,
    /// Messages it did not understand.
    pub unknown: Vec<String>,
    /// The close the server sent: code and reason.
    pub closed: Option<(u16, String)>,
    /// When its clock first ticked: `played[n]` played `n / 8000` s later.
    pub first_tick: Option<std::time::Instant>,
}

/// A Twilio media stream in progress.
pub struct TwilioDouble {
    heard: Arc<Mutex<Heard>>,
    control: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

enum Control {
    Dtmf(char),
    Stop,
    Raw(String),
}

/// Base64 as Twilio writes it.
fn b64(codes: &[u8]) -> String {
    sotto_net::phone::base64_encode(codes)
}

impl TwilioDouble {
    /// Connects to `url` (the TwiML's `<Stream url>`) with `parameters`
    /// (the TwiML's `<Parameter>`s) and starts the stream; its microphone
    /// sends `mic` (8 kHz) from the start, then silence.
    ///
    /// # Panics
    /// When the WebSocket cannot be opened.
    pub async fn call(url: &str, parameters: &[(&str, &str)], mic: Vec<f32>) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the stream's WebSocket opens");
        let params: serde_json::Map<String, Value> = parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let heard = Arc::new(Mutex::new(Heard::default()));
        let (control, controls) = mpsc::channel(16);
        let task = tokio::spawn(run(ws, params, mic, Arc::clone(&heard), controls));
        Self {
            heard,
            control,
            task,
        }
    }

    /// What it has heard and done so far.
    #[must_use]
    pub fn heard(&self) -> Heard {
        self.heard.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The caller presses `digit`.
    pub async fn press(&self, digit: char) {
        let _ = self.control.send(Control::Dtmf(digit)).await;
    }

    /// Sends `text` as it is (for tests of bad input).
    pub async fn send_raw(&self, text: String) {
        let _ = self.control.send(Control::Raw(text)).await;
    }

    /// The caller hangs up: `stop`, then the socket closes.
    pub async fn hang_up(self) -> Heard {
        let _ = self.control.send(Control::Stop).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.heard.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Waits (up to `limit`) for the server to close the stream.
    pub async fn closed(&self, limit: Duration) -> Option<(u16, String)> {
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until {
            if let Some(c) = self.heard().closed {
                return Some(c);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The double's life: its clock ticks every 20 ms, sending 20 ms of its
/// microphone and playing 20 ms of its buffer.
async fn run(
    mut ws: Socket,
    params: serde_json::Map<String, Value>,
    mic: Vec<f32>,
    heard: Arc<Mutex<Heard>>,
    mut controls: mpsc::Receiver<Control>,
) {
    use futures_util::{SinkExt, StreamExt};
    let (sid, call) = (
        "MZ0123456789abcdef0123456789abcdef",
        "CA0123456789abcdef0123456789abcdef",
    );
    let mut seq = 0u64;
    // Twilio numbers its messages from 1, as strings.
    fn next(seq: &mut u64) -> String {
        *seq += 1;
        seq.to_string()
    }
    let connected = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
    let start = json!({
        "event": "start", "sequenceNumber": next(&mut seq), "streamSid": sid,
        "start": {
            "accountSid": "AC0123456789abcdef0123456789abcdef", "streamSid": sid, "callSid": call,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": params,
        },
    });
    for m in [connected, start] {
        if ws.send(Message::Text(m.to_string().into())).await.is_err() {
            return;
        }
    }
    let mut codes = Vec::with_capacity(mic.len());
    Law::Ulaw.encode_f32(&mic, &mut codes);
    // The playout buffer, and marks waiting at the position they follow.
    let mut buffer: VecDeque<f32> = VecDeque::new();
    let mut marks: VecDeque<(String, usize)> = VecDeque::new();
    let (mut queued, mut played, mut chunk) = (0usize, 0usize, 0usize);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = tokio::time::Instant::now();
    let record = |f: &mut dyn FnMut(&mut Heard)| {
        if let Ok(mut h) = heard.lock() {
            f(&mut h);
        }
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // 20 ms of the microphone out.
                let from = chunk * 160;
                let frame: Vec<u8> = (from..from + 160)
                    .map(|i| codes.get(i).copied().unwrap_or(0xFF))
                    .collect();
                chunk += 1;
                let media = json!({
                    "event": "media", "sequenceNumber": next(&mut seq), "streamSid": sid,
                    "media": {"track": "inbound", "chunk": chunk.to_string(),
                              "timestamp": started.elapsed().as_millis().to_string(), "payload": b64(&frame)},
                });
                if ws.send(Message::Text(media.to_string().into())).await.is_err() {
                    gone(&mut ws, &heard).await;
                    return;
                }
                // 20 ms of the buffer played.
                let mut out = Vec::with_capacity(160);
                let had = !buffer.is_empty();
                for _ in 0..160 {
                    match buffer.pop_front() {
                        Some(s) => { out.push(s); played += 1; }
                        None => out.push(0.0),
                    }
                }
                let mut echo = Vec::new();
                while marks.front().is_some_and(|(_, at)| *at <= played) {
                    if let Some((name, _)) = marks.pop_front() {
                        echo.push(name);
                    }
                }
                let total = played;
                record(&mut |h| {
                    h.first_tick.get_or_insert_with(std::time::Instant::now);
                    h.played.extend_from_slice(&out);
                    if h.started_at.is_some() && !had {
                        h.underruns += 1;
                    }
                    for name in &echo {
                        h.marks.push((name.clone(), total));
                    }
                });
                for name in echo {
                    let m = json!({"event": "mark", "sequenceNumber": next(&mut seq), "streamSid": sid, "mark": {"name": name}});
                    if ws.send(Message::Text(m.to_string().into())).await.is_err() {
                        gone(&mut ws, &heard).await;
                        return;
                    }
                }
            }
            c = controls.recv() => match c {
                Some(Control::Dtmf(digit)) => {
                    let m = json!({"event": "dtmf", "sequenceNumber": next(&mut seq), "streamSid": sid,
                                   "dtmf": {"track": "inbound_track", "digit": digit.to_string()}});
                    let _ = ws.send(Message::Text(m.to_string().into())).await;
                }
                Some(Control::Raw(text)) => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        gone(&mut ws, &heard).await;
                        return;
                    }
                }
                Some(Control::Stop) | None => {
                    let m = json!({"event": "stop", "sequenceNumber": next(&mut seq), "streamSid": sid,
                                   "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef", "callSid": call}});
                    let _ = ws.send(Message::Text(m.to_string().into())).await;
                    let _ = ws.close(None).await;
                    return;
                }
            },
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(frame))) => {
                        let c = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        record(&mut |h| h.closed = Some(c.clone()));
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        gone(&mut ws, &heard).await;
                        return;
                    }
                };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match v["event"].as_str() {
                    Some("media") => {
                        let payload = v["media"]["payload"].as_str().unwrap_or("");
                        let bytes = sotto_net::phone::base64_decode(payload).unwrap_or_default();
                        let mut pcm = Vec::with_capacity(bytes.len());
                        Law::Ulaw.decode_f32(&bytes, &mut pcm);
                        queued += pcm.len();
                        buffer.extend(pcm);
                        let at = played;
                        record(&mut |h| {
                            h.received += bytes.len();
                            h.started_at.get_or_insert(at);
                        });
                    }
                    Some("mark") => {
                        let name = v["mark"]["name"].as_str().unwrap_or("").to_owned();
                        marks.push_back((name, queued));
                    }
                    Some("clear") => {
                        // The buffer goes; every pending mark comes back.
                        queued -= buffer.len();
                        buffer.clear();
                        let flushed: Vec<String> = marks.drain(..).map(|(n, _)| n).collect();
                        let at = played;
                        record(&mut |h| {
                            h.clears.push(at);
                            h.flushed.extend(flushed.iter().cloned());
                        });
                        for name in flushed {
                            let m = json!({"event": "mark", "sequenceNumber": next(&mut seq), "streamSid": sid, "mark": {"name": name}});
                            let _ = ws.send(Message::Text(m.to_string().into())).await;
                        }
                    }
                    _ => record(&mut |h| h.unknown.push(text.chars().take(200).collect())),
                }
            }
        }
    }
}

/// A send failed: the server is gone. Its close frame, if one came
/// first, says how; otherwise the connection dropped (1006).
async fn gone(ws: &mut Socket, heard: &Mutex<Heard>) {
    use futures_util::StreamExt;
    let mut code = (1006, String::new());
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(Some(f)) = m {
                return Some((u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    };
    if let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(1), read).await {
        code = c;
    }
    if let Ok(mut h) = heard.lock() {
        h.closed.get_or_insert(code);
    }
}

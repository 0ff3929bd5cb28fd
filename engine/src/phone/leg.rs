//! A phone call's task: the carrier's messages in, the session's output
//! out as 20 ms μ-law frames paced from the sample clock, a mark after
//! each, the caller's audio to the media thread.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sotto_actors::{SessionEvent, SessionEventKind};
use sotto_media::call::{
    Counters as MediaCounters, Encoded, Encoder, G711Encoder, Media, MicOut, Work,
};
use sotto_media::echo::EchoPath;
use sotto_media::g711::Law;
use sotto_media::resample::Resampler;
use sotto_net::phone::{self, Inbound};
use sotto_rt::FrameLength;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Counters, MediaStreamSocket, PhoneConfig, PhoneEvent, WsMessage};
use crate::call::Outgoing;
use crate::{OutputFrames, SessionHandle};

/// A 20 ms frame at 8 kHz.
const FRAME: usize = 160;
/// 48 kHz samples per 8 kHz sample.
const UP: u64 = 6;
/// Marks awaiting their echo at most; older ones are forgotten (a
/// carrier that echoes none must not grow memory).
const MAX_OUTSTANDING: usize = 4_096;
/// Work waiting for the media thread, as a call's.
const WORK_QUEUE: usize = 32;
/// Frames of codes waiting for their time: a second.
const LINE_LIMIT: usize = 8_000;

pub(super) struct Leg {
    pub(super) telemetry: Arc<sotto_rt::Telemetry>,
    pub(super) lag: Arc<crate::admission::ReaderLag>,
    pub(super) session: SessionHandle,
    pub(super) rate: u32,
    pub(super) channels: usize,
    pub(super) config: PhoneConfig,
    pub(super) counters: Arc<Counters>,
    pub(super) events: mpsc::Sender<PhoneEvent>,
}

/// Why a stream ends: the reason, and the close sent to the carrier.
struct End {
    reason: String,
    close: (u16, String),
}

impl End {
    fn new(reason: &str, code: u16) -> Self {
        Self {
            reason: reason.to_owned(),
            close: (code, reason.chars().take(100).collect()),
        }
    }
}

/// The current turn's audio on the output clock (the engine's rate): from
/// its first frame, less its pauses; what a confirmed output position
/// means in frames of the turn.
#[derive(Default)]
struct Turn {
    start: Option<u64>,
    paused_at: Option<u64>,
    pauses: Vec<(u64, u64)>,
}

/// Pauses a turn remembers; more are merged into the last.
const MAX_PAUSES: usize = 256;

impl Turn {
    fn on(&mut self, event: &SessionEvent) {
        let at = event.at.0;
        match event.kind {
            SessionEventKind::FirstAudio => {
                *self = Self {
                    start: Some(at),
                    ..Self::default()
                }
            }
            SessionEventKind::Paused => self.paused_at = Some(at),
            SessionEventKind::Resumed => {
                if let Some(from) = self.paused_at.take() {
                    if self.pauses.len() < MAX_PAUSES {
                        self.pauses.push((from, at));
                    } else if let Some(last) = self.pauses.last_mut() {
                        last.1 = at;
                    }
                }
            }
            _ => {}
        }
    }

    /// Frames of the turn before output position `pos`.
    fn heard_before(&self, pos: u64) -> u64 {
        let Some(start) = self.start else { return 0 };
        let span = |a: u64, b: u64| b.min(pos).saturating_sub(a.max(start));
        let paused: u64 = self.pauses.iter().map(|&(a, b)| span(a, b)).sum::<u64>()
            + self.paused_at.map_or(0, |a| span(a, u64::MAX));
        pos.saturating_sub(start).saturating_sub(paused)
    }
}

/// The codes on their way out, with the marks that confirm them.
struct Line {
    /// Codes waiting for their time.
    codes: VecDeque<u8>,
    /// The 48 kHz position of the next code sent (`None` before the
    /// first packet).
    next_pos: Option<u64>,
    /// When the next frame may go.
    next_send: Instant,
    /// Frames sent (the next mark's number).
    seq: u64,
    /// Marks sent, awaiting their echo: number and the position after it.
    outstanding: VecDeque<(u64, u64)>,
    /// Marks up to this number were sent before a `clear`.
    flushed_upto: u64,
    /// The 48 kHz position of the stream's first code.
    origin: Option<u64>,
}

impl Leg {
    pub(super) async fn run(
        self,
        mut socket: MediaStreamSocket,
        mut frames: OutputFrames,
        encoder: G711Encoder,
        echo: Option<EchoPath>,
        mic: mpsc::Sender<Vec<f32>>,
        mut hung_up: oneshot::Receiver<()>,
    ) {
        let sid = match self
            .wait_start(&mut socket, &mut frames, &mut hung_up)
            .await
        {
            Ok(sid) => sid,
            Err(end) => {
                frames.release();
                self.finish(&socket, end);
                return;
            }
        };
        let media_counters = Arc::new(MediaCounters::default());
        let media = Media {
            encoder: Encoder::G711(Box::new(encoder)),
            packet: FrameLength::Ms20,
            opus_channels: 1,
            echo,
            mic: MicOut::new(self.rate, self.channels, Arc::clone(&media_counters), mic),
            counters: Arc::clone(&media_counters),
            dtx: false,
        };
        let (work, work_in) = mpsc::channel::<Work>(WORK_QUEUE);
        let (encoded_tx, mut encoded) = mpsc::channel::<Encoded>(WORK_QUEUE);
        let media_thread = tokio::task::spawn_blocking(move || media.run(work_in, encoded_tx));
        let end = self
            .serve(
                &sid,
                &mut socket,
                &mut frames,
                &work,
                &mut encoded,
                &mut hung_up,
            )
            .await;
        drop(work);
        drop(encoded);
        let _ = media_thread.await;
        frames.release();
        self.session
            .shared()
            .confirmed_frames
            .store(u64::MAX, Ordering::Relaxed);
        self.finish(&socket, end);
    }

    /// Sends the close and the last event.
    fn finish(&self, socket: &MediaStreamSocket, end: End) {
        let _ = socket
            .outgoing
            .try_send(WsMessage::Close(end.close.0, end.close.1));
        let _ = self
            .events
            .try_send(PhoneEvent::Ended { reason: end.reason });
    }

    fn reject(&self, reason: String) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.try_send(PhoneEvent::Rejected { reason });
    }

    /// Takes `connected` and `start`; the stream's id, or why it ends.
    async fn wait_start(
        &self,
        socket: &mut MediaStreamSocket,
        frames: &mut OutputFrames,
        hung_up: &mut oneshot::Receiver<()>,
    ) -> Result<String, End> {
        let deadline = tokio::time::sleep(self.config.start_timeout);
        tokio::pin!(deadline);
        loop {
            let message = tokio::select! {
                () = &mut deadline => return Err(End::new("the stream never started", 1008)),
                _ = &mut *hung_up => return Err(End::new("hung up", 1000)),
                // What renders before the stream starts is in the past.
                f = frames.next_frame() => {
                    if f.is_err() {
                        return Err(End::new("the session's output closed", 1011));
                    }
                    continue;
                }
                m = socket.incoming.recv() => m,
            };
            let text = match message {
                None | Some(WsMessage::Close(..)) => {
                    return Err(End::new("the carrier went before the stream started", 1000))
                }
                Some(WsMessage::Binary(_)) => {
                    return Err(End::new(
                        "a binary message: this stream speaks JSON text",
                        1003,
                    ))
                }
                Some(WsMessage::Text(t)) => t,
            };
            match Inbound::parse(&text) {
                Ok(Inbound::Connected { .. }) => {}
                Ok(Inbound::Start(start)) => {
                    let f = &start.media_format;
                    if !(f.encoding.eq_ignore_ascii_case("audio/x-mulaw")
                        && f.sample_rate == 8_000
                        && f.channels == 1)
                    {
                        return Err(End::new(
                            "an unsupported media format: audio/x-mulaw, 8000 Hz, mono only",
                            1003,
                        ));
                    }
                    let _ = self.events.try_send(PhoneEvent::Started {
                        stream: start.stream_sid.clone(),
                        call: start.call_sid,
                        parameters: start.custom_parameters,
                    });
                    return Ok(start.stream_sid);
                }
                Ok(Inbound::Stop) => return Err(End::new("the carrier stopped the stream", 1000)),
                Ok(_) => return Err(End::new("a message before the stream started", 1002)),
                Err(e) => return Err(End::new(&e.to_string(), 1007)),
            }
        }
    }

    /// The stream, until it ends.
    async fn serve(
        &self,
        sid: &str,
        socket: &mut MediaStreamSocket,
        frames: &mut OutputFrames,
        work: &mpsc::Sender<Work>,
        encoded: &mut mpsc::Receiver<Encoded>,
        hung_up: &mut oneshot::Receiver<()>,
    ) -> End {
        let mut session_events = self.session.events();
        let mut events_open = true;
        let mut turn = Turn::default();
        let mut outgoing = Outgoing::new(self.rate, self.channels, 1, FrameLength::Ms20);
        let media_counters = MediaCounters::default();
        let mut to_48k = match Resampler::new(8_000, 48_000, 1) {
            Ok(r) => r,
            Err(e) => return End::new(&e.to_string(), 1011),
        };
        let (mut narrow, mut wide) = (Vec::with_capacity(FRAME), Vec::with_capacity(FRAME * 6));
        let now = Instant::now();
        let mut line = Line {
            codes: VecDeque::with_capacity(FRAME * 8),
            next_pos: None,
            next_send: now,
            seq: 0,
            outstanding: VecDeque::new(),
            flushed_upto: 0,
            origin: None,
        };
        // The lead: silence the carrier plays while the first frame comes.
        let lead_frames = (self.config.lead.as_millis() / 20).max(1) as usize;
        let silence = vec![Law::Ulaw.silence(); FRAME];
        for _ in 0..lead_frames {
            self.send(socket, phone::media(sid, &silence));
        }
        while frames.try_next_frame().is_some() {}
        let idle = tokio::time::sleep(self.config.idle_timeout);
        tokio::pin!(idle);
        let (mut window, mut in_window) = (Instant::now(), 0u32);
        loop {
            let due = line.codes.len() >= FRAME;
            tokio::select! {
                _ = &mut *hung_up => {
                    self.clear(socket, sid, &mut line);
                    return End::new("hung up", 1000);
                }
                () = &mut idle => return End::new("the carrier went quiet", 1001),
                message = socket.incoming.recv() => {
                    idle.as_mut().reset(Instant::now() + self.config.idle_timeout);
                    if window.elapsed() >= Duration::from_secs(1) {
                        (window, in_window) = (Instant::now(), 0);
                    }
                    in_window += 1;
                    if in_window > self.config.max_messages_per_second {
                        return End::new("too many messages", 1008);
                    }
                    let text = match message {
                        None | Some(WsMessage::Close(..)) => return End::new("the carrier went", 1000),
                        Some(WsMessage::Binary(_)) => {
                            self.reject("a binary message: this stream speaks JSON text".into());
                            continue;
                        }
                        Some(WsMessage::Text(t)) => t,
                    };
                    match Inbound::parse(&text) {
                        Ok(Inbound::Media { payload, .. }) => {
                            self.counters.samples_received.fetch_add(payload.len() as u64, Ordering::Relaxed);
                            narrow.clear();
                            Law::Ulaw.decode_f32(&payload, &mut narrow);
                            wide.clear();
                            to_48k.push(&narrow, &mut wide);
                            if !wide.is_empty() && work.try_send(Work::Mic(0, std::mem::take(&mut wide))).is_err() {
                                media_counters.mic_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Inbound::Mark { name }) => {
                            if let Some(pos48) = self.marked(&mut line, &name) {
                                let pos = pos48 * u64::from(self.rate) / 48_000;
                                let heard = turn.heard_before(pos);
                                self.session.shared().confirmed_frames.store(heard, Ordering::Relaxed);
                            }
                        }
                        Ok(Inbound::Dtmf { digit }) => {
                            self.session.shared().emit(SessionEvent {
                                session: self.session.id(),
                                at: self.telemetry.clock(),
                                kind: SessionEventKind::Dtmf { digit },
                            });
                            let _ = self.events.try_send(PhoneEvent::Dtmf { digit });
                        }
                        Ok(Inbound::Stop) => return End::new("the carrier stopped the stream", 1000),
                        Ok(Inbound::Start(_)) => self.reject("a second start".into()),
                        Ok(Inbound::Connected { .. }) => self.reject("a second connected".into()),
                        Ok(_) => self.reject("an event this protocol does not send".into()),
                        Err(e) => self.reject(e.to_string()),
                    }
                }
                e = session_events.recv(), if events_open => match e {
                    // A hard stop: what the carrier holds goes too.
                    Some(SessionEvent { kind: SessionEventKind::Cleared { .. }, .. }) => {
                        self.clear(socket, sid, &mut line);
                    }
                    Some(e) => {
                        if matches!(e.kind, SessionEventKind::FirstAudio) {
                            self.session.shared().confirmed_frames.store(0, Ordering::Relaxed);
                        }
                        turn.on(&e);
                    }
                    None => events_open = false,
                },
                frame = frames.next_frame() => {
                    let Ok(frame) = frame else { return End::new("the session's output closed", 1011) };
                    outgoing.frame(&frame, &self.telemetry, &self.lag, work, &media_counters);
                }
                Some(packet) = encoded.recv() => {
                    if line.next_pos.is_none() {
                        line.next_pos = Some(packet.pts);
                        line.origin = Some(packet.pts);
                    }
                    if line.codes.len() + packet.bytes.len() <= LINE_LIMIT {
                        line.codes.extend(packet.bytes);
                    }
                }
                () = tokio::time::sleep_until(line.next_send), if due => {
                    self.send_frame(socket, sid, &mut line);
                }
            }
        }
    }

    /// Sends one 20 ms frame and its mark; the next may go 20 ms later,
    /// never to catch up more than the lead (no bursts).
    fn send_frame(&self, socket: &MediaStreamSocket, sid: &str, line: &mut Line) {
        let codes: Vec<u8> = line.codes.drain(..FRAME).collect();
        let pos = line.next_pos.unwrap_or(0) + FRAME as u64 * UP;
        line.next_pos = Some(pos);
        if !self.send(socket, phone::media(sid, &codes)) {
            self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line.seq += 1;
        if self.send(socket, phone::mark(sid, &format!("sotto-{}", line.seq))) {
            if line.outstanding.len() >= MAX_OUTSTANDING {
                line.outstanding.pop_front();
            }
            line.outstanding.push_back((line.seq, pos));
        }
        let sent = (pos - line.origin.unwrap_or(0)) * u64::from(self.rate) / 48_000;
        self.counters.sent_frames.store(sent, Ordering::Relaxed);
        // After a stall the line catches up by at most the lead.
        let floor = Instant::now()
            .checked_sub(self.config.lead)
            .unwrap_or_else(Instant::now);
        line.next_send = (line.next_send + Duration::from_millis(20)).max(floor);
    }

    /// A mark came back: the caller heard up to it (its output position
    /// at 48 kHz, returned), or it was flushed.
    fn marked(&self, line: &mut Line, name: &str) -> Option<u64> {
        let n = name
            .strip_prefix("sotto-")
            .and_then(|n| n.parse::<u64>().ok())?;
        let mut heard = None;
        while let Some(&(seq, pos)) = line.outstanding.front() {
            if seq > n {
                break;
            }
            line.outstanding.pop_front();
            if seq == n {
                if seq <= line.flushed_upto {
                    self.counters.marks_flushed.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.marks_played.fetch_add(1, Ordering::Relaxed);
                    let sent = (pos - line.origin.unwrap_or(0)) * u64::from(self.rate) / 48_000;
                    self.counters
                        .confirmed_frames
                        .store(sent, Ordering::Relaxed);
                    heard = Some(pos);
                }
            }
        }
        heard
    }

    /// A hard stop: the carrier drops what it holds, its marks come back
    /// as flushed.
    fn clear(&self, socket: &MediaStreamSocket, sid: &str, line: &mut Line) {
        line.flushed_upto = line.seq;
        if self.send(socket, phone::clear(sid)) {
            self.counters.clears.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send(&self, socket: &MediaStreamSocket, text: String) -> bool {
        socket.outgoing.try_send(WsMessage::Text(text)).is_ok()
    }
}

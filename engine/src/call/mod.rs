//! Calls over WebRTC (SPEC W1, W2, W6): a session's own output goes to the
//! far end as an Opus track whose RTP timestamps are the frames' pts, and
//! the far end's microphone comes back decoded, in 10 ms chunks at the
//! engine's rate.
//!
//! Encoding, and the optional echo cancellation of the far end's
//! microphone, run on a blocking thread of their own per call (see
//! [`media`]), never on the audio thread or an async worker; a frame of
//! digital silence skips the encoder (see `sotto_net::opus`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use sotto_media::call::CallStats;
use sotto_media::call::{resampler, Counters, Encoded, Media, MicOut, Work};
use sotto_media::echo::EchoPath;
use sotto_media::opus::{OpusEncoder, OPUS_RATE};
use sotto_media::receive::OpusReceiver;
use sotto_net::call::{answer_call, AnswerError, CallPeer};
use tokio::sync::{mpsc, oneshot};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::{EchoConfig, Engine, Frame, FrameLength, OutputFrames, SessionError, SessionHandle};

/// What to pass to [`Engine::accept_call`]: how a call sends and takes
/// audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    /// Opus packet length (W1): 20 ms unless asked.
    pub packet: FrameLength,
    /// Opus bit rate, bits per second (6,000–510,000).
    pub bitrate: u32,
    /// How long the far end has to connect after the answer.
    pub connect_timeout: Duration,
    /// Microphone audio held unread; past it the newest chunks are dropped
    /// and counted (W2).
    pub mic_queue: Duration,
    /// The address the call's media sockets bind, and the only one its
    /// answer offers: loopback unless a deployment names an interface.
    pub bind: IpAddr,
    /// The audio processing module on the far end's microphone (W2):
    /// echo cancellation against this call's own output as it was sent,
    /// noise suppression, gain control, high-pass, each switchable; the
    /// echo's delay is found by the module. `None`: the microphone as
    /// decoded.
    pub processing: Option<EchoConfig>,
    /// Silence goes out as Opus DTX sends it, one packet in 400 ms (past
    /// its first 200 ms), instead of every packet: a silent call costs
    /// the network and the far end almost nothing. Rooms turn it off by
    /// default: Chrome's jitter buffer squeezes the first half second of
    /// speech after such a silence while it adapts (measured through
    /// Janus), and an SFU's subscribers join during silences.
    pub dtx: bool,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            packet: FrameLength::Ms20,
            bitrate: 64_000,
            connect_timeout: Duration::from_secs(10),
            mic_queue: Duration::from_secs(1),
            bind: sotto_net::peer::LOOPBACK,
            processing: None,
            dtx: true,
        }
    }
}

/// What happened to a call, from `CallHandle::events`: connected, ended,
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEvent {
    /// The far end connected; audio flows.
    Connected,
    /// The call is over: hung up, the far end gone or never connected
    /// (W6). The session goes on; its output can be taken by a new call.
    Ended {
        /// Why, in a few words.
        reason: String,
    },
}

/// A call in progress: its events, counters and microphone. Dropping it
/// hangs up.
pub struct CallHandle {
    counters: Arc<Counters>,
    events: mpsc::Receiver<CallEvent>,
    mic: Option<mpsc::Receiver<Vec<f32>>>,
    hang_up: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Events a call makes in its life: a handful.
const CALL_EVENTS: usize = 8;

impl CallHandle {
    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> CallStats {
        self.counters.snapshot()
    }

    /// A reader of this call's counters that outlives the handle's borrow
    /// (a server showing a call's stats while its task owns the handle).
    #[must_use]
    pub fn stats_reader(&self) -> Arc<dyn Fn() -> CallStats + Send + Sync> {
        let counters = Arc::clone(&self.counters);
        Arc::new(move || counters.snapshot())
    }

    /// The next event; `None` once the call is over and its events read.
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    /// The next 10 ms of the far end's microphone, interleaved at the
    /// engine's rate and channels; `None` once the call is over.
    pub async fn next_mic_chunk(&mut self) -> Option<Vec<f32>> {
        self.mic.as_mut()?.recv().await
    }

    /// Takes the microphone out of the handle, to read it beside the
    /// call's events: 10 ms chunks, interleaved at the engine's rate and
    /// channels, `None` once the call is over. [`CallHandle::next_mic_chunk`]
    /// is `None` afterwards.
    pub fn take_mic(&mut self) -> Option<mpsc::Receiver<Vec<f32>>> {
        self.mic.take()
    }

    /// Ends the call and waits until its peer is closed and the session's
    /// output is free for another call.
    pub async fn hang_up(mut self) {
        if let Some(tx) = self.hang_up.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for CallHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.hang_up.take() {
            let _ = tx.send(());
        }
    }
}

impl Engine {
    /// Answers a far end's SDP `offer` with a call carrying `session`'s
    /// own output (SPEC W1–W3): the answer's SDP (every candidate in it,
    /// on loopback) and the call. The session's output belongs to the call
    /// until it ends.
    ///
    /// # Errors
    /// [`SessionError`]: a bad offer, the output not free, the offline clock,
    /// a config out of range, a peer that cannot be built.
    pub async fn accept_call(
        &self,
        session: &SessionHandle,
        offer: &str,
        config: CallConfig,
    ) -> Result<(String, CallHandle), SessionError> {
        self.can_carry_media(&config)?;
        let rate = self.config().sample_rate;
        let channels = self.config().channels;
        let opus_channels = channels.min(2);
        let encoder = OpusEncoder::new(opus_channels, config.packet, config.bitrate, 10)
            .map_err(|e| SessionError::CallConfig(e.to_string()))?;
        let echo = match config.processing {
            Some(c) => Some(
                EchoPath::finding_delay(c).map_err(|e| SessionError::CallConfig(e.to_string()))?,
            ),
            None => None,
        };
        let frames = session.frames()?;
        let (answer, peer) = match answer_call(offer, config.bind).await {
            Ok(a) => a,
            Err(e) => {
                frames.release();
                return Err(match e {
                    AnswerError::BadOffer(m) => SessionError::BadOffer(m),
                    AnswerError::Net(e) => SessionError::Net(e.0),
                });
            }
        };
        let counters = Arc::new(Counters::default());
        let (events_tx, events) = mpsc::channel(CALL_EVENTS);
        let mic_chunks = (config.mic_queue.as_millis() / 10).clamp(1, 6_000) as usize;
        let (mic_tx, mic) = mpsc::channel(mic_chunks);
        let (hang_up, hung_up) = oneshot::channel();
        let call = Call {
            telemetry: self.renderer_telemetry(),
            lag: self.reader_lag(),
            peer,
            frames,
            encoder,
            echo,
            rate,
            channels,
            opus_channels,
            config,
            counters: Arc::clone(&counters),
            events: events_tx,
            mic: mic_tx,
        };
        let task = tokio::spawn(call.run(hung_up));
        Ok((
            answer,
            CallHandle {
                counters,
                events,
                mic: Some(mic),
                hang_up: Some(hang_up),
                task: Some(task),
            },
        ))
    }
}

impl Engine {
    /// What every WebRTC link (a call, a room, a WHIP publication) needs:
    /// the engine running, a real-time clock, a bit rate Opus takes.
    pub(crate) fn can_carry_media(&self, config: &CallConfig) -> Result<(), SessionError> {
        if self.running().is_err() {
            return Err(SessionError::Closed);
        }
        if matches!(self.config().clock, crate::Clock::Offline) {
            return Err(SessionError::Offline);
        }
        if !(6_000..=510_000).contains(&config.bitrate) {
            return Err(SessionError::CallConfig(format!(
                "bitrate {} is outside 6000..=510000",
                config.bitrate
            )));
        }
        Ok(())
    }
}

/// A call's moving parts, owned by its task.
struct Call {
    telemetry: Arc<sotto_rt::Telemetry>,
    /// Where this call's reader says how far behind the render it is.
    lag: Arc<crate::admission::ReaderLag>,
    peer: CallPeer,
    frames: OutputFrames,
    encoder: OpusEncoder,
    echo: Option<EchoPath>,
    rate: u32,
    channels: usize,
    opus_channels: usize,
    config: CallConfig,
    counters: Arc<Counters>,
    events: mpsc::Sender<CallEvent>,
    mic: mpsc::Sender<Vec<f32>>,
}

/// Packets waiting for the network: a few, so a stalled peer drops audio
/// rather than delays it.
const PACKET_QUEUE: usize = 8;
/// Work waiting for the media thread: packets to encode and microphone
/// audio, a few of each.
const WORK_QUEUE: usize = 32;

impl Call {
    async fn run(self, mut hung_up: oneshot::Receiver<()>) {
        let Call {
            telemetry,
            lag,
            peer,
            mut frames,
            encoder,
            echo,
            rate,
            channels,
            opus_channels,
            config,
            counters,
            events,
            mic,
        } = self;
        let CallPeer {
            peer,
            events: mut peer_events,
            mut sender,
        } = peer;
        let ended = |reason: &str| CallEvent::Ended {
            reason: reason.to_owned(),
        };
        // Connected within the limit, or the call is over.
        let connect = sotto_net::connected(&mut peer_events, config.connect_timeout);
        let outcome = tokio::select! {
            r = connect => r.map_err(|e| e.0),
            _ = &mut hung_up => Err("hung up".to_owned()),
        };
        if let Err(why) = outcome {
            let _ = peer.close().await;
            frames.release();
            let _ = events.try_send(ended(&why));
            return;
        }
        // What the session rendered while the far end connected is in the
        // past: sent now, in a burst, it would fill the far end's jitter
        // buffer, which then squeezes the speech that follows to drain it.
        while frames.try_next_frame().is_some() {}
        let lost_before = frames.lost_frames();
        let _ = events.try_send(CallEvent::Connected);

        let (work, work_in) = mpsc::channel::<Work>(WORK_QUEUE);
        let (encoded_tx, mut encoded) = mpsc::channel::<Encoded>(PACKET_QUEUE);
        let media = Media {
            encoder: sotto_media::call::Encoder::Opus(encoder),
            packet: config.packet,
            opus_channels,
            echo,
            mic: MicOut::new(rate, channels, Arc::clone(&counters), mic),
            counters: Arc::clone(&counters),
            dtx: config.dtx,
        };
        let media_thread = tokio::task::spawn_blocking(move || media.run(work_in, encoded_tx));

        // The far end's microphone, decoded on a task of its own.
        let mic_task = tokio::spawn(receive_mic(
            peer_events.tracks,
            Arc::clone(&counters),
            work.clone(),
        ));

        let mut outgoing = Outgoing::new(rate, channels, opus_channels, config.packet);
        let mut quiet = FarEnd::new(&counters);
        let mut check = tokio::time::interval(Duration::from_millis(250));
        let reason = loop {
            tokio::select! {
                _ = &mut hung_up => break "hung up",
                state = peer_events.state.recv() => match state {
                    Some(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)
                    | None => break "the far end is gone",
                    Some(RTCPeerConnectionState::Disconnected) => {
                        quiet.stun_quiet = true;
                        if quiet.gone(&counters) {
                            break "the far end is gone";
                        }
                    }
                    Some(RTCPeerConnectionState::Connected) => quiet.stun_quiet = false,
                    Some(_) => {}
                },
                _ = check.tick() => if quiet.gone(&counters) {
                    break "the far end is gone";
                },
                frame = frames.next_frame() => {
                    let Ok(frame) = frame else { break "the session's output closed" };
                    counters.frames_lost.store(frames.lost_frames() - lost_before, Ordering::Relaxed);
                    outgoing.frame(&frame, &telemetry, &lag, &work, &counters);
                },
                Some(packet) = encoded.recv() => {
                    outgoing.send(&mut sender, &packet, &telemetry, &counters).await;
                },
            }
        };
        mic_task.abort();
        drop(work);
        drop(encoded);
        let _ = media_thread.await;
        let _ = peer.close().await;
        frames.release();
        let _ = events.try_send(ended(reason));
    }
}

/// A session's output on its way to Opus packets: in the encoder's layout,
/// resampled to 48 kHz, cut into packets stamped with their pts; shared
/// by calls and rooms.
pub(crate) struct Outgoing {
    to_48k: Option<sotto_media::resample::Resampler>,
    pending: Vec<f32>,
    pending_pts: Option<u64>,
    scratch: Vec<f32>,
    packet: FrameLength,
    packet_samples: usize,
    rate: u32,
    channels: usize,
    opus_channels: usize,
}

impl Outgoing {
    pub(crate) fn new(
        rate: u32,
        channels: usize,
        opus_channels: usize,
        packet: FrameLength,
    ) -> Self {
        let packet_samples = packet.frames_at(OPUS_RATE) * opus_channels;
        Self {
            to_48k: resampler(rate, OPUS_RATE, opus_channels),
            pending: Vec::with_capacity(packet_samples * 2),
            pending_pts: None,
            scratch: Vec::new(),
            packet,
            packet_samples,
            rate,
            channels,
            opus_channels,
        }
    }

    /// Takes one output frame: reports how far behind the render its
    /// reader is, and hands every whole packet to the media thread.
    pub(crate) fn frame(
        &mut self,
        frame: &Frame,
        telemetry: &sotto_rt::Telemetry,
        lag: &crate::admission::ReaderLag,
        work: &mpsc::Sender<Work>,
        counters: &Counters,
    ) {
        let rate = u64::from(self.rate);
        let end = frame.pts.0 + (frame.samples.len() / self.channels.max(1)) as u64;
        let behind = telemetry.clock().0.saturating_sub(end);
        lag.report(Duration::from_micros(behind * 1_000_000 / rate));
        let first = to_opus_layout(frame, self.channels, self.opus_channels, &mut self.scratch);
        let at48 = frame.pts.0 * u64::from(OPUS_RATE) / rate;
        if self.pending_pts.is_none() {
            self.pending_pts = Some(at48);
        }
        match &mut self.to_48k {
            None => self.pending.extend_from_slice(first),
            Some(r) => r.push(first, &mut self.pending),
        }
        while self.pending.len() >= self.packet_samples {
            let pcm: Vec<f32> = self.pending.drain(..self.packet_samples).collect();
            let pts = self.pending_pts.unwrap_or(0);
            self.pending_pts = Some(pts + self.packet.frames_at(OPUS_RATE) as u64);
            if work.try_send(Work::Encode(pcm, pts)).is_err() {
                counters.encoder_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends an encoded packet on `sender`, counting it and its age.
    pub(crate) async fn send(
        &self,
        sender: &mut sotto_net::call::OpusSender,
        packet: &Encoded,
        telemetry: &sotto_rt::Telemetry,
        counters: &Counters,
    ) {
        if sender
            .send(&packet.bytes, packet.pts, packet.marker)
            .await
            .is_ok()
        {
            counters.packets_sent.fetch_add(1, Ordering::Relaxed);
            let rate = u64::from(self.rate);
            let pts = packet.pts * rate / u64::from(OPUS_RATE);
            let age = telemetry.clock().0.saturating_sub(pts) * 1_000_000 / rate;
            counters.send_age_us.fetch_add(age, Ordering::Relaxed);
        }
    }
}

/// The frame's samples in Opus's layout: as they are for one or two
/// channels, the first two of more.
fn to_opus_layout<'a>(
    frame: &'a Frame,
    channels: usize,
    opus_channels: usize,
    scratch: &'a mut Vec<f32>,
) -> &'a [f32] {
    if channels == opus_channels {
        return &frame.samples;
    }
    scratch.clear();
    for f in frame.samples.chunks_exact(channels) {
        scratch.extend_from_slice(&f[..opus_channels]);
    }
    scratch
}

/// Decodes the far end's first audio track and hands it, mono at
/// 48 kHz, to the media thread; counts what the packets were.
/// Whether a call's far end is gone: its STUN quiet (ICE says
/// Disconnected) and no packet of its media for
/// [`sotto_net::peer::CALL_SILENT_LIMIT`]. Media alone keeps a call up:
/// some agents (libnice's, in GStreamer) send STUN only every 25 s once
/// connected.
struct FarEnd {
    stun_quiet: bool,
    packets: u64,
    heard: std::time::Instant,
}

impl FarEnd {
    fn new(counters: &Counters) -> Self {
        Self {
            stun_quiet: false,
            packets: counters.packets_received.load(Ordering::Relaxed),
            heard: std::time::Instant::now(),
        }
    }

    fn gone(&mut self, counters: &Counters) -> bool {
        let packets = counters.packets_received.load(Ordering::Relaxed);
        if packets != self.packets {
            self.packets = packets;
            self.heard = std::time::Instant::now();
        }
        self.stun_quiet && self.heard.elapsed() >= sotto_net::peer::CALL_SILENT_LIMIT
    }
}

async fn receive_mic(
    mut tracks: mpsc::Receiver<Arc<dyn webrtc::media_stream::track_remote::TrackRemote>>,
    counters: Arc<Counters>,
    work: mpsc::Sender<Work>,
) {
    let Some(track) = tracks.recv().await else {
        return;
    };
    receive_feed(track, 0, counters, work).await;
}

/// Decodes one remote audio track, feed `feed` of the microphone, and
/// hands it, mono at 48 kHz, to the media thread; counts what the packets
/// were.
pub(crate) async fn receive_feed(
    track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>,
    feed: u64,
    counters: Arc<Counters>,
    work: mpsc::Sender<Work>,
) {
    // Browsers send Opus as stereo in the SDP and mono on the wire;
    // decoding as mono takes either.
    let Ok(mut receiver) = OpusReceiver::new(track, 1) else {
        return;
    };
    let mut last = sotto_media::receive::Received::default();
    while let Some(audio) = receiver.next().await {
        if work.try_send(Work::Mic(feed, audio.to_vec())).is_err() {
            // The media thread is behind: this piece is lost like a chunk
            // nobody read.
            counters.mic_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let now = receiver.counts();
        let add = |a: &AtomicU64, n: u64| a.fetch_add(n, Ordering::Relaxed);
        add(&counters.packets_received, now.packets - last.packets);
        add(&counters.packets_lost, now.lost - last.lost);
        add(&counters.packets_concealed, now.concealed - last.concealed);
        add(&counters.packets_bad, now.bad - last.bad);
        let jitter_ms = (now.jitter * 1000.0) as f32;
        counters
            .jitter_ms
            .store(jitter_ms.to_bits(), Ordering::Relaxed);
        last = now;
    }
}

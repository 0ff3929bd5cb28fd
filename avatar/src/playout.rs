//! The avatar side of the link (SPEC A5–A7): messages from the agent become
//! queued audio, segment-end markers and resets; a 20 ms tick plays the
//! queue through the voice track, feeds the renderer and paces video from
//! the voice's sample clock, and acknowledges each segment as it ends.
//!
//! Everything here counts samples: the playback position in an
//! acknowledgement is the audio actually played, and video frame `k` is
//! shown when the voice has played `k / fps` seconds, so picture and sound
//! never drift apart by more than a frame. Only the interrupt cooldown is
//! wall time: it is about when messages arrive.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sotto_net::avatar::{Control, StreamEnded, INTERRUPT, MAX_CHUNK};

/// The video clock's rate (SPEC A7).
pub const PTS_RATE: u64 = 90_000;

/// One picture, YUV 4:2:0 planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Luma, `width * height`.
    pub y: Vec<u8>,
    /// Blue difference, a quarter of that.
    pub u: Vec<u8>,
    /// Red difference, a quarter of that.
    pub v: Vec<u8>,
}

/// Draws the avatar (SPEC A6).
pub trait AvatarRenderer: Send + 'static {
    /// The audio being played, 20 ms at a time, interleaved.
    fn push_audio(&mut self, samples: &[i16], channels: usize);
    /// An interrupt: forget the audio seen.
    fn reset(&mut self);
    /// Draws the picture shown at `pts` (90 kHz) into `frame`.
    fn render(&mut self, pts: u64, frame: &mut VideoFrame);
    /// The picture size.
    fn size(&self) -> (u32, u32);
}

/// Where the avatar's output goes.
pub trait AvatarSink: Send + 'static {
    /// 20 ms of voice, interleaved s16.
    fn voice(&mut self, samples: &[i16]);
    /// One video frame and its presentation time (90 kHz).
    fn video(&mut self, frame: &VideoFrame, pts: u64);
    /// An interrupt cut the voice here.
    fn reset(&mut self) {}
    /// The connection ended: flush.
    fn finish(&mut self) {}
}

/// How the avatar plays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayoutConfig {
    /// PCM rate of the agent's audio.
    pub sample_rate: u32,
    /// PCM channels of the agent's audio.
    pub channels: usize,
    /// Play mono audio as stereo (each sample on both channels).
    pub stereo: bool,
    /// Video frames per second.
    pub fps: u32,
    /// Audio arriving this soon after an interrupt is dropped (SPEC A5).
    pub cooldown: Duration,
    /// Audio the input queue holds before the oldest is dropped.
    pub queue: Duration,
    /// The voice track's cap (SPEC A7).
    pub voice_cap: Duration,
}

impl Default for PlayoutConfig {
    fn default() -> Self {
        Self {
            sample_rate: 24_000,
            channels: 1,
            stereo: false,
            fps: 25,
            cooldown: Duration::from_millis(300),
            queue: Duration::from_secs(120),
            voice_cap: Duration::from_secs(2),
        }
    }
}

/// What the avatar counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    /// PCM samples received and queued.
    pub received: u64,
    /// Samples dropped because they came in an interrupt's cooldown.
    pub cooldown_dropped: u64,
    /// Samples dropped because the input queue was full.
    pub queue_dropped: u64,
    /// Samples dropped because the voice track was full.
    pub voice_dropped: u64,
    /// Messages that were neither PCM nor a known control message.
    pub malformed: u64,
    /// Voice frames emitted (silence included).
    pub voice_frames: u64,
    /// Video frames emitted.
    pub video_frames: u64,
    /// Resets (interrupts) handled.
    pub resets: u64,
}

/// The voice track: steady 20 ms frames, silence when empty, at most
/// `cap` samples buffered (the oldest dropped).
#[derive(Debug)]
struct VoiceTrack {
    buf: VecDeque<i16>,
    cap: usize,
}

impl VoiceTrack {
    /// Queues samples; returns how many old ones were dropped.
    fn push(&mut self, samples: impl Iterator<Item = i16>) -> usize {
        self.buf.extend(samples);
        let over = self.buf.len().saturating_sub(self.cap);
        self.buf.drain(..over);
        over
    }

    /// One frame of `len` samples, padded with silence.
    fn frame(&mut self, out: &mut Vec<i16>, len: usize) {
        out.clear();
        let n = len.min(self.buf.len());
        out.extend(self.buf.drain(..n));
        out.resize(len, 0);
    }
}

/// A segment end waiting for its audio to finish playing.
#[derive(Debug, Clone, Copy)]
struct Marker {
    /// Where the segment's audio ends, in samples counted over the
    /// connection.
    at: u64,
    id: Option<u64>,
    /// Ticks it has waited with nothing left to play.
    starved: u32,
}

/// Ticks a segment end waits for audio that may have been lost.
const LOST_AUDIO_TICKS: u32 = 25;

/// Segments awaiting their end at once; more is a misbehaving peer.
const MAX_MARKERS: usize = 1024;

/// The avatar's playback of one connection.
pub struct Playout {
    config: PlayoutConfig,
    queue: VecDeque<i16>,
    queue_cap: usize,
    markers: VecDeque<Marker>,
    /// Samples queued, and taken out of the queue (played or dropped),
    /// over the connection.
    queued: u64,
    taken: u64,
    /// Where the last segment ended (its end's `at`, or an interrupt).
    boundary: u64,
    voice: VoiceTrack,
    frame: Vec<i16>,
    /// Input samples per 20 ms, and output samples per voice frame.
    frame_len: usize,
    out_frame_len: usize,
    /// Voice channels out.
    out_channels: usize,
    /// Frames (per channel) the voice track has emitted: the A/V clock.
    clock: u64,
    /// Where the current segment began, in samples taken.
    segment_start: u64,
    cooldown_until: Option<Instant>,
    /// The fade the next interrupt applies, in frames (SPEC C7); none: a cut.
    next_fade: Option<u64>,
    renderer: Box<dyn AvatarRenderer>,
    sink: Box<dyn AvatarSink>,
    picture: VideoFrame,
    stats: PlayoutStats,
    odd: Option<u8>,
}

impl std::fmt::Debug for Playout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playout")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Playout {
    /// A playout drawing with `renderer` into `sink`.
    #[must_use]
    pub fn new(
        config: PlayoutConfig,
        renderer: Box<dyn AvatarRenderer>,
        sink: Box<dyn AvatarSink>,
    ) -> Self {
        let channels = config.channels.max(1);
        let out_channels = if config.stereo && channels == 1 {
            2
        } else {
            channels
        };
        let samples_of =
            |d: Duration| sotto_rt::frames_of(d, config.sample_rate) as usize * channels;
        let (width, height) = renderer.size();
        let luma = (width * height) as usize;
        Self {
            queue: VecDeque::new(),
            queue_cap: samples_of(config.queue),
            markers: VecDeque::new(),
            queued: 0,
            taken: 0,
            boundary: 0,
            voice: VoiceTrack {
                buf: VecDeque::new(),
                cap: samples_of(config.voice_cap) * out_channels / channels,
            },
            frame: Vec::new(),
            frame_len: config.sample_rate as usize / 50 * channels,
            out_frame_len: config.sample_rate as usize / 50 * out_channels,
            out_channels,
            clock: 0,
            segment_start: 0,
            cooldown_until: None,
            next_fade: None,
            renderer,
            sink,
            picture: VideoFrame {
                width,
                height,
                y: vec![0; luma],
                u: vec![128; luma / 4],
                v: vec![128; luma / 4],
            },
            stats: PlayoutStats::default(),
            odd: None,
            config,
        }
    }

    /// What was counted so far.
    #[must_use]
    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    /// The agent's PCM rate.
    #[must_use]
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Seconds of voice emitted (the A/V clock).
    #[must_use]
    pub fn clock_seconds(&self) -> f64 {
        self.clock as f64 / f64::from(self.config.sample_rate)
    }

    /// PCM from the unreliable channel: s16 little-endian, interleaved. An
    /// odd byte is held for the next chunk and padded at the end.
    pub fn on_pcm(&mut self, bytes: &[u8], now: Instant) {
        if self.cooldown_until.is_some_and(|t| now < t) {
            // Late audio of the cut segment, or the next segment's too
            // early: either way never played. A segment end counting the
            // latter stops waiting for it once nothing is left to play.
            self.stats.cooldown_dropped += (bytes.len() / 2) as u64;
            return;
        }
        let mut held = self.odd.take();
        let mut samples = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut rest = bytes;
        if let (Some(lo), Some((&hi, tail))) = (held.take(), rest.split_first()) {
            samples.push(i16::from_le_bytes([lo, hi]));
            rest = tail;
        }
        let pairs = rest.chunks_exact(2);
        self.odd = pairs.remainder().first().copied();
        samples.extend(pairs.map(|p| i16::from_le_bytes([p[0], p[1]])));
        self.stats.received += samples.len() as u64;
        self.queued += samples.len() as u64;
        // The oldest go first, before the new ones are added, so the queue
        // never holds more than its cap and its allocation never outgrows
        // it: a ring with room beyond the cap would touch fresh pages on
        // every lap and the resident set would creep up to the slack.
        let over = (self.queue.len() + samples.len()).saturating_sub(self.queue_cap);
        if over > 0 {
            let old = over.min(self.queue.len());
            self.queue.drain(..old);
            samples.drain(..over - old);
            self.taken += over as u64;
            self.stats.queue_dropped += over as u64;
        }
        let need = self.queue.len() + samples.len();
        if need > self.queue.capacity() {
            // Doubling, as `extend` would, but never past the cap.
            let grown = (self.queue.capacity() * 2).max(need).min(self.queue_cap);
            self.queue.reserve_exact(grown - self.queue.len());
        }
        self.queue.extend(samples);
    }

    /// A text message from the reliable channel. Returns the
    /// acknowledgement to send at once (an interrupt's).
    pub fn on_text(&mut self, text: &str, now: Instant) -> Option<StreamEnded> {
        if text == INTERRUPT {
            return Some(self.reset(now));
        }
        match serde_json::from_str::<Control>(text) {
            Ok(Control::InterruptFade { frames }) => {
                self.next_fade = Some(frames);
                None
            }
            Ok(Control::SegmentEnd { id, samples }) => {
                // A padded odd byte ends the segment's audio.
                if let Some(lo) = self.odd.take() {
                    self.queue.push_back(i16::from_le_bytes([lo, 0]));
                    self.queued += 1;
                }
                if self.markers.len() >= MAX_MARKERS {
                    // A peer flooding segment ends must not grow memory.
                    self.stats.malformed += 1;
                    return None;
                }
                let at = samples.map_or(self.queued, |n| self.boundary.saturating_add(n));
                self.boundary = at;
                self.markers.push_back(Marker { at, id, starved: 0 });
                None
            }
            _ => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    /// One data-channel message as it arrived: binary PCM on the audio
    /// channel, text on the control channel; anything else (text on the
    /// audio channel, binary control, an oversized chunk, invalid UTF-8)
    /// is counted as malformed. Returns the acknowledgement to send at once.
    pub fn on_message(
        &mut self,
        control: bool,
        text: bool,
        data: &[u8],
        now: Instant,
    ) -> Option<StreamEnded> {
        match (control, text) {
            (false, false) if data.len() <= MAX_CHUNK => {
                self.on_pcm(data, now);
                None
            }
            (true, true) => match std::str::from_utf8(data) {
                Ok(text) => self.on_text(text, now),
                Err(_) => {
                    self.on_malformed();
                    None
                }
            },
            _ => {
                self.on_malformed();
                None
            }
        }
    }

    /// A message that is neither: counted.
    pub fn on_malformed(&mut self) {
        self.stats.malformed += 1;
    }

    /// An interrupt (SPEC A5, A6, C7): the first frames of the queue the
    /// agent's fade names play on as a fade-out tail, shaped exactly as the
    /// session shapes its own (O5); the rest goes, the renderer resets,
    /// audio in the next cooldown is dropped, and the segment is
    /// acknowledged as cut at the end of its tail (the tail is heard, as
    /// the session's counters count it).
    fn reset(&mut self, now: Instant) -> StreamEnded {
        self.stats.resets += 1;
        let ch = self.config.channels.max(1);
        let held = (self.queue.len() / ch) as u64;
        let tail = self.next_fade.take().unwrap_or(0).min(held);
        let tail_samples = tail as usize * ch;
        self.queue.truncate(tail_samples);
        for (i, s) in self.queue.iter_mut().enumerate() {
            let gain = sotto_rt::fade_gain((i / ch) as u64, tail);
            *s = sotto_rt::to_s16(f32::from(*s) / 32768.0 * gain);
        }
        self.voice.buf.clear();
        self.odd = None;
        self.renderer.reset();
        self.sink.reset();
        self.cooldown_until = Some(now + self.config.cooldown);
        let id = self.markers.front().and_then(|m| m.id);
        self.markers.clear();
        let ack = StreamEnded {
            playback_position: self.seconds(self.taken - self.segment_start + tail_samples as u64),
            interrupted: true,
            segment_id: id,
        };
        // What was cut counts as taken; the tail is taken as it plays.
        self.taken = self.queued - tail_samples as u64;
        self.segment_start = self.queued;
        self.boundary = self.queued;
        ack
    }

    /// Seconds in `samples` interleaved samples.
    fn seconds(&self, samples: u64) -> f64 {
        let frames = samples / self.config.channels.max(1) as u64;
        frames as f64 / f64::from(self.config.sample_rate)
    }

    /// Plays 20 ms: one voice frame (silence when nothing is queued), the
    /// video frames now due, and the acknowledgements of segments whose
    /// audio has all been played.
    pub fn tick(&mut self, acks: &mut Vec<StreamEnded>) {
        // What the voice track emits this tick is what it was given: the
        // queue moves at playback speed.
        let n = self.frame_len.min(self.queue.len());
        let dropped = if self.out_channels == self.config.channels.max(1) {
            self.voice.push(self.queue.drain(..n))
        } else {
            // Mono asked for as stereo (SPEC A5).
            self.voice.push(self.queue.drain(..n).flat_map(|v| [v, v]))
        };
        self.stats.voice_dropped += dropped as u64;
        self.taken += n as u64;
        self.voice.frame(&mut self.frame, self.out_frame_len);
        self.renderer.push_audio(&self.frame, self.out_channels);
        self.sink.voice(&self.frame);
        self.stats.voice_frames += 1;
        self.clock += (self.out_frame_len / self.out_channels) as u64;
        // Video frame k shows at k / fps seconds of voice.
        let (rate, fps) = (
            u64::from(self.config.sample_rate),
            u64::from(self.config.fps),
        );
        // A zero rate would never move the video past the voice; the
        // server refuses one, and this loop does not trust that.
        while fps > 0 && rate > 0 && self.stats.video_frames * rate <= self.clock * fps {
            let pts = self.stats.video_frames * PTS_RATE / fps;
            self.renderer.render(pts, &mut self.picture);
            self.sink.video(&self.picture, pts);
            self.stats.video_frames += 1;
        }
        while let Some(m) = self.markers.front_mut() {
            if self.taken < m.at {
                // Audio lost on the unreliable channel never comes: end
                // the segment once nothing has been left to play for a
                // while.
                if !self.queue.is_empty() {
                    break;
                }
                m.starved += 1;
                if m.starved < LOST_AUDIO_TICKS {
                    break;
                }
            }
            let m = *m;
            self.markers.pop_front();
            let end = m.at.min(self.taken);
            // Dropped samples count as the segment's too: the agent's
            // position is in its own audio.
            acks.push(StreamEnded {
                playback_position: self.seconds(end.saturating_sub(self.segment_start)),
                interrupted: false,
                segment_id: m.id,
            });
            self.segment_start = end;
            if self.taken < m.at {
                // What was lost will not be queued: count it as gone.
                self.taken = m.at;
                self.queued = self.queued.max(m.at);
            }
        }
    }

    /// The connection ended.
    pub fn finish(&mut self) {
        self.sink.finish();
    }
}

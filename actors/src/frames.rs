//! Output frames (SPEC C2, C3): an output's samples cut into frames of a
//! fixed length (10, 20 or 40 ms), each with its presentation time on the
//! engine's sample clock, the way a network sender or a recorder takes
//! them. Control side; never on the audio thread.
//!
//! Frames follow each other exactly, pts rising by one frame each time,
//! unless the reader fell behind: then the oldest audio beyond the bound is
//! skipped; a reader stalled so long that the ring filled (the audio thread
//! then drops the newest blocks rather than wait) also drops everything
//! older than that gap, and goes on from the live edge. A partial frame a
//! loss cuts goes with it. The pts jump equals the frames lost, and the
//! output's telemetry counts them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sotto_rt::{OutputReader, SampleTime};
use tokio::sync::Notify;

use crate::session::SharedOutputId;

/// A shared output (a room mix) as its maker, its handle and its reader
/// see it: the framer until a reader takes it, and whether it has ended.
#[derive(Debug)]
pub struct OutputShared {
    /// Its number.
    pub id: SharedOutputId,
    /// Its name, for traces.
    pub name: String,
    /// The render shard it lives on.
    pub shard: usize,
    /// That shard's telemetry: its clock, its late blocks.
    pub renderer: std::sync::Arc<sotto_rt::Telemetry>,
    framer: Mutex<Option<Framer>>,
    closed: AtomicBool,
    /// Woken when it is removed.
    pub closing: Notify,
}

impl OutputShared {
    /// A live shared output whose frames `framer` reads.
    #[must_use]
    pub fn new(
        id: SharedOutputId,
        name: String,
        (shard, renderer): (usize, std::sync::Arc<sotto_rt::Telemetry>),
        framer: Framer,
    ) -> Self {
        Self {
            id,
            name,
            shard,
            renderer,
            framer: Mutex::new(Some(framer)),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
        }
    }

    /// The framer, for the first reader only.
    pub fn take_framer(&self) -> Option<Framer> {
        self.framer.lock().ok().and_then(|mut f| f.take())
    }

    /// Takes a reader's framer back, for the next reader.
    pub fn put_framer(&self, framer: Framer) {
        if let Ok(mut slot) = self.framer.lock() {
            *slot = Some(framer);
        }
    }

    /// Marks it removed and wakes its reader.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.notify_waiters();
    }

    /// Whether it was removed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

pub use sotto_rt::FrameLength;

/// One output frame, read from `OutputFrames` to send to a call's transport:
/// interleaved f32 samples and the pts of the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Where the frame starts on the sample clock.
    pub pts: SampleTime,
    /// Interleaved channels.
    pub channels: usize,
    /// The samples, `frames × channels` of them.
    pub samples: Vec<f32>,
}

impl Frame {
    /// Frames (samples per channel) in this frame.
    #[must_use]
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1)
    }

    /// The samples as s16, rounded and clamped.
    #[must_use]
    pub fn to_s16(&self) -> Vec<i16> {
        self.samples.iter().map(|&s| sotto_rt::to_s16(s)).collect()
    }
}

/// Cuts an output's samples into frames.
#[derive(Debug)]
pub struct Framer {
    reader: OutputReader,
    frame_len: usize,
    bound_frames: usize,
    /// The frame being filled and the pts of its first sample.
    partial: Vec<f32>,
    partial_pts: Option<SampleTime>,
    /// Frames dropped with a partial frame a loss cut.
    cut_frames: u64,
    /// The ring's overrun count when last looked at.
    seen_overrun: u64,
    /// Frames (samples per channel) handed to the reader.
    delivered: u64,
}

impl Framer {
    /// Frames of `length` at `rate` from `reader`; a reader more than
    /// `bound` behind skips its oldest audio.
    #[must_use]
    pub fn new(reader: OutputReader, length: FrameLength, rate: u32, bound: Duration) -> Self {
        let frame_len = length.frames_at(rate).max(1);
        let bound_frames = (sotto_rt::frames_of(bound, rate) as usize).max(frame_len);
        let channels = reader.channels();
        Self {
            reader,
            frame_len,
            bound_frames,
            partial: Vec::with_capacity(frame_len * channels),
            partial_pts: None,
            cut_frames: 0,
            seen_overrun: 0,
            delivered: 0,
        }
    }

    /// The length of each output frame, in sample frames.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// The output's reader (its telemetry counts rendered and lost frames).
    #[must_use]
    pub fn reader(&self) -> &OutputReader {
        &self.reader
    }

    /// Every frame lost to lagging: skipped, overrun, or cut from a partial
    /// frame.
    #[must_use]
    pub fn lost_frames(&self) -> u64 {
        self.reader.telemetry.lost_frames() + self.cut_frames
    }

    /// The next whole frame, if one is written.
    pub fn next_frame(&mut self) -> Option<Frame> {
        let ch = self.reader.channels();
        let overrun = self.reader.telemetry.overrun_frames.load(Ordering::Relaxed);
        if overrun != self.seen_overrun {
            // The ring was full and the newest blocks were lost: what still
            // waits before that gap is older still. Drop it too, so the
            // reader goes on from the live edge.
            self.seen_overrun = overrun;
            self.reader.skip_to_gap();
        }
        self.reader.keep_newest(self.bound_frames);
        loop {
            let have = self.partial.len() / ch;
            if have == self.frame_len {
                let pts = self.partial_pts.take()?;
                let samples =
                    std::mem::replace(&mut self.partial, Vec::with_capacity(self.frame_len * ch));
                self.delivered += self.frame_len as u64;
                return Some(Frame {
                    pts,
                    channels: ch,
                    samples,
                });
            }
            let next = self.reader.next_pts()?;
            if let Some(start) = self.partial_pts {
                if start.plus(have as u64) != next {
                    // A loss cut this frame: it goes with what was lost.
                    self.cut_frames += have as u64;
                    self.partial.clear();
                    self.partial_pts = None;
                    continue;
                }
            } else {
                self.partial_pts = Some(next);
            }
            let want = self.frame_len - have;
            let start = self.partial.len();
            self.partial.resize(start + want * ch, 0.0);
            let got = self
                .reader
                .read(&mut self.partial[start..])
                .map_or(0, |(_, n)| n);
            self.partial.truncate(start + got * ch);
            if got == 0 {
                return None;
            }
        }
    }

    /// What is left once the output has ended, as one frame: the partial
    /// frame and everything written after it that follows on the clock
    /// (shorter than a frame when the whole frames were taken first).
    pub fn take_partial(&mut self) -> Option<Frame> {
        let ch = self.reader.channels();
        if self.reader.available_frames() > 0 {
            let next = self.reader.next_pts();
            let have = self.partial.len() / ch;
            let contiguous = match (self.partial_pts, next) {
                (Some(start), Some(n)) => start.plus(have as u64) == n,
                _ => true,
            };
            if contiguous {
                if self.partial_pts.is_none() {
                    self.partial_pts = next;
                }
                let start = self.partial.len();
                self.partial
                    .resize(start + self.reader.available_frames() * ch, 0.0);
                let got = self
                    .reader
                    .read(&mut self.partial[start..])
                    .map_or(0, |(_, n)| n);
                self.partial.truncate(start + got * ch);
            }
        }
        let pts = self.partial_pts.take()?;
        let samples = std::mem::take(&mut self.partial);
        self.delivered += (samples.len() / ch) as u64;
        Some(Frame {
            pts,
            channels: ch,
            samples,
        })
    }

    /// Frames (samples per channel) handed to the reader so far (SPEC C6).
    #[must_use]
    pub fn delivered_frames(&self) -> u64 {
        self.delivered
    }

    /// Frames rendered into the output so far.
    #[must_use]
    pub fn rendered_frames(&self) -> u64 {
        self.reader
            .telemetry
            .rendered_frames
            .load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_rt::FromSlot;
    use sotto_rt::{
        Output, OutputId, OutputSpec, Renderer, RendererConfig, Saturation, SessionId, Voice,
        VoiceConfig, VoiceControl,
    };

    /// A renderer at 8 kHz (a 20 ms frame is 160 samples) whose one voice
    /// plays into output 0, and the framer on that output. The voice's
    /// speech at clock `t` is `t / 1e5`, so every sample says where it is.
    fn setup(ring_frames: usize, bound_ms: u64) -> (Framer, Renderer, VoiceControl) {
        let (mut control, renderer) = Renderer::new(RendererConfig {
            sample_rate: 8_000,
            max_block_frames: 100,
            max_outputs: 1,
            ..RendererConfig::default()
        })
        .unwrap();
        let (reader, output) = Output::new(&OutputSpec {
            id: OutputId(0),
            channels: 1,
            max_block_frames: 100,
            ring_frames,
            saturation: Saturation::Hard,
            into_main: false,
        });
        control.add_output(Box::new(output)).unwrap();
        let (mut voice_control, voice) = Voice::new(&VoiceConfig {
            session: SessionId::from_slot(0),
            generation: 0,
            channels: 1,
            speech_capacity_frames: 10_000,
            background_capacity_frames: 1,
            command_capacity: 4,
            fade_frames: 0,
            grace_frames: 0,
            pause_ramp_frames: 1,
            duck: None,
            background_gain: 1.0,
            gain_ramp_frames: 1,
            saturation: Saturation::Hard,
            doorbells: None,
            output: Some(OutputId(0)),
        });
        let speech: Vec<f32> = (0..10_000).map(|t| t as f32 / 1e5).collect();
        assert!(voice_control
            .speech_tx
            .push_partial_slice(&speech)
            .1
            .is_empty());
        control.add_voice(Box::new(voice)).unwrap();
        let framer = Framer::new(
            reader,
            FrameLength::Ms20,
            8_000,
            Duration::from_millis(bound_ms),
        );
        (framer, renderer, voice_control)
    }

    fn render(r: &mut Renderer, frames: usize) {
        let mut buf = vec![0.0; frames];
        r.render(&mut buf);
    }

    #[test]
    fn frames_are_contiguous_whatever_the_block_size() {
        let (mut f, mut r, _v) = setup(8_000, 1_000);
        render(&mut r, 700); // four frames and a bit, in blocks of 100
        let mut pts = Vec::new();
        while let Some(frame) = f.next_frame() {
            assert_eq!(frame.frames(), 160);
            assert_eq!(frame.samples[0], frame.pts.0 as f32 / 1e5);
            assert_eq!(frame.samples[159], (frame.pts.0 + 159) as f32 / 1e5);
            pts.push(frame.pts.0);
        }
        assert_eq!(pts, [0, 160, 320, 480]);
        render(&mut r, 100);
        assert_eq!(
            f.next_frame().unwrap().pts.0,
            640,
            "the partial frame waited"
        );
        assert_eq!(f.lost_frames(), 0);
        assert_eq!(f.rendered_frames(), 800);
        assert_eq!(f.delivered_frames(), 800);
        assert!(f.take_partial().is_none(), "nothing past 800");
        render(&mut r, 130);
        let rest = f.take_partial().unwrap();
        assert_eq!((rest.pts.0, rest.frames()), (800, 130), "the short end");
        assert_eq!(rest.samples[129], 929.0 / 1e5);
        assert_eq!(f.delivered_frames(), 930);
    }

    #[test]
    fn a_lagging_reader_jumps_by_exactly_what_it_lost() {
        let (mut f, mut r, _v) = setup(8_000, 100); // 100 ms = 800 samples kept
        render(&mut r, 3_200); // nobody reading
        let first = f.next_frame().unwrap();
        assert_eq!(first.pts.0, 2_400, "the newest 800 are kept");
        assert_eq!(first.samples[0], 2_400.0 / 1e5);
        assert_eq!(f.lost_frames(), 2_400, "the jump is what was lost");
        let mut last = first.pts.0;
        while let Some(frame) = f.next_frame() {
            assert_eq!(frame.pts.0, last + 160);
            last = frame.pts.0;
        }
        assert_eq!(last, 3_040);
    }

    #[test]
    fn a_full_ring_drops_everything_older_than_its_gap() {
        let (mut f, mut r, _v) = setup(400, 1_000);
        render(&mut r, 300); // one frame, and 160..300 taken into the next
        assert_eq!(f.next_frame().unwrap().pts.0, 0);
        assert!(f.next_frame().is_none(), "160..300 waits for the rest");
        // The ring holds 400: 300..700 fits, 700..800 finds it full and is
        // dropped (counted, never waited for). What waits before that gap
        // is older still: it goes too, with the partial frame it cuts.
        render(&mut r, 500);
        assert!(f.next_frame().is_none());
        render(&mut r, 400); // 800..1200, the live edge
        let mut got = Vec::new();
        while let Some(frame) = f.next_frame() {
            got.push(frame.pts.0);
        }
        assert_eq!(got, [800, 960]);
        assert_eq!(f.lost_frames(), 100 + 400 + 140, "overrun, skipped, cut");
        assert_eq!(800 - 160, 640, "the pts jump is what was lost");
    }

    #[test]
    fn the_s16_view_rounds() {
        let frame = Frame {
            pts: SampleTime(0),
            channels: 1,
            samples: vec![0.5, -0.25, 0.000_02],
        };
        assert_eq!(frame.to_s16(), [16384, -8192, 1]);
    }

    #[test]
    fn the_s16_view_clamps() {
        let frame = Frame {
            pts: SampleTime(0),
            channels: 1,
            samples: vec![-1.5, 1.0],
        };
        assert_eq!(frame.to_s16(), [-32768, 32767]);
    }
}

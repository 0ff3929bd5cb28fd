//! Outputs (SPEC C1, C3, C6): where voices render other than the
//! renderer's own buffer. A call's session renders into an output of its
//! own; several sessions may share one (a room mix).
//!
//! Each block, the renderer zeroes every output's block, lets the voices
//! that belong to it add into it, saturates it like the main mix, and
//! writes it to the output's ring with a descriptor saying its presentation
//! time. The reader ([`OutputReader`], control side) takes samples with
//! their pts; a reader that falls behind skips its oldest audio, counted,
//! and a reader stalled so long that the ring is full makes the audio
//! thread drop the newest block, counted too. Neither ever waits.
//!
//! Built on the control side ([`Output::new`]), moved into the renderer in
//! a [`Command::AddOutput`](crate::Command), retired whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use atomic_float::AtomicF32;
use rtrb::{Consumer, Producer, RingBuffer};

use crate::{SampleTime, Saturation};

/// An output's slot in the renderer's fixed output table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutputId(pub u32);

impl OutputId {
    /// The slot index.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Everything an output needs, fixed at construction. Control side.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// The output's slot.
    pub id: OutputId,
    /// Interleaved channels; must match the renderer.
    pub channels: usize,
    /// The renderer's largest block ([`RendererConfig::max_block_frames`](crate::RendererConfig)).
    pub max_block_frames: usize,
    /// Frames the ring holds; a reader further behind than this loses the
    /// newest blocks instead of only its oldest frames.
    pub ring_frames: usize,
    /// How the output's sum is kept inside full scale.
    pub saturation: Saturation,
    /// Also add the output's audio (before its own saturation) into the
    /// renderer's main buffer, so the main mix stays the sum of everything
    /// (a monitor mix, the offline render).
    pub into_main: bool,
}

/// What an output reports. Written by the audio thread (and the reader's
/// own skips by the reader), read anywhere.
#[derive(Debug, Default)]
pub struct OutputTelemetry {
    /// Frames rendered into the output.
    pub rendered_frames: AtomicU64,
    /// Frames the audio thread could not write because the ring was full.
    pub overrun_frames: AtomicU64,
    /// Frames the reader skipped to stay within its bound.
    pub skipped_frames: AtomicU64,
    /// Peak absolute sample of the last block, after saturation.
    pub peak: AtomicF32,
}

impl OutputTelemetry {
    /// Every frame lost to a slow reader: skipped by it or never written.
    pub fn lost_frames(&self) -> u64 {
        self.overrun_frames.load(Ordering::Relaxed) + self.skipped_frames.load(Ordering::Relaxed)
    }
}

/// One block in the ring: where it starts on the sample clock and how long
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    pts: SampleTime,
    frames: usize,
}

/// An output inside the renderer. Runs on the audio thread once added.
#[derive(Debug)]
pub struct Output {
    id: OutputId,
    channels: usize,
    block: Box<[f32]>,
    saturation: Saturation,
    into_main: bool,
    samples_tx: Producer<f32>,
    blocks_tx: Producer<Block>,
    telemetry: Arc<OutputTelemetry>,
}

/// The reading end of an output. Control side.
#[derive(Debug)]
pub struct OutputReader {
    id: OutputId,
    channels: usize,
    samples_rx: Consumer<f32>,
    blocks_rx: Consumer<Block>,
    /// The block being read and the frames of it already taken.
    current: Option<(Block, usize)>,
    /// What the output reports.
    pub telemetry: Arc<OutputTelemetry>,
}

impl Output {
    /// Builds an output and its reader. Control side.
    #[must_use]
    pub fn new(config: &OutputSpec) -> (OutputReader, Output) {
        let channels = config.channels.max(1);
        let block_frames = config.max_block_frames.max(1);
        let ring_frames = config.ring_frames.max(block_frames);
        let (samples_tx, samples_rx) = RingBuffer::new(ring_frames * channels);
        // One descriptor per block: blocks are the renderer's full blocks
        // but for the remainder of an odd device buffer, so a ring for
        // blocks of a quarter of the full size (64 frames at least) holds
        // all the sample ring can. Sized to what is used, so its pages are
        // all touched within a lap and the resident set stays flat; a
        // device asking for smaller buffers still than that only makes the
        // newest blocks overrun, counted.
        let smallest = (block_frames / 4).clamp(1, 64);
        let (blocks_tx, blocks_rx) = RingBuffer::new(ring_frames / smallest + 2);
        let telemetry = Arc::new(OutputTelemetry::default());
        let output = Output {
            id: config.id,
            channels,
            block: vec![0.0; block_frames * channels].into_boxed_slice(),
            saturation: config.saturation,
            into_main: config.into_main,
            samples_tx,
            blocks_tx,
            telemetry: Arc::clone(&telemetry),
        };
        let reader = OutputReader {
            id: config.id,
            channels,
            samples_rx,
            blocks_rx,
            current: None,
            telemetry,
        };
        (reader, output)
    }

    /// The output's slot.
    #[must_use]
    pub fn id(&self) -> OutputId {
        self.id
    }

    /// Interleaved channels.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Zeroes the block voices add `frames` frames into. Runs on the audio
    /// thread.
    pub(crate) fn begin(&mut self, frames: usize) {
        self.block_mut(frames).fill(0.0);
    }

    /// The block voices add `frames` frames into. Runs on the audio thread.
    pub(crate) fn block_mut(&mut self, frames: usize) -> &mut [f32] {
        let len = (frames * self.channels).min(self.block.len());
        &mut self.block[..len]
    }

    /// Adds the block into `main` if it goes there, saturates it and writes
    /// it with its pts, or counts it when the ring has no room. Runs on the
    /// audio thread.
    pub(crate) fn finish(&mut self, pts: SampleTime, frames: usize, main: &mut [f32]) {
        let len = (frames * self.channels).min(self.block.len());
        let frames = len / self.channels;
        let block = &mut self.block[..len];
        if self.into_main {
            for (m, s) in main.iter_mut().zip(block.iter()) {
                *m += s;
            }
        }
        let peak = self.saturation.apply_all(block);
        let t = &self.telemetry;
        t.peak.store(peak, Ordering::Relaxed);
        t.rendered_frames
            .fetch_add(frames as u64, Ordering::Relaxed);
        if self.samples_tx.slots() < len || self.blocks_tx.slots() == 0 {
            // The reader is a whole ring behind: this block is lost, not
            // waited for; the reader sees the pts jump.
            t.overrun_frames.fetch_add(frames as u64, Ordering::Relaxed);
            return;
        }
        if let Ok(mut chunk) = self.samples_tx.write_chunk(len) {
            let (a, b) = chunk.as_mut_slices();
            let (head, tail) = block.split_at(a.len());
            a.copy_from_slice(head);
            b.copy_from_slice(tail);
            chunk.commit_all();
        }
        let _ = self.blocks_tx.push(Block { pts, frames });
    }
}

impl OutputReader {
    /// The output's slot.
    #[must_use]
    pub fn id(&self) -> OutputId {
        self.id
    }

    /// Interleaved channels.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Frames written and not yet read.
    #[must_use]
    pub fn available_frames(&self) -> usize {
        self.samples_rx.slots() / self.channels
    }

    /// The pts of the next frame to read, if any is written.
    #[must_use]
    pub fn next_pts(&mut self) -> Option<SampleTime> {
        self.load();
        self.current.map(|(b, taken)| b.pts.plus(taken as u64))
    }

    /// Notes that `taken` frames of `block` are read.
    fn advance(&mut self, block: Block, taken: usize) {
        self.current = (taken < block.frames).then_some((block, taken));
    }

    /// Drops the next `n` frames of the sample ring unread.
    fn drop_frames(&mut self, n: usize) {
        if let Ok(chunk) = self.samples_rx.read_chunk(n * self.channels) {
            chunk.commit_all();
        }
    }

    fn load(&mut self) {
        if self.current.is_none() {
            self.current = self.blocks_rx.pop().ok().map(|b| (b, 0));
        }
    }

    /// Reads frames into `out` (interleaved) as far as they are contiguous
    /// on the sample clock: up to its length, the end of what is written,
    /// or a gap. Returns the pts of the first frame and the frames read.
    pub fn read(&mut self, out: &mut [f32]) -> Option<(SampleTime, usize)> {
        let want = out.len() / self.channels;
        let mut start = None;
        let mut done = 0;
        while done < want {
            self.load();
            let Some((block, taken)) = self.current else {
                break;
            };
            let pts = block.pts.plus(taken as u64);
            match start {
                None => start = Some(pts),
                Some(s) if s.plus(done as u64) != pts => break,
                Some(_) => {}
            }
            let n = (block.frames - taken).min(want - done);
            let len = n * self.channels;
            let Ok(chunk) = self.samples_rx.read_chunk(len) else {
                break;
            };
            let (a, b) = chunk.as_slices();
            let dst = &mut out[done * self.channels..done * self.channels + len];
            dst[..a.len()].copy_from_slice(a);
            dst[a.len()..].copy_from_slice(b);
            chunk.commit_all();
            done += n;
            self.advance(block, taken + n);
        }
        start.map(|s| (s, done))
    }

    /// Skips every frame up to the next gap on the clock (or all that is
    /// written, if no later block is there yet): after the ring overran,
    /// what waits before the gap is older than anything worth playing.
    /// Returns how many were skipped (counted in the telemetry).
    pub fn skip_to_gap(&mut self) -> u64 {
        let mut skipped = 0u64;
        let mut end: Option<SampleTime> = None;
        loop {
            self.load();
            let Some((block, taken)) = self.current else {
                break;
            };
            let pts = block.pts.plus(taken as u64);
            if end.is_some_and(|e| e != pts) {
                break;
            }
            let n = block.frames - taken;
            self.drop_frames(n);
            skipped += n as u64;
            end = Some(pts.plus(n as u64));
            self.current = None;
        }
        self.telemetry
            .skipped_frames
            .fetch_add(skipped, Ordering::Relaxed);
        skipped
    }

    /// Skips the oldest frames so that at most `keep` frames wait; returns
    /// how many were skipped (counted in the telemetry).
    pub fn keep_newest(&mut self, keep: usize) -> u64 {
        let mut skip = self.available_frames().saturating_sub(keep);
        let mut skipped = 0u64;
        while skip > 0 {
            self.load();
            let Some((block, taken)) = self.current else {
                break;
            };
            let n = (block.frames - taken).min(skip);
            self.drop_frames(n);
            skip -= n;
            skipped += n as u64;
            self.advance(block, taken + n);
        }
        self.telemetry
            .skipped_frames
            .fetch_add(skipped, Ordering::Relaxed);
        skipped
    }
}

#[cfg(test)]
mod tests;

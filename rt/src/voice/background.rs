//! The background under speech (SPEC O11, B4, B5): the ring a loader
//! feeds, a shared looping clip that takes over from it, and the mix of
//! both with speech. Runs on the audio thread.

use std::sync::Arc;

use super::*;
use crate::dsp::{mix_sources, PauseState, Ramp};
use crate::renderer::EventOut;
use crate::{EventKind, SampleTime};

/// Clip ring and return ring size per voice.
pub(super) const CLIP_RING: usize = 8;

/// A decoded clip playing from memory.
#[derive(Debug)]
pub(super) struct ClipPlayer {
    pub(super) id: u32,
    pub(super) clip: Arc<[f32]>,
    /// Next sample (not frame) to play.
    pub(super) pos: usize,
    pub(super) pass: u32,
    pub(super) looping: bool,
    pub(super) gain: Ramp,
    pub(super) stopping: bool,
    /// Waiting for the background ring to run dry.
    pub(super) armed: bool,
}

impl ClipPlayer {
    /// Starts the next pass at sample `pos`; returns its event.
    pub(super) fn wrap(&mut self, pos: usize) -> EventKind {
        self.pos = pos;
        self.pass += 1;
        EventKind::ClipWrapped {
            id: self.id,
            pass: self.pass,
        }
    }
}

impl Voice {
    /// No tail, no ramp, nothing to skip and audible: the samples pass
    /// through at unity gain.
    pub(super) fn steady(&self) -> bool {
        self.tail.is_none()
            && self.pause == PauseState::Playing
            && self.consumed >= self.skip_until
            && !self.direct_muted
            && self.background_gain.steady()
            && self.clearing.is_none()
    }

    /// The steady case in one pass: `filled` speech frames and whatever
    /// background there is — the ring's, or a clip at least a block long
    /// at a steady gain (see [`Voice::clip_is_direct`]) — go straight from
    /// memory into `out`, saturated, with no copy in between.
    pub(super) fn mix_direct(
        &mut self,
        out: &mut [f32],
        n: usize,
        filled: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) {
        let ch = self.channels;
        let Ok(speech) = self.speech_rx.read_chunk(filled * ch) else {
            return;
        };
        let duck = self.duck_gain.value();
        if let Some(p) = self.clip.as_mut() {
            let len = p.clip.len() / ch * ch;
            let first = (len - p.pos).min(n * ch);
            let second = n * ch - first;
            mix_sources(
                &mut out[..n * ch],
                speech.as_slices(),
                (&p.clip[p.pos..p.pos + first], &p.clip[..second]),
                p.gain.value() * duck,
                self.saturation,
            );
            p.pos += first;
            if p.pos == len {
                let kind = p.wrap(second);
                let at = now.plus((first / ch) as u64);
                events.push(self.session, self.generation, at, kind);
            }
        } else {
            let take = n.min(self.background_rx.slots() / ch);
            let Ok(background) = self.background_rx.read_chunk(take * ch) else {
                return;
            };
            mix_sources(
                &mut out[..filled.max(take) * ch],
                speech.as_slices(),
                background.as_slices(),
                self.background_gain.value() * duck,
                self.saturation,
            );
            background.commit_all();
            self.background_frames += take as u64;
        }
        speech.commit_all();
    }

    /// Whether the playing clip, if any, can be mixed in one pass: steady
    /// gain, at least a block long, and no ring background beside it.
    pub(super) fn clip_is_direct(&self, n: usize) -> bool {
        self.clip.as_ref().is_none_or(|p| {
            p.gain.steady()
                && !p.stopping
                && !p.armed
                && p.clip.len() / self.channels >= n
                && self.background_rx.slots() < self.channels
        })
    }

    /// Adds the background (ring and clip, ducked) under the speech in
    /// `scratch`; returns frames touched. `bg` is work space.
    pub(super) fn mix_background(
        &mut self,
        scratch: &mut [f32],
        bg: &mut [f32],
        n: usize,
        filled: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) -> usize {
        let ch = self.channels;
        let hold = std::mem::take(&mut self.duck_hold).min(n);
        if hold == 0 {
            self.retarget_duck();
        }
        let ring = self.ring_background(bg, n);
        let clip = self.clip_background(bg, n, ring, now, events);
        let frames = ring.max(clip);
        if frames == 0 {
            self.duck_gain.skip(hold);
            self.retarget_duck();
            self.duck_gain.skip(n - hold);
            return filled;
        }
        if frames > filled {
            scratch[filled * ch..frames * ch].fill(0.0);
        }
        let dst = &mut scratch[..frames * ch];
        let src = &bg[..frames * ch];
        if hold == 0 && self.duck_gain.steady() {
            let g = self.duck_gain.value();
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s * g;
            }
        } else {
            for (k, (d, s)) in dst
                .chunks_exact_mut(ch)
                .zip(src.chunks_exact(ch))
                .enumerate()
            {
                if k == hold {
                    self.retarget_duck();
                }
                let g = self.duck_gain.next();
                d.iter_mut().zip(s).for_each(|(d, s)| *d += s * g);
            }
            if hold >= frames {
                self.duck_gain.skip(hold - frames);
                self.retarget_duck();
                self.duck_gain.skip(n - hold);
            } else {
                self.duck_gain.skip(n - frames);
            }
            self.duck_gain.settle();
        }
        frames.max(filled)
    }

    /// Writes the background ring's next frames, at the background gain,
    /// into `bg`; returns how many.
    pub(super) fn ring_background(&mut self, bg: &mut [f32], n: usize) -> usize {
        let ch = self.channels;
        if let Some((fence, restore)) = self.clearing {
            if self.background_gain.value() == 0.0 {
                // Ramped out: drop what is left before the fence.
                let want = fence.saturating_sub(self.background_frames);
                let k = want.min((self.background_rx.slots() / ch) as u64) as usize;
                if let Ok(chunk) = self.background_rx.read_chunk(k * ch) {
                    chunk.commit_all();
                    self.background_frames += k as u64;
                }
                self.background_gain = Ramp::new(restore);
                self.clearing = None;
            }
        }
        let mut take = n.min(self.background_rx.slots() / ch);
        if let Some((fence, _)) = self.clearing {
            // Audio pushed after the clear waits for the ramp to end.
            take = take.min(fence.saturating_sub(self.background_frames) as usize);
        }
        let chunk = match self.background_rx.read_chunk(take * ch) {
            Ok(chunk) if take > 0 => chunk,
            _ => {
                self.background_gain.skip(n);
                return 0;
            }
        };
        let (a, b) = chunk.as_slices();
        let dst = &mut bg[..take * ch];
        let gain = &mut self.background_gain;
        if gain.steady() {
            let g = gain.value();
            // Two plain loops, one per ring slice, so both vectorise.
            let (da, db) = dst.split_at_mut(a.len());
            da.iter_mut().zip(a).for_each(|(d, s)| *d = s * g);
            db.iter_mut().zip(b).for_each(|(d, s)| *d = s * g);
        } else {
            for (frame, src) in dst.chunks_exact_mut(ch).zip(FramePairs::new(a, b, ch)) {
                let g = gain.next();
                frame.iter_mut().zip(src).for_each(|(d, s)| *d = s * g);
            }
            gain.skip(n - take);
            gain.settle();
        }
        chunk.commit_all();
        self.background_frames += take as u64;
        take
    }

    /// Adds the playing clip's next frames into `bg`, whose first `ring`
    /// frames are already written; returns frames the clip produced.
    pub(super) fn clip_background(
        &mut self,
        bg: &mut [f32],
        n: usize,
        ring: usize,
        now: SampleTime,
        events: &mut EventOut<'_>,
    ) -> usize {
        let ch = self.channels;
        let (session, generation) = (self.session, self.generation);
        let Some(p) = self.clip.as_mut() else {
            return 0;
        };
        let mut k = 0;
        let mut ended = None;
        if p.armed {
            if p.stopping {
                ended = Some(true);
            } else if ring == n {
                // The ring still plays the first pass.
                return 0;
            } else {
                // The ring ran dry at frame `ring`: the second pass starts there.
                p.armed = false;
                k = ring;
                let kind = p.wrap(0);
                events.push(session, generation, now.plus(k as u64), kind);
            }
        }
        if ring < n {
            bg[ring * ch..n * ch].fill(0.0);
        }
        let len = p.clip.len() / ch * ch;
        while k < n && ended.is_none() {
            // Up to the clip's end, so the wrap is sample-contiguous.
            let m = ((len - p.pos) / ch).min(n - k);
            let src = &p.clip[p.pos..p.pos + m * ch];
            let dst = &mut bg[k * ch..(k + m) * ch];
            if p.gain.steady() {
                let g = p.gain.value();
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s * g);
            } else {
                for (d, s) in dst.chunks_exact_mut(ch).zip(src.chunks_exact(ch)) {
                    let g = p.gain.next();
                    d.iter_mut().zip(s).for_each(|(d, s)| *d += s * g);
                }
                p.gain.settle();
            }
            p.pos += m * ch;
            k += m;
            if p.stopping && p.gain.steady() {
                ended = Some(true);
                break;
            }
            if p.pos >= len {
                if !p.looping {
                    ended = Some(false);
                    break;
                }
                let kind = p.wrap(0);
                events.push(session, generation, now.plus(k as u64), kind);
            }
        }
        if let Some(stopped) = ended {
            if let Some(p) = self.clip.take() {
                let kind = EventKind::ClipEnded { id: p.id, stopped };
                events.push(session, generation, now.plus(k as u64), kind);
                self.release(p.clip);
            }
        }
        k
    }
}

/// Iterates the frames of a ring chunk split in two slices.
pub(super) struct FramePairs<'a> {
    a: std::slice::ChunksExact<'a, f32>,
    b: std::slice::ChunksExact<'a, f32>,
}

impl<'a> FramePairs<'a> {
    fn new(a: &'a [f32], b: &'a [f32], ch: usize) -> Self {
        Self {
            a: a.chunks_exact(ch),
            b: b.chunks_exact(ch),
        }
    }
}

impl<'a> Iterator for FramePairs<'a> {
    type Item = &'a [f32];
    fn next(&mut self) -> Option<Self::Item> {
        self.a.next().or_else(|| self.b.next())
    }
}

//! The feed: the blocking thread that decodes a source and feeds the
//! session's bounded queue (SPEC B4, B5), handing a looping source's
//! decoded first pass to the audio thread as a shared clip.

use sotto_rt::FrameCount;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::*;
use crate::decode::{DecodeError, FileDecoder, PassEnd};
use crate::session::{Input, SessionEventKind, SessionMsg, SessionShared};

/// What a feeding thread needs.
pub(super) struct Feed {
    /// Counted in the session's quiescence (see [`SessionMsg::PushFrames`]).
    pub(super) busy: bool,
    pub(super) session: Arc<SessionShared>,
    pub(super) id: u32,
    pub(super) channels: usize,
    pub(super) volume: Arc<AtomicU32>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) done: Arc<AtomicBool>,
    /// Set once the audio thread loops the clip and reports its end.
    pub(super) handed: Arc<AtomicBool>,
}

impl Feed {
    fn idle(&mut self) {
        if std::mem::take(&mut self.busy) {
            self.session.quiesce.handled(1);
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    fn warn(&self, message: String) {
        tracing::warn!(source = self.id, %message, "background pass ended early");
        emit(
            &self.session,
            SessionEventKind::BackgroundWarning {
                source: self.id,
                message,
            },
        );
    }

    fn fail(&self, e: &DecodeError) {
        emit(
            &self.session,
            SessionEventKind::BackgroundError {
                source: self.id,
                message: e.to_string(),
            },
        );
    }

    /// Pushes `frames` and waits until they are queued; false when cut or
    /// the session is gone.
    fn push(&mut self, input: Input, frames: Vec<f32>) -> bool {
        if self.cancelled() {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        let msg = SessionMsg::PushFrames {
            input,
            frames,
            reply: tx.into(),
        };
        if self.session.send(msg).is_err() {
            return false;
        }
        self.idle();
        // Backpressure: the next chunk is decoded only once this one fits.
        match rx.blocking_recv() {
            Ok(outcome) => {
                // The session counted this thread busy when it replied.
                self.busy = true;
                outcome.dropped_frames == FrameCount::ZERO
            }
            Err(_) => false,
        }
    }

    /// Decodes in chunks into `input`; with `looping`, replays the decoded
    /// cache for every later pass.
    pub(super) fn stream(mut self, mut decoder: FileDecoder, input: Input, looping: bool) {
        let ch = self.channels;
        let scale = input == Input::Speech;
        let mut cache: Vec<f32> = Vec::new();
        let mut started = false;
        let mut ok = true;
        let mut cut = false;
        loop {
            if self.cancelled() {
                ok = false;
                break;
            }
            let mut chunk = Vec::with_capacity(CHUNK_FRAMES * ch);
            let end = match decoder.fill(&mut chunk, CHUNK_FRAMES) {
                Ok(end) => end,
                Err(e) => {
                    self.fail(&e);
                    ok = false;
                    break;
                }
            };
            if looping {
                cache.extend_from_slice(&chunk);
            }
            if !chunk.is_empty() {
                if !started {
                    started = true;
                    emit(
                        &self.session,
                        SessionEventKind::BackgroundStarted { source: self.id },
                    );
                }
                if scale {
                    self.scale(&mut chunk);
                }
                if !self.push(input, chunk) {
                    ok = false;
                    cut = true;
                    break;
                }
            }
            match end {
                None => {}
                Some(PassEnd::Complete) => break,
                Some(PassEnd::Damaged(reason)) => {
                    self.warn(reason);
                    break;
                }
            }
        }
        drop(decoder);
        if ok && looping && !cache.is_empty() && input == Input::Background {
            // The audio thread loops the decoded cache from where the first
            // pass ends in the background input, and reports the wraps.
            let msg = SessionMsg::PlayClip {
                id: self.id,
                clip: Arc::from(cache),
                gain: f32::from_bits(self.volume.load(Ordering::Relaxed)),
                looping: true,
                after_ring: true,
            };
            if self.session.send(msg).is_ok() {
                self.handed.store(true, Ordering::Release);
                self.idle();
                return;
            }
            ok = false;
        } else if ok && looping && !cache.is_empty() {
            ok = self.replay(&cache, input, scale);
            cut = !ok;
        }
        // Ran out (ok), or cut by an interrupt or clear (not ok, not
        // cancelled). A stop reports the end itself.
        if ok || (cut && !self.cancelled()) {
            emit(
                &self.session,
                SessionEventKind::BackgroundEnded {
                    source: self.id,
                    stopped: !ok,
                },
            );
        }
        self.done.store(true, Ordering::Release);
        self.idle();
    }

    /// Later passes of a looping stream, from the cache; returns false when
    /// stopped or cut.
    fn replay(&mut self, cache: &[f32], input: Input, scale: bool) -> bool {
        let step = CHUNK_FRAMES * self.channels;
        for pass in 2u32.. {
            emit(
                &self.session,
                SessionEventKind::BackgroundLoopWrapped {
                    source: self.id,
                    pass,
                },
            );
            for piece in cache.chunks(step) {
                if self.cancelled() {
                    return false;
                }
                let mut chunk = piece.to_vec();
                if scale {
                    self.scale(&mut chunk);
                }
                if !self.push(input, chunk) {
                    return false;
                }
            }
        }
        true
    }

    fn scale(&self, chunk: &mut [f32]) {
        let v = f32::from_bits(self.volume.load(Ordering::Relaxed));
        if v != 1.0 {
            chunk.iter_mut().for_each(|s| *s *= v);
        }
    }
}

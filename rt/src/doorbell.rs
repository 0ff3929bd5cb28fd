//! Which voices have commands waiting.
//!
//! One bit per voice slot, set by the control side right after it queues a
//! [`VoiceCommand`](crate::VoiceCommand) and taken by the renderer once per
//! block. With a thousand voices, polling every voice's command ring costs
//! a cache miss each per block although almost none has anything; the bits
//! of a thousand slots fit in two cache lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::SessionId;

/// The doorbells of one renderer. Cheap to clone; every clone rings the
/// same bells.
#[derive(Debug, Clone)]
pub struct Doorbells {
    words: Arc<[AtomicU64]>,
}

impl Doorbells {
    /// Bells for `slots` voice slots. Control side: allocates.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            words: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Tells the renderer that `session` has commands waiting. Call after
    /// queueing them. Lock-free; also used by the audio thread.
    pub fn ring(&self, session: SessionId) {
        let i = session.index();
        if let Some(word) = self.words.get(i / 64) {
            word.fetch_or(1 << (i % 64), Ordering::Release);
        }
    }

    /// Takes the bells of slots `64 * word ..`, clearing them.
    pub(crate) fn take(&self, word: usize) -> u64 {
        self.words
            .get(word)
            .map_or(0, |w| w.swap(0, Ordering::Acquire))
    }

    /// Whether both ring the same renderer.
    pub(crate) fn same(&self, other: &Doorbells) -> bool {
        Arc::ptr_eq(&self.words, &other.words)
    }
}

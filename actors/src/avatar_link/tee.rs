//! The session sink that tees ingested speech to the link, bounded by
//! the link's backlog (SPEC O12, S5).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::ActorRef;

use super::*;
use crate::sink::AudioSink;

/// The session sink feeding an [`AvatarLink`] (SPEC O12): the session's
/// direct output is silent while it is attached.
pub struct AvatarTee {
    name: String,
    link: ActorRef<LinkMsg>,
    alive: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    backlog_cap: u64,
    /// The last thing sent was an interrupt: another one now is redundant.
    just_interrupted: bool,
}

impl AvatarTee {
    /// A sink named `name` feeding `link` while `alive`, counting
    /// segments in the link's `stats`. The session hands it speech as its
    /// queue (`queue` long) takes it in, so the link is never more than
    /// that ahead of playback; its backlog may hold that and
    /// [`LINK_BACKLOG`] more (`samples_per_second` is rate times channels)
    /// before a link that has stopped sending loses audio.
    #[must_use]
    pub fn new(
        name: String,
        link: ActorRef<LinkMsg>,
        alive: Arc<AtomicBool>,
        stats: Arc<LinkStats>,
        samples_per_second: u64,
        queue: Duration,
    ) -> Self {
        let held = LINK_BACKLOG.saturating_add(queue);
        Self {
            name,
            link,
            alive,
            stats,
            backlog_cap: (held.as_millis() as u64).saturating_mul(samples_per_second) / 1000,
            just_interrupted: false,
        }
    }

    /// Takes a place in the link's control backlog, or counts the drop.
    fn control_slot(&self) -> bool {
        if self.stats.control_backlog.fetch_add(1, Ordering::AcqRel) >= LINK_CONTROL_BACKLOG {
            self.stats.control_backlog.fetch_sub(1, Ordering::AcqRel);
            self.stats.control_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

// Internal implementors stay out of the trait's page in `sotto`'s docs.
#[doc(hidden)]
impl AudioSink for AvatarTee {
    fn name(&self) -> &str {
        &self.name
    }

    fn publishes_voice(&self) -> bool {
        true
    }

    fn write(&mut self, frames: &[f32], _: u32, _: usize) -> std::io::Result<()> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(std::io::Error::other("avatar link closed"));
        }
        let n = frames.len() as u64;
        if self.stats.backlog.load(Ordering::Acquire) + n > self.backlog_cap {
            // The link has stopped sending (its peer stalled): drop, counted,
            // rather than grow its mailbox.
            self.stats.backlog_dropped.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.backlog.fetch_add(n, Ordering::AcqRel);
        self.just_interrupted = false;
        self.link
            .send_message(LinkMsg::Audio(frames.to_vec()))
            .map_err(|_| std::io::Error::other("avatar link stopped"))
    }

    fn interrupt(&mut self, fade_frames: u64) {
        if self.just_interrupted || !self.control_slot() {
            return;
        }
        self.just_interrupted = true;
        if self
            .link
            .send_message(LinkMsg::Interrupt { fade_frames })
            .is_err()
        {
            self.stats.control_backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn segment_end(&mut self) {
        if !self.control_slot() {
            return;
        }
        self.just_interrupted = false;
        // Counted here, in the session, so whoever waits for the link to
        // settle sees the segment before the link does.
        if self.link.send_message(LinkMsg::SegmentEnd).is_ok() {
            self.stats.segments.fetch_add(1, Ordering::AcqRel);
        } else {
            self.stats.control_backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

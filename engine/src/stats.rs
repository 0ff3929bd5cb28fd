//! What an application reads of the engine while it runs: snapshot structs
//! of plain numbers, taken from counters only the engine writes. Every
//! `stats()` returns one of these by value.

use std::sync::atomic::Ordering;

use sotto_rt::{FrameCount, Telemetry, VoiceTelemetry};

/// The renderer's counters: the whole engine's
/// ([`Engine::stats`](crate::Engine::stats), summed over every shard where a
/// sum makes sense) or one shard's
/// ([`Engine::shards`](crate::Engine::shards)). One shape for both, so a
/// dashboard reads a shard as it reads the engine.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct EngineStats {
    /// `Some(k)` for shard `k` (its audio thread is `sotto-audio-K`);
    /// `None` for the whole engine.
    pub shard: Option<usize>,
    /// Sessions rendering (on the shard, or on every shard).
    pub sessions: usize,
    /// The output sample clock, in frames since the engine started.
    pub clock_frames: u64,
    /// Blocks rendered (by the main renderer, for the whole engine).
    pub blocks: u64,
    /// Events the audio thread could not hand over (the event ring was
    /// full): each is lost, never waited for.
    pub events_dropped: u64,
    /// Retired voices waiting to be dropped off the audio thread.
    pub retire_backlog: u64,
    /// Blocks finished after their deadline on the real-time clocks.
    pub late_blocks: u64,
    /// Allocations or frees seen on an audio thread (only counted with the
    /// drivers' allocation audit; 0 otherwise).
    pub alloc_violations: u64,
    /// Whether a render panicked (silence went out instead).
    pub poisoned: bool,
    /// Actors restarted after a failure (counted by the engine, so 0 for
    /// a shard).
    pub actor_restarts: u64,
    /// The mix's peak over the last block, linear (the main mix for the
    /// whole engine).
    pub peak: f32,
    /// The median time one block took to render, in nanoseconds.
    pub render_p50_ns: Option<u64>,
    /// The 99th percentile of the same.
    pub render_p99_ns: Option<u64>,
    /// The longest render of a block so far, in nanoseconds.
    pub render_max_ns: u64,
}

impl EngineStats {
    /// The main renderer's counters, with `shards` (every shard's
    /// telemetry and session count, the main one first) summed where they
    /// add up.
    pub(crate) fn read(main: &Telemetry, shards: &[(&Telemetry, usize)]) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let sum = |f: fn(&Telemetry) -> u64| shards.iter().map(|(t, _)| f(t)).sum::<u64>();
        let times = &main.render_times;
        Self {
            shard: None,
            sessions: shards.iter().map(|(_, n)| n).sum(),
            clock_frames: get(&main.clock_frames),
            blocks: get(&main.blocks),
            events_dropped: sum(|t| t.events_dropped.load(Ordering::Relaxed)),
            retire_backlog: sum(|t| t.retire_backlog.load(Ordering::Relaxed)),
            late_blocks: sum(|t| t.late_blocks.load(Ordering::Relaxed)),
            alloc_violations: sum(|t| t.alloc_violations.load(Ordering::Relaxed)),
            poisoned: shards
                .iter()
                .any(|(t, _)| t.poisoned.load(Ordering::Relaxed)),
            actor_restarts: get(&main.actor_restarts),
            peak: main.peak.load(Ordering::Relaxed),
            render_p50_ns: times.quantile_ns(0.5),
            render_p99_ns: times.quantile_ns(0.99),
            render_max_ns: times.max_ns(),
        }
    }

    /// Shard `index`'s counters.
    pub(crate) fn read_shard(index: usize, sessions: usize, t: &Telemetry) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            shard: Some(index),
            sessions,
            clock_frames: get(&t.clock_frames),
            blocks: get(&t.blocks),
            events_dropped: get(&t.events_dropped),
            retire_backlog: get(&t.retire_backlog),
            late_blocks: get(&t.late_blocks),
            alloc_violations: get(&t.alloc_violations),
            poisoned: t.poisoned.load(Ordering::Relaxed),
            actor_restarts: 0,
            peak: t.peak.load(Ordering::Relaxed),
            render_p50_ns: t.render_times.quantile_ns(0.5),
            render_p99_ns: t.render_times.quantile_ns(0.99),
            render_max_ns: t.render_times.max_ns(),
        }
    }
}

/// One session's voice ([`SessionHandle::stats`](crate::SessionHandle::stats)),
/// in frames at the engine's rate.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Frames of speech taken from the queue, faded ones included.
    pub consumed_frames: FrameCount,
    /// Frames of speech the user heard (SPEC O8).
    pub played_frames: FrameCount,
    /// Of those, frames heard in the current turn.
    pub turn_played_frames: FrameCount,
    /// Frames of speech queued for the audio thread now.
    pub queued_frames: FrameCount,
    /// Frames of background audio played.
    pub background_frames: FrameCount,
    /// Blocks in which speech ran out while the agent was speaking.
    pub underruns: u64,
    /// Whether the voice is speaking now (grace period included).
    pub speaking: bool,
    /// The background's duck gain now, linear (1 when not ducked).
    pub duck_gain: f32,
}

impl SessionStats {
    pub(crate) fn read(t: &VoiceTelemetry) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            consumed_frames: FrameCount(get(&t.consumed_frames)),
            played_frames: FrameCount(get(&t.played_frames)),
            turn_played_frames: FrameCount(t.turn_played()),
            queued_frames: FrameCount(get(&t.queued_frames)),
            background_frames: FrameCount(get(&t.background_frames)),
            underruns: get(&t.underruns),
            speaking: t.is_speaking(),
            duck_gain: t.duck_gain.load(Ordering::Relaxed),
        }
    }
}

/// An avatar link's counters ([`AvatarHandle::stats`](crate::AvatarHandle::stats)).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// PCM bytes sent.
    pub bytes_sent: u64,
    /// PCM chunks sent.
    pub chunks_sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// PCM chunks dropped because the peer stalled and the send buffer
    /// was full.
    pub chunks_dropped: u64,
    /// Acknowledgements received.
    pub acks: u64,
    /// Acknowledgements that timed out.
    pub ack_timeouts: u64,
    /// Segments ended (their end sent).
    pub segments: u64,
    /// Segments settled: acknowledged, cut by an interrupt, or given up on.
    pub settled: u64,
    /// Samples handed to the link and not yet sent.
    pub backlog: u64,
    /// Samples dropped because the link fell too far behind the session.
    pub backlog_dropped: u64,
    /// Interrupts and segment ends handed to the link and not yet sent.
    pub control_backlog: u64,
    /// Messages sent on the control channel.
    pub control_sent: u64,
    /// Acknowledgements handled: counted, and their event emitted.
    pub acks_handled: u64,
    /// Interrupts and segment ends dropped because too many were waiting
    /// (SPEC S5).
    pub control_dropped: u64,
}

impl LinkStats {
    pub(crate) fn read(s: &sotto_actors::avatar_link::LinkStats) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            bytes_sent: get(&s.bytes_sent),
            chunks_sent: get(&s.chunks_sent),
            send_errors: get(&s.send_errors),
            chunks_dropped: get(&s.chunks_dropped),
            acks: get(&s.acks),
            ack_timeouts: get(&s.ack_timeouts),
            segments: get(&s.segments),
            settled: get(&s.settled),
            backlog: get(&s.backlog),
            backlog_dropped: get(&s.backlog_dropped),
            control_backlog: get(&s.control_backlog),
            control_sent: get(&s.control_sent),
            acks_handled: get(&s.acks_handled),
            control_dropped: get(&s.control_dropped),
        }
    }
}

//! Render shards (SPEC C4): built at start, one renderer each, and what
//! the engine reports of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sotto_actors::driver::virtual_clock::Shard;
use sotto_actors::pump::ShardRings;
use sotto_actors::supervisor::ShardControl;
use sotto_rt::{Renderer, RendererConfig, Telemetry};

use super::{Clock, Engine, EngineConfig, EngineError};

/// What the engine keeps of a render shard.
pub(super) struct ShardInfo {
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) sessions: Arc<AtomicUsize>,
}

/// Every shard's parts, shard 0 first: its renderer for the driver, its
/// rings for the pump, its control ends for the supervisor.
pub(super) struct Built {
    pub(super) renderers: Vec<Shard>,
    pub(super) rings: Vec<ShardRings>,
    pub(super) controls: Vec<ShardControl>,
    pub(super) shards: Vec<ShardInfo>,
}

/// One renderer per shard: `render_threads` on the virtual clock, one on
/// the others.
pub(super) fn build(
    config: &EngineConfig,
    renderer_config: &RendererConfig,
) -> Result<Built, EngineError> {
    let shard_count = match config.clock {
        Clock::Virtual { .. } => config.render_threads,
        // A device renders in its callback, and offline is one
        // deterministic loop: one shard each.
        Clock::Device { .. } | Clock::Offline => 1,
    };
    let mut renderers = Vec::with_capacity(shard_count);
    let mut rings = Vec::with_capacity(shard_count);
    let mut controls = Vec::with_capacity(shard_count);
    for _ in 0..shard_count {
        let (control, renderer) = Renderer::new(renderer_config.clone())
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let sotto_rt::RendererControl {
            command_tx,
            event_rx,
            retired_rx,
            retired_outputs_rx,
            telemetry,
            doorbells,
            ..
        } = control;
        renderers.push(Shard {
            renderer,
            telemetry: Arc::clone(&telemetry),
        });
        rings.push(ShardRings {
            event_rx,
            retired_rx,
            retired_outputs_rx,
        });
        controls.push(ShardControl::new(command_tx, doorbells, telemetry));
    }
    let shards: Vec<ShardInfo> = controls
        .iter()
        .map(|c| ShardInfo {
            telemetry: Arc::clone(&c.telemetry),
            sessions: Arc::clone(&c.sessions),
        })
        .collect();
    Ok(Built {
        renderers,
        rings,
        controls,
        shards,
    })
}

impl Engine {
    /// The render shards (SPEC C4): one on the offline and device clocks,
    /// [`EngineConfig::render_threads`] on the virtual clock. Shard 0 holds
    /// the main mix and every session that plays into it; a session with
    /// an output of its own alone goes to the shard with fewest sessions.
    #[must_use]
    pub fn shards(&self) -> Vec<crate::EngineStats> {
        self.inner
            .shards
            .iter()
            .enumerate()
            .map(|(index, s)| {
                crate::EngineStats::read_shard(
                    index,
                    s.sessions.load(Ordering::Relaxed),
                    &s.telemetry,
                )
            })
            .collect()
    }

    /// Blocks rendered after their deadline, summed over every shard.
    #[must_use]
    pub fn late_blocks(&self) -> u64 {
        self.sum_shards(|t| t.late_blocks.load(Ordering::Relaxed))
    }

    /// Allocations or frees seen on any audio thread (feature `rt-audit`
    /// of the drivers), summed over every shard (SPEC R1).
    #[must_use]
    pub fn alloc_violations(&self) -> u64 {
        self.sum_shards(|t| t.alloc_violations.load(Ordering::Relaxed))
    }

    fn sum_shards(&self, f: impl Fn(&Telemetry) -> u64) -> u64 {
        self.inner.shards.iter().map(|s| f(&s.telemetry)).sum()
    }
}

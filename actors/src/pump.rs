//! The event pump: drains the renderer's event and return rings off the
//! audio thread, routes events to session actors, drops retired voices, and
//! ticks sessions waiting for room, and wakes readers of output frames.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rtrb::Consumer;
use sotto_rt::{Event, Output, SessionId, Telemetry, Voice};
use tokio::sync::Notify;

use crate::quiesce::{HandledGuard, Quiescence};
use crate::restart::{contain, restarted};
use crate::session::{SessionMsg, SessionShared};

/// Messages of the event pump.
pub enum PumpMsg {
    /// Drain the rings now; reply when routed.
    Pump(Option<RpcReplyPort<()>>),
    /// Route events of this session here.
    Route(Arc<SessionShared>),
    /// Stop routing a session.
    Unroute(SessionId),
    /// Fault injection for supervision tests: handling it panics.
    #[cfg(feature = "fault-injection")]
    Panic,
}

impl std::fmt::Debug for PumpMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pump(_) => f.write_str("Pump"),
            Self::Route(s) => write!(f, "Route({:?})", s.id),
            Self::Unroute(id) => write!(f, "Unroute({id:?})"),
            #[cfg(feature = "fault-injection")]
            Self::Panic => f.write_str("Panic"),
        }
    }
}

/// The rings one render shard fills for the pump.
pub struct ShardRings {
    /// Renderer events.
    pub event_rx: Consumer<Event>,
    /// Retired voices.
    pub retired_rx: Consumer<Box<Voice>>,
    /// Retired outputs.
    pub retired_outputs_rx: Consumer<Box<Output>>,
}

/// Startup arguments of the pump.
pub struct PumpArgs {
    /// Every shard's rings, shard 0 first.
    pub shards: Vec<ShardRings>,
    /// Woken after every pump: output frames may be waiting.
    pub rendered: Arc<Notify>,
    /// Slots in the renderer.
    pub max_sessions: usize,
    /// The engine-wide in-flight count.
    pub quiesce: Arc<Quiescence>,
    /// Where a recovered fault is counted.
    pub telemetry: Arc<Telemetry>,
}

/// The event pump actor.
#[derive(Debug, Clone, Copy)]
pub struct EventPump;

/// The pump's state.
pub struct PumpState {
    shards: Vec<ShardRings>,
    rendered: Arc<Notify>,
    routes: Vec<Option<Arc<SessionShared>>>,
    quiesce: Arc<Quiescence>,
    telemetry: Arc<Telemetry>,
}

/// Sends a message to the pump, counted for quiescence.
pub fn send_pump(pump: &ActorRef<PumpMsg>, q: &Quiescence, msg: PumpMsg) -> bool {
    q.sent(1);
    if pump.cast(msg).is_err() {
        q.handled(1);
        return false;
    }
    true
}

impl Actor for EventPump {
    type Msg = PumpMsg;
    type State = PumpState;
    type Arguments = PumpArgs;

    async fn pre_start(
        &self,
        _: ActorRef<PumpMsg>,
        args: PumpArgs,
    ) -> Result<PumpState, ActorProcessingErr> {
        Ok(PumpState {
            shards: args.shards,
            rendered: args.rendered,
            routes: (0..args.max_sessions).map(|_| None).collect(),
            quiesce: args.quiesce,
            telemetry: args.telemetry,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<PumpMsg>,
        msg: PumpMsg,
        state: &mut PumpState,
    ) -> Result<(), ActorProcessingErr> {
        let q = Arc::clone(&state.quiesce);
        let _handled = HandledGuard::new(&q);
        // The rings and routes are all the pump has, and a panic leaves
        // both usable: restarting in place is going on with them.
        if let Err(why) = contain(async { state.handle(msg) }).await {
            restarted(&state.telemetry, "event pump", &why);
        }
        Ok(())
    }
}

impl PumpState {
    fn handle(&mut self, msg: PumpMsg) {
        match msg {
            PumpMsg::Pump(reply) => {
                self.pump();
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            PumpMsg::Route(shared) => {
                if let Some(slot) = self.routes.get_mut(shared.id.index()) {
                    *slot = Some(shared);
                }
            }
            PumpMsg::Unroute(id) => {
                if let Some(slot) = self.routes.get_mut(id.index()) {
                    *slot = None;
                }
            }
            #[cfg(feature = "fault-injection")]
            PumpMsg::Panic => panic!("injected event pump fault"),
        }
    }

    fn pump(&mut self) {
        for shard in &mut self.shards {
            while let Ok(event) = shard.event_rx.pop() {
                let Some(Some(shared)) = self.routes.get(event.session.index()) else {
                    continue;
                };
                if shared.generation.load(Ordering::Relaxed) != event.generation {
                    continue;
                }
                let _ = shared.send(SessionMsg::Rendered(event));
            }
            // Retired voices and outputs are freed here, never on the audio thread.
            while shard.retired_rx.pop().is_ok() {}
            while shard.retired_outputs_rx.pop().is_ok() {}
        }
        self.rendered.notify_waiters();
        for shared in self.routes.iter().flatten() {
            if shared.wants_tick.load(Ordering::Relaxed) {
                let _ = shared.send(SessionMsg::Tick);
            }
        }
    }
}

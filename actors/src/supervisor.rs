//! The engine supervisor: creates sessions (a voice in the renderer plus a
//! session actor), removes them, and restarts a session actor that fails
//! with a fresh voice in the same slot (SPEC R2).

use sotto_rt::FromSlot;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rtrb::Producer;
use sotto_rt::{
    frames_of, Command, Doorbells, Output, OutputId, OutputSpec, RendererConfig, SessionId,
    Telemetry, Voice,
};

use crate::frames::{Framer, OutputShared};
use crate::ingest::{FormatError, Ingest};
use crate::pump::{send_pump, PumpMsg};
use crate::quiesce::Quiescence;
use crate::session::{
    shared_output_id, voice_config, OutputConfig, Session, SessionArgs, SessionConfig,
    SessionEvent, SessionEventKind, SessionOutput, SessionShared, SharedOutputConfig,
    SharedOutputId,
};

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Every slot is taken.
    #[error("all {0} session slots are in use")]
    NoFreeSlot(usize),
    /// The input format cannot be ingested.
    #[error("bad input format: {0}")]
    Format(#[from] FormatError),
    /// A duration or gain in the config is out of range.
    #[error("bad session config: {0}")]
    Config(String),
    /// The renderer refused the voice.
    #[error("renderer: {0}")]
    Renderer(#[from] sotto_rt::RendererError),
    /// The session actor did not start.
    #[error("session actor did not start: {0}")]
    Spawn(String),
    /// The session asked to join a shared output that is not there.
    #[error("no shared output {0}")]
    NoSuchOutput(u32),
    /// Every shared output slot is taken.
    #[error("all {0} shared output slots are in use")]
    NoFreeOutput(usize),
}

/// Messages of the supervisor.
pub enum SupervisorMsg {
    /// Create a session.
    Create(
        SessionConfig,
        RpcReplyPort<Result<Arc<SessionShared>, CreateError>>,
    ),
    /// Remove a session and retire its voice.
    Remove(SessionId, RpcReplyPort<()>),
    /// Make a shared output (a room mix) sessions can join.
    CreateOutput(
        SharedOutputConfig,
        RpcReplyPort<Result<Arc<OutputShared>, CreateError>>,
    ),
    /// Remove a shared output; sessions still in it play on to nowhere.
    RemoveOutput(SharedOutputId, RpcReplyPort<()>),
    /// Close every session and stop every session actor and background
    /// loader, waiting at most the given time for them to finish.
    Shutdown(Duration, RpcReplyPort<()>),
}

impl std::fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Create(c, _) => write!(f, "Create({})", c.name),
            Self::Remove(id, _) => write!(f, "Remove({id:?})"),
            Self::CreateOutput(c, _) => write!(f, "CreateOutput({})", c.name),
            Self::RemoveOutput(id, _) => write!(f, "RemoveOutput({id:?})"),
            Self::Shutdown(limit, _) => write!(f, "Shutdown({limit:?})"),
        }
    }
}

/// The control side of one render shard, as the supervisor uses it.
pub struct ShardControl {
    /// The shard renderer's command ring.
    pub command_tx: Producer<Command>,
    /// The shard renderer's doorbells, for every voice placed there.
    pub doorbells: Doorbells,
    /// The shard renderer's telemetry: its clock, late blocks, render times.
    pub telemetry: Arc<Telemetry>,
    /// Sessions placed on the shard now.
    pub sessions: Arc<AtomicUsize>,
}

impl ShardControl {
    /// The control ends of a renderer the supervisor needs, with an
    /// empty session count.
    #[must_use]
    pub fn new(
        command_tx: Producer<Command>,
        doorbells: Doorbells,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            command_tx,
            doorbells,
            telemetry,
            sessions: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Startup arguments of the supervisor.
pub struct SupervisorArgs {
    /// The render shards, shard 0 (the one that holds the main mix) first.
    pub shards: Vec<ShardControl>,
    /// The renderers' format (every shard has the same).
    pub renderer: RendererConfig,
    /// The event pump.
    pub pump: ActorRef<PumpMsg>,
    /// The engine-wide in-flight count.
    pub quiesce: Arc<Quiescence>,
}

/// The supervisor actor.
#[derive(Debug, Clone, Copy)]
pub struct EngineSupervisor;

struct Slot {
    shared: Arc<SessionShared>,
    actor: ractor::ActorId,
    /// The render shard holding the session's voice and output.
    shard: usize,
}

/// The supervisor's state.
pub struct SupervisorState {
    args: SupervisorArgs,
    slots: Vec<Option<Slot>>,
    outputs: Vec<Option<Arc<OutputShared>>>,
}

impl Actor for EngineSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let slots = (0..args.renderer.max_sessions).map(|_| None).collect();
        let outputs = (0..args.renderer.max_sessions).map(|_| None).collect();
        Ok(SupervisorState {
            args,
            slots,
            outputs,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Create(config, reply) => {
                let result = state.create(&myself, config).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Remove(id, reply) => {
                if let Some(slot) = state.slots.get_mut(id.index()).and_then(Option::take) {
                    slot.shared.close();
                    send_pump(&state.args.pump, &state.args.quiesce, PumpMsg::Unroute(id));
                    let actor = slot.shared.actor.lock().ok().and_then(|mut a| a.take());
                    if let Some(actor) = actor {
                        actor.stop(None);
                    }
                    state.remove_output(&slot.shared, slot.shard);
                    let shard = &mut state.args.shards[slot.shard];
                    shard.sessions.fetch_sub(1, Ordering::Relaxed);
                    if shard.command_tx.push(Command::RemoveVoice(id)).is_err() {
                        tracing::error!(
                            session = id.slot(),
                            "renderer command ring full; voice stays until the next removal"
                        );
                    }
                }
                let _ = reply.send(());
            }
            SupervisorMsg::CreateOutput(config, reply) => {
                let _ = reply.send(state.create_output(config));
            }
            SupervisorMsg::RemoveOutput(id, reply) => {
                if let Some(out) = state.outputs.get_mut(id.0 as usize).and_then(Option::take) {
                    out.close();
                    let slot = shared_output_id(&state.args.renderer, id);
                    if state.args.shards[out.shard]
                        .command_tx
                        .push(Command::RemoveOutput(slot))
                        .is_err()
                    {
                        tracing::error!(output = %out.name, "renderer command ring full; output stays until its slot is reused");
                    }
                }
                let _ = reply.send(());
            }
            SupervisorMsg::Shutdown(limit, reply) => {
                for out in state.outputs.iter_mut().filter_map(Option::take) {
                    out.close();
                }
                // Closed first: nothing new is accepted while the actors
                // finish what they hold (sinks closed, waiting pushes told).
                for slot in state.slots.iter_mut().filter_map(Option::take) {
                    slot.shared.close();
                }
                myself.stop_children_and_wait(None, Some(limit)).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            let id = cell.get_id();
            let found = state
                .slots
                .iter()
                .flatten()
                .find(|s| s.actor == id)
                .map(|s| (Arc::clone(&s.shared), s.shard));
            if let Some((shared, shard)) = found {
                tracing::error!(session = %shared.config.name, error = %err, "session actor failed; restarting");
                let generation = shared.generation.load(Ordering::Relaxed).wrapping_add(1);
                shared.emit(SessionEvent {
                    session: shared.id,
                    at: state.args.shards[shard].telemetry.clock(),
                    kind: SessionEventKind::Error {
                        message: format!("session restarted after a fault: {err}"),
                    },
                });
                if let Err(e) = state.start(&myself, &shared, shard, generation).await {
                    tracing::error!(session = %shared.config.name, error = %e, "restart failed");
                    shared.close();
                }
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn create(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        config: SessionConfig,
    ) -> Result<Arc<SessionShared>, CreateError> {
        config.validate().map_err(CreateError::Config)?;
        Ingest::new(
            config.input,
            self.args.renderer.sample_rate,
            self.args.renderer.channels,
        )?;
        let index = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(CreateError::NoFreeSlot(self.slots.len()))?;
        let shard = self.place(&config)?;
        let shared = SessionShared::new(
            SessionId::from_slot(index as u32),
            config,
            self.args.renderer.sample_rate,
            Arc::clone(&self.args.quiesce),
            Arc::clone(&self.args.shards[shard].telemetry),
        );
        if let Some(own) = shared.config.output.own() {
            let framer = self.add_output(OutputId(shared.id.slot()), own, shard)?;
            if let Ok(mut f) = shared.frames.lock() {
                *f = Some(framer);
            }
        }
        if let Err(e) = self.start(myself, &shared, shard, 0).await {
            self.remove_output(&shared, shard);
            return Err(e);
        }
        self.args.shards[shard]
            .sessions
            .fetch_add(1, Ordering::Relaxed);
        Ok(shared)
    }

    /// The shard a new session renders on (SPEC C4). Whatever feeds the
    /// main mix renders where the main mix is, on shard 0; an output of
    /// its own alone goes to the shard with the fewest sessions.
    /// A session in a shared output renders on that output's shard.
    fn place(&self, config: &SessionConfig) -> Result<usize, CreateError> {
        match config.output {
            SessionOutput::Main => Ok(0),
            SessionOutput::Own(own) => Ok(self.place_output(own)),
            SessionOutput::Shared(id) => self
                .outputs
                .get(id.0 as usize)
                .and_then(Option::as_ref)
                .map(|o| o.shard)
                .ok_or(CreateError::NoSuchOutput(id.0)),
        }
    }

    fn place_output(&self, output: OutputConfig) -> usize {
        if output.also_main {
            return 0;
        }
        self.args
            .shards
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.sessions.load(Ordering::Relaxed))
            .map_or(0, |(k, _)| k)
    }

    /// Makes a shared output on the least loaded shard (SPEC C1, C4).
    fn create_output(
        &mut self,
        config: SharedOutputConfig,
    ) -> Result<Arc<OutputShared>, CreateError> {
        config.output.validate().map_err(CreateError::Config)?;
        let index = self
            .outputs
            .iter()
            .position(Option::is_none)
            .ok_or(CreateError::NoFreeOutput(self.outputs.len()))?;
        let id = SharedOutputId(index as u32);
        let shard = self.place_output(config.output);
        let slot = shared_output_id(&self.args.renderer, id);
        let framer = self.add_output(slot, config.output, shard)?;
        let renderer = Arc::clone(&self.args.shards[shard].telemetry);
        let out = Arc::new(OutputShared::new(
            id,
            config.name,
            (shard, renderer),
            framer,
        ));
        self.outputs[index] = Some(Arc::clone(&out));
        Ok(out)
    }

    /// Builds an output, sends it to the renderer of `shard` and gives
    /// back its reading end (SPEC C1). A session's own output takes the
    /// session's slot number, so a restarted voice finds it again.
    fn add_output(
        &mut self,
        id: OutputId,
        own: OutputConfig,
        shard: usize,
    ) -> Result<Framer, CreateError> {
        let r = &self.args.renderer;
        let bound = frames_of(own.bound, r.sample_rate) as usize;
        let (reader, output) = Output::new(&OutputSpec {
            id,
            channels: r.channels,
            max_block_frames: r.max_block_frames,
            // Twice the reader's bound: a slow reader drops its oldest
            // before the audio thread ever finds the ring full.
            ring_frames: 2 * bound + r.max_block_frames,
            saturation: r.saturation,
            into_main: own.also_main,
        });
        if self.args.shards[shard]
            .command_tx
            .push(Command::AddOutput(Box::new(output)))
            .is_err()
        {
            return Err(CreateError::Renderer(
                sotto_rt::RendererError::CommandRingFull,
            ));
        }
        Ok(Framer::new(reader, own.frame, r.sample_rate, own.bound))
    }

    /// Takes the session's own output out of the renderer, if it has one.
    fn remove_output(&mut self, shared: &SessionShared, shard: usize) {
        if shared.config.output.own().is_some()
            && self.args.shards[shard]
                .command_tx
                .push(Command::RemoveOutput(OutputId(shared.id.slot())))
                .is_err()
        {
            tracing::error!(
                session = shared.id.slot(),
                "renderer command ring full; output stays until the slot is reused"
            );
        }
    }

    /// Builds a voice, installs it and spawns its session actor.
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        shared: &Arc<SessionShared>,
        shard: usize,
        generation: u32,
    ) -> Result<(), CreateError> {
        let vc = voice_config(
            &shared.config,
            &self.args.renderer,
            shared.id,
            generation,
            &self.args.shards[shard].doorbells,
        );
        let (control, voice) = Voice::new(&vc);
        let telemetry = Arc::clone(&control.telemetry);
        let args = SessionArgs {
            shared: Arc::clone(shared),
            voice: control,
            generation,
            sample_rate: self.args.renderer.sample_rate,
            channels: self.args.renderer.channels,
            clock: Arc::clone(&self.args.shards[shard].telemetry),
        };
        let (actor, _) = Actor::spawn_linked(None, Session, args, myself.get_cell())
            .await
            .map_err(|e| CreateError::Spawn(e.to_string()))?;
        if self.args.shards[shard]
            .command_tx
            .push(Command::AddVoice(Box::new(voice)))
            .is_err()
        {
            actor.stop(None);
            return Err(CreateError::Renderer(
                sotto_rt::RendererError::CommandRingFull,
            ));
        }
        if let Ok(mut t) = shared.telemetry.lock() {
            *t = telemetry;
        }
        shared.generation.store(generation, Ordering::Relaxed);
        let id = actor.get_id();
        if let Ok(mut a) = shared.actor.lock() {
            *a = Some(actor);
        }
        send_pump(
            &self.args.pump,
            &self.args.quiesce,
            PumpMsg::Route(Arc::clone(shared)),
        );
        self.slots[shared.id.index()] = Some(Slot {
            shared: Arc::clone(shared),
            actor: id,
            shard,
        });
        Ok(())
    }
}

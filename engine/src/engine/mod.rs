//! The engine handle: starts the actors and a driver, creates sessions.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use rtrb::{Consumer, RingBuffer};
use sotto_actors::avatar_link::LinkMsg;
use sotto_actors::background::{BackgroundConfig, BackgroundLoader, LoaderArgs};
use sotto_actors::capture::echo_link::ReverseSlot;
use sotto_actors::device_manager::{DeviceManager, DeviceManagerArgs, DeviceMsg};
use sotto_actors::driver::device::DeviceOutput;
use sotto_actors::driver::offline::OfflineDriver;
use sotto_actors::driver::virtual_clock::{Shard, VirtualClock};
use sotto_actors::pump::{send_pump, EventPump, PumpArgs, PumpMsg};
use sotto_actors::supervisor::{EngineSupervisor, SupervisorArgs, SupervisorMsg};
use sotto_actors::{Quiescence, SessionConfig};
use sotto_rt::{RendererConfig, SampleTime, Telemetry};
use tokio::sync::{oneshot, Mutex, Notify};

use crate::background::BackgroundHandle;
use crate::handle::{OfflineProgress, SessionHandle};
use crate::SharedOutputId;
use sotto_actors::frames::OutputShared;

mod avatar;
mod config;
mod device;
mod error;
#[cfg(feature = "fault-injection")]
mod faults;
mod outputs;
mod render;
mod shards;

use config::validate;
use config::SHUTDOWN_LIMIT;
pub use config::{Clock, EngineConfig};
pub use error::EngineError;
use shards::ShardInfo;

enum Driver {
    // Boxed: it holds the renderer, which the virtual variant has moved to
    // its thread.
    Offline(Box<OfflineDriver>),
    Virtual {
        clock: VirtualClock,
        capture: Option<Consumer<f32>>,
        ticker: tokio::task::JoinHandle<()>,
    },
    Device {
        manager: ActorRef<DeviceMsg>,
        ticker: tokio::task::JoinHandle<()>,
    },
    Stopped,
}

/// What `start` builds before the driver, handed to `assemble`.
struct Parts {
    supervisor: ActorRef<SupervisorMsg>,
    pump: ActorRef<PumpMsg>,
    quiesce: Arc<Quiescence>,
    telemetry: Arc<Telemetry>,
    rendered: Arc<Notify>,
    shards: Vec<ShardInfo>,
}

/// What plays the renderer's output to a listener.
enum Outputs {
    /// A device, through its manager.
    Device(ActorRef<DeviceMsg>, Arc<ReverseSlot>),
    /// A clock; `fallback` says why when a device was asked for.
    Clock { fallback: Option<String> },
}

/// The running engine: start one, make sessions on it, render or let it
/// run. Cheap to clone; every clone drives the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: EngineConfig,
    supervisor: ActorRef<SupervisorMsg>,
    pump: ActorRef<PumpMsg>,
    quiesce: Arc<Quiescence>,
    telemetry: Arc<Telemetry>,
    driver: Mutex<Driver>,
    /// Ids of background sources.
    next_source: AtomicU32,
    /// Why a requested device is not in use.
    fallback: Option<String>,
    /// The device manager, when the engine plays through a device.
    device: Option<ActorRef<DeviceMsg>>,
    /// Where the playing output's reverse stream is published for echo
    /// cancellation.
    reverse: Arc<ReverseSlot>,
    /// The shared outputs made and not removed, by id.
    outputs: std::sync::Mutex<Vec<(SharedOutputId, Arc<OutputShared>)>>,
    /// Avatar links attached so far (dead ones pruned on attach), stopped
    /// by shutdown.
    links: std::sync::Mutex<Vec<ActorRef<LinkMsg>>>,
    /// Set when shutdown begins: nothing new is started afterwards.
    stopped: AtomicBool,
    /// Woken by the event pump after each pump: output frames may wait.
    rendered: Arc<Notify>,
    /// Every render shard, shard 0 first.
    shards: Vec<ShardInfo>,
    /// On the offline clock: how its render calls go, for waits that need
    /// them (SPEC C5).
    offline: Option<Arc<OfflineProgress>>,
    /// Whether a new call may be set up now.
    admission: crate::admission::Admission,
}

impl Engine {
    /// How long [`Engine::shutdown`] takes at most.
    pub const SHUTDOWN_LIMIT: std::time::Duration = SHUTDOWN_LIMIT;
    /// On the offline clock, how long a push or a playout waits for a
    /// render before it fails with [`SessionError::NotRendering`](crate::SessionError::NotRendering).
    pub const OFFLINE_STALL: std::time::Duration = crate::handle::OFFLINE_STALL;
}

impl Engine {
    /// Starts the actors and the driver. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`EngineError::Config`] for an out-of-range config,
    /// [`EngineError::Start`] when an actor or the audio thread cannot start.
    pub async fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        validate(&config)?;
        let renderer_config = RendererConfig {
            sample_rate: config.sample_rate,
            channels: config.channels,
            max_block_frames: config.block_frames,
            max_sessions: config.max_sessions,
            // Each session's own, then as many shared ones.
            max_outputs: 2 * config.max_sessions,
            command_capacity: config.max_sessions * 2 + 64,
            event_capacity: (config.max_sessions * 64).max(4096),
            saturation: config.saturation,
        };
        let shards::Built {
            mut renderers,
            rings,
            controls,
            shards,
        } = shards::build(&config, &renderer_config)?;
        let quiesce = Quiescence::new();
        let telemetry = Arc::clone(&shards[0].telemetry);
        let rendered = Arc::new(Notify::new());
        let (pump, _) = Actor::spawn(
            None,
            EventPump,
            PumpArgs {
                shards: rings,
                rendered: Arc::clone(&rendered),
                max_sessions: config.max_sessions,
                quiesce: Arc::clone(&quiesce),
                telemetry: Arc::clone(&telemetry),
            },
        )
        .await
        .map_err(|e| EngineError::Start {
            what: "event pump",
            reason: e.to_string(),
        })?;
        let (supervisor, _) = Actor::spawn(
            None,
            EngineSupervisor,
            SupervisorArgs {
                shards: controls,
                renderer: renderer_config,
                pump: pump.clone(),
                quiesce: Arc::clone(&quiesce),
            },
        )
        .await
        .map_err(|e| EngineError::Start {
            what: "supervisor",
            reason: e.to_string(),
        })?;
        let parts = Parts {
            supervisor,
            pump,
            quiesce,
            telemetry,
            rendered,
            shards,
        };
        let mut others: Vec<Shard> = renderers.split_off(1);
        let Some(Shard { renderer, .. }) = renderers.pop() else {
            return Err(EngineError::Config("no render shard".into()));
        };
        let mut renderer = renderer;
        let mut fallback = None;
        let virtual_clock = match config.clock.clone() {
            Clock::Offline => None,
            Clock::Virtual { capture, deferred } => Some((capture, deferred)),
            Clock::Device { name, deferred } => {
                let t = Arc::clone(&parts.telemetry);
                match DeviceOutput::open(renderer, t, name.as_deref(), deferred) {
                    Ok(output) => {
                        let reverse = ReverseSlot::new();
                        let (manager, _) = Actor::spawn(
                            None,
                            DeviceManager,
                            DeviceManagerArgs {
                                output,
                                name,
                                telemetry: Arc::clone(&parts.telemetry),
                                block_frames: config.block_frames,
                                reverse: Arc::clone(&reverse),
                            },
                        )
                        .await
                        .map_err(|e| EngineError::Start {
                            what: "device manager",
                            reason: e.to_string(),
                        })?;
                        let ticker = spawn_ticker(&parts, &config);
                        return Ok(Self::assemble(
                            config,
                            parts,
                            Driver::Device {
                                manager: manager.clone(),
                                ticker,
                            },
                            Outputs::Device(manager, reverse),
                        ));
                    }
                    Err((e, Some(r))) => {
                        tracing::warn!(error = %e, "no output device; running on the virtual clock");
                        fallback = Some(e.to_string());
                        renderer = *r;
                        Some((None, deferred))
                    }
                    Err((e, None)) => {
                        return Err(EngineError::Start {
                            what: "output device",
                            reason: e.to_string(),
                        })
                    }
                }
            }
        };
        let driver = match virtual_clock {
            None => Driver::Offline(Box::new(OfflineDriver::new(
                renderer,
                Arc::clone(&parts.telemetry),
                parts.pump.clone(),
                Arc::clone(&parts.quiesce),
                config.block_frames,
            ))),
            Some((capture, deferred)) => {
                let (tx, rx) = match capture {
                    Some(d) => {
                        let frames =
                            sotto_actors::session::frames_of(d, config.sample_rate) as usize;
                        let (tx, rx) = RingBuffer::new(frames.max(1) * config.channels);
                        (Some(tx), Some(rx))
                    }
                    None => (None, None),
                };
                let mut all = vec![Shard {
                    renderer,
                    telemetry: Arc::clone(&parts.telemetry),
                }];
                all.append(&mut others);
                let clock = VirtualClock::start_shards(all, config.block_frames, tx, deferred)
                    .map_err(|e| EngineError::Start {
                        what: "sotto-audio threads",
                        reason: e.to_string(),
                    })?;
                let ticker = spawn_ticker(&parts, &config);
                Driver::Virtual {
                    clock,
                    capture: rx,
                    ticker,
                }
            }
        };
        Ok(Self::assemble(
            config,
            parts,
            driver,
            Outputs::Clock { fallback },
        ))
    }

    fn assemble(
        config: EngineConfig,
        Parts {
            supervisor,
            pump,
            quiesce,
            telemetry,
            rendered,
            shards,
        }: Parts,
        driver: Driver,
        outputs: Outputs,
    ) -> Engine {
        let (fallback, device, reverse) = match outputs {
            Outputs::Device(manager, reverse) => (None, Some(manager), reverse),
            Outputs::Clock { fallback } => (fallback, None, ReverseSlot::new()),
        };
        let offline =
            matches!(config.clock, Clock::Offline).then(|| Arc::new(OfflineProgress::default()));
        let admission = crate::admission::Admission::new(config.admission);
        Engine {
            inner: Arc::new(Inner {
                config,
                supervisor,
                pump,
                quiesce,
                telemetry,
                driver: Mutex::new(driver),
                next_source: AtomicU32::new(1),
                fallback,
                device,
                reverse,
                outputs: std::sync::Mutex::new(Vec::new()),
                links: std::sync::Mutex::new(Vec::new()),
                stopped: AtomicBool::new(false),
                rendered,
                admission,
                shards,
                offline,
            }),
        }
    }

    pub(crate) fn running(&self) -> Result<(), EngineError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            Err(EngineError::Stopped)
        } else {
            Ok(())
        }
    }

    /// The engine's config.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The renderer's counters now: the sample clock, late blocks,
    /// dropped events, render times, restarts (summed over every shard
    /// where they add up).
    #[must_use]
    pub fn stats(&self) -> crate::EngineStats {
        let shards: Vec<(&Telemetry, usize)> = self
            .inner
            .shards
            .iter()
            .map(|s| (&*s.telemetry, s.sessions.load(Ordering::Relaxed)))
            .collect();
        crate::EngineStats::read(&self.inner.telemetry, &shards)
    }

    /// Asks whether one more call may be set up now (SPEC S7), and takes a
    /// place among the calls being set up if so: hold the permit until the
    /// call has connected or failed. Refused while
    /// [`AdmissionConfig::max_connecting`](crate::AdmissionConfig::max_connecting)
    /// calls are being set up, faster than `per_second`, while the busiest
    /// render shard or the machine's CPU is past its share, while the calls'
    /// readers have fallen behind the render (`max_reader_lag`), or when
    /// the engine holds all its sessions; the refusal says when to try
    /// again.
    ///
    /// # Errors
    /// [`Refusal`](crate::Refusal), with its `retry_after`.
    pub fn admit(&self) -> Result<crate::CallPermit, crate::Refusal> {
        let period_ns =
            self.inner.config.block_frames as f64 * 1e9 / f64::from(self.inner.config.sample_rate);
        let render_load = self
            .inner
            .shards
            .iter()
            .map(|s| s.telemetry.render_times.recent_ns() as f64 / period_ns)
            .fold(0.0, f64::max);
        let sessions: usize = self
            .inner
            .shards
            .iter()
            .map(|s| s.sessions.load(Ordering::Relaxed))
            .sum();
        self.inner
            .admission
            .admit(render_load, sessions >= self.inner.config.max_sessions)
    }

    /// Where a call's reader reports how far behind the render it is.
    pub(crate) fn reader_lag(&self) -> Arc<crate::admission::ReaderLag> {
        self.inner.admission.reader_lag()
    }

    /// Calls admitted by [`Engine::admit`] whose permits are still held.
    #[must_use]
    pub fn calls_connecting(&self) -> usize {
        self.inner.admission.connecting()
    }

    /// The main renderer's counters, for the engine's own readers.
    pub(crate) fn renderer_telemetry(&self) -> Arc<Telemetry> {
        Arc::clone(&self.inner.telemetry)
    }

    /// The output sample clock.
    #[must_use]
    pub fn clock(&self) -> SampleTime {
        self.inner.telemetry.clock()
    }

    /// Opens a session: a voice in the renderer and its session actor.
    ///
    /// # Errors
    /// [`EngineError::Create`] for a bad config or no free slot;
    /// [`EngineError::Stopped`] after shutdown.
    pub async fn create_session(
        &self,
        config: SessionConfig,
    ) -> Result<SessionHandle, EngineError> {
        let shared = self
            .ask_supervisor(|reply| SupervisorMsg::Create(config, reply))
            .await??;
        Ok(SessionHandle::new(
            shared,
            Arc::clone(&self.inner.rendered),
            self.inner.offline.clone(),
        ))
    }

    /// Sends the supervisor a request and waits for its answer.
    async fn ask_supervisor<T>(
        &self,
        msg: impl FnOnce(ractor::RpcReplyPort<T>) -> SupervisorMsg,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .supervisor
            .cast(msg(tx.into()))
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// A background source for `session` (SPEC B1–B7), stopped until
    /// [`BackgroundHandle::start`]. Its loader actor is supervised by the
    /// engine.
    ///
    /// # Errors
    /// [`EngineError::Volume`] or [`EngineError::Config`] for a bad config;
    /// [`EngineError::Stopped`].
    pub async fn background(
        &self,
        session: &SessionHandle,
        config: BackgroundConfig,
    ) -> Result<BackgroundHandle, EngineError> {
        self.running()?;
        sotto_actors::background::validate(&config)?;
        let id = self.inner.next_source.fetch_add(1, Ordering::Relaxed);
        let args = LoaderArgs {
            config,
            id,
            session: Arc::clone(session.shared()),
            sample_rate: self.inner.config.sample_rate,
            channels: self.inner.config.channels,
        };
        let (loader, _) = Actor::spawn_linked(
            None,
            BackgroundLoader,
            args,
            self.inner.supervisor.get_cell(),
        )
        .await
        .map_err(|e| EngineError::Start {
            what: "background loader",
            reason: e.to_string(),
        })?;
        Ok(BackgroundHandle::new(id, loader, session.clone()))
    }

    /// Closes a session; its voice leaves the renderer at the next block.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] after shutdown.
    pub async fn remove_session(&self, session: &SessionHandle) -> Result<(), EngineError> {
        self.ask_supervisor(|reply| SupervisorMsg::Remove(session.id(), reply))
            .await
    }

    /// Stops everything, in order, within [`Engine::SHUTDOWN_LIMIT`]: the driver
    /// (no more audio), the avatar links (their peers closed), the sessions
    /// and background loaders (sinks finished, so a file they write is
    /// complete; a push still waiting is answered
    /// [`SessionError::Closed`](crate::SessionError::Closed)), then the
    /// supervisor and the event pump. Every handle afterwards returns a
    /// clear error. A second call does nothing.
    pub async fn shutdown(&self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_LIMIT;
        let left = || {
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(1))
        };
        self.inner.stopped.store(true, Ordering::Release);
        let driver = std::mem::replace(&mut *self.inner.driver.lock().await, Driver::Stopped);
        match driver {
            Driver::Virtual { clock, ticker, .. } => {
                ticker.abort();
                drop(clock.stop());
            }
            Driver::Device { manager, ticker } => {
                ticker.abort();
                let _ = ractor::call!(manager, DeviceMsg::Stop);
                let _ = manager.stop_and_wait(None, Some(left())).await;
            }
            Driver::Offline(_) | Driver::Stopped => {}
        }
        let links = self
            .inner
            .links
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        for link in &links {
            link.stop(None);
        }
        for link in &links {
            let _ = link.wait(Some(left())).await;
        }
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .supervisor
            .cast(SupervisorMsg::Shutdown(left(), tx.into()))
            .is_ok()
        {
            let _ = tokio::time::timeout(left(), rx).await;
        }
        let _ = self
            .inner
            .supervisor
            .stop_and_wait(None, Some(left()))
            .await;
        let _ = self.inner.pump.stop_and_wait(None, Some(left())).await;
    }
}

fn spawn_ticker(parts: &Parts, config: &EngineConfig) -> tokio::task::JoinHandle<()> {
    let (pump, quiesce) = (parts.pump.clone(), Arc::clone(&parts.quiesce));
    // Half a block: events reach sessions within a block of being raised.
    let half_block = (sotto_rt::duration_of(config.block_frames as u64, config.sample_rate) / 2)
        .max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(half_block);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // One tick in the pump's mailbox at a time: a stalled pump
            // delays the ticks instead of piling them up.
            let (tx, rx) = oneshot::channel();
            if !send_pump(&pump, &quiesce, PumpMsg::Pump(Some(tx.into()))) {
                break;
            }
            let _ = rx.await;
        }
    })
}

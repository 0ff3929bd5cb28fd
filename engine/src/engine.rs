//! The engine handle: starts the actors and a driver, creates sessions.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, ActorStatus};
use rtrb::{Consumer, RingBuffer};
use sotto_actors::avatar_link::LinkMsg;
use sotto_actors::background::{BackgroundConfig, BackgroundError, BackgroundLoader, LoaderArgs};
use sotto_actors::capture::echo::EchoConfig;
use sotto_actors::capture::echo_link::ReverseSlot;
use sotto_actors::capture::input::{DeviceInput, InputConfig};
use sotto_actors::device_manager::{
    DeviceEvent, DeviceManager, DeviceManagerArgs, DeviceMsg, DEVICE_EVENT_QUEUE,
};
use sotto_actors::devices::DeviceError;
use sotto_actors::driver::device::DeviceOutput;
use sotto_actors::driver::offline::OfflineDriver;
use sotto_actors::driver::virtual_clock::VirtualClock;
use sotto_actors::pump::{send_pump, EventPump, PumpArgs, PumpMsg};
use sotto_actors::supervisor::{CreateError, EngineSupervisor, SupervisorArgs, SupervisorMsg};
use sotto_actors::{Quiescence, SessionConfig, SettleTimeout};
use sotto_rt::{Renderer, RendererConfig, SampleTime, Saturation, Telemetry};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::background::BackgroundHandle;
use crate::handle::SessionHandle;

/// Who drives the renderer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Clock {
    /// Rendered on request by [`Engine::render`], as fast as possible; deterministic.
    #[default]
    Offline,
    /// A real-time thread named `sotto-audio`; keeps up to `capture` of the
    /// output for [`Engine::take_captured`].
    Virtual {
        /// How much output to keep (`None`: discard).
        capture: Option<Duration>,
        /// Wait for [`Engine::run_clock`] before rendering the first block.
        deferred: bool,
    },
    /// A sound card: the renderer runs in the device's callback (SPEC D2).
    /// When the device cannot be opened the engine runs on the virtual
    /// clock instead and says why ([`Engine::device_fallback`]).
    Device {
        /// The device's name (see `sotto devices`); `None`: the default.
        name: Option<String>,
        /// Play silence until [`Engine::run_clock`].
        deferred: bool,
    },
}

/// How an engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Output rate in Hz (8 kHz to 192 kHz).
    pub sample_rate: u32,
    /// Output channels (1 to 8).
    pub channels: usize,
    /// Frames per render block.
    pub block_frames: usize,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// The driver.
    pub clock: Clock,
    /// How the master sum is kept inside full scale.
    pub saturation: Saturation,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sample_rate: 24_000,
            channels: 1,
            block_frames: 480,
            max_sessions: 64,
            clock: Clock::Offline,
            saturation: Saturation::Hard,
        }
    }
}

/// Engine-level failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The config is out of range.
    #[error("bad engine config: {0}")]
    Config(String),
    /// An actor could not be started.
    #[error("could not start {what}: {reason}")]
    Start {
        /// Which actor or thread.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A session could not be created.
    #[error("could not create session: {0}")]
    Create(#[from] CreateError),
    /// The operation needs the other clock.
    #[error("operation needs the {0} clock")]
    WrongClock(&'static str),
    /// The actors did not settle (a stuck actor).
    #[error(transparent)]
    Stuck(#[from] SettleTimeout),
    /// A background source's config is out of range.
    #[error("bad background source: {0}")]
    Background(#[from] BackgroundError),
    /// A device cannot be used as asked.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The avatar link could not be made (a 401 for a bad token is here).
    #[error("avatar link: {0}")]
    Avatar(#[from] sotto_actors::avatar_link::LinkError),
    /// The engine was shut down.
    #[error("engine is shut down")]
    Stopped,
}

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

/// What plays the renderer's output to a listener.
enum Outputs {
    /// A device, through its manager.
    Device(ActorRef<DeviceMsg>, Arc<ReverseSlot>),
    /// A clock; `fallback` says why when a device was asked for.
    Clock { fallback: Option<String> },
}

/// The running engine. Cheap to clone; every clone drives the same engine.
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
    /// Avatar links attached so far (dead ones pruned on attach), stopped
    /// by shutdown.
    links: std::sync::Mutex<Vec<ActorRef<LinkMsg>>>,
    /// Set when shutdown begins: nothing new is started afterwards.
    stopped: AtomicBool,
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
            command_capacity: config.max_sessions * 2 + 64,
            event_capacity: (config.max_sessions * 64).max(4096),
            saturation: config.saturation,
        };
        let (control, renderer) = Renderer::new(renderer_config.clone())
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let quiesce = Quiescence::new();
        let telemetry = Arc::clone(&control.telemetry);
        let (pump, _) = Actor::spawn(
            None,
            EventPump,
            PumpArgs {
                event_rx: control.event_rx,
                retired_rx: control.retired_rx,
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
                command_tx: control.command_tx,
                doorbells: control.doorbells,
                renderer: renderer_config,
                telemetry: Arc::clone(&telemetry),
                pump: pump.clone(),
                quiesce: Arc::clone(&quiesce),
            },
        )
        .await
        .map_err(|e| EngineError::Start {
            what: "supervisor",
            reason: e.to_string(),
        })?;
        let mut renderer = renderer;
        let mut fallback = None;
        let virtual_clock = match config.clock.clone() {
            Clock::Offline => None,
            Clock::Virtual { capture, deferred } => Some((capture, deferred)),
            Clock::Device { name, deferred } => {
                let t = Arc::clone(&telemetry);
                match DeviceOutput::open(renderer, t, name.as_deref(), deferred) {
                    Ok(output) => {
                        let reverse = ReverseSlot::new();
                        let (manager, _) = Actor::spawn(
                            None,
                            DeviceManager,
                            DeviceManagerArgs {
                                output,
                                name,
                                telemetry: Arc::clone(&telemetry),
                                block_frames: config.block_frames,
                                reverse: Arc::clone(&reverse),
                            },
                        )
                        .await
                        .map_err(|e| EngineError::Start {
                            what: "device manager",
                            reason: e.to_string(),
                        })?;
                        let ticker = spawn_ticker(pump.clone(), Arc::clone(&quiesce), &config);
                        return Ok(Self::assemble(
                            config,
                            (supervisor, pump, quiesce, telemetry),
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
                Arc::clone(&telemetry),
                pump.clone(),
                Arc::clone(&quiesce),
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
                let clock = VirtualClock::start(
                    renderer,
                    Arc::clone(&telemetry),
                    config.block_frames,
                    tx,
                    deferred,
                )
                .map_err(|e| EngineError::Start {
                    what: "sotto-audio thread",
                    reason: e.to_string(),
                })?;
                let ticker = spawn_ticker(pump.clone(), Arc::clone(&quiesce), &config);
                Driver::Virtual {
                    clock,
                    capture: rx,
                    ticker,
                }
            }
        };
        Ok(Self::assemble(
            config,
            (supervisor, pump, quiesce, telemetry),
            driver,
            Outputs::Clock { fallback },
        ))
    }

    fn assemble(
        config: EngineConfig,
        (supervisor, pump, quiesce, telemetry): (
            ActorRef<SupervisorMsg>,
            ActorRef<PumpMsg>,
            Arc<Quiescence>,
            Arc<Telemetry>,
        ),
        driver: Driver,
        outputs: Outputs,
    ) -> Engine {
        let (fallback, device, reverse) = match outputs {
            Outputs::Device(manager, reverse) => (None, Some(manager), reverse),
            Outputs::Clock { fallback } => (fallback, None, ReverseSlot::new()),
        };
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
                links: std::sync::Mutex::new(Vec::new()),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// Moves of the renderer between outputs (SPEC D6), from now on. The
    /// stream ends at once when the engine plays no device. At most
    /// [`DEVICE_EVENT_QUEUE`] unread moves are kept; later ones are dropped.
    #[must_use]
    pub fn device_events(&self) -> mpsc::Receiver<DeviceEvent> {
        let (tx, rx) = mpsc::channel(DEVICE_EVENT_QUEUE);
        if let Some(manager) = &self.inner.device {
            let _ = manager.send_message(DeviceMsg::Subscribe(tx));
        }
        rx
    }

    /// The device the renderer plays through now; `None` when it runs on
    /// a clock (from the start or after a device failed).
    ///
    /// # Errors
    /// [`EngineError::Stopped`] after shutdown.
    pub async fn playing_device(&self) -> Result<Option<String>, EngineError> {
        let Some(manager) = &self.inner.device else {
            return Ok(None);
        };
        ractor::call!(manager, DeviceMsg::Playing).map_err(|_| EngineError::Stopped)
    }

    /// Fault injection for supervision tests: the event pump panics while
    /// handling a message.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] after shutdown.
    #[doc(hidden)]
    pub fn inject_pump_fault(&self) -> Result<(), EngineError> {
        send_pump(&self.inner.pump, &self.inner.quiesce, PumpMsg::Panic)
            .then_some(())
            .ok_or(EngineError::Stopped)
    }

    /// Fault injection for supervision tests: the device manager panics
    /// while handling a message.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] when no device manager runs;
    /// [`EngineError::Stopped`] after shutdown.
    #[doc(hidden)]
    pub fn inject_device_manager_fault(&self) -> Result<(), EngineError> {
        let Some(manager) = &self.inner.device else {
            return Err(EngineError::WrongClock("device"));
        };
        manager
            .send_message(DeviceMsg::Panic)
            .map_err(|_| EngineError::Stopped)
    }

    /// Fault injection for tests: the device stream reports an underrun
    /// (`underrun`, counted, nothing moves) or a failure, through the path
    /// the host's error callback takes.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] when no device is playing.
    pub async fn inject_device_fault(&self, underrun: bool) -> Result<(), EngineError> {
        let Some(manager) = &self.inner.device else {
            return Err(EngineError::WrongClock("device"));
        };
        match ractor::call!(manager, DeviceMsg::InjectFault, underrun) {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::WrongClock("device")),
            Err(_) => Err(EngineError::Stopped),
        }
    }

    /// Fault injection for tests: from now on the host's default output
    /// is `device` (`None`: what the host says). An engine that follows
    /// the default ([`Clock::Device`] with no name) moves to it.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] when no device is playing.
    pub fn inject_default_device(&self, device: Option<String>) -> Result<(), EngineError> {
        let Some(manager) = &self.inner.device else {
            return Err(EngineError::WrongClock("device"));
        };
        manager
            .send_message(DeviceMsg::InjectDefault(device))
            .map_err(|_| EngineError::Stopped)
    }

    /// Connects `session` to an avatar (SPEC O12, A2): its speech streams
    /// to the avatar, which publishes the voice, and the session's own
    /// output is silent until the link is detached or drops.
    ///
    /// # Errors
    /// [`EngineError::Avatar`] when the dispatcher refuses (an HTTP error,
    /// e.g. 401 for a bad token) or the connection cannot be made.
    pub async fn attach_avatar(
        &self,
        session: &SessionHandle,
        config: sotto_actors::avatar_link::LinkConfig,
    ) -> Result<crate::AvatarHandle, EngineError> {
        self.running()?;
        let handle = crate::AvatarHandle::attach(
            session,
            config,
            self.inner.config.sample_rate,
            self.inner.config.channels,
        )
        .await?;
        let link = handle.link().clone();
        if let Ok(mut links) = self.inner.links.lock() {
            links.retain(|l| {
                !matches!(l.get_status(), ActorStatus::Stopping | ActorStatus::Stopped)
            });
            links.push(link.clone());
        }
        // Shutdown may have taken the list between the check and the push.
        if self.inner.stopped.load(Ordering::Acquire) {
            link.stop(None);
            return Err(EngineError::Stopped);
        }
        Ok(handle)
    }

    fn running(&self) -> Result<(), EngineError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            Err(EngineError::Stopped)
        } else {
            Ok(())
        }
    }

    /// Opens a microphone (SPEC D3). With `echo`, its frames go through
    /// echo cancellation against exactly what this engine's output plays
    /// (SPEC D4), re-bound whenever the output moves; frames are then mono
    /// at 48 kHz.
    ///
    /// # Errors
    /// [`EngineError::Device`] naming the device and the reason.
    pub fn open_input(
        &self,
        config: &InputConfig,
        echo: Option<EchoConfig>,
    ) -> Result<DeviceInput, EngineError> {
        let input = match echo {
            None => DeviceInput::open(config),
            Some(echo) => {
                DeviceInput::open_with_echo(config, echo, Arc::clone(&self.inner.reverse))
            }
        };
        Ok(input?)
    }

    /// Why the engine runs on the virtual clock although a device was
    /// asked for, if it does.
    #[must_use]
    pub fn device_fallback(&self) -> Option<&str> {
        self.inner.fallback.as_deref()
    }

    /// The engine's config.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Renderer-wide counters: the sample clock, late blocks, dropped events.
    #[must_use]
    pub fn telemetry(&self) -> Arc<Telemetry> {
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
        let (tx, rx) = oneshot::channel();
        self.inner
            .supervisor
            .cast(SupervisorMsg::Create(config, tx))
            .map_err(|_| EngineError::Stopped)?;
        let shared = rx.await.map_err(|_| EngineError::Stopped)??;
        Ok(SessionHandle::new(shared))
    }

    /// A background source for `session` (SPEC B1–B7), stopped until
    /// [`BackgroundHandle::start`]. Its loader actor is supervised by the
    /// engine.
    ///
    /// # Errors
    /// [`EngineError::Background`] for a bad config; [`EngineError::Stopped`].
    pub async fn background(
        &self,
        session: &SessionHandle,
        config: BackgroundConfig,
    ) -> Result<BackgroundHandle, EngineError> {
        self.running()?;
        config.validate()?;
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
        let (tx, rx) = oneshot::channel();
        self.inner
            .supervisor
            .cast(SupervisorMsg::Remove(session.id(), tx))
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Renders `frames` frames on the offline clock and returns them
    /// (interleaved). Every message sent before the call is applied first.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] on the virtual clock; [`EngineError::Stuck`].
    pub async fn render(&self, frames: u64) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::with_capacity(frames as usize * self.inner.config.channels);
        self.render_into(frames, &mut out).await?;
        Ok(out)
    }

    /// Like [`Engine::render`], appending to `out`.
    ///
    /// # Errors
    /// As [`Engine::render`].
    pub async fn render_into(&self, frames: u64, out: &mut Vec<f32>) -> Result<(), EngineError> {
        let mut driver = self.inner.driver.lock().await;
        match &mut *driver {
            Driver::Offline(d) => Ok(d.render(frames, out).await?),
            Driver::Virtual { .. } | Driver::Device { .. } => {
                Err(EngineError::WrongClock("offline"))
            }
            Driver::Stopped => Err(EngineError::Stopped),
        }
    }

    /// Renders `d` of output on the offline clock.
    ///
    /// # Errors
    /// As [`Engine::render`].
    pub async fn render_for(&self, d: Duration) -> Result<Vec<f32>, EngineError> {
        self.render(sotto_actors::session::frames_of(
            d,
            self.inner.config.sample_rate,
        ))
        .await
    }

    /// Waits until every actor has handled every message sent so far.
    ///
    /// # Errors
    /// [`EngineError::Stuck`].
    pub async fn settle(&self) -> Result<(), EngineError> {
        Ok(self
            .inner
            .quiesce
            .settle(sotto_actors::driver::offline::SETTLE_LIMIT)
            .await?)
    }

    /// Starts a deferred virtual clock (see [`Clock::Virtual`]).
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] on the offline clock.
    pub async fn run_clock(&self) -> Result<(), EngineError> {
        match &*self.inner.driver.lock().await {
            Driver::Virtual { clock, .. } => {
                clock.run();
                Ok(())
            }
            Driver::Device { manager, .. } => {
                ractor::call!(manager, DeviceMsg::Run).map_err(|_| EngineError::Stopped)
            }
            Driver::Offline(_) => Err(EngineError::WrongClock("virtual")),
            Driver::Stopped => Err(EngineError::Stopped),
        }
    }

    /// Takes the output captured so far on the virtual clock.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] on the offline clock.
    pub async fn take_captured(&self) -> Result<Vec<f32>, EngineError> {
        let mut driver = self.inner.driver.lock().await;
        match &mut *driver {
            Driver::Virtual { capture, .. } => {
                let mut out = Vec::new();
                if let Some(rx) = capture {
                    let n = rx.slots();
                    if let Ok(chunk) = rx.read_chunk(n) {
                        let (a, b) = chunk.as_slices();
                        out.extend_from_slice(a);
                        out.extend_from_slice(b);
                        chunk.commit_all();
                    }
                }
                Ok(out)
            }
            Driver::Offline(_) | Driver::Device { .. } => Err(EngineError::WrongClock("virtual")),
            Driver::Stopped => Err(EngineError::Stopped),
        }
    }

    /// Stops everything, in order, within [`SHUTDOWN_LIMIT`]: the driver
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
            .cast(SupervisorMsg::Shutdown(left(), tx))
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

/// How long [`Engine::shutdown`] may take.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

fn spawn_ticker(
    pump: ActorRef<PumpMsg>,
    quiesce: Arc<Quiescence>,
    config: &EngineConfig,
) -> tokio::task::JoinHandle<()> {
    // Half a block: events reach sessions within a block of being raised.
    let half_block =
        Duration::from_secs_f64(config.block_frames as f64 / f64::from(config.sample_rate) / 2.0)
            .max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(half_block);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // One tick in the pump's mailbox at a time: a stalled pump
            // delays the ticks instead of piling them up.
            let (tx, rx) = oneshot::channel();
            if !send_pump(&pump, &quiesce, PumpMsg::Pump(Some(tx))) {
                break;
            }
            let _ = rx.await;
        }
    })
}

fn validate(c: &EngineConfig) -> Result<(), EngineError> {
    if !(8_000..=192_000).contains(&c.sample_rate) {
        return Err(EngineError::Config(format!(
            "sample rate {} Hz is outside 8000..=192000",
            c.sample_rate
        )));
    }
    if !(1..=8).contains(&c.channels) {
        return Err(EngineError::Config(format!(
            "{} channels is outside 1..=8",
            c.channels
        )));
    }
    if c.block_frames == 0 || c.block_frames > c.sample_rate as usize {
        return Err(EngineError::Config(format!(
            "block of {} frames must be within 1..=1 s",
            c.block_frames
        )));
    }
    if c.max_sessions == 0 || c.max_sessions > 65_536 {
        return Err(EngineError::Config(format!(
            "max_sessions {} is outside 1..=65536",
            c.max_sessions
        )));
    }
    Ok(())
}

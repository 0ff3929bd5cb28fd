//! The device manager (SPEC D2, D6): owns the output stream the renderer
//! plays through, and moves the renderer when the stream fails or the
//! default device changes.
//!
//! A failed stream hands the renderer back with everything queued; it runs
//! on the virtual clock while the manager keeps trying to reopen the
//! device, and moves back when it can. Underruns are counted by the stream
//! and move nothing. Every output the manager opens publishes its reverse
//! stream for echo cancellation, so an echo path re-binds by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sotto_rt::{Renderer, Telemetry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::capture::echo_link::ReverseSlot;
use crate::devices::{default_output_name, DeviceError};
use crate::driver::device::DeviceOutput;
use crate::driver::virtual_clock::VirtualClock;
use crate::restart::{contain, restarted};

/// How often the manager looks at the stream.
const WATCH_PERIOD: Duration = Duration::from_millis(10);
/// How often a lost device is retried.
const REOPEN_PERIOD: Duration = Duration::from_millis(200);
/// How often the host's default output is compared with the one playing.
const DEFAULT_PERIOD: Duration = Duration::from_millis(500);

/// A move of the renderer between outputs, from `Engine::device_events`:
/// a device failed, came back, or the host's default changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// The device stream failed; the renderer, with everything queued,
    /// now runs on the virtual clock.
    FellBack {
        /// What failed.
        reason: String,
    },
    /// The renderer is back on a device.
    Opened {
        /// The device.
        device: String,
    },
    /// The host's default output changed and the renderer followed it.
    Followed {
        /// The device it left.
        from: String,
        /// The new default.
        to: String,
    },
}

/// What the manager starts with.
pub struct DeviceManagerArgs {
    /// The stream the engine opened.
    pub output: DeviceOutput,
    /// The device asked for; `None` follows the host's default.
    pub name: Option<String>,
    /// The renderer's counters (a fallback clock reports into them).
    pub telemetry: Arc<Telemetry>,
    /// Block length of a fallback virtual clock.
    pub block_frames: usize,
    /// Where each opened output's reverse stream is published.
    pub reverse: Arc<ReverseSlot>,
}

/// Device moves a listener may leave unread before newer ones are dropped.
pub const DEVICE_EVENT_QUEUE: usize = 256;

/// Messages to the device manager.
#[derive(Debug)]
pub enum DeviceMsg {
    /// Look at the stream (sent by the manager's own timer).
    Watch,
    /// Send every later move to this listener.
    Subscribe(mpsc::Sender<DeviceEvent>),
    /// Start a deferred stream's rendering.
    Run(RpcReplyPort<()>),
    /// Fault injection: the stream reports an underrun (`true`) or a
    /// failure through its error path. Replies whether a device plays.
    #[cfg(feature = "fault-injection")]
    InjectFault(bool, RpcReplyPort<bool>),
    /// Fault injection: the host's default output is this device from now
    /// on (`None`: whatever the host says again).
    #[cfg(feature = "fault-injection")]
    InjectDefault(Option<String>),
    /// The device playing, `None` on the virtual clock.
    Playing(RpcReplyPort<Option<String>>),
    /// Close everything; the renderer is dropped.
    Stop(RpcReplyPort<()>),
    /// Fault injection for supervision tests: handling it panics.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// Where the renderer is.
enum Playing {
    Device(DeviceOutput),
    Virtual(VirtualClock),
    Stopped,
}

/// The manager's state.
pub struct DeviceManagerState {
    playing: Playing,
    name: Option<String>,
    telemetry: Arc<Telemetry>,
    block_frames: usize,
    reverse: Arc<ReverseSlot>,
    listeners: Vec<mpsc::Sender<DeviceEvent>>,
    default_override: Option<String>,
    last_try: Instant,
    last_default: Instant,
    timer: Option<JoinHandle<()>>,
}

/// The device manager actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceManager;

impl Actor for DeviceManager {
    type Msg = DeviceMsg;
    type State = DeviceManagerState;
    type Arguments = DeviceManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DeviceMsg>,
        mut args: DeviceManagerArgs,
    ) -> Result<DeviceManagerState, ActorProcessingErr> {
        args.reverse.publish(args.output.take_reverse());
        let timer = myself.send_interval(WATCH_PERIOD, || DeviceMsg::Watch);
        Ok(DeviceManagerState {
            playing: Playing::Device(args.output),
            name: args.name,
            telemetry: args.telemetry,
            block_frames: args.block_frames,
            reverse: args.reverse,
            listeners: Vec::new(),
            default_override: None,
            last_try: Instant::now(),
            last_default: Instant::now(),
            timer: Some(timer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<DeviceMsg>,
        state: &mut DeviceManagerState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<DeviceMsg>,
        msg: DeviceMsg,
        state: &mut DeviceManagerState,
    ) -> Result<(), ActorProcessingErr> {
        // The stream, the renderer inside it and the listeners outlive a
        // fault: restarting in place keeps the audio thread running.
        if let Err(why) = contain(async { state.handle(msg) }).await {
            restarted(&state.telemetry, "device manager", &why);
        }
        Ok(())
    }
}

impl DeviceManagerState {
    fn handle(&mut self, msg: DeviceMsg) {
        match msg {
            DeviceMsg::Watch => self.watch(),
            DeviceMsg::Subscribe(tx) => self.listeners.push(tx),
            DeviceMsg::Run(reply) => {
                match &self.playing {
                    Playing::Device(output) => output.run(),
                    Playing::Virtual(clock) => clock.run(),
                    Playing::Stopped => {}
                }
                let _ = reply.send(());
            }
            #[cfg(feature = "fault-injection")]
            DeviceMsg::InjectFault(underrun, reply) => {
                let playing = match &self.playing {
                    Playing::Device(output) => {
                        output.inject_error(underrun);
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(playing);
            }
            #[cfg(feature = "fault-injection")]
            DeviceMsg::InjectDefault(name) => {
                self.default_override = name;
                // Look at once rather than at the next period.
                self.last_default = Instant::now() - DEFAULT_PERIOD;
            }
            DeviceMsg::Playing(reply) => {
                let name = match &self.playing {
                    Playing::Device(output) => Some(output.name().to_owned()),
                    _ => None,
                };
                let _ = reply.send(name);
            }
            DeviceMsg::Stop(reply) => {
                self.stop();
                let _ = reply.send(());
            }
            #[cfg(feature = "fault-injection")]
            DeviceMsg::Panic => panic!("injected device manager fault"),
        }
    }
}

impl DeviceManagerState {
    fn watch(&mut self) {
        let event = match std::mem::replace(&mut self.playing, Playing::Stopped) {
            Playing::Device(output) if output.failed() => {
                let reason = format!("output device {} failed", output.name());
                self.last_try = Instant::now();
                self.fall_back(output.stop());
                Some(DeviceEvent::FellBack { reason })
            }
            Playing::Device(output) if self.default_moved(&output) => self.follow(output),
            Playing::Virtual(clock) if self.last_try.elapsed() >= REOPEN_PERIOD => {
                self.last_try = Instant::now();
                clock.stop().and_then(|r| self.reopen(r))
            }
            other => {
                self.playing = other;
                None
            }
        };
        if let Some(event) = event {
            tracing::warn!(?event, "device move");
            // A listener that stopped reading loses moves rather than
            // growing memory; one that went away is forgotten.
            self.listeners
                .retain(|tx| match tx.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!("device event listener full; event dropped");
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
        }
    }

    /// The device to open: the one asked for, else the default.
    fn target(&self) -> Option<String> {
        self.name.clone().or_else(|| self.default_override.clone())
    }

    /// Whether the renderer follows the default and the default is now
    /// another device (looked at every [`DEFAULT_PERIOD`]).
    fn default_moved(&mut self, output: &DeviceOutput) -> bool {
        if self.name.is_some() || self.last_default.elapsed() < DEFAULT_PERIOD {
            return false;
        }
        self.last_default = Instant::now();
        let now = self.default_override.clone().or_else(default_output_name);
        now.is_some_and(|d| d != output.name())
    }

    /// Moves from `output` to the default device.
    fn follow(&mut self, output: DeviceOutput) -> Option<DeviceEvent> {
        let from = output.name().to_owned();
        let renderer = output.stop()?;
        Some(match self.open_target(renderer) {
            Ok(to) => DeviceEvent::Followed { from, to },
            Err(e) => DeviceEvent::FellBack {
                reason: format!("the default output changed and cannot be opened: {e}"),
            },
        })
    }

    fn reopen(&mut self, renderer: Renderer) -> Option<DeviceEvent> {
        self.open_target(renderer)
            .ok()
            .map(|device| DeviceEvent::Opened { device })
    }

    /// Opens the target device with `renderer` and plays through it, or
    /// falls back to the virtual clock. Returns the device's name.
    fn open_target(&mut self, renderer: Renderer) -> Result<String, DeviceError> {
        let target = self.target();
        let t = Arc::clone(&self.telemetry);
        match DeviceOutput::open(renderer, t, target.as_deref(), false) {
            Ok(output) => {
                let name = output.name().to_owned();
                self.on_device(output);
                Ok(name)
            }
            Err((e, renderer)) => {
                self.last_try = Instant::now();
                self.fall_back(renderer.map(|r| *r));
                Err(e)
            }
        }
    }

    fn on_device(&mut self, mut output: DeviceOutput) {
        self.reverse.publish(output.take_reverse());
        self.playing = Playing::Device(output);
    }

    /// The renderer on a fresh virtual clock; stopped (and an error
    /// logged) when its thread cannot start.
    fn fall_back(&mut self, renderer: Option<Renderer>) {
        // Nothing reaches a speaker: no echo to cancel.
        self.reverse.publish(None);
        let Some(renderer) = renderer else {
            tracing::error!("the output stream kept the renderer");
            return;
        };
        match VirtualClock::start(
            renderer,
            Arc::clone(&self.telemetry),
            self.block_frames,
            None,
            false,
        ) {
            Ok(clock) => self.playing = Playing::Virtual(clock),
            Err(e) => tracing::error!(error = %e, "cannot start the virtual clock"),
        }
    }

    fn stop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        match std::mem::replace(&mut self.playing, Playing::Stopped) {
            Playing::Device(output) => drop(output.stop()),
            Playing::Virtual(clock) => drop(clock.stop()),
            Playing::Stopped => {}
        }
        self.reverse.publish(None);
    }
}

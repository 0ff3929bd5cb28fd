//! The renderer: the one function an audio thread calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::{
    Command, Doorbells, Event, EventKind, Output, OutputId, SampleTime, Saturation, SessionId,
    Telemetry, Voice,
};

/// Capacities and format of a renderer, fixed at construction.
#[derive(Debug, Clone)]
pub struct RendererConfig {
    /// Output sample rate in Hz.
    pub sample_rate: u32,
    /// Interleaved output channels.
    pub channels: usize,
    /// Largest internal block; longer device buffers are split into blocks of this size.
    pub max_block_frames: usize,
    /// Voice slots.
    pub max_sessions: usize,
    /// Output slots (SPEC C1): one per call is typical.
    pub max_outputs: usize,
    /// Renderer command ring size.
    pub command_capacity: usize,
    /// Event ring size.
    pub event_capacity: usize,
    /// How the master sum is kept inside full scale.
    pub saturation: Saturation,
}

impl Default for RendererConfig {
    fn default() -> Self {
        Self {
            sample_rate: 24_000,
            channels: 1,
            max_block_frames: 480,
            max_sessions: 64,
            max_outputs: 64,
            command_capacity: 256,
            event_capacity: 4096,
            saturation: Saturation::Hard,
        }
    }
}

/// Control-side failures of renderer operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RendererError {
    /// A capacity, rate or channel count is zero or out of range.
    InvalidConfig,
    /// The session id is outside the voice table.
    NoSuchSlot(SessionId),
    /// The output id is outside the output table.
    NoSuchOutput(OutputId),
    /// The voice's channel count differs from the renderer's.
    ChannelMismatch {
        /// The renderer's channels.
        renderer: usize,
        /// The voice's channels.
        voice: usize,
    },
    /// The command ring is full; try again after the next render.
    CommandRingFull,
}

impl std::fmt::Display for RendererError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidConfig => f.write_str("invalid renderer configuration"),
            Self::NoSuchSlot(id) => write!(f, "session slot {} is out of range", id.index()),
            Self::NoSuchOutput(id) => write!(f, "output slot {} is out of range", id.0),
            Self::ChannelMismatch { renderer, voice } => {
                write!(f, "voice has {voice} channels, renderer has {renderer}")
            }
            Self::CommandRingFull => f.write_str("renderer command ring is full"),
        }
    }
}

impl std::error::Error for RendererError {}

/// The control side's ends of a renderer.
#[derive(Debug)]
pub struct RendererControl {
    /// The renderer's format and capacities.
    pub config: RendererConfig,
    /// Commands, applied at the start of the next render call.
    pub command_tx: Producer<Command>,
    /// Events from the audio thread.
    pub event_rx: Consumer<Event>,
    /// Voices leaving the renderer, to be dropped here.
    pub retired_rx: Consumer<Box<Voice>>,
    /// Outputs leaving the renderer, to be dropped here.
    pub retired_outputs_rx: Consumer<Box<Output>>,
    /// Renderer-wide counters.
    pub telemetry: Arc<Telemetry>,
    /// Put these in each [`VoiceConfig`](crate::VoiceConfig) so the renderer
    /// only polls voices that have commands waiting.
    pub doorbells: Doorbells,
}

impl RendererControl {
    /// Sends `voice` to its slot. Control side.
    ///
    /// # Errors
    /// [`RendererError::NoSuchSlot`], [`RendererError::ChannelMismatch`] or
    /// [`RendererError::CommandRingFull`].
    pub fn add_voice(&mut self, voice: Box<Voice>) -> Result<(), RendererError> {
        if voice.session().index() >= self.config.max_sessions {
            return Err(RendererError::NoSuchSlot(voice.session()));
        }
        if voice.channels() != self.config.channels {
            return Err(RendererError::ChannelMismatch {
                renderer: self.config.channels,
                voice: voice.channels(),
            });
        }
        self.send(Command::AddVoice(voice))
    }

    /// Sends `output` to its slot. Control side.
    ///
    /// # Errors
    /// [`RendererError::NoSuchOutput`], [`RendererError::ChannelMismatch`]
    /// or [`RendererError::CommandRingFull`].
    pub fn add_output(&mut self, output: Box<Output>) -> Result<(), RendererError> {
        if output.id().index() >= self.config.max_outputs {
            return Err(RendererError::NoSuchOutput(output.id()));
        }
        if output.channels() != self.config.channels {
            return Err(RendererError::ChannelMismatch {
                renderer: self.config.channels,
                voice: output.channels(),
            });
        }
        self.send(Command::AddOutput(output))
    }

    /// Sends a command. Control side.
    ///
    /// # Errors
    /// [`RendererError::CommandRingFull`].
    pub fn send(&mut self, command: Command) -> Result<(), RendererError> {
        self.command_tx
            .push(command)
            .map_err(|_| RendererError::CommandRingFull)
    }

    /// Drops every voice the renderer has retired; returns how many.
    pub fn collect_retired(&mut self) -> usize {
        let mut n = 0;
        while self.retired_rx.pop().is_ok() {
            n += 1;
        }
        while self.retired_outputs_rx.pop().is_ok() {
            n += 1;
        }
        n
    }
}

/// Event output of one render call: counts what does not fit.
pub(crate) struct EventOut<'a> {
    tx: &'a mut Producer<Event>,
    dropped: &'a AtomicU64,
}

impl<'a> EventOut<'a> {
    /// An event output over `tx`, counting what does not fit in `dropped`.
    #[cfg(test)]
    pub(crate) fn new(tx: &'a mut Producer<Event>, dropped: &'a AtomicU64) -> Self {
        Self { tx, dropped }
    }

    pub(crate) fn push(
        &mut self,
        session: SessionId,
        generation: u32,
        at: SampleTime,
        kind: EventKind,
    ) {
        let event = Event {
            session,
            generation,
            at,
            kind,
        };
        if self.tx.push(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Returns heap objects to the control side through a ring; what does not
/// fit waits in a backlog sized up front, so the audio thread neither frees
/// nor allocates.
#[derive(Debug)]
struct Returns<T> {
    tx: Producer<Box<T>>,
    // Boxed on purpose: objects leave as the same allocation they came in.
    #[allow(clippy::vec_box)]
    backlog: Vec<Box<T>>,
}

impl<T> Returns<T> {
    fn new(capacity: usize) -> (Self, Consumer<Box<T>>) {
        let (tx, rx) = RingBuffer::new(capacity);
        let returns = Self {
            tx,
            backlog: Vec::with_capacity(capacity),
        };
        (returns, rx)
    }

    /// Sends `item` back, or keeps it for the next flush. Runs on the audio thread.
    fn send(&mut self, item: Box<T>) {
        if let Err(rtrb::PushError::Full(item)) = self.tx.push(item) {
            if self.backlog.len() < self.backlog.capacity() {
                self.backlog.push(item);
            } else {
                // Unreachable with the capacities chosen by the renderer;
                // leaking beats freeing on the audio thread.
                std::mem::forget(item);
            }
        }
    }

    /// Sends what waits; returns how much still does. Runs on the audio thread.
    fn flush(&mut self) -> usize {
        while let Some(item) = self.backlog.pop() {
            if let Err(rtrb::PushError::Full(item)) = self.tx.push(item) {
                self.backlog.push(item);
                break;
            }
        }
        self.backlog.len()
    }
}

/// Mixes every voice into the main output or its own output.
#[derive(Debug)]
pub struct Renderer {
    config: RendererConfig,
    command_rx: Consumer<Command>,
    event_tx: Producer<Event>,
    retired: Returns<Voice>,
    voices: Vec<Option<Box<Voice>>>,
    retired_outputs: Returns<Output>,
    outputs: Vec<Option<Box<Output>>>,
    /// Where a voice whose output is missing renders, so its state goes on.
    nowhere: Box<[f32]>,
    telemetry: Arc<Telemetry>,
    clock: SampleTime,
    saturation: Saturation,
    /// One block of work space shared by every voice, so it stays in cache.
    scratch: Box<[f32]>,
    doorbells: Doorbells,
}

impl Renderer {
    /// Builds a renderer and its control ends. Control side.
    ///
    /// # Errors
    /// [`RendererError::InvalidConfig`] when a size or the rate is zero.
    pub fn new(config: RendererConfig) -> Result<(RendererControl, Renderer), RendererError> {
        if config.sample_rate == 0
            || config.channels == 0
            || config.channels > 32
            || config.max_block_frames == 0
            || config.max_sessions == 0
            || config.max_outputs == 0
            || config.command_capacity == 0
            || config.event_capacity == 0
        {
            return Err(RendererError::InvalidConfig);
        }
        let (command_tx, command_rx) = RingBuffer::new(config.command_capacity);
        let (event_tx, event_rx) = RingBuffer::new(config.event_capacity);
        // Every command can retire at most one voice, and every slot can hold one.
        let retire_capacity = config.command_capacity + config.max_sessions;
        let (retired, retired_rx) = Returns::new(retire_capacity);
        let (retired_outputs, retired_outputs_rx) =
            Returns::new(config.command_capacity + config.max_outputs);
        let telemetry = Arc::new(Telemetry::default());
        let doorbells = Doorbells::new(config.max_sessions);
        let renderer = Renderer {
            command_rx,
            event_tx,
            retired,
            voices: (0..config.max_sessions).map(|_| None).collect(),
            retired_outputs,
            outputs: (0..config.max_outputs).map(|_| None).collect(),
            nowhere: vec![0.0; config.max_block_frames * config.channels].into_boxed_slice(),
            telemetry: Arc::clone(&telemetry),
            clock: SampleTime(0),
            saturation: config.saturation,
            // Speech and background work space for one block.
            scratch: vec![0.0; 2 * config.max_block_frames * config.channels].into_boxed_slice(),
            doorbells: doorbells.clone(),
            config: config.clone(),
        };
        let control = RendererControl {
            config,
            command_tx,
            event_rx,
            retired_rx,
            retired_outputs_rx,
            telemetry,
            doorbells,
        };
        Ok((control, renderer))
    }

    /// The renderer's format and capacities.
    #[must_use]
    pub fn config(&self) -> &RendererConfig {
        &self.config
    }

    /// Frames rendered so far.
    #[must_use]
    pub fn clock(&self) -> SampleTime {
        self.clock
    }

    /// Renders the next `out.len() / channels` frames, interleaved, of any
    /// length. Runs on the audio thread.
    pub fn render(&mut self, out: &mut [f32]) {
        let ch = self.config.channels;
        self.apply_commands();
        let block = self.config.max_block_frames * ch;
        let whole = out.len() - out.len() % ch;
        let (frames, rest) = out.split_at_mut(whole);
        rest.fill(0.0);
        let mut peak = 0.0f32;
        for chunk in frames.chunks_mut(block) {
            peak = peak.max(self.render_block(chunk));
        }
        self.flush_retiring();
        let t = &self.telemetry;
        t.clock_frames.store(self.clock.0, Ordering::Relaxed);
        t.blocks.fetch_add(1, Ordering::Relaxed);
        t.peak.store(peak, Ordering::Relaxed);
    }

    fn apply_commands(&mut self) {
        while let Ok(cmd) = self.command_rx.pop() {
            match cmd {
                Command::AddVoice(mut voice) => {
                    let slot = voice.session().index();
                    voice.belled = voice.rings(&self.doorbells);
                    // Commands queued before the voice arrived are seen now.
                    self.doorbells.ring(voice.session());
                    if let Some(place) = self.voices.get_mut(slot) {
                        if let Some(old) = place.replace(voice) {
                            self.retire(old);
                        }
                    } else {
                        self.retire(voice);
                    }
                }
                Command::RemoveVoice(session) => {
                    if let Some(old) = self.voices.get_mut(session.index()).and_then(Option::take) {
                        self.retire(old);
                    }
                }
                Command::AddOutput(output) => {
                    let slot = output.id().index();
                    if let Some(place) = self.outputs.get_mut(slot) {
                        if let Some(old) = place.replace(output) {
                            self.retired_outputs.send(old);
                        }
                    } else {
                        self.retired_outputs.send(output);
                    }
                }
                Command::RemoveOutput(id) => {
                    if let Some(old) = self.outputs.get_mut(id.index()).and_then(Option::take) {
                        self.retired_outputs.send(old);
                    }
                }
                Command::SetMasterSaturation(s) => self.saturation = s,
                #[cfg(feature = "fault-injection")]
                Command::Panic => panic!("injected renderer fault"),
            }
        }
    }

    fn retire(&mut self, voice: Box<Voice>) {
        let mut events = EventOut {
            tx: &mut self.event_tx,
            dropped: &self.telemetry.events_dropped,
        };
        events.push(
            voice.session(),
            voice.generation(),
            self.clock,
            EventKind::Retired,
        );
        self.retired.send(voice);
    }

    fn flush_retiring(&mut self) {
        let backlog = self.retired.flush() + self.retired_outputs.flush();
        self.telemetry
            .retire_backlog
            .store(backlog as u64, Ordering::Relaxed);
    }

    /// Renders one internal block; returns its peak.
    fn render_block(&mut self, out: &mut [f32]) -> f32 {
        out.fill(0.0);
        let ch = self.config.channels;
        let now = self.clock;
        let mut events = EventOut {
            tx: &mut self.event_tx,
            dropped: &self.telemetry.events_dropped,
        };
        let frames = out.len() / ch;
        for output in self.outputs.iter_mut().flatten() {
            output.begin(frames);
        }
        let mut bells = 0u64;
        for (i, slot) in self.voices.iter_mut().enumerate() {
            if i % 64 == 0 {
                bells = self.doorbells.take(i / 64);
            }
            let Some(voice) = slot else { continue };
            if !voice.belled || (bells >> (i % 64)) & 1 == 1 {
                voice.apply_commands(now, &mut events);
            }
            let target: &mut [f32] = match voice.output() {
                None => out,
                Some(id) => match self.outputs.get_mut(id.index()) {
                    Some(Some(output)) => output.block_mut(frames),
                    // Its output is gone or not there yet: the voice plays
                    // on, to nowhere (SPEC W6).
                    _ => {
                        let nowhere = &mut self.nowhere[..out.len()];
                        nowhere.fill(0.0);
                        nowhere
                    }
                },
            };
            voice.process(target, &mut self.scratch, now, &mut events);
        }
        for output in self.outputs.iter_mut().flatten() {
            output.finish(now, frames, out);
        }
        let peak = self.saturation.apply_all(out);
        self.clock = now.plus(frames as u64);
        peak
    }
}

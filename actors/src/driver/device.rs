//! The device driver (SPEC D1, D2): a cpal output stream whose callback runs
//! the one renderer, for any buffer size the device asks for.
//!
//! The renderer lives inside the callback. It comes back whole when the
//! stream is dropped — after an error, a stop or a move to another device —
//! because the callback's owner hands it to a return ring as it is dropped,
//! on the thread that drops the stream, never on the audio thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use rtrb::{Consumer, Producer, RingBuffer};
use sotto_rt::{Renderer, Telemetry};

use super::tap::{tap, TapReader, TapWriter};
use super::{audit, guarded_render};
use crate::echo::{EchoConfig, FRAME as ECHO_FRAME, RATE as ECHO_RATE};
use crate::echo_link::{EchoStats, EchoThread, ReverseSlot};

/// Largest device buffer converted in one piece for integer devices.
const CONVERT_FRAMES: usize = 4096;

/// How much rendered audio the reverse stream holds for echo
/// cancellation before the newest is dropped (nobody reading it).
const REVERSE_SECONDS: usize = 1;

/// Why a device cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No such device, or no default device (no sound card).
    #[error("no output device {0}")]
    NotFound(String),
    /// The device cannot play the renderer's format.
    #[error("device {device} cannot play {channels} channels at {rate} Hz as f32 or i16")]
    Unsupported {
        /// The device.
        device: String,
        /// Output rate.
        rate: u32,
        /// Output channels.
        channels: usize,
    },
    /// Echo processing cannot run as asked.
    #[error("echo processing: {0}")]
    Echo(String),
    /// The host refused the stream.
    #[error("device {device}: {reason}")]
    Stream {
        /// The device.
        device: String,
        /// What the host said.
        reason: String,
    },
}

/// One audio device as the host reports it (SPEC D1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Position in the list.
    pub index: usize,
    /// The name to open it by (the host's id, e.g. ALSA's `default`).
    pub name: String,
    /// What the host calls it.
    pub description: String,
    /// Channel counts it offers for output (empty: not an output).
    pub output_channels: Vec<u16>,
    /// Channel counts it offers for input (empty: not an input).
    pub input_channels: Vec<u16>,
    /// Lowest and highest sample rate offered, if any.
    pub rates: Option<(u32, u32)>,
    /// The host's default output.
    pub default_output: bool,
    /// The host's default input.
    pub default_input: bool,
}

/// Every device of the default host, with the defaults marked.
///
/// # Errors
/// [`DeviceError::Stream`] when the host cannot enumerate.
pub fn devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = cpal::default_host();
    let default_out = host.default_output_device().map(|d| name_of(&d));
    let default_in = host.default_input_device().map(|d| name_of(&d));
    let list = host.devices().map_err(|e| DeviceError::Stream {
        device: "host".into(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (index, d) in list.enumerate() {
        let name = name_of(&d);
        let description = d.to_string();
        let mut rates: Option<(u32, u32)> = None;
        let mut widen = |lo: u32, hi: u32| {
            rates = Some(rates.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        };
        let mut output_channels = Vec::new();
        if let Ok(configs) = d.supported_output_configs() {
            for c in configs {
                widen(c.min_sample_rate(), c.max_sample_rate());
                output_channels.push(c.channels());
            }
        }
        let mut input_channels = Vec::new();
        if let Ok(configs) = d.supported_input_configs() {
            for c in configs {
                widen(c.min_sample_rate(), c.max_sample_rate());
                input_channels.push(c.channels());
            }
        }
        for list in [&mut output_channels, &mut input_channels] {
            list.sort_unstable();
            list.dedup();
        }
        out.push(DeviceInfo {
            index,
            default_output: default_out.as_deref() == Some(name.as_str()),
            default_input: default_in.as_deref() == Some(name.as_str()),
            name,
            description,
            output_channels,
            input_channels,
            rates,
        });
    }
    Ok(out)
}

/// The name of the host's default output device, if there is one.
#[must_use]
pub fn default_output_name() -> Option<String> {
    cpal::default_host()
        .default_output_device()
        .map(|d| name_of(&d))
}

/// The id a device is opened by.
fn name_of(d: &cpal::Device) -> String {
    d.id()
        .map_or_else(|_| d.to_string(), |id| id.id().to_owned())
}

/// Owns the renderer inside the callback; gives it back when dropped.
struct Holder {
    renderer: Option<Renderer>,
    back: Producer<Renderer>,
    telemetry: Arc<Telemetry>,
    running: Arc<AtomicBool>,
    scratch: Box<[f32]>,
    /// What was rendered, in mono, for echo cancellation (SPEC D4).
    reverse: TapWriter,
    channels: usize,
}

impl Holder {
    /// The whole f32 callback, audited.
    fn callback(&mut self, out: &mut [f32], latency: Option<std::time::Duration>) {
        // Borrowed field by field: the audit reads the counters while the
        // body renders, with no reference count touched on the audio thread.
        let Self {
            renderer,
            telemetry,
            running,
            reverse,
            channels,
            ..
        } = self;
        audit(&telemetry.alloc_violations, || {
            match renderer.as_mut() {
                Some(r) if running.load(Ordering::Acquire) => guarded_render(r, out, telemetry),
                _ => out.fill(0.0),
            }
            reverse.push_mono(out, *channels);
            reverse.set_latency(latency);
        });
    }

    /// The whole i16 callback, audited.
    fn callback_i16(&mut self, out: &mut [i16], latency: Option<std::time::Duration>) {
        let Self {
            renderer,
            telemetry,
            running,
            scratch,
            reverse,
            channels,
            ..
        } = self;
        audit(&telemetry.alloc_violations, || {
            match renderer.as_mut() {
                Some(r) if running.load(Ordering::Acquire) => {
                    render_i16(r, telemetry, scratch, out, Some((reverse, *channels)));
                }
                _ => {
                    out.fill(0);
                    // Silence reached the speaker too.
                    reverse.push_silence(out.len() / (*channels).max(1));
                }
            }
            reverse.set_latency(latency);
        });
    }
}

/// Time from this callback to its audio reaching the speaker.
fn output_latency(info: &cpal::OutputCallbackInfo) -> Option<std::time::Duration> {
    let t = info.timestamp();
    t.playback.checked_duration_since(t.callback)
}

/// What the callback of an i16 device does: renders through `scratch`
/// (preallocated, any length), copies the mono mix to `reverse` and
/// converts. Runs on the audio thread.
pub fn render_i16(
    renderer: &mut Renderer,
    telemetry: &Telemetry,
    scratch: &mut [f32],
    out: &mut [i16],
    mut reverse: Option<(&mut TapWriter, usize)>,
) {
    for piece in out.chunks_mut(scratch.len().max(1)) {
        let buf = &mut scratch[..piece.len()];
        guarded_render(renderer, buf, telemetry);
        if let Some((tap, channels)) = reverse.as_mut() {
            tap.push_mono(buf, *channels);
        }
        for (o, s) in piece.iter_mut().zip(buf.iter()) {
            *o = to_i16(*s);
        }
    }
}

/// A sample in 16 bits, rounded to nearest (ties to even). Adding and
/// taking away 1.5 * 2^23 rounds in the FPU's own mode, so the loop
/// vectorises where `f32::round` would be a library call per sample.
#[inline]
fn to_i16(s: f32) -> i16 {
    const MAGIC: f32 = 12_582_912.0;
    let x = (s * 32768.0).clamp(-32768.0, 32767.0);
    ((x + MAGIC) - MAGIC) as i16
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(r) = self.renderer.take() {
            // The ring has room for exactly this one renderer.
            let _ = self.back.push(r);
        }
    }
}

/// A running output stream on a device.
pub struct DeviceOutput {
    stream: Option<cpal::Stream>,
    back: Consumer<Renderer>,
    reverse: Option<TapReader>,
    running: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    faults: Faults,
    name: String,
    rate: u32,
}

/// Where a stream's errors go (SPEC D6): an underrun is counted and the
/// stream goes on; anything else marks the stream failed, for its owner
/// to move the renderer elsewhere.
#[derive(Clone)]
struct Faults {
    errors: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
}

impl Faults {
    fn report(&self, e: &cpal::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        // A glitch, a move, or no real-time scheduling for the host's audio
        // thread: the stream plays on.
        if !matches!(
            e.kind(),
            cpal::ErrorKind::Xrun
                | cpal::ErrorKind::DeviceChanged
                | cpal::ErrorKind::RealtimeDenied
        ) {
            self.failed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for DeviceOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceOutput")
            .field("name", &self.name)
            .field("rate", &self.rate)
            .field("errors", &self.errors.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DeviceOutput {
    /// Opens `device` (the default output when `None`) at the renderer's
    /// rate and channels and runs the renderer in its callback. With
    /// `deferred`, the callback plays silence until [`DeviceOutput::run`].
    ///
    /// # Errors
    /// The reason, with the renderer given back untouched (`None` only if
    /// the host kept the callback it refused, which no host does).
    pub fn open(
        renderer: Renderer,
        telemetry: Arc<Telemetry>,
        device: Option<&str>,
        deferred: bool,
    ) -> Result<Self, (DeviceError, Option<Box<Renderer>>)> {
        let host = cpal::default_host();
        let found = match device {
            None => host.default_output_device(),
            Some(name) => host
                .output_devices()
                .ok()
                .and_then(|mut list| list.find(|d| name_of(d) == name)),
        };
        let Some(dev) = found else {
            let what = device.unwrap_or("(default)").to_owned();
            return Err((DeviceError::NotFound(what), Some(Box::new(renderer))));
        };
        let name = name_of(&dev);
        let rate = renderer.config().sample_rate;
        let channels = renderer.config().channels;
        let format = match pick_format(&dev, rate, channels) {
            Some(f) => f,
            None => {
                let e = DeviceError::Unsupported {
                    device: name,
                    rate,
                    channels,
                };
                return Err((e, Some(Box::new(renderer))));
            }
        };
        let config = cpal::StreamConfig {
            channels: channels as u16,
            sample_rate: rate,
            buffer_size: cpal::BufferSize::Default,
        };
        let (back_tx, back) = RingBuffer::new(1);
        let (reverse_tx, reverse) = tap(rate, 1, rate as usize * REVERSE_SECONDS);
        let running = Arc::new(AtomicBool::new(!deferred));
        let errors = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let mut holder = Holder {
            renderer: Some(renderer),
            back: back_tx,
            telemetry,
            running: Arc::clone(&running),
            scratch: vec![0.0; CONVERT_FRAMES * channels].into_boxed_slice(),
            reverse: reverse_tx,
            channels,
        };
        let faults = Faults {
            errors: Arc::clone(&errors),
            failed: Arc::clone(&failed),
        };
        let on_error = {
            let faults = faults.clone();
            // Runs on the host's thread, not the audio callback.
            move |e: cpal::Error| faults.report(&e)
        };
        let built = match format {
            cpal::SampleFormat::F32 => dev.build_output_stream::<f32, _, _>(
                config,
                move |data, info| holder.callback(data, output_latency(info)),
                on_error,
                None,
            ),
            _ => dev.build_output_stream::<i16, _, _>(
                config,
                move |data, info| holder.callback_i16(data, output_latency(info)),
                on_error,
                None,
            ),
        };
        let mut out = Self {
            stream: None,
            back,
            reverse: Some(reverse),
            running,
            errors,
            faults,
            name: name.clone(),
            rate,
        };
        let stream = match built {
            Ok(s) => s,
            Err(e) => {
                let err = DeviceError::Stream {
                    device: name,
                    reason: e.to_string(),
                };
                // The failed build dropped the callback: the renderer is back.
                return Err((err, out.back.pop().ok().map(Box::new)));
            }
        };
        if let Err(e) = stream.play() {
            let err = DeviceError::Stream {
                device: name,
                reason: e.to_string(),
            };
            drop(stream);
            return Err((err, out.back.pop().ok().map(Box::new)));
        }
        out.stream = Some(stream);
        Ok(out)
    }

    /// Starts a deferred stream's rendering; the sample clock starts here.
    pub fn run(&self) {
        self.running.store(true, Ordering::Release);
    }

    /// The device's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reverse stream: exactly what this stream rendered, mixed to
    /// mono at the output rate, with callback times and the output
    /// latency (SPEC D4). Once; `None` afterwards.
    pub fn take_reverse(&mut self) -> Option<TapReader> {
        self.reverse.take()
    }

    /// Errors the host reported on this stream.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether the stream failed (an error other than an underrun): its
    /// renderer should move to another stream or the virtual clock.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.faults.failed.load(Ordering::Acquire)
    }

    /// Fault injection for tests: reports an underrun (`underrun`) or a
    /// stream that stopped working through the same path as the host's
    /// error callback.
    pub fn inject_error(&self, underrun: bool) {
        let kind = if underrun {
            cpal::ErrorKind::Xrun
        } else {
            cpal::ErrorKind::StreamInvalidated
        };
        self.faults.report(&cpal::Error::new(kind));
    }

    /// Closes the stream and gives the renderer back, with everything it
    /// had queued.
    #[must_use]
    pub fn stop(mut self) -> Option<Renderer> {
        self.stream.take();
        self.back.pop().ok()
    }
}

/// The sample format to open the device with: f32 if it takes the
/// renderer's rate and channels that way, else i16.
fn pick_format(dev: &cpal::Device, rate: u32, channels: usize) -> Option<cpal::SampleFormat> {
    let configs: Vec<_> = dev.supported_output_configs().ok()?.collect();
    let fits = |f: cpal::SampleFormat| {
        configs.iter().any(|c| {
            usize::from(c.channels()) == channels
                && c.min_sample_rate() <= rate
                && rate <= c.max_sample_rate()
                && c.sample_format() == f
        })
    };
    [cpal::SampleFormat::F32, cpal::SampleFormat::I16]
        .into_iter()
        .find(|&f| fits(f))
}

/// How an input stream is opened (SPEC D3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputConfig {
    /// The device's name; `None`: the default input.
    pub device: Option<String>,
    /// Capture rate in Hz.
    pub sample_rate: u32,
    /// Capture channels.
    pub channels: usize,
    /// Frames of 10 ms the queue holds before the newest are dropped.
    pub queue_frames: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            device: None,
            sample_rate: 48_000,
            channels: 1,
            queue_frames: 50,
        }
    }
}

/// 10 ms of captured audio.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFrame {
    /// Position among the frames delivered (drops are counted apart, in
    /// [`DeviceInput::dropped_frames`]).
    pub index: u64,
    /// Interleaved samples, `rate / 100 * channels` of them (mono at
    /// 48 kHz after echo processing).
    pub samples: Vec<f32>,
}

/// A running input stream: 10 ms frames through a bounded queue, cleaned
/// by the echo processing path when opened with one.
pub struct DeviceInput {
    _stream: cpal::Stream,
    source: Source,
    frame_len: usize,
    next: u64,
    counters: Counters,
    name: String,
}

/// Where the frames come from.
enum Source {
    /// Straight from the capture callback's ring.
    Raw(TapReader),
    /// From the echo thread, which reads the capture ring.
    Echo(Consumer<f32>, EchoThread),
}

impl std::fmt::Debug for DeviceInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInput")
            .field("name", &self.name)
            .field("echo", &matches!(self.source, Source::Echo(..)))
            .field("dropped_frames", &self.dropped_frames())
            .finish_non_exhaustive()
    }
}

impl DeviceInput {
    /// Opens an input stream delivering the device's frames as they are.
    ///
    /// # Errors
    /// [`DeviceError`] naming the device and the reason.
    pub fn open(config: &InputConfig) -> Result<Self, DeviceError> {
        let (stream, reader, name, counters) = open_capture(config)?;
        let frame_len = (config.sample_rate as usize / 100) * config.channels.max(1);
        Ok(Self {
            _stream: stream,
            source: Source::Raw(reader),
            frame_len,
            next: 0,
            counters,
            name,
        })
    }

    /// Opens an input stream whose frames go through echo cancellation
    /// and the other stages of `echo` (SPEC D4) on a processing thread,
    /// against the reverse stream of whichever output `reverse` holds.
    /// Frames come out mono at 48 kHz; the capture must run at 48 kHz.
    ///
    /// # Errors
    /// [`DeviceError`] naming the device and the reason, or
    /// [`DeviceError::Echo`] when the processing cannot start.
    pub fn open_with_echo(
        config: &InputConfig,
        echo: EchoConfig,
        reverse: Arc<ReverseSlot>,
    ) -> Result<Self, DeviceError> {
        if config.sample_rate != ECHO_RATE {
            return Err(DeviceError::Echo(format!(
                "echo processing runs at {ECHO_RATE} Hz; the input asks for {} Hz",
                config.sample_rate
            )));
        }
        let (stream, reader, name, counters) = open_capture(config)?;
        let (tx, rx) = RingBuffer::new(ECHO_FRAME * config.queue_frames.max(1));
        let thread = EchoThread::spawn(reader, echo, reverse, tx)
            .map_err(|e| DeviceError::Echo(e.to_string()))?;
        Ok(Self {
            _stream: stream,
            source: Source::Echo(rx, thread),
            frame_len: ECHO_FRAME,
            next: 0,
            counters,
            name,
        })
    }

    /// The next 10 ms frame, waiting for it.
    pub async fn next_frame(&mut self) -> InputFrame {
        loop {
            if let Some(f) = self.try_frame() {
                return f;
            }
            // The callback cannot wake a task (SPEC R1): poll at a fifth
            // of a frame.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// The next 10 ms frame if one is queued.
    pub fn try_frame(&mut self) -> Option<InputFrame> {
        let rx = match &mut self.source {
            Source::Raw(reader) => &mut reader.samples,
            Source::Echo(rx, _) => rx,
        };
        let chunk = rx.read_chunk(self.frame_len).ok()?;
        let (a, b) = chunk.as_slices();
        let mut samples = Vec::with_capacity(self.frame_len);
        samples.extend_from_slice(a);
        samples.extend_from_slice(b);
        chunk.commit_all();
        let index = self.next;
        self.next += 1;
        Some(InputFrame { index, samples })
    }

    /// 10 ms frames dropped because the consumer lagged.
    #[must_use]
    pub fn dropped_frames(&self) -> u64 {
        match &self.source {
            Source::Raw(reader) => reader.dropped() / self.frame_len as u64,
            Source::Echo(_, thread) => thread.stats().dropped_frames(),
        }
    }

    /// What the echo processing has done so far, when it runs.
    #[must_use]
    pub fn echo_stats(&self) -> Option<&EchoStats> {
        match &self.source {
            Source::Raw(_) => None,
            Source::Echo(_, thread) => Some(thread.stats()),
        }
    }

    /// Errors the host reported on this stream.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.counters.errors.load(Ordering::Relaxed)
    }

    /// Allocations or frees inside the capture callback (counted with
    /// feature `rt-audit`; SPEC R1 says zero).
    #[must_use]
    pub fn alloc_violations(&self) -> u64 {
        self.counters.violations.load(Ordering::Relaxed)
    }

    /// The device's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A capture stream whose callback writes into a tap: samples, callback
/// times and the input latency.
fn open_capture(
    config: &InputConfig,
) -> Result<(cpal::Stream, TapReader, String, Counters), DeviceError> {
    let host = cpal::default_host();
    let found = match &config.device {
        None => host.default_input_device(),
        Some(name) => host
            .input_devices()
            .ok()
            .and_then(|mut list| list.find(|d| &name_of(d) == name)),
    };
    let Some(dev) = found else {
        let what = config.device.clone().unwrap_or_else(|| "(default)".into());
        return Err(DeviceError::NotFound(what));
    };
    let name = name_of(&dev);
    let (rate, channels) = (config.sample_rate, config.channels.max(1));
    let frame_len = (rate as usize / 100) * channels;
    let unsupported = || DeviceError::Unsupported {
        device: name.clone(),
        rate,
        channels,
    };
    if frame_len == 0 {
        return Err(unsupported());
    }
    let configs: Vec<_> = dev
        .supported_input_configs()
        .map(Iterator::collect)
        .unwrap_or_default();
    let fits = |f: cpal::SampleFormat| {
        configs.iter().any(|c: &cpal::SupportedStreamConfigRange| {
            usize::from(c.channels()) == channels
                && c.min_sample_rate() <= rate
                && rate <= c.max_sample_rate()
                && c.sample_format() == f
        })
    };
    let Some(format) = [cpal::SampleFormat::F32, cpal::SampleFormat::I16]
        .into_iter()
        .find(|&f| fits(f))
    else {
        return Err(unsupported());
    };
    let (mut tx, reader) = tap(rate, channels, frame_len * config.queue_frames.max(1));
    let stream_config = cpal::StreamConfig {
        channels: channels as u16,
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Default,
    };
    let errors = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let audited = Arc::clone(&violations);
    let on_error = {
        let errors = Arc::clone(&errors);
        move |_e: cpal::Error| {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    // Both callbacks only move samples and times into the tap: when it is
    // full, the newest samples are dropped and counted.
    let built = match format {
        cpal::SampleFormat::F32 => dev.build_input_stream::<f32, _, _>(
            stream_config,
            move |data: &[f32], info| {
                audit(&audited, || {
                    tx.push(data);
                    tx.set_latency(input_latency(info));
                });
            },
            on_error,
            None,
        ),
        _ => dev.build_input_stream::<i16, _, _>(
            stream_config,
            move |data: &[i16], info| {
                audit(&audited, || {
                    tx.push_i16(data);
                    tx.set_latency(input_latency(info));
                });
            },
            on_error,
            None,
        ),
    };
    let stream = built.map_err(|e| DeviceError::Stream {
        device: name.clone(),
        reason: e.to_string(),
    })?;
    stream.play().map_err(|e| DeviceError::Stream {
        device: name.clone(),
        reason: e.to_string(),
    })?;
    Ok((stream, reader, name, Counters { errors, violations }))
}

/// What an input stream's callbacks count.
struct Counters {
    errors: Arc<AtomicU64>,
    violations: Arc<AtomicU64>,
}

/// Time from the audio reaching the microphone to this callback.
fn input_latency(info: &cpal::InputCallbackInfo) -> Option<std::time::Duration> {
    let t = info.timestamp();
    t.callback.checked_duration_since(t.capture)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use rtrb::RingBuffer;
    use sotto_rt::{Renderer, RendererConfig, Saturation, SessionId, Voice, VoiceConfig};

    use super::{tap, to_i16, Holder};

    /// The reverse stream is exactly what the callback rendered, mixed to
    /// mono (SPEC D4), for f32 and i16 devices, whatever the buffer size.
    #[test]
    fn the_reverse_stream_is_what_was_rendered() {
        let (mut control, renderer) = Renderer::new(RendererConfig {
            sample_rate: 48_000,
            channels: 2,
            max_block_frames: 480,
            max_sessions: 1,
            command_capacity: 8,
            event_capacity: 64,
            saturation: Saturation::Hard,
        })
        .unwrap();
        let (mut voice_control, voice) = Voice::new(&VoiceConfig {
            session: SessionId(0),
            generation: 0,
            channels: 2,
            speech_capacity_frames: 48_000,
            background_capacity_frames: 480,
            command_capacity: 8,
            fade_frames: 480,
            grace_frames: 4_800,
            pause_ramp_frames: 48,
            duck: None,
            background_gain: 1.0,
            gain_ramp_frames: 48,
            saturation: Saturation::Hard,
            doorbells: Some(control.doorbells.clone()),
        });
        control.add_voice(Box::new(voice)).unwrap();
        let speech: Vec<f32> = (0..40_000)
            .map(|i| ((i as f32) * 0.01).sin() * 0.5 * if i % 2 == 0 { 1.0 } else { 0.3 })
            .collect();
        let _ = voice_control.speech_tx.push_partial_slice(&speech);
        let (back, _back_rx) = RingBuffer::new(1);
        let (reverse, mut reader) = tap(48_000, 1, 48_000);
        let mut holder = Holder {
            renderer: Some(renderer),
            back,
            telemetry: Arc::clone(&control.telemetry),
            running: Arc::new(AtomicBool::new(true)),
            scratch: vec![0.0; 512].into_boxed_slice(),
            reverse,
            channels: 2,
        };
        // What the device got, with how far the tap may differ from it:
        // nothing for f32, the 16-bit rounding for i16.
        let mut rendered = Vec::new();
        let mut tolerance = Vec::new();
        for (k, frames) in [441usize, 1024, 37, 2048, 600].into_iter().enumerate() {
            if k % 2 == 0 {
                let mut out = vec![0.0f32; frames * 2];
                holder.callback(&mut out, None);
                rendered.extend_from_slice(&out);
                tolerance.extend(std::iter::repeat_n(0.0, frames));
            } else {
                let mut out = vec![0i16; frames * 2];
                holder.callback_i16(&mut out, None);
                rendered.extend(out.iter().map(|&v| f32::from(v) / 32768.0));
                tolerance.extend(std::iter::repeat_n(1.0 / 32768.0, frames));
            }
        }
        let mut tapped = Vec::new();
        let mut consumed = 0;
        reader.drain(&mut consumed, |s, _| tapped.extend_from_slice(s));
        assert_eq!(tapped.len(), rendered.len() / 2);
        for (i, (t, f)) in tapped.iter().zip(rendered.chunks_exact(2)).enumerate() {
            let mono = (f[0] + f[1]) * 0.5;
            assert!((t - mono).abs() <= tolerance[i], "frame {i}: {t} vs {mono}");
        }
        assert!(
            tapped.iter().any(|&v| v.abs() > 0.1),
            "nothing was rendered"
        );
    }

    #[test]
    fn samples_round_to_nearest_16_bit_values() {
        assert_eq!(to_i16(0.0), 0);
        assert_eq!(to_i16(1.0), 32767);
        assert_eq!(to_i16(-1.0), -32768);
        assert_eq!(to_i16(2.0), 32767);
        assert_eq!(to_i16(f32::NAN), 0);
        for k in -32768i32..=32767 {
            let v = k as f32 / 32768.0;
            assert_eq!(i32::from(to_i16(v)), k);
            // Just off a step rounds back to it.
            assert_eq!(i32::from(to_i16(v + 0.3 / 32768.0)), k);
        }
    }
}

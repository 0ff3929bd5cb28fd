//! Microphone capture (SPEC D3): a cpal input stream cut into 10 ms
//! chunks behind a bounded queue, optionally through the live echo path.
//! The stream's callback only writes into a ring (the tap); everything
//! else runs off it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use rtrb::{Consumer, RingBuffer};

use crate::capture::echo_link::{EchoStats, EchoThread, ReverseSlot};
use crate::capture::tap::{tap, TapReader};
use crate::devices::{name_of, DeviceError};
use crate::driver::audit;
use sotto_media::echo::{EchoConfig, CHUNK as ECHO_CHUNK, RATE as ECHO_RATE};

/// What to pass to `Engine::open_input` or `DeviceInput::open`: which
/// microphone, at what rate and channels (SPEC D3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputConfig {
    /// The device's name; `None`: the default input.
    pub device: Option<String>,
    /// Capture rate in Hz.
    pub sample_rate: u32,
    /// Capture channels.
    pub channels: usize,
    /// Chunks of 10 ms the queue holds before the newest are dropped.
    pub queue_chunks: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            device: None,
            sample_rate: 48_000,
            channels: 1,
            queue_chunks: 50,
        }
    }
}

/// 10 ms of a microphone's audio, as `DeviceInput::next_chunk` hands it
/// to the application (for speech recognition, say).
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureChunk {
    /// Position among the chunks delivered (drops are counted apart, in
    /// `DeviceInput::dropped_chunks`).
    pub index: u64,
    /// Interleaved samples, `rate / 100 * channels` of them (mono at
    /// 48 kHz after echo processing).
    pub samples: Vec<f32>,
}

/// A running input stream: 10 ms chunks through a bounded queue, cleaned
/// by the echo processing path when opened with one.
pub struct DeviceInput {
    _stream: cpal::Stream,
    source: Source,
    chunk_len: usize,
    next: u64,
    counters: Counters,
    name: String,
}

/// Where the chunks come from.
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
            .field("dropped_chunks", &self.dropped_chunks())
            .finish_non_exhaustive()
    }
}

impl DeviceInput {
    /// Opens an input stream delivering the device's chunks as they are.
    ///
    /// # Errors
    /// [`DeviceError`] naming the device and the reason.
    pub fn open(config: &InputConfig) -> Result<Self, DeviceError> {
        let (stream, reader, name, counters) = open_capture(config)?;
        let chunk_len = (config.sample_rate as usize / 100) * config.channels.max(1);
        Ok(Self {
            _stream: stream,
            source: Source::Raw(reader),
            chunk_len,
            next: 0,
            counters,
            name,
        })
    }

    /// Opens an input stream whose chunks go through echo cancellation
    /// and the other stages of `echo` (SPEC D4) on a processing thread,
    /// against the reverse stream of whichever output `reverse` holds.
    /// Chunks come out mono at 48 kHz; the capture must run at 48 kHz.
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
        let (tx, rx) = RingBuffer::new(ECHO_CHUNK * config.queue_chunks.max(1));
        let thread = EchoThread::spawn(reader, echo, reverse, tx)
            .map_err(|e| DeviceError::Echo(e.to_string()))?;
        Ok(Self {
            _stream: stream,
            source: Source::Echo(rx, thread),
            chunk_len: ECHO_CHUNK,
            next: 0,
            counters,
            name,
        })
    }

    /// The next 10 ms chunk, waiting for it.
    pub async fn next_chunk(&mut self) -> CaptureChunk {
        loop {
            if let Some(f) = self.try_chunk() {
                return f;
            }
            // The callback cannot wake a task (SPEC R1): poll at a fifth
            // of a chunk.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// The next 10 ms chunk if one is queued.
    pub fn try_chunk(&mut self) -> Option<CaptureChunk> {
        let rx = match &mut self.source {
            Source::Raw(reader) => &mut reader.samples,
            Source::Echo(rx, _) => rx,
        };
        let chunk = rx.read_chunk(self.chunk_len).ok()?;
        let (a, b) = chunk.as_slices();
        let mut samples = Vec::with_capacity(self.chunk_len);
        samples.extend_from_slice(a);
        samples.extend_from_slice(b);
        chunk.commit_all();
        let index = self.next;
        self.next += 1;
        Some(CaptureChunk { index, samples })
    }

    /// 10 ms chunks dropped because the consumer lagged.
    #[must_use]
    pub fn dropped_chunks(&self) -> u64 {
        match &self.source {
            Source::Raw(reader) => reader.dropped() / self.chunk_len as u64,
            Source::Echo(_, thread) => thread.stats().dropped_chunks(),
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
    let chunk_len = (rate as usize / 100) * channels;
    let unsupported = || DeviceError::Unsupported {
        device: name.clone(),
        rate,
        channels,
    };
    if chunk_len == 0 {
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
    let (mut tx, reader) = tap(rate, channels, chunk_len * config.queue_chunks.max(1));
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

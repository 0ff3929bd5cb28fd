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

use crate::capture::tap::{tap, TapReader, TapWriter};
use crate::devices::{name_of, pick_format, DeviceError};
use crate::driver::{audit, guarded_render};

/// Largest device buffer converted in one piece for integer devices.
const CONVERT_FRAMES: usize = 4096;

/// How much rendered audio the reverse stream holds for echo
/// cancellation before the newest is dropped (nobody reading it).
const REVERSE_SECONDS: usize = 1;

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
        super::lock_code_in_memory();
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
    #[cfg(feature = "fault-injection")]
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use rtrb::RingBuffer;
    use sotto_rt::{FromSlot, Renderer, RendererConfig, Saturation, SessionId, Voice, VoiceConfig};

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
            max_outputs: 1,
            command_capacity: 8,
            event_capacity: 64,
            saturation: Saturation::Hard,
        })
        .unwrap();
        let (mut voice_control, voice) = Voice::new(&VoiceConfig {
            session: SessionId::from_slot(0),
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
            output: None,
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

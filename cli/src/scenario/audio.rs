//! Turning a scenario's values into the engine's: session configs,
//! background sources opened up front, WAV files and tones in a session's
//! input format.

use std::path::Path;
use std::time::Duration;

use sotto::decode::FileDecoder;
use sotto::{BackgroundConfig, BackgroundMode, Duck, SampleFormat, SessionConfig};

use super::{Secs, SessionSpec, Tone};

pub(super) fn session_config(s: &SessionSpec, out_rate: u32) -> Result<SessionConfig, String> {
    let mut c = SessionConfig {
        name: s.name.clone(),
        ..SessionConfig::default()
    };
    c.input.sample_rate = s.input_rate.unwrap_or(out_rate);
    if !sotto::SUPPORTED_RATES.contains(&c.input.sample_rate) {
        return Err(format!(
            "input_rate {} Hz is not one of 8000, 16000, 22050, 24000, 44100, 48000",
            c.input.sample_rate
        ));
    }
    c.input.channels = s.input_channels.unwrap_or(1);
    if !(1..=8).contains(&c.input.channels) {
        return Err(format!(
            "input_channels {} is outside 1..=8",
            c.input.channels
        ));
    }
    c.input.sample_format = match s.input_format.as_deref().unwrap_or("s16") {
        "s16" => SampleFormat::S16,
        "f32" => SampleFormat::F32,
        other => return Err(format!("input_format '{other}' must be \"s16\" or \"f32\"")),
    };
    // Only what a `Duration` cannot hold is checked here; the ranges are
    // the engine's own (`SessionConfig::validate`).
    let dur = |v: Option<Secs>, name: &str, def: Duration| -> Result<Duration, String> {
        match v {
            None => Ok(def),
            Some(Secs(x)) => Duration::try_from_secs_f64(x)
                .map_err(|_| format!("{name} {x} s is not a valid duration")),
        }
    };
    c.fade = dur(s.fade, "fade", c.fade)?;
    c.grace = dur(s.grace, "grace", c.grace)?;
    c.queue = dur(s.queue, "queue", c.queue)?;
    if let Some(db) = s.duck_db {
        let d = Duck::default();
        c.duck = Some(Duck {
            depth_db: db,
            down: dur(s.duck_down, "duck_down", d.down)?,
            up: dur(s.duck_up, "duck_up", d.up)?,
        });
    } else if s.duck_down.is_some() || s.duck_up.is_some() {
        return Err("duck_down and duck_up need duck_db".into());
    }
    c.saturation = match s.saturation.as_deref().unwrap_or("hard") {
        "hard" => sotto::Saturation::Hard,
        "soft" => sotto::Saturation::Soft,
        other => return Err(format!("saturation '{other}' must be \"hard\" or \"soft\"")),
    };
    c.validate()?;
    Ok(c)
}

/// A `background_start` step's source, checked up to opening the file.
pub(super) fn background_config(
    path: &Path,
    mode: BackgroundMode,
    volume: f32,
    looping: bool,
    rate: u32,
    channels: usize,
) -> Result<BackgroundConfig, String> {
    let config = BackgroundConfig {
        path: path.to_path_buf(),
        enabled: true,
        mode,
        volume,
        looping,
    };
    config.validate().map_err(|e| e.to_string())?;
    // Reads the headers only: a missing, empty or undecodable file is
    // named here, before anything renders.
    FileDecoder::open(&config.path, rate, channels).map_err(|e| e.to_string())?;
    Ok(config)
}

/// Reads a WAV file and encodes it in the session's input format.
pub(super) fn load_wav(path: &Path, input: sotto::InputFormat) -> Result<Vec<u8>, String> {
    let shown = path.display();
    // Read whole, decoded to f32 on the way: a file past an eighth of the
    // budget cannot fit, so it is not read at all.
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    if size > super::MEMORY_BUDGET / 8 {
        return Err(format!(
            "WAV '{shown}' is {} MiB; a pushed WAV may be at most {} MiB",
            size >> 20,
            super::MEMORY_BUDGET >> 23
        ));
    }
    let reader =
        hound::WavReader::open(path).map_err(|e| format!("cannot read WAV '{shown}': {e}"))?;
    let spec = reader.spec();
    if spec.sample_rate != input.sample_rate || usize::from(spec.channels) != input.channels {
        return Err(format!(
            "WAV '{shown}' is {} Hz x {} channels; the session takes {} Hz x {}",
            spec.sample_rate, spec.channels, input.sample_rate, input.channels
        ));
    }
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("corrupt WAV '{shown}': {e}"))?,
        hound::SampleFormat::Int => {
            let scale = 2f32.powi(i32::from(spec.bits_per_sample) - 1);
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("corrupt WAV '{shown}': {e}"))?
        }
    };
    Ok(encode(&samples, input.sample_format))
}

fn encode(samples: &[f32], format: SampleFormat) -> Vec<u8> {
    match format {
        SampleFormat::S16 => crate::signal::s16_bytes(samples),
        SampleFormat::F32 => crate::signal::f32_bytes(samples),
    }
}
/// A tone in the session's input format.
pub(super) fn tone(tone: &Tone, input: sotto::InputFormat) -> Vec<u8> {
    let frames = (tone.seconds * f64::from(input.sample_rate)).round() as usize;
    let samples = crate::signal::sine(
        frames,
        f64::from(tone.freq),
        input.sample_rate,
        input.channels,
        tone.amplitude / 32768.0,
    );
    encode(&samples, input.sample_format)
}

//! Scenarios: a TOML timeline of engine messages, rendered through the
//! whole engine to samples and an event log (the `sotto render` program).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use std::sync::Arc;

use sotto::avatar::LinkConfig;
use sotto::decode::FileDecoder;
use sotto_avatar::face::{FaceRenderer, FileSink, MemorySink};
use sotto_avatar::playout::{AvatarRenderer, AvatarSink};
use sotto_avatar::server::{AvatarServer, ServerConfig};
use sotto_avatar::token;

/// Longest wait for an avatar's segments to be acknowledged.
const AVATAR_SETTLE: Duration = Duration::from_secs(60);

use sotto::{
    BackgroundConfig, BackgroundHandle, BackgroundMode, Clock, Duck, Engine, EngineConfig,
    EngineError, SampleFormat, SessionConfig, SessionEventKind, SessionHandle,
};

/// Why a scenario cannot be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file is not valid TOML or has fields of the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The scenario file.
        path: String,
        /// The parser's message with line and column.
        message: String,
    },
    /// A value is out of range or names something that does not exist.
    #[error("{path}: {place}: {message}")]
    Invalid {
        /// The scenario file.
        path: String,
        /// Where in the file, e.g. `at[3]` or `session "agent"`.
        place: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine failed while rendering.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

impl ScenarioError {
    /// True for problems in the scenario itself (exit code 2).
    #[must_use]
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Engine(_))
    }
}

/// A duration written as `"0.4s"`, `"400ms"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs(pub f64);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Secs(n)),
            Raw::S(s) => parse_duration(&s)
                .map(Secs)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"1.5s"`, `"400ms"`, `"2"` (seconds).
///
/// # Errors
/// A message naming the bad text.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| format!("'{s}' is not a duration (use e.g. \"0.4s\" or \"400ms\")"))
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Output rate.
    pub sample_rate: u32,
    /// Output channels.
    #[serde(default = "one")]
    pub channels: usize,
    /// Frames per render block.
    #[serde(default = "default_block")]
    pub block: usize,
    /// Length of the render.
    pub duration: Secs,
    /// Sessions.
    #[serde(default, rename = "session")]
    pub sessions: Vec<SessionSpec>,
    /// The timeline.
    #[serde(default)]
    pub at: Vec<Step>,
}

fn one() -> usize {
    1
}

fn default_block() -> usize {
    480
}

/// A `[[session]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Name used by steps and in the event log.
    pub name: String,
    /// Input rate (default: the output rate).
    pub input_rate: Option<u32>,
    /// Input channels (default 1).
    pub input_channels: Option<usize>,
    /// `"s16"` (default) or `"f32"`.
    pub input_format: Option<String>,
    /// Fade tail limit.
    pub fade: Option<Secs>,
    /// Queue bound.
    pub queue: Option<Secs>,
    /// Grace period.
    pub grace: Option<Secs>,
    /// Background ducking in dB while speaking, e.g. -12; no ducking when absent.
    pub duck_db: Option<f32>,
    /// Duck ramp down (default 50 ms).
    pub duck_down: Option<Secs>,
    /// Duck ramp up (default 250 ms).
    pub duck_up: Option<Secs>,
    /// `"hard"` (default) or `"soft"`.
    pub saturation: Option<String>,
}

/// An `[[at]]` table: one message at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When.
    pub t: Secs,
    /// Which session.
    pub session: String,
    /// What.
    pub op: String,
    /// Tone frequency in Hz.
    pub freq: Option<f32>,
    /// Tone amplitude in s16 units.
    pub amplitude: Option<f32>,
    /// Tone length, or the fade length for `set_fade`.
    pub seconds: Option<f64>,
    /// Bytes per push.
    pub chunk_bytes: Option<usize>,
    /// WAV file for `push_wav`, relative to the scenario.
    pub path: Option<String>,
    /// For `enable_input`.
    pub manual: Option<bool>,
    /// For `background_start`: `"mixing"` or `"playback"` (default).
    pub mode: Option<String>,
    /// For `background_start` and `background_volume`: 0..=2.
    pub volume: Option<f32>,
    /// For `background_start`.
    pub looping: Option<bool>,
}

const OPS: [&str; 19] = [
    "begin_synthesis",
    "end_synthesis",
    "push_tone",
    "push_wav",
    "push_background_tone",
    "interrupt",
    "pause",
    "resume",
    "enable_input",
    "disable_input",
    "clear",
    "snapshot",
    "set_fade",
    "wait_playout",
    "background_start",
    "background_stop",
    "background_volume",
    "avatar_attach",
    "avatar_detach",
];

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// Output frame.
    pub sample: u64,
    /// Session name.
    pub session: String,
    /// Event name.
    pub event: String,
    /// Extra fields.
    pub fields: Map<String, Value>,
    order: (usize, u64),
}

impl LogEvent {
    /// The JSON line.
    #[must_use]
    pub fn to_json(&self, sample_rate: u32) -> Value {
        let mut obj = Map::new();
        obj.insert("sample".into(), json!(self.sample));
        obj.insert(
            "t".into(),
            json!((self.sample as f64 / f64::from(sample_rate) * 1e6).round() / 1e6),
        );
        obj.insert("session".into(), json!(self.session));
        obj.insert("event".into(), json!(self.event));
        for (k, v) in &self.fields {
            obj.insert(k.clone(), v.clone());
        }
        Value::Object(obj)
    }
}

/// A finished render.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Interleaved output.
    pub samples: Vec<f32>,
    /// Output rate.
    pub sample_rate: u32,
    /// Output channels.
    pub channels: usize,
    /// Every event, in sample order.
    pub events: Vec<LogEvent>,
    /// Late blocks on the virtual clock (0 offline).
    pub late_blocks: u64,
    /// Why a requested device was not used (the virtual clock ran instead).
    pub device_fallback: Option<String>,
}

/// A validated scenario, with its WAV files loaded.
#[derive(Debug, Clone)]
pub struct Prepared {
    scenario: Scenario,
    sessions: Vec<SessionConfig>,
    steps: Vec<(usize, Step, Option<Vec<u8>>, usize)>,
    /// Background sources by step index, with their paths resolved.
    backgrounds: HashMap<usize, BackgroundConfig>,
    path: String,
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the place of the problem.
    pub fn load(path: &Path) -> Result<Prepared, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &path.display().to_string(), &base)
    }

    /// Parses and validates scenario text; `base` resolves relative paths.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the place of the problem.
    pub fn parse(text: &str, path: &str, base: &Path) -> Result<Prepared, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            path: path.into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        scenario.prepare(path, base)
    }

    fn prepare(self, path: &str, base: &Path) -> Result<Prepared, ScenarioError> {
        let bad = |place: String, message: String| ScenarioError::Invalid {
            path: path.into(),
            place,
            message,
        };
        if !(8_000..=192_000).contains(&self.sample_rate) {
            return Err(bad(
                "sample_rate".into(),
                format!("{} Hz is outside 8000..=192000", self.sample_rate),
            ));
        }
        if !(1..=8).contains(&self.channels) {
            return Err(bad(
                "channels".into(),
                format!("{} is outside 1..=8", self.channels),
            ));
        }
        if self.block == 0 || self.block > self.sample_rate as usize {
            return Err(bad(
                "block".into(),
                format!("{} frames is outside 1..=sample_rate", self.block),
            ));
        }
        if !(0.0..=3600.0).contains(&self.duration.0) {
            return Err(bad(
                "duration".into(),
                format!("{} s is outside 0..=3600 s", self.duration.0),
            ));
        }
        let mut names = HashMap::new();
        let mut sessions = Vec::new();
        for (i, s) in self.sessions.iter().enumerate() {
            let place = format!("session[{i}] \"{}\"", s.name);
            if names.insert(s.name.clone(), i).is_some() {
                return Err(bad(place, "duplicate session name".into()));
            }
            sessions.push(session_config(s, self.sample_rate).map_err(|m| bad(place, m))?);
        }
        let mut steps = Vec::new();
        let mut backgrounds = HashMap::new();
        for (i, step) in self.at.iter().enumerate() {
            let place = format!("at[{i}] (t = {}s, op = \"{}\")", step.t.0, step.op);
            if step.t.0.is_nan() || step.t.0 < 0.0 {
                return Err(bad(place, "time must not be negative".into()));
            }
            if step.t.0 > self.duration.0 {
                return Err(bad(
                    place,
                    format!("time is after the end ({} s)", self.duration.0),
                ));
            }
            let Some(&si) = names.get(&step.session) else {
                return Err(bad(place, format!("unknown session '{}'", step.session)));
            };
            if !OPS.contains(&step.op.as_str()) {
                return Err(bad(
                    place,
                    format!("unknown op (known: {})", OPS.join(", ")),
                ));
            }
            let input = sessions[si].input;
            let wav = match step.op.as_str() {
                "push_tone" | "push_background_tone" => {
                    let secs = step
                        .seconds
                        .ok_or_else(|| bad(place.clone(), "needs 'seconds'".into()))?;
                    if !(0.0..=3600.0).contains(&secs) {
                        return Err(bad(place, "seconds must be within 0..=3600".into()));
                    }
                    let freq = step.freq.unwrap_or(440.0);
                    if !(0.0..=f32::from(u16::MAX)).contains(&freq) {
                        return Err(bad(place, "freq must be within 0..=65535 Hz".into()));
                    }
                    let amp = step.amplitude.unwrap_or(8000.0);
                    if !(0.0..=32767.0).contains(&amp) {
                        return Err(bad(place, "amplitude must be within 0..=32767".into()));
                    }
                    None
                }
                "push_wav" => {
                    let rel = step
                        .path
                        .as_ref()
                        .ok_or_else(|| bad(place.clone(), "needs 'path'".into()))?;
                    Some(load_wav(&base.join(rel), input).map_err(|m| bad(place.clone(), m))?)
                }
                "set_fade" => {
                    let secs = step
                        .seconds
                        .ok_or_else(|| bad(place.clone(), "needs 'seconds'".into()))?;
                    if !(0.0..=3600.0).contains(&secs) {
                        return Err(bad(place, "seconds must be within 0..=3600".into()));
                    }
                    None
                }
                "background_start" => {
                    let config = background_config(
                        step,
                        base,
                        &sessions[si],
                        self.sample_rate,
                        self.channels,
                    )
                    .map_err(|m| bad(place.clone(), m))?;
                    backgrounds.insert(i, config);
                    None
                }
                "background_volume" => {
                    let v = step
                        .volume
                        .ok_or_else(|| bad(place.clone(), "needs 'volume'".into()))?;
                    if !(0.0..=2.0).contains(&v) {
                        return Err(bad(place, format!("volume {v} must be within 0..=2")));
                    }
                    None
                }
                _ => None,
            };
            if step.chunk_bytes == Some(0) {
                return Err(bad(place, "chunk_bytes must be at least 1".into()));
            }
            steps.push((si, step.clone(), wav, i));
        }
        // A stable sort keeps file order for steps at the same time.
        steps.sort_by(|a, b| a.1.t.0.total_cmp(&b.1.t.0));
        Ok(Prepared {
            scenario: self,
            sessions,
            steps,
            backgrounds,
            path: path.into(),
        })
    }
}

fn session_config(s: &SessionSpec, out_rate: u32) -> Result<SessionConfig, String> {
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
fn background_config(
    step: &Step,
    base: &Path,
    _session: &SessionConfig,
    rate: u32,
    channels: usize,
) -> Result<BackgroundConfig, String> {
    let rel = step.path.as_ref().ok_or("needs 'path'")?;
    let mode = match step.mode.as_deref().unwrap_or("playback") {
        "playback" => BackgroundMode::Playback,
        "mixing" => BackgroundMode::Mixing,
        other => return Err(format!("mode '{other}' must be \"playback\" or \"mixing\"")),
    };
    let config = BackgroundConfig {
        path: base.join(rel),
        enabled: true,
        mode,
        volume: step.volume.unwrap_or(1.0),
        looping: step.looping.unwrap_or(false),
    };
    config.validate().map_err(|e| e.to_string())?;
    // Reads the headers only: a missing, empty or undecodable file is
    // named here, before anything renders.
    FileDecoder::open(&config.path, rate, channels).map_err(|e| e.to_string())?;
    Ok(config)
}

/// Reads a WAV file and encodes it in the session's input format.
fn load_wav(path: &Path, input: sotto::InputFormat) -> Result<Vec<u8>, String> {
    let shown = path.display();
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
        SampleFormat::S16 => samples
            .iter()
            .flat_map(|v| ((v * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes())
            .collect(),
        SampleFormat::F32 => samples.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// A tone in the session's input format.
fn tone(step: &Step, input: sotto::InputFormat) -> Vec<u8> {
    let rate = input.sample_rate as f32;
    let n = (step.seconds.unwrap_or(0.0) * f64::from(input.sample_rate)).round() as usize;
    let freq = step.freq.unwrap_or(440.0);
    let amp = step.amplitude.unwrap_or(8000.0) / 32768.0;
    let mut samples = Vec::with_capacity(n * input.channels);
    for i in 0..n {
        // Phase from the frame index in f64 keeps long tones exact.
        let phase = (f64::from(freq) * i as f64 / f64::from(rate)).fract();
        let v = (std::f64::consts::TAU * phase).sin() as f32 * amp;
        samples.extend(std::iter::repeat_n(v, input.channels));
    }
    encode(&samples, input.sample_format)
}

/// Which clock renders the scenario.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RenderClock {
    /// As fast as possible, deterministic.
    #[default]
    Offline,
    /// In real time on the `sotto-audio` thread.
    Virtual,
    /// In real time to a sound card (the default one when `None`), or on
    /// the virtual clock when it cannot be opened. Nothing is captured.
    Device(Option<String>),
}

struct Run {
    engine: Engine,
    handles: Vec<SessionHandle>,
    streams: Vec<tokio::sync::mpsc::Receiver<sotto::SessionEvent>>,
    log: Vec<LogEvent>,
    pushes: Vec<(
        usize,
        tokio::task::JoinHandle<Result<sotto::PushOutcome, sotto::SessionError>>,
    )>,
    /// The background source of each session that has one.
    backgrounds: HashMap<usize, BackgroundHandle>,
    /// The in-process avatar server, once a session attached one.
    avatar_server: Option<(AvatarServer, String)>,
    /// The avatar link of each session that has one.
    avatars: HashMap<usize, sotto::AvatarHandle>,
}

impl Prepared {
    /// The scenario.
    #[must_use]
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Renders the scenario through a fresh engine.
    ///
    /// # Errors
    /// [`ScenarioError::Engine`] if the engine fails.
    pub async fn render(&self, clock: RenderClock) -> Result<Rendered, ScenarioError> {
        let sc = &self.scenario;
        let rate = sc.sample_rate;
        let total = (sc.duration.0 * f64::from(rate)).round() as u64;
        let engine = Engine::start(EngineConfig {
            sample_rate: rate,
            channels: sc.channels,
            block_frames: sc.block,
            max_sessions: self.sessions.len().max(1),
            clock: match &clock {
                RenderClock::Offline => Clock::Offline,
                RenderClock::Virtual => Clock::Virtual {
                    capture: Some(Duration::from_secs_f64(sc.duration.0 + 1.0)),
                    deferred: true,
                },
                RenderClock::Device(name) => Clock::Device {
                    name: name.clone(),
                    deferred: true,
                },
            },
            saturation: sotto::Saturation::Hard,
        })
        .await?;
        let mut run = Run {
            engine: engine.clone(),
            handles: Vec::new(),
            streams: Vec::new(),
            log: Vec::new(),
            pushes: Vec::new(),
            backgrounds: HashMap::new(),
            avatar_server: None,
            avatars: HashMap::new(),
        };
        for c in &self.sessions {
            let h = engine.create_session(c.clone()).await?;
            run.streams.push(h.events());
            run.handles.push(h);
        }
        let block = sc.block as u64;
        let mut samples = Vec::with_capacity(total as usize * sc.channels);
        let started = std::time::Instant::now();
        let mut clock_running = false;
        for (si, step, wav, index) in &self.steps {
            let frame = (step.t.0 * f64::from(rate)).ceil() as u64;
            let boundary = frame.div_ceil(block) * block;
            match clock {
                RenderClock::Offline => {
                    let now = engine.clock().0;
                    if boundary > now {
                        engine.render_into(boundary - now, &mut samples).await?;
                    }
                }
                RenderClock::Virtual | RenderClock::Device(_) => {
                    if boundary > 0 && !clock_running {
                        engine.settle().await?;
                        engine.run_clock().await?;
                        clock_running = true;
                    }
                    let due = started + Duration::from_secs_f64(boundary as f64 / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let background = self.backgrounds.get(index);
            run.apply(*si, step, wav.as_deref(), &self.sessions[*si], background)
                .await?;
        }
        let late_blocks;
        match clock {
            RenderClock::Offline => {
                let now = engine.clock().0;
                if total > now {
                    engine.render_into(total - now, &mut samples).await?;
                }
                samples.truncate(total as usize * sc.channels);
                late_blocks = 0;
            }
            RenderClock::Virtual | RenderClock::Device(_) => {
                engine.settle().await?;
                if !clock_running {
                    engine.run_clock().await?;
                }
                while engine.clock().0 < total {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                samples = match clock {
                    RenderClock::Virtual => engine.take_captured().await?,
                    _ => Vec::new(),
                };
                samples.truncate(total as usize * sc.channels);
                late_blocks = engine
                    .telemetry()
                    .late_blocks
                    .load(std::sync::atomic::Ordering::Relaxed);
            }
        }
        engine.settle().await?;
        let mut events = run.finish().await;
        events.sort_by_key(|e| (e.sample, e.order));
        engine.shutdown().await;
        Ok(Rendered {
            samples,
            sample_rate: rate,
            channels: sc.channels,
            events,
            late_blocks,
            device_fallback: engine.device_fallback().map(str::to_owned),
        })
    }

    /// The scenario's path as given.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Run {
    async fn apply(
        &mut self,
        si: usize,
        step: &Step,
        wav: Option<&[u8]>,
        config: &SessionConfig,
        background: Option<&BackgroundConfig>,
    ) -> Result<(), ScenarioError> {
        let h = self.handles[si].clone();
        let closed =
            |e: sotto::SessionError| ScenarioError::Engine(EngineError::Config(e.to_string()));
        let chunked = |bytes: Vec<u8>| -> Vec<Vec<u8>> {
            let size = step.chunk_bytes.unwrap_or(4800);
            bytes.chunks(size).map(<[u8]>::to_vec).collect()
        };
        match step.op.as_str() {
            "begin_synthesis" => h.mark_synthesis_start().map_err(closed)?,
            "end_synthesis" => h.mark_synthesis_complete().map_err(closed)?,
            "push_tone" | "push_wav" | "push_background_tone" => {
                let bytes = match wav {
                    Some(w) => w.to_vec(),
                    None => tone(step, config.input),
                };
                for chunk in chunked(bytes) {
                    let fut = if step.op == "push_background_tone" {
                        tokio::spawn(h.push_background(chunk))
                    } else {
                        tokio::spawn(h.push(chunk))
                    };
                    self.pushes.push((si, fut));
                }
            }
            "interrupt" => h.interrupt().map_err(closed)?,
            "pause" => h.pause().map_err(closed)?,
            "resume" => h.resume().map_err(closed)?,
            "enable_input" => h
                .enable_audio_input(step.manual.unwrap_or(false))
                .map_err(closed)?,
            "disable_input" => h.disable_audio_input().map_err(closed)?,
            "clear" => {
                // Sent at once; the outcome shows up as a `cleared` event.
                drop(h.clear_queue());
            }
            "set_fade" => h
                .set_fade(Duration::from_secs_f64(step.seconds.unwrap_or(0.0)))
                .map_err(closed)?,
            "wait_playout" => {
                drop(h.wait_for_playout());
            }
            "background_start" => {
                if let Some(old) = self.backgrounds.remove(&si) {
                    let _ = old.stop().await;
                }
                if let Some(bc) = background {
                    let bg = self.engine.background(&h, bc.clone()).await?;
                    // A failure is reported as a `background_error` event.
                    let _ = bg.start().await;
                    self.backgrounds.insert(si, bg);
                }
            }
            "background_stop" => {
                if let Some(bg) = self.backgrounds.remove(&si) {
                    let _ = bg.stop().await;
                }
            }
            "background_volume" => {
                if let Some(bg) = self.backgrounds.get(&si) {
                    let _ = bg.set_volume(step.volume.unwrap_or(1.0)).await;
                }
            }
            "avatar_attach" => {
                if let Some(old) = self.avatars.remove(&si) {
                    old.detach();
                }
                let link = self.avatar_link(step).await?;
                let avatar = self.engine.attach_avatar(&h, link).await?;
                self.avatars.insert(si, avatar);
            }
            "avatar_detach" => {
                if let Some(avatar) = self.avatars.remove(&si) {
                    avatar.wait_idle(AVATAR_SETTLE).await;
                    avatar.detach();
                }
            }
            "snapshot" => {
                let snap = h.snapshot_playback();
                self.engine.settle().await?;
                let (played, pushed) = snap.await.map_err(closed)?;
                let mut fields = Map::new();
                fields.insert("played".into(), json!(played));
                fields.insert("pushed".into(), json!(pushed));
                self.log.push(LogEvent {
                    sample: self.engine.clock().0,
                    session: config.name.clone(),
                    event: "snapshot".into(),
                    fields,
                    order: (si, 0),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// A link to the in-process avatar server on loopback, started at the
    /// first attach; the avatar writes `voice.wav` and `video.y4m` into
    /// the step's `path` when it has one.
    async fn avatar_link(&mut self, step: &Step) -> Result<LinkConfig, ScenarioError> {
        let out = step.path.clone().map(PathBuf::from);
        if self.avatar_server.is_none() {
            let secret = format!("scenario-{}", std::process::id());
            let rate = self.engine.config().sample_rate;
            let channels = self.engine.config().channels;
            let config = ServerConfig {
                secret: secret.clone(),
                fps: 25,
                cooldown: Duration::from_millis(300),
                stereo: false,
                renderer: Arc::new(|| Box::new(FaceRenderer::default()) as Box<dyn AvatarRenderer>),
                sink: Arc::new(move |_| match &out {
                    Some(dir) => match FileSink::create(dir, rate, channels as u16, 25) {
                        Ok(f) => Box::new(f) as Box<dyn AvatarSink>,
                        Err(e) => {
                            tracing::warn!(error = %e, "avatar output folder; keeping nothing");
                            Box::new(MemorySink::new(channels))
                        }
                    },
                    None => Box::new(MemorySink::new(channels)),
                }),
            };
            let server = AvatarServer::start(([127, 0, 0, 1], 0).into(), config)
                .await
                .map_err(|e| {
                    ScenarioError::Engine(EngineError::Start {
                        what: "avatar server",
                        reason: e.to_string(),
                    })
                })?;
            self.avatar_server = Some((server, secret));
        }
        let Some((server, secret)) = &self.avatar_server else {
            unreachable!("started above");
        };
        let creds = token::create("sotto", secret, None, token::DEFAULT_TTL)
            .map_err(|e| ScenarioError::Engine(EngineError::Config(e.to_string())))?;
        Ok(LinkConfig::new(
            &server.join_url(),
            "scenario",
            &creds.token,
            &creds.participant_id,
        ))
    }

    async fn finish(mut self) -> Vec<LogEvent> {
        // The avatar plays in real time: let its segments finish playing
        // and be acknowledged before the log is read.
        for (_, avatar) in self.avatars.drain() {
            avatar.wait_idle(AVATAR_SETTLE).await;
            avatar.detach();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (i, rx) in self.streams.iter_mut().enumerate() {
            let name = self.handles[i].name().to_owned();
            let mut seq = 1;
            while let Ok(e) = rx.try_recv() {
                let (event, fields) = describe(&e.kind);
                self.log.push(LogEvent {
                    sample: e.at.0,
                    session: name.clone(),
                    event: event.into(),
                    fields,
                    order: (i, seq),
                });
                seq += 1;
            }
        }
        for (si, mut p) in std::mem::take(&mut self.pushes) {
            // On a real-time clock a push may be a moment from done.
            let outcome = tokio::time::timeout(Duration::from_millis(100), &mut p).await;
            let Ok(outcome) = outcome else {
                // Audio still waiting for room when the scenario ends (more
                // was pushed than its duration plays): said, not waited for
                // — the clock has stopped and would never make room.
                p.abort();
                self.log_end(
                    si,
                    "push_unfinished",
                    "a push was still waiting for room when the scenario ended".into(),
                );
                continue;
            };
            if let Ok(Err(e)) = outcome {
                self.log_end(si, "error", e.to_string());
            }
        }
        self.log
    }

    /// Logs `event` with `message` for session `si` at the end of the run.
    fn log_end(&mut self, si: usize, event: &str, message: String) {
        let mut fields = Map::new();
        fields.insert("message".into(), json!(message));
        self.log.push(LogEvent {
            sample: self.engine.clock().0,
            session: self.handles[si].name().to_owned(),
            event: event.into(),
            fields,
            order: (si, u64::MAX),
        });
    }
}

/// The event-log name and fields of a session event.
#[must_use]
pub fn describe(kind: &SessionEventKind) -> (&'static str, Map<String, Value>) {
    let mut f = Map::new();
    let name = match kind {
        SessionEventKind::FirstAudio => "first_audio",
        SessionEventKind::LastAudio => "last_audio",
        SessionEventKind::StoppedSpeaking => "stopped_speaking",
        SessionEventKind::Interrupted {
            tail_frames,
            dropped_frames,
        } => {
            f.insert("tail_frames".into(), json!(tail_frames));
            f.insert("dropped_frames".into(), json!(dropped_frames));
            "interrupted"
        }
        SessionEventKind::FadeDone => "fade_done",
        SessionEventKind::Cleared { dropped_frames } => {
            f.insert("dropped_frames".into(), json!(dropped_frames));
            "cleared"
        }
        SessionEventKind::Paused => "paused",
        SessionEventKind::Resumed => "resumed",
        SessionEventKind::DroppedInput { bytes } => {
            f.insert("bytes".into(), json!(bytes));
            "dropped_input"
        }
        SessionEventKind::Underrun => "underrun",
        SessionEventKind::QueueOverflow {
            dropped_frames,
            background,
        } => {
            f.insert("dropped_frames".into(), json!(dropped_frames));
            f.insert("background".into(), json!(background));
            "queue_overflow"
        }
        SessionEventKind::SinkDetached { sink, reason } => {
            f.insert("sink".into(), json!(sink));
            f.insert("message".into(), json!(reason));
            "sink_detached"
        }
        SessionEventKind::Error { message } => {
            f.insert("message".into(), json!(message));
            "error"
        }
        SessionEventKind::AvatarConnected { participant } => {
            f.insert("participant".into(), json!(participant));
            "avatar_connected"
        }
        SessionEventKind::AvatarSegmentEnded {
            segment,
            playback_position,
            interrupted,
        } => {
            f.insert("segment".into(), json!(segment));
            f.insert("playback_position".into(), json!(playback_position));
            f.insert("interrupted".into(), json!(interrupted));
            "avatar_segment_ended"
        }
        SessionEventKind::AvatarAckTimeout { segment } => {
            f.insert("segment".into(), json!(segment));
            "avatar_ack_timeout"
        }
        SessionEventKind::AvatarDisconnected { reason } => {
            f.insert("message".into(), json!(reason));
            "avatar_disconnected"
        }
        SessionEventKind::BackgroundStarted { source } => {
            f.insert("source".into(), json!(source));
            "background_started"
        }
        SessionEventKind::BackgroundLoopWrapped { source, pass } => {
            f.insert("source".into(), json!(source));
            f.insert("pass".into(), json!(pass));
            "background_loop_wrapped"
        }
        SessionEventKind::BackgroundEnded { source, stopped } => {
            f.insert("source".into(), json!(source));
            f.insert("stopped".into(), json!(stopped));
            "background_ended"
        }
        SessionEventKind::BackgroundError { source, message } => {
            f.insert("source".into(), json!(source));
            f.insert("message".into(), json!(message));
            "background_error"
        }
        SessionEventKind::BackgroundWarning { source, message } => {
            f.insert("source".into(), json!(source));
            f.insert("message".into(), json!(message));
            "background_warning"
        }
        _ => "other",
    };
    (name, f)
}

/// Writes interleaved samples as a WAV file, s16 or f32.
///
/// # Errors
/// Any I/O or encoding error.
pub fn write_wav(path: &PathBuf, r: &Rendered, float: bool) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: r.channels as u16,
        sample_rate: r.sample_rate,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for &s in &r.samples {
        if float {
            w.write_sample(s)?;
        } else {
            w.write_sample((s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)?;
        }
    }
    w.finalize()
}

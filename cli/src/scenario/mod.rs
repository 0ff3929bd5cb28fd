//! Scenarios: a TOML timeline of engine messages, rendered through the
//! whole engine to samples and an event log (the `sotto render` program).
//!
//! `op` picks what a step does ([`Op`]); the file is checked whole, with
//! every WAV loaded and every background source opened, before anything
//! renders, and a problem names its place (`at[3]`, `session[0]`).

mod audio;
mod log;
mod op;
mod out;
mod run;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sotto::{BackgroundConfig, EngineError, SessionConfig};

use audio::{background_config, check_wav, session_config};
pub use log::{describe, LogEvent, Rendered};
pub use op::{parse_duration, Op, Secs, Tone};
pub use out::MAX_WAV_BYTES;
pub use run::{file_name_ok, OutFiles, RenderClock, RenderOptions};

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
    /// An output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
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
        !matches!(self, Self::Engine(_) | Self::Write { .. })
    }
}

/// A scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Output rate.
    pub sample_rate: u32,
    /// Output channels.
    pub channels: usize,
    /// Frames per render block.
    pub block: usize,
    /// Length of the render.
    pub duration: Secs,
    /// Sessions.
    pub sessions: Vec<SessionSpec>,
    /// The timeline, in file order.
    pub at: Vec<Step>,
}

/// The file as written; steps are kept as tables until their op is known,
/// so a bad step's error can name its place.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    sample_rate: u32,
    #[serde(default = "one")]
    channels: usize,
    #[serde(default = "default_block")]
    block: usize,
    duration: Secs,
    #[serde(default, rename = "session")]
    sessions: Vec<SessionSpec>,
    #[serde(default)]
    at: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
struct RawStep {
    t: Secs,
    session: String,
    #[serde(flatten)]
    rest: toml::Table,
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
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When.
    pub t: Secs,
    /// Which session.
    pub session: String,
    /// What.
    pub op: Op,
}

/// A step ready to run: its session's index, the step, a checked WAV
/// file's path, its place in the file.
#[derive(Debug, Clone)]
struct Ready {
    session: usize,
    step: Step,
    wav: Option<PathBuf>,
    index: usize,
}

/// A validated scenario, with its WAV files checked.
#[derive(Debug, Clone)]
pub struct Prepared {
    scenario: Scenario,
    sessions: Vec<SessionConfig>,
    steps: Vec<Ready>,
    /// Background sources by step index, with their paths resolved.
    backgrounds: HashMap<usize, BackgroundConfig>,
    path: String,
    /// Memory the render needs besides its outputs, in bytes.
    needs: u64,
}

impl Prepared {
    /// The scenario.
    #[must_use]
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The scenario's path as given.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }
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
        let file: File = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            path: path.into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        prepare(file, path, base)
    }
}

/// What a scenario may need in memory while it renders: what its pushes
/// hold (the bytes in a session's mailbox, the frames waiting in its queue,
/// each chunk's own cost) and its outputs when they are kept in memory
/// rather than written to files. A scenario past it is refused before
/// anything is made for it.
pub const MEMORY_BUDGET: u64 = 2 << 30;
/// Chunks one push step may be cut into at most (`chunk_bytes`).
pub const MAX_CHUNKS_PER_STEP: u64 = 100_000;
/// What one chunk costs besides its audio: its message, its outcome and
/// its place in the session's queue.
const CHUNK_COST: u64 = 512;

/// Adds `bytes` to what the scenario needs, or says it is too much.
fn budget(used: &mut u64, bytes: u64, what: &str) -> Result<(), String> {
    *used = used.saturating_add(bytes);
    if *used > MEMORY_BUDGET {
        return Err(format!(
            "{what} needs {} MiB; with the rest the scenario needs over the {} MiB budget",
            bytes >> 20,
            MEMORY_BUDGET >> 20
        ));
    }
    Ok(())
}

fn prepare(file: File, path: &str, base: &Path) -> Result<Prepared, ScenarioError> {
    let bad = |place: String, message: String| ScenarioError::Invalid {
        path: path.into(),
        place,
        message,
    };
    if !(8_000..=192_000).contains(&file.sample_rate) {
        return Err(bad(
            "sample_rate".into(),
            format!("{} Hz is outside 8000..=192000", file.sample_rate),
        ));
    }
    if !(1..=8).contains(&file.channels) {
        return Err(bad(
            "channels".into(),
            format!("{} is outside 1..=8", file.channels),
        ));
    }
    if file.block == 0 || file.block > file.sample_rate as usize {
        return Err(bad(
            "block".into(),
            format!("{} frames is outside 1..=sample_rate", file.block),
        ));
    }
    if !(0.0..=3600.0).contains(&file.duration.0) {
        return Err(bad(
            "duration".into(),
            format!("{} s is outside 0..=3600 s", file.duration.0),
        ));
    }
    // Written out as it renders, the mix is at least 16-bit in a WAV file.
    let out_frames = (file.duration.0 * f64::from(file.sample_rate)).round() as u64;
    let wav_bytes = out_frames.saturating_mul(file.channels as u64 * 2);
    if wav_bytes > out::MAX_WAV_BYTES {
        return Err(bad(
            "duration".into(),
            format!(
                "the output is {} MiB as 16-bit samples; a WAV file holds at most {} MiB",
                wav_bytes >> 20,
                out::MAX_WAV_BYTES >> 20
            ),
        ));
    }
    let mut used = 0;
    // Frames pushed into each session's inputs (speech, background): at
    // most `MAX_WAITING` of them wait in its queue, the rest is refused.
    let mut queued = vec![[0u64; 2]; file.sessions.len()];
    let mut names = HashMap::new();
    let mut sessions = Vec::new();
    for (i, s) in file.sessions.iter().enumerate() {
        let place = format!("session[{i}] \"{}\"", printable(&s.name));
        if names.insert(s.name.clone(), i).is_some() {
            return Err(bad(place, "duplicate session name".into()));
        }
        sessions.push(session_config(s, file.sample_rate).map_err(|m| bad(place, m))?);
    }
    let mut at = Vec::new();
    let mut steps = Vec::new();
    let mut backgrounds = HashMap::new();
    for (i, raw) in file.at.into_iter().enumerate() {
        let name = raw
            .rest
            .get("op")
            .and_then(toml::Value::as_str)
            .unwrap_or("");
        let place = format!("at[{i}] (t = {}s, op = \"{}\")", raw.t.0, printable(name));
        if raw.t.0.is_nan() || raw.t.0 < 0.0 {
            return Err(bad(place, "time must not be negative".into()));
        }
        if raw.t.0 > file.duration.0 {
            return Err(bad(
                place,
                format!("time is after the end ({} s)", file.duration.0),
            ));
        }
        let Some(&si) = names.get(&raw.session) else {
            return Err(bad(
                place,
                format!("unknown session '{}'", printable(&raw.session)),
            ));
        };
        if !Op::NAMES.contains(&name) {
            return Err(bad(
                place,
                format!("unknown op (known: {})", Op::NAMES.join(", ")),
            ));
        }
        let op = Op::deserialize(toml::Value::Table(raw.rest))
            .map_err(|e| bad(place.clone(), e.to_string().trim_end().replace('\n', " ")))?;
        let input = sessions[si].input;
        let mut wav_bytes = 0;
        let wav = match &op {
            Op::PushTone(tone) | Op::PushBackgroundTone(tone) => {
                if !(0.0..=3600.0).contains(&tone.seconds) {
                    return Err(bad(place, "seconds must be within 0..=3600".into()));
                }
                if !(0.0..=f32::from(u16::MAX)).contains(&tone.freq) {
                    return Err(bad(place, "freq must be within 0..=65535 Hz".into()));
                }
                if !(0.0..=32767.0).contains(&tone.amplitude) {
                    return Err(bad(place, "amplitude must be within 0..=32767".into()));
                }
                None
            }
            Op::PushWav { path: rel, .. } => {
                let path = base.join(rel);
                wav_bytes = check_wav(&path, input).map_err(|m| bad(place.clone(), m))?;
                Some(path)
            }
            Op::SetFade { seconds } => {
                if !(0.0..=3600.0).contains(seconds) {
                    return Err(bad(place, "seconds must be within 0..=3600".into()));
                }
                None
            }
            Op::BackgroundStart {
                path: rel,
                mode,
                volume,
                looping,
            } => {
                let config = background_config(
                    &base.join(rel),
                    *mode,
                    *volume,
                    *looping,
                    file.sample_rate,
                    file.channels,
                )
                .map_err(|m| bad(place.clone(), m))?;
                backgrounds.insert(i, config);
                None
            }
            Op::BackgroundVolume { volume } => {
                if !(0.0..=2.0).contains(volume) {
                    return Err(bad(place, format!("volume {volume} must be within 0..=2")));
                }
                None
            }
            _ => None,
        };
        if op.chunk_bytes() == Some(0) {
            return Err(bad(place, "chunk_bytes must be at least 1".into()));
        }
        let pushed = match &op {
            Op::PushTone(t) | Op::PushBackgroundTone(t) => {
                (t.seconds * f64::from(input.sample_rate)).round() as u64
                    * (input.channels * input.sample_format.bytes()) as u64
            }
            Op::PushWav { .. } => wav_bytes,
            _ => 0,
        };
        if pushed > 0 {
            let size = op.chunk_bytes().unwrap_or(4800) as u64;
            let chunks = pushed.div_ceil(size);
            if chunks > MAX_CHUNKS_PER_STEP {
                return Err(bad(
                    place,
                    format!(
                        "chunk_bytes cuts this push into {chunks} pushes; at most {MAX_CHUNKS_PER_STEP}"
                    ),
                ));
            }
            // The push is made as it is sent: in memory at once are the
            // chunks in the mailbox and each chunk's outcome.
            let in_mailbox = pushed.min(size.max(run::IN_FLIGHT_BYTES as u64));
            let cost = in_mailbox.saturating_add(chunks * CHUNK_COST);
            budget(&mut used, cost, "this push").map_err(|m| bad(place.clone(), m))?;
            let frames = pushed / (input.channels * input.sample_format.bytes()) as u64
                * u64::from(file.sample_rate)
                / u64::from(input.sample_rate).max(1);
            let slot = usize::from(matches!(op, Op::PushBackgroundTone(_)));
            queued[si][slot] = queued[si][slot].saturating_add(frames);
        }
        let step = Step {
            t: raw.t,
            session: raw.session,
            op,
        };
        at.push(step.clone());
        steps.push(Ready {
            session: si,
            step,
            wav,
            index: i,
        });
    }
    // What waits in the sessions' queues, f32 at the output rate.
    let waiting = sotto_rt::frames_of(sotto::SessionConfig::MAX_WAITING, file.sample_rate);
    for (i, q) in queued.iter().enumerate() {
        let frames = q.iter().map(|&f| f.min(waiting)).sum::<u64>();
        let place = format!("session[{i}] \"{}\"", printable(&file.sessions[i].name));
        budget(
            &mut used,
            frames.saturating_mul(file.channels as u64 * 4),
            "what waits in this session's queue",
        )
        .map_err(|m| bad(place, m))?;
    }
    // A stable sort keeps file order for steps at the same time.
    steps.sort_by(|a, b| a.step.t.0.total_cmp(&b.step.t.0));
    Ok(Prepared {
        scenario: Scenario {
            sample_rate: file.sample_rate,
            channels: file.channels,
            block: file.block,
            duration: file.duration,
            sessions: file.sessions,
            at,
        },
        sessions,
        steps,
        backgrounds,
        path: path.into(),
        needs: used,
    })
}

pub use sotto_server::events::printable;

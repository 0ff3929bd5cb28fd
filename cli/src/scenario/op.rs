//! What a scenario's `[[at]]` steps say: durations, and the ops as a
//! tagged enum (`op = "push_tone"` picks the variant, the other keys are
//! its fields; a key the op does not take is an error).

use serde::Deserialize;
use sotto::BackgroundMode;

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

/// A generated tone: a sine in the session's input format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tone {
    /// Length in seconds.
    pub seconds: f64,
    /// Frequency in Hz.
    #[serde(default = "default_freq")]
    pub freq: f32,
    /// Amplitude in s16 units.
    #[serde(default = "default_amplitude")]
    pub amplitude: f32,
    /// Bytes per push (default 4800).
    pub chunk_bytes: Option<usize>,
}

fn default_freq() -> f32 {
    440.0
}

fn default_amplitude() -> f32 {
    8000.0
}

/// What one step does: one engine message (SPEC O1–O12, B, A).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// `mark_synthesis_start`: anchors a turn.
    BeginSynthesis {},
    /// `mark_synthesis_complete`: the turn's audio is all pushed.
    EndSynthesis {},
    /// Pushes a tone as speech.
    PushTone(Tone),
    /// Pushes a WAV file (at the session's input rate and channels) as speech.
    PushWav {
        /// The file, relative to the scenario.
        path: String,
        /// Bytes per push (default 4800).
        chunk_bytes: Option<usize>,
    },
    /// Pushes a tone into the background input.
    PushBackgroundTone(Tone),
    /// Barge-in: fades what is queued.
    Interrupt {},
    /// Freezes playback.
    Pause {},
    /// Continues where playback stopped.
    Resume {},
    /// Accepts pushed audio again.
    EnableInput {
        /// Every interrupt disables intake until the next enable.
        #[serde(default)]
        manual: bool,
    },
    /// Drops pushed audio until enabled.
    DisableInput {},
    /// Discards the queue at once.
    Clear {},
    /// Logs `(played, pushed)` since the turn's anchor.
    Snapshot {},
    /// Sets the fade tail limit.
    SetFade {
        /// The new limit in seconds.
        seconds: f64,
    },
    /// Waits for the queue to play out (logged through events).
    WaitPlayout {},
    /// Starts a background source from a file.
    BackgroundStart {
        /// The file, relative to the scenario.
        path: String,
        /// `"playback"` (default: counts as speech) or `"mixing"`.
        #[serde(default, deserialize_with = "mode")]
        mode: BackgroundMode,
        /// 0..=2 (default 1).
        #[serde(default = "unity")]
        volume: f32,
        /// Loops from a decoded cache after the first pass.
        #[serde(default)]
        looping: bool,
    },
    /// Stops the session's background source.
    BackgroundStop {},
    /// Ramps the background source's volume.
    BackgroundVolume {
        /// 0..=2.
        volume: f32,
    },
    /// Links the session to an avatar server started in this process.
    AvatarAttach {
        /// A folder the avatar writes `voice.wav` and `video.y4m` into.
        path: Option<String>,
    },
    /// Lets the avatar finish its segments, then detaches it.
    AvatarDetach {},
}

fn unity() -> f32 {
    1.0
}

fn mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BackgroundMode, D::Error> {
    match String::deserialize(d)?.as_str() {
        "playback" => Ok(BackgroundMode::Playback),
        "mixing" => Ok(BackgroundMode::Mixing),
        other => Err(serde::de::Error::custom(format!(
            "mode '{other}' must be \"playback\" or \"mixing\""
        ))),
    }
}

impl Op {
    /// Every op's name, as written after `op =`.
    pub const NAMES: [&'static str; 19] = [
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

    /// The op's name, as written after `op =`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        let i = match self {
            Self::BeginSynthesis {} => 0,
            Self::EndSynthesis {} => 1,
            Self::PushTone(_) => 2,
            Self::PushWav { .. } => 3,
            Self::PushBackgroundTone(_) => 4,
            Self::Interrupt {} => 5,
            Self::Pause {} => 6,
            Self::Resume {} => 7,
            Self::EnableInput { .. } => 8,
            Self::DisableInput {} => 9,
            Self::Clear {} => 10,
            Self::Snapshot {} => 11,
            Self::SetFade { .. } => 12,
            Self::WaitPlayout {} => 13,
            Self::BackgroundStart { .. } => 14,
            Self::BackgroundStop {} => 15,
            Self::BackgroundVolume { .. } => 16,
            Self::AvatarAttach { .. } => 17,
            Self::AvatarDetach {} => 18,
        };
        Self::NAMES[i]
    }

    /// Seconds of generated audio the op pushes.
    #[must_use]
    pub fn tone_seconds(&self) -> Option<f64> {
        match self {
            Self::PushTone(t) | Self::PushBackgroundTone(t) => Some(t.seconds),
            _ => None,
        }
    }

    /// Whether the op involves an avatar.
    #[must_use]
    pub fn is_avatar(&self) -> bool {
        matches!(self, Self::AvatarAttach { .. } | Self::AvatarDetach {})
    }

    /// Bytes per push, for the ops that push.
    #[must_use]
    pub fn chunk_bytes(&self) -> Option<usize> {
        match self {
            Self::PushTone(t) | Self::PushBackgroundTone(t) => t.chunk_bytes,
            Self::PushWav { chunk_bytes, .. } => *chunk_bytes,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name in [`Op::NAMES`] is an op, and names itself.
    #[test]
    fn names_match_the_variants() {
        for name in Op::NAMES {
            let text = match name {
                "push_tone" | "push_background_tone" => format!("op = \"{name}\"\nseconds = 1.0"),
                "push_wav" | "background_start" => format!("op = \"{name}\"\npath = \"x\""),
                "set_fade" => format!("op = \"{name}\"\nseconds = 1.0"),
                "background_volume" => format!("op = \"{name}\"\nvolume = 1.0"),
                _ => format!("op = \"{name}\""),
            };
            let op: Op = toml::from_str(&text).unwrap();
            assert_eq!(op.name(), name);
        }
    }

    #[test]
    fn a_key_the_op_does_not_take_is_refused() {
        assert!(toml::from_str::<Op>("op = \"interrupt\"\nseconds = 1.0").is_err());
        assert!(toml::from_str::<Op>("op = \"push_tone\"\nseconds = 1.0\npath = \"x\"").is_err());
    }
}

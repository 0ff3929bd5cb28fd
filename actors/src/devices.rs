//! The host's sound devices (SPEC D1): what there is, what the defaults
//! are, and the sample format a stream is opened with. Control side.

use cpal::traits::{DeviceTrait, HostTrait};

/// Why a device cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

/// One audio device as the host reports it (SPEC D1), from
/// `Engine::devices`: the name to put in a `Clock::Device` or an
/// [`InputConfig`](crate::capture::input::InputConfig).
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
pub(crate) fn name_of(d: &cpal::Device) -> String {
    d.id()
        .map_or_else(|_| d.to_string(), |id| id.id().to_owned())
}

/// The sample format to open the device with: f32 if it takes the
/// renderer's rate and channels that way, else i16.
pub(crate) fn pick_format(
    dev: &cpal::Device,
    rate: u32,
    channels: usize,
) -> Option<cpal::SampleFormat> {
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

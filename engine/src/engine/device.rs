//! The sound card side of an engine: device events, the playing device,
//! microphone input with echo cancellation, and why a device was not used.

use std::sync::Arc;

use sotto_actors::capture::input::{DeviceInput as Capture, InputConfig};

use crate::DeviceInput;
use sotto_actors::device_manager::{DeviceEvent, DeviceMsg, DEVICE_EVENT_QUEUE};
use sotto_media::echo::EchoConfig;
use tokio::sync::mpsc;

use super::*;

impl Engine {
    /// Every sound card device of the default host, with its channels,
    /// rates and whether it is the default input or output: what a
    /// [`Clock::Device`] or a [`DeviceInput`](crate::DeviceInput) names.
    ///
    /// # Errors
    /// [`EngineError::DeviceStream`] when the host cannot enumerate its
    /// devices.
    pub fn devices() -> Result<Vec<crate::DeviceInfo>, EngineError> {
        Ok(sotto_actors::devices::devices()?)
    }

    /// Moves of the renderer between outputs (SPEC D6), from now on. The
    /// stream ends at once when the engine plays no device. At most
    /// 256 unread moves are kept; later ones are dropped.
    #[must_use]
    pub fn device_events(&self) -> mpsc::Receiver<DeviceEvent> {
        let (tx, rx) = mpsc::channel(DEVICE_EVENT_QUEUE);
        if let Some(manager) = &self.inner.device {
            let _ = manager.send_message(DeviceMsg::Subscribe(tx));
        }
        rx
    }

    /// The device the renderer plays through now; `None` when it runs on
    /// a clock (from the start or after a device failed).
    ///
    /// # Errors
    /// [`EngineError::Stopped`] after shutdown.
    pub async fn playing_device(&self) -> Result<Option<String>, EngineError> {
        let Some(manager) = &self.inner.device else {
            return Ok(None);
        };
        ractor::call!(manager, DeviceMsg::Playing).map_err(|_| EngineError::Stopped)
    }

    /// Opens a microphone (SPEC D3). With `echo`, its frames go through
    /// echo cancellation against exactly what this engine's output plays
    /// (SPEC D4), re-bound whenever the output moves; frames are then mono
    /// at 48 kHz.
    ///
    /// # Errors
    /// [`EngineError::NoDevice`], [`EngineError::DeviceFormat`] or
    /// [`EngineError::DeviceStream`] naming the device;
    /// [`EngineError::Echo`] when echo cancellation cannot run as asked.
    pub fn open_input(
        &self,
        config: &InputConfig,
        echo: Option<EchoConfig>,
    ) -> Result<DeviceInput, EngineError> {
        let input = match echo {
            None => Capture::open(config),
            Some(echo) => Capture::open_with_echo(config, echo, Arc::clone(&self.inner.reverse)),
        };
        Ok(DeviceInput::new(input?))
    }

    /// Why the engine runs on the virtual clock although a device was
    /// asked for, if it does.
    #[must_use]
    pub fn device_fallback(&self) -> Option<&str> {
        self.inner.fallback.as_deref()
    }
}

//! Fault injection for tests (feature `fault-injection`): make an actor
//! or the device fail on purpose, to prove supervision and recovery.

use sotto_actors::device_manager::DeviceMsg;
use sotto_actors::pump::{send_pump, PumpMsg};

use super::*;

impl Engine {
    /// Fault injection for supervision tests: the event pump panics while
    /// handling a message.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] after shutdown.
    #[doc(hidden)]
    pub fn inject_pump_fault(&self) -> Result<(), EngineError> {
        send_pump(&self.inner.pump, &self.inner.quiesce, PumpMsg::Panic)
            .then_some(())
            .ok_or(EngineError::Stopped)
    }

    /// Fault injection for supervision tests: the device manager panics
    /// while handling a message.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] when no device manager runs;
    /// [`EngineError::Stopped`] after shutdown.
    #[doc(hidden)]
    pub fn inject_device_manager_fault(&self) -> Result<(), EngineError> {
        let Some(manager) = &self.inner.device else {
            return Err(EngineError::WrongClock("device"));
        };
        manager
            .send_message(DeviceMsg::Panic)
            .map_err(|_| EngineError::Stopped)
    }

    /// Fault injection for tests: the device stream reports an underrun
    /// (`underrun`, counted, nothing moves) or a failure, through the path
    /// the host's error callback takes.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] when no device is playing.
    pub async fn inject_device_fault(&self, underrun: bool) -> Result<(), EngineError> {
        let Some(manager) = &self.inner.device else {
            return Err(EngineError::WrongClock("device"));
        };
        match ractor::call!(manager, DeviceMsg::InjectFault, underrun) {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::WrongClock("device")),
            Err(_) => Err(EngineError::Stopped),
        }
    }

    /// Fault injection for tests: from now on the host's default output
    /// is `device` (`None`: what the host says). An engine that follows
    /// the default ([`Clock::Device`] with no name) moves to it.
    ///
    /// # Errors
    /// [`EngineError::WrongClock`] when no device is playing.
    pub fn inject_default_device(&self, device: Option<String>) -> Result<(), EngineError> {
        let Some(manager) = &self.inner.device else {
            return Err(EngineError::WrongClock("device"));
        };
        manager
            .send_message(DeviceMsg::InjectDefault(device))
            .map_err(|_| EngineError::Stopped)
    }
}

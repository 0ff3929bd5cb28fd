//! Each session's own output as a scenario reads it (`--sessions-dir`):
//! between render chunks offline, by a task of its own in real time.

use sotto::OutputFrames;

use crate::scenario::out::Track;

/// One session's own output as the render reads it: frames placed at
/// their pts, a lost frame's place left silent.
pub(super) struct Call {
    frames: Option<OutputFrames>,
    pub(super) track: Track,
    channels: usize,
}

/// A session's own output read by a task of its own, on a real-time clock.
pub(super) struct Collector {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Call>,
}

impl Call {
    pub(super) fn new(frames: OutputFrames, track: Track, channels: usize) -> Self {
        Self {
            frames: Some(frames),
            track,
            channels,
        }
    }

    fn place(&mut self, frame: &sotto::Frame) {
        self.track
            .place(frame.pts.0 as usize * self.channels, &frame.samples);
    }

    pub(super) fn drain(&mut self) {
        while let Some(frame) = self.frames.as_mut().and_then(OutputFrames::try_next_frame) {
            self.place(&frame);
        }
    }

    pub(super) fn drain_rest(&mut self) {
        let rest = self.frames.as_mut().map(OutputFrames::take_rest);
        for frame in rest.into_iter().flatten() {
            self.place(&frame);
        }
    }

    pub(super) fn collect(mut self) -> Collector {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let Some(mut frames) = self.frames.take() else {
                return self;
            };
            loop {
                tokio::select! {
                    frame = frames.next_frame() => match frame {
                        Ok(frame) => self.place(&frame),
                        Err(_) => break,
                    },
                    _ = &mut stopped => break,
                }
            }
            self.frames = Some(frames);
            self.drain_rest();
            self
        });
        Collector { stop, task }
    }
}

impl Collector {
    /// The call, once its reader has read what was rendered; `None` if
    /// the reader failed.
    pub(super) async fn finish(self) -> Option<Call> {
        let _ = self.stop.send(());
        self.task.await.ok()
    }
}

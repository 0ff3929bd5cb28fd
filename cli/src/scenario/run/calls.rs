//! Each session's own output as a scenario reads it (`--sessions-dir`):
//! between render chunks offline, by a task of its own in real time.

use sotto::OutputFrames;

/// One session's own output as the render reads it: frames placed at
/// their pts.
pub(super) struct Call {
    frames: Option<OutputFrames>,
    pub(super) samples: Vec<f32>,
    channels: usize,
}

/// A session's own output read by a task of its own, on a real-time clock.
pub(super) struct Collector {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Call>,
}

impl Call {
    pub(super) fn new(frames: OutputFrames, total: usize, channels: usize) -> Self {
        Self {
            frames: Some(frames),
            samples: vec![0.0; total * channels],
            channels,
        }
    }

    fn place(&mut self, frame: &sotto::Frame) {
        let at = frame.pts.0 as usize * self.channels;
        if at < self.samples.len() {
            let n = frame.samples.len().min(self.samples.len() - at);
            self.samples[at..at + n].copy_from_slice(&frame.samples[..n]);
        }
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
    pub(super) async fn finish(self) -> Call {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(call) => call,
            Err(_) => Call {
                frames: None,
                samples: Vec::new(),
                channels: 1,
            },
        }
    }
}

//! Reading a session's own output as frames (SPEC C1–C3, C5).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use sotto_actors::frames::{Frame, Framer, OutputShared};
use sotto_actors::session::SessionShared;
use sotto_rt::FrameCount;

use crate::SessionError;
use sotto_actors::{AudioSink, SessionEvent, SessionEventKind};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// An output (a session's own, or a shared one), read frame by frame: each frame with its pts on
/// the engine's sample clock, one frame after the other. A reader that
/// lags more than the output's bound loses its oldest frames (counted in
/// [`OutputFrames::lost_frames`]) and sees the pts jump by exactly that;
/// it never slows the audio thread or another output.
///
/// On the real-time clocks [`OutputFrames::next_frame`] waits for the next
/// frame. On the offline clock it never waits: a frame not yet rendered is
/// [`SessionError::NotRendering`] (C5), so a caller cannot hang by awaiting a
/// frame nobody will render.
///
/// It is also a [`Stream`] of frames, which ends when the session is gone
/// and its frames are read (on the offline clock, when nothing rendered is
/// left to read).
pub struct OutputFrames {
    framer: Framer,
    rendered: Arc<Notify>,
    offline: bool,
    owner: Owner,
    /// The wake-up a pending `poll_next` waits for.
    waiting: Option<Pin<Box<OwnedNotified>>>,
    /// Lost frames already reported as an event.
    reported_lost: u64,
}

impl std::fmt::Debug for OutputFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFrames")
            .field("owner", &self.owner)
            .field("offline", &self.offline)
            .field("lost_frames", &self.framer.lost_frames())
            .finish_non_exhaustive()
    }
}

/// Whose output the frames are.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    /// A session's own: losses are reported as its events.
    Session(Arc<SessionShared>),
    /// A shared output: losses are counted only.
    Shared(Arc<OutputShared>),
}

impl Owner {
    fn is_closed(&self) -> bool {
        match self {
            Self::Session(s) => s.is_closed(),
            Self::Shared(o) => o.is_closed(),
        }
    }

    fn renderer(&self) -> &sotto_rt::Telemetry {
        match self {
            Self::Session(s) => &s.renderer,
            Self::Shared(o) => &o.renderer,
        }
    }

    fn closing(&self) -> &Notify {
        match self {
            Self::Session(s) => &s.closing,
            Self::Shared(o) => &o.closing,
        }
    }
}

impl OutputFrames {
    pub(crate) fn new(framer: Framer, rendered: Arc<Notify>, offline: bool, owner: Owner) -> Self {
        Self {
            framer,
            rendered,
            offline,
            owner,
            waiting: None,
            reported_lost: 0,
        }
    }

    /// The next frame from the framer; a loss just behind it is reported
    /// as a session event at its pts (SPEC C3).
    fn take(&mut self) -> Option<Frame> {
        let frame = self.framer.next_frame()?;
        self.report_loss(&frame);
        Some(frame)
    }

    fn report_loss(&mut self, frame: &Frame) {
        let total = self.framer.lost_frames();
        if total > self.reported_lost {
            let frames = total - self.reported_lost;
            self.reported_lost = total;
            if let Owner::Session(session) = &self.owner {
                session.emit(SessionEvent {
                    session: session.id,
                    at: frame.pts,
                    kind: SessionEventKind::FramesLost {
                        frames: FrameCount(frames),
                        total: FrameCount(total),
                    },
                });
            }
        }
    }

    /// Gives the output back, so another reader (a new call) can take it
    /// with `frames()`; what was not read stays for that reader.
    pub fn release(self) {
        match &self.owner {
            Owner::Session(s) => {
                if let Ok(mut slot) = s.frames.lock() {
                    *slot = Some(self.framer);
                }
            }
            Owner::Shared(o) => o.put_framer(self.framer),
        }
    }

    /// The next frame if one is rendered, without waiting.
    pub fn try_next_frame(&mut self) -> Option<Frame> {
        self.take()
    }

    /// The next frame, waiting for it on a real-time clock.
    ///
    /// # Errors
    /// [`SessionError::NotRendering`] on the offline clock when the frame is
    /// not rendered yet; [`SessionError::Closed`] once the session is gone
    /// and its frames are read.
    pub async fn next_frame(&mut self) -> Result<Frame, SessionError> {
        loop {
            // Registered before looking, so a pump between the look and
            // the wait still wakes it.
            let rendered = Arc::clone(&self.rendered);
            let woken = rendered.notified();
            if let Some(frame) = self.take() {
                return Ok(frame);
            }
            if self.owner.is_closed() {
                return Err(SessionError::Closed);
            }
            if self.offline {
                return Err(SessionError::NotRendering);
            }
            woken.await;
        }
    }

    /// Every whole frame waiting, then what is left of the last one as a
    /// shorter frame: for a reader that is done (the output has ended or
    /// the render is over) and wants every sample.
    pub fn take_rest(&mut self) -> Vec<Frame> {
        let mut rest = Vec::new();
        while let Some(f) = self.take() {
            rest.push(f);
        }
        if let Some(f) = self.framer.take_partial() {
            self.report_loss(&f);
            rest.push(f);
        }
        rest
    }

    /// Hands every frame to `sink` from now on, on a task of its own, as
    /// a recorder or a transport takes what the user hears (SPEC C7): the
    /// output after fades, pause ramps, ducking, background and limiter,
    /// not the ingested bytes. The task ends when the session is removed
    /// or the engine stops, after the last frame and the sink's `finish`;
    /// it resolves to the frames written (samples per channel).
    ///
    /// Works on every clock: it takes what each render made, without
    /// waiting on the offline clock for frames nobody renders. An offline
    /// render runs far faster than real time, so there give the output a
    /// `bound` longer than any one render call (or render in pieces), or
    /// the recorder loses frames, counted like any slow reader's.
    ///
    /// # Errors
    /// The task resolves to the first error the sink gave; the
    /// sink is finished all the same.
    pub fn into_sink(
        mut self,
        mut sink: Box<dyn AudioSink>,
        sample_rate: u32,
    ) -> tokio::task::JoinHandle<Result<u64, std::io::Error>> {
        tokio::spawn(async move {
            let channels = self.channels();
            let owner = self.owner.clone();
            let mut written = 0u64;
            let mut failed = None;
            loop {
                let woken = Arc::clone(&self.rendered).notified_owned();
                let closing = owner.closing().notified();
                tokio::pin!(woken, closing);
                woken.as_mut().enable();
                closing.as_mut().enable();
                let closed = owner.is_closed();
                let frames: Vec<Frame> = if closed {
                    self.take_rest()
                } else {
                    std::iter::from_fn(|| self.take()).collect()
                };
                for frame in frames {
                    if failed.is_none() {
                        match sink.write(&frame.samples, sample_rate, channels) {
                            Ok(()) => written += frame.frames() as u64,
                            Err(e) => failed = Some(e),
                        }
                    }
                }
                if closed {
                    break;
                }
                tokio::select! {
                    () = woken => {}
                    () = closing => {}
                }
            }
            let finished = sink.finish();
            match failed {
                Some(e) => Err(e),
                None => finished.map(|()| written),
            }
        })
    }

    /// Interleaved channels of each frame.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.framer.reader().channels()
    }

    /// The length of each output frame, in sample frames.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.framer.frame_len()
    }

    /// Frames lost because this reader lagged (SPEC C3, C6).
    #[must_use]
    pub fn lost_frames(&self) -> u64 {
        self.framer.lost_frames()
    }

    /// Frames (samples per channel) handed to this reader so far (SPEC C6).
    #[must_use]
    pub fn delivered_frames(&self) -> u64 {
        self.framer.delivered_frames()
    }

    /// Frames rendered into the output so far (SPEC C6).
    #[must_use]
    pub fn rendered_frames(&self) -> u64 {
        self.framer.rendered_frames()
    }

    /// Blocks the output's render shard produced after their deadline
    /// (SPEC C6): every output on a shard shares its lateness.
    #[must_use]
    pub fn shard_late_blocks(&self) -> u64 {
        self.owner
            .renderer()
            .late_blocks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The peak level of the output's last block, after its limiter (C6).
    #[must_use]
    pub fn peak(&self) -> f32 {
        self.framer
            .reader()
            .telemetry
            .peak
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Stream for OutputFrames {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = self.get_mut();
        loop {
            if this.waiting.is_none() {
                let mut woken = Box::pin(Arc::clone(&this.rendered).notified_owned());
                // Registered before looking, as in `next_frame`.
                woken.as_mut().enable();
                this.waiting = Some(woken);
            }
            if let Some(frame) = this.take() {
                this.waiting = None;
                return Poll::Ready(Some(frame));
            }
            if this.offline || this.owner.is_closed() {
                this.waiting = None;
                return Poll::Ready(None);
            }
            let Some(waiting) = this.waiting.as_mut() else {
                continue;
            };
            match waiting.as_mut().poll(cx) {
                Poll::Ready(()) => this.waiting = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

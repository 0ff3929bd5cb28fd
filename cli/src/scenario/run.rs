//! Running a prepared scenario through a fresh engine: each step applied
//! before the first block at or after its time, then the log gathered.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map};
use sotto::{
    BackgroundConfig, BackgroundHandle, Clock, Engine, EngineConfig, EngineError, OutputConfig,
    SessionConfig, SessionHandle, SessionOutput,
};
use sotto_server::avatar::AvatarServer;

use super::audio::Chunks;
use super::out::Track;
use super::{describe, LogEvent, Op, Prepared, Ready, Rendered, ScenarioError, Step};

mod avatar;
mod calls;
mod outputs;
use calls::Call;
pub use outputs::{file_name_ok, OutFiles, RenderOptions};
use outputs::{Drain, CAPTURE_RING};

/// Longest wait for an avatar's segments to be acknowledged.
const AVATAR_SETTLE: Duration = Duration::from_secs(60);

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

/// A push's outcome, not polled until the scenario ends: the push itself
/// is sent when made, and a task per chunk would cost more than the chunk.
type PushWait = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<sotto::PushOutcome, sotto::SessionError>> + Send>,
>;

/// Bytes of pushes a step keeps in a session's mailbox at most: the
/// scenario waits for the session to take them rather than build a queue.
pub(super) const IN_FLIGHT_BYTES: usize = 8 << 20;

struct Run {
    engine: Engine,
    handles: Vec<SessionHandle>,
    streams: Vec<tokio::sync::mpsc::Receiver<sotto::SessionEvent>>,
    log: Vec<LogEvent>,
    /// Each chunk pushed, by session: its outcome, awaited at the end.
    pushes: Vec<(usize, PushWait)>,
    /// The background source of each session that has one.
    backgrounds: HashMap<usize, BackgroundHandle>,
    /// The in-process avatar server, once a session attached one.
    avatar_server: Option<(AvatarServer, String)>,
    /// The avatar link of each session that has one.
    avatars: HashMap<usize, sotto::AvatarHandle>,
    /// What links taken off had sent and handled: PCM samples, control
    /// messages, acknowledgements.
    retired: [u64; 3],
    /// Rendering on the offline clock.
    offline: bool,
    /// The avatar once failed to catch up (a peer gone, audio lost): the
    /// render stops waiting for it.
    lockstep_off: std::sync::atomic::AtomicBool,
}

impl Prepared {
    /// Renders the scenario through a fresh engine.
    ///
    /// # Errors
    /// [`ScenarioError::Engine`] if the engine fails.
    pub async fn render(&self, clock: RenderClock) -> Result<Rendered, ScenarioError> {
        self.render_with(clock, RenderOptions::default()).await
    }

    /// Renders the scenario through a fresh engine, with `options`.
    ///
    /// # Errors
    /// [`ScenarioError::Engine`] if the engine fails.
    pub async fn render_with(
        &self,
        clock: RenderClock,
        options: RenderOptions,
    ) -> Result<Rendered, ScenarioError> {
        let sc = &self.scenario;
        let rate = sc.sample_rate;
        let ch = sc.channels;
        let total = (sc.duration.0 * f64::from(rate)).round() as u64;
        self.check_outputs(&clock, &options, total)?;
        let engine = Engine::start(EngineConfig {
            sample_rate: rate,
            channels: ch,
            block_frames: sc.block,
            max_sessions: self.sessions.len().max(1),
            clock: match &clock {
                RenderClock::Offline => Clock::Offline,
                RenderClock::Virtual => Clock::Virtual {
                    // Drained as the clock runs: a bounded ring, whatever
                    // the scenario's length.
                    capture: Some(Duration::from_secs_f64(sc.duration.0 + 1.0).min(CAPTURE_RING)),
                    deferred: true,
                },
                RenderClock::Device(name) => Clock::Device {
                    name: name.clone(),
                    deferred: true,
                },
            },
            saturation: sotto::Saturation::Hard,
            ..EngineConfig::default()
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
            retired: [0; 3],
            offline: matches!(clock, RenderClock::Offline),
            lockstep_off: std::sync::atomic::AtomicBool::new(false),
        };
        let mut mix = match (&clock, &options.files) {
            (RenderClock::Device(_), _) => Track::nowhere(),
            (_, Some(files)) => Track::wav(&files.mix, total, rate, ch, files.float)?,
            (_, None) => Track::memory(total, ch),
        }
        .with_envelope(total, ch);
        if let (
            true,
            Some(OutFiles {
                sessions_dir: Some(dir),
                ..
            }),
        ) = (options.sessions, &options.files)
        {
            std::fs::create_dir_all(dir).map_err(|source| ScenarioError::Write {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut calls = Vec::new();
        for c in &self.sessions {
            let mut c = c.clone();
            c.output = if options.sessions {
                // Its own output as well as the main mix; a generous bound,
                // since the offline render is read between chunks.
                SessionOutput::Own(OutputConfig {
                    bound: OWN_OUTPUT_BOUND,
                    ..OutputConfig::default()
                })
            } else {
                // Nobody reads the sessions' own outputs: the main mix is
                // the whole render.
                SessionOutput::Main
            };
            let name = c.name.clone();
            let h = engine.create_session(c).await?;
            if options.sessions {
                let frames = h
                    .frames()
                    .map_err(|e| ScenarioError::Engine(EngineError::Config(e.to_string())))?;
                let track = match &options.files {
                    Some(files) => {
                        let dir = files.sessions_dir.as_deref().unwrap_or(Path::new("."));
                        Track::wav(
                            &dir.join(format!("{name}.wav")),
                            total,
                            rate,
                            ch,
                            files.float,
                        )?
                    }
                    None => Track::memory(total, ch),
                };
                calls.push(Call::new(frames, track, ch));
            }
            run.streams.push(h.events());
            run.handles.push(h);
        }
        let realtime = !matches!(clock, RenderClock::Offline);
        let collectors: Vec<_> = if realtime {
            calls.drain(..).map(Call::collect).collect()
        } else {
            Vec::new()
        };
        let block = sc.block as u64;
        let mut clock_running = false;
        // On a real-time clock the mix is drained from the capture ring by
        // a task of its own, so a step that takes long (an avatar detach
        // waiting for its segments) never lets the ring fill.
        let mut drain = None;
        for Ready {
            session: si,
            step,
            wav,
            index,
        } in &self.steps
        {
            let frame = (step.t.0 * f64::from(rate)).ceil() as u64;
            let boundary = frame.div_ceil(block) * block;
            match clock {
                RenderClock::Offline => {
                    render_offline(&engine, boundary, block, &mut mix, &mut calls, &run).await?;
                }
                RenderClock::Virtual | RenderClock::Device(_) => {
                    if boundary > 0 && !clock_running {
                        engine.settle().await?;
                        engine.run_clock().await?;
                        clock_running = true;
                        drain = Some(Drain::start(
                            &engine,
                            std::mem::replace(&mut mix, Track::nowhere()),
                        ));
                    }
                    wait_for_sample(&engine, boundary, rate).await;
                }
            }
            let background = self.backgrounds.get(index);
            run.apply(*si, step, wav.as_deref(), &self.sessions[*si], background)
                .await?;
        }
        let late_blocks;
        let mut tracks = Vec::new();
        match clock {
            RenderClock::Offline => {
                render_offline(&engine, total, block, &mut mix, &mut calls, &run).await?;
                for call in &mut calls {
                    call.drain_rest();
                }
                late_blocks = 0;
            }
            RenderClock::Virtual | RenderClock::Device(_) => {
                engine.settle().await?;
                if !clock_running {
                    engine.run_clock().await?;
                    drain = Some(Drain::start(
                        &engine,
                        std::mem::replace(&mut mix, Track::nowhere()),
                    ));
                }
                while engine.clock().0 < total {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if let Some(drain) = drain {
                    mix = drain.finish().await;
                }
                for collector in collectors {
                    tracks.push(collector.finish().await);
                }
                late_blocks = engine.late_blocks();
            }
        }
        if !realtime {
            tracks = calls.into_iter().map(Some).collect();
        }
        engine.settle().await?;
        let mut events = run.finish().await;
        events.sort_by_key(|e| (e.sample, e.order));
        engine.shutdown().await;
        let (samples, envelope) = mix.finish()?;
        let mut sessions = Vec::new();
        for (call, c) in tracks.into_iter().zip(&self.sessions) {
            let samples = match call {
                Some(call) => call.track.finish()?.0,
                None => Vec::new(),
            };
            sessions.push((c.name.clone(), samples));
        }
        Ok(Rendered {
            samples,
            frames: total,
            envelope: envelope.unwrap_or_else(|| crate::plot::Envelope::new(total, ch)),
            sample_rate: rate,
            channels: ch,
            events,
            late_blocks,
            device_fallback: engine.device_fallback().map(str::to_owned),
            sessions,
        })
    }
}

/// Waits until the engine's sample clock has reached `sample`, so a step
/// lands on the sample clock however long the steps before it (an avatar
/// attach, a decode) took in wall time: sleeps what is left by the clock's
/// own count, then looks again.
async fn wait_for_sample(engine: &Engine, sample: u64, rate: u32) {
    loop {
        let now = engine.clock().0;
        if now >= sample {
            return;
        }
        let left = sotto_rt::duration_of(sample - now, rate);
        tokio::time::sleep(left.max(Duration::from_millis(1))).await;
    }
}

/// How far a session's own output may run ahead of its reader here: the
/// offline render reads between chunks of at most half of it.
const OWN_OUTPUT_BOUND: Duration = Duration::from_secs(2);

/// Renders offline up to `until`, in chunks short enough that no session's
/// own output outruns its bound, reading those outputs after each chunk.
/// With an avatar attached it goes block by block in step with it.
async fn render_offline(
    engine: &Engine,
    until: u64,
    block: u64,
    mix: &mut Track,
    calls: &mut [Call],
    run: &Run,
) -> Result<(), ScenarioError> {
    let rate = engine.config().sample_rate;
    // A second at most: the mix is written out between chunks.
    let mut chunk = (u64::from(rate) / block).max(1) * block;
    if !run.avatars.is_empty() {
        chunk = block;
    } else if !calls.is_empty() {
        chunk = chunk.min((sotto_rt::frames_of(OWN_OUTPUT_BOUND, rate) / 2 / block).max(1) * block);
    }
    let mut samples = Vec::new();
    loop {
        // Before each block, and once the render is there: a step applied
        // next finds the avatar where the render is.
        run.avatar_lockstep().await;
        let now = engine.clock().0;
        if now >= until {
            return Ok(());
        }
        samples.clear();
        engine
            .render_into((until - now).min(chunk), &mut samples)
            .await?;
        mix.write(&samples);
        for call in calls.iter_mut() {
            call.drain();
        }
    }
}

impl Run {
    async fn apply(
        &mut self,
        si: usize,
        step: &Step,
        wav: Option<&Path>,
        config: &SessionConfig,
        background: Option<&BackgroundConfig>,
    ) -> Result<(), ScenarioError> {
        let h = self.handles[si].clone();
        let closed =
            |e: sotto::SessionError| ScenarioError::Engine(EngineError::Config(e.to_string()));
        match &step.op {
            Op::BeginSynthesis {} => h.mark_synthesis_start().map_err(closed)?,
            Op::EndSynthesis {} => h.mark_synthesis_complete().map_err(closed)?,
            Op::PushTone(_) | Op::PushWav { .. } | Op::PushBackgroundTone(_) => {
                let size = step.op.chunk_bytes().unwrap_or(4800).max(1);
                let chunks = match (&step.op, wav) {
                    (Op::PushTone(t) | Op::PushBackgroundTone(t), _) => {
                        Chunks::tone(t, config.input, size)
                    }
                    (_, Some(path)) => match Chunks::wav(path, config.input, size) {
                        Ok(c) => c,
                        Err(m) => {
                            self.log_end(si, "error", m);
                            return Ok(());
                        }
                    },
                    (_, None) => return Ok(()),
                };
                let background = matches!(step.op, Op::PushBackgroundTone(_));
                // Made as it is sent, and only so far ahead of the session.
                let in_flight =
                    (IN_FLIGHT_BYTES / size).clamp(1, sotto::SessionHandle::MAILBOX_LIMIT);
                for chunk in chunks {
                    let chunk = match chunk {
                        Ok(c) => c,
                        // The file changed since it was checked.
                        Err(m) => {
                            self.log_end(si, "error", m);
                            break;
                        }
                    };
                    while h.mailbox_len() >= in_flight {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let wait: PushWait = if background {
                        Box::pin(h.push_background(chunk))
                    } else {
                        Box::pin(h.push(chunk))
                    };
                    self.pushes.push((si, wait));
                }
            }
            Op::Interrupt {} => h.interrupt().map_err(closed)?,
            Op::Pause {} => h.pause().map_err(closed)?,
            Op::Resume {} => h.resume().map_err(closed)?,
            Op::EnableInput { manual } => h.enable_audio_input(*manual).map_err(closed)?,
            Op::DisableInput {} => h.disable_audio_input().map_err(closed)?,
            Op::Clear {} => {
                // Sent at once; the outcome shows up as a `cleared` event.
                drop(h.clear_queue());
            }
            Op::SetFade { seconds } => h
                .set_fade(Duration::from_secs_f64(*seconds))
                .map_err(closed)?,
            Op::WaitPlayout {} => {
                drop(h.wait_for_playout());
            }
            Op::BackgroundStart { .. } => {
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
            Op::BackgroundStop {} => {
                if let Some(bg) = self.backgrounds.remove(&si) {
                    let _ = bg.stop().await;
                }
            }
            Op::BackgroundVolume { volume } => {
                if let Some(bg) = self.backgrounds.get(&si) {
                    let _ = bg.set_volume(*volume).await;
                }
            }
            Op::AvatarAttach { path } => {
                if let Some(old) = self.avatars.remove(&si) {
                    self.retire(old);
                }
                let link = self.avatar_link(path.as_deref()).await?;
                let avatar = self.engine.attach_avatar(&h, link).await?;
                self.avatars.insert(si, avatar);
            }
            Op::AvatarDetach {} => {
                if self.offline {
                    // Offline the avatar plays only as the render goes:
                    // what it has not played by now is cut by the detach.
                    self.avatar_lockstep().await;
                } else if let Some(avatar) = self.avatars.get(&si) {
                    avatar.wait_idle(AVATAR_SETTLE).await;
                }
                if let Some(avatar) = self.avatars.remove(&si) {
                    self.retire(avatar);
                }
            }
            Op::Snapshot {} => {
                let snap = h.snapshot_playback();
                self.engine.settle().await?;
                let sotto::PlaybackSnapshot {
                    played_frames: played,
                    pushed_frames: pushed,
                    ..
                } = snap.await.map_err(closed)?;
                let mut fields = Map::new();
                fields.insert("played".into(), json!(played.get()));
                fields.insert("pushed".into(), json!(pushed.get()));
                self.log.push(LogEvent {
                    sample: self.engine.clock().0,
                    session: config.name.clone(),
                    event: "snapshot".into(),
                    fields,
                    order: (si, 0),
                });
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Vec<LogEvent> {
        // The avatar plays in the render's time: offline it has played what
        // the render reached once it has caught up; on a real-time clock
        // let its segments finish playing and be acknowledged.
        if self.offline {
            self.avatar_lockstep().await;
        }
        let avatars: Vec<_> = self.avatars.drain().map(|(_, a)| a).collect();
        for avatar in avatars {
            if !self.offline {
                avatar.wait_idle(AVATAR_SETTLE).await;
            }
            self.retire(avatar);
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
        // On a real-time clock a push may be a moment from done: one short
        // grace for all of them, not one each.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        let mut unfinished = vec![0usize; self.handles.len()];
        for (si, mut p) in std::mem::take(&mut self.pushes) {
            let outcome = tokio::time::timeout_at(deadline, &mut p).await;
            let Ok(outcome) = outcome else {
                // Audio still waiting for room when the scenario ends (more
                // was pushed than its duration plays): counted, not waited
                // for — the clock has stopped and would never make room.
                if let Some(n) = unfinished.get_mut(si) {
                    *n += 1;
                }
                continue;
            };
            if let Err(e) = outcome {
                self.log_end(si, "error", e.to_string());
            }
        }
        for (si, n) in unfinished.into_iter().enumerate() {
            if n > 0 {
                self.log_end(
                    si,
                    "push_unfinished",
                    format!("{n} push(es) still waiting for room when the scenario ended"),
                );
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

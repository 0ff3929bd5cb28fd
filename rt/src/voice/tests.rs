//! Sample-exact tests of one voice, driven block by block the way the
//! renderer drives it, with no renderer, actor or clock around it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use crate::FromSlot;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};

use super::{DuckConfig, Voice, VoiceConfig, VoiceControl};
use crate::renderer::EventOut;
use crate::{
    fade_gain, ClipCommand, Event, EventKind, SampleTime, Saturation, SessionId, StreamPos,
};
use crate::{VoiceCommand as V, VoiceCommand};

const EPS: f32 = 1e-6;

fn config() -> VoiceConfig {
    VoiceConfig {
        session: SessionId::from_slot(0),
        generation: 0,
        channels: 1,
        speech_capacity_frames: 10_000,
        background_capacity_frames: 10_000,
        command_capacity: 16,
        fade_frames: 0,
        grace_frames: 0,
        pause_ramp_frames: 1,
        duck: None,
        background_gain: 1.0,
        gain_ramp_frames: 1,
        saturation: Saturation::Hard,
        doorbells: None,
        output: None,
    }
}

/// One voice and the ends the renderer would hold around it.
struct Rig {
    control: VoiceControl,
    voice: Voice,
    events_tx: Producer<Event>,
    events_rx: Consumer<Event>,
    dropped: AtomicU64,
    scratch: Vec<f32>,
    now: SampleTime,
}

impl Rig {
    fn new(config: &VoiceConfig) -> Self {
        let (control, voice) = Voice::new(config);
        let (events_tx, events_rx) = RingBuffer::new(1024);
        Self {
            control,
            voice,
            events_tx,
            events_rx,
            dropped: AtomicU64::new(0),
            scratch: vec![0.0; 2 * 4096],
            now: SampleTime(0),
        }
    }

    fn speech(&mut self, samples: &[f32]) {
        assert_eq!(
            self.control.speech_tx.push_partial_slice(samples).1.len(),
            0
        );
    }

    fn background(&mut self, samples: &[f32]) {
        assert_eq!(
            self.control
                .background_tx
                .push_partial_slice(samples)
                .1
                .len(),
            0
        );
    }

    fn send(&mut self, cmd: VoiceCommand) {
        self.control.send(cmd).unwrap();
    }

    /// Renders one block of `frames`, as the renderer does: commands first.
    fn block(&mut self, frames: usize) -> Vec<f32> {
        let mut out = vec![0.0; frames * self.voice.channels()];
        let mut events = EventOut::new(&mut self.events_tx, &self.dropped);
        self.voice.apply_commands(self.now, &mut events);
        self.voice
            .process(&mut out, &mut self.scratch, self.now, &mut events);
        self.now = self.now.plus(frames as u64);
        out
    }

    /// Renders `frames` in blocks of at most `block`.
    fn run(&mut self, frames: usize, block: usize) -> Vec<f32> {
        let mut out = Vec::new();
        while out.len() < frames {
            out.extend(self.block(block.min(frames - out.len())));
        }
        out
    }

    fn events(&mut self) -> Vec<(u64, EventKind)> {
        let mut all = Vec::new();
        while let Ok(e) = self.events_rx.pop() {
            all.push((e.at.0, e.kind));
        }
        all
    }
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_close_case(got, want, what, None);
}

/// As [`assert_close`], naming the `(pending, fade)` case in a failure.
fn assert_close_case(got: &[f32], want: &[f32], what: &str, case: Option<(u64, u32)>) {
    assert_eq!(got.len(), want.len(), "{what} {case:?}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < EPS,
            "{what} {case:?}: frame {k}: {g} vs {w}"
        );
    }
}

#[test]
fn interrupt_fades_to_the_fence_then_plays_what_follows() {
    let mut rig = Rig::new(&VoiceConfig {
        fade_frames: 100,
        ..config()
    });
    rig.speech(&[0.5; 1000]);
    assert_eq!(rig.block(64), vec![0.5; 64]);
    rig.send(V::Interrupt {
        fence: StreamPos(1000),
    });
    // Pushed after the interrupt: beyond the fence, so it follows the tail.
    rig.speech(&[-0.25; 50]);
    let out = rig.run(256, 64);
    let tail: Vec<f32> = (0..100).map(|k| 0.5 * fade_gain(k, 100)).collect();
    assert_close(&out[..100], &tail, "tail");
    assert_eq!(out[99], 0.0, "the tail's last sample is exactly 0");
    assert_eq!(&out[100..150], &[-0.25; 50], "the next turn, unmixed");
    assert!(out[150..].iter().all(|&v| v == 0.0), "silence after");
    let events = rig.events();
    assert!(events.contains(&(
        64,
        EventKind::Interrupted {
            tail_frames: 100,
            skipped_frames: 836
        }
    )));
    assert!(events.iter().any(|e| e.1 == EventKind::FadeDone));
}

#[test]
fn a_short_queue_fades_over_its_own_length_and_zero_fade_cuts() {
    for (pending, fade) in [(30u64, 100u32), (100, 100), (7, 1), (500, 0)] {
        let mut rig = Rig::new(&VoiceConfig {
            fade_frames: fade,
            ..config()
        });
        rig.speech(&vec![1.0; pending as usize]);
        rig.send(V::Interrupt {
            fence: StreamPos(pending),
        });
        let out = rig.run(600, 128);
        let tail = pending.min(u64::from(fade));
        let want: Vec<f32> = (0..600)
            .map(|k| if k < tail { fade_gain(k, tail) } else { 0.0 })
            .collect();
        assert_close_case(&out, &want, "pending, fade", Some((pending, fade)));
    }
}

#[test]
fn a_second_interrupt_keeps_the_tail_that_is_playing() {
    let mut rig = Rig::new(&VoiceConfig {
        fade_frames: 200,
        ..config()
    });
    rig.speech(&[0.5; 1000]);
    rig.send(V::Interrupt {
        fence: StreamPos(1000),
    });
    let first = rig.block(50);
    rig.speech(&[0.25; 100]);
    rig.send(V::Interrupt {
        fence: StreamPos(1100),
    });
    let rest = rig.run(250, 50);
    let out: Vec<f32> = first.into_iter().chain(rest).collect();
    let tail: Vec<f32> = (0..200).map(|k| 0.5 * fade_gain(k, 200)).collect();
    assert_close(&out[..200], &tail, "one tail, not restarted");
    assert!(
        out[200..].iter().all(|&v| v == 0.0),
        "the cut turn never plays"
    );
}

#[test]
fn pause_resumes_where_it_stopped() {
    let mut rig = Rig::new(&VoiceConfig {
        pause_ramp_frames: 4,
        ..config()
    });
    let ramp: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
    rig.speech(&ramp);
    assert_eq!(rig.block(8), ramp[..8]);
    rig.send(V::Pause);
    let paused = rig.run(16, 8);
    let down = [0.75, 0.5, 0.25, 0.0];
    let want: Vec<f32> = (0..16)
        .map(|k| if k < 4 { ramp[8 + k] * down[k] } else { 0.0 })
        .collect();
    assert_close(&paused, &want, "ramp down, then silence");
    rig.send(V::Resume);
    let resumed = rig.block(8);
    let up = [0.25, 0.5, 0.75, 1.0];
    let want: Vec<f32> = (0..8)
        .map(|k| ramp[12 + k] * if k < 4 { up[k] } else { 1.0 })
        .collect();
    assert_close(&resumed, &want, "ramp up from where it stopped");
    let kinds: Vec<EventKind> = rig.events().into_iter().map(|e| e.1).collect();
    assert!(kinds.contains(&EventKind::Paused) && kinds.contains(&EventKind::Resumed));
}

#[test]
fn an_interrupt_while_paused_is_silent() {
    let mut rig = Rig::new(&VoiceConfig {
        pause_ramp_frames: 4,
        fade_frames: 40,
        ..config()
    });
    let ramp: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
    rig.speech(&ramp);
    rig.block(8);
    rig.send(V::Pause);
    rig.run(16, 8); // four frames of ramp, then frozen at frame 12
    assert_eq!(rig.voice.played, 12);
    rig.send(V::Interrupt {
        fence: StreamPos(100),
    });
    let out = rig.run(64, 8);
    assert_close(&out, &[0.0; 64], "nothing of the paused turn again");
    let events = rig.events();
    assert!(events.contains(&(
        24,
        EventKind::Interrupted {
            tail_frames: 0,
            skipped_frames: 88
        }
    )));
    assert!(!events.iter().any(|e| e.1 == EventKind::FadeDone));
    assert_eq!(rig.voice.played, 12, "what was heard, no more");
    // The next turn plays at once, unpaused.
    rig.speech(&[0.5; 8]);
    assert_close(&rig.block(8), &[0.5; 8], "the next turn");
}

#[test]
fn an_interrupt_during_the_pause_ramp_lets_the_ramp_finish() {
    let mut rig = Rig::new(&VoiceConfig {
        pause_ramp_frames: 4,
        fade_frames: 40,
        ..config()
    });
    rig.speech(&[0.5; 100]);
    rig.block(8);
    rig.send(V::Pause);
    let down = rig.block(2);
    assert_close(&down, &[0.375, 0.25], "two frames down");
    rig.send(V::Interrupt {
        fence: StreamPos(100),
    });
    let out = rig.block(8);
    assert_close(
        &out,
        &[0.125, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "the ramp goes on to zero, then silence",
    );
    let events = rig.events();
    assert!(events.contains(&(
        10,
        EventKind::Interrupted {
            tail_frames: 2,
            skipped_frames: 88
        }
    )));
    assert!(events.iter().any(|e| e.1 == EventKind::FadeDone));
    assert_eq!(rig.voice.played, 12, "the ramp's two frames were heard");
    rig.speech(&[0.5; 8]);
    assert_close(&rig.block(8), &[0.5; 8], "the next turn, unpaused");
}

#[test]
fn an_interrupt_during_the_resume_ramp_fades_under_it() {
    let mut rig = Rig::new(&VoiceConfig {
        pause_ramp_frames: 4,
        fade_frames: 40,
        ..config()
    });
    rig.speech(&[0.5; 100]);
    rig.block(8);
    rig.send(V::Pause);
    rig.run(8, 8); // down and frozen at frame 12
    rig.send(V::Resume);
    let up = rig.block(1);
    assert_close(&up, &[0.125], "one frame up");
    rig.send(V::Interrupt {
        fence: StreamPos(100),
    });
    let out = rig.block(4);
    let want: Vec<f32> = [0.5f32, 0.75, 1.0, 1.0]
        .iter()
        .enumerate()
        .map(|(k, g)| 0.5 * g * fade_gain(k as u64, 40))
        .collect();
    assert_close(&out, &want, "the fade, under the ramp still rising");
}

#[test]
fn speaking_lasts_the_grace_period_after_the_last_real_sample() {
    let mut rig = Rig::new(&VoiceConfig {
        grace_frames: 48,
        ..config()
    });
    rig.speech(&[0.5; 100]);
    rig.run(320, 32);
    let events = rig.events();
    assert_eq!(
        events[0],
        (
            0,
            EventKind::FirstAudio {
                position: StreamPos(0)
            }
        )
    );
    let stopped: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.1, EventKind::StoppedSpeaking { .. }))
        .collect();
    assert_eq!(
        stopped,
        vec![&(
            148,
            EventKind::StoppedSpeaking {
                position: StreamPos(100)
            }
        )],
        "once, at the last real sample plus the grace"
    );
}

#[test]
fn the_duck_envelope_follows_speech_to_the_sample() {
    let mut rig = Rig::new(&VoiceConfig {
        duck: Some(DuckConfig {
            gain: 0.25,
            down_frames: 10,
            up_frames: 20,
        }),
        ..config()
    });
    rig.background(&[0.5; 400]);
    assert_eq!(rig.block(32), vec![0.5; 32], "background alone, unducked");
    // Silent speech: only the duck shapes what is heard.
    rig.speech(&[0.0; 40]);
    let out = rig.run(96, 32);
    let mut gain = 1.0f32;
    let want: Vec<f32> = (0..96)
        .map(|k| {
            gain = if k < 40 {
                (gain - 0.075).max(0.25)
            } else {
                (gain + 0.0375).min(1.0)
            };
            0.5 * gain
        })
        .collect();
    for (k, (g, w)) in out.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-5, "frame {}: {g} vs {w}", 32 + k);
    }
    assert_eq!(out[39], 0.125, "fully ducked by the end of speech");
    assert_eq!(out[95], 0.5, "back to unity 20 frames after");
    let events = rig.events();
    assert!(events.contains(&(
        72,
        EventKind::StoppedSpeaking {
            position: StreamPos(40)
        }
    )));
    assert!(events.contains(&(72, EventKind::Underrun)), "{events:?}");
}

#[test]
fn a_looping_clip_shorter_than_a_block_wraps_sample_contiguously() {
    let mut rig = Rig::new(&config());
    let clip: Arc<[f32]> = Arc::from(vec![0.1f32, 0.2, 0.3]);
    rig.control
        .send_clip(ClipCommand::Play {
            id: 7,
            clip,
            gain: 1.0,
            looping: true,
            after_ring: false,
        })
        .unwrap();
    let out = rig.run(20, 8);
    let want: Vec<f32> = (0..20).map(|k| [0.1, 0.2, 0.3][k % 3]).collect();
    assert_eq!(out, want);
    let wraps: Vec<(u64, EventKind)> = rig
        .events()
        .into_iter()
        .filter(|e| matches!(e.1, EventKind::ClipWrapped { .. }))
        .collect();
    let want: Vec<(u64, EventKind)> = (2..=7)
        .map(|pass| {
            (
                3 * u64::from(pass - 1),
                EventKind::ClipWrapped { id: 7, pass },
            )
        })
        .collect();
    assert_eq!(wraps, want, "each wrap at its exact sample");
}

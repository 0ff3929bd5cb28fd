//! SPEC R2: a panic inside the renderer, on the audio thread, yields
//! silence and the poisoned flag — never an abort, never garbage.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sotto_rt::FromSlot;
use std::sync::atomic::Ordering;

use sotto_actors::driver::guarded_render;
use sotto_rt::{Command, Renderer, RendererConfig, Saturation, SessionId, Voice, VoiceConfig};

#[test]
fn a_renderer_panic_leaves_flagged_silence() {
    let config = RendererConfig {
        channels: 1,
        ..RendererConfig::default()
    };
    let (mut control, mut renderer) = Renderer::new(config).unwrap();
    let (mut voice, installed) = Voice::new(&VoiceConfig {
        session: SessionId::from_slot(0),
        generation: 0,
        channels: 1,
        speech_capacity_frames: 48_000,
        background_capacity_frames: 4_800,
        command_capacity: 64,
        fade_frames: 4_800,
        grace_frames: 2_400,
        pause_ramp_frames: 240,
        duck: None,
        background_gain: 1.0,
        gain_ramp_frames: 480,
        saturation: Saturation::Hard,
        doorbells: None,
        output: None,
    });
    control.add_voice(Box::new(installed)).unwrap();
    let _ = voice.speech_tx.push_partial_slice(&[0.25; 4_800]);
    let telemetry = std::sync::Arc::clone(&control.telemetry);

    let mut out = vec![0.0; 480];
    guarded_render(&mut renderer, &mut out, &telemetry);
    assert!(out.iter().all(|&v| v == 0.25), "plays before the fault");

    control.command_tx.push(Command::Panic).unwrap();
    out.fill(0.7);
    guarded_render(&mut renderer, &mut out, &telemetry);
    assert!(out.iter().all(|&v| v == 0.0), "the failed block is silence");
    assert!(telemetry.poisoned.load(Ordering::Relaxed));

    // Every later block is silence too, though the voice still holds audio:
    // a renderer that panicked may be in any state and is not trusted again.
    for _ in 0..5 {
        out.fill(0.7);
        guarded_render(&mut renderer, &mut out, &telemetry);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}

//! Renderer behaviour that needs no actors: exact block splitting and
//! control-side validation.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)] // not on the audio thread

use sotto_rt::FromSlot;
use sotto_rt::{
    EventKind, Renderer, RendererConfig, RendererError, SessionId, Voice, VoiceCommand, VoiceConfig,
};

fn config(channels: usize) -> VoiceConfig {
    VoiceConfig {
        session: SessionId::from_slot(0),
        generation: 0,
        channels,
        speech_capacity_frames: 10_000,
        background_capacity_frames: 10,
        command_capacity: 8,
        fade_frames: 0,
        grace_frames: 0,
        pause_ramp_frames: 1,
        duck: None,
        background_gain: 1.0,
        gain_ramp_frames: 480,
        saturation: sotto_rt::Saturation::Hard,
        doorbells: None,
        output: None,
    }
}

#[test]
fn any_buffer_length_renders_the_same_samples() {
    let input: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.001).sin() * 0.5).collect();
    let mut outputs = Vec::new();
    for sizes in [vec![64usize], vec![1, 63, 200, 7], vec![4000]] {
        let (mut control, mut r) = Renderer::new(RendererConfig {
            max_block_frames: 64,
            ..RendererConfig::default()
        })
        .unwrap();
        let (mut vc, v) = Voice::new(&config(1));
        let _ = vc.speech_tx.push_partial_slice(&input);
        control.add_voice(Box::new(v)).unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < 4000 {
            let n = sizes[i % sizes.len()].min(4000 - out.len());
            let mut buf = vec![0.0; n];
            r.render(&mut buf);
            out.extend(buf);
            i += 1;
        }
        assert_eq!(r.clock().0, 4000);
        outputs.push(out);
    }
    assert_eq!(outputs[0], input);
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[test]
fn control_side_errors_are_typed() {
    assert_eq!(
        Renderer::new(RendererConfig {
            channels: 0,
            ..RendererConfig::default()
        })
        .unwrap_err(),
        RendererError::InvalidConfig
    );
    let (mut control, _r) = Renderer::new(RendererConfig {
        max_block_frames: 64,
        ..RendererConfig::default()
    })
    .unwrap();
    let (_, stereo) = Voice::new(&config(2));
    assert_eq!(
        control.add_voice(Box::new(stereo)).unwrap_err(),
        RendererError::ChannelMismatch {
            renderer: 1,
            voice: 2
        }
    );
    let mut far = config(1);
    far.session = SessionId::from_slot(1000);
    let (_, v) = Voice::new(&far);
    assert_eq!(
        control.add_voice(Box::new(v)).unwrap_err(),
        RendererError::NoSuchSlot(SessionId::from_slot(1000))
    );
}

/// A command reaches its voice on the next block whether the voice rings the
/// renderer's doorbells, rings another renderer's, or has none.
#[test]
fn commands_arrive_with_or_without_doorbells() {
    let (mut control, mut r) = Renderer::new(RendererConfig {
        max_block_frames: 64,
        max_sessions: 130,
        ..RendererConfig::default()
    })
    .unwrap();
    let (foreign, _other) = Renderer::new(RendererConfig::default()).unwrap();
    let bells = [
        Some(control.doorbells.clone()),
        Some(foreign.doorbells.clone()),
        None,
    ];
    let mut controls = Vec::new();
    // Slots in three different words of the bitset.
    for (slot, bells) in [0u32, 64, 129].into_iter().zip(bells) {
        let mut c = config(1);
        c.session = SessionId::from_slot(slot);
        c.doorbells = bells;
        let (mut vc, v) = Voice::new(&c);
        let _ = vc.speech_tx.push_partial_slice(&[0.25; 1000]);
        control.add_voice(Box::new(v)).unwrap();
        controls.push(vc);
    }
    let mut out = [0.0f32; 64];
    r.render(&mut out);
    assert_eq!(out[0], 0.75);
    for round in 0..3 {
        for vc in &mut controls {
            vc.send(VoiceCommand::Pause).unwrap();
        }
        r.render(&mut out);
        let paused = std::iter::from_fn(|| control.event_rx.pop().ok())
            .filter(|e| e.kind == EventKind::Paused)
            .count();
        assert_eq!(paused, 3, "round {round}");
        for vc in &mut controls {
            vc.send(VoiceCommand::Resume).unwrap();
        }
        r.render(&mut out);
    }
}

fn clip_voice(r: &mut sotto_rt::RendererControl) -> sotto_rt::VoiceControl {
    let mut c = config(1);
    c.background_capacity_frames = 1000;
    c.gain_ramp_frames = 1;
    let (vc, v) = Voice::new(&c);
    r.add_voice(Box::new(v)).unwrap();
    vc
}

/// A looping clip plays sample-contiguously across every wrap, for clips
/// shorter and longer than a block, and reports each wrap at its sample.
#[test]
fn looping_clip_is_seamless() {
    for len in [7usize, 64, 100, 1000] {
        let (mut control, mut r) = Renderer::new(RendererConfig {
            max_block_frames: 64,
            ..RendererConfig::default()
        })
        .unwrap();
        let mut vc = clip_voice(&mut control);
        let clip: Vec<f32> = (0..len).map(|i| (i as f32 + 1.0) / 2000.0).collect();
        vc.send_clip(sotto_rt::ClipCommand::Play {
            id: 9,
            clip: clip.clone().into(),
            gain: 1.0,
            looping: true,
            after_ring: false,
        })
        .unwrap();
        let mut out = vec![0.0f32; 64 * 50];
        r.render(&mut out);
        // The first frame ramps in from silence over one frame.
        let want: Vec<f32> = clip.iter().cycle().take(out.len()).copied().collect();
        assert_eq!(out, want, "clip of {len}");
        let wraps: Vec<u64> = std::iter::from_fn(|| control.event_rx.pop().ok())
            .filter_map(|e| match e.kind {
                EventKind::ClipWrapped { id: 9, .. } => Some(e.at.0),
                _ => None,
            })
            .collect();
        let expected: Vec<u64> = (1..)
            .map(|k| (k * len) as u64)
            .take_while(|&t| t < out.len() as u64)
            .collect();
        assert_eq!(wraps[..expected.len().min(wraps.len())], expected[..]);
    }
}

/// A pause and a resume arriving before the same block (a false
/// interruption caught at once) leave the speech playing at full gain; the
/// render once spun forever on the empty ramp they left.
#[test]
fn a_pause_undone_before_the_next_block_keeps_playing() {
    let (mut control, mut r) = Renderer::new(RendererConfig {
        channels: 1,
        ..RendererConfig::default()
    })
    .unwrap();
    let (mut vc, v) = Voice::new(&config(1));
    let _ = vc.speech_tx.push_partial_slice(&[0.5; 4_000]);
    control.add_voice(Box::new(v)).unwrap();
    let mut out = [0.0f32; 256];
    r.render(&mut out);
    vc.send(VoiceCommand::Pause).unwrap();
    vc.send(VoiceCommand::Resume).unwrap();
    r.render(&mut out);
    assert!(out.iter().all(|&v| v == 0.5), "{:?}", &out[..8]);
    // Resume, then pause again at once: the ramp up is undone, silent.
    vc.send(VoiceCommand::Pause).unwrap();
    r.render(&mut out);
    r.render(&mut out);
    vc.send(VoiceCommand::Resume).unwrap();
    vc.send(VoiceCommand::Pause).unwrap();
    r.render(&mut out);
    assert!(out.iter().all(|&v| v == 0.0));
}

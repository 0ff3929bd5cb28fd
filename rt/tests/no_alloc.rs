//! Every render path runs inside an allocation guard (SPEC R1): play,
//! underrun, interrupt with fade and fence, pause/resume, mix, duck,
//! limiter, add/retire voices and a full event ring; and voices rendering
//! into outputs of their own, full output rings, outputs added, replaced
//! and removed under their voices.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)] // not on the audio thread

use assert_no_alloc::{assert_no_alloc, violation_count, AllocDisabler};
use sotto_rt::FromSlot;
use sotto_rt::{
    ClipCommand, Command, Doorbells, DuckConfig, Output, OutputId, OutputSpec, Renderer,
    RendererConfig, Saturation, SessionId, StreamPos, Voice, VoiceCommand, VoiceConfig,
    VoiceControl,
};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

fn voice(session: u32, generation: u32, doorbells: Option<&Doorbells>) -> (VoiceControl, Voice) {
    voice_into(session, generation, doorbells, None)
}

fn voice_into(
    session: u32,
    generation: u32,
    doorbells: Option<&Doorbells>,
    output: Option<OutputId>,
) -> (VoiceControl, Voice) {
    Voice::new(&VoiceConfig {
        session: SessionId::from_slot(session),
        generation,
        channels: 2,
        speech_capacity_frames: 48_000,
        background_capacity_frames: 48_000,
        command_capacity: 64,
        fade_frames: 4_800,
        grace_frames: 2_400,
        pause_ramp_frames: 240,
        duck: Some(DuckConfig {
            gain: 0.25,
            down_frames: 1_200,
            up_frames: 4_800,
        }),
        background_gain: 1.0,
        gain_ramp_frames: 960,
        saturation: Saturation::Soft,
        doorbells: doorbells.cloned(),
        output,
    })
}

fn fill(c: &mut VoiceControl, frames: usize, value: f32) {
    let samples = vec![value; frames * 2];
    let _ = c.speech_tx.push_partial_slice(&samples);
    let _ = c.background_tx.push_partial_slice(&samples);
}

/// Renders `blocks` device buffers of odd sizes, each inside the guard.
fn render_guarded(r: &mut Renderer, out: &mut [f32], blocks: usize) {
    for i in 0..blocks {
        let len = [512usize, 130, 1000, 2][i % 4];
        assert_no_alloc(|| r.render(&mut out[..len]));
    }
}

#[test]
fn canary_the_guard_is_live() {
    let before = violation_count();
    assert_no_alloc(|| {
        let v: Vec<u8> = Vec::with_capacity(16);
        std::hint::black_box(v);
    });
    assert!(
        violation_count() > before,
        "the guard must see an allocation (debug build, allocator set)"
    );
}

#[test]
fn every_render_path_is_allocation_free() {
    let (mut control, mut renderer) = Renderer::new(RendererConfig {
        sample_rate: 48_000,
        channels: 2,
        max_block_frames: 256,
        max_sessions: 8,
        max_outputs: 1,
        command_capacity: 16,
        event_capacity: 8, // small: the full-ring path runs too
        saturation: Saturation::Soft,
    })
    .unwrap();
    let mut out = vec![0.0f32; 2048];
    // `a` announces its commands on the doorbells, `b` is polled every block.
    let (mut a, va) = voice(0, 0, Some(&control.doorbells));
    let (mut b, vb) = voice(1, 0, None);
    control.add_voice(Box::new(va)).unwrap();
    control.add_voice(Box::new(vb)).unwrap();
    fill(&mut a, 20_000, 0.9);
    fill(&mut b, 3_000, 0.9);
    let start = violation_count();

    render_guarded(&mut renderer, &mut out, 20); // play, mix, duck, limiter, underrun of b
    a.send(VoiceCommand::BeginTurn {
        start: StreamPos(0),
    })
    .unwrap();
    a.send(VoiceCommand::Pause).unwrap();
    render_guarded(&mut renderer, &mut out, 8);
    a.send(VoiceCommand::Resume).unwrap();
    render_guarded(&mut renderer, &mut out, 8);
    a.send(VoiceCommand::Interrupt {
        fence: StreamPos(20_000),
    })
    .unwrap();
    render_guarded(&mut renderer, &mut out, 4);
    fill(&mut a, 1_000, -0.5);
    a.send(VoiceCommand::Interrupt {
        fence: StreamPos(21_000),
    })
    .unwrap(); // during the tail
    render_guarded(&mut renderer, &mut out, 40);
    fill(&mut a, 1_000, 0.5);
    // A looping clip shorter than a block, replaced by a longer one, with
    // gain ramps, a background clear and a stop: built here, played there.
    let short: std::sync::Arc<[f32]> = vec![0.25f32; 2 * 100].into();
    let long: std::sync::Arc<[f32]> = vec![-0.25f32; 2 * 3_000].into();
    b.send_clip(ClipCommand::Play {
        id: 1,
        clip: short,
        gain: 1.0,
        looping: true,
        after_ring: false,
    })
    .unwrap();
    render_guarded(&mut renderer, &mut out, 8);
    b.send_clip(ClipCommand::Play {
        id: 2,
        clip: long,
        gain: 0.5,
        looping: true,
        after_ring: false,
    })
    .unwrap();
    b.send_clip(ClipCommand::SetGain { id: 2, gain: 2.0 })
        .unwrap();
    b.send(VoiceCommand::SetBackgroundGain(0.1)).unwrap();
    b.send(VoiceCommand::ClearBackground {
        fence: StreamPos(3_000),
    })
    .unwrap();
    render_guarded(&mut renderer, &mut out, 12);
    b.send_clip(ClipCommand::Stop { id: 2 }).unwrap();
    render_guarded(&mut renderer, &mut out, 8);
    assert_eq!(b.collect_clips(), 2, "both clips came back");
    a.send(VoiceCommand::Clear {
        fence: StreamPos(22_000),
    })
    .unwrap();
    a.send(VoiceCommand::SetDirectMuted(true)).unwrap();
    a.send(VoiceCommand::SetSaturation(Saturation::Hard))
        .unwrap();
    a.send(VoiceCommand::SynthesisComplete {
        end: StreamPos(22_000),
    })
    .unwrap();
    control
        .send(Command::SetMasterSaturation(Saturation::Hard))
        .unwrap();
    render_guarded(&mut renderer, &mut out, 8);

    // Replace a voice (the old one is retired) and remove another.
    let (_a2, va2) = voice(0, 1, Some(&control.doorbells));
    control.add_voice(Box::new(va2)).unwrap();
    control
        .send(Command::RemoveVoice(SessionId::from_slot(1)))
        .unwrap();
    render_guarded(&mut renderer, &mut out, 4);
    assert_eq!(
        violation_count(),
        start,
        "the render path allocated or freed"
    );

    assert!(
        control
            .telemetry
            .events_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the full event ring was exercised"
    );
    assert_eq!(control.collect_retired(), 2);
    assert!(!control
        .telemetry
        .poisoned
        .load(std::sync::atomic::Ordering::Relaxed));
}

#[test]
fn outputs_are_allocation_free() {
    let (mut control, mut renderer) = Renderer::new(RendererConfig {
        sample_rate: 48_000,
        channels: 2,
        max_block_frames: 256,
        max_sessions: 8,
        max_outputs: 4,
        command_capacity: 16,
        event_capacity: 64,
        saturation: Saturation::Soft,
    })
    .unwrap();
    let output = |id: u32, ring_frames: usize| {
        Output::new(&OutputSpec {
            id: OutputId(id),
            channels: 2,
            max_block_frames: 256,
            ring_frames,
            saturation: Saturation::Soft,
            into_main: false,
        })
    };
    let mut out = vec![0.0f32; 2048];
    // Two calls with outputs of their own, a room both of the others share
    // (its ring small enough to overflow), and a voice on the main mix.
    let (mut r0, o0) = output(0, 48_000);
    let (_r1, o1) = output(1, 512);
    control.add_output(Box::new(o0)).unwrap();
    control.add_output(Box::new(o1)).unwrap();
    let mut voices = Vec::new();
    for (session, target) in [(0, Some(0)), (1, Some(1)), (2, Some(1)), (3, None)] {
        let (mut c, v) = voice_into(session, 0, Some(&control.doorbells), target.map(OutputId));
        fill(&mut c, 20_000, 0.6);
        control.add_voice(Box::new(v)).unwrap();
        voices.push(c);
    }
    let start = violation_count();

    render_guarded(&mut renderer, &mut out, 20); // the room's ring fills and overruns
    voices[0]
        .send(VoiceCommand::Interrupt {
            fence: StreamPos(20_000),
        })
        .unwrap();
    render_guarded(&mut renderer, &mut out, 8);
    // The room is taken away under its voices (they render to nowhere),
    // then a new one takes its slot; call 0's output is replaced.
    control.send(Command::RemoveOutput(OutputId(1))).unwrap();
    render_guarded(&mut renderer, &mut out, 4);
    let (_r1b, o1b) = output(1, 4_096);
    let (_r0b, o0b) = output(0, 4_096);
    control.add_output(Box::new(o1b)).unwrap();
    control.add_output(Box::new(o0b)).unwrap();
    render_guarded(&mut renderer, &mut out, 8);
    assert_eq!(
        violation_count(),
        start,
        "rendering into outputs allocated or freed"
    );

    let mut frames = vec![0.0f32; 2 * 4096];
    let (pts, n) = r0.read(&mut frames).unwrap();
    assert_eq!(pts.0, 0);
    assert!(n > 0 && frames[..2 * n].iter().any(|&v| v != 0.0));
    assert_eq!(
        control.collect_retired(),
        2,
        "the room and call 0's first output"
    );
    assert!(!control
        .telemetry
        .poisoned
        .load(std::sync::atomic::Ordering::Relaxed));
}

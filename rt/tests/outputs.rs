//! Voices rendering into outputs of their own (SPEC C1): each output holds
//! exactly its own session's audio, as that session alone would have
//! sounded in the main mix, whatever the others do.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)] // not on the audio thread

use sotto_rt::FromSlot;
use sotto_rt::{
    DuckConfig, Output, OutputId, OutputReader, OutputSpec, Renderer, RendererConfig, Saturation,
    SessionId, StreamPos, Voice, VoiceCommand, VoiceConfig, VoiceControl,
};

const BLOCK: usize = 240;

fn renderer() -> (sotto_rt::RendererControl, Renderer) {
    Renderer::new(RendererConfig {
        max_block_frames: BLOCK,
        max_outputs: 4,
        ..RendererConfig::default()
    })
    .unwrap()
}

fn voice(session: u32, output: Option<OutputId>) -> (VoiceControl, Voice) {
    Voice::new(&VoiceConfig {
        session: SessionId::from_slot(session),
        generation: 0,
        channels: 1,
        speech_capacity_frames: 48_000,
        background_capacity_frames: 48_000,
        command_capacity: 16,
        fade_frames: 2_400,
        grace_frames: 480,
        pause_ramp_frames: 120,
        duck: Some(DuckConfig {
            gain: 0.25,
            down_frames: 1_200,
            up_frames: 2_400,
        }),
        background_gain: 1.0,
        gain_ramp_frames: 480,
        saturation: Saturation::Soft,
        doorbells: None,
        output,
    })
}

fn output(id: u32) -> (OutputReader, Output) {
    output_into_main(id, false)
}

fn output_into_main(id: u32, into_main: bool) -> (OutputReader, Output) {
    Output::new(&OutputSpec {
        id: OutputId(id),
        channels: 1,
        max_block_frames: BLOCK,
        ring_frames: 48_000,
        // As the renderer's own sum is kept (its default).
        saturation: RendererConfig::default().saturation,
        into_main,
    })
}

/// Loud speech over a background, paused, resumed, then interrupted.
fn script(c: &mut VoiceControl, step: usize, seed: f32) {
    match step {
        0 => {
            let speech: Vec<f32> = (0..12_000).map(|i| (i as f32 * seed).sin() * 0.9).collect();
            let bed: Vec<f32> = (0..20_000).map(|i| (i as f32 * 0.01).cos() * 0.5).collect();
            assert!(c.speech_tx.push_partial_slice(&speech).1.is_empty());
            assert!(c.background_tx.push_partial_slice(&bed).1.is_empty());
        }
        10 => c.send(VoiceCommand::Pause).unwrap(),
        14 => c.send(VoiceCommand::Resume).unwrap(),
        30 => c
            .send(VoiceCommand::Interrupt {
                fence: StreamPos(12_000),
            })
            .unwrap(),
        _ => {}
    }
}

fn read_all(r: &mut OutputReader) -> Vec<f32> {
    let mut all = vec![0.0; 48_000];
    let (pts, n) = r.read(&mut all).unwrap();
    assert_eq!(pts.0, 0, "the first frame is at the clock's start");
    all.truncate(n);
    all
}

#[test]
fn an_own_output_holds_what_the_session_alone_sounded_like_in_the_mix() {
    const STEPS: usize = 80;
    // Alone, in the main mix.
    let (mut control, mut r) = renderer();
    let (mut c, v) = voice(0, None);
    control.add_voice(Box::new(v)).unwrap();
    let mut mixed = Vec::new();
    for step in 0..STEPS {
        script(&mut c, step, 0.05);
        let mut block = vec![0.0; BLOCK];
        r.render(&mut block);
        mixed.extend(block);
    }
    // In its own output, beside another call doing something else.
    let (mut control, mut r) = renderer();
    let (mut reader, out) = output(0);
    let (mut other_reader, other) = output(1);
    control.add_output(Box::new(out)).unwrap();
    control.add_output(Box::new(other)).unwrap();
    let (mut c, v) = voice(0, Some(OutputId(0)));
    let (mut c2, v2) = voice(1, Some(OutputId(1)));
    control.add_voice(Box::new(v)).unwrap();
    control.add_voice(Box::new(v2)).unwrap();
    let mut main = Vec::new();
    for step in 0..STEPS {
        script(&mut c, step, 0.05);
        // The other call starts later and is interrupted earlier.
        script(&mut c2, (step + 25) % STEPS, 0.031);
        let mut block = vec![0.0; BLOCK];
        r.render(&mut block);
        main.extend(block);
    }
    let own = read_all(&mut reader);
    assert_eq!(own.len(), mixed.len());
    assert_eq!(
        own, mixed,
        "sample for sample: fade, pause, duck, background, limiter"
    );
    assert!(
        main.iter().all(|&v| v == 0.0),
        "nothing leaks into the main mix"
    );
    let other = read_all(&mut other_reader);
    assert_ne!(other, own, "the other call has its own audio");
}

#[test]
fn one_call_interrupted_leaves_the_other_bit_identical() {
    const STEPS: usize = 60;
    let run = |with_first: bool| {
        let (mut control, mut r) = renderer();
        let (mut first_reader, first) = output(0);
        let (mut second_reader, second) = output(1);
        control.add_output(Box::new(first)).unwrap();
        control.add_output(Box::new(second)).unwrap();
        let (mut c1, v1) = voice(0, Some(OutputId(0)));
        let (mut c2, v2) = voice(1, Some(OutputId(1)));
        if with_first {
            control.add_voice(Box::new(v1)).unwrap();
        }
        control.add_voice(Box::new(v2)).unwrap();
        for step in 0..STEPS {
            if with_first {
                script(&mut c1, step, 0.07);
            }
            // The second never pauses or is interrupted: it speaks on.
            if step == 0 {
                script(&mut c2, 0, 0.02);
            }
            let mut block = vec![0.0; BLOCK];
            r.render(&mut block);
        }
        let first: Vec<f32> = if with_first {
            read_all(&mut first_reader)
        } else {
            Vec::new()
        };
        (first, read_all(&mut second_reader))
    };
    let (first, second) = run(true);
    let (_, second_alone) = run(false);
    assert_eq!(
        second, second_alone,
        "the second call never hears the first"
    );
    // The first call was heard in its own output up to its interrupt.
    let interrupted_at = 30 * BLOCK;
    assert!(first[interrupted_at - 10..interrupted_at]
        .iter()
        .any(|&v| v.abs() > 0.3));
}

#[test]
fn outputs_that_feed_the_main_mix_leave_it_as_it_was() {
    const STEPS: usize = 60;
    let run = |own: bool| {
        let (mut control, mut r) = renderer();
        let mut readers = Vec::new();
        let mut voices = Vec::new();
        for i in 0..3u32 {
            let target = if own {
                let (reader, out) = output_into_main(i, true);
                control.add_output(Box::new(out)).unwrap();
                readers.push(reader);
                Some(OutputId(i))
            } else {
                None
            };
            let (c, v) = voice(i, target);
            control.add_voice(Box::new(v)).unwrap();
            voices.push(c);
        }
        let mut main = Vec::new();
        for step in 0..STEPS {
            for (i, c) in voices.iter_mut().enumerate() {
                script(c, (step + 7 * i) % STEPS, 0.03 + 0.01 * i as f32);
            }
            let mut block = vec![0.0; BLOCK];
            r.render(&mut block);
            main.extend(block);
        }
        main
    };
    let (own, main_only) = (run(true), run(false));
    assert!(main_only.iter().any(|&v| v != 0.0));
    assert!(own == main_only, "the sum of everything, bit for bit");
}

//! A barge-in, rendered offline: the agent answers, the user interrupts
//! after a second, the answer fades out over 0.4 s and the next one
//! starts after the tail. Deterministic: the same bytes every run.
//!
//! Run: `cargo run -p sotto --example barge_in -- out.wav`
//! (writes the mix as 16-bit WAV and prints the session's events).

use std::time::Duration;

use sotto::{Engine, EngineConfig, SessionConfig, SessionEventKind};

/// `seconds` of a two-tone "voice" as s16 LE at 24 kHz.
fn speech(seconds: f32, pitch: f32) -> Vec<u8> {
    let n = (seconds * 24_000.0) as usize;
    (0..n)
        .flat_map(|i| {
            let t = i as f32 / 24_000.0;
            let v = (t * pitch * std::f32::consts::TAU).sin() * 0.6
                + (t * pitch * 2.7 * std::f32::consts::TAU).sin() * 0.2;
            ((v * 9_000.0) as i16).to_le_bytes()
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "barge-in.wav".into());
    let engine = Engine::start(EngineConfig::default()).await?;
    let agent = engine
        .create_session(SessionConfig {
            name: "agent".into(),
            ..SessionConfig::default()
        })
        .await?;
    let mut events = agent.events();

    // The first answer: three seconds of speech, streamed as it is made.
    agent.mark_synthesis_start()?;
    let answer = agent.push(speech(3.0, 180.0));
    agent.mark_synthesis_complete()?;
    let mut mix = engine.render_for(Duration::from_secs(1)).await?;

    // The user barges in: what they heard is known to the frame.
    let heard = agent.snapshot_playback().await?;
    agent.interrupt()?;
    println!(
        "heard {} of {} frames; {} frames cut",
        heard.played_frames.get(),
        heard.pushed_frames.get(),
        answer.await?.dropped_frames.get()
    );
    mix.extend(engine.render_for(Duration::from_millis(500)).await?);

    // The next answer starts after the fade's tail, never mixed into it.
    agent.mark_synthesis_start()?;
    let next = agent.push(speech(1.0, 220.0));
    agent.mark_synthesis_complete()?;
    mix.extend(engine.render_for(Duration::from_millis(1_500)).await?);
    next.await?;

    let rate = engine.config().sample_rate;
    while let Ok(e) = events.try_recv() {
        let at = e.at.0 as f64 / f64::from(rate);
        match e.kind {
            SessionEventKind::Interrupted { tail_frames, .. } => {
                println!("{at:6.3} s interrupted, fading {tail_frames}");
            }
            kind => println!("{at:6.3} s {kind:?}"),
        }
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(&out, spec)?;
    for s in &mix {
        wav.write_sample((s.clamp(-1.0, 1.0) * 32_767.0) as i16)?;
    }
    wav.finalize()?;
    println!("wrote {out} ({:.1} s)", mix.len() as f64 / f64::from(rate));
    engine.shutdown().await;
    Ok(())
}

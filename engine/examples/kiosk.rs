//! A kiosk: the agent speaks through the sound card while the microphone
//! is captured with echo cancellation against exactly what was played,
//! so the agent does not hear itself. Without a sound card the engine
//! says so and runs on its virtual clock instead.
//!
//! Run: `cargo run -p sotto --example kiosk -- [DEVICE]`
//! (`sotto devices` lists the names; the default output otherwise).

use std::time::Duration;

use sotto::{
    Clock, EchoConfig, Engine, EngineConfig, InputConfig, InputFormat, SampleFormat, SessionConfig,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1);
    let engine = Engine::start(EngineConfig {
        sample_rate: 48_000,
        clock: Clock::Device {
            name,
            deferred: false,
        },
        ..EngineConfig::default()
    })
    .await?;
    if let Some(why) = engine.device_fallback() {
        println!("no sound card ({why}): playing on the virtual clock");
    }

    // The microphone, cleaned against the engine's own output.
    let mut input = match engine.open_input(&InputConfig::default(), Some(EchoConfig::default())) {
        Ok(input) => Some(input),
        Err(e) => {
            println!("no microphone: {e}");
            None
        }
    };

    // Two seconds of a 330 Hz "voice" at 48 kHz, s16 LE.
    let agent = engine
        .create_session(SessionConfig {
            input: InputFormat {
                sample_rate: 48_000,
                channels: 1,
                sample_format: SampleFormat::S16,
            },
            ..SessionConfig::default()
        })
        .await?;
    let voice: Vec<u8> = (0..96_000)
        .flat_map(|i| {
            let v = (i as f32 * 330.0 / 48_000.0 * std::f32::consts::TAU).sin() * 6_000.0;
            (v as i16).to_le_bytes()
        })
        .collect();
    agent.mark_synthesis_start()?;
    let push = agent.push(voice);
    agent.mark_synthesis_complete()?;

    let started = std::time::Instant::now();
    let mut chunks = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        match &mut input {
            Some(input) => {
                let wait = Duration::from_millis(100);
                if tokio::time::timeout(wait, input.next_chunk()).await.is_ok() {
                    chunks += 1;
                }
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    push.await?;
    println!(
        "played {} frames, {} underruns; {chunks} microphone chunks of 10 ms",
        agent.stats().played_frames.get(),
        agent.stats().underruns
    );
    if let Some(stats) = input.as_ref().and_then(|i| i.echo_stats()) {
        println!(
            "echo path: delay {} ms, {} reverse chunks",
            stats.delay_ms(),
            stats.render_frames()
        );
    }
    engine.shutdown().await;
    Ok(())
}

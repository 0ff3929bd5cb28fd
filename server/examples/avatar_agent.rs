//! An agent speaking through an avatar: an avatar server (in this
//! process, on loopback) draws a face whose mouth follows the voice; the
//! agent's session attaches to it, streams an answer paced like a TTS,
//! and the avatar acknowledges each segment with how much of it played.
//!
//! Run: `cargo run -p sotto-server --example avatar_agent`

use std::sync::Arc;
use std::time::Duration;

use sotto::{Clock, Engine, EngineConfig, LinkConfig, SessionConfig, SessionEventKind};
use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink};
use sotto_avatar::sink::DiscardSink;
use sotto_server::avatar::{AvatarServer, ServerConfig};
use sotto_server::token;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = "a shared secret";
    let avatar = AvatarServer::start(
        "127.0.0.1:0".parse()?,
        ServerConfig {
            secret: secret.into(),
            fps: 25,
            cooldown: Duration::from_millis(300),
            stereo: false,
            renderer: Arc::new(|| Box::new(FaceRenderer::new(320, 240)) as Box<dyn AvatarRenderer>),
            sink: Arc::new(|_| Box::new(DiscardSink::default()) as Box<dyn AvatarSink>),
            clock: None,
            publish: None,
        },
    )
    .await?;

    let engine = Engine::start(EngineConfig {
        clock: Clock::Virtual {
            capture: None,
            deferred: false,
        },
        ..EngineConfig::default()
    })
    .await?;
    let agent = engine.create_session(SessionConfig::default()).await?;
    let mut events = agent.events();

    // A token for this agent, then the link: its voice now plays there.
    let creds = token::create("agent", secret, Some("agent-1"), token::DEFAULT_TTL)?;
    let link = LinkConfig::new(&avatar.join_url(), "room-1", &creds.token, "agent-1");
    let handle = engine.attach_avatar(&agent, link).await?;

    // Two seconds of speech, pushed in 100 ms pieces as a TTS makes them.
    agent.mark_synthesis_start()?;
    for piece in 0..20 {
        let chunk: Vec<u8> = (0..2_400)
            .flat_map(|i| {
                let t = (piece * 2_400 + i) as f32 / 24_000.0;
                let v = (t * 200.0 * std::f32::consts::TAU).sin() * 7_000.0;
                (v as i16).to_le_bytes()
            })
            .collect();
        agent.push(chunk).await?;
    }
    agent.mark_synthesis_complete()?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        else {
            continue;
        };
        match e.kind {
            SessionEventKind::AvatarConnected { participant } => {
                println!("avatar {participant} connected");
            }
            SessionEventKind::AvatarSegmentEnded {
                playback_position, ..
            } => {
                println!("the avatar played {playback_position:.2} s of the answer");
                break;
            }
            _ => {}
        }
    }
    let stats = handle.stats();
    println!(
        "sent {} bytes in {} chunks, {} dropped",
        stats.bytes_sent, stats.chunks_sent, stats.chunks_dropped
    );
    handle.detach();
    engine.shutdown().await;
    Ok(())
}

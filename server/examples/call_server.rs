//! A server browsers call over WebRTC: `POST /calls` with an SDP offer
//! answers with a call of its own, a demo agent speaks into it, pauses
//! when the caller makes a sound and interrupts with a fade when they
//! talk over it. Open the page it prints in a browser and talk.
//!
//! Run: `cargo run -p sotto-server --example call_server -- [ADDR] [SPEECH.wav]`
//! (default 127.0.0.1:8080 and `examples/hello.wav`; Ctrl-C stops it).

use std::sync::Arc;

use sotto::{Clock, Engine, EngineConfig};
use sotto_server::calls::{CallServer, ServeConfig, Utterance};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let speech = args.next().unwrap_or_else(|| "examples/hello.wav".into());
    // Calls run in real time: the virtual clock, one render thread per core.
    let engine = Engine::start(EngineConfig {
        sample_rate: 48_000,
        clock: Clock::Virtual {
            capture: None,
            deferred: false,
        },
        ..EngineConfig::default()
    })
    .await?;
    let utterance = Utterance::from_wav(std::path::Path::new(&speech))?;
    let config = ServeConfig {
        utterances: vec![Arc::new(utterance)],
        ..ServeConfig::default()
    };
    let server = CallServer::start(addr.parse()?, engine.clone(), config).await?;
    println!("open http://{}/ and talk to the agent", server.addr());
    tokio::signal::ctrl_c().await?;
    let stats = server.stats();
    println!("{} calls taken, {} refused", stats.calls, stats.refused);
    drop(server);
    engine.shutdown().await;
    Ok(())
}

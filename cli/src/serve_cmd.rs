//! `sotto serve`: calls from browsers to a demo agent (SPEC W3, W4).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sotto::{CallConfig, Clock, Engine, EngineConfig};
use sotto_avatar::server::ServerLimits;
use sotto_cli::serve::{CallServer, Say, ServeConfig};

/// The speech the agent says when no `--say` is given (espeak-ng, 16 kHz).
const HELLO: &[u8] = include_bytes!("../../examples/hello.wav");

/// What `sotto serve` was asked.
pub(crate) struct ServeArgs {
    pub listen: std::net::SocketAddr,
    pub say: Option<PathBuf>,
    pub token_secret: Option<String>,
    pub max_calls: usize,
    pub media_addr: std::net::IpAddr,
    pub clean_mic: bool,
}

pub(crate) async fn serve(args: ServeArgs) -> ExitCode {
    let ServeArgs {
        listen,
        say,
        token_secret,
        max_calls,
        media_addr,
        clean_mic,
    } = args;
    let say = match &say {
        Some(path) => Say::from_wav(path),
        None => {
            let path = std::env::temp_dir().join(format!("sotto-hello-{}.wav", std::process::id()));
            let read = std::fs::write(&path, HELLO)
                .map_err(|e| e.to_string())
                .and_then(|()| Say::from_wav(&path));
            let _ = std::fs::remove_file(&path);
            read
        }
    };
    let say = match say {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = match Engine::start(EngineConfig {
        sample_rate: 48_000,
        channels: 1,
        max_sessions: max_calls.max(1),
        clock: Clock::Virtual {
            capture: None,
            deferred: false,
        },
        ..EngineConfig::default()
    })
    .await
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(1);
        }
    };
    let config = ServeConfig {
        token_secret,
        limits: ServerLimits {
            max_peers: max_calls,
            ..ServerLimits::default()
        },
        says: vec![say],
        call: CallConfig {
            bind: media_addr,
            processing: clean_mic.then(sotto::EchoConfig::default),
            ..CallConfig::default()
        },
        keep_recordings: false,
    };
    let server = match CallServer::start(listen, engine.clone(), config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sotto: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "sotto serve: open http://{}/ in a browser; calls at POST /calls (Ctrl-C to stop)",
        server.addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    let stats = server.stats();
    eprintln!(
        "sotto serve: {} calls, {} refused, {} busy",
        stats.calls.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.busy.load(Ordering::Relaxed)
    );
    drop(server);
    engine.shutdown().await;
    ExitCode::SUCCESS
}

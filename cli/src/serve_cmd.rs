//! `sotto serve`: calls from browsers to a demo agent (SPEC W3, W4).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use sotto::{CallConfig, Clock, Engine, EngineConfig};
use sotto_server::accept::ServerLimits;
use sotto_server::calls::{CallServer, ServeConfig, Utterance};

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
    pub avatar: bool,
    pub phone: bool,
    pub max_calls_per_participant: usize,
    pub max_connections_per_client: usize,
    pub token_lifetime: std::time::Duration,
    pub admission: sotto::AdmissionConfig,
    pub rooms: Option<Rooms>,
}

/// `--janus`, `--room` and the rest: the rooms the agent joins.
pub(crate) struct Rooms {
    pub url: String,
    pub rooms: Vec<u64>,
    pub pin: Option<String>,
    pub page_url: Option<String>,
    pub keepalive: std::time::Duration,
}

pub(crate) async fn serve(args: ServeArgs) -> ExitCode {
    let ServeArgs {
        listen,
        say,
        token_secret,
        max_calls,
        media_addr,
        clean_mic,
        avatar,
        phone,
        max_calls_per_participant,
        max_connections_per_client,
        token_lifetime,
        admission,
        rooms,
    } = args;
    let say = match &say {
        Some(path) => Utterance::from_wav(path),
        None => {
            let path = std::env::temp_dir().join(format!("sotto-hello-{}.wav", std::process::id()));
            let read = std::fs::write(&path, HELLO)
                .map_err(|e| e.to_string())
                .and_then(|()| Utterance::from_wav(&path));
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
        admission,
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
    // A build with the server's test routes has more fields: the update
    // fills them there, and is empty here.
    #[allow(clippy::needless_update)]
    let config = ServeConfig {
        token_secret,
        limits: ServerLimits {
            max_peers: max_calls,
            max_connections_per_client,
            ..ServerLimits::default()
        },
        max_calls_per_participant,
        max_token_lifetime: token_lifetime,
        utterances: vec![say],
        call: CallConfig {
            bind: media_addr,
            processing: clean_mic.then(sotto::EchoConfig::default),
            ..CallConfig::default()
        },
        avatar: None,
        phone,
        ..ServeConfig::default()
    };
    // The avatar side in this process, on loopback: every call's agent
    // speaks through it and the page watches it.
    let mut config = config;
    // Each room's agent's avatar goes into its room as a feed of its own.
    let feeds = rooms.as_ref().map(|r| room_config(r, 0, media_addr, false));
    let avatar_server = if avatar {
        match start_avatar(feeds).await {
            Ok((server, attach)) => {
                config.avatar = Some(attach);
                Some(server)
            }
            Err(e) => {
                eprintln!("sotto: cannot start the avatar server: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let server = match CallServer::start(listen, engine.clone(), config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sotto: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(r) = rooms {
        for (k, &room) in r.rooms.iter().enumerate() {
            let config = room_config(&r, room, media_addr, clean_mic);
            // The page joins the first room.
            let page = (k == 0).then(|| r.page_url.clone()).flatten();
            match server.host_room(config, page).await {
                Ok(_) => eprintln!("sotto serve: the agent is in room {room} on {}", r.url),
                Err(e) => {
                    eprintln!("sotto: cannot join room {room}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        eprintln!(
            "sotto serve: join the agent from a browser at http://{}/room",
            server.addr()
        );
    }
    if phone {
        eprintln!(
            "sotto serve: phone calls: point a Twilio number's voice webhook at \
             http(s)://THIS_HOST/twilio/voice"
        );
    }
    eprintln!(
        "sotto serve: open http://{}/ in a browser; calls at POST /calls (Ctrl-C to stop)",
        server.addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    let stats = server.stats();
    let engine_stats = engine.stats();
    eprintln!(
        "sotto serve: {} calls, {} refused, {} busy; {} late blocks of {}",
        stats.calls, stats.refused, stats.busy, engine_stats.late_blocks, engine_stats.blocks
    );
    drop(server);
    drop(avatar_server);
    engine.shutdown().await;
    ExitCode::SUCCESS
}

/// Room `room` as `--janus` and the rest name it.
fn room_config(
    r: &Rooms,
    room: u64,
    media_addr: std::net::IpAddr,
    clean_mic: bool,
) -> sotto::RoomConfig {
    sotto::RoomConfig {
        url: r.url.clone(),
        room,
        pin: r.pin.clone(),
        display: format!("sotto-agent-{}", std::process::id()),
        media: CallConfig {
            bind: media_addr,
            processing: clean_mic.then(sotto::EchoConfig::default),
            ..sotto::RoomConfig::default().media
        },
        keepalive: r.keepalive,
        ..sotto::RoomConfig::default()
    }
}

/// An avatar server for `sotto serve --avatar`: the built-in face at
/// 640x480, 25 fps, published to viewers (and into the rooms of `rooms`'
/// SFU, when the agent is in rooms), its agents' and its viewers' tokens
/// signed with secrets made here (only this process mints them: a call's
/// page is handed a viewer token for its own call's avatar).
async fn start_avatar(
    rooms: Option<sotto::RoomConfig>,
) -> std::io::Result<(
    sotto_server::avatar::AvatarServer,
    sotto_server::calls::AvatarAttach,
)> {
    use sotto_avatar::face::FaceRenderer;
    use sotto_avatar::playout::{AvatarRenderer, AvatarSink};
    use sotto_avatar::sink::DiscardSink;
    use sotto_server::avatar::viewers::ViewersConfig;
    use sotto_server::avatar::{AvatarServer, ServerConfig};

    let secret = sotto_server::http::random_id();
    let viewer_secret = sotto_server::http::random_id();
    let config = ServerConfig {
        clock: None,
        publish: Some(ViewersConfig {
            viewer_secret: Some(viewer_secret.clone()),
            rooms,
            ..ViewersConfig::default()
        }),
        secret: secret.clone(),
        fps: 25,
        cooldown: std::time::Duration::from_millis(300),
        stereo: false,
        renderer: Arc::new(|| Box::new(FaceRenderer::new(640, 480)) as Box<dyn AvatarRenderer>),
        sink: Arc::new(|_| Box::new(DiscardSink::default()) as Box<dyn AvatarSink>),
    };
    let server = AvatarServer::start(
        "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
        config,
    )
    .await?;
    let attach = sotto_server::calls::AvatarAttach {
        join_url: server.join_url(),
        secret,
        watch_base: format!("http://{}", server.addr()),
        viewer_secret,
    };
    eprintln!("sotto serve: the agent speaks through an avatar; each call's page watches its own");
    Ok((server, attach))
}

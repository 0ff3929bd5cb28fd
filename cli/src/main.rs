//! The `sotto` program: renders scenarios through the whole engine, plays,
//! soaks, lists devices, runs echo cancellation on recordings, and serves
//! calls and avatars. A binary with no library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod args;
mod measure;
mod plot;
mod render;
// The tests, benchmarks and fuzz targets compile these same files through
// sotto-testkit and drive parts the program does not call (the rendered
// samples in memory, the step list, the f32 tone writer).
#[allow(dead_code, unused_imports)]
mod scenario;
mod serve_cmd;
#[allow(dead_code)]
mod signal;
mod soak;

use args::{Cli, ClockArg, Command, FormatArg};
use render::RenderFiles;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The DTLS stack warns of every extension a peer's hello
                // offers that it does not take (Janus offers two per
                // handshake): nothing for an operator to act on.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rtc_dtls=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Render {
            scenario,
            out,
            events,
            plot,
            clock,
            format,
            sessions_dir,
        } => runtime.block_on(render::render(
            scenario,
            RenderFiles {
                out,
                events,
                plot,
                sessions_dir,
            },
            clock,
            format,
        )),
        Command::Devices => devices(),
        Command::Soak {
            sessions,
            calls,
            seconds,
            background,
            interrupt_every,
            clock,
            render_threads,
            report,
        } => runtime.block_on(soak(
            crate::soak::SoakConfig {
                sessions: calls.unwrap_or(sessions),
                calls: calls.is_some(),
                seconds,
                background,
                interrupt_every,
                clock: match clock {
                    ClockArg::Virtual => crate::scenario::RenderClock::Virtual,
                    ClockArg::Offline => crate::scenario::RenderClock::Offline,
                },
                seed: 1,
                render_threads: render_threads
                    .map_or_else(sotto::EngineConfig::default_render_threads, usize::from),
            },
            report,
        )),
        Command::AvatarServer {
            listen,
            secret,
            out,
            fps,
            size,
            stereo,
            viewer,
            viewer_secret,
        } => runtime.block_on(avatar_server(
            listen,
            secret,
            out,
            fps,
            &size,
            stereo,
            viewer.then(|| sotto_server::avatar::viewers::ViewersConfig {
                viewer_secret,
                ..sotto_server::avatar::viewers::ViewersConfig::default()
            }),
        )),
        Command::EchoCancel {
            far,
            mic,
            out,
            delay_ms,
            no_ns,
            no_agc,
            no_hpf,
        } => echo_cancel(
            &far,
            &mic,
            &out,
            sotto::EchoConfig {
                echo_cancellation: true,
                noise_suppression: !no_ns,
                high_pass: !no_hpf,
                gain_control: !no_agc,
                delay_ms,
            },
        ),
        Command::Play { scenario, device } => runtime.block_on(render::play(scenario, device)),
        Command::Serve {
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
            max_connecting,
            admit_per_second,
            janus,
            room,
            room_pin,
            janus_page,
            janus_keepalive,
        } => runtime.block_on(serve_cmd::serve(serve_cmd::ServeArgs {
            rooms: janus.map(|url| serve_cmd::Rooms {
                url,
                rooms: room,
                pin: room_pin,
                page_url: janus_page,
                keepalive: std::time::Duration::from_secs(u64::from(janus_keepalive)),
            }),
            listen,
            say,
            token_secret,
            max_calls: usize::from(max_calls),
            media_addr,
            clean_mic,
            avatar,
            phone,
            max_calls_per_participant: usize::from(max_calls_per_participant),
            max_connections_per_client: usize::from(max_connections_per_client),
            token_lifetime: std::time::Duration::from_secs(u64::from(token_lifetime)),
            admission: sotto::AdmissionConfig {
                max_connecting: usize::from(max_connecting),
                per_second: f64::from(admit_per_second),
                ..sotto::AdmissionConfig::default()
            },
        })),
    }
}

fn echo_cancel(
    far: &std::path::Path,
    mic: &std::path::Path,
    out: &std::path::Path,
    config: sotto::EchoConfig,
) -> ExitCode {
    let load = |p: &std::path::Path| {
        sotto_actors::decode::FileDecoder::open(p, sotto_media::echo::RATE, 1)
            .and_then(|mut d| d.decode_all(|| false))
            .map(|(s, _)| s)
    };
    let (far, mic) = match (load(far), load(mic)) {
        (Ok(f), Ok(m)) => (f, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(2);
        }
    };
    // The module works in 10 ms chunks; less than one is nothing to clean.
    if far.len() < sotto_media::echo::CHUNK || mic.len() < sotto_media::echo::CHUNK {
        eprintln!(
            "sotto: --far and --mic need at least 10 ms of audio each (got {} and {} samples at 48 kHz)",
            far.len(),
            mic.len()
        );
        return ExitCode::from(2);
    }
    let cleaned = match sotto_media::echo::EchoPath::new(config)
        .and_then(|mut p| p.process_all(&far, &mic))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(1);
        }
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: sotto_media::echo::RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let written = hound::WavWriter::create(out, spec).and_then(|mut w| {
        for &s in &cleaned {
            w.write_sample(sotto_rt::to_s16(s))?;
        }
        w.finalize()
    });
    if let Err(e) = written {
        eprintln!("sotto: cannot write {}: {e}", out.display());
        return ExitCode::from(1);
    }
    let seconds = mic.len() as f64 / f64::from(sotto_media::echo::RATE);
    let silent = |s: &[f32]| s.iter().all(|&v| v == 0.0);
    if silent(&mic) {
        println!(
            "the microphone is silent over {seconds:.2} s: no echo to measure -> {}",
            out.display()
        );
    } else if silent(&cleaned) {
        println!(
            "echo return loss enhancement: not measurable (the cleaned signal is silent) over {seconds:.2} s -> {}",
            out.display()
        );
    } else {
        println!(
            "echo return loss enhancement: {:.1} dB over {seconds:.2} s -> {}",
            sotto_media::echo::erle_db(&mic, &cleaned),
            out.display()
        );
    }
    ExitCode::SUCCESS
}

fn devices() -> ExitCode {
    let list = match sotto::Engine::devices() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(1);
        }
    };
    if list.is_empty() {
        println!("no audio devices");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:>3}  {:<24} {:<8} {:<8} {:<14} {:<15} description",
        "#", "name", "out ch", "in ch", "rates (Hz)", "default"
    );
    let channels = |c: &[u16]| match (c.first(), c.last()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) if usize::from(hi - lo) + 1 == c.len() => format!("{lo}-{hi}"),
        (Some(_), Some(_)) => c.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
        _ => "-".to_owned(),
    };
    for d in list {
        let rates = d.rates.map_or("-".to_owned(), |(lo, hi)| {
            // ALSA plugins report "anything" as 1..=u32::MAX.
            if hi == u32::MAX {
                format!("{lo}+")
            } else {
                format!("{lo}-{hi}")
            }
        });
        let default = match (d.default_output, d.default_input) {
            (true, true) => "output, input",
            (true, false) => "output",
            (false, true) => "input",
            (false, false) => "",
        };
        let description = d.description.lines().next().unwrap_or("");
        println!(
            "{:>3}  {:<24} {:<8} {:<8} {:<14} {default:<15} {description}",
            d.index,
            d.name,
            channels(&d.output_channels),
            channels(&d.input_channels),
            rates
        );
    }
    ExitCode::SUCCESS
}

async fn soak(config: crate::soak::SoakConfig, out: Option<PathBuf>) -> ExitCode {
    let result = crate::soak::run(&config, |t, r| {
        eprint!(
            "\r{t:6.1}/{:.0} s  {} {}  {} turns  late {} ({} while the host stole, {} in {} machine pauses)  underruns {}  lost frames {}  p99 block {:.0} µs  cpu {:.0}%  rss {} MiB   ",
            config.seconds,
            r.sessions,
            if config.calls { "calls" } else { "sessions" },
            r.turns,
            r.late_blocks,
            r.late_blocks_while_stolen,
            r.late_blocks_while_paused,
            r.machine_pauses,
            r.underruns,
            r.frames_lost,
            r.block_render_us.p99,
            r.cpu_percent,
            r.rss_final_kib / 1024
        );
    })
    .await;
    eprintln!();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(if matches!(e, sotto::EngineError::Config(_)) {
                2
            } else {
                1
            });
        }
    };
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    println!("{json}");
    if let Some(path) = out {
        if let Err(e) = std::fs::write(&path, json + "\n") {
            eprintln!("sotto: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

async fn avatar_server(
    listen: std::net::SocketAddr,
    secret: String,
    out: Option<PathBuf>,
    fps: u32,
    size: &str,
    stereo: bool,
    publish: Option<sotto_server::avatar::viewers::ViewersConfig>,
) -> ExitCode {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use sotto_avatar::face::FaceRenderer;

    use sotto_avatar::playout::{AvatarRenderer, AvatarSink};
    use sotto_avatar::sink::{DiscardSink, FileSink};
    use sotto_server::avatar::{AvatarServer, ServerConfig};

    if !listen.ip().is_loopback() {
        eprintln!("sotto: the avatar server listens on loopback only, not {listen}");
        return ExitCode::from(2);
    }
    let Some((w, h)) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| (16..=3840).contains(&w) && (16..=2160).contains(&h))
    else {
        eprintln!("sotto: --size must be WIDTHxHEIGHT within 16x16..=3840x2160, not '{size}'");
        return ExitCode::from(2);
    };
    if !(1..=60).contains(&fps) {
        eprintln!("sotto: --fps must be within 1..=60");
        return ExitCode::from(2);
    }
    let connections = Arc::new(AtomicU64::new(0));
    let watched = publish.is_some();
    if publish.as_ref().is_some_and(|p| p.viewer_secret.is_none()) {
        eprintln!(
            "avatar server: no --viewer-secret: anyone who reaches {listen} may list and \
             watch every avatar (keep it on a trusted network)"
        );
    }
    let config = ServerConfig {
        publish,
        clock: None,
        secret,
        fps,
        cooldown: std::time::Duration::from_millis(300),
        stereo,
        renderer: Arc::new(move || Box::new(FaceRenderer::new(w, h)) as Box<dyn AvatarRenderer>),
        sink: Arc::new(move |req| {
            let n = connections.fetch_add(1, Ordering::Relaxed) + 1;
            let channels = match req.channels.max(1) {
                1 if stereo => 2,
                c => c,
            };
            match &out {
                Some(dir) => {
                    let dir = dir.join(format!("{n:04}-{}", req.participant_id));
                    match FileSink::create(&dir, req.sample_rate, channels, fps) {
                        Ok(f) => {
                            eprintln!("avatar: connection {n} writes to {}", dir.display());
                            Box::new(f) as Box<dyn AvatarSink>
                        }
                        Err(e) => {
                            eprintln!("avatar: cannot write {}: {e}", dir.display());
                            Box::new(DiscardSink::default())
                        }
                    }
                }
                // Nobody records: keep nothing.
                None => Box::new(DiscardSink::default()),
            }
        }),
    };
    let server = match AvatarServer::start(listen, config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sotto: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("avatar server: POST {} (Ctrl-C to stop)", server.join_url());
    if watched {
        eprintln!("avatar server: watch at {}", server.watch_url());
    }
    let _ = tokio::signal::ctrl_c().await;
    let stats = server.stats();
    eprintln!(
        "avatar server: {} connections, {} refused, {} malformed messages",
        stats.peers, stats.refused, stats.malformed
    );
    ExitCode::SUCCESS
}

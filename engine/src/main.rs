//! The `sotto` program: renders scenarios through the whole engine.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sotto::scenario::{write_wav, RenderClock, Scenario};

#[derive(Parser)]
#[command(
    name = "sotto",
    version,
    about = "Real-time audio engine for voice agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a scenario (a TOML timeline of engine messages) to a WAV file.
    Render {
        /// The scenario file.
        scenario: PathBuf,
        /// Where to write the WAV.
        #[arg(long)]
        out: PathBuf,
        /// Where to write the events, one JSON object per line.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Where to write a PNG of the waveform with the events marked.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Which clock drives the renderer.
        #[arg(long, value_enum, default_value_t = ClockArg::Offline)]
        clock: ClockArg,
        /// WAV sample format.
        #[arg(long, value_enum, default_value_t = FormatArg::S16)]
        format: FormatArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockArg {
    Offline,
    Virtual,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    S16,
    F32,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
        } => runtime.block_on(render(scenario, out, events, plot, clock, format)),
    }
}

async fn render(
    scenario: PathBuf,
    out: PathBuf,
    events: Option<PathBuf>,
    plot: Option<PathBuf>,
    clock: ClockArg,
    format: FormatArg,
) -> ExitCode {
    let prepared = match Scenario::load(&scenario) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    let clock = match clock {
        ClockArg::Offline => RenderClock::Offline,
        ClockArg::Virtual => RenderClock::Virtual,
    };
    let started = std::time::Instant::now();
    let rendered = match prepared.render(clock).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    let elapsed = started.elapsed();
    if let Err(e) = write_wav(&out, &rendered, matches!(format, FormatArg::F32)) {
        eprintln!("sotto: cannot write {}: {e}", out.display());
        return ExitCode::from(1);
    }
    if let Some(path) = &events {
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
            for e in &rendered.events {
                writeln!(f, "{}", e.to_json(rendered.sample_rate))?;
            }
            f.flush()
        };
        if let Err(e) = write() {
            eprintln!("sotto: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &plot {
        if let Err(e) = sotto::plot::plot(&rendered, path) {
            eprintln!("sotto: {e}");
            return ExitCode::from(1);
        }
    }
    let secs =
        rendered.samples.len() as f64 / rendered.channels as f64 / f64::from(rendered.sample_rate);
    println!(
        "rendered {:.2} s of audio in {:.3} s ({:.0}x real time) -> {}",
        secs,
        elapsed.as_secs_f64(),
        secs / elapsed.as_secs_f64().max(1e-9),
        out.display()
    );
    for e in &rendered.events {
        let extra: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  {:>8.3}s  {:<8} {:<17} {}",
            e.sample as f64 / f64::from(rendered.sample_rate),
            e.session,
            e.event,
            extra.join(" ")
        );
    }
    if rendered.late_blocks > 0 {
        println!("  late blocks: {}", rendered.late_blocks);
    }
    ExitCode::SUCCESS
}

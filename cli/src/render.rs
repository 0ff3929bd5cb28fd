//! `sotto render` and `sotto play`: a scenario through the whole engine,
//! to files (the main mix, each session's own output, events, a picture)
//! or to a sound card.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::scenario::{OutFiles, RenderClock, RenderOptions, Scenario};

use crate::{ClockArg, FormatArg};

pub(crate) async fn play(scenario: PathBuf, device: Option<String>) -> ExitCode {
    let prepared = match Scenario::load(&scenario) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    let rendered = match prepared.render(RenderClock::Device(device)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    if let Some(why) = &rendered.device_fallback {
        eprintln!("sotto: notice: {why}; played on the virtual clock instead");
    }
    println!("played {:.2} s", prepared.scenario().duration.0);
    print_events(&rendered);
    ExitCode::SUCCESS
}

/// Where `sotto render` writes.
pub(crate) struct RenderFiles {
    pub(crate) out: PathBuf,
    pub(crate) events: Option<PathBuf>,
    pub(crate) plot: Option<PathBuf>,
    pub(crate) sessions_dir: Option<PathBuf>,
}

pub(crate) async fn render(
    scenario: PathBuf,
    files: RenderFiles,
    clock: ClockArg,
    format: FormatArg,
) -> ExitCode {
    let RenderFiles {
        out,
        events,
        plot,
        sessions_dir,
    } = files;
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
    let float = matches!(format, FormatArg::F32);
    let options = RenderOptions {
        sessions: sessions_dir.is_some(),
        files: Some(OutFiles {
            mix: out.clone(),
            sessions_dir,
            float,
        }),
    };
    let rendered = match prepared.render_with(clock, options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto: {e}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    let elapsed = started.elapsed();
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
        if let Err(e) = crate::plot::plot(&rendered, path) {
            eprintln!("sotto: {e}");
            return ExitCode::from(1);
        }
    }
    let secs = rendered.frames as f64 / f64::from(rendered.sample_rate);
    println!(
        "rendered {:.2} s of audio in {:.3} s ({:.0}x real time) -> {}",
        secs,
        elapsed.as_secs_f64(),
        secs / elapsed.as_secs_f64().max(1e-9),
        out.display()
    );
    print_events(&rendered);
    if rendered.late_blocks > 0 {
        println!("  late blocks: {}", rendered.late_blocks);
    }
    ExitCode::SUCCESS
}

/// The event log, a line each.
fn print_events(rendered: &crate::scenario::Rendered) {
    for e in &rendered.events {
        let extra: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  {:>8.3}s  {:<8} {:<17} {}",
            e.sample as f64 / f64::from(rendered.sample_rate),
            crate::scenario::printable(&e.session),
            e.event,
            extra.join(" ")
        );
    }
}

//! Phone calls per core (BENCHMARKS.md): one `sotto serve --phone`
//! process answering N calls from doubles of Twilio's side (this process),
//! the agent speaking turn after turn; the server's CPU over 20 s, its
//! late blocks, and the same with the agent silent. Then barge-in to
//! silence at the double's ear and the confirmed-played error, over 100
//! interrupts. Run by `make bench-phone`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sotto_testkit::phone::TwilioDouble;

/// A `sotto serve --phone` on `port`, stopped (SIGINT, so it prints its
/// counts) when dropped.
struct Serve(Child);

impl Serve {
    fn start(port: u16, say: Option<&std::path::Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sotto"));
        cmd.args(["serve", "--phone", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--max-calls",
                "1024",
                "--max-connections-per-client",
                "256",
                // Arrivals as fast as the test makes them.
                "--max-connecting",
                "1024",
                "--admit-per-second",
                "10000",
            ]);
        if let Some(say) = say {
            cmd.arg("--say").arg(say);
        }
        Self(cmd.stdin(Stdio::null()).spawn().unwrap())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn webhook(port: u16) -> (String, String) {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http
            .post(format!("http://127.0.0.1:{port}/twilio/voice"))
            .send()
            .await
        {
            let twiml = r.text().await.unwrap();
            let attr = |name: &str| {
                let at = twiml.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                twiml[at..at + twiml[at..].find('"').unwrap()].to_owned()
            };
            return (attr("url"), attr("value"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server does not answer");
}

#[test]
#[ignore = "minutes long: make bench-phone"]
fn phone_calls_per_core() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = sotto_testkit::scratch_dir("phone-per-core");
        let quiet = dir.join("quiet.wav");
        sotto_testkit::write_wav_s16(&quiet, &vec![0.0; 16_000], 16_000, 1);
        let counts: Vec<usize> = std::env::var("SOTTO_PHONE_CALLS")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| vec![50, 100]);
        let seconds = 20.0;
        for &n in &counts {
            for speaking in [true, false] {
                let port = free_port();
                let serve = Serve::start(port, (!speaking).then_some(quiet.as_path()));
                let mut doubles = Vec::new();
                for _ in 0..n {
                    let (url, ticket) = webhook(port).await;
                    doubles.push(TwilioDouble::call(&url, &[("ticket", &ticket)], Vec::new()).await);
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                let cpu = |pid: u32| sotto_testkit::host::cpu_seconds(pid);
                let (pid, me) = (serve.0.id(), std::process::id());
                let (s0, m0, steal0) = (cpu(pid), cpu(me), sotto_testkit::host::steal_ms());
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                let sotto_pct = (cpu(pid) - s0) / seconds * 100.0;
                let doubles_pct = (cpu(me) - m0) / seconds * 100.0;
                let steal = (sotto_testkit::host::steal_ms() - steal0) as f64 / 10.0 / seconds;
                let underruns: usize = doubles.iter().map(|d| d.heard().underruns).sum();
                let live = doubles
                    .iter()
                    .filter(|d| {
                        let h = d.heard();
                        h.closed.is_none() && h.received > 0
                    })
                    .count();
                // Past what the machine carries (doubles included), calls
                // are refused or dropped: reported, not hidden.
                println!(
                    "phone calls {n} ({live} up) {}: sotto {sotto_pct:.1} % ({:.3} % a call, {:.0} calls a core), \
                     doubles {doubles_pct:.1} %, steal {steal:.1} %, underruns at the doubles {underruns}",
                    if speaking { "speaking" } else { "silent" },
                    sotto_pct / n as f64,
                    100.0 * n as f64 / sotto_pct.max(0.001),
                );
                for d in doubles {
                    let _ = d.hang_up().await;
                }
                drop(serve);
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    });
}

//! Headless Chromium as the far end of a call (SPEC W4), run in a network
//! of its own so that nothing it probes leaves loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Set in the environment of a test run again inside its own network.
const INSIDE: &str = "SOTTO_TEST_OWN_NETWORK";

/// Whether this process's only network interface is loopback (read from
/// `/proc/net/dev`, which shows the process's own network namespace).
#[must_use]
pub fn only_loopback() -> bool {
    std::fs::read_to_string("/proc/net/dev").is_ok_and(|dev| {
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split_once(':'))
            .all(|(name, _)| name.trim() == "lo")
    })
}

/// Tells apart the profiles of browsers opened by one process.
static OPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Held while a browser test runs in its namespace.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs test `name` of this test binary again, alone, in a fresh network
/// namespace with only loopback up, and fails if it fails there. `true`
/// when called from inside that run: the caller goes on with the test;
/// `false` when the run inside is over (and passed).
///
/// # Panics
/// When `unshare` or `ip` is missing (`make test` installs them), or the
/// run inside fails.
#[must_use]
pub fn in_own_network(name: &str) -> bool {
    run_inside(name, "ip link set lo up", only_loopback)
}

/// The address an SFU started by a test listens on for media, inside the
/// namespace of [`in_own_network_with_sfu`]: Janus's ICE gathers nothing
/// on loopback alone.
pub const SFU_ADDRESS: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 99, 0, 1));

/// Like [`in_own_network`], with one more interface in the namespace: a
/// veth pair (`v0` at [`SFU_ADDRESS`], `v1` its unnumbered peer) that an
/// SFU and the peers meeting it can gather on. Nothing routes out of it.
///
/// # Panics
/// As [`in_own_network`].
#[must_use]
pub fn in_own_network_with_sfu(name: &str) -> bool {
    run_inside(
        name,
        "ip link set lo up && ip link add v0 type veth peer name v1 \
         && ip addr add 10.99.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up",
        || {
            std::fs::read_to_string("/proc/net/dev").is_ok_and(|dev| {
                dev.lines()
                    .skip(2)
                    .filter_map(|l| l.split_once(':'))
                    .all(|(name, _)| ["lo", "v0", "v1"].contains(&name.trim()))
            })
        },
    )
}

fn run_inside(name: &str, setup: &str, check: fn() -> bool) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        assert!(check(), "the network namespace has more than it should");
        return true;
    }
    // One browser at a time: each plays and measures media in real time,
    // and several on two cores skew what they measure.
    let _one = ONE_BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exe = std::env::current_exe().expect("the test binary");
    let status = Command::new("unshare")
        .args(["--net", "--", "sh", "-c"])
        .arg(format!("{setup} && exec \"$@\""))
        .arg("sh")
        .arg(exe)
        .args([name, "--exact", "--include-ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(INSIDE, "1")
        .status()
        .expect("unshare must be installed (util-linux; make test checks)");
    assert!(
        status.success(),
        "{name} failed in its own network namespace"
    );
    false
}

/// A headless Chromium showing one page, killed when dropped.
pub struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    /// Opens `url` with `mic` (a WAV file) as the microphone; its profile
    /// lives under `dir`.
    ///
    /// # Panics
    /// When Chromium is not installed (`make test` installs it) or cannot
    /// start.
    #[must_use]
    pub fn open(url: &str, mic: &Path, dir: &Path) -> Self {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium must be installed (make test installs it)");
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = dir.join(format!("profile-{n}"));
        let child = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // ICE between two processes on loopback.
                "--allow-loopback-in-peer-connection",
                // A WAV as the microphone, no permission prompt.
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                // A page in the background must not be throttled.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
            ])
            .arg(format!(
                "--use-file-for-fake-audio-capture={}",
                mic.display()
            ))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        Self { child, profile }
    }

    /// Kills the browser now.
    pub fn close(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a page posted back for call `id`: the samples it heard (48 kHz
/// mono) and its report (JSON), once it has posted them, within `limit`.
///
/// # Panics
/// When nothing came within the limit.
pub async fn heard(
    server: std::net::SocketAddr,
    id: u64,
    limit: Duration,
) -> (Vec<f32>, serde_json::Value) {
    let http = reqwest::Client::new();
    let url = format!("http://{server}/test/calls/{id}/recording");
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(r) = http.get(&url).send().await else {
            continue;
        };
        if !r.status().is_success() {
            continue;
        }
        let report = r
            .headers()
            .get("x-sotto-report")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or(serde_json::Value::Null);
        let bytes = r.bytes().await.expect("the recording");
        return (f32s(&bytes), report);
    }
    panic!("call {id}: the page posted what it heard within {limit:?}");
}

/// Little-endian f32 samples.
#[must_use]
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

//! A real Janus (Debian's `janus`, its VideoRoom plugin and HTTP
//! transport) started by a test inside the namespace of
//! [`in_own_network_with_sfu`](crate::browser::in_own_network_with_sfu):
//! a configuration of its own in a temp dir, its HTTP API on a free
//! loopback port, ICE only on the namespace's veth, a small RTP port
//! range, no STUN. Sessions time out after 3 s without a keepalive, so a
//! participant whose process died is seen to leave within that: Sotto
//! keeps its sessions alive over HTTP, and browsers (`janus.js`, whose
//! keepalives go over WebSocket only) reach it on its WebSocket
//! transport. Killed when dropped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs Janus's plugins and transports.
const LIBS: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// A room with a PIN, for tests of a wrong one.
pub const PIN_ROOM: u64 = 4321;
/// That room's PIN.
pub const PIN: &str = "open-sesame";

/// A running Janus.
pub struct Janus {
    child: Child,
    dir: PathBuf,
    port: u16,
    ws_port: u16,
}

impl Janus {
    /// Starts Janus with its files under `dir`; rooms 1234 (open),
    /// 1000–1099 (open) and [`PIN_ROOM`] (with [`PIN`]); waits until its
    /// API answers.
    ///
    /// # Panics
    /// When Janus is not installed (`make test` installs it) or does not
    /// answer within 10 s.
    #[must_use]
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, free_port())
    }

    /// Starts Janus as [`Janus::start`] does, its API on `port`.
    ///
    /// # Panics
    /// As [`Janus::start`].
    #[must_use]
    pub fn start_on(dir: &Path, port: u16) -> Self {
        assert!(
            Path::new("/usr/bin/janus").exists(),
            "janus must be installed (make test installs it)"
        );
        let dir = dir.join("janus");
        for sub in ["plugins", "transports", "events", "loggers"] {
            std::fs::create_dir_all(dir.join(sub)).expect("a janus dir");
        }
        for (sub, lib) in [
            ("plugins", "libjanus_videoroom.so"),
            ("transports", "libjanus_http.so"),
            ("transports", "libjanus_websockets.so"),
        ] {
            let link = dir.join(sub).join(lib);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(LIBS).join(sub).join(lib), link)
                .expect("a plugin link");
        }
        let d = dir.display();
        write(
            &dir.join("janus.jcfg"),
            &format!(
                "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{d}/plugins\"\n \
                 transports_folder = \"{d}/transports\"\n events_folder = \"{d}/events\"\n \
                 loggers_folder = \"{d}/loggers\"\n debug_level = 4\n session_timeout = 3\n}}\n\
                 media: {{\n rtp_port_range = \"40000-40400\"\n}}\n\
                 nat: {{\n nice_debug = false\n ice_enforce_list = \"v0\"\n}}\n"
            ),
        );
        write(
            &dir.join("janus.transport.http.jcfg"),
            &format!(
                "general: {{\n json = \"compact\"\n base_path = \"/janus\"\n http = true\n \
                 port = {port}\n ip = \"127.0.0.1\"\n https = false\n}}\n\
                 admin: {{\n admin_http = false\n}}\ncors: {{\n allow_origin = \"*\"\n}}\n"
            ),
        );
        let ws_port = free_port();
        write(
            &dir.join("janus.transport.websockets.jcfg"),
            &format!(
                "general: {{\n json = \"compact\"\n ws = true\n ws_port = {ws_port}\n \
                 ws_ip = \"127.0.0.1\"\n wss = false\n}}\nadmin: {{\n admin_ws = false\n}}\n"
            ),
        );
        let room = |id: u64, extra: &str| {
            format!(
                "room-{id}: {{\n description = \"room {id}\"\n publishers = 16\n \
                 audiocodec = \"opus\"\n videocodec = \"vp8\"\n{extra}}}\n"
            )
        };
        let mut rooms = String::from("general: {\n}\n");
        rooms.push_str(&room(1234, ""));
        for id in 1000..1100 {
            rooms.push_str(&room(id, ""));
        }
        rooms.push_str(&room(PIN_ROOM, &format!(" pin = \"{PIN}\"\n")));
        write(&dir.join("janus.plugin.videoroom.jcfg"), &rooms);
        let log = std::fs::File::create(dir.join("janus.log")).expect("a log");
        let child = Command::new("janus")
            .arg("-F")
            .arg(&dir)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .args(["--interface=10.99.0.1", "--ice-enforce-list=v0"])
            .stdout(log.try_clone().expect("a log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("janus starts");
        let janus = Self {
            child,
            dir,
            port,
            ws_port,
        };
        janus.wait_ready();
        janus
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.ws_port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("janus did not answer; its log: {}", self.log());
    }

    /// Its HTTP API: `http://127.0.0.1:PORT/janus`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/janus", self.port)
    }

    /// Its WebSocket API, for `janus.js`: `ws://127.0.0.1:PORT`.
    #[must_use]
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.ws_port)
    }

    /// A session's config for `room` as `display`: media on the
    /// namespace's veth ([`SFU_ADDRESS`](crate::browser::SFU_ADDRESS)),
    /// requests bounded at 3 s, keepalives every second (this Janus
    /// forgets a session after 3 s without one).
    #[must_use]
    pub fn room(&self, room: u64, display: &str) -> sotto::RoomConfig {
        sotto::RoomConfig {
            url: self.url(),
            room,
            display: display.into(),
            media: sotto::CallConfig {
                bind: crate::browser::SFU_ADDRESS,
                ..sotto::RoomConfig::default().media
            },
            request_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(1),
            ..sotto::RoomConfig::default()
        }
    }

    /// The port its API listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default()
    }

    /// Kills it now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn write(path: &Path, text: &str) {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("a janus config file");
}

/// Debian's `simple-whip-server`: a WHIP endpoint that publishes into a
/// Janus VideoRoom over Janus's WebSocket API. Found where Debian installs
/// it (`/usr/share/simple-whip-server`, its modules in `/usr/share/nodejs`)
/// or where `make test-deps` unpacks it when Debian's node modules cannot
/// be installed beside the machine's nodejs (`target/simple-whip-server`,
/// its modules from the npm registry). Killed when dropped.
pub struct WhipServer {
    child: Child,
    port: u16,
}

impl WhipServer {
    /// Starts it with its files under `dir`, speaking to `janus`.
    ///
    /// # Panics
    /// When it is not installed (`make test-deps` installs it) or does
    /// not answer within 10 s.
    #[must_use]
    pub fn start(dir: &Path, janus: &Janus) -> Self {
        let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/simple-whip-server");
        let (home, modules) = [
            (
                PathBuf::from("/usr/share/simple-whip-server"),
                PathBuf::from("/usr/share/nodejs"),
            ),
            (unpacked.clone(), unpacked.join("node_modules")),
        ]
        .into_iter()
        .find(|(home, _)| home.join("src/server.js").exists())
        .expect("simple-whip-server must be installed (make test-deps)");
        // Its configuration is `src/config.js` beside the server: a copy of
        // the sources with one of our own.
        let src = dir.join("whip");
        std::fs::create_dir_all(&src).expect("a whip dir");
        for file in ["server.js", "whip-janus.js"] {
            std::fs::copy(home.join("src").join(file), src.join(file)).expect("the whip sources");
        }
        let port = free_port();
        write(
            &src.join("config.js"),
            &format!(
                "module.exports = {{ janus: {{ address: '{}' }}, port: {port}, rest: '/whip', \
                 allowTrickle: true, strictETags: false, iceServers: [] }};\n",
                janus.ws_url()
            ),
        );
        let log = std::fs::File::create(dir.join("whip.log")).expect("a log");
        let child = Command::new("node")
            .arg(src.join("server.js"))
            .current_dir(&src)
            .env("NODE_PATH", modules)
            .stdout(log.try_clone().expect("a log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("node starts");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "simple-whip-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Its base: `http://127.0.0.1:PORT/whip`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/whip", self.port)
    }

    /// Creates endpoint `id` publishing into `room` (its non-standard
    /// `POST /whip/create`), with `token` required when given: the
    /// endpoint's URL.
    ///
    /// # Panics
    /// When it refuses.
    pub async fn endpoint(&self, id: &str, room: u64, token: Option<&str>) -> String {
        let mut body = serde_json::json!({"id": id, "room": room});
        if let Some(t) = token {
            body["token"] = t.into();
        }
        let r = reqwest::Client::new()
            .post(format!("{}/create", self.url()))
            .json(&body)
            .send()
            .await
            .expect("simple-whip-server answers");
        assert!(r.status().is_success(), "create: {}", r.status());
        format!("{}/endpoint/{id}", self.url())
    }
}

impl Drop for WhipServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next event of `room` that `want` picks, within `limit` (printed
/// as they come).
///
/// # Panics
/// When none comes in time, or the room ends first.
pub async fn until(
    room: &mut sotto::RoomHandle,
    limit: Duration,
    want: impl Fn(&sotto::RoomEvent) -> bool,
) -> sotto::RoomEvent {
    tokio::time::timeout(limit, async {
        loop {
            let e = room.next_event().await.expect("the room is live");
            eprintln!("room {}: {e:?}", room.id());
            if want(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no such event within {limit:?}"))
}

/// Reads `seconds` of a room's microphone (48 kHz mono), or what came in
/// `seconds` + 5 s.
pub async fn hear(mic: &mut tokio::sync::mpsc::Receiver<Vec<f32>>, seconds: f64) -> Vec<f32> {
    let want = (48_000.0 * seconds) as usize;
    let mut got = Vec::with_capacity(want);
    tokio::time::timeout(Duration::from_secs_f64(seconds + 5.0), async {
        while got.len() < want {
            match mic.recv().await {
                Some(chunk) => got.extend(chunk),
                None => break,
            }
        }
    })
    .await
    .ok();
    got
}

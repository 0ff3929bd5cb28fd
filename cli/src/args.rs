//! The command line: every subcommand and its flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "sotto",
    version,
    about = "Real-time audio engine for voice agents"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// Also write each session's own output (what that session's user
        /// hears, alone) to DIR/<session>.wav.
        #[arg(long, value_name = "DIR")]
        sessions_dir: Option<PathBuf>,
    },
    /// List the audio devices: index, name, channels, rates, defaults.
    Devices,
    /// Run a recorded far-end and microphone pair through the live input's
    /// processing path (10 ms frames at 48 kHz) and print the echo return
    /// loss enhancement (meaningful when the microphone holds echo only).
    EchoCancel {
        /// What was played (any format the background decoder reads).
        #[arg(long)]
        far: PathBuf,
        /// What the microphone picked up.
        #[arg(long)]
        mic: PathBuf,
        /// Where to write the cleaned microphone (48 kHz mono WAV).
        #[arg(long)]
        out: PathBuf,
        /// Output plus input latency in ms (0 to 500, what the module takes).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=500))]
        delay_ms: u32,
        /// Without noise suppression.
        #[arg(long)]
        no_ns: bool,
        /// Without automatic gain control.
        #[arg(long)]
        no_agc: bool,
        /// Without the high-pass filter.
        #[arg(long)]
        no_hpf: bool,
    },
    /// Play a scenario in real time on a sound card (the virtual clock, with
    /// a notice, when there is none).
    Play {
        /// The scenario file.
        scenario: PathBuf,
        /// The output device's name (see `sotto devices`); default: the
        /// system's default output.
        #[arg(long)]
        device: Option<String>,
    },
    /// Run many sessions speaking in bursts, with interrupts, pauses and
    /// snapshots, and report what held: late blocks, underruns, block
    /// render times, interrupt-to-fade latency, CPU and memory.
    Soak {
        /// Concurrent sessions.
        #[arg(long, default_value_t = 100, conflicts_with = "calls")]
        sessions: usize,
        /// Concurrent calls: sessions with outputs of their own, each read
        /// frame by frame by a task of its own.
        #[arg(long)]
        calls: Option<usize>,
        /// Length of the run in seconds.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// A background bed under every session.
        #[arg(long)]
        background: bool,
        /// Mean seconds between a session's interrupts.
        #[arg(long)]
        interrupt_every: Option<f64>,
        /// Which clock drives the renderer.
        #[arg(long, value_enum, default_value_t = ClockArg::Virtual)]
        clock: ClockArg,
        /// Render shards on the virtual clock (default: one per core).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        render_threads: Option<u16>,
        /// Where to write the report as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Run the avatar side: a dispatcher at `POST /join` on loopback that
    /// checks each agent's token, answers its WebRTC offer, and plays its
    /// voice with a face locked to it.
    AvatarServer {
        /// Where to listen (loopback only).
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: std::net::SocketAddr,
        /// The secret agents' tokens are signed with.
        #[arg(long)]
        secret: String,
        /// Where to write each connection's `voice.wav` and `video.y4m`
        /// (a folder per connection); nothing is written without it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Video frames per second.
        #[arg(long, default_value_t = 25)]
        fps: u32,
        /// Picture width and height.
        #[arg(long, default_value = "640x480")]
        size: String,
        /// Play mono voices as stereo.
        #[arg(long)]
        stereo: bool,
        /// Publish each avatar's voice and face as WebRTC media, watched
        /// from the page at `/watch` (or any WHEP-style viewer at
        /// `POST /avatars/{id}/viewers`).
        #[arg(long)]
        viewer: bool,
        /// Viewers must carry a bearer token signed with this secret,
        /// granting `allow_view` for the avatar's room (or `operator`).
        /// Without it anyone who reaches the server may watch and list.
        #[arg(long, requires = "viewer")]
        viewer_secret: Option<String>,
    },
    /// Serve calls from browsers (WebRTC, Opus) to a demo agent: a page at
    /// `/` to talk to it, and `POST /calls` with an SDP offer for any
    /// WebRTC client.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// What the agent says (16-bit WAV, mono or stereo, at most 60 s);
        /// a short speech of its own when not given.
        #[arg(long)]
        say: Option<PathBuf>,
        /// Calls must carry a bearer token signed with this secret.
        #[arg(long)]
        token_secret: Option<String>,
        /// Calls at once at most; one more is refused with 503.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
        max_calls: u16,
        /// Calls at once for one participant (a token's `participantId`)
        /// at most; one more is refused with 429.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
        max_calls_per_participant: u16,
        /// Open HTTP connections from one client (an IPv4 address, an IPv6
        /// /64) at most; one more is closed at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        max_connections_per_client: u16,
        /// Calls being set up at once at most (admitted, not yet
        /// connected); one more is refused with 503 and `Retry-After`.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
        max_connecting: u16,
        /// New calls admitted a second at most, on average.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        admit_per_second: u16,
        /// The longest lifetime, in seconds, a call's token may claim
        /// (`exp` − `iat`); a longer-lived one is refused with 401.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=86_400))]
        token_lifetime: u32,
        /// The address calls' media sockets bind and offer: loopback by
        /// default; an interface's address to take calls from elsewhere.
        #[arg(long, default_value = "127.0.0.1")]
        media_addr: std::net::IpAddr,
        /// Runs each caller's microphone through echo cancellation (against
        /// that call's own voice), noise suppression and gain control, for
        /// callers whose phone or browser has none of its own.
        #[arg(long)]
        clean_mic: bool,
        /// The agent speaks through an avatar (in this process): its voice
        /// and face are published as WebRTC media and the page shows it
        /// beside the call; in a room (`--janus`), the avatar joins the
        /// room as a feed of its own (`sotto-agent-PID-face`).
        #[arg(long)]
        avatar: bool,
        /// Also answers phone calls a carrier hands over as media streams:
        /// `POST /twilio/voice` (point a Twilio number's voice webhook at
        /// it) and the stream's WebSocket at `/twilio/stream`.
        #[arg(long)]
        phone: bool,
        /// A Janus SFU's HTTP API (`http://host:8088/janus`): the agent
        /// also joins the VideoRoom rooms given with `--room` and talks to
        /// whoever joins them; `/room` lets a browser join the first.
        #[arg(long, requires = "room")]
        janus: Option<String>,
        /// A VideoRoom to join (repeatable: one agent per room).
        #[arg(long, requires = "janus", value_parser = clap::value_parser!(u64).range(1..))]
        room: Vec<u64>,
        /// The rooms' PIN, when they have one.
        #[arg(long, requires = "janus")]
        room_pin: Option<String>,
        /// The address of the same Janus that `/room` hands the browser's
        /// `janus.js` (its WebSocket API, `ws://host:8188`, so the page's
        /// session is kept alive); the `--janus` URL when not given.
        #[arg(long, requires = "janus")]
        janus_page: Option<String>,
        /// Seconds between keepalives of the agent's Janus sessions: well
        /// under Janus's `session_timeout`, which is how soon a room sees
        /// this process leave if it dies.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u16).range(1..=300))]
        janus_keepalive: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ClockArg {
    Offline,
    Virtual,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    S16,
    F32,
}

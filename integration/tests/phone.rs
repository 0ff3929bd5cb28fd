//! SPEC T1–T4: phone calls over Twilio's Media Streams, against a double
//! of Twilio's side written from its documentation
//! (`sotto_testkit::phone`). The call server answers the voice webhook with
//! TwiML, the double opens the stream it names; the caller hears the agent
//! (μ-law, 8 kHz), barges in and hears the fade end within the lead and
//! the fade; marks confirm to the frame what the double played; a `clear`
//! flushes the marks it holds; DTMF digits arrive as session events; bad
//! input closes the stream clearly and leaves the server serving.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::time::Duration;

use sotto::{Engine, MediaStreamSocket, PhoneConfig, PhoneEvent, SessionEventKind, WsMessage};
use sotto_integration::call_engine;
use sotto_integration::compare::align;
use sotto_integration::phone::TwilioDouble;

/// One phone test at a time: each plays and measures a line in real time,
/// and several on two cores skew what they measure.
static ONE_LINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_line() -> std::sync::MutexGuard<'static, ()> {
    ONE_LINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn phone_server(engine: &Engine) -> sotto_server::calls::CallServer {
    sotto_server::calls::CallServer::start(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        sotto_server::calls::ServeConfig {
            utterances: vec![sotto_testkit::hello()],
            keep_recordings: true,
            phone: true,
            ..sotto_server::calls::ServeConfig::default()
        },
    )
    .await
    .unwrap()
}

/// What Twilio does when a call comes in: POSTs the webhook, reads the
/// TwiML, and returns the stream's URL and its ticket.
async fn webhook(server: &sotto_server::calls::CallServer) -> (String, String) {
    let twiml = reqwest::Client::new()
        .post(format!("http://{}/twilio/voice", server.addr()))
        .form(&[
            ("CallSid", "CA1"),
            ("From", "+15550100"),
            ("To", "+15550199"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let attr = |name: &str| {
        let at = twiml.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        twiml[at..at + twiml[at..].find('"').unwrap()].to_owned()
    };
    assert!(twiml.contains("<Connect><Stream"), "{twiml}");
    (attr("url"), attr("value"))
}

async fn call_events(server: &sotto_server::calls::CallServer, n: u64) -> Vec<serde_json::Value> {
    let url = format!("http://{}/test/calls/{n}/events", server.addr());
    let feed: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    feed.as_array().cloned().unwrap_or_default()
}

/// T1, T2: the caller hears the agent (correlation ≥ 0.9 after μ-law) and
/// barges in: the agent pauses and the caller hears its voice end within
/// the lead, the fade and 40 ms; the caller's speech is what the agent
/// heard; the double never ran dry once the agent spoke.
#[test]
fn a_caller_hears_the_agent_and_barges_in() {
    let _line = one_line();
    runtime().block_on(async {
        let engine = call_engine().await;
        let server = phone_server(&engine).await;
        let (url, ticket) = webhook(&server).await;
        assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
        let say = sotto_testkit::hello();
        let speech = sotto_testkit::utterance_at(&say, 8_000);
        // The caller: quiet for 6 s, a second of speech, quiet again.
        let mut mic = vec![0.0; 8_000 * 16];
        let talk = 8_000 * 6;
        mic[talk..talk + 8_000].copy_from_slice(&speech[8_000..16_000]);
        let double = TwilioDouble::call(&url, &[("ticket", &ticket)], mic.clone()).await;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let log = call_events(&server, 1).await;
        // What the agent heard of the caller, while the call is there.
        let mic_got = sotto_integration::browser::f32s(
            &reqwest::get(format!("http://{}/test/calls/1/mic", server.addr()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        );
        let heard = double.hang_up().await;
        eprintln!(
            "the double: {} s played, {} marks, {} underruns",
            heard.played.len() as f64 / 8_000.0,
            heard.marks.len(),
            heard.underruns
        );
        let played = &heard.played;
        let first_turn = &played[..played.len().min(8_000 * 6)];
        let found = align(&speech, 4_000, first_turn, 16_000);
        eprintln!(
            "the caller heard the agent: correlation {:.3}, level {:+.2} dB",
            found.correlation, found.level_db
        );
        assert!(
            found.correlation >= 0.9,
            "correlation {:.3}",
            found.correlation
        );
        assert!(
            found.level_db.abs() <= 1.0,
            "level {:.2} dB",
            found.level_db
        );

        // The barge-in at the caller's ear: the voice ends within the
        // lead (60 ms), the pause's fade and 40 ms of the pause.
        let time = |name: &str| {
            log.iter()
                .find(|e| e["event"] == name)
                .and_then(|e| e["t"].as_f64())
                .unwrap_or_else(|| panic!("no {name} in {log:?}"))
        };
        let (t0, tp) = (time("first_audio"), time("paused"));
        // Where the pause falls in what the double played: the speech just
        // before it found there (the double's own buffer may have grown
        // since the start; its clock is not the engine's).
        let near = align(&speech, ((tp - t0 - 0.7) * 8_000.0) as usize, played, 4_800);
        let at = |t: f64| (near.lags[0] as f64 + (t - tp + 0.7) * 8_000.0) as usize;
        let peak = |s: &[f32]| s.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let before = peak(&played[at(tp - 0.5)..at(tp - 0.1)]);
        let fade = sotto::SessionConfig::default().pause_ramp;
        let quiet_from = tp + 0.060 + fade.as_secs_f64() + 0.040;
        let after = peak(&played[at(quiet_from)..at(quiet_from + 0.5)]);
        eprintln!(
            "barge-in: paused {:.3} s after first audio; peak before {before:.3}, \
             from lead + fade + 40 ms on {after:.4}",
            tp - t0
        );
        assert!(before > 0.05, "the agent was speaking before the barge-in");
        assert!(after < 0.01, "silence at the caller after the pause");

        // The agent heard the caller.
        // At the line's rate: what the caller said is 8 kHz speech.
        let mut mic_at_8k = Vec::new();
        let mut down = sotto_media::resample::Resampler::new(48_000, 8_000, 1).unwrap();
        down.push(&mic_got, &mut mic_at_8k);
        down.flush(&mut mic_at_8k);
        let heard_caller = align(&speech, 8_000, &mic_at_8k, 8_000);
        eprintln!(
            "the agent heard the caller: correlation {:.3}",
            heard_caller.correlation
        );
        assert!(
            heard_caller.correlation >= 0.9,
            "{:.3}",
            heard_caller.correlation
        );
        drop(server);
        engine.shutdown().await;
    });
}

/// A media stream served straight from the library, as an embedder
/// would: a WebSocket accepted with tokio-tungstenite, its two directions
/// handed to the engine.
async fn serve_one(
    engine: Engine,
    session: sotto::SessionHandle,
    config: PhoneConfig,
) -> (String, tokio::task::JoinHandle<sotto::PhoneCallHandle>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (mut to_carrier, mut from_carrier) = ws.split();
        let (in_tx, incoming) = tokio::sync::mpsc::channel(64);
        let (outgoing, mut out_rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(Ok(m)) = from_carrier.next().await {
                let m = match m {
                    Message::Text(t) => WsMessage::Text(t.to_string()),
                    Message::Binary(b) => WsMessage::Binary(b.to_vec()),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if in_tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let m = match m {
                    WsMessage::Text(t) => Message::Text(t.into()),
                    WsMessage::Binary(b) => Message::Binary(b.into()),
                    WsMessage::Close(..) => break,
                };
                if to_carrier.send(m).await.is_err() {
                    break;
                }
            }
            let _ = to_carrier.close().await;
        });
        engine
            .accept_media_stream(&session, MediaStreamSocket { incoming, outgoing }, config)
            .await
            .unwrap()
    });
    (url, task)
}

/// T3, T4: each mark the double echoes confirms to the frame what it
/// played (the leg's confirmed position against the double's played
/// samples, within one mark's 20 ms); a `clear` (the session's queue
/// cleared) comes back as flushed marks, counted as flushed, not played;
/// DTMF digits are session events.
#[test]
fn marks_confirm_what_the_caller_heard() {
    let _line = one_line();
    runtime().block_on(async {
        let engine = call_engine().await;
        let say = sotto_testkit::hello();
        let session = engine
            .create_session(sotto::SessionConfig {
                input: say.input,
                ..sotto::SessionConfig::default()
            })
            .await
            .unwrap();
        let mut session_events = session.events();
        let (url, leg) = serve_one(engine.clone(), session.clone(), PhoneConfig::default()).await;
        let double = TwilioDouble::call(&url, &[], vec![0.0; 8_000]).await;
        let mut leg = leg.await.unwrap();
        let started = tokio::time::timeout(Duration::from_secs(5), leg.next_event())
            .await
            .unwrap();
        assert!(
            matches!(started, Some(PhoneEvent::Started { .. })),
            "{started:?}"
        );
        drop(session.push(say.bytes.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Confirmed against what the double played: mark `sotto-k` follows
        // the k-th 20 ms frame after the lead's silence.
        let heard = double.heard();
        let playout = leg.playout();
        let (name, at) = heard.marks.last().cloned().unwrap();
        let k: usize = name.strip_prefix("sotto-").unwrap().parse().unwrap();
        let lead = 480;
        eprintln!(
            "confirmed {} frames (48 kHz); the double echoed {name} at {at} samples played; \
             {playout:?}",
            playout.confirmed_frames
        );
        assert!((at - lead).abs_diff(k * 160) < 160, "{name} echoed at {at}");
        let confirmed = playout.confirmed_frames as usize / 6;
        let double_played = heard.played.len().min(at) - lead;
        assert!(
            confirmed.abs_diff(double_played) <= 160 * 2,
            "confirmed {confirmed} against {double_played} played"
        );
        assert!(playout.marks_played > 50, "{playout:?}");

        // A hard stop: the session's queue cleared mid-speech.
        session.clear_queue().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let heard = double.heard();
        let playout = leg.playout();
        eprintln!(
            "after the clear: {playout:?}; the double flushed {}",
            heard.flushed.len()
        );
        assert_eq!(heard.clears.len(), 1);
        assert!(!heard.flushed.is_empty(), "the clear flushed marks");
        // Every echo is counted once; the leg counts as flushed every mark
        // sent before its `clear`, so one the carrier played while the
        // `clear` was on its way counts as flushed too (never the other
        // way: confirmed never runs ahead of the ear).
        // (The line runs on: an echo or two may be in flight between the
        // two reads.)
        let echoed = (heard.marks.len() + heard.flushed.len()) as u64;
        let counted = playout.marks_played + playout.marks_flushed;
        assert!(
            counted.abs_diff(echoed) <= 2,
            "{counted} echoes counted, {echoed} sent"
        );
        let in_flight = playout.marks_flushed - heard.flushed.len() as u64;
        assert!(
            in_flight <= 5,
            "{in_flight} marks counted flushed that the double played"
        );

        // DTMF.
        double.press('7').await;
        let digit = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Some(e) = session_events.recv().await {
                    if let SessionEventKind::Dtmf { digit } = e.kind {
                        return digit;
                    }
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(digit, '7');
        let _ = double.hang_up().await;
        let end = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if let Some(PhoneEvent::Ended { reason }) = leg.next_event().await {
                    return reason;
                }
            }
        })
        .await
        .unwrap();
        eprintln!("the call ended: {end}");
        engine.shutdown().await;
    });
}

/// S1–S5 on the stream: each bad stream is closed with a clear code, or
/// its bad message rejected with the call going on; the server serves a
/// good call after all of them.
#[test]
fn bad_streams_are_closed_and_the_server_serves_on() {
    let _line = one_line();
    runtime().block_on(async {
        let engine = call_engine().await;
        let server = phone_server(&engine).await;
        let start = |params: &str| {
            format!(
                r#"{{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{{"streamSid":"MZ1","accountSid":"AC1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{{params}}}}}}}"#
            )
        };
        // Each: what is sent after `connected`, and the close expected.
        let cases = [
            ("no ticket", start(""), 1008),
            ("a stranger's ticket", start(r#""ticket":"0123456789abcdef0123456789abcdef""#), 1008),
            ("bad JSON before the start", "{nope".to_owned(), 1002),
            ("media before the start", r#"{"event":"media","media":{"payload":"//8="}}"#.to_owned(), 1002),
        ];
        for (what, first, code) in cases {
            let (url, _) = webhook(&server).await;
            let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            let closed = close_code(ws, Some(first)).await;
            eprintln!("{what}: closed with {closed:?}");
            assert_eq!(closed.map(|c| c.0), Some(code), "{what}");
        }
        // A format other than μ-law 8 kHz mono, with a good ticket.
        let (url, ticket) = webhook(&server).await;
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let wrong = start(&format!(r#""ticket":"{ticket}""#)).replace("audio/x-mulaw", "audio/x-l16");
        let closed = close_code(ws, Some(wrong)).await;
        eprintln!("a wrong format: closed with {closed:?}");
        assert_eq!(closed.map(|c| c.0), Some(1003));
        // A stream that never starts is closed within the start limit.
        let (url, _) = webhook(&server).await;
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let t = std::time::Instant::now();
        let closed = close_code(ws, None).await;
        eprintln!("never started: closed with {closed:?} after {:.1} s", t.elapsed().as_secs_f64());
        assert_eq!(closed.map(|c| c.0), Some(1008));
        assert!(t.elapsed() < Duration::from_secs(7));

        // Inside a live call: a 1 MB message closes it (too big); unknown
        // events and bad JSON are rejected and the call goes on; a flood
        // of 10,000 messages a second closes it.
        let (url, ticket) = webhook(&server).await;
        let double = TwilioDouble::call(&url, &[("ticket", &ticket)], Vec::new()).await;
        double.send_raw(r#"{"event":"dance"}"#.into()).await;
        double.send_raw("{nope".into()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(double.heard().closed.is_none(), "bad messages alone do not end a call");
        double.send_raw(format!(r#"{{"event":"mark","mark":{{"name":"{}"}}}}"#, "x".repeat(1 << 20))).await;
        let closed = double.closed(Duration::from_secs(10)).await;
        eprintln!("a 1 MB message: closed with {closed:?}");
        assert!(closed.is_some());
        let (url, ticket) = webhook(&server).await;
        let double = TwilioDouble::call(&url, &[("ticket", &ticket)], Vec::new()).await;
        for _ in 0..10_000 {
            double.send_raw(r#"{"event":"dance"}"#.into()).await;
        }
        let closed = double.closed(Duration::from_secs(10)).await;
        eprintln!("a flood: closed with {closed:?}");
        assert_eq!(closed.map(|c| c.0), Some(1008));

        // A used ticket does not open a second stream.
        let (url, ticket) = webhook(&server).await;
        let first = TwilioDouble::call(&url, &[("ticket", &ticket)], Vec::new()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = TwilioDouble::call(&url, &[("ticket", &ticket)], Vec::new()).await;
        let closed = second.closed(Duration::from_secs(3)).await;
        assert_eq!(closed.map(|c| c.0), Some(1008), "a ticket is good once");
        let _ = first.hang_up().await;

        // The server serves on: a good call hears the agent.
        let (url, ticket) = webhook(&server).await;
        let double = TwilioDouble::call(&url, &[("ticket", &ticket)], Vec::new()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let heard = double.hang_up().await;
        let loud = heard.played.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(loud > 0.1, "the agent is heard after all that");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = server.stats();
        eprintln!("{stats:?}");
        assert_eq!(stats.calls, stats.ended, "every call is over");
        drop(server);
        engine.shutdown().await;
    });
}

/// Opens a stream by hand: `connected`, then `first` if any, and waits
/// for the server's close.
async fn close_code(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    first: Option<String>,
) -> Option<(u16, String)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
    ws.send(Message::Text(connected.into())).await.ok()?;
    if let Some(text) = first {
        ws.send(Message::Text(text.into())).await.ok()?;
    }
    tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => {
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// BENCHMARKS.md: 100 interrupts on a phone line. Each turn speaks 1–2 s
/// and is interrupted; at the double's ear, the time from the interrupt
/// to silence (under −50 dBFS for 40 ms), and, once the fade is done and
/// confirmed, the confirmed-played count against the rendered one. Run by
/// `make bench-phone`.
#[test]
#[ignore = "minutes long: make bench-phone"]
fn a_hundred_interrupts_on_a_phone_line() {
    let _line = one_line();
    runtime().block_on(async {
        let engine = call_engine().await;
        let say = sotto_testkit::hello();
        let session = engine
            .create_session(sotto::SessionConfig {
                input: say.input,
                ..sotto::SessionConfig::default()
            })
            .await
            .unwrap();
        let (url, leg) = serve_one(engine.clone(), session.clone(), PhoneConfig::default()).await;
        let double = TwilioDouble::call(&url, &[], Vec::new()).await;
        let leg = leg.await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut to_silence, mut errors) = (Vec::new(), Vec::new());
        for k in 0..100u64 {
            let mut events = session.events();
            session.mark_synthesis_start().unwrap();
            drop(session.push(say.bytes.clone()));
            let speak = Duration::from_millis(1_000 + (k * 37) % 1_000);
            tokio::time::sleep(speak).await;
            let cut = std::time::Instant::now();
            session.interrupt().unwrap();
            tokio::time::timeout(Duration::from_secs(3), async {
                while let Some(e) = events.recv().await {
                    if matches!(e.kind, SessionEventKind::FadeDone) {
                        return;
                    }
                }
            })
            .await
            .unwrap();
            // The fade reaches the ear a lead later, its marks after that.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let snap = session.snapshot_playback().await.unwrap();
            let confirmed = snap.confirmed_frames.unwrap().get();
            errors.push(confirmed.abs_diff(snap.played_frames.get()) as f64 / 48.0);
            let heard = double.heard();
            let t0 = heard.first_tick.unwrap();
            let from = ((cut - t0).as_secs_f64() * 8_000.0) as usize;
            let quiet = heard.played[from..]
                .chunks(320)
                .position(|c| sotto_integration::rms(c) < 0.003)
                .map(|i| i as f64 * 40.0);
            to_silence.push(quiet.unwrap_or(f64::NAN));
        }
        let stats = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() * 95 / 100], v[v.len() - 1])
        };
        let (p50, p95, max) = stats(to_silence);
        println!("phone: interrupt to silence at the ear over 100: median {p50:.0} ms, p95 {p95:.0} ms, max {max:.0} ms (40 ms windows)");
        let (e50, e95, emax) = stats(errors);
        println!("phone: confirmed against rendered, after each fade: median {e50:.1} ms, p95 {e95:.1} ms, max {emax:.1} ms");
        println!("phone: {:?}", leg.playout());
        engine.shutdown().await;
    });
}

/// T1 against a Twilio simulator no one here wrote: `streamdouble`
/// (PyPI, installed in a venv by `make test-deps`) places a call through
/// the webhook's stream with the ticket as its `<Parameter>`; it passes
/// (exit 0, protocol clean), and what it recorded of the agent is the
/// agent's speech (correlation ≥ 0.9).
#[test]
fn streamdouble_places_a_call() {
    let _line = one_line();
    let exe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/streamdouble/bin/streamdouble");
    assert!(
        exe.exists(),
        "make test-deps installs streamdouble in target/streamdouble"
    );
    runtime().block_on(async {
        let engine = call_engine().await;
        let server = phone_server(&engine).await;
        let (url, ticket) = webhook(&server).await;
        let dir = sotto_integration::scratch_dir("streamdouble");
        let caller = dir.join("caller.wav");
        sotto_integration::write_wav_s16(&caller, &vec![0.0; 8_000 * 4], 8_000, 1);
        let reply = dir.join("reply.wav");
        let run = tokio::process::Command::new(&exe)
            .args(["call", &url, "--audio"])
            .arg(&caller)
            .arg("--out")
            .arg(&reply)
            .args([
                "--param",
                &format!("ticket={ticket}"),
                "--json",
                "--max-drain",
                "6",
            ])
            .output()
            .await
            .unwrap();
        let report = String::from_utf8_lossy(&run.stdout);
        eprintln!(
            "streamdouble: {report}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let json: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(
            json["violations"],
            serde_json::json!([]),
            "no protocol violations"
        );
        assert!(
            json["time_to_first_audio_ms"].as_f64().is_some(),
            "the agent spoke"
        );
        let got = sotto_integration::read_wav_mono(&reply);
        let speech = sotto_testkit::utterance_at(&sotto_testkit::hello(), 8_000);
        let found = align(&speech, 4_000, &got, 16_000);
        eprintln!(
            "streamdouble heard the agent: correlation {:.3}",
            found.correlation
        );
        assert!(
            found.correlation >= 0.9,
            "correlation {:.3}",
            found.correlation
        );
        drop(server);
        engine.shutdown().await;
        std::fs::remove_dir_all(&dir).ok();
    });
}

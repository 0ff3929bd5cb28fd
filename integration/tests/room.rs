//! SPEC F1–F5: sessions in a room of a real Janus (Debian's, started by
//! the test in a network namespace of its own). Two sessions of one engine
//! join room 1234 through the SFU: each hears the other, and the speech
//! arrives whole. Faults: a room that does not exist, a wrong PIN, Janus
//! answering garbage or nothing, Janus killed and restarted under a live
//! room — each a clear error or event within a bounded time, nothing left
//! behind.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::time::Duration;

use sotto::{
    CallConfig, Engine, RoomConfig, RoomError, RoomEvent, RoomHandle, SessionError, SessionHandle,
};
use sotto_integration::browser::{in_own_network_with_sfu, SFU_ADDRESS};
use sotto_integration::compare::align;
use sotto_integration::janus::{Janus, PIN, PIN_ROOM};
use sotto_integration::{call_engine, scratch_dir};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn room(janus: &Janus, room: u64, display: &str) -> RoomConfig {
    RoomConfig {
        url: janus.url(),
        room,
        display: display.into(),
        media: CallConfig {
            bind: SFU_ADDRESS,
            ..CallConfig::default()
        },
        request_timeout: Duration::from_secs(3),
        ..RoomConfig::default()
    }
}

async fn session(engine: &Engine, say: &sotto_server::calls::Utterance) -> SessionHandle {
    engine
        .create_session(sotto::SessionConfig {
            input: say.input,
            ..sotto::SessionConfig::default()
        })
        .await
        .unwrap()
}

/// The next event that `want` picks, within `limit`.
async fn until(room: &mut RoomHandle, limit: Duration, want: impl Fn(&RoomEvent) -> bool) -> RoomEvent {
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

/// Waits (up to 5 s) until the process holds no more file descriptors
/// than `baseline`: peers, sockets and connections of rooms that are over
/// are all closed.
async fn fds_back_to(baseline: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = sotto_integration::host::open_fds();
        if now <= baseline {
            eprintln!("file descriptors: {now} (baseline {baseline})");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{now} file descriptors open, {baseline} before"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `seconds` of what `room` hears.
async fn hear(mic: &mut tokio::sync::mpsc::Receiver<Vec<f32>>, seconds: f64) -> Vec<f32> {
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

/// F1, F2: two sessions in one room hear each other through Janus; the
/// agent's speech arrives at the other with correlation ≥ 0.9 and its
/// level within 1 dB.
#[test]
fn two_sessions_hear_each_other_through_janus() {
    if !in_own_network_with_sfu("two_sessions_hear_each_other_through_janus") {
        return;
    }
    runtime().block_on(async {
        let dir = scratch_dir("room-two");
        let janus = Janus::start(&dir);
        let engine = call_engine().await;
        let say = sotto_testkit::hello();
        let speech = sotto_testkit::utterance_at(&say, 48_000);
        let agent = session(&engine, &say).await;
        let user = session(&engine, &say).await;
        let mut a = engine.join_room(&agent, room(&janus, 1234, "agent")).await.unwrap();
        let mut u = engine.join_room(&user, room(&janus, 1234, "user")).await.unwrap();
        let limit = Duration::from_secs(10);
        until(&mut a, limit, |e| matches!(e, RoomEvent::Hearing { .. })).await;
        until(&mut u, limit, |e| matches!(e, RoomEvent::Hearing { .. })).await;
        let mut u_mic = u.take_mic().unwrap();
        let mut a_mic = a.take_mic().unwrap();
        // Let the peers settle, then the agent speaks.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while u_mic.try_recv().is_ok() {}
        let _ = agent.push(say.bytes.clone());
        let got = hear(&mut u_mic, 4.0).await;
        let found = align(&speech, 24_000, &got, 96_000);
        eprintln!(
            "user heard the agent: correlation {:.3}, level {:+.2} dB, {} samples",
            found.correlation,
            found.level_db,
            got.len()
        );
        assert!(found.correlation >= 0.9, "correlation {:.3}", found.correlation);
        assert!(found.level_db.abs() <= 1.0, "level {:.2} dB", found.level_db);
        // The other way.
        while a_mic.try_recv().is_ok() {}
        let _ = user.push(say.bytes.clone());
        let got = hear(&mut a_mic, 4.0).await;
        let found = align(&speech, 24_000, &got, 96_000);
        eprintln!("agent heard the user: correlation {:.3}", found.correlation);
        assert!(found.correlation >= 0.9, "correlation {:.3}", found.correlation);
        let stats = a.stats();
        eprintln!("agent's room stats: {stats:?}");
        assert!(stats.packets_sent > 100 && stats.packets_received > 100);

        // Leaving: the other sees the participant go.
        let gone = a.id();
        tokio::time::timeout(Duration::from_secs(5), a.leave()).await.unwrap();
        until(&mut u, limit, |e| *e == RoomEvent::ParticipantLeft { id: gone }).await;
        // The agent's output is free again.
        agent.frames().unwrap().release();
        u.leave().await;
        engine.shutdown().await;
    });
}

/// F3: what cannot be joined fails at once with a typed error: a room that
/// does not exist, a wrong PIN, nothing listening, a server answering
/// garbage, one that never answers; the session's output is free after
/// each.
#[test]
fn rooms_that_cannot_be_joined_fail_clearly() {
    if !in_own_network_with_sfu("rooms_that_cannot_be_joined_fail_clearly") {
        return;
    }
    runtime().block_on(async {
        let dir = scratch_dir("room-faults");
        let janus = Janus::start(&dir);
        let engine = call_engine().await;
        let say = sotto_testkit::hello();
        let s = session(&engine, &say).await;
        let fds = sotto_integration::host::open_fds();
        let join = |config: RoomConfig| {
            let engine = engine.clone();
            let s = s.clone();
            async move {
                let started = std::time::Instant::now();
                let r = engine.join_room(&s, config).await;
                let took = started.elapsed();
                assert!(took < Duration::from_secs(5), "took {took:?}");
                // The output was given back.
                s.frames().unwrap().release();
                r.map(|_| ()).unwrap_err()
            }
        };
        let e = join(room(&janus, 999_999, "x")).await;
        eprintln!("no such room: {e}");
        assert!(matches!(e, SessionError::Room(RoomError::NoSuchRoom(_))), "{e:?}");
        let e = join(room(&janus, PIN_ROOM, "x")).await;
        eprintln!("no pin: {e}");
        assert!(matches!(e, SessionError::Room(RoomError::Unauthorized(_))), "{e:?}");
        let mut wrong = room(&janus, PIN_ROOM, "x");
        wrong.pin = Some("nope".into());
        let e = join(wrong).await;
        assert!(matches!(e, SessionError::Room(RoomError::Unauthorized(_))), "{e:?}");
        let mut right = room(&janus, PIN_ROOM, "x");
        right.pin = Some(PIN.into());
        engine.join_room(&s, right).await.unwrap().leave().await;

        // Nothing listening.
        let mut nobody = room(&janus, 1234, "x");
        nobody.url = "http://127.0.0.1:9/janus".into();
        let e = join(nobody).await;
        eprintln!("nobody: {e}");
        assert!(matches!(e, SessionError::Room(RoomError::Unreachable(_))), "{e:?}");
        // Garbage, and silence, from a server that is not Janus.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut n = 0;
            let mut held = Vec::new();
            loop {
                let (mut c, _) = listener.accept().await.unwrap();
                n += 1;
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                if n == 1 {
                    let body = "<html>not janus</html>";
                    let _ = c
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                                .as_bytes(),
                        )
                        .await;
                } else {
                    // Says nothing, holds the connection.
                    held.push(c);
                }
            }
        });
        let mut garbage = room(&janus, 1234, "x");
        garbage.url = format!("http://{addr}/janus");
        let e = join(garbage.clone()).await;
        eprintln!("garbage: {e}");
        assert!(matches!(e, SessionError::Room(RoomError::Protocol(_))), "{e:?}");
        let e = join(garbage).await;
        eprintln!("silence: {e}");
        assert!(matches!(e, SessionError::Room(RoomError::Unreachable(_))), "{e:?}");
        server.abort();
        fds_back_to(fds).await;
        engine.shutdown().await;
    });
}

/// F3, F4: Janus killed under a live room: the room reports it and
/// rejoins once Janus is back, and hears again; with Janus gone for good,
/// the room ends with an event within the bounded retries.
#[test]
fn a_room_survives_janus_restarting() {
    if !in_own_network_with_sfu("a_room_survives_janus_restarting") {
        return;
    }
    runtime().block_on(async {
        let dir = scratch_dir("room-restart");
        let mut janus = Janus::start(&dir);
        let port = janus.port();
        let engine = call_engine().await;
        let say = sotto_testkit::hello();
        let agent = session(&engine, &say).await;
        let user = session(&engine, &say).await;
        let fds = sotto_integration::host::open_fds();
        let mut config = room(&janus, 1234, "agent");
        config.rejoin_backoff = Duration::from_millis(300);
        config.rejoin_attempts = 6;
        let mut a = engine.join_room(&agent, config.clone()).await.unwrap();
        let u = engine.join_room(&user, room(&janus, 1234, "user")).await.unwrap();
        let limit = Duration::from_secs(10);
        until(&mut a, limit, |e| matches!(e, RoomEvent::Hearing { .. })).await;
        janus.kill();
        until(&mut a, limit, |e| matches!(e, RoomEvent::Reconnecting { .. })).await;
        let _janus = Janus::start_on(&dir, port);
        until(&mut a, Duration::from_secs(20), |e| matches!(e, RoomEvent::Joined { .. })).await;
        // The user's room was lost too and rejoined; they hear each other again.
        until(&mut a, Duration::from_secs(20), |e| matches!(e, RoomEvent::Hearing { .. })).await;
        drop(_janus);
        // Gone for good: the room ends, within the retries' bound.
        let ended = until(&mut a, Duration::from_secs(40), |e| matches!(e, RoomEvent::Ended { .. })).await;
        eprintln!("{ended:?}");
        agent.frames().unwrap().release();
        drop(u);
        fds_back_to(fds).await;
        engine.shutdown().await;
    });
}

//! SPEC F4: several `sotto serve` processes host rooms on one Janus (the
//! real one, started here in a network namespace of its own). A user in a
//! room of each hears that room's agent; killing one process takes only
//! its own rooms' agent away, seen by its users within seconds, while the
//! other process's room goes on untouched.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sotto::{CallConfig, RoomConfig, RoomEvent, RoomHandle};
use sotto_testkit::browser::{in_own_network_with_sfu, SFU_ADDRESS};
use sotto_testkit::janus::Janus;

/// A `sotto serve` hosting `rooms` on `janus`, killed when dropped.
struct Serve(Child);

impl Serve {
    fn start(janus: &Janus, rooms: &[u64]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sotto"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--janus"])
            .arg(janus.url())
            .args(["--media-addr", &SFU_ADDRESS.to_string()])
            // The test Janus forgets a session after 3 s without one.
            .args(["--janus-keepalive", "1"]);
        for room in rooms {
            cmd.args(["--room", &room.to_string()]);
        }
        Self(cmd.stdin(Stdio::null()).spawn().unwrap())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A user (a session of this process's engine) in `room`, and the feed
/// id of the agent it hears (announced as `sotto-agent-PID`).
async fn user(engine: &sotto::Engine, janus: &Janus, room: u64, agent: u32) -> (RoomHandle, u64) {
    let session = engine
        .create_session(sotto::SessionConfig::default())
        .await
        .unwrap();
    let mut handle = engine
        .join_room(
            &session,
            RoomConfig {
                url: janus.url(),
                room,
                display: format!("user-{room}"),
                media: CallConfig {
                    bind: SFU_ADDRESS,
                    ..CallConfig::default()
                },
                keepalive: Duration::from_secs(1),
                ..RoomConfig::default()
            },
        )
        .await
        .unwrap();
    let want = format!("sotto-agent-{agent}");
    let id = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match handle.next_event().await.unwrap() {
                RoomEvent::ParticipantJoined { id, display } if display == want => return id,
                _ => {}
            }
        }
    })
    .await
    .expect("the agent is in the room");
    (handle, id)
}

/// Whether `mic` brings sound (the agent speaking) within `limit`.
async fn hears(mic: &mut tokio::sync::mpsc::Receiver<Vec<f32>>, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(500), mic.recv()).await
        else {
            continue;
        };
        if sotto_testkit::rms(&chunk) > 0.01 {
            return true;
        }
    }
    false
}

#[test]
fn a_process_that_dies_takes_only_its_own_rooms() {
    if !in_own_network_with_sfu("a_process_that_dies_takes_only_its_own_rooms") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = sotto_testkit::scratch_dir("rooms-processes");
        let janus = Janus::start(&dir);
        let mut a = Serve::start(&janus, &[1000, 1001]);
        let b = Serve::start(&janus, &[1002, 1003]);
        let engine = sotto_testkit::call_engine().await;
        // Each process has joined its rooms before its users arrive.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mut ua, agent_a) = user(&engine, &janus, 1000, a.0.id()).await;
        let (mut ub, _) = user(&engine, &janus, 1002, b.0.id()).await;
        let mut mic_a = ua.take_mic().unwrap();
        let mut mic_b = ub.take_mic().unwrap();
        assert!(
            hears(&mut mic_a, Duration::from_secs(10)).await,
            "room 1000 hears its agent"
        );
        assert!(
            hears(&mut mic_b, Duration::from_secs(10)).await,
            "room 1002 hears its agent"
        );

        // Process A dies without a word.
        a.0.kill().unwrap();
        let killed = Instant::now();
        let seen = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if ua.next_event().await.unwrap() == (RoomEvent::ParticipantLeft { id: agent_a }) {
                    return killed.elapsed();
                }
            }
        })
        .await
        .expect("room 1000 sees its agent leave");
        eprintln!(
            "room 1000 saw its agent's process die {:.2} s after",
            seen.as_secs_f64()
        );
        assert!(seen <= Duration::from_secs(8), "{seen:?}");
        // Room 1002 goes on: its agent still heard, nothing happened to it.
        while mic_b.try_recv().is_ok() {}
        assert!(
            hears(&mut mic_b, Duration::from_secs(5)).await,
            "room 1002 still hears its agent"
        );
        while let Some(e) = ub.try_next_event() {
            assert!(
                !matches!(
                    e,
                    RoomEvent::ParticipantLeft { .. } | RoomEvent::Reconnecting { .. }
                ),
                "room 1002 was touched: {e:?}"
            );
        }
        assert!(b_alive(&b), "process B runs on");
        ua.leave().await;
        ub.leave().await;
        engine.shutdown().await;
        drop(b);
        std::fs::remove_dir_all(&dir).ok();
    });
}

fn b_alive(b: &Serve) -> bool {
    std::fs::metadata(format!("/proc/{}", b.0.id())).is_ok()
}

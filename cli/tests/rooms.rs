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
        Self::start_with(janus, rooms, &[])
    }

    fn start_with(janus: &Janus, rooms: &[u64], more: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sotto"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--janus"])
            .arg(janus.url())
            .args(["--media-addr", &SFU_ADDRESS.to_string()])
            // The test Janus forgets a session after 3 s without one.
            .args(["--janus-keepalive", "1"])
            // Each room's agent is a session.
            .args(["--max-calls", "128"]);
        for room in rooms {
            cmd.args(["--room", &room.to_string()]);
        }
        cmd.args(more);
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
                    ..RoomConfig::default().media
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

/// `sotto serve --room --avatar`: the agent's avatar joins its room as a
/// feed of its own (`sotto-agent-PID-face`) beside the agent's, and the
/// agent's voice is heard from it.
#[test]
fn the_avatar_joins_the_agents_room() {
    if !in_own_network_with_sfu("the_avatar_joins_the_agents_room") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = sotto_testkit::scratch_dir("rooms-avatar");
        let janus = Janus::start(&dir);
        let serve = Serve::start_with(&janus, &[1010], &["--avatar"]);
        let engine = sotto_testkit::call_engine().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let face = format!("sotto-agent-{}-face", serve.0.id());
        let session = engine
            .create_session(sotto::SessionConfig::default())
            .await
            .unwrap();
        let mut user = engine
            .join_room(
                &session,
                RoomConfig {
                    subscribe: sotto::Subscribe::Named(vec![face.clone()]),
                    ..janus.room(1010, "user")
                },
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match user.next_event().await.unwrap() {
                    RoomEvent::ParticipantJoined { display, .. } if display == face => return,
                    _ => {}
                }
            }
        })
        .await
        .expect("the avatar's feed is in the room");
        let mut mic = user.take_mic().unwrap();
        assert!(
            hears(&mut mic, Duration::from_secs(10)).await,
            "the agent's voice comes from its avatar's feed"
        );
        user.leave().await;
        engine.shutdown().await;
        drop(serve);
        std::fs::remove_dir_all(&dir).ok();
    });
}

fn b_alive(b: &Serve) -> bool {
    std::fs::metadata(format!("/proc/{}", b.0.id())).is_ok()
}

/// Rooms per core (BENCHMARKS.md): one `sotto serve` hosting N rooms on
/// the test Janus, its agent speaking to one listener per room (sessions
/// of this process that send silence); the CPU of the Sotto process, of
/// Janus and of the listeners over 20 s, then the same rooms split over
/// two processes. Run by `make bench-rooms`.
#[test]
#[ignore = "a measurement of a minute or more; make bench-rooms"]
fn rooms_per_core() {
    if !in_own_network_with_sfu("rooms_per_core") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = sotto_testkit::scratch_dir("rooms-per-core");
        let counts: Vec<u64> = std::env::var("SOTTO_ROOMS")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| vec![10, 25, 50]);
        let seconds = 20.0;
        for &n in &counts {
            for processes in [1u64, 2] {
                let janus = Janus::start(&dir);
                let per = n / processes;
                let serves: Vec<Serve> = (0..processes)
                    .map(|p| {
                        let rooms: Vec<u64> = (1000 + p * per..1000 + (p + 1) * per).collect();
                        Serve::start(&janus, &rooms)
                    })
                    .collect();
                let engine = sotto_testkit::call_engine().await;
                tokio::time::sleep(Duration::from_secs(2 + n / 10)).await;
                let mut users = Vec::new();
                for (p, serve) in serves.iter().enumerate() {
                    for r in 0..per {
                        let room = 1000 + p as u64 * per + r;
                        let (mut u, _) = user(&engine, &janus, room, serve.0.id()).await;
                        let mic = u.take_mic().unwrap();
                        users.push((u, mic));
                    }
                }
                // Everyone hears; let the agents get going.
                tokio::time::sleep(Duration::from_secs(5)).await;
                let pids: Vec<u32> = serves.iter().map(|s| s.0.id()).collect();
                let cpu = |pid: u32| sotto_testkit::host::cpu_seconds(pid);
                let me = std::process::id();
                let before: Vec<f64> = pids.iter().map(|&p| cpu(p)).collect();
                let (janus0, me0, steal0) = (cpu(janus.pid()), cpu(me), sotto_testkit::host::steal_ms());
                // The listeners read what they hear, as an application would.
                let heard = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let readers: Vec<_> = users
                    .iter_mut()
                    .map(|(_, mic)| {
                        let mut mic = std::mem::replace(mic, tokio::sync::mpsc::channel(1).1);
                        let heard = std::sync::Arc::clone(&heard);
                        tokio::spawn(async move {
                            while let Some(c) = mic.recv().await {
                                if sotto_testkit::rms(&c) > 0.01 {
                                    heard.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        })
                    })
                    .collect();
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                let sotto_pct: Vec<f64> = pids
                    .iter()
                    .zip(&before)
                    .map(|(&p, b)| (cpu(p) - b) / seconds * 100.0)
                    .collect();
                let janus_pct = (cpu(janus.pid()) - janus0) / seconds * 100.0;
                let users_pct = (cpu(me) - me0) / seconds * 100.0;
                let steal = (sotto_testkit::host::steal_ms() - steal0) as f64 / 10.0 / seconds;
                let voiced = heard.load(std::sync::atomic::Ordering::Relaxed) as f64
                    / (n as f64 * seconds * 100.0)
                    * 100.0;
                let total: f64 = sotto_pct.iter().sum();
                println!(
                    "rooms {n} processes {processes}: sotto {sotto_pct:.1?} % (total {total:.1} %, \
                     {:.2} % a room), janus {janus_pct:.1} % ({:.2} % a room), listeners {users_pct:.1} %, \
                     steal {steal:.1} %, listeners heard speech {voiced:.0} % of the time",
                    total / n as f64,
                    janus_pct / n as f64
                );
                for r in readers {
                    r.abort();
                }
                for (u, _) in users {
                    u.leave().await;
                }
                engine.shutdown().await;
                drop(serves);
                drop(janus);
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    });
}

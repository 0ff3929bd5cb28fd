//! Many calls against a call server, as load tests drive them: a long
//! speech for the agent, offers POSTed and their answers, far ends that
//! read what they receive, and the calls' losses summed.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test helpers: a failed unwrap is a failed test

use std::sync::Arc;

use std::time::Duration;

use sotto_server::calls::Utterance;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::RTCSessionDescription;

/// The shipped speech, said over and over for a minute: every call speaks
/// through the whole test.
pub fn long_speech() -> Arc<Utterance> {
    let hello = sotto_testkit::hello();
    let seconds = hello.bytes.len() as f64
        / (f64::from(hello.input.sample_rate) * hello.input.channels as f64 * 2.0);
    let times = (60.0 / seconds).ceil() as usize;
    Arc::new(Utterance {
        bytes: hello.bytes.repeat(times),
        input: hello.input,
    })
}

/// What a `POST /calls` answered.
pub struct Posted {
    /// The status.
    pub status: u16,
    /// `Location`, on a 201.
    pub location: String,
    /// `Sotto-Key`, on a 201.
    pub key: String,
    /// `Retry-After`, on a 503.
    pub retry_after: Option<u64>,
    /// The body: the answer on a 201, the reason otherwise.
    pub answer: String,
}

/// POSTs `offer` to `base`/calls.
///
/// # Panics
/// When the server cannot be reached.
pub async fn post(http: &reqwest::Client, base: &str, offer: &str) -> Posted {
    let r = http
        .post(format!("{base}/calls"))
        .header("Content-Type", "application/sdp")
        .body(offer.to_owned())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Posted {
        status: r.status().as_u16(),
        location: header("location").unwrap_or_default(),
        key: header("sotto-key").unwrap_or_default(),
        retry_after: header("retry-after").and_then(|v| v.parse().ok()),
        answer: r.text().await.unwrap_or_default(),
    }
}

/// Reads every track the far end receives, as a phone would play it.
pub fn drain(events: &mut sotto_net::PeerEvents) {
    if let Ok(track) = events.tracks.try_recv() {
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if matches!(ev, TrackRemoteEvent::OnEnded) {
                    break;
                }
            }
        });
    }
}

/// Each call's frames lost and packets its encoder dropped.
/// # Panics
/// When a call's stats cannot be read.
pub async fn losses(
    http: &reqwest::Client,
    base: &str,
    calls: &[(String, String)],
) -> Vec<(u64, u64)> {
    let mut all = Vec::new();
    for (location, key) in calls {
        let v: serde_json::Value = http
            .get(format!("{base}{location}/stats"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.push((
            v["frames_lost"].as_u64().unwrap(),
            v["encoder_dropped"].as_u64().unwrap(),
        ));
    }
    all
}

/// Frames lost and encoder packets dropped, summed.
#[must_use]
pub fn summed(losses: &[(u64, u64)]) -> (u64, u64) {
    losses.iter().fold((0, 0), |a, l| (a.0 + l.0, a.1 + l.1))
}

/// A call engine (48 kHz mono, virtual clock, default admission) for
/// `calls` at once, and a call server on loopback taking as many, whose
/// agent says `say`.
pub async fn call_server(
    calls: usize,
    say: Arc<Utterance>,
) -> (sotto::Engine, sotto_server::calls::CallServer) {
    let engine = sotto::Engine::start(sotto::EngineConfig {
        sample_rate: 48_000,
        channels: 1,
        max_sessions: calls,
        clock: sotto::Clock::Virtual {
            capture: None,
            deferred: false,
        },
        ..sotto::EngineConfig::default()
    })
    .await
    .unwrap();
    let server = sotto_server::calls::CallServer::start(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        sotto_server::calls::ServeConfig {
            limits: sotto_server::accept::ServerLimits {
                max_peers: calls,
                // Many callers are many clients; here they share one address.
                max_connections_per_client: 256,
                ..sotto_server::accept::ServerLimits::default()
            },
            max_calls_per_participant: calls,
            utterances: vec![say],
            call: sotto::CallConfig {
                connect_timeout: Duration::from_secs(10),
                ..sotto::CallConfig::default()
            },
            ..sotto_server::calls::ServeConfig::default()
        },
    )
    .await
    .unwrap();
    (engine, server)
}

/// A far end of a call: its peer, its events, its microphone's sender.
pub type FarEnd = (
    sotto_net::Peer,
    sotto_net::PeerEvents,
    sotto_net::call::OpusSender,
);

/// Sets up `n` calls at `base` from far ends on loopback, as admission
/// allows (a refused one tries again when told), each connected and its
/// track read: their locations and keys, their far ends, and how many
/// POSTs were refused on the way.
///
/// # Panics
/// On an answer other than 201 or 503, or a call that does not connect.
pub async fn fill(
    http: &reqwest::Client,
    base: &str,
    n: usize,
) -> (Vec<(String, String)>, Vec<FarEnd>, usize) {
    let mut live = Vec::new();
    let mut far_ends = Vec::new();
    let mut refused = 0;
    while live.len() < n {
        let (far, mut events, offer, mic) = sotto_testkit::far_end().await;
        loop {
            let p = post(http, base, &offer).await;
            if p.status == 201 {
                let answer = RTCSessionDescription::answer(p.answer).expect("an answer");
                far.set_remote_description(answer)
                    .await
                    .expect("the answer");
                live.push((p.location, p.key));
                break;
            }
            assert_eq!(p.status, 503, "{}", p.answer);
            refused += 1;
            let wait = p.retry_after.expect("a 503 says when to try again");
            tokio::time::sleep(Duration::from_millis(200).min(Duration::from_secs(wait))).await;
        }
        sotto_net::connected(&mut events, Duration::from_secs(20))
            .await
            .expect("the call connects");
        drain(&mut events);
        far_ends.push((far, events, mic));
    }
    (live, far_ends, refused)
}

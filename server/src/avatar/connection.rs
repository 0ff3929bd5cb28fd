//! One agent's connection to the avatar server (SPEC A5–A7): a task that
//! turns data-channel messages into [`Playout`] input, ticks it every 20 ms
//! (or on the sample clock it was given) and sends the acknowledgements
//! back, until the agent goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use super::{AvatarServerState, Counters, SampleClock};
use sotto_avatar::playout::Playout;
use sotto_net::avatar::{Control, CONTROL_LABEL};
use sotto_net::peer::{Peer, PeerEvents};

/// The voice track's frame period (SPEC A7).
const TICK: Duration = Duration::from_millis(20);
/// Messages waiting between the data channels and the playout.
const INBOX: usize = 4096;

/// A data-channel message, tagged with its channel.
enum Inbound {
    Message {
        control: bool,
        text: bool,
        data: bytes::BytesMut,
    },
    Closed {
        control: bool,
    },
}

/// Reads one channel into the inbox until it closes.
async fn read_channel(channel: Arc<dyn DataChannel>, control: bool, inbox: mpsc::Sender<Inbound>) {
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnMessage(m) => {
                let msg = Inbound::Message {
                    control,
                    text: m.is_string,
                    data: m.data,
                };
                if inbox.send(msg).await.is_err() {
                    return;
                }
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    let _ = inbox.send(Inbound::Closed { control }).await;
}

/// One agent's connection: plays until the agent goes away.
pub(crate) async fn connection(
    pc: Peer,
    mut events: PeerEvents,
    mut playout: Playout,
    shared: Arc<AvatarServerState>,
) {
    let stats = Arc::clone(&shared.stats);
    let (inbox_tx, mut inbox) = mpsc::channel(INBOX);
    let mut control: Option<Arc<dyn DataChannel>> = None;
    // On a sample clock the loop looks at it every millisecond and plays
    // every tick it has passed; on the wall clock it ticks every 20 ms.
    let clock = shared.config.clock.clone();
    let mut tick = tokio::time::interval(if clock.is_some() {
        Duration::from_millis(1)
    } else {
        TICK
    });
    let rate = playout.sample_rate();
    let tick_frames = u64::from(rate / 50).max(1);
    let origin = Instant::now();
    let sample_now =
        |c: &SampleClock| origin + Duration::from_secs_f64(c() as f64 / f64::from(rate.max(1)));
    let mut ticked: Option<u64> = None;
    let progress = Arc::new(AtomicU64::new(0));
    let mut acks = Vec::new();
    let mut counted = playout.stats();
    // Until the agent connects nothing plays (no video is made for nobody)
    // and the peer is torn down when it does not connect in time.
    let mut connected = false;
    let give_up = tokio::time::sleep(shared.limits.connect_timeout);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            Some(channel) = events.channels.recv() => {
                // A channel only opens over a connection.
                connected = true;
                let is_control = channel.label().await.is_ok_and(|l| l == CONTROL_LABEL);
                if is_control {
                    control = Some(Arc::clone(&channel));
                }
                tokio::spawn(read_channel(channel, is_control, inbox_tx.clone()));
            }
            Some(inbound) = inbox.recv() => match inbound {
                Inbound::Message { control: on_control, text, data } => {
                    let now = clock.as_ref().map_or_else(Instant::now, sample_now);
                    if !(on_control && text && lost_segment_end(&shared, &data)) {
                        if let (Some(ack), Some(c)) = (playout.on_message(on_control, text, &data, now), &control) {
                            send_ack(c, ack, &stats).await;
                        }
                    }
                    if on_control {
                        stats.control_arrived.fetch_add(1, Ordering::Release);
                    } else {
                        stats.pcm_arrived.fetch_add(data.len() as u64 / 2, Ordering::Release);
                    }
                }
                // The agent closed its control channel: it is gone.
                Inbound::Closed { control: true } => break,
                Inbound::Closed { control: false } => {}
            },
            () = &mut give_up, if !connected => {
                stats.never_connected.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ = tick.tick() => {
                if !connected {
                    continue;
                }
                let seen = match &clock {
                    None => {
                        playout.tick(&mut acks);
                        None
                    }
                    Some(c) => {
                        let now = c();
                        let mut done = *ticked.get_or_insert_with(|| {
                            // Playing starts where the clock is now.
                            if let Ok(mut p) = shared.progress.lock() {
                                p.push(Arc::clone(&progress));
                            }
                            now / tick_frames
                        });
                        while (done + 1) * tick_frames <= now {
                            playout.tick(&mut acks);
                            done += 1;
                        }
                        ticked = Some(done);
                        Some(now)
                    }
                };
                if let Some(c) = &control {
                    for ack in acks.drain(..) {
                        send_ack(c, ack, &stats).await;
                    }
                }
                acks.clear();
                if let Some(now) = seen {
                    // Every tick due by `now` is played and acknowledged.
                    progress.store(now, Ordering::Release);
                }
            }
            Some(state) = events.state.recv() => {
                if state == RTCPeerConnectionState::Connected {
                    connected = true;
                }
                if matches!(
                    state,
                    RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                        | RTCPeerConnectionState::Disconnected
                ) {
                    break;
                }
            }
        }
        let now = playout.stats();
        stats
            .malformed
            .fetch_add(now.malformed - counted.malformed, Ordering::Relaxed);
        stats
            .resets
            .fetch_add(now.resets - counted.resets, Ordering::Relaxed);
        stats.cooldown_dropped.fetch_add(
            now.cooldown_dropped - counted.cooldown_dropped,
            Ordering::Relaxed,
        );
        counted = now;
    }
    playout.finish();
    if let Ok(mut p) = shared.progress.lock() {
        p.retain(|at| !Arc::ptr_eq(at, &progress));
    }
    let _ = pc.close().await;
    #[cfg(feature = "fault-injection")]
    if let Ok(mut peers) = shared.faults.peers.lock() {
        peers.retain(|p| !Arc::ptr_eq(p, &pc));
    }
    stats.ended.fetch_add(1, Ordering::Relaxed);
}

/// Whether this message is a segment end a test asked to lose.
#[cfg(not(feature = "fault-injection"))]
fn lost_segment_end(_: &AvatarServerState, _: &[u8]) -> bool {
    false
}

/// Whether this message is a segment end a test asked to lose.
#[cfg(feature = "fault-injection")]
fn lost_segment_end(shared: &AvatarServerState, data: &[u8]) -> bool {
    let lose = &shared.faults.lose_segment_ends;
    if lose.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let is_end = std::str::from_utf8(data)
        .ok()
        .and_then(|t| serde_json::from_str::<Control>(t).ok())
        .is_some_and(|c| matches!(c, Control::SegmentEnd { .. }));
    is_end
        && lose
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
}

async fn send_ack(
    channel: &Arc<dyn DataChannel>,
    data: sotto_net::avatar::StreamEnded,
    stats: &Counters,
) {
    if let Ok(text) = serde_json::to_string(&Control::StreamEnded { data }) {
        // A gone agent is noticed by the connection state; nothing to do here.
        if channel.send_text(&text).await.is_ok() {
            stats.acks_sent.fetch_add(1, Ordering::Release);
        }
    }
}

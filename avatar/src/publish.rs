//! The avatar's voice and face as WebRTC media for viewers (SPEC W5, A7,
//! S5): a sink for one avatar's playout that, while at least one viewer is
//! connected, encodes the voice (Opus) and the face (VP8) once, on a
//! thread of its own, and hands the packets to every viewer through a
//! bounded queue. With no viewer connected nothing is encoded. A viewer
//! that stalls loses packets (counted), never the others' or the avatar's.
//! Both tracks take their RTP timestamps from the voice's sample clock:
//! the voice's from its sample count, the face's from the pts the playout
//! gives it (derived from the same count), so a browser's lip sync holds.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::HashMap;

use sotto_media::opus::{OpusEncoder, OPUS_RATE};
use sotto_media::vp8::{Vp8Config, Vp8Encoder};
use sotto_net::video::Vp8Frame;
use sotto_net::{complete_local, connected, NetError};
use sotto_rt::FrameLength;
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCSessionDescription;

use crate::playout::{AvatarSink, VideoFrame};

mod peer;
use peer::{watch, Tracks};
pub use peer::{Feed, FeedOffer};

/// How an avatar is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishConfig {
    /// The face's encoding (its size must be the renderer's).
    pub video: Vp8Config,
    /// The voice's rate (8, 12, 16, 24 or 48 kHz: what Opus takes) and
    /// channels (1 or 2), as the playout hands it to its sink.
    pub voice_rate: u32,
    /// Voice channels.
    pub voice_channels: usize,
    /// Opus bit rate, bits per second.
    pub voice_bitrate: u32,
    /// Viewers at once; one more is refused.
    pub max_viewers: usize,
    /// How long a viewer has to connect after its answer.
    pub connect_timeout: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            video: Vp8Config::default(),
            voice_rate: 24_000,
            voice_channels: 1,
            voice_bitrate: 48_000,
            max_viewers: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a viewer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewerError {
    /// As many viewers as the config allows are watching.
    #[error("too many viewers")]
    Full,
    /// The offer is not SDP or cannot be answered.
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// The peer could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// A viewer taken: its id (to leave with [`Publisher::remove_viewer`]),
/// the SDP answer for it, and where its tracks' RTP timestamps start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The viewer's id, unique within the publisher.
    pub id: u64,
    /// The SDP answer (every candidate in it).
    pub answer: String,
    /// The voice's RTP timestamp at pts 0 (48 kHz clock).
    pub voice_origin: u32,
    /// The face's RTP timestamp at pts 0 (90 kHz clock).
    pub face_origin: u32,
}

/// What a publisher counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishStats {
    /// Viewers connected now.
    pub viewers: usize,
    /// Video frames encoded (only while someone watched).
    pub frames_encoded: u64,
    /// Voice packets encoded.
    pub voice_packets: u64,
    /// Packets a stalled viewer could not take (dropped for it alone).
    pub dropped: u64,
    /// Pictures and voice the encoder thread could not take in time.
    pub encoder_dropped: u64,
    /// Key frames a viewer asked for (picture loss, full intra request).
    pub key_frames_asked: u64,
}

/// Packets for a viewer, shared between them.
#[derive(Clone)]
enum Media {
    Voice(Arc<Vec<u8>>, u64, bool),
    Video(Arc<Vp8Frame>, u64),
}

/// Work for the encoder thread.
enum Work {
    /// 20 ms of voice and its pts at 48 kHz.
    Voice(Vec<i16>, u64),
    Video(VideoFrame, u64),
}

/// A viewer's tracks' RTP origins, and what tells its task (which owns
/// the peer) it was asked to leave.
struct ViewerSlot {
    origins: (u32, u32),
    leave: Arc<tokio::sync::Notify>,
}

/// Packets held per viewer: a second of voice and video.
const VIEWER_QUEUE: usize = 128;
/// Work held for the encoder thread.
const WORK_QUEUE: usize = 32;

#[derive(Default)]
struct Counters {
    frames_encoded: AtomicU64,
    voice_packets: AtomicU64,
    dropped: AtomicU64,
    encoder_dropped: AtomicU64,
    key_frames_asked: AtomicU64,
}

struct PublisherState {
    config: PublishConfig,
    /// Connected viewers' queues.
    viewers: Mutex<Vec<(u64, mpsc::Sender<Media>)>>,
    /// Viewers connected or connecting: what the cap counts.
    taken: AtomicUsize,
    /// Every viewer, connected or connecting, by id.
    peers: Mutex<HashMap<u64, ViewerSlot>>,
    next_id: AtomicU64,
    /// A viewer arrived: the next picture is a key frame.
    want_key: AtomicBool,
    counters: Counters,
}

/// One avatar's publisher: viewers join it with an offer; its sink goes
/// to the avatar's playout.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<PublisherState>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher and the sink to give the avatar's playout.
    ///
    /// # Errors
    /// [`NetError`] for a voice rate or channel count Opus does not take,
    /// or a video config libvpx refuses (both checked here, before any
    /// viewer comes).
    pub fn new(config: PublishConfig) -> Result<(Self, PublisherSink), NetError> {
        let voice = OpusEncoder::at_rate(
            config.voice_rate,
            config.voice_channels,
            FrameLength::Ms20,
            config.voice_bitrate,
            5,
        )?;
        let video = Vp8Encoder::new(config.video)?;
        let (work_tx, work_rx) = std_mpsc::sync_channel(WORK_QUEUE);
        let shared = Arc::new(PublisherState {
            config,
            viewers: Mutex::new(Vec::new()),
            taken: AtomicUsize::new(0),
            peers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            want_key: AtomicBool::new(true),
            counters: Counters::default(),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sotto-publish".into())
            .spawn(move || encode(&thread_shared, voice, video, &work_rx))
            .map_err(NetError::from)?;
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            PublisherSink {
                shared,
                work: Some(work_tx),
                voice_samples: 0,
                held: std::collections::VecDeque::new(),
            },
        ))
    }

    /// Its counters.
    #[must_use]
    pub fn stats(&self) -> PublishStats {
        let c = &self.shared.counters;
        PublishStats {
            viewers: self.shared.viewers.lock().map_or(0, |v| v.len()),
            frames_encoded: c.frames_encoded.load(Ordering::Relaxed),
            voice_packets: c.voice_packets.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            encoder_dropped: c.encoder_dropped.load(Ordering::Relaxed),
            key_frames_asked: c.key_frames_asked.load(Ordering::Relaxed),
        }
    }

    /// Viewers connected or connecting now.
    #[must_use]
    pub fn viewers(&self) -> usize {
        self.shared.taken.load(Ordering::Acquire)
    }

    /// Where viewer `id`'s voice and face RTP timestamps start (pts 0),
    /// while it is connected or connecting.
    #[must_use]
    pub fn origins(&self, id: u64) -> Option<(u32, u32)> {
        let peers = self.shared.peers.lock().ok()?;
        peers.get(&id).map(|slot| slot.origins)
    }

    /// Ends viewer `id`'s connection: false when there is no such viewer
    /// (it left already or never was).
    pub async fn remove_viewer(&self, id: u64) -> bool {
        let peer = self
            .shared
            .peers
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&id));
        match peer {
            Some(slot) => {
                // Its task closes the peer and gives its place back.
                slot.leave.notify_one();
                true
            }
            None => false,
        }
    }

    /// Ends every viewer's connection (the avatar has gone).
    pub async fn close(&self) {
        let slots: Vec<ViewerSlot> = self
            .shared
            .peers
            .lock()
            .map(|mut p| p.drain().map(|(_, slot)| slot).collect())
            .unwrap_or_default();
        for slot in slots {
            slot.leave.notify_one();
        }
    }

    /// Answers a viewer's offer (every candidate in it) with the voice and
    /// face tracks; the viewer watches once connected, until it leaves.
    ///
    /// # Errors
    /// [`ViewerError::Full`] past the cap, [`ViewerError::BadOffer`] for an
    /// offer that cannot be answered, [`ViewerError::Net`] for a peer that
    /// cannot be built.
    pub async fn add_viewer(&self, offer: &str) -> Result<Viewer, ViewerError> {
        let shared = &self.shared;
        let taken = shared.taken.fetch_add(1, Ordering::AcqRel);
        let release = || shared.taken.fetch_sub(1, Ordering::AcqRel);
        if taken >= shared.config.max_viewers {
            release();
            return Err(ViewerError::Full);
        }
        match self.answer(offer).await {
            Ok(a) => Ok(a),
            Err(e) => {
                release();
                Err(e)
            }
        }
    }

    async fn answer(&self, offer: &str) -> Result<Viewer, ViewerError> {
        if offer.len() > sotto_net::call::MAX_OFFER_BYTES {
            return Err(ViewerError::BadOffer("the offer is too long".into()));
        }
        let bind = sotto_net::peer::LOOPBACK;
        let rules = sotto_net::sdp::OfferRules {
            opus_audio: true,
            loopback: bind.is_loopback(),
        };
        let vetted = sotto_net::sdp::vet_offer(offer, rules)
            .map_err(|why| ViewerError::BadOffer(why.into()))?;
        sotto_net::sdp::log_dropped(vetted.dropped);
        let desc = RTCSessionDescription::offer(vetted.sdp)
            .map_err(|_| ViewerError::BadOffer("not SDP".into()))?;
        let mut tracks = Tracks::new(&self.shared, bind).await?;
        if tracks.peer.set_remote_description(desc).await.is_err() {
            let _ = tracks.peer.close().await;
            return Err(ViewerError::BadOffer("it cannot be answered".into()));
        }
        let made = match tracks.peer.create_answer(None).await {
            Ok(answer) => complete_local(&tracks.peer, &mut tracks.events, answer).await,
            Err(e) => Err(NetError::from(e)),
        };
        let sdp = match made {
            Ok(sdp) => sdp,
            Err(e) => {
                let _ = tracks.peer.close().await;
                return Err(e.into());
            }
        };
        let viewer = tracks.viewer(sdp);
        Ok(self.watch_with(tracks, viewer, None))
    }

    /// Offers the voice and face to a peer that answers, such as an SFU
    /// taking the avatar as a publisher in a room (SPEC F1): the peer binds
    /// `bind` (an address the SFU can reach). The offer counts as a viewer
    /// toward the cap from here until it is given up or its peer goes.
    ///
    /// # Errors
    /// [`ViewerError::Full`] past the cap; [`ViewerError::Net`] for a peer
    /// that cannot be built.
    pub async fn offer_feed(&self, bind: std::net::IpAddr) -> Result<FeedOffer, ViewerError> {
        let shared = &self.shared;
        let taken = shared.taken.fetch_add(1, Ordering::AcqRel);
        if taken >= shared.config.max_viewers {
            shared.taken.fetch_sub(1, Ordering::AcqRel);
            return Err(ViewerError::Full);
        }
        let made = async {
            let mut tracks = Tracks::new(shared, bind).await?;
            let offer = match tracks.peer.create_offer(None).await {
                Ok(offer) => complete_local(&tracks.peer, &mut tracks.events, offer).await,
                Err(e) => Err(NetError::from(e)),
            };
            match offer {
                Ok(sdp) => Ok((sdp, tracks)),
                Err(e) => {
                    let _ = tracks.peer.close().await;
                    Err(ViewerError::from(e))
                }
            }
        }
        .await;
        match made {
            Ok((sdp, tracks)) => Ok(FeedOffer {
                sdp,
                tracks: Some(tracks),
                publisher: self.clone(),
            }),
            Err(e) => {
                shared.taken.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// Registers a viewer whose description is settled, and runs it: its
    /// packets flow once it connects, until it leaves or its peer goes.
    /// `ended` is told when it is over.
    fn watch_with(
        &self,
        tracks: Tracks,
        viewer: Viewer,
        ended: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Viewer {
        let Tracks {
            peer,
            mut events,
            id,
            mut voice,
            mut face,
        } = tracks;
        let leave = Arc::new(tokio::sync::Notify::new());
        if let Ok(mut peers) = self.shared.peers.lock() {
            peers.insert(
                id,
                ViewerSlot {
                    origins: (viewer.voice_origin, viewer.face_origin),
                    leave: Arc::clone(&leave),
                },
            );
        }
        let shared = Arc::clone(&self.shared);
        let requests = face.key_frame_requests();
        let asking = Arc::clone(&self.shared);
        // Ends when the track does, with the peer.
        tokio::spawn(async move {
            while requests.next().await {
                asking.want_key.store(true, Ordering::Release);
                asking
                    .counters
                    .key_frames_asked
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::spawn(async move {
            let limit = shared.config.connect_timeout;
            let up = tokio::select! {
                up = connected(&mut events, limit) => up.is_ok(),
                () = leave.notified() => false,
            };
            if up {
                let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
                if let Ok(mut v) = shared.viewers.lock() {
                    v.push((id, tx));
                }
                shared.want_key.store(true, Ordering::Release);
                tokio::select! {
                    () = watch(&mut events, rx, &mut voice, &mut face) => {}
                    () = leave.notified() => {}
                }
                if let Ok(mut v) = shared.viewers.lock() {
                    v.retain(|(k, _)| *k != id);
                }
            }
            let _ = peer.close().await;
            if let Ok(mut peers) = shared.peers.lock() {
                peers.remove(&id);
            }
            shared.taken.fetch_sub(1, Ordering::AcqRel);
            if let Some(ended) = ended {
                let _ = ended.send(());
            }
        });
        viewer
    }
}

/// The encoder thread: encodes while someone watches, fans out.
fn encode(
    shared: &PublisherState,
    mut voice: OpusEncoder,
    mut video: Vp8Encoder,
    work: &std_mpsc::Receiver<Work>,
) {
    let mut was_silent = true;
    let fan_out = |m: Media| {
        if let Ok(viewers) = shared.viewers.lock() {
            for (_, tx) in viewers.iter() {
                if tx.try_send(m.clone()).is_err() {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    while let Ok(w) = work.recv() {
        match w {
            Work::Voice(samples, pts48) => {
                let pcm: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32_768.0).collect();
                let Ok(bytes) = voice.encode(&pcm) else {
                    continue;
                };
                let silent = bytes.len() == 1;
                let marker = was_silent && !silent;
                was_silent = silent;
                shared
                    .counters
                    .voice_packets
                    .fetch_add(1, Ordering::Relaxed);
                fan_out(Media::Voice(Arc::new(bytes.to_vec()), pts48, marker));
            }
            Work::Video(frame, pts90) => {
                let key = shared.want_key.swap(false, Ordering::AcqRel);
                let Ok(frames) = video.encode(&frame.y, &frame.u, &frame.v, pts90, key) else {
                    continue;
                };
                for f in frames {
                    shared
                        .counters
                        .frames_encoded
                        .fetch_add(1, Ordering::Relaxed);
                    fan_out(Media::Video(Arc::new(f.clone()), pts90));
                }
            }
        }
    }
}

/// The sink the avatar's playout writes to: passes what it plays to the
/// encoder thread while a viewer watches, and nothing otherwise.
pub struct PublisherSink {
    shared: Arc<PublisherState>,
    /// Dropped at the end: the encoder thread ends with it.
    work: Option<std_mpsc::SyncSender<Work>>,
    /// Voice played so far (samples per channel): the voice's clock.
    voice_samples: u64,
    /// Pictures waiting for the voice to reach their pts (see
    /// [`PublisherSink::video`]).
    held: std::collections::VecDeque<(VideoFrame, u64)>,
}

/// Pictures a sink holds at most: the playout gives one or two a tick.
const HELD_PICTURES: usize = 4;

impl PublisherSink {
    fn watched(&self) -> bool {
        self.shared.viewers.lock().is_ok_and(|v| !v.is_empty())
    }

    fn send(&self, w: Work) {
        let Some(work) = &self.work else { return };
        if work.try_send(w).is_err() {
            self.shared
                .counters
                .encoder_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AvatarSink for PublisherSink {
    fn voice(&mut self, samples: &[i16]) {
        // The voice's clock runs whether or not anyone listens, so a
        // viewer's timestamps continue from where the avatar is.
        let channels = self.shared.config.voice_channels.max(1);
        let rate = u64::from(self.shared.config.voice_rate);
        let pts48 = self.voice_samples * u64::from(OPUS_RATE) / rate;
        let pts90 = self.voice_samples * u64::from(sotto_media::vp8::VIDEO_RATE) / rate;
        self.voice_samples += (samples.len() / channels) as u64;
        if !self.watched() {
            self.held.clear();
            return;
        }
        self.send(Work::Voice(samples.to_vec(), pts48));
        while self.held.front().is_some_and(|&(_, pts)| pts <= pts90) {
            if let Some((frame, pts)) = self.held.pop_front() {
                self.send(Work::Video(frame, pts));
            }
        }
    }

    /// A picture goes out with the voice that starts at its pts, not when
    /// the playout makes it (up to a tick before): every packet of both
    /// tracks then leaves the same time after its pts, so the sender
    /// reports (which pair each track's last RTP timestamp with when it was
    /// sent) tell a browser the same clock for both.
    fn video(&mut self, frame: &VideoFrame, pts: u64) {
        if self.watched() {
            if self.held.len() >= HELD_PICTURES {
                self.held.pop_front();
                self.shared
                    .counters
                    .encoder_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.held.push_back((frame.clone(), pts));
        }
    }

    fn finish(&mut self) {
        self.held.clear();
        self.work = None;
    }
}

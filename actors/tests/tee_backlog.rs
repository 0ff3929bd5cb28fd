//! SPEC R4: a stalled avatar link cannot grow memory. The tee feeding it
//! stops handing over audio once the link is the session's queue and five
//! seconds more behind, and counts what it drops.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sotto_actors::avatar_link::{AvatarTee, LinkMsg, LinkStats, LINK_BACKLOG};
use sotto_actors::AudioSink;

/// A link that never gets to its mailbox: its first message blocks it.
struct Stalled;

impl Actor for Stalled {
    type Msg = LinkMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<LinkMsg>, (): ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<LinkMsg>,
        _: LinkMsg,
        (): &mut (),
    ) -> Result<(), ActorProcessingErr> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_link_holds_at_most_its_backlog() {
    let (link, _) = Actor::spawn(None, Stalled, ()).await.unwrap();
    let stats = Arc::new(LinkStats::default());
    let rate = 24_000u64;
    let mut tee = AvatarTee::new(
        "avatar:stalled".into(),
        link.clone(),
        Arc::new(AtomicBool::new(true)),
        Arc::clone(&stats),
        rate,
        std::time::Duration::from_secs(1),
    );
    // A minute of audio in 20 ms chunks, all handed over at once.
    let chunk = vec![0.1f32; 480];
    for _ in 0..3_000 {
        tee.write(&chunk, rate as u32, 1).unwrap();
    }
    let cap = ((LINK_BACKLOG.as_secs_f64() + 1.0) * rate as f64) as u64;
    let held = stats.backlog.load(Ordering::Relaxed);
    assert!(held <= cap, "{held} samples queued, cap {cap}");
    assert!(held + 480 > cap, "the backlog filled");
    assert_eq!(
        stats.backlog_dropped.load(Ordering::Relaxed),
        3_000 * 480 - held,
        "everything past the backlog was dropped and counted"
    );
    link.stop(None);
}

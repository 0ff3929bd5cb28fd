//! Making the connection: the join posted to the dispatcher with the
//! offer, the data channels opened, and the tasks that watch the peer and
//! the control channel. Runs on the tokio runtime.

use std::sync::Arc;

use ractor::ActorRef;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::RTCSessionDescription;

use super::*;
use sotto_net::avatar::{Control, JoinRequest, JoinResponse, AUDIO_LABEL, CONTROL_LABEL};
use sotto_net::peer::{complete_local, connected, loopback_peer, NetError, Peer};

/// Offers, posts the join, takes the answer, and waits for both channels.
pub(super) async fn connect(
    args: &LinkArgs,
    myself: &ActorRef<LinkMsg>,
) -> Result<(Peer, Arc<dyn DataChannel>, Arc<dyn DataChannel>), LinkError> {
    let c = &args.config;
    if c.dispatcher_url.is_empty() {
        return Err(LinkError::NoDispatcher);
    }
    if c.room_name.is_empty() {
        return Err(LinkError::NoRoom);
    }
    let (pc, mut events) = loopback_peer().await?;
    let made = async {
        let audio = pc
            .create_data_channel(
                AUDIO_LABEL,
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                }),
            )
            .await
            .map_err(NetError::from)?;
        let control = pc
            .create_data_channel(CONTROL_LABEL, None)
            .await
            .map_err(NetError::from)?;
        let (audio_open_tx, audio_open) = tokio::sync::oneshot::channel();
        let (control_open_tx, control_open) = tokio::sync::oneshot::channel();
        tokio::spawn(watch_channel(
            Arc::clone(&audio),
            audio_open_tx,
            myself.clone(),
            false,
        ));
        tokio::spawn(watch_channel(
            Arc::clone(&control),
            control_open_tx,
            myself.clone(),
            true,
        ));
        let offer = pc.create_offer(None).await.map_err(NetError::from)?;
        let offer = complete_local(&pc, &mut events, offer).await?;
        let request = JoinRequest {
            room_name: c.room_name.clone(),
            token: c.token.clone(),
            participant_id: c.participant_id.clone(),
            signaling_base_url: c.signaling_base_url.clone(),
            offer,
            sample_rate: args.sample_rate,
            channels: u16::try_from(args.channels).unwrap_or(1),
        };
        let response = reqwest::Client::new()
            .post(&c.dispatcher_url)
            .timeout(c.connect_timeout)
            .json(&request)
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(LinkError::Http {
                status: status.as_u16(),
                body,
            });
        }
        let answer: JoinResponse = response
            .json()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        let answer = RTCSessionDescription::answer(answer.answer).map_err(NetError::from)?;
        pc.set_remote_description(answer)
            .await
            .map_err(NetError::from)?;
        connected(&mut events, c.connect_timeout).await?;
        let opened = async {
            audio_open.await.ok();
            control_open.await.ok();
        };
        tokio::time::timeout(c.connect_timeout, opened)
            .await
            .map_err(|_| NetError("data channels did not open".into()))?;
        tokio::spawn(watch_peer(events, myself.clone()));
        Ok((audio, control))
    }
    .await;
    match made {
        Ok((audio, control)) => Ok((pc, audio, control)),
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// Follows a channel's events: its opening, its closing (the link is
/// then gone) and, on the control channel, the acknowledgements.
pub(super) async fn watch_channel(
    channel: Arc<dyn DataChannel>,
    open: tokio::sync::oneshot::Sender<()>,
    link: ActorRef<LinkMsg>,
    control: bool,
) {
    let mut open = Some(open);
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                if let Some(o) = open.take() {
                    let _ = o.send(());
                }
            }
            DataChannelEvent::OnMessage(m) if control => {
                let ack = std::str::from_utf8(&m.data)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Control>(t).ok());
                if let Some(Control::StreamEnded { data }) = ack {
                    if link.send_message(LinkMsg::Ack(data)).is_err() {
                        return;
                    }
                }
            }
            DataChannelEvent::OnClose => {
                let which = if control { CONTROL_LABEL } else { AUDIO_LABEL };
                let _ = link.send_message(LinkMsg::Closed(format!("{which} channel closed")));
                return;
            }
            _ => {}
        }
    }
}

/// Reports the connection failing or closing.
pub(super) async fn watch_peer(mut events: sotto_net::peer::PeerEvents, link: ActorRef<LinkMsg>) {
    use webrtc::peer_connection::RTCPeerConnectionState as S;
    while let Some(state) = events.state.recv().await {
        if matches!(state, S::Failed | S::Closed | S::Disconnected) {
            let _ = link.send_message(LinkMsg::Closed(format!("connection {state}")));
            return;
        }
    }
}

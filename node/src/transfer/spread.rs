//! Spreading the layout: push-pull exchanges with peers. Each call sends this node's
//! layout and gets the peer's merged one back, so both sides are up to date after it.
//! One random live peer per interval (anti-entropy for the layout itself), and every
//! known peer right after a local change, so a change reaches everyone at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Peer};
use crate::env::Env;
use crate::net::{PeerRequest, PeerResponse, PeerTransport};

/// Timeout of one layout exchange.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub fn spawn(
    cluster: Arc<Cluster>,
    transport: Arc<dyn PeerTransport>,
    env: Env,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = cluster.changes();
        let mut last_sent = None;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = changes.changed() => {}
                () = tokio::time::sleep(interval) => {}
            }
            if *stop.borrow() {
                return;
            }
            let view = cluster.view();
            let layout = view.layout().clone();
            let peers: Vec<Peer> = view
                .members()
                .filter_map(|m| view.peer(&m.id))
                .filter(|p| !p.local && p.is_live())
                .collect();
            if peers.is_empty() {
                continue;
            }
            // After a change of this node's layout, everyone; otherwise one at random.
            let chosen: Vec<&Peer> = if last_sent.as_ref() != Some(&*layout) {
                peers.iter().collect()
            } else {
                let i = (env.entropy.next_u64() % peers.len() as u64) as usize;
                vec![&peers[i]]
            };
            last_sent = Some((*layout).clone());
            for peer in chosen {
                exchange(&cluster, transport.as_ref(), &env, peer, &layout).await;
            }
        }
    })
}

/// One push-pull exchange with `peer`.
async fn exchange(
    cluster: &Arc<Cluster>,
    transport: &dyn PeerTransport,
    env: &Env,
    peer: &Peer,
    layout: &crate::membership::Layout,
) {
    let request = PeerRequest::Layout(layout.clone());
    match transport.call(peer.cluster, request, CALL_TIMEOUT).await {
        Ok(PeerResponse::Layout(theirs)) => {
            if let Err(e) = theirs.check() {
                tracing::warn!(peer = %peer.id, error = %e, "ignoring a malformed layout");
                return;
            }
            let cluster = cluster.clone();
            let merged = env.blocking(move || cluster.merge_layout(&theirs)).await;
            if let Err(e) = merged {
                tracing::warn!(error = %e, "could not store a merged layout");
            }
        }
        Ok(other) => {
            tracing::debug!(peer = %peer.id, reply = other_name(&other), "layout exchange refused")
        }
        Err(e) => tracing::debug!(peer = %peer.id, error = %e, "layout exchange failed"),
    }
}

fn other_name(reply: &PeerResponse) -> &'static str {
    match reply {
        PeerResponse::Error { .. } => "error",
        _ => "another kind of reply",
    }
}

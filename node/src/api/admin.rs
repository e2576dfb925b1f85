//! Operational endpoints: health, metrics, the cluster view, and each replica's own
//! copy of a key.

use base64::Engine as _;
use http::{Response, StatusCode};
use ringkv_client::wire::{
    ClusterBody, HealthBody, HintsBody, MemberBody, ReplicaBody, ReplicasBody, RingChangeBody,
};

use super::params::decode_key;
use super::{ApiState, Body, reply};
use crate::error::Result;

pub fn health(state: &ApiState) -> Response<Body> {
    let view = state.cluster.view();
    let body = HealthBody {
        status: "ok".into(),
        node: state.config.id.clone(),
        members_alive: view.members_alive(),
        ring_members: view.layout().current().len(),
        change_in_flight: view.in_flight(),
    };
    reply::json(StatusCode::OK, &body)
}

pub fn metrics(state: &ApiState) -> Response<Body> {
    let cache = state.coordinator.record_cache_stats();
    crate::metrics::record_cache(cache.hits, cache.misses, cache.entries, cache.bytes);
    crate::metrics::rocksdb(&state.backend.properties());
    crate::metrics::members(&member_counts(&state.cluster.view()));
    reply::bytes(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        state.metrics.render(),
    )
}

pub fn cluster(state: &ApiState) -> Response<Body> {
    let c = &state.config;
    let view = state.cluster.view();
    let body = ClusterBody {
        node: c.id.clone(),
        n: c.quorum.n,
        r: c.quorum.r,
        w: c.quorum.w,
        members: view
            .members()
            .map(|m| MemberBody {
                id: m.id.clone(),
                http: m.http.clone(),
                // The address gossip carries, for this node as for the others: the
                // resolved `--advertise-cluster`, so every row reads the same way.
                cluster: m.cluster.to_string(),
                state: if m.id == c.id {
                    "alive".into()
                } else {
                    m.state.as_str().into()
                },
                ring: view.ring_state(&m.id).as_str().into(),
            })
            .collect(),
        hints: HintsBody {
            pending: state.coordinator.hints_pending(),
        },
        anti_entropy: state.anti_entropy.snapshot(),
        transfers: state.transfers.snapshot(),
    };
    reply::json(StatusCode::OK, &body)
}

/// `POST /admin/leave`: this node starts handing its ranges over.
pub fn leave(state: &ApiState) -> Result<Response<Body>> {
    let ring = crate::transfer::leave(&state.cluster)?;
    Ok(reply::json(
        StatusCode::ACCEPTED,
        &RingChangeBody {
            node: state.config.id.clone(),
            ring: ring.as_str().into(),
        },
    ))
}

/// `POST /admin/remove/{id}`: takes a node that is down for good off the ring.
pub fn remove(state: &ApiState, raw_id: &str) -> Result<Response<Body>> {
    let id = percent_encoding::percent_decode_str(raw_id)
        .decode_utf8()
        .map_err(|_| crate::Error::BadRequest("the node id is not UTF-8".into()))?;
    if id.is_empty() || id.contains('/') {
        return Err(crate::Error::BadRequest(format!("{id:?} is not a node id")));
    }
    let ring = crate::transfer::remove(&state.cluster, &id)?;
    Ok(reply::json(
        StatusCode::ACCEPTED,
        &RingChangeBody {
            node: id.into_owned(),
            ring: ring.as_str().into(),
        },
    ))
}

pub async fn replicas(state: &ApiState, raw_key: &str) -> Result<Response<Body>> {
    let key = decode_key(raw_key, state.config.max_key_bytes)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let replicas = state
        .coordinator
        .replica_reports(&key)
        .await
        .into_iter()
        .map(|report| match report.result {
            Ok(clock) => {
                let clock = clock.unwrap_or_default();
                ReplicaBody {
                    node: report.node,
                    state: report.state.into(),
                    found: Some(!clock.is_empty()),
                    siblings: Some(clock.live_values().iter().map(|v| b64.encode(v)).collect()),
                    tombstone: Some(clock.is_tombstoned()),
                    context: (!clock.is_empty()).then(|| clock.context().to_token()),
                    error: None,
                }
            }
            Err(error) => ReplicaBody {
                node: report.node,
                state: report.state.into(),
                found: None,
                siblings: None,
                tombstone: None,
                context: None,
                error: Some(error),
            },
        })
        .collect();
    let body = ReplicasBody {
        key: String::from_utf8_lossy(&key).into_owned(),
        preference_list: state.coordinator.preference_list(&key),
        replicas,
    };
    Ok(reply::json(StatusCode::OK, &body))
}

/// Members per gossip state, this node counted alive (as `/cluster` shows it).
fn member_counts(view: &crate::cluster::View) -> Vec<(&'static str, usize)> {
    crate::metrics::MEMBER_STATES
        .iter()
        .map(|&state| {
            let count = view
                .members()
                .filter(|m| {
                    let shown = if m.id == view.local() {
                        "alive"
                    } else {
                        m.state.as_str()
                    };
                    shown == state
                })
                .count();
            (state, count)
        })
        .collect()
}

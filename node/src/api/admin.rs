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
use crate::membership::RingState;

/// `GET /health`, `/healthz`: 200 while the node serves (liveness); with
/// `?ready=true`, 503 unless it is a ring `member` (readiness: on the committed ring,
/// its ranges received, so reads use it).
pub fn health(state: &ApiState, query: Option<&str>) -> Result<Response<Body>> {
    let want_ready = health_query(query)?;
    let view = state.cluster.view();
    let (status, body) = health_reply(
        HealthFacts {
            node: state.config.id.clone(),
            members_alive: view.members_alive(),
            ring_members: view.layout().current().len(),
            change_in_flight: view.in_flight(),
            ring: view.ring_state(view.local()),
        },
        want_ready,
    );
    Ok(reply::json(status, &body))
}

/// What `/health` reports, gathered from the view.
#[derive(Debug, Clone)]
struct HealthFacts {
    node: String,
    members_alive: usize,
    ring_members: usize,
    change_in_flight: bool,
    ring: RingState,
}

/// The status and body of `/health`: only a `member` is ready. A joining node does
/// not hold its ranges yet and a leaving one is handing them away, so neither should
/// receive clients; a removed one is on its way out.
fn health_reply(facts: HealthFacts, want_ready: bool) -> (StatusCode, HealthBody) {
    let ready = facts.ring == RingState::Member;
    let refuse = want_ready && !ready;
    let body = HealthBody {
        status: if refuse { "not_ready" } else { "ok" }.into(),
        node: facts.node,
        members_alive: facts.members_alive,
        ring_members: facts.ring_members,
        change_in_flight: facts.change_in_flight,
        ring: facts.ring.as_str().into(),
        ready,
    };
    let status = if refuse {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, body)
}

/// Parses the query of `/health`: only `ready=true|false`, at most once.
fn health_query(query: Option<&str>) -> Result<bool> {
    let mut ready = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let bad = |message: String| crate::Error::BadRequest(message);
        match name.as_ref() {
            "ready" if ready.is_some() => {
                return Err(bad("query parameter ready is given twice".into()));
            }
            "ready" => {
                ready = Some(match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    other => return Err(bad(format!("ready={other}: expected true or false"))),
                })
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {other:?} (GET /health takes only ready=true|false)"
                )));
            }
        }
    }
    Ok(ready.unwrap_or(false))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(ring: RingState) -> HealthFacts {
        HealthFacts {
            node: "n4".into(),
            members_alive: 4,
            ring_members: 3,
            change_in_flight: ring != RingState::Member,
            ring,
        }
    }

    #[test]
    fn only_a_member_is_ready() {
        // `?ready=true` answers 503 `not_ready` for every ring state but `member`, and
        // plain `/health` answers 200 `ok` in all of them, with the same fields.
        for ring in [
            RingState::Joining,
            RingState::Member,
            RingState::Leaving,
            RingState::Removed,
        ] {
            let member = ring == RingState::Member;
            let (status, body) = health_reply(facts(ring), true);
            let expected = if member {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            assert_eq!(status, expected, "{ring:?} with ready=true");
            assert_eq!(body.status, if member { "ok" } else { "not_ready" });
            assert_eq!(body.ready, member, "{ring:?}");
            assert_eq!(body.ring, ring.as_str());

            let (status, plain) = health_reply(facts(ring), false);
            assert_eq!(status, StatusCode::OK, "{ring:?} without ready");
            assert_eq!(plain.status, "ok");
            assert_eq!((plain.ready, plain.ring), (body.ready, body.ring));
            assert_eq!(
                (plain.node, plain.members_alive, plain.ring_members),
                ("n4".to_string(), 4, 3)
            );
        }
    }

    #[test]
    fn the_health_query_takes_only_ready() {
        // ready=true|false parses; anything else, or ready twice, is a 400 that names it.
        assert!(!health_query(None).unwrap());
        assert!(!health_query(Some("")).unwrap());
        assert!(health_query(Some("ready=true")).unwrap());
        assert!(!health_query(Some("ready=false")).unwrap());
        for (query, says) in [
            ("ready=yes", "ready=yes: expected true or false"),
            ("ready", "ready=: expected true or false"),
            ("ready=true&ready=true", "given twice"),
            ("verbose=1", "unknown query parameter \"verbose\""),
        ] {
            let err = health_query(Some(query)).unwrap_err();
            assert!(
                matches!(&err, crate::Error::BadRequest(m) if m.contains(says)),
                "{query}: {err:?}"
            );
        }
    }
}

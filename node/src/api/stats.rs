//! The dashboard's live data: `GET /stats` (this node's recent requests, hints and
//! store), `GET /stats?cluster=true` (every member's, fetched by this node) and
//! `GET /ring` (how the partitions fall on the members).
//!
//! `cluster=true` exists so that a page served by one node never makes a request to
//! another host (no CORS, one origin to trust, one token to send): this node asks each
//! member's `/stats` over HTTP at its advertised address, all at once, each within
//! [`PEER_STATS_TIMEOUT`], passing on the caller's `Authorization` header, and
//! answers with what came back and why the rest did not. A member gossip reports down
//! or left is not asked.
//!
//! Caveats: a member advertising a loopback HTTP address (the compose cluster
//! advertises the ports it publishes on the host, `127.0.0.1:800i`) is asked at its
//! cluster IP with the same port instead, since another member's loopback is not
//! this host's; that needs the member to listen on that port on that address. Peers
//! are asked in plain HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ringkv_client::wire::{
    ClusterStatsBody, MemberStatsBody, RingBody, RingOwnerBody, StatsBody, StorageBody,
};
use ringkv_gossip::MemberState;
use ringkv_ring::{PARTITIONS, Partition};

use super::{ApiState, Body, reply};
use crate::cluster::View;
use crate::config::parse_host_port;
use crate::error::{Error, Result};
use crate::storage::CfProperties;

/// How long a member has to answer its `/stats`: the page polls every second or so,
/// and a frozen member must not hold up the others' figures.
pub const PEER_STATS_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest `/stats` body accepted from a member.
const PEER_STATS_MAX_BYTES: usize = 64 * 1024;

/// The HTTP client that asks members for their `/stats`.
#[derive(Debug, Clone)]
pub struct PeerStats {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for PeerStats {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(PEER_STATS_TIMEOUT));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                // Below the peers' idle cutoff (`--header-timeout-ms`, 10 s by
                // default); the idle timeout only runs with a pool timer.
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(5))
                .build(connector),
        }
    }
}

impl PeerStats {
    /// One member's `/stats`, or a short reason why not.
    async fn fetch(
        &self,
        address: &str,
        authorization: Option<&HeaderValue>,
    ) -> std::result::Result<StatsBody, String> {
        let mut request = Request::get(format!("http://{address}/stats"));
        if let Some(auth) = authorization {
            request = request.header(AUTHORIZATION, auth);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("bad address {address}: {e}"))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), PEER_STATS_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            serde_json::from_slice(&body).map_err(|e| format!("bad answer: {e}"))
        };
        tokio::time::timeout(PEER_STATS_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    }
}

/// `cluster=true|false`, nothing else.
fn wants_cluster(query: Option<&str>) -> Result<bool> {
    let mut cluster = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match (name.as_ref(), value.as_ref()) {
            ("cluster", _) if cluster.is_some() => {
                return Err(Error::BadRequest(
                    "query parameter cluster is given twice".into(),
                ));
            }
            ("cluster", "true") => cluster = Some(true),
            ("cluster", "false") => cluster = Some(false),
            ("cluster", other) => {
                return Err(Error::BadRequest(format!(
                    "cluster={other}: expected true or false"
                )));
            }
            (other, _) => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(cluster.unwrap_or(false))
}

fn no_query(query: Option<&str>) -> Result<()> {
    match query.filter(|q| !q.is_empty()) {
        None => Ok(()),
        Some(q) => Err(Error::BadRequest(format!(
            "this call takes no query parameters, got {q:?}"
        ))),
    }
}

/// `GET /stats` and `GET /stats?cluster=true`.
pub async fn stats<B>(state: &ApiState, req: Request<B>) -> Result<Response<Body>> {
    if !wants_cluster(req.uri().query())? {
        return Ok(reply::json(StatusCode::OK, &local_stats(state)));
    }
    let authorization = req.headers().get(AUTHORIZATION).cloned();
    let view = state.cluster.view();
    let local = view.local().to_owned();
    let asks = view.members().map(|m| {
        let (id, state_name) = (m.id.clone(), m.state.as_str().to_owned());
        let address = peer_address(&m.http, m.cluster);
        let (is_local, gone) = (
            m.id == local,
            matches!(m.state, MemberState::Down | MemberState::Left),
        );
        let authorization = authorization.clone();
        async move {
            if is_local {
                return MemberStatsBody {
                    id,
                    state: "alive".into(),
                    stats: Some(local_stats(state)),
                    error: None,
                };
            }
            if gone {
                return MemberStatsBody {
                    error: Some(format!("{state_name} (gossip)")),
                    id,
                    state: state_name,
                    stats: None,
                };
            }
            let (stats, error) = match state
                .peer_stats
                .fetch(&address, authorization.as_ref())
                .await
            {
                Ok(stats) => (Some(stats), None),
                Err(e) => (None, Some(e)),
            };
            MemberStatsBody {
                id,
                state: state_name,
                stats,
                error,
            }
        }
    });
    let nodes = futures::future::join_all(asks).await;
    Ok(reply::json(
        StatusCode::OK,
        &ClusterStatsBody { node: local, nodes },
    ))
}

/// `GET /ring`.
pub fn ring<B>(state: &ApiState, req: &Request<B>) -> Result<Response<Body>> {
    no_query(req.uri().query())?;
    let view = state.cluster.view();
    let n = state.config.quorum.n;
    let body = RingBody {
        node: state.config.id.clone(),
        n,
        partitions: PARTITIONS,
        owners: ownership(&view, n),
    };
    Ok(reply::json(StatusCode::OK, &body))
}

/// This node's [`StatsBody`].
fn local_stats(state: &ApiState) -> StatsBody {
    let uptime = state.started.elapsed();
    let s = state.stats.snapshot(uptime.as_secs());
    StatsBody {
        node: state.config.id.clone(),
        uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        window_s: s.window_s,
        reads_per_s: s.reads_per_s,
        writes_per_s: s.writes_per_s,
        errors_per_s: s.errors_per_s,
        p50_ms: s.p50_ms,
        p99_ms: s.p99_ms,
        reads_total: s.reads_total,
        writes_total: s.writes_total,
        errors_total: s.errors_total,
        hints_pending: state.coordinator.hints_pending(),
        storage: storage_body(&state.backend.properties()),
    }
}

/// The store's figures summed over its column families; `None` when it has none.
pub fn storage_body(properties: &[(crate::storage::Cf, CfProperties)]) -> Option<StorageBody> {
    if properties.is_empty() {
        return None;
    }
    Some(
        properties
            .iter()
            .fold(StorageBody::default(), |mut sum, (_, p)| {
                sum.sst_bytes += p.sst_bytes;
                sum.memtable_bytes += p.memtable_bytes;
                sum.pending_compaction_bytes += p.pending_compaction_bytes;
                sum.estimated_keys += p.estimated_keys;
                sum
            }),
    )
}

/// Each member's primary and home partitions, in id order (members with none too).
pub fn ownership(view: &View, n: usize) -> Vec<RingOwnerBody> {
    let mut owners: BTreeMap<String, RingOwnerBody> = view
        .members()
        .map(|m| {
            let owner = RingOwnerBody {
                id: m.id.clone(),
                primary_partitions: 0,
                home_partitions: 0,
            };
            (m.id.clone(), owner)
        })
        .collect();
    for partition in Partition::all() {
        for (rank, home) in view.partition_homes(partition, n).into_iter().enumerate() {
            if let Some(owner) = owners.get_mut(&home.id) {
                owner.home_partitions += 1;
                if rank == 0 {
                    owner.primary_partitions += 1;
                }
            }
        }
    }
    owners.into_values().collect()
}

/// Where to ask a member for its `/stats`: its advertised HTTP address, unless that
/// is a loopback one while its cluster address is not (see the module docs).
pub fn peer_address(advertised_http: &str, cluster: SocketAddr) -> String {
    let Some((host, port)) = parse_host_port(advertised_http) else {
        return advertised_http.to_owned();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && !cluster.ip().is_loopback() {
        SocketAddr::new(cluster.ip(), port).to_string()
    } else {
        advertised_http.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use ringkv_gossip::Member;

    use super::*;

    fn member(id: &str, state: MemberState) -> Member {
        Member {
            id: id.into(),
            cluster: "127.0.0.1:7001".parse().unwrap(),
            http: "127.0.0.1:8001".into(),
            generation: 1,
            state,
        }
    }

    #[test]
    fn every_partition_has_one_primary_and_n_homes() {
        // Proves the ownership table adds up: over the members, primaries sum to the
        // partition count and homes to n times it, and a down member keeps its share
        // (being down is not leaving the ring).
        let view = View::new(
            "n1",
            64,
            [
                member("n1", MemberState::Alive),
                member("n2", MemberState::Alive),
                member("n3", MemberState::Down),
                member("n4", MemberState::Alive),
            ],
        );
        let owners = ownership(&view, 3);
        let ids: Vec<&str> = owners.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["n1", "n2", "n3", "n4"]);
        let primaries: usize = owners.iter().map(|o| o.primary_partitions).sum();
        let homes: usize = owners.iter().map(|o| o.home_partitions).sum();
        assert_eq!(primaries, PARTITIONS);
        assert_eq!(homes, 3 * PARTITIONS);
        assert!(
            owners.iter().all(|o| o.primary_partitions > 0),
            "{owners:?}"
        );
    }

    #[test]
    fn a_loopback_advertisement_is_asked_at_the_cluster_ip() {
        // Proves a member that advertises 127.0.0.1 (compose's published ports) is asked
        // at its cluster IP, while real and all-loopback addresses are used as given.
        let remote: SocketAddr = "10.1.2.3:7001".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        assert_eq!(peer_address("127.0.0.1:8002", remote), "10.1.2.3:8002");
        assert_eq!(peer_address("localhost:8002", remote), "10.1.2.3:8002");
        assert_eq!(peer_address("[::1]:8002", remote), "10.1.2.3:8002");
        assert_eq!(peer_address("127.0.0.1:8002", local), "127.0.0.1:8002");
        assert_eq!(peer_address("n2:8001", remote), "n2:8001");
        assert_eq!(peer_address("10.9.9.9:8001", remote), "10.9.9.9:8001");
    }

    #[test]
    fn the_stats_query_is_checked() {
        // Proves /stats takes only cluster=true|false, once.
        assert!(!wants_cluster(None).unwrap());
        assert!(wants_cluster(Some("cluster=true")).unwrap());
        assert!(!wants_cluster(Some("cluster=false")).unwrap());
        for bad in [
            "cluster=1",
            "cluster=true&cluster=true",
            "node=n2",
            "cluster",
        ] {
            assert!(wants_cluster(Some(bad)).is_err(), "{bad} was accepted");
        }
        assert!(no_query(Some("")).is_ok());
        assert!(no_query(Some("x=1")).is_err());
    }

    #[test]
    fn storage_figures_are_summed_over_column_families() {
        // Proves the store's figures add up over column families, and that an engine
        // with none reports none rather than zeros.
        use crate::storage::Cf;
        let p = |sst| CfProperties {
            sst_bytes: sst,
            memtable_bytes: 1,
            pending_compaction_bytes: 2,
            estimated_keys: 3,
        };
        let sum = storage_body(&[(Cf::Data, p(10)), (Cf::Hints, p(5))]).unwrap();
        assert_eq!(
            sum,
            StorageBody {
                sst_bytes: 15,
                memtable_bytes: 2,
                pending_compaction_bytes: 4,
                estimated_keys: 6
            }
        );
        assert_eq!(storage_body(&[]), None);
    }
}

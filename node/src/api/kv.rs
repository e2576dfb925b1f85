//! The raw KV endpoints, `/kv/{key}`: values are the request and response bodies,
//! contexts travel in `X-Ringkv-Context`, siblings answer 300 with JSON.

use base64::Engine as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use ringkv_client::wire::SiblingsBody;

use super::params::{KvParams, decode_key};
use super::{ApiState, Body, reply};
use crate::coordinator::Supersedes;
use crate::error::Result;
use crate::version::Clock;

/// How a read resolved to an answer, shared by the raw and JSON endpoints.
pub enum Resolved<'a> {
    /// No version, or only tombstones: 404 (with the context when there is history).
    Missing(Option<&'a Clock>),
    One(&'a [u8]),
    Siblings(Vec<&'a [u8]>),
}

/// Picks the answer to a read: tombstones are never listed; with `lww` one winner.
pub fn resolve(clock: Option<&Clock>, lww: bool) -> Resolved<'_> {
    let Some(clock) = clock else {
        return Resolved::Missing(None);
    };
    if lww {
        return match clock.lww().and_then(|v| v.data.as_deref()) {
            Some(data) => Resolved::One(data),
            None => Resolved::Missing(Some(clock)),
        };
    }
    let mut live = clock.live_values();
    match live.len() {
        0 => Resolved::Missing(Some(clock)),
        1 => Resolved::One(live.remove(0)),
        _ => Resolved::Siblings(live),
    }
}

pub async fn get(
    state: &ApiState,
    raw_key: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let config = &state.config;
    let params = KvParams::parse(req.uri().query(), config.quorum.n, false)?;
    let key = decode_key(raw_key, config.max_key_bytes)?;
    let options = params.read_options(config.quorum, config.timeout);
    let clock = state.coordinator.get(&key, &options).await?;
    Ok(match resolve(clock.as_ref(), params.resolve_lww) {
        Resolved::Missing(history) => reply::not_found(history.map(Clock::context).as_ref()),
        Resolved::One(value) => {
            let mut r = reply::bytes(StatusCode::OK, "application/octet-stream", value.to_vec());
            reply::set_context(
                &mut r,
                &clock.as_ref().expect("a value implies a clock").context(),
            );
            r
        }
        Resolved::Siblings(values) => {
            let context = clock.as_ref().expect("siblings imply a clock").context();
            let b64 = base64::engine::general_purpose::STANDARD;
            let body = SiblingsBody {
                key: String::from_utf8_lossy(&key).into_owned(),
                context: context.to_token(),
                siblings: values.iter().map(|v| b64.encode(v)).collect(),
            };
            let mut r = reply::json(StatusCode::MULTIPLE_CHOICES, &body);
            reply::set_context(&mut r, &context);
            r
        }
    })
}

pub async fn put(
    state: &ApiState,
    raw_key: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let config = &state.config;
    let params = KvParams::parse(req.uri().query(), config.quorum.n, false)?;
    let key = decode_key(raw_key, config.max_key_bytes)?;
    let (parts, body) = req.into_parts();
    let context = reply::context_header(&parts.headers)?;
    let value = reply::read_body(&parts.headers, body, config.max_value_bytes).await?;
    let supersedes = match (context, params.overwrite) {
        (Some(vv), _) => Supersedes::Context(vv),
        (None, true) => Supersedes::CurrentVersions,
        (None, false) => Supersedes::Nothing,
    };
    let options = params.write_options(config.quorum, config.timeout);
    let outcome = state
        .coordinator
        .write(&key, Some(value.to_vec()), supersedes, &options)
        .await?;
    let mut r = reply::empty(StatusCode::NO_CONTENT);
    reply::set_context(&mut r, &outcome.clock.context());
    reply::set_write_headers(&mut r, &outcome);
    Ok(r)
}

pub async fn delete(
    state: &ApiState,
    raw_key: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let config = &state.config;
    let params = KvParams::parse(req.uri().query(), config.quorum.n, false)?;
    let key = decode_key(raw_key, config.max_key_bytes)?;
    let supersedes = match reply::context_header(req.headers())? {
        Some(vv) => Supersedes::Context(vv),
        None => Supersedes::CurrentVersions,
    };
    let options = params.write_options(config.quorum, config.timeout);
    let outcome = state
        .coordinator
        .write(&key, None, supersedes, &options)
        .await?;
    let mut r = reply::empty(StatusCode::NO_CONTENT);
    reply::set_context(&mut r, &outcome.clock.context());
    reply::set_write_headers(&mut r, &outcome);
    Ok(r)
}

//! The JSON API on `/kv` (the seeds' interface): `{"data":{"key","value"},"context"}`.
//! A PUT overwrites what is stored unless the body carries a `context`; values are
//! JSON strings, and values that are not UTF-8 travel as base64 with
//! `"encoding":"base64"`.

use base64::Engine as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use ringkv_client::wire::{ENCODING_BASE64, JsonData, JsonKvResponse, JsonPutRequest};

use super::kv::{Resolved, resolve};
use super::params::{KvParams, check_key};
use super::{ApiState, Body, reply};
use crate::coordinator::Supersedes;
use crate::error::{Error, Result};
use crate::version::VersionVector;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn query_key(params: &KvParams, max_key_bytes: usize) -> Result<String> {
    let key = params
        .key
        .clone()
        .ok_or_else(|| Error::BadRequest("missing query parameter key".into()))?;
    check_key(key.as_bytes(), max_key_bytes)?;
    Ok(key)
}

/// Values as JSON strings: all UTF-8 as they are, otherwise all base64.
fn encode_values(values: &[&[u8]]) -> (Vec<String>, Option<String>) {
    match values
        .iter()
        .map(|v| std::str::from_utf8(v))
        .collect::<std::result::Result<Vec<_>, _>>()
    {
        Ok(texts) => (texts.into_iter().map(str::to_owned).collect(), None),
        Err(_) => (
            values.iter().map(|v| B64.encode(v)).collect(),
            Some(ENCODING_BASE64.to_owned()),
        ),
    }
}

pub async fn get(state: &ApiState, req: Request<Incoming>) -> Result<Response<Body>> {
    let config = &state.config;
    let params = KvParams::parse(req.uri().query(), config.quorum.n, true)?;
    let key = query_key(&params, config.max_key_bytes)?;
    let options = params.read_options(config.quorum, config.timeout);
    let clock = state.coordinator.get(key.as_bytes(), &options).await?;
    let (status, data) = match resolve(clock.as_ref(), params.resolve_lww) {
        Resolved::Missing(history) => {
            return Ok(reply::not_found(history.map(|c| c.context()).as_ref()));
        }
        Resolved::One(value) => {
            let (mut values, encoding) = encode_values(&[value]);
            (
                StatusCode::OK,
                JsonData {
                    key,
                    value: values.pop(),
                    values: None,
                    encoding,
                },
            )
        }
        Resolved::Siblings(all) => {
            let (values, encoding) = encode_values(&all);
            (
                StatusCode::MULTIPLE_CHOICES,
                JsonData {
                    key,
                    value: None,
                    values: Some(values),
                    encoding,
                },
            )
        }
    };
    let context = clock.expect("a value implies a clock").context();
    let mut r = reply::json(
        status,
        &JsonKvResponse {
            data,
            context: context.to_token(),
        },
    );
    reply::set_context(&mut r, &context);
    Ok(r)
}

pub async fn put(state: &ApiState, req: Request<Incoming>) -> Result<Response<Body>> {
    let config = &state.config;
    let params = KvParams::parse(req.uri().query(), config.quorum.n, false)?;
    let (parts, body) = req.into_parts();
    // Room for a value escaped or base64-encoded, plus the key and the envelope.
    let limit = 2 * config.max_value_bytes + 8 * config.max_key_bytes + 4096;
    let bytes = reply::read_body(&parts.headers, body, limit).await?;
    let request: JsonPutRequest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("body is not a ringkv JSON PUT: {e}")))?;
    let JsonPutRequest { data, context } = request;
    check_key(data.key.as_bytes(), config.max_key_bytes)?;
    if data.values.is_some() {
        return Err(Error::BadRequest(
            "data.values is only for answers; send one data.value".into(),
        ));
    }
    let text = data
        .value
        .ok_or_else(|| Error::BadRequest("data.value is missing".into()))?;
    let value = match data.encoding.as_deref() {
        None => text.clone().into_bytes(),
        Some(ENCODING_BASE64) => B64
            .decode(&text)
            .map_err(|e| Error::BadRequest(format!("data.value is not base64: {e}")))?,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "data.encoding {other:?}: expected \"base64\""
            )));
        }
    };
    if value.len() > config.max_value_bytes {
        return Err(Error::ValueTooLarge {
            max_bytes: config.max_value_bytes,
        });
    }
    let supersedes = match context {
        Some(token) => Supersedes::Context(VersionVector::from_token(&token)?),
        None => Supersedes::CurrentVersions,
    };
    let options = params.write_options(config.quorum, config.timeout);
    let outcome = state
        .coordinator
        .write(data.key.as_bytes(), Some(value), supersedes, &options)
        .await?;
    let context = outcome.clock.context();
    let answer = JsonKvResponse {
        data: JsonData {
            key: data.key,
            value: Some(text),
            values: None,
            encoding: data.encoding,
        },
        context: context.to_token(),
    };
    let mut r = reply::json(StatusCode::OK, &answer);
    reply::set_context(&mut r, &context);
    reply::set_write_headers(&mut r, &outcome);
    Ok(r)
}

pub async fn delete(state: &ApiState, req: Request<Incoming>) -> Result<Response<Body>> {
    let config = &state.config;
    let params = KvParams::parse(req.uri().query(), config.quorum.n, true)?;
    let key = query_key(&params, config.max_key_bytes)?;
    let supersedes = match reply::context_header(req.headers())? {
        Some(vv) => Supersedes::Context(vv),
        None => Supersedes::CurrentVersions,
    };
    let options = params.write_options(config.quorum, config.timeout);
    let outcome = state
        .coordinator
        .write(key.as_bytes(), None, supersedes, &options)
        .await?;
    let mut r = reply::empty(StatusCode::NO_CONTENT);
    reply::set_write_headers(&mut r, &outcome);
    Ok(r)
}

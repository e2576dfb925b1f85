//! Bearer tokens on the API (`--api-token-file`): one check before routing, so every
//! endpoint is covered but `GET /health` and `GET /healthz` (load balancers and
//! orchestrators probe those without credentials).
//!
//! A request passes with `Authorization: Bearer <token>` for any token of the file. The
//! presented token is compared with every token, each in constant time (`subtle`), and
//! the results are folded without an early exit, so the answer's timing does not say
//! how much of a token was right, nor which token matched. (Token lengths are not
//! hidden: a comparison of different lengths ends at once.) A refusal is 401
//! `unauthorized` with a `WWW-Authenticate: Bearer` header, and the request is never
//! routed: nothing is read or written.

use std::path::Path;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use ringkv_client::wire::codes;
use subtle::{Choice, ConstantTimeEq};

use super::{Body, reply};
use crate::error::{Error, Result};

/// Most tokens in one file: every request is compared with each.
pub const TOKENS_MAX: usize = 64;
/// Longest token, in bytes.
pub const TOKEN_MAX_BYTES: usize = 1024;
/// Shortest token accepted, in bytes: a short token can be guessed.
pub const TOKEN_MIN_BYTES: usize = 16;
/// Largest token file read.
const FILE_MAX_BYTES: u64 = 256 * 1024;

/// The tokens of an API token file. Its `Debug` shows how many and nothing of them.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTokens {
    tokens: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} tokens, redacted)", self.tokens.len())
    }
}

impl ApiTokens {
    /// Parses a token file: one token per line, blank lines and `#` comments skipped.
    /// A token is [`TOKEN_MIN_BYTES`] to [`TOKEN_MAX_BYTES`] visible ASCII characters (what
    /// a header can carry); errors name the line, never its content.
    pub fn parse(text: &str) -> Result<Self> {
        let mut tokens = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let visible = line.bytes().all(|b| b.is_ascii_graphic());
            if !visible || !(TOKEN_MIN_BYTES..=TOKEN_MAX_BYTES).contains(&line.len()) {
                return Err(Error::Config(format!(
                    "line {}: a token is {TOKEN_MIN_BYTES} to {TOKEN_MAX_BYTES} visible ASCII characters",
                    index + 1
                )));
            }
            tokens.push(line.as_bytes().to_vec());
        }
        if tokens.is_empty() {
            return Err(Error::Config("no token".into()));
        }
        if tokens.len() > TOKENS_MAX {
            return Err(Error::Config(format!(
                "{} tokens; at most {TOKENS_MAX}",
                tokens.len()
            )));
        }
        Ok(Self { tokens })
    }

    /// Reads and parses the token file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let fail =
            |why: String| Error::Config(format!("--api-token-file {}: {why}", path.display()));
        let len = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .len();
        if len > FILE_MAX_BYTES {
            return Err(fail(format!("{len} bytes; at most {FILE_MAX_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(why) => fail(why),
            other => other,
        })
    }

    /// Whether `presented` is one of the tokens; compares with all of them, each in
    /// constant time.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let found = self.tokens.iter().fold(Choice::from(0), |found, token| {
            found | token.as_slice().ct_eq(presented)
        });
        found.into()
    }
}

/// The 401 that refuses the request, or `None` to let it through. Without tokens
/// everything passes.
pub(crate) fn refusal<B>(tokens: Option<&ApiTokens>, req: &Request<B>) -> Option<Response<Body>> {
    let tokens = tokens?;
    // The dashboard's page holds no data; its script asks for the token.
    if req.method() == Method::GET && matches!(req.uri().path(), "/health" | "/healthz" | "/") {
        return None;
    }
    let refuse = |message: &str| {
        let mut response =
            reply::status_error(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message);
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"ringkv\""),
        );
        response
    };
    let Some(header) = req.headers().get(AUTHORIZATION) else {
        return Some(refuse("this node needs Authorization: Bearer <token>"));
    };
    match bearer_token(header.as_bytes()) {
        Some(token) if tokens.accepts(token) => None,
        Some(_) => Some(refuse("the bearer token is not valid here")),
        None => Some(refuse("the Authorization header is not Bearer <token>")),
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive, RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    const T1: &str = "token-one-0123456789";
    const T2: &str = "token-two-0123456789";

    fn tokens() -> ApiTokens {
        ApiTokens::parse(&format!("# ops\n{T1}\n\n{T2}\n")).unwrap()
    }

    fn request(method: Method, path: &str, auth: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        builder.body(()).unwrap()
    }

    async fn body_json(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn parses_tokens_and_refuses_bad_files() {
        // Comments and blanks are skipped; short, non-ASCII, spaced or missing tokens
        // are refused by line, without echoing the token.
        assert!(tokens().accepts(T1.as_bytes()) && tokens().accepts(T2.as_bytes()));
        for (text, expected) in [
            ("short\n", "line 1"),
            ("has a space in it 0123\n", "line 1"),
            ("token-é-0123456789abc\n", "line 1"),
            ("# nothing\n", "no token"),
        ] {
            let err = ApiTokens::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("0123"), "{err} echoes the token");
        }
        assert!(!format!("{:?}", tokens()).contains("token-one"));
    }

    #[test]
    fn only_exact_tokens_are_accepted() {
        // A prefix, an extension, a case change or another token is refused.
        let t = tokens();
        for wrong in [
            "",
            "token-one",
            "token-one-01234567890",
            "TOKEN-ONE-0123456789",
            "x",
        ] {
            assert!(!t.accepts(wrong.as_bytes()), "{wrong:?} accepted");
        }
    }

    #[tokio::test]
    async fn every_endpoint_but_health_needs_a_valid_bearer_token() {
        // GET /health, /healthz and the dashboard's page (/) pass without a token;
        // everything else (including a POST to /health) needs one, and a refusal is a
        // JSON 401 `unauthorized`.
        let t = tokens();
        for path in ["/health", "/healthz", "/"] {
            assert!(refusal(Some(&t), &request(Method::GET, path, None)).is_none());
        }
        let bearer = format!("Bearer {T2}");
        let lower = format!("bearer {T1}");
        for (method, path) in [
            (Method::GET, "/kv/a"),
            (Method::PUT, "/kv?key=a"),
            (Method::GET, "/metrics"),
            (Method::GET, "/cluster"),
            (Method::GET, "/stats"),
            (Method::POST, "/"),
            (Method::POST, "/health"),
            (Method::GET, "/admin/replicas/a"),
        ] {
            assert!(refusal(Some(&t), &request(method.clone(), path, Some(&bearer))).is_none());
            assert!(refusal(Some(&t), &request(method.clone(), path, Some(&lower))).is_none());
            for auth in [
                None,
                Some("Bearer nope-nope-nope-nope"),
                Some("Basic dXNlcjpwYXNz"),
                Some("Bearer "),
            ] {
                let refused = refusal(Some(&t), &request(method.clone(), path, auth)).unwrap();
                assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
                assert!(refused.headers().contains_key(WWW_AUTHENTICATE));
                let body = body_json(refused).await;
                assert_eq!(body["error"], "unauthorized", "{body}");
                assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
        assert!(refusal(None, &request(Method::GET, "/kv/a", None)).is_none());
    }
}

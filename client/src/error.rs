//! The client's one error type.

use crate::wire::ErrorBody;

/// `error` code of the synthetic [`ErrorBody`] made when a node answers an error
/// status with a body that is not the JSON error of README.md#http-api (e.g. a proxy's
/// HTML page).
pub const CODE_NON_JSON_ERROR: &str = "http_error";

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// After [`Error::Unreachable`] or [`Error::Timeout`] a write may or may not have been
/// applied (a node can apply it and then fail to answer); after [`Error::InvalidInput`]
/// and [`Error::BadUrl`] nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node answered with an error status (its JSON body, or a synthetic one with
    /// code [`CODE_NON_JSON_ERROR`]). The client does not fail over on an answer: the
    /// cluster has spoken, and another coordinator would see the same replicas.
    /// (The body is boxed to keep every `Result` of this crate small.)
    #[error("server answered {status} {}: {}", .body.error, .body.message)]
    Api { status: u16, body: Box<ErrorBody> },

    /// No node answered: every node in `tried` failed at the transport level
    /// (refused, reset, or timed out); `last` describes the last failure.
    #[error("no node answered (tried {}): {last}", .tried.join(", "))]
    Unreachable { tried: Vec<String>, last: String },

    /// Every node tried let the client-side timeout of `timeout_ms` pass without a
    /// complete answer. Distinct from a server's 504 `timeout`, which is an
    /// [`Error::Api`] saying the coordinator missed its quorum.
    #[error("no answer within {timeout_ms} ms from any node (tried {})", .tried.join(", "))]
    Timeout { tried: Vec<String>, timeout_ms: u64 },

    /// A node answered a success the client cannot read (bad JSON, bad base64, a
    /// missing or malformed header, an oversized body); the request may have been
    /// applied.
    #[error("cannot read the server's answer: {0}")]
    Decode(String),

    /// The client could not be set up: an unreadable token or CA file, a bad token
    /// (nothing was sent).
    #[error("client setup: {0}")]
    Config(String),

    /// A node URL is not `http://host:port` or `https://host:port` (nothing was sent).
    #[error("bad node URL: {0}")]
    BadUrl(String),

    /// The request cannot be sent as asked (empty key, a context that is not a valid
    /// header value); nothing was sent.
    #[error("invalid request: {0}")]
    InvalidInput(String),
}

impl Error {
    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error code (`"timeout"`, `"too_many_siblings"`, …) of an
    /// [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => Some(&body.error),
            _ => None,
        }
    }
}

/// The client's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// An error and its causes on one line, `a: b: c`: hyper's own messages ("client
/// error (Connect)") say little without the OS error underneath.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

//! `GET /`: the web dashboard, one self-contained HTML page compiled into the binary
//! (hand-written HTML, CSS and JavaScript in `dashboard/`, no build step, nothing
//! fetched from a CDN).
//!
//! The page reads only this node's own endpoints: `/cluster` (members, hints,
//! anti-entropy, and ring states and transfers where the node reports them), `/ring`
//! (partitions per member) and `/stats?cluster=true` (every member's recent rates and
//! p99, gathered by this node), and its console calls `/kv/{key}`. Its
//! Content-Security-Policy allows connections to this origin only, so the browser
//! itself refuses a request to any other host. With `--api-token-file` the page
//! holds no data, so it is served without a token; its script asks for one on the
//! first 401 and keeps it in the tab's sessionStorage.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Response, StatusCode};

use super::{Body, reply};

/// The page: markup, then the style and the script inlined, so that one request
/// (the only one that needs no token) brings everything.
const PAGE: &str = concat!(
    include_str!("dashboard/head.html"),
    "<style>\n",
    include_str!("dashboard/dashboard.css"),
    "</style>\n</head>\n",
    include_str!("dashboard/body.html"),
    "<script>\n",
    include_str!("dashboard/dashboard.js"),
    "</script>\n</body>\n</html>\n"
);

/// Connections, images and everything else from this origin only; the inline style
/// and script are the page's own (it renders data with `textContent`, never as HTML).
const CSP: &str = "default-src 'none'; connect-src 'self'; img-src 'self' data:; \
                   style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

pub fn page() -> Response<Body> {
    let mut r = reply::bytes(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    let headers = r.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary may bring a new page: revalidate rather than keep an old one.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_no_other_host() {
        // Proves the page loads nothing from elsewhere: no absolute URL in any
        // attribute or fetch (the CSP would block it, and the page would break), and
        // it calls the endpoints it relies on by path.
        for needle in ["http://", "https://", "//cdn", "src=\"//", "href=\"//"] {
            assert!(!PAGE.contains(needle), "the page contains {needle:?}");
        }
        for path in ["'/cluster'", "'/ring'", "'/stats?cluster=true'", "'/kv/'"] {
            assert!(PAGE.contains(path), "the page does not call {path}");
        }
    }

    #[test]
    fn the_page_is_served_as_html_with_a_same_origin_policy() {
        // Proves GET / answers HTML with a CSP that allows connections to this origin
        // only.
        let r = page();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
    }
}

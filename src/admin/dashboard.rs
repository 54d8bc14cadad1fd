//! The dashboard at `/` on the admin listener: one HTML page, its script and its style sheet,
//! compiled into the binary (no CDN, no external fonts or scripts: clusters are often
//! offline). The page holds no data: it asks for the admin token and reads and acts through
//! the same `/v1/*` API, with the token as a bearer.

use crate::body::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const ICON_SVG: &str = include_str!("dashboard/icon.svg");

/// Only our own script, style sheet and API; nothing inline, nothing framed, no forms posted
/// anywhere (the page acts through `fetch`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset served at `path`: its content type and bytes.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX.as_bytes()),
        "/dashboard/app.js" => ("text/javascript; charset=utf-8", APP_JS.as_bytes()),
        "/dashboard/style.css" => ("text/css; charset=utf-8", STYLE_CSS.as_bytes()),
        "/dashboard/icon.svg" | "/favicon.ico" => ("image/svg+xml", ICON_SVG.as_bytes()),
        _ => return None,
    })
}

/// The response for `path`, with the page's security headers; 404 for anything else.
pub fn respond(path: &str) -> Response<Body> {
    let Some((content_type, bytes)) = asset(path) else {
        return super::render::error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    let mut r = Response::new(full(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    // The page is tiny and changes with the binary: never kept; assets are revalidated.
    let cache = if content_type.starts_with("text/html") {
        "no-store"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_served_with_their_types_and_headers() {
        assert!(asset("/").unwrap().0.starts_with("text/html"));
        assert_eq!(asset("/").unwrap().1, asset("/index.html").unwrap().1);
        assert!(asset("/dashboard/app.js")
            .unwrap()
            .0
            .starts_with("text/javascript"));
        assert!(asset("/dashboard/style.css")
            .unwrap()
            .0
            .starts_with("text/css"));
        assert!(asset("/v1/agents").is_none());
        assert!(asset("/dashboard/../Cargo.toml").is_none());
        let r = respond("/");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
        assert_eq!(respond("/nope").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_runs_nothing_inline() {
        for (name, text) in [("index.html", INDEX), ("style.css", STYLE_CSS)] {
            for needle in ["http:", "https:", "//cdn", "@import", "url("] {
                assert!(!text.contains(needle), "{name} mentions {needle}");
            }
        }
        // app.js names the SVG namespace and writes the agent's proxy URL; it fetches only
        // paths on this origin.
        for (i, _) in APP_JS.match_indices("://") {
            let i = APP_JS[..i]
                .rfind(|c: char| !c.is_ascii_alphanumeric())
                .map_or(0, |j| j + 1);
            let rest = &APP_JS[i..];
            assert!(
                rest.starts_with("http://www.w3.org/2000/svg") || rest.starts_with("http://${"),
                "app.js: {}",
                &rest[..rest.len().min(40)]
            );
        }
        assert!(!APP_JS.contains("fetch('http") && !APP_JS.contains("fetch(`http"));
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(!INDEX.contains("style="), "no inline style");
        let inline_handler = INDEX.match_indices(" on").any(|(i, _)| {
            let word: String = INDEX[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            INDEX[i + 3 + word.len()..].starts_with('=')
        });
        assert!(!inline_handler, "no inline event handlers");
    }
}

//! The console's page, style and script: embedded in the binary (no CDN, works offline).

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub(super) const INDEX: &str = include_str!("assets/index.html");
pub(super) const STYLE: &str = include_str!("assets/console.css");
pub(super) const SCRIPT: &str = include_str!("assets/console.js");

/// An asset with its type; the page may be cached by nobody (it shows live state). It loads
/// nothing from elsewhere and may not be framed (a framing page could steer clicks on its
/// actions).
pub(super) fn serve(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    /// The console stays small: every asset together under 60 KiB.
    #[test]
    fn the_assets_weigh_little() {
        let total = super::INDEX.len() + super::STYLE.len() + super::SCRIPT.len();
        assert!(total < 60 << 10, "{total} bytes of assets");
    }
}

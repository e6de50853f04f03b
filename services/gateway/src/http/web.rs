//! The web client (`web/` in the repository), built into the binary so a
//! gateway serves it at `/` with nothing else installed. Plain HTML, CSS and
//! ES modules: there is no build step. A strict Content-Security-Policy allows
//! only this origin's scripts, styles and connections.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::extract::Path;
use crate::error::ApiError;

/// (path, content type, bytes) of every file of the client.
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../../../web/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../../../web/style.css")),
    ("js/app.js", "text/javascript; charset=utf-8", include_str!("../../../../web/js/app.js")),
    ("js/api.js", "text/javascript; charset=utf-8", include_str!("../../../../web/js/api.js")),
    ("js/attachments.js", "text/javascript; charset=utf-8", include_str!("../../../../web/js/attachments.js")),
    ("js/connection.js", "text/javascript; charset=utf-8", include_str!("../../../../web/js/connection.js")),
];

/// Images may also be `blob:` URLs: attachments, fetched with the token
/// (which an `<img>` cannot send) and shown through object URLs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn serve(path: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(name, _, _)| *name == path) else {
        return ApiError::not_found("no such file").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

pub async fn index() -> Response {
    serve("index.html")
}

pub async fn file(Path(path): Path<String>) -> Response {
    serve(&path)
}

pub async fn script(Path(path): Path<String>) -> Response {
    serve(&format!("js/{path}"))
}

//! The operator's console: a small web page over the admin API (`GET /admin/ui`), served from
//! files embedded in the binary. It holds no data: the page asks the same admin endpoints as
//! `platform-gateway status`, with the token the operator types, so it can show nothing the API
//! does not. Its shell is served without the token (a browser's navigation cannot send a bearer
//! header) under a Content-Security-Policy that allows only its own script and style.

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page's Content-Security-Policy: its own files only, no inline script or style, no
/// forms submitted by the browser, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The shell: each path with its content type and body. Nothing here depends on the gateway's
/// state or config.
const SHELL: [(&str, &str, &str); 4] = [
    (
        "/admin/ui",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "/admin/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    (
        "/admin/ui/app.css",
        "text/css; charset=utf-8",
        include_str!("console/app.css"),
    ),
    (
        "/admin/ui/icon.svg",
        "image/svg+xml",
        include_str!("console/icon.svg"),
    ),
];

/// Whether `request` asks for a file of the shell: a `GET` of one of its exact paths. Only
/// these are served without the admin token.
pub(crate) fn is_shell(method: &Method, path: &str) -> bool {
    method == Method::GET && SHELL.iter().any(|(p, _, _)| *p == path)
}

/// The shell's routes, added to the admin router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SHELL
        .iter()
        .fold(Router::new(), |router, &(path, kind, body)| {
            router.route(path, get(move || async move { file(kind, body) }))
        })
}

fn file(kind: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, kind),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_an_exact_shell_path_is_the_shell() {
        assert!(is_shell(&Method::GET, "/admin/ui"));
        assert!(is_shell(&Method::GET, "/admin/ui/app.js"));
        for (method, path) in [
            (Method::POST, "/admin/ui"),
            (Method::HEAD, "/admin/ui"),
            (Method::GET, "/admin/ui/"),
            (Method::GET, "/admin/ui/../backends"),
            (Method::GET, "/admin/ui/app.js/x"),
            (Method::GET, "/admin/backends"),
            (Method::GET, "/admin/uix"),
        ] {
            assert!(!is_shell(&method, path), "{method} {path}");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files_and_nothing_inline() {
        let page = SHELL[0].2;
        for (path, _, _) in &SHELL[1..] {
            assert!(page.contains(path), "{path}");
        }
        for inline in [
            "<script>",
            "style=",
            "onclick",
            "onload",
            "javascript:",
            "<style",
        ] {
            assert!(!page.contains(inline), "{inline}");
        }
        let script = SHELL[1].2;
        assert!(
            !script.contains("innerHTML"),
            "the script renders with DOM APIs"
        );
        assert!(!script.contains("eval("));
        assert!(!script.contains("document.cookie"));
    }
}

//! Metrics over HTTP: the middleware that counts and times every request by its matched route,
//! and `GET /metrics` (admin listener), in the Prometheus text format or, when the scraper asks
//! for it, OpenMetrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::{self, Metrics};

/// Count and time a request. Installed with `Router::layer`, so it runs after routing and the
/// endpoint is the route's path (`/discover`), never the raw path a client sent.
pub async fn count_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(metrics::UNMATCHED, MatchedPath::as_str)
        .to_string();
    let method = metrics::method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record_request(
        &endpoint,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The exposition of `metrics`: OpenMetrics when the `Accept` header names it (Prometheus
/// asks for it first), the Prometheus text format 0.0.4 otherwise.
pub fn exposition(metrics: &Metrics, headers: &HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (kind, body) = if openmetrics {
        (metrics::OPENMETRICS_TEXT, metrics.encode_openmetrics())
    } else {
        (metrics::PROMETHEUS_TEXT, metrics.encode_prometheus())
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(kind))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(metrics: Arc<Metrics>) -> Router {
        let scrape = {
            let metrics = metrics.clone();
            move |headers: HeaderMap| async move { exposition(&metrics, &headers) }
        };
        Router::new()
            .route("/nodes/{id}", get(|| async { "node" }))
            .route("/metrics", get(scrape))
            .layer(axum::middleware::from_fn_with_state(metrics, count_request))
    }

    async fn call(app: &Router, method: &str, uri: &str, accept: Option<&str>) -> Response {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_not_by_raw_path() {
        let metrics = Arc::new(Metrics::new());
        let app = app(metrics.clone());
        for id in ["a", "b", "c"] {
            assert_eq!(
                call(&app, "GET", &format!("/nodes/{id}"), None)
                    .await
                    .status(),
                200
            );
        }
        for path in ["/x", "/y/z"] {
            assert_eq!(call(&app, "GET", path, None).await.status(), 404);
        }
        assert_eq!(call(&app, "BREW", "/nodes/a", None).await.status(), 405);
        let response = call(&app, "GET", "/metrics", None).await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            metrics::PROMETHEUS_TEXT
        );
        let text = text(response).await;
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(
                r#"platform_gateway_http_requests_total{endpoint="/nodes/{id}",method="GET",status="200"} 3"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"platform_gateway_http_requests_total{endpoint="unmatched",method="GET",status="404"} 2"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"platform_gateway_http_requests_total{endpoint="/nodes/{id}",method="other",status="405"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("/y/z"), "{text}");
    }

    #[tokio::test]
    async fn a_scraper_that_asks_for_openmetrics_gets_it() {
        let app = app(Arc::new(Metrics::new()));
        let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let response = call(&app, "GET", "/metrics", Some(accept)).await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            metrics::OPENMETRICS_TEXT
        );
        assert!(text(response).await.ends_with("# EOF\n"));
    }
}

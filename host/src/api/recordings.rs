//! `GET /admin/recordings/{name}`: a backend's recorded calls, oldest first, one JSON object a
//! line (`application/x-ndjson`), read from the ring a page at a time so that a large ring is
//! streamed rather than held in memory. `platform-gateway recordings export` saves it for
//! `platform-gateway replay`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::gateway::Gateway;
use crate::recording::Recordings;

/// The backend's recording as JSON lines; empty while a backend that records has recorded
/// nothing yet; 404 for a backend that records nothing and has no recording left.
pub async fn export(State(gateway): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    let records = gateway.current().is_some_and(|generation| {
        generation
            .config
            .backends
            .values()
            .any(|b| b.name.as_str() == name && b.record.is_some())
    });
    let none = || {
        if records {
            return ([(header::CONTENT_TYPE, "application/x-ndjson")], "").into_response();
        }
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("backend `{name}` has no recorded calls"),
        )
        .with_cause(
            "a backend's calls are recorded when its config has a `record` table \
             (`[backends.NAME.record] calls = N`)",
        )
        .into_response()
    };
    let recordings = match gateway.recordings().and_then(|lazy| lazy.existing()) {
        None => return none(),
        Some(Ok(recordings)) => recordings,
        Some(Err(message)) => {
            tracing::error!("recordings: {message}");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the recordings cannot be read; see the gateway log",
            )
            .into_response();
        }
    };
    match read(&recordings, &name, None).await {
        Ok(first) if first.is_empty() => none(),
        Ok(first) => {
            let after = first.last().map(|(seq, _)| *seq);
            let head = futures::stream::iter([Ok::<_, std::io::Error>(lines(first))]);
            let rest = futures::stream::unfold(
                (recordings, name, after),
                |(recordings, name, after)| async move {
                    let page = read(&recordings, &name, after).await;
                    match page {
                        Ok(page) if page.is_empty() => None,
                        Ok(page) => {
                            let after = page.last().map(|(seq, _)| *seq);
                            Some((Ok(lines(page)), (recordings, name, after)))
                        }
                        // The head is sent: cut the stream short (the client sees it end early).
                        Err(message) => Some((
                            Err(std::io::Error::other(message)),
                            (recordings, name, None),
                        )),
                    }
                },
            );
            use futures::StreamExt;
            (
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                Body::from_stream(head.chain(rest)),
            )
                .into_response()
        }
        Err(message) => {
            tracing::error!("recordings: {message}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the recordings cannot be read; see the gateway log",
            )
            .into_response()
        }
    }
}

/// A page of entries after `after`, read off the async runtime.
async fn read(
    recordings: &Arc<Recordings>,
    name: &str,
    after: Option<u64>,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let (recordings, name) = (recordings.clone(), name.to_string());
    tokio::task::spawn_blocking(move || recordings.page(&name, after))
        .await
        .map_err(|e| e.to_string())?
}

/// Entries as JSON lines.
fn lines(page: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, line) in page {
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

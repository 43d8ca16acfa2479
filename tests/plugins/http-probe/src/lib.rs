//! Test fixture, not shipped: every operation makes a request (the `method` setting, `GET` by
//! default, with the `body` setting as its body) of the `path` setting (default `/`) to the
//! `target` setting (`host:port`) over the `scheme` setting (`http`, the default, or `https`)
//! through `wasi:http/outgoing-handler`, reads the whole body, and fails with a report of what
//! happened, so that tests can see whether outbound HTTP was denied, reached its target, or was
//! cut short. With `effects = "all"` it first tries every other effect it can: state writes, a
//! delete and a compare-and-swap, 1 MiB of stdout and 300 log messages.

use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, settings,
};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// Every effect but HTTP, ignoring what the host answers.
fn every_effect() {
    use platform_gateway_sdk::{log, state};
    let _ = state::set("planned/a", b"1");
    let _ = state::set("planned/b", b"2");
    let _ = state::delete("seed");
    let _ = state::compare_and_swap("planned/c", None, Some(b"3"));
    let line = "y".repeat(1023);
    for _ in 0..1024 {
        println!("{line}");
    }
    for i in 0..300 {
        log::info(&format!("flood {i}"));
    }
}

fn fetch() -> String {
    if settings::text("effects").ok().flatten().as_deref() == Some("all") {
        every_effect();
    }
    let target = settings::text("target")
        .ok()
        .flatten()
        .unwrap_or_else(|| "127.0.0.1:9".to_string());
    let scheme = match settings::text("scheme").ok().flatten().as_deref() {
        Some("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    let request = OutgoingRequest::new(Fields::new());
    let method = match settings::text("method").ok().flatten().as_deref() {
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        _ => Method::Get,
    };
    let _ = request.set_method(&method);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(&target));
    let path = settings::text("path")
        .ok()
        .flatten()
        .unwrap_or_else(|| "/".to_string());
    let _ = request.set_path_with_query(Some(&path));
    let outgoing = request.body().ok();
    let response = match outgoing_handler::handle(request, None) {
        Ok(response) => response,
        Err(e) => return format!("http: refused at send: {e:?}"),
    };
    if let Some(outgoing) = outgoing {
        let body = settings::text("body").ok().flatten().unwrap_or_default();
        if let Ok(stream) = outgoing.write() {
            let _ = stream.blocking_write_and_flush(body.as_bytes());
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
    response.subscribe().block();
    let response = match response.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return format!("http: failed: {e:?}"),
        other => return format!("http: no response: {other:?}"),
    };
    let status = response.status();
    let Ok(body) = response.consume() else {
        return format!("http: status {status}, no body");
    };
    let Ok(stream) = body.stream() else {
        return format!("http: status {status}, no body stream");
    };
    let mut length = 0usize;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => length += chunk.len(),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return format!(
                    "http: status {status}, body failed after {length} bytes: {}",
                    e.to_debug_string()
                );
            }
        }
    }
    format!("http: status {status}, {length} bytes")
}

struct Probe;

impl Provider for Probe {
    fn discover() -> Result<Vec<Cluster>, Error> {
        Err(Error::Internal(fetch()))
    }

    fn provision(_: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        Err(Error::Internal(fetch()))
    }

    fn deprovision(_: DeprovisionRequest) -> Result<(), Error> {
        Err(Error::Internal(fetch()))
    }
}

export_provider!(Probe);

//! Test fixture, not shipped: every operation makes a `GET /` to the `target` setting
//! (`host:port`) through `wasi:http/outgoing-handler`, and fails with a report of what happened,
//! so that tests can see whether outbound HTTP was denied or reached its target.

use platform_sdk::{
    Cluster, DeprovisionRequest, Error, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, settings,
};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

fn fetch() -> String {
    let target = settings::get("target")
        .ok()
        .flatten()
        .unwrap_or_else(|| "127.0.0.1:9".to_string());
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(&target));
    let _ = request.set_path_with_query(Some("/"));
    let response = match outgoing_handler::handle(request, None) {
        Ok(response) => response,
        Err(e) => return format!("http: refused at send: {e:?}"),
    };
    response.subscribe().block();
    match response.get() {
        Some(Ok(Ok(response))) => format!("http: status {}", response.status()),
        Some(Ok(Err(e))) => format!("http: failed: {e:?}"),
        other => format!("http: no response: {other:?}"),
    }
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

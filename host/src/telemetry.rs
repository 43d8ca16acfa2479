//! Telemetry: logs and spans through `tracing`, on stderr so that stdout stays free for command
//! output, as text or as one JSON object per line; optionally, the spans exported over OTLP
//! (HTTP/protobuf) to an OpenTelemetry collector (`[telemetry] otlp_endpoint`).
//!
//! An `https://` collector is verified against the system's CA certificates, or against the
//! bundle that `otlp_tls.ca` names, and `otlp_tls.cert` and `key` present a client certificate
//! to a collector that asks for one; the TLS client is rustls over ring, as everywhere else in
//! the gateway.
//!
//! What is exported: the `request` span of every API request and the `plugin_call` spans inside
//! it, with the gateway's and the plugins' log lines at `info` and above as their events. A
//! request with a valid W3C `traceparent` header is exported as a child of the caller's span
//! ([`set_remote_parent`]).
//!
//! The config's `[telemetry]` section is parsed here too (`parse_section`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use serde::Deserialize;
use toml::Spanned;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config_file::{ConfigError, Source};

mod writer;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: `2026-11-28T10:00:00.000000Z  INFO target: message key=value`.
    #[default]
    Text,
    /// For log collectors: one JSON object per line, the event's fields at the top level.
    Json,
}

/// The `service.name` of exported spans unless `[telemetry] service_name` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "platform-gateway";

/// How long one export to the collector may take; a shutdown waits at most this long for the
/// last batch.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The config's `[telemetry]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// `log_format`: `None` when the file does not say (text, unless `--log-format` says).
    pub log_format: Option<LogFormat>,
    /// `otlp_endpoint`: the collector's OTLP/HTTP base URL (`http://host:4318`); spans go to
    /// its `/v1/traces`. `None`: no export.
    pub otlp_endpoint: Option<http::Uri>,
    /// `otlp_tls`: how to speak TLS to an `https://` endpoint.
    pub otlp_tls: OtlpTls,
    /// `service_name`: the exported spans' `service.name`.
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: None,
            otlp_endpoint: None,
            otlp_tls: OtlpTls::default(),
            service_name: DEFAULT_SERVICE_NAME.to_string(),
        }
    }
}

/// `[telemetry] otlp_tls`: the trust and identity of OTLP export to an `https://` collector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtlpTls {
    /// A PEM bundle of the CA certificates to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM, leaf first) and its private key (PEM), presented to
    /// a collector that asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl OtlpTls {
    /// The TLS client these settings describe, its files read and checked. Without a CA
    /// bundle it trusts the system's CA certificates, or, on a system that has none (a
    /// container image without a CA store), the Mozilla roots built into the gateway.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let certificates = |path: &PathBuf| {
            CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))
                .and_then(|certs| match certs.is_empty() {
                    true => Err(format!("{} holds no PEM certificate", path.display())),
                    false => Ok(certs),
                })
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => roots = crate::pem::ca_bundle(ca)?.roots,
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if roots.is_empty() {
                    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                // Only the file's name: its text is a secret.
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|_| format!("{} holds no readable PEM private key", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("the client certificate and key do not go together: {e}"))
            }
        }
    }
}

impl TelemetrySettings {
    /// Where spans are sent: the endpoint's path followed by `/v1/traces`, as the OTLP spec
    /// builds signal URLs from `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.otlp_endpoint.as_ref()?;
        let base = endpoint.to_string();
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

/// Check an `otlp_endpoint` value: an `http://` or `https://` URL with a host and no query.
pub fn parse_otlp_endpoint(value: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("`{value}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{value}` is not an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{value}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!(
            "`{value}` has a query; give the collector's base URL"
        ));
    }
    Ok(uri)
}

/// The `[telemetry]` section as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    log_format: Option<LogFormat>,
    otlp_endpoint: Option<Spanned<String>>,
    otlp_tls: Option<Spanned<RawOtlpTls>>,
    service_name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlpTls {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The `[telemetry]` section, validated.
pub(crate) fn parse_section(
    raw: RawTelemetry,
    source: &Source<'_>,
) -> Result<TelemetrySettings, ConfigError> {
    let otlp_endpoint = match raw.otlp_endpoint {
        Some(endpoint) => Some(
            parse_otlp_endpoint(endpoint.get_ref())
                .map_err(|e| source.invalid(endpoint.span(), "telemetry.otlp_endpoint", e))?,
        ),
        None => None,
    };
    let otlp_tls = match raw.otlp_tls {
        None => OtlpTls::default(),
        Some(tls) => {
            let span = tls.span();
            let invalid =
                |message: String| source.invalid(span.clone(), "telemetry.otlp_tls", message);
            if otlp_endpoint.as_ref().and_then(|e| e.scheme_str()) != Some("https") {
                return Err(invalid(
                    "applies to an https:// otlp_endpoint, which this config does not have".into(),
                ));
            }
            let tls = tls.into_inner();
            let identity = match (tls.cert, tls.key) {
                (Some(cert), Some(key)) => Some((source.path(cert), source.path(key))),
                (None, None) => None,
                _ => return Err(invalid("`cert` and `key` go together".into())),
            };
            let tls = OtlpTls {
                ca: tls.ca.map(|ca| source.path(ca)),
                identity,
            };
            // Read now, so that `check` and a reload find an unreadable file, not the start.
            tls.client_config().map_err(invalid)?;
            tls
        }
    };
    let service_name = match raw.service_name {
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(source.invalid(name.span(), "telemetry.service_name", "must not be empty"));
        }
        Some(name) => name.into_inner(),
        None => DEFAULT_SERVICE_NAME.to_string(),
    };
    Ok(TelemetrySettings {
        log_format: raw.log_format,
        otlp_endpoint,
        otlp_tls,
        service_name,
    })
}

/// The log filter `directives` (a level such as `debug`, or `RUST_LOG` syntax such as
/// `info,plugin=debug`), checked.
pub fn filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| format!("invalid log filter `{directives}`: {e}"))
}

/// What [`init`] installed: shut it down when the program ends, so that the last spans reach
/// the collector.
#[must_use = "call `shutdown` at the end to export the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Writes the last lines when dropped.
    _log_writer: writer::Guard,
}

/// The log writer, whose count of dropped lines the metrics read.
static LOG_WRITER: std::sync::OnceLock<writer::BatchWriter> = std::sync::OnceLock::new();

/// How many log lines the writer dropped since start because stderr did not keep up (0 before
/// [`init`]); `platform_gateway_log_lines_dropped`.
pub fn dropped_log_lines() -> u64 {
    LOG_WRITER.get().map_or(0, writer::BatchWriter::dropped)
}

impl Telemetry {
    /// Export the spans still buffered and stop exporting (waits at most about
    /// [`EXPORT_TIMEOUT`]). Call it outside async code, while the Tokio runtime that [`init`]
    /// ran in still runs: the exporter works on it.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!("exporting the last spans failed: {e}");
        }
    }
}

/// Install the global subscriber. Call once, from the binary.
///
/// `filter` is what to log: when `None`, `RUST_LOG`, else `info`. The log format is `format`
/// (the command line's) if given, else the config's `log_format`, else text. With an
/// `otlp_endpoint` in `settings`, spans are also exported; that needs to be called inside a
/// Tokio runtime (the exporter's batches run on it).
pub fn init(
    filter: Option<EnvFilter>,
    format: Option<LogFormat>,
    settings: Option<&TelemetrySettings>,
) -> anyhow::Result<Telemetry> {
    let filter = filter
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let format = format
        .or(settings.and_then(|s| s.log_format))
        .unwrap_or_default();
    let (provider, otel) = match settings {
        Some(settings) if settings.otlp_endpoint.is_some() => {
            let provider = tracer_provider(settings)?;
            let tracer = provider.tracer("platform-gateway");
            // Spans and events of the gateway and its plugins, whatever the log filter says:
            // the operator chose to export them.
            let exported = Targets::new()
                .with_target("platform_gateway", tracing::Level::INFO)
                .with_target("plugin", tracing::Level::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(exported);
            (Some(provider), Some(layer))
        }
        _ => (None, None),
    };
    // Lines are written in batches by a thread of their own, off the request path (`writer`).
    let (writer, guard) = writer::BatchWriter::new("log-writer", std::io::stderr());
    let _ = LOG_WRITER.set(writer.clone());
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    let logs = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(otel).with(logs).init();
    Ok(Telemetry {
        provider,
        _log_writer: guard,
    })
}

/// The OTLP/HTTP exporter behind a batch processor on the current Tokio runtime.
fn tracer_provider(settings: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let url = settings.traces_url().context("no otlp_endpoint")?;
    tokio::runtime::Handle::try_current()
        .context("OTLP export needs a Tokio runtime to run its batches on")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        // hyper's client (the `hyper-client` feature), with this timeout.
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT);
    let exporter = match settings.otlp_endpoint.as_ref().and_then(|e| e.scheme_str()) {
        Some("https") => {
            use opentelemetry_otlp::WithHttpConfig;
            let tls = settings
                .otlp_tls
                .client_config()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("setting up TLS for OTLP export to {url}"))?;
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .build();
            exporter.with_http_client(opentelemetry_http::hyper::HyperClient::new(
                connector,
                EXPORT_TIMEOUT,
                None,
            ))
        }
        _ => exporter,
    };
    let exporter = exporter
        .build()
        .with_context(|| format!("setting up OTLP export to {url}"))?;
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_max_export_timeout(EXPORT_TIMEOUT)
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// Make `span` (not yet entered) a child of the remote span that `headers`' W3C `traceparent`
/// names, when it is valid, for the exported trace. Nothing happens without OTLP export.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if context.span().span_context().is_valid() {
        // Fails only when no OTLP layer is installed: then there is nothing to do.
        let _ = span.set_parent(context);
    }
}

/// Request headers as the propagator reads them.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_endpoints_must_be_http_or_https_base_urls() {
        let ok = parse_otlp_endpoint("http://127.0.0.1:4318").unwrap();
        let settings = TelemetrySettings {
            otlp_endpoint: Some(ok),
            ..TelemetrySettings::default()
        };
        assert_eq!(
            settings.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let with_path = TelemetrySettings {
            otlp_endpoint: Some(parse_otlp_endpoint("http://collector:4318/otlp/").unwrap()),
            ..TelemetrySettings::default()
        };
        assert_eq!(
            with_path.traces_url().as_deref(),
            Some("http://collector:4318/otlp/v1/traces")
        );
        assert_eq!(
            parse_otlp_endpoint("https://collector.example:4318")
                .unwrap()
                .scheme_str(),
            Some("https")
        );
        for (bad, why) in [
            ("ftp://collector:4318", "not an http:// or https:// URL"),
            ("collector:4318", "not an http:// or https:// URL"),
            ("http://", "not a URL"),
            ("http://collector:4318/?x=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let e = parse_otlp_endpoint(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_remote_parent_is_read_from_a_valid_traceparent_only() {
        let extract = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", value.parse().unwrap());
            let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
            let span = context.span().span_context().clone();
            span.is_valid()
                .then(|| (span.trace_id().to_string(), span.span_id().to_string()))
        };
        assert_eq!(
            extract("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
                "00f067aa0ba902b7".to_string()
            ))
        );
        assert_eq!(
            extract("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(extract("garbage"), None);
    }
}

//! Write platform-gateway plugins in Rust.
//!
//! A plugin is a type that implements [`Provider`] and one call of [`export_provider!`]; build
//! it with `cargo build --release --target wasm32-wasip2` and point a backend of the gateway
//! config at the `.wasm` file. The plugin implements contract `replicante:platform@0.2.0`, whose
//! WIT ships inside this crate (`wit/`); the generated component-model bindings stay inside it
//! too: the types below are the contract, named for Rust.
//!
//! ```ignore
//! use platform_gateway_sdk::{export_provider, Cluster, Error, Provider};
//!
//! struct Hello;
//!
//! impl Provider for Hello {
//!     fn discover() -> Result<Vec<Cluster>, Error> {
//!         Ok(Vec::new())
//!     }
//! }
//!
//! export_provider!(Hello);
//! ```
//!
//! Every call runs in a fresh instance: keep what must outlive a call in [`state`], read the
//! operator's settings with [`settings::get`] (into your own `serde` type), log through [`log`],
//! and fail with the [`Error`] constructors ([`Error::not_found`], [`Error::unavailable`], ...).
//!
//! Built for any target but `wasm32`, the same plugin is a plain Rust library: its provider is
//! called as a type, and settings, state and logs come from a [`native::Host`] (in memory), so
//! `cargo test` runs a plugin's logic natively and the gateway's benchmark compares the very
//! same code with and without the sandbox.

#[doc(hidden)]
pub mod __private {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "wit",
            world: "replicante:platform/plugin",
            pub_export_macro: true,
            export_macro_name: "__export_plugin",
            generate_all,
        });
    }
    pub use bindings::exports::replicante::platform::provider::Guest;
}

use __private::bindings::replicante::platform::types;

pub use types::{
    Cluster, DeprovisionRequest, Node, ProviderError as Error, ProvisionRequest, ProvisionResponse,
    Unavailable,
};

impl Error {
    /// The request cannot be served as asked (HTTP 400).
    pub fn invalid_request(message: impl Into<String>) -> Error {
        Error::InvalidRequest(message.into())
    }

    /// No such node or cluster on this backend (HTTP 404).
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::NotFound(message.into())
    }

    /// The request conflicts with the current state (HTTP 409).
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::Conflict(message.into())
    }

    /// This provider does not do the operation at all (HTTP 501).
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::Unsupported(message.into())
    }

    /// Not now, maybe later (HTTP 503): no capacity, an API down.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::Unavailable(Unavailable {
            message: message.into(),
            retry_after_seconds: None,
        })
    }

    /// Not now; try again in `seconds` (HTTP 503 with that `Retry-After`).
    pub fn unavailable_for(message: impl Into<String>, seconds: u32) -> Error {
        Error::Unavailable(Unavailable {
            message: message.into(),
            retry_after_seconds: Some(seconds),
        })
    }

    /// Anything else that went wrong (HTTP 500).
    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal(message.into())
    }
}

/// A JSON object, as the attributes of a provision request.
pub type Attributes = serde_json::Map<String, serde_json::Value>;

/// The three operations of a Replicante Platform.
///
/// The gateway has validated the request before a method is called: IDs are non-empty, the node
/// group exists, `count` is at least 1, the store version is the effective one for the group.
pub trait Provider {
    /// Every cluster this backend has nodes for, with every node whatever its health.
    fn discover() -> Result<Vec<Cluster>, Error>;

    /// Start creating up to `request.count` nodes. Return how many, with their IDs if known.
    /// `request.request_id` is the same on every retry of one request: pass it on as an
    /// idempotency key where the API takes one.
    ///
    /// The default is `unsupported`: a backend that only reports existing clusters need not
    /// provision.
    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        let _ = request;
        Err(Error::unsupported("this backend does not provision nodes"))
    }

    /// Terminate a node. It must not be replaced and must leave discovery once gone.
    ///
    /// The default is `unsupported`: a backend that only reports existing clusters need not
    /// deprovision.
    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        let _ = request;
        Err(Error::unsupported(
            "this backend does not deprovision nodes",
        ))
    }
}

/// Export a [`Provider`] as the plugin's implementation of the `provider` interface.
///
/// Call it once, at the top level of the plugin crate (a `cdylib`).
#[macro_export]
macro_rules! export_provider {
    ($provider:ty) => {
        const _: () = {
            struct __PlatformSdkExport;

            impl $crate::__private::Guest for __PlatformSdkExport {
                fn discover() -> ::core::result::Result<
                    ::std::vec::Vec<$crate::Cluster>,
                    $crate::Error,
                > {
                    <$provider as $crate::Provider>::discover()
                }

                fn provision(
                    request: $crate::ProvisionRequest,
                ) -> ::core::result::Result<$crate::ProvisionResponse, $crate::Error> {
                    <$provider as $crate::Provider>::provision(request)
                }

                fn deprovision(
                    request: $crate::DeprovisionRequest,
                ) -> ::core::result::Result<(), $crate::Error> {
                    <$provider as $crate::Provider>::deprovision(request)
                }
            }

            // Natively (tests, the benchmark's baseline) the provider is called as a plain type.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::bindings::__export_plugin!(__PlatformSdkExport with_types_in $crate::__private::bindings);
        };
    };
}

/// The candidate for a request's store and effective version: the first made for that exact
/// version, else the first for the store that names no version. For plugins that keep launch or
/// node templates in their settings; `key` gives a candidate's store and optional version.
pub fn select_by_store<T>(
    request: &ProvisionRequest,
    candidates: Vec<T>,
    key: impl Fn(&T) -> (&str, Option<&str>),
) -> Option<T> {
    let mut fallback = None;
    for candidate in candidates {
        let (store, version) = key(&candidate);
        if store != request.store {
            continue;
        }
        match version {
            Some(v) if v == request.store_version => return Some(candidate),
            None if fallback.is_none() => fallback = Some(candidate),
            _ => {}
        }
    }
    fallback
}

impl ProvisionRequest {
    /// The merged attributes (cluster's, with the group's on top) as a JSON object.
    pub fn attributes(&self) -> Result<Attributes, Error> {
        serde_json::from_str(&self.attributes)
            .map_err(|e| Error::internal(format!("the gateway sent invalid attributes: {e}")))
    }
}

/// The backend's settings, from its `settings` table in the gateway config.
///
/// The plugin reads the whole table as one JSON object: [`settings::get`] decodes it into your
/// own `serde` type (a missing or mistyped field is an error naming it); [`settings::value`] and
/// [`settings::text`] read one key.
pub mod settings {
    use super::Error;
    use serde::de::DeserializeOwned;

    /// The whole settings table as JSON text.
    fn raw() -> Result<String, Error> {
        #[cfg(target_arch = "wasm32")]
        return Ok(crate::__private::bindings::replicante::platform::settings::get());
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::with(|host| Ok(host.settings_json()))
    }

    fn object() -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        serde_json::from_str(&raw()?)
            .map_err(|e| Error::internal(format!("the gateway sent invalid settings: {e}")))
    }

    /// The settings decoded into `T`.
    ///
    /// ```ignore
    /// #[derive(serde::Deserialize)]
    /// struct Settings { machines: Vec<Machine>, #[serde(default)] zone: Option<String> }
    /// let settings: Settings = platform_gateway_sdk::settings::get()?;
    /// ```
    pub fn get<T: DeserializeOwned>() -> Result<T, Error> {
        serde_json::from_str(&raw()?)
            .map_err(|e| Error::internal(format!("the backend's settings are invalid: {e}")))
    }

    /// The setting `key` decoded into `T`, if the operator set it.
    ///
    /// The other settings are only scanned, not decoded, and `key`'s is decoded straight into
    /// `T`: a fresh instance reads its settings on every call, and building a JSON tree of the
    /// whole table first was most of a simple plugin's work.
    pub fn value<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        let raw = raw()?;
        let object: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
            serde_json::from_str(&raw)
                .map_err(|e| Error::internal(format!("the gateway sent invalid settings: {e}")))?;
        match object.get(key) {
            None => Ok(None),
            Some(value) => serde_json::from_str(value.get())
                .map(Some)
                .map_err(|e| Error::internal(format!("setting `{key}` is invalid: {e}"))),
        }
    }

    /// Like [`value`], but a missing setting is an error naming it.
    pub fn require<T: DeserializeOwned>(key: &str) -> Result<T, Error> {
        value(key)?.ok_or_else(|| Error::internal(format!("setting `{key}` is missing")))
    }

    /// The setting `key` as text: a string as is, any other value as its JSON encoding.
    pub fn text(key: &str) -> Result<Option<String>, Error> {
        Ok(object()?.remove(key).map(|value| match value {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        }))
    }
}

/// The backend's private, durable key-value state.
///
/// Writes are durable when the call returns. Use [`state::compare_and_swap`] (or
/// [`state::update`]) for anything that concurrent calls of the same backend, or several
/// gateway replicas, may race on. A store that cannot answer, or a write over the backend's
/// write rate, is [`Error::unavailable`]; a key or value over the limits (1 KiB, 1 MiB), or a
/// write over the backend's state quotas (keys, bytes, value size), is [`Error::internal`].
pub mod state {
    use super::Error;

    #[cfg(target_arch = "wasm32")]
    use crate::__private::bindings::replicante::platform::state as host;

    #[cfg(target_arch = "wasm32")]
    fn convert(error: host::StateError) -> Error {
        match error {
            host::StateError::Unavailable(message) => {
                Error::unavailable(format!("state store: {message}"))
            }
            host::StateError::TooLarge(message) => {
                Error::internal(format!("state store: {message}"))
            }
        }
    }

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        #[cfg(target_arch = "wasm32")]
        return host::get(key).map_err(convert);
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::with(|host| {
            host.before("get", key);
            host.state_get(key)
        })
    }

    /// Store `value` under `key`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        #[cfg(target_arch = "wasm32")]
        return host::set(key, value).map_err(convert);
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::with(|host| {
            host.before("set", key);
            host.state_swap(key, None, Some(value), true).map(|_| ())
        })
    }

    /// Remove `key`; removing a missing key is not an error.
    pub fn delete(key: &str) -> Result<(), Error> {
        #[cfg(target_arch = "wasm32")]
        return host::delete(key).map_err(convert);
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::with(|host| {
            host.before("delete", key);
            host.state_swap(key, None, None, true).map(|_| ())
        })
    }

    /// Replace the value under `key` with `new` if it is currently `expected` (`None`: absent).
    /// `new = None` deletes the key. Returns whether the swap happened.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        #[cfg(target_arch = "wasm32")]
        return host::compare_and_swap(key, expected, new).map_err(convert);
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::with(|host| {
            host.before("compare-and-swap", key);
            host.state_swap(key, expected, new, false)
        })
    }

    /// Read `key`, compute its new value with `f` (`None` deletes it, an error gives up), and
    /// write it if nobody changed the key meanwhile, retrying up to `attempts` times. Returns
    /// the value written; when every attempt lost a race, [`Error::conflict`].
    pub fn update(
        key: &str,
        attempts: usize,
        mut f: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, Error>,
    ) -> Result<Option<Vec<u8>>, Error> {
        for _ in 0..attempts.max(1) {
            let current = get(key)?;
            let new = f(current.as_deref())?;
            if compare_and_swap(key, current.as_deref(), new.as_deref())? {
                return Ok(new);
            }
        }
        Err(Error::conflict(format!(
            "state key `{key}` kept changing under {attempts} attempts"
        )))
    }

    /// One page of at most `limit` (at most 1,000; 0 means 1,000) keys that start with `prefix`
    /// and sort after `start_after`, and where the next page starts (`None` on the last).
    pub fn list_keys_page(
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), Error> {
        #[cfg(target_arch = "wasm32")]
        return host::list_keys(prefix, start_after, limit)
            .map(|page| (page.keys, page.next))
            .map_err(convert);
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::with(|host| {
            host.before("list-keys", prefix);
            host.state_page(prefix, start_after, limit)
        })
    }

    /// Every key that starts with `prefix`, in ascending order (read a page at a time).
    pub fn list_keys(prefix: &str) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = list_keys_page(prefix, after.as_deref(), 0)?;
            keys.extend(page);
            match next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }
}

/// Log into the gateway's log; each message is tagged with the backend's name and the
/// request's trace.
pub mod log {
    #[cfg(target_arch = "wasm32")]
    use crate::__private::bindings::replicante::platform::log::log;

    pub use crate::__private::bindings::replicante::platform::log::Level;

    /// A message at `level`.
    pub fn at(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::log(level, message);
    }

    /// A message useful when debugging the plugin.
    pub fn debug(message: &str) {
        at(Level::Debug, message);
    }

    /// A message for someone monitoring the platform.
    pub fn info(message: &str) {
        at(Level::Info, message);
    }

    /// A hazardous situation.
    pub fn warn(message: &str) {
        at(Level::Warn, message);
    }

    /// A serious error.
    pub fn error(message: &str) {
        at(Level::Error, message);
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub mod native;

/// Outbound HTTP (feature `http`), for backends whose config grants it: a blocking client over
/// `wasi:http/outgoing-handler`. A request outside the backend's allowlist fails with
/// [`Error::Internal`] saying it was denied; every request ends by the call's deadline.
#[cfg(feature = "http")]
pub mod http {
    use super::Error;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    /// A response: status, headers and the whole body.
    pub struct Response {
        /// The HTTP status.
        pub status: u16,
        /// The headers, names in lower case.
        pub headers: Vec<(String, String)>,
        /// The body.
        pub body: Vec<u8>,
    }

    /// Percent-encode everything but RFC 3986's unreserved characters (for query strings and
    /// form bodies, and what AWS signatures expect).
    pub fn percent_encode(value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        for byte in value.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(byte as char)
                }
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    }

    fn failed(what: &str, e: impl std::fmt::Debug) -> Error {
        Error::unavailable(format!("HTTP {what}: {e:?}"))
    }

    fn denied_or(e: ErrorCode, url: &str) -> Error {
        match e {
            ErrorCode::HttpRequestDenied => {
                let origin = url.split('/').take(3).collect::<Vec<_>>().join("/");
                Error::Internal(format!(
                    "HTTP request to {origin} denied: not in this backend's http grant"
                ))
            }
            // A configuration problem, like the one above, not an outage to retry.
            ErrorCode::DestinationIpProhibited => {
                let origin = url.split('/').take(3).collect::<Vec<_>>().join("/");
                Error::Internal(format!(
                    "HTTP request to {origin} denied: it resolves to an address (loopback, \
                     link-local, ...) that this backend's http grant does not name"
                ))
            }
            e => failed("request", e),
        }
    }

    /// `scheme://authority/path?query#fragment` as scheme, authority and path with query (`/`
    /// when the URL has no path, so `https://host?x=1` asks for `/?x=1`); the fragment is
    /// dropped, since it is never sent.
    fn split_url(url: &str) -> Result<(&str, &str, String), Error> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::Internal(format!("not an absolute URL: {url}")))?;
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok((scheme, authority, path))
    }

    /// Send `method url` with `headers` and `body`, and read the whole response.
    pub fn send(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Error> {
        let (scheme, authority, path) = split_url(url)?;
        let fields = Fields::new();
        for (name, value) in headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| Error::Internal(format!("header `{name}`: {e:?}")))?;
        }
        let request = OutgoingRequest::new(fields);
        let method = match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_string()),
        };
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        };
        let bad = |what: &str| Error::Internal(format!("invalid {what} in {url}"));
        request.set_method(&method).map_err(|_| bad("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|_| bad("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|_| bad("authority"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|_| bad("path"))?;

        let outgoing = request.body().map_err(|e| failed("body", e))?;
        let response = outgoing_handler::handle(request, None).map_err(|e| denied_or(e, url))?;
        // A request the host refuses closes the body stream: the response says why, so write
        // what can be written and look at the response before blaming the body.
        let written = (|| {
            let stream = outgoing.write().map_err(|e| failed("body", e))?;
            for chunk in body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| failed("body", e))?;
            }
            Ok::<(), Error>(())
        })();
        let finished = OutgoingBody::finish(outgoing, None).map_err(|e| failed("body", e));

        response.subscribe().block();
        let response = match response.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(denied_or(e, url)),
            other => return Err(failed("response", other.map(|_| ()))),
        };
        written?;
        finished?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let incoming = response.consume().map_err(|e| failed("response body", e))?;
        let stream = incoming.stream().map_err(|e| failed("response body", e))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend(chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(failed("response body", e.to_debug_string()));
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::split_url;

        fn split(url: &str) -> (String, String, String) {
            let (scheme, authority, path) = split_url(url).unwrap();
            (scheme.into(), authority.into(), path)
        }

        fn parts(scheme: &str, authority: &str, path: &str) -> (String, String, String) {
            (scheme.into(), authority.into(), path.into())
        }

        #[test]
        fn a_query_without_a_path_stays_out_of_the_authority() {
            assert_eq!(
                split("https://ec2.amazonaws.com?Action=DescribeInstances&Version=2016-11-15"),
                parts(
                    "https",
                    "ec2.amazonaws.com",
                    "/?Action=DescribeInstances&Version=2016-11-15"
                )
            );
            assert_eq!(
                split("http://127.0.0.1:8888?a=1"),
                parts("http", "127.0.0.1:8888", "/?a=1")
            );
        }

        #[test]
        fn paths_queries_and_fragments() {
            assert_eq!(split("http://h"), parts("http", "h", "/"));
            assert_eq!(split("http://h/"), parts("http", "h", "/"));
            assert_eq!(
                split("http://h:1/v4/libpod/info?x=/y"),
                parts("http", "h:1", "/v4/libpod/info?x=/y")
            );
            assert_eq!(split("http://h/p#frag"), parts("http", "h", "/p"));
            assert_eq!(split("http://h#frag?no"), parts("http", "h", "/"));
            assert!(split_url("h/p").is_err());
        }
    }
}

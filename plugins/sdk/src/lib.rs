//! Write platform-gateway plugins in Rust.
//!
//! A plugin is a type that implements [`Provider`] and one call of [`export_provider!`]; build
//! it with `cargo build --release --target wasm32-wasip2` and point a backend of the gateway
//! config at the `.wasm` file. The generated component-model bindings stay inside this crate:
//! the types below are the contract (`wit/` in the gateway repository), named for Rust.
//!
//! ```ignore
//! use platform_sdk::{export_provider, Cluster, Error, Provider};
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
//! operator's settings with [`settings`], and log through [`log`].

#[doc(hidden)]
pub mod __private {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "replicante:platform/plugin",
            pub_export_macro: true,
            export_macro_name: "__export_plugin",
            generate_all,
        });
    }
    pub use bindings::exports::replicante::platform::provider::Guest;
}

use __private::bindings::replicante::platform::types;

pub use types::{Cluster, DeprovisionRequest, Error, Node, ProvisionRequest, ProvisionResponse};

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
    ///
    /// The default refuses: a backend that only reports existing clusters need not provision.
    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        let _ = request;
        Err(Error::InvalidRequest(
            "this backend does not provision nodes".to_string(),
        ))
    }

    /// Terminate a node. It must not be replaced and must leave discovery once gone.
    ///
    /// The default refuses: a backend that only reports existing clusters need not deprovision.
    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        let _ = request;
        Err(Error::InvalidRequest(
            "this backend does not deprovision nodes".to_string(),
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

            $crate::__private::bindings::__export_plugin!(__PlatformSdkExport with_types_in $crate::__private::bindings);
        };
    };
}

impl ProvisionRequest {
    /// The merged attributes (cluster's, with the group's on top) as a JSON object.
    pub fn attributes(&self) -> Result<Attributes, Error> {
        serde_json::from_str(&self.attributes)
            .map_err(|e| Error::Internal(format!("the gateway sent invalid attributes: {e}")))
    }
}

/// The backend's settings, from its `settings` table in the gateway config.
///
/// A string setting is read as is; any other TOML value (number, array, table) arrives as its
/// JSON encoding, which [`settings::json`] decodes into your own `serde` type.
pub mod settings {
    use super::Error;
    use crate::__private::bindings::wasi::config::store;

    /// The setting `key`, if the operator set it.
    pub fn get(key: &str) -> Result<Option<String>, Error> {
        store::get(key).map_err(|e| Error::Internal(format!("reading setting `{key}`: {e}")))
    }

    /// The setting `key` decoded from JSON into `T`, if the operator set it.
    pub fn json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        match get(key)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Internal(format!("setting `{key}` is invalid: {e}"))),
        }
    }

    /// Like [`json`], but a missing setting is an error naming it.
    pub fn require_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<T, Error> {
        json(key)?.ok_or_else(|| Error::Internal(format!("setting `{key}` is missing")))
    }
}

/// The backend's private, durable key-value state.
///
/// Writes are durable when the call returns. Use [`state::compare_and_swap`] for anything that
/// concurrent calls of the same backend may race on.
pub mod state {
    use super::Error;
    use crate::__private::bindings::replicante::platform::state as host;

    fn convert(error: host::Error) -> Error {
        match error {
            host::Error::Unavailable(message) => {
                Error::Unavailable(format!("state store: {message}"))
            }
            host::Error::TooLarge(message) => Error::Internal(format!("state store: {message}")),
        }
    }

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        host::get(key).map_err(convert)
    }

    /// Store `value` under `key`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        host::set(key, value).map_err(convert)
    }

    /// Remove `key`; removing a missing key is not an error.
    pub fn delete(key: &str) -> Result<(), Error> {
        host::delete(key).map_err(convert)
    }

    /// Replace the value under `key` with `new` if it is currently `expected` (`None`: absent).
    /// `new = None` deletes the key. Returns whether the swap happened.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        host::compare_and_swap(key, expected, new).map_err(convert)
    }

    /// The keys that start with `prefix`, in ascending order.
    pub fn list_keys(prefix: &str) -> Result<Vec<String>, Error> {
        host::list_keys(prefix).map_err(convert)
    }
}

/// Log into the gateway's log; each message is tagged with the backend's name.
pub mod log {
    use crate::__private::bindings::wasi::logging::logging::{Level, log};

    const CONTEXT: &str = "plugin";

    /// A message useful when debugging the plugin.
    pub fn debug(message: &str) {
        log(Level::Debug, CONTEXT, message);
    }

    /// A message for someone monitoring the platform.
    pub fn info(message: &str) {
        log(Level::Info, CONTEXT, message);
    }

    /// A hazardous situation.
    pub fn warn(message: &str) {
        log(Level::Warn, CONTEXT, message);
    }

    /// A serious error.
    pub fn error(message: &str) {
        log(Level::Error, CONTEXT, message);
    }
}

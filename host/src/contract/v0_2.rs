//! Contract 0.2.0 (`wit/v0.2`): its records are the gateway's model, field for field.
//!
//! Its imports are its own `settings` (the whole table as one JSON object), `log` and `state`,
//! whose `list-keys` answers a page at a time; the WASI interfaces its world lists are
//! wasmtime-wasi's.

use wasmtime::component::{HasSelf, Linker};

use super::Capabilities;
use crate::capability::logging::Logging;
use crate::capability::settings::Settings;
use crate::capability::state::{Failure, PluginState};
use crate::model;

/// The host side of the world, generated from its WIT.
pub(super) mod wit {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "replicante:platform/plugin",
        exports: { default: async },
        imports: { "replicante:platform/state": async },
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
        },
    });
}

pub(super) use wit::PluginPre;
use wit::replicante::platform::{log, settings, state, types};

/// Its version number.
pub(super) const VERSION: &str = "0.2.0";

/// Link the imports its world lists besides WASI: settings, log, state.
pub(super) fn add_to_linker<T: Capabilities>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    settings::add_to_linker::<T, HasSelf<Settings>>(linker, T::settings)?;
    log::add_to_linker::<T, HasSelf<Logging>>(linker, T::logging)?;
    state::add_to_linker::<T, HasSelf<PluginState>>(linker, T::state)
}

impl settings::Host for Settings {
    fn get(&mut self) -> String {
        self.json().to_string()
    }
}

impl log::Host for Logging {
    fn log(&mut self, level: log::Level, message: String) {
        use log::Level as L;
        let level = match level {
            L::Trace => tracing::Level::TRACE,
            L::Debug => tracing::Level::DEBUG,
            L::Info => tracing::Level::INFO,
            L::Warn => tracing::Level::WARN,
            L::Error => tracing::Level::ERROR,
        };
        self.emit(level, None, &message);
    }
}

impl From<Failure> for state::StateError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(m) => Self::Unavailable(m),
            Failure::TooLarge(m) => Self::TooLarge(m),
        }
    }
}

impl state::Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, state::StateError> {
        Ok(PluginState::get(self, key).await?)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        Ok(PluginState::set(self, key, value).await?)
    }

    async fn delete(&mut self, key: String) -> Result<(), state::StateError> {
        Ok(PluginState::delete(self, key).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, state::StateError> {
        Ok(PluginState::compare_and_swap(self, key, expected, new).await?)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<state::KeyPage, state::StateError> {
        let (keys, next) = self.page(prefix, start_after, limit).await?;
        Ok(state::KeyPage { keys, next })
    }
}

/// The request as 0.2 has it.
pub(super) fn provision_request(request: &model::ProvisionRequest) -> types::ProvisionRequest {
    types::ProvisionRequest {
        request_id: request.request_id.clone(),
        cluster_id: request.cluster_id.clone(),
        store: request.store.clone(),
        store_version: request.store_version.clone(),
        node_group: request.node_group.clone(),
        node_class: request.node_class.clone(),
        desired_count: request.desired_count,
        count: request.count,
        attributes: request.attributes.clone(),
    }
}

/// The request as 0.2 has it.
pub(super) fn deprovision_request(
    request: &model::DeprovisionRequest,
) -> types::DeprovisionRequest {
    types::DeprovisionRequest {
        cluster_id: request.cluster_id.clone(),
        node_id: request.node_id.clone(),
    }
}

/// A 0.2 provision answer.
pub(super) fn provision_response(response: types::ProvisionResponse) -> model::ProvisionResponse {
    model::ProvisionResponse {
        count: response.count,
        node_ids: response.node_ids,
    }
}

/// A 0.2 cluster.
pub(super) fn cluster(cluster: types::Cluster) -> model::Cluster {
    model::Cluster {
        cluster_id: cluster.cluster_id,
        nodes: cluster
            .nodes
            .into_iter()
            .map(|node| model::Node {
                node_id: node.node_id,
                agent_address: node.agent_address,
                node_class: node.node_class,
                node_group: node.node_group,
            })
            .collect(),
    }
}

/// A 0.2 error.
pub(super) fn error(error: types::ProviderError) -> model::ProviderError {
    match error {
        types::ProviderError::InvalidRequest(m) => model::ProviderError::InvalidRequest(m),
        types::ProviderError::NotFound(m) => model::ProviderError::NotFound(m),
        types::ProviderError::Conflict(m) => model::ProviderError::Conflict(m),
        types::ProviderError::Unsupported(m) => model::ProviderError::Unsupported(m),
        types::ProviderError::Unavailable(u) => model::ProviderError::Unavailable {
            message: u.message,
            retry_after: u.retry_after_seconds,
        },
        types::ProviderError::Internal(m) => model::ProviderError::Internal(m),
    }
}

//! Contract 0.1.0 (`wit/v0.1`), frozen: plugins built against it keep loading.
//!
//! Its imports are standard interfaces where one fits (`wasi:config/store` for settings, one
//! entry per top-level key; `wasi:logging/logging`) and its own `state`, whose `list-keys` has no
//! pages. Its records have no request ID, an empty string for an unknown node class, no
//! `unsupported` case and no retry hint.

use wasmtime::component::{HasSelf, Linker};

use super::Capabilities;
use crate::capability::logging::Logging;
use crate::capability::state::{Failure, PluginState};
use crate::model;

/// The host side of the world, generated from its WIT.
pub(super) mod wit {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "replicante:platform/plugin",
        exports: { default: async },
        imports: { "replicante:platform/state": async },
    });
}

pub(super) use wit::PluginPre;
use wit::replicante::platform::{state, types};
use wit::wasi::logging::logging;

/// Its version number.
pub(super) const VERSION: &str = "0.1.0";

/// Link the imports its world lists besides WASI: settings, logging, state.
pub(super) fn add_to_linker<T: Capabilities>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, |s: &mut T| s.settings().view())?;
    logging::add_to_linker::<T, HasSelf<Logging>>(linker, T::logging)?;
    state::add_to_linker::<T, HasSelf<PluginState>>(linker, T::state)
}

impl From<Failure> for state::Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(m) => Self::Unavailable(m),
            Failure::TooLarge(m) => Self::TooLarge(m),
        }
    }
}

impl state::Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, state::Error> {
        Ok(PluginState::get(self, key).await?)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), state::Error> {
        Ok(PluginState::set(self, key, value).await?)
    }

    async fn delete(&mut self, key: String) -> Result<(), state::Error> {
        Ok(PluginState::delete(self, key).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, state::Error> {
        Ok(PluginState::compare_and_swap(self, key, expected, new).await?)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, state::Error> {
        Ok(self.all_keys(prefix).await?)
    }
}

impl logging::Host for Logging {
    fn log(&mut self, level: logging::Level, context: String, message: String) {
        use logging::Level as L;
        let level = match level {
            L::Trace => tracing::Level::TRACE,
            L::Debug => tracing::Level::DEBUG,
            L::Info => tracing::Level::INFO,
            L::Warn => tracing::Level::WARN,
            L::Error | L::Critical => tracing::Level::ERROR,
        };
        self.emit(level, Some(&context), &message);
    }
}

/// The request as 0.1 has it (without the request ID).
pub(super) fn provision_request(request: &model::ProvisionRequest) -> types::ProvisionRequest {
    types::ProvisionRequest {
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

/// The request as 0.1 has it.
pub(super) fn deprovision_request(
    request: &model::DeprovisionRequest,
) -> types::DeprovisionRequest {
    types::DeprovisionRequest {
        cluster_id: request.cluster_id.clone(),
        node_id: request.node_id.clone(),
    }
}

/// A 0.1 provision answer.
pub(super) fn provision_response(response: types::ProvisionResponse) -> model::ProvisionResponse {
    model::ProvisionResponse {
        count: response.count,
        node_ids: response.node_ids,
    }
}

/// A 0.1 cluster; an empty node class is an unknown one.
pub(super) fn cluster(cluster: types::Cluster) -> model::Cluster {
    model::Cluster {
        cluster_id: cluster.cluster_id,
        nodes: cluster
            .nodes
            .into_iter()
            .map(|node| model::Node {
                node_id: node.node_id,
                agent_address: node.agent_address,
                node_class: Some(node.node_class).filter(|c| !c.is_empty()),
                node_group: node.node_group,
            })
            .collect(),
    }
}

/// A 0.1 error.
pub(super) fn error(error: types::Error) -> model::ProviderError {
    match error {
        types::Error::InvalidRequest(m) => model::ProviderError::InvalidRequest(m),
        types::Error::NotFound(m) => model::ProviderError::NotFound(m),
        types::Error::Conflict(m) => model::ProviderError::Conflict(m),
        types::Error::Unavailable(message) => model::ProviderError::Unavailable {
            message,
            retry_after: None,
        },
        types::Error::Internal(m) => model::ProviderError::Internal(m),
    }
}

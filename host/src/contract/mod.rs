//! The released versions of the plugin contract (`replicante:platform`, under `wit/`), one module
//! each, and the one surface the rest of the host sees of them: which version a component
//! implements ([`Contract`]), the linkers that give each version exactly the imports its world
//! lists, and a loaded component of any version whose operations take and return the host's own
//! model ([`crate::model`]).
//!
//! A version's module owns its bindings (generated from `wit/v0.x`), its linker setup, the
//! implementations of its imports, which put the version-free cores of [`crate::capability`] in
//! its words, and the conversion of its records to and from the model. It offers the same few
//! items as the others (`VERSION`, `PluginPre`, `add_to_linker`, and the conversions
//! `provision_request`, `deprovision_request`, `provision_response`, `cluster`, `error`), which
//! the `contracts!` list below dispatches to. A released version is frozen with its WIT, so
//! plugins built against it keep loading.
//!
//! Adding contract 0.3: write `v0_3.rs` (start from a copy of `v0_2.rs`), declare it beside the
//! others (`mod v0_3;`) and add `V0_3 => v0_3,` to the `contracts! { ... }` invocation, the one
//! list of the versions served. (The declaration cannot be part of that list: rustfmt does not
//! see modules declared inside a macro.)
//!
//! Exports are called as futures, so that a deadline can stop a call that waits in a host call;
//! the state store's operations are futures too (etcd answers over the network), so the same
//! deadline bounds them. The other imports answer synchronously. Everything here is generic over
//! the call's store data ([`Capabilities`]), so this module needs nothing of the runtime that
//! uses it.

mod v0_1;
mod v0_2;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

use crate::capability::{logging::Logging, settings::Settings, state::PluginState};
use crate::model;

/// What a call's store holds for the contract's imports: WASI and `wasi:http` (through their own
/// views) and the gateway's capabilities, whose version-free cores every version's imports call.
pub trait Capabilities: WasiView + WasiHttpView + Send + 'static {
    /// The backend's settings.
    fn settings(&mut self) -> &mut Settings;
    /// The call's logging.
    fn logging(&mut self) -> &mut Logging;
    /// The call's state, in the backend's namespace.
    fn state(&mut self) -> &mut PluginState;
}

/// One operation with its input, whatever the contract.
pub(crate) enum Operation {
    Discover,
    Provision(model::ProvisionRequest),
    Deprovision(model::DeprovisionRequest),
}

impl Operation {
    /// Its name, in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Discover => "discover",
            Operation::Provision(_) => "provision",
            Operation::Deprovision(_) => "deprovision",
        }
    }
}

/// What an operation answered, in the gateway's model.
pub(crate) enum Answer {
    Clusters(Vec<model::Cluster>),
    Provisioned(model::ProvisionResponse),
    Deprovisioned,
}

/// The plugin's answer or its error, or the trap.
pub(crate) type Outcome = wasmtime::Result<Result<Answer, model::ProviderError>>;

impl Contract {
    /// The contract a component implements, by the `provider` interface it exports.
    pub(crate) fn of(component: &Component, engine: &Engine) -> Result<Contract, String> {
        const PROVIDER: &str = "replicante:platform/provider@";
        let ty = component.component_type();
        let exported: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let Some(version) = exported.iter().find_map(|name| name.strip_prefix(PROVIDER)) else {
            return Err(format!(
                "it exports no `replicante:platform/provider` interface (it exports: {}); a \
                 plugin implements the `plugin` world of wit/ in the gateway's repository",
                if exported.is_empty() {
                    "nothing".to_string()
                } else {
                    exported.join(", ")
                }
            ));
        };
        CONTRACTS
            .iter()
            .copied()
            .find(|c| c.version() == version)
            .ok_or_else(|| {
                format!(
                    "it implements contract replicante:platform@{version}, which this gateway \
                     does not serve (it serves {})",
                    CONTRACTS
                        .iter()
                        .map(|c| c.version())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replicante:platform@{}", self.version())
    }
}

/// The linkers of one contract version: exactly the imports its world lists.
struct VersionLinkers<T: 'static> {
    /// What every backend gets.
    plain: Linker<T>,
    /// That plus `wasi:http`, for backends granted outbound HTTP.
    http: Linker<T>,
}

impl<T: Capabilities> VersionLinkers<T> {
    /// WASI plus `add`'s imports, and a copy with `wasi:http` too.
    fn new(
        engine: &Engine,
        add: fn(&mut Linker<T>) -> wasmtime::Result<()>,
    ) -> wasmtime::Result<VersionLinkers<T>> {
        let mut plain = Linker::<T>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut plain)?;
        add(&mut plain)?;
        let mut http = plain.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http)?;
        Ok(VersionLinkers { plain, http })
    }
}

/// The dispatch from the version-free surface to each version's module: the one list of the
/// versions this gateway serves.
macro_rules! contracts {
    ($($variant:ident => $module:ident),+ $(,)?) => {
        /// A released version of the `replicante:platform` contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Contract {
            $(
                #[doc = concat!("The version of `contract/", stringify!($module), ".rs`.")]
                $variant,
            )+
        }

        /// The contract versions this gateway serves, oldest first.
        pub const CONTRACTS: &[Contract] = &[$(Contract::$variant),+];

        impl Contract {
            /// Its version number.
            pub fn version(self) -> &'static str {
                match self {
                    $(Contract::$variant => $module::VERSION,)+
                }
            }
        }

        /// Every version's linkers, built once per engine.
        pub(crate) struct Linkers<T: 'static> {
            $($module: VersionLinkers<T>,)+
        }

        impl<T: Capabilities> Linkers<T> {
            /// The linkers of every version served.
            pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Linkers<T>> {
                Ok(Linkers {
                    $($module: VersionLinkers::new(engine, $module::add_to_linker)?,)+
                })
            }

            /// The linker for a component of `contract`, with `wasi:http` if `http`.
            pub(crate) fn get(&self, contract: Contract, http: bool) -> &Linker<T> {
                let linkers = match contract {
                    $(Contract::$variant => &self.$module,)+
                };
                if http { &linkers.http } else { &linkers.plain }
            }
        }

        /// A component pre-instantiated against its contract version's world.
        pub(crate) enum Plugin<T: 'static> {
            $($variant($module::PluginPre<T>),)+
        }

        impl<T: 'static> Clone for Plugin<T> {
            fn clone(&self) -> Self {
                match self {
                    $(Plugin::$variant(pre) => Plugin::$variant(pre.clone()),)+
                }
            }
        }

        impl<T: Capabilities> Plugin<T> {
            /// `pre`, checked to export what `contract`'s world does.
            pub(crate) fn new(
                contract: Contract,
                pre: InstancePre<T>,
            ) -> wasmtime::Result<Plugin<T>> {
                Ok(match contract {
                    $(Contract::$variant => Plugin::$variant($module::PluginPre::new(pre)?),)+
                })
            }

            /// The contract version the component implements.
            pub(crate) fn contract(&self) -> Contract {
                match self {
                    $(Plugin::$variant(_) => Contract::$variant,)+
                }
            }

            /// Instantiate without calling (a load-time probe).
            pub(crate) async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<()> {
                match self {
                    $(Plugin::$variant(pre) => pre.instantiate_async(store).await.map(drop),)+
                }
            }

            /// Instantiate and run `operation`, converting to and from the contract's records.
            pub(crate) async fn invoke(
                &self,
                store: &mut Store<T>,
                operation: Operation,
            ) -> Outcome {
                match self {
                    $(Plugin::$variant(pre) => invoke!(pre, store, operation, $module),)+
                }
            }
        }
    };
}

/// The same steps for every version; only the generated types and conversions differ.
macro_rules! invoke {
    ($pre:expr, $store:expr, $operation:expr, $module:ident) => {{
        use $module as convert;
        let plugin = $pre.instantiate_async(&mut *$store).await?;
        let provider = plugin.replicante_platform_provider();
        Ok(match $operation {
            Operation::Discover => provider
                .call_discover($store)
                .await?
                .map(|c| Answer::Clusters(c.into_iter().map(convert::cluster).collect()))
                .map_err(convert::error),
            Operation::Provision(request) => provider
                .call_provision($store, &convert::provision_request(&request))
                .await?
                .map(|r| Answer::Provisioned(convert::provision_response(r)))
                .map_err(convert::error),
            Operation::Deprovision(request) => provider
                .call_deprovision($store, &convert::deprovision_request(&request))
                .await?
                .map(|()| Answer::Deprovisioned)
                .map_err(convert::error),
        })
    }};
}

contracts! {
    V0_1 => v0_1,
    V0_2 => v0_2,
}

#[cfg(test)]
mod tests {
    use super::{v0_1, v0_2};
    use crate::capability::state::tests::{plugin_state, refusals};
    use crate::state::StateQuota;

    #[tokio::test]
    async fn both_contracts_refuse_writes_over_the_quotas_in_their_own_error_shapes() {
        use v0_1::wit::replicante::platform::state::{Error as E1, Host as Host1};
        use v0_2::wit::replicante::platform::state::{Host as Host2, StateError as E2};
        let quota = StateQuota {
            keys: 2,
            bytes: 1 << 20,
            value: 16,
            writes_per_second: 1_000_000,
        };
        let (_dir, mut state, metrics) = plugin_state(quota);
        Host1::set(&mut state, "a".into(), b"1".to_vec())
            .await
            .unwrap();
        Host2::set(&mut state, "b".into(), b"1".to_vec())
            .await
            .unwrap();
        match Host1::set(&mut state, "c".into(), b"1".to_vec()).await {
            Err(E1::TooLarge(m)) => assert!(m.contains("limits.state_keys"), "{m}"),
            other => panic!("{other:?}"),
        }
        match Host2::compare_and_swap(&mut state, "c".into(), None, Some(b"1".to_vec())).await {
            Err(E2::TooLarge(m)) => assert!(m.contains("limits.state_keys"), "{m}"),
            other => panic!("{other:?}"),
        }
        match Host2::set(&mut state, "a".into(), vec![0; 17]).await {
            Err(E2::TooLarge(m)) => assert!(m.contains("limits.state_value_size"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(refusals(&metrics, "keys"), 2);
        assert_eq!(refusals(&metrics, "value_size"), 1);

        // Over the rate: `unavailable`, which a plugin retries later.
        let (_dir, mut state, metrics) = plugin_state(StateQuota {
            writes_per_second: 1,
            ..StateQuota::default()
        });
        Host2::set(&mut state, "a".into(), b"1".to_vec())
            .await
            .unwrap();
        match Host1::delete(&mut state, "a".into()).await {
            Err(E1::Unavailable(m)) => {
                assert!(m.contains("limits.state_writes_per_second"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(refusals(&metrics, "write_rate"), 1);
    }
}

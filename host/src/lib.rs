//! platform-gateway: a Replicante Platform server whose provisioning logic runs in sandboxed
//! WebAssembly components.
//!
//! # Layout
//!
//! Imports go one way, top to bottom; only [`api`] knows HTTP. The layers are listed, and checked
//! on every `cargo test`, in `xtask/src/layering.rs`.
//!
//! - [`cli`]: the command line, one file per subcommand (`status` reads the admin API's typed
//!   answers); the binary only parses and calls it. Above everything else.
//! - [`api`]: the HTTP contract: handlers, request validation, the one mapping from domain
//!   errors to statuses and the error body, the admin API and its console page, route
//!   explanations.
//! - [`gateway`]: generations of loaded backends and the three operations over them, in domain
//!   results and errors (fan-out, merge, ownership, checks on plugin answers).
//! - [`routing`]: the provision route table: one `select`, used by requests and explanations.
//! - [`model`]: identities used everywhere ([`model::BackendId`]).
//! - [`reload`]: the task that builds and swaps generations on file events, SIGHUP, admin calls.
//! - [`runtime`]: the wasmtime engine, the compiled-component cache, one store per call.
//! - [`contract`]: one module per released contract version: its bindings, its linker setup and
//!   its records to and from the model; the rest of the host sees one version-free model.
//! - [`capability`]: what plugins may import (settings, logging, state, HTTP), one module each.
//! - [`state`]: the durable store behind plugin data and node ownership: embedded or etcd.
//! - [`config`]: the TOML file turned into a validated [`config::Config`], each section parsed
//!   by the module that owns it, with [`config_file`]'s errors that name the key and line.
//! - [`telemetry`]: tracing setup.
//! - [`pem`]: CA bundles, read the same way by every TLS client and listener.
//! - [`metrics`]: the Prometheus registry (served by [`api::metrics`]), each backend's ring of
//!   recent calls (`GET /admin/activity`) and the metered state store.
//! - [`kit`]: the conformance kit: one plugin loaded alone (`test-plugin`, `call`).
//!
//! [`serve`] runs the gateway until its shutdown future resolves; the binary and the tests start
//! it the same way.

pub mod api;
pub mod capability;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod contract;
pub mod gateway;
pub mod kit;
pub mod metrics;
pub mod model;
pub mod pem;
pub mod recording;
pub mod reload;
pub mod replay;
pub mod rollout;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rayon::prelude::*;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::gateway::{Gateway, Generation};
use crate::model::BackendId;
use crate::runtime::Runtime;
use crate::state::StateStore;

/// Serve `config` on `listener` until `shutdown` resolves, then finish the requests in flight.
///
/// The listener answers at once (`/readyz` says 503) while the backends load on a blocking
/// thread; if loading fails, the server stops and the error is returned. The admin API, when
/// configured, gets a listener of its own.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // One registry for the whole gateway: its store, runtime, backends, API and reloads.
    let metrics = Arc::new(metrics::Metrics::new());
    let state: Arc<dyn StateStore> = metrics::MeteredStore::wrap(
        state::open(&config.store, &config.state_dir)
            .await
            .context("opening the state store")?,
        metrics.clone(),
    );
    let recordings = recording::Lazy::new(config.state_dir.clone());
    let runtime = Arc::new(
        Runtime::new(
            Some(config.cache_dir.clone()),
            config.cache_max,
            config.call_slots(),
        )?
        .with_metrics(metrics.clone())
        .with_recordings(recordings.clone()),
    );
    let gateway = Arc::new(
        Gateway::new(state.clone())
            .with_metrics(metrics)
            .with_recordings(recordings),
    );
    let public = api::router(gateway.clone(), config.max_body_size).layer(axum::Extension(
        api::BodyTimeout(config.connections.body_timeout),
    ));
    let limits = config.connections.clone();
    let tls = |files: &Option<server::TlsFiles>,
               what: &str|
     -> anyhow::Result<Option<Arc<server::Tls>>> {
        match files {
            Some(files) => Ok(Some(Arc::new(
                server::Tls::load(files).map_err(|e| anyhow::anyhow!("{what}: {e}"))?,
            ))),
            None => Ok(None),
        }
    };
    let public_tls = tls(&config.tls, "server.tls")?;
    let admin_tls = tls(&config.admin_tls, "admin.tls")?;
    let admin_auth = config.admin_listen.map(|_| {
        Arc::new(server::AdminAuth::new(
            config.admin_token.as_ref().map(|t| t.0.as_str()),
            config
                .admin_tls
                .as_ref()
                .is_some_and(|tls| tls.client_ca.is_some()),
        ))
    });
    let admin = match config.admin_listen {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (admin)"))?;
            let scheme = if config.admin_tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!("admin listening on {scheme}://{}", listener.local_addr()?);
            Some(listener)
        }
        None => None,
    };

    let reloader = reload::Reloader::new(
        gateway.clone(),
        runtime.clone(),
        state.clone(),
        config.clone(),
    );
    let reloader = reloader.with_listeners(reload::Listeners {
        public_tls: public_tls.clone(),
        admin_tls: admin_tls.clone(),
        admin_auth: admin_auth.clone(),
    });
    let reload_handle = reloader.handle();
    // Before the first load, which can take seconds: a SIGHUP meanwhile is queued as a reload
    // instead of ending the process (SIGHUP's default action).
    reload_handle.listen_for_sighup();

    // Stops both listeners on the shutdown signal or on a failed load.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load_error: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    {
        let (gateway, load_error, stop) = (gateway.clone(), load_error.clone(), stop.clone());
        tokio::spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || {
                let generation = Generation::load(1, config, &runtime, &state, None)?;
                runtime.retain(generation.backends.values().map(|b| b.digest()));
                Ok::<_, runtime::LoadError>(generation)
            })
            .await;
            let error = match loaded {
                Ok(Ok(generation)) => {
                    let count = generation.backends.len();
                    gateway.install(generation);
                    tracing::info!(backends = count, "ready");
                    tokio::spawn(reloader.run());
                    return;
                }
                Ok(Err(e)) => anyhow::Error::new(e),
                Err(e) => anyhow::Error::new(e).context("loading the backends"),
            };
            *load_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
            let _ = stop.send(true);
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let admin_server = admin.zip(admin_auth).map(|(listener, auth)| {
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        let app = api::admin::router(gateway.clone(), reload_handle, loopback, auth)
            .layer(axum::Extension(api::BodyTimeout(limits.body_timeout)));
        let (stopped, limits) = (stopped.clone(), limits.clone());
        tokio::spawn(server::run(
            listener,
            app,
            limits,
            admin_tls,
            until_stopped(stopped),
        ))
    });
    let scheme = if public_tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!("listening on {scheme}://{}", listener.local_addr()?);
    server::run(listener, public, limits, public_tls, until_stopped(stopped)).await;
    if let Some(server) = admin_server {
        server.await?;
    }
    if let Some(error) = load_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(error);
    }
    Ok(())
}

/// Load and validate everything `config` names, as `serve` would, without serving: every
/// plugin is compiled and checked against the world. Returns each backend with its plugin
/// digest. The compiled cache is used (and filled) only if its directory exists: a check
/// creates no directory.
pub fn check(config: &Config) -> anyhow::Result<Vec<(BackendId, String)>> {
    let cache = Some(config.cache_dir.clone()).filter(|dir| dir.is_dir());
    let runtime = Runtime::new(cache, config.cache_max, config.call_slots())?;
    // In parallel, as a load does.
    let backends: Vec<_> = config.backends.values().collect();
    backends
        .par_iter()
        .map(|backend| {
            let loaded = gateway::load_backend(&runtime, backend, config.max_plugin_size, None)?;
            Ok((backend.name.clone(), loaded.digest().to_string()))
        })
        .collect()
}

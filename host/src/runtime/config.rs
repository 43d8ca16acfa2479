//! The config's backends (`[backends.NAME]`: the plugin, its settings, limits and grants) and
//! the `[runtime]` section, checked here by the runtime that loads them. Each part of a backend
//! is read by its owner: settings and grants by `capability`, limits by [`super::limits`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

use super::candidate::{self, CandidateConfig, RawCandidate};
use super::limits::{self, Limits, RawLimits};
use crate::capability::grants::{self, Grants, RawGrants};
use crate::capability::settings::{self, Setting};
use crate::config_file::{ConfigError, Source};
use crate::model::BackendId;
use crate::recording::{self, RawRecord, RecordConfig};

/// The default bound on a plugin file's size: above the ~18 MB of a componentize-py plugin.
pub const DEFAULT_MAX_PLUGIN_SIZE: u64 = 64 << 20;

/// One configured use of a plugin.
#[derive(Clone)]
pub struct BackendConfig {
    /// The backend's name, used in routes, logs and errors.
    pub name: BackendId,
    /// The namespace of its durable state (default: its name). Keeping it across a rename keeps
    /// the backend's data (a pool's allocations) with it.
    pub state_namespace: String,
    /// The plugin component file.
    pub plugin: PathBuf,
    /// The settings given to the plugin (as JSON values, TOML's dates and times as RFC 3339
    /// strings), secret references resolved. See `capability::settings` for how each contract
    /// version reads them.
    pub settings: Vec<Setting>,
    /// The values of the settings that came from secrets: never shown, and cut out of anything
    /// the plugin says (errors, logs) before it reaches a log or a client.
    pub secrets: Vec<String>,
    /// The resources one call may use.
    pub limits: Limits,
    /// What the backend may reach beyond its sandbox.
    pub grants: Grants,
    /// Another build beside the plugin, taking part of the traffic (`candidate`).
    pub candidate: Option<Box<CandidateConfig>>,
    /// Whether, and how much of, its traffic is recorded (`record`).
    pub record: Option<RecordConfig>,
}

impl std::fmt::Debug for BackendConfig {
    // Settings may hold secrets: show their keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("name", &self.name)
            .field("state_namespace", &self.state_namespace)
            .field("plugin", &self.plugin)
            .field(
                "settings",
                &self.settings.iter().map(|s| &s.key).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .field("grants", &self.grants)
            .field(
                "candidate",
                &self.candidate.as_ref().map(|c| &c.backend.plugin),
            )
            .finish()
    }
}

/// One `[backends.NAME]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    plugin: PathBuf,
    state_namespace: Option<Spanned<String>>,
    #[serde(default)]
    settings: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    grants: RawGrants,
    candidate: Option<Spanned<RawCandidate>>,
    record: Option<RawRecord>,
}

/// The `[runtime]` section as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    max_plugin_size: Option<Spanned<ByteSize>>,
}

/// Check the `[runtime]` section: the largest plugin file the gateway reads.
pub(crate) fn parse_runtime(raw: RawRuntime, source: &Source) -> Result<u64, ConfigError> {
    match raw.max_plugin_size {
        None => Ok(DEFAULT_MAX_PLUGIN_SIZE),
        Some(size) if size.get_ref().as_u64() < 1 << 10 => Err(source.invalid(
            size.span(),
            "runtime.max_plugin_size",
            "must be at least 1KiB",
        )),
        Some(size) => Ok(size.get_ref().as_u64()),
    }
}

/// Check every `[backends.NAME]`; two backends may not share a state namespace. A backend
/// without a `record` table takes `record` (the top-level `[record]`), if given.
pub(crate) fn parse_backends(
    raw: BTreeMap<String, Spanned<RawBackend>>,
    record: Option<RawRecord>,
    source: &Source,
) -> Result<BTreeMap<BackendId, BackendConfig>, ConfigError> {
    let record = record
        .map(|raw| recording::parse(raw, "record", source))
        .transpose()?;
    let mut backends = BTreeMap::new();
    let mut namespaces: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw_backend) in raw {
        let span = raw_backend.span();
        let backend = backend(
            &name,
            raw_backend.into_inner(),
            span.clone(),
            record,
            source,
        )?;
        if let Some(other) = namespaces.insert(backend.state_namespace.clone(), name.clone()) {
            return Err(source.invalid(
                span,
                format!("backends.{name}.state_namespace"),
                format!(
                    "state namespace `{}` is already used by backend `{other}`: two backends \
                     would hand out the same resources",
                    backend.state_namespace
                ),
            ));
        }
        backends.insert(backend.name.clone(), backend);
    }
    Ok(backends)
}

fn backend(
    name: &str,
    raw: RawBackend,
    span: Range<usize>,
    default_record: Option<RecordConfig>,
    source: &Source,
) -> Result<BackendConfig, ConfigError> {
    let id = BackendId::new(name)
        .map_err(|message| source.invalid(span.clone(), format!("backends.{name}"), message))?;
    let state_namespace = match raw.state_namespace {
        None => name.to_string(),
        Some(namespace) => BackendId::new(namespace.get_ref())
            .map_err(|_| {
                source.invalid(
                    namespace.span(),
                    format!("backends.{name}.state_namespace"),
                    "a state namespace is 1 to 64 ASCII letters, digits, `-` or `_`",
                )
            })?
            .to_string(),
    };
    let limits = limits::parse(raw.limits, name, source)?;
    let (settings, secrets) = settings::parse(raw.settings, name, source)?;
    let grants = grants::parse(raw.grants, name, source)?;
    let mut backend = BackendConfig {
        name: id,
        state_namespace,
        plugin: source.path(raw.plugin),
        settings,
        secrets,
        limits,
        grants,
        candidate: None,
        record: match raw.record {
            Some(raw) => Some(recording::parse(
                raw,
                &format!("backends.{name}.record"),
                source,
            )?),
            None => default_record,
        },
    };
    if let Some(raw) = raw.candidate {
        let span = raw.span();
        let parsed = candidate::parse(raw.into_inner(), span, &backend, source)?;
        backend.candidate = Some(Box::new(parsed));
    }
    Ok(backend)
}

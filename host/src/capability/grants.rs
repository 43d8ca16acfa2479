//! What a backend may reach beyond its sandbox: its config's `grants` (none by default), read
//! here beside the capabilities they turn on.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::http::Allowlist;
use crate::config_file::{ConfigError, Source};

/// Capabilities a backend is granted beyond its sandbox (from its config's `grants`); none by
/// default.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Outbound HTTP through `wasi:http`, to these destinations only.
    pub http: Option<Arc<Allowlist>>,
}

/// A backend's `grants` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrants {
    http: Option<Spanned<Vec<String>>>,
    ca: Option<Spanned<PathBuf>>,
    reads: Option<Spanned<Vec<super::reads::ReadGrant>>>,
}

/// Check the `grants` of backend `name`: the HTTP allowlist, and the CA bundle its HTTPS trusts
/// (read now, and watched with the config).
pub(crate) fn parse(raw: RawGrants, name: &str, source: &Source) -> Result<Grants, ConfigError> {
    // Which requests a plan may send: only with an `http` grant.
    let reads = match raw.reads {
        None => None,
        Some(reads) if raw.http.is_none() => {
            return Err(source.invalid(
                reads.span(),
                format!("backends.{name}.grants.reads"),
                "reads apply to an `http` grant, which this backend does not have",
            ));
        }
        Some(reads) => Some(
            super::reads::Reads::parse(reads.get_ref()).map_err(|message| {
                source.invalid(
                    reads.span(),
                    format!("backends.{name}.grants.reads"),
                    message,
                )
            })?,
        ),
    };
    Ok(Grants {
        http: match (raw.http, raw.ca) {
            (None, None) => None,
            (None, Some(ca)) => {
                return Err(source.invalid(
                    ca.span(),
                    format!("backends.{name}.grants.ca"),
                    "a CA bundle applies to an `http` grant, which this backend does not have",
                ));
            }
            (Some(patterns), ca) => {
                let span = patterns.span();
                let mut allow = Allowlist::parse(patterns.get_ref()).map_err(|message| {
                    source.invalid(span, format!("backends.{name}.grants.http"), message)
                })?;
                if let Some(reads) = reads {
                    allow = allow.with_reads(reads);
                }
                if let Some(ca) = ca {
                    let path = source.path(ca.get_ref());
                    source.include(path.clone());
                    allow = allow.trusting(&path).map_err(|message| {
                        source.invalid(ca.span(), format!("backends.{name}.grants.ca"), message)
                    })?;
                }
                Some(Arc::new(allow))
            }
        },
    })
}

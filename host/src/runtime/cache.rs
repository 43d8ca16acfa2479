//! The compiled-component cache: a component is compiled once per content, ever.
//!
//! Keyed by the SHA-256 of the component bytes and the engine's compatibility hash, so a new
//! wasmtime or a different engine configuration never loads stale machine code. Kept in memory
//! for the life of the runtime (two backends of one plugin share one compilation) and on disk
//! under the state directory (a restart or a config-only reload compiles nothing).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A compiled component and the digest of its bytes.
#[derive(Clone)]
pub struct Compiled {
    /// The compiled component.
    pub component: Component,
    /// `sha256:<hex>` of the component file.
    pub digest: String,
}

/// Compiled components by content.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
    loaded: Mutex<HashMap<String, Component>>,
}

impl ComponentCache {
    /// A cache for `engine`, persisted under `dir` when given.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> ComponentCache {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The compiled form of `bytes`: from memory, from disk, or compiled now (slow: call it
    /// off the request path).
    pub fn get(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        if let Some(component) = self.lock().get(&digest) {
            return Ok(Compiled {
                component: component.clone(),
                digest,
            });
        }
        let file = self.dir.as_ref().map(|dir| {
            dir.join(format!(
                "{}-{}.cwasm",
                &digest["sha256:".len()..],
                self.engine_key
            ))
        });
        let component = match file.as_deref().and_then(|f| load(engine, f)) {
            Some(component) => component,
            None => {
                let started = std::time::Instant::now();
                let component = Component::new(engine, bytes)?;
                tracing::info!(%digest, elapsed = ?started.elapsed(), "compiled plugin");
                if let Some(file) = &file {
                    store(&component, file);
                }
                component
            }
        };
        self.lock().insert(digest.clone(), component.clone());
        Ok(Compiled { component, digest })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        // The map holds no invariant a panic could break; keep using it.
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn load(engine: &Engine, file: &Path) -> Option<Component> {
    if !file.exists() {
        return None;
    }
    // SAFETY: the file was written by `store` below from `Component::serialize` of this very
    // engine configuration (its name carries the compatibility hash), in the gateway's own
    // state directory, and wasmtime re-checks the header and engine compatibility on load.
    match unsafe { Component::deserialize_file(engine, file) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(file = %file.display(), "ignoring unusable compiled plugin: {e:#}");
            None
        }
    }
}

fn store(component: &Component, file: &Path) {
    let result = (|| -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Write then rename, so that a reader never sees half a file.
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, file)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(file = %file.display(), "cannot cache compiled plugin: {e:#}");
    }
}

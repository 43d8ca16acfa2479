//! The compiled-component cache: a component is compiled once per content, ever.
//!
//! Keyed by the SHA-256 of the component bytes and a SHA-256 of the engine's compatibility hash,
//! so a new wasmtime or a different engine configuration never loads stale machine code, and the
//! key of an unchanged engine stays the same across builds of the gateway (std's `DefaultHasher`
//! may change between Rust releases, which would orphan every cached file). Files are written
//! to a temporary name, synced, renamed into place and the directory synced, so that a crash
//! leaves either no file or a whole one. Kept in memory
//! while a generation uses it (two backends of one plugin share one compilation) and on disk
//! under the state directory (a restart or a config-only reload compiles nothing). After each
//! generation is installed, [`ComponentCache::retain`] drops from memory what it does not use and
//! trims the directory, least recently used first, to its size bound.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    max_bytes: u64,
    engine_key: String,
    loaded: Mutex<HashMap<String, Component>>,
    /// A gate per content being loaded or compiled: backends load in parallel, and two of one
    /// plugin must share one compilation.
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl ComponentCache {
    /// A cache for `engine`, persisted under `dir` when given.
    pub fn new(engine: &Engine, dir: Option<PathBuf>, max_bytes: u64) -> ComponentCache {
        ComponentCache {
            dir,
            max_bytes,
            engine_key: engine_key(engine),
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The compiled form of `bytes`: from memory, from disk, or compiled now (slow: call it
    /// off the request path).
    pub fn get(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        let cached = |digest: &String| {
            self.lock().get(digest).map(|component| Compiled {
                component: component.clone(),
                digest: digest.clone(),
            })
        };
        if let Some(compiled) = cached(&digest) {
            return Ok(compiled);
        }
        // The first caller for this content loads it; the others wait and find it in memory.
        let gate = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        let _gate = gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(compiled) = cached(&digest) {
            return Ok(compiled);
        }
        let compiled = self.load_or_compile(engine, bytes, digest.clone());
        self.loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest);
        compiled
    }

    /// Load `bytes`' compiled form from disk, or compile it (and store it there).
    fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: String,
    ) -> wasmtime::Result<Compiled> {
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
                // A 12-18 MB Python or JavaScript component compiles for seconds: say so first.
                tracing::info!(
                    %digest,
                    size = %bytesize::ByteSize(bytes.len() as u64),
                    "compiling plugin (not in the cache)"
                );
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

    /// Keep in memory only the components with these digests (those the serving generation
    /// uses; calls still running on an older one hold their own reference), and trim the
    /// directory to its bound without deleting those. The bytes left in the directory, if
    /// there is one.
    pub fn retain(&self, in_use: &HashSet<String>) -> Option<u64> {
        self.lock().retain(|digest, _| in_use.contains(digest));
        let dir = self.dir.as_ref()?;
        let keep: HashSet<String> = in_use
            .iter()
            .map(|d| d.trim_start_matches("sha256:").to_string())
            .collect();
        Some(trim_dir(dir, self.max_bytes, &keep))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        // The map holds no invariant a panic could break; keep using it.
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine's part of a cache file's name: the first 128 bits, in hex, of the SHA-256 of its
/// precompile compatibility hash (wasmtime's version and every setting that changes the code).
fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = hasher.0.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`Hasher`] that feeds what it is given into SHA-256: a digest of a `Hash` value that does
/// not depend on std's hashing algorithm, which may change between Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
    }
}

/// Delete `.cwasm` files of `dir`, least recently used first, until they take at most
/// `max_bytes`; files whose digest is in `keep` are never deleted. The bytes they take after.
fn trim_dir(dir: &Path, max_bytes: u64, keep: &HashSet<String>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf, bool)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = name.split('-').next().unwrap_or_default().to_string();
            let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            Some((used, meta.len(), e.path(), keep.contains(&digest)))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort_by_key(|f| f.0);
    for (_, size, path, kept) in files {
        if total <= max_bytes {
            break;
        }
        if kept {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                total -= size;
                tracing::info!(file = %path.display(), "evicted compiled plugin from the cache");
            }
            Err(e) => tracing::warn!(file = %path.display(), "cannot evict: {e}"),
        }
    }
    total
}

fn load(engine: &Engine, file: &Path) -> Option<Component> {
    if !file.exists() {
        return None;
    }
    // Mark it used, for the least-recently-used trimming.
    if let Ok(f) = std::fs::File::options().append(true).open(file) {
        let _ = f.set_modified(std::time::SystemTime::now());
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
        // Write, sync, then rename, so that a reader never sees half a file and a crash never
        // leaves one under the final name; then sync the directory, so that the rename lasts.
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let written = (|| {
            let mut out = std::fs::File::create(&tmp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        if let Some(dir) = file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(file = %file.display(), "cannot cache compiled plugin: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn file(dir: &Path, digest: &str, size: usize, age: u64) -> PathBuf {
        let path = dir.join(format!("{digest}-engine.cwasm"));
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age))
            .unwrap();
        path
    }

    #[test]
    fn the_engine_key_is_a_sha256_that_does_not_depend_on_std_hashing() {
        // `str`'s `Hash` writes its bytes and 0xff: the digest is SHA-256 of exactly that.
        let mut hasher = Sha256Hasher(Sha256::new());
        "wasmtime".hash(&mut hasher);
        assert_eq!(
            format!("{:x}", hasher.0.finalize()),
            "3f89979b2d7e5e3f5b641942bcce255aeba4587af4e8c9b135761ae5a85674f1"
        );
        let engine = Engine::default();
        let key = engine_key(&engine);
        assert_eq!(key.len(), 32);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
        assert_eq!(
            key,
            engine_key(&Engine::default()),
            "the same engine, the same key"
        );
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        assert_ne!(
            key,
            engine_key(&other),
            "code built differently, another key"
        );
    }

    #[test]
    fn a_stored_component_loads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        // The smallest component: the preamble of the component binary format.
        let component = Component::new(&engine, b"\0asm\x0d\0\x01\0").unwrap();
        let path = dir.path().join("cache").join("digest-engine.cwasm");
        store(&component, &path);
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["digest-engine.cwasm"]);
        assert!(load(&engine, &path).is_some());
    }

    #[test]
    fn trimming_evicts_least_recently_used_files_but_never_those_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = file(dir.path(), "aaa", 400, 300);
        let in_use_and_old = file(dir.path(), "bbb", 400, 200);
        let middle = file(dir.path(), "ccc", 400, 100);
        let newest = file(dir.path(), "ddd", 400, 0);
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, vec![0u8; 4000]).unwrap();
        let keep: HashSet<String> = ["bbb".to_string()].into();
        assert_eq!(
            trim_dir(dir.path(), 900, &keep),
            800,
            "two files of 400 left"
        );
        assert!(!oldest.exists(), "the least recently used goes first");
        assert!(in_use_and_old.exists(), "a file in use is never evicted");
        assert!(
            !middle.exists(),
            "still over the bound: the next oldest goes"
        );
        assert!(newest.exists(), "under the bound now: the rest stays");
        assert!(other.exists(), "only compiled plugins are touched");
        // Under the bound, nothing more is deleted.
        trim_dir(dir.path(), 900, &HashSet::new());
        assert!(in_use_and_old.exists() && newest.exists());
    }
}

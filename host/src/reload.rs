//! Reload: one task builds the next generation off the request path and swaps it in.
//!
//! Triggers (file events on the config, on every plugin file it names and on the files it took
//! values from, SIGHUP, the admin API) all go to one channel. Files are watched through their
//! directories and through every symlink on their way, so a Kubernetes ConfigMap or Secret
//! update, which swaps a `..data` symlink, is seen like an edit. The task debounces file events, so an editor's save or a copy in
//! several writes is one reload, and triggers that arrive while a reload runs coalesce into one
//! more. A reload is all or nothing: the config is parsed and checked, every plugin compiled (or
//! fetched from the cache) and pre-instantiated on a blocking thread, and only then is the new
//! generation installed. A refused reload leaves the current generation serving and is logged
//! and shown by the admin API.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::gateway::{Gateway, Generation};
use crate::runtime::Runtime;
use crate::server::{AdminAuth, PreparedTls, Tls};
use crate::state::StateStore;

/// What asked for a reload.
#[derive(Debug)]
pub enum Trigger {
    /// A watched file changed.
    File(PathBuf),
    /// SIGHUP.
    Signal,
    /// The admin API, which waits for the outcome.
    Admin(oneshot::Sender<Result<u64, String>>),
}

/// What the admin API shows about reloading (`GET /admin/generation`, read back by
/// `platform-gateway status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct ReloadStatus {
    /// The generation being served.
    pub generation: u64,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// How long building it took, in milliseconds.
    pub load_ms: u64,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Refused reloads since start.
    pub refused: u64,
    /// The last refused reload, if any.
    pub last_refused: Option<Refusal>,
    /// Settings changed in the file that take effect only at restart.
    pub restart_needed: Vec<String>,
    /// The last reloads, applied or refused, oldest first (at most [`HISTORY`]).
    #[serde(default)]
    pub history: Vec<ReloadEvent>,
}

/// How many reloads `GET /admin/generation` remembers.
pub const HISTORY: usize = 20;

/// One reload, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReloadEvent {
    /// When it ended (RFC 3339).
    pub at: String,
    /// `applied` or `refused`.
    pub outcome: ReloadOutcome,
    /// The generation serving after it: the new one, or the one that kept serving.
    pub generation: u64,
    /// How long it took, in milliseconds.
    pub load_ms: u64,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether a reload was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// Its generation serves.
    Applied,
    /// The previous generation kept serving.
    Refused,
}

impl ReloadStatus {
    /// Remember `event`, forgetting the oldest beyond [`HISTORY`].
    fn remember(&mut self, event: ReloadEvent) {
        if self.history.len() >= HISTORY {
            self.history.remove(0);
        }
        self.history.push(event);
    }
}

/// A refused reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refusal {
    /// When (RFC 3339).
    pub at: String,
    /// Why: the config error or the plugin that could not load.
    pub reason: String,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// The reload task's mailbox and its status, for the admin API and the signal handler.
#[derive(Clone)]
pub struct ReloadHandle {
    triggers: mpsc::UnboundedSender<Trigger>,
    status: Arc<Mutex<ReloadStatus>>,
}

impl ReloadHandle {
    /// Reload now and wait for the outcome: the new generation's number, or why it was refused.
    pub async fn reload(&self) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        self.triggers
            .send(Trigger::Admin(tx))
            .map_err(|_| "the reload task has stopped".to_string())?;
        rx.await
            .map_err(|_| "the reload task has stopped".to_string())?
    }

    /// Reload on SIGHUP from now on (before the first generation is loaded, too).
    pub fn listen_for_sighup(&self) {
        spawn_sighup(self.triggers.clone());
    }

    /// The current status.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The one task that reloads.
pub struct Reloader {
    gateway: Arc<Gateway>,
    runtime: Arc<Runtime>,
    state: Arc<dyn StateStore>,
    /// The config the gateway started with: what start-only settings are.
    initial: Config,
    status: Arc<Mutex<ReloadStatus>>,
    triggers: mpsc::UnboundedSender<Trigger>,
    inbox: mpsc::UnboundedReceiver<Trigger>,
    watch: Option<FileWatch>,
    /// The listeners' protection, read again on every reload.
    listeners: Listeners,
}

/// What protects the listeners and changes with the config: their TLS (whose files are read
/// again on every reload) and the admin token.
#[derive(Default, Clone)]
pub struct Listeners {
    /// The public listener's TLS, if it has TLS.
    pub public_tls: Option<Arc<Tls>>,
    /// The admin listener's TLS, if it has TLS.
    pub admin_tls: Option<Arc<Tls>>,
    /// The admin listener's authentication, if there is an admin listener.
    pub admin_auth: Option<Arc<AdminAuth>>,
}

/// A reload's new listener protection, read and checked before anything is installed.
struct PreparedListeners {
    public_tls: Option<PreparedTls>,
    admin_tls: Option<PreparedTls>,
}

impl Reloader {
    /// A reloader for `gateway`, which starts (or started) from `initial`.
    pub fn new(
        gateway: Arc<Gateway>,
        runtime: Arc<Runtime>,
        state: Arc<dyn StateStore>,
        initial: Config,
    ) -> Reloader {
        let (triggers, inbox) = mpsc::unbounded_channel();
        Reloader {
            gateway,
            runtime,
            state,
            initial,
            status: Arc::default(),
            triggers,
            inbox,
            watch: None,
            listeners: Listeners::default(),
        }
    }

    /// Apply each reloaded config's TLS files and admin token to these listeners.
    pub fn with_listeners(mut self, listeners: Listeners) -> Reloader {
        self.listeners = listeners;
        self
    }

    /// A handle to trigger reloads and read the status.
    pub fn handle(&self) -> ReloadHandle {
        ReloadHandle {
            triggers: self.triggers.clone(),
            status: self.status.clone(),
        }
    }

    /// Reload on every trigger, for as long as the runtime runs. Call it once the first
    /// generation is installed. Starts the file watcher when the config asks for it.
    pub async fn run(mut self) {
        if let Some(generation) = self.gateway.current() {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.generation = generation.number;
            status.loaded_at = rfc3339(generation.loaded_at);
        }
        if self.initial.reload.watch {
            match FileWatch::new(self.triggers.clone()) {
                Ok(watch) => self.watch = Some(watch),
                Err(e) => tracing::error!("cannot watch files, reload by SIGHUP or admin API: {e}"),
            }
        }
        if let Some(generation) = self.gateway.current() {
            self.watch_files_of(&generation.config);
        }
        let debounce = self.initial.reload.debounce;
        while let Some(first) = self.inbox.recv().await {
            let mut waiters = Vec::new();
            let from_files = collect(first, &mut waiters);
            // File events come in bursts: wait until they stop.
            if from_files && waiters.is_empty() {
                while let Ok(Some(trigger)) =
                    tokio::time::timeout(debounce, self.inbox.recv()).await
                {
                    collect(trigger, &mut waiters);
                }
            }
            while let Ok(trigger) = self.inbox.try_recv() {
                collect(trigger, &mut waiters);
            }
            let outcome = self.reload_once().await;
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
    }

    async fn reload_once(&mut self) -> Result<u64, String> {
        let started = Instant::now();
        let previous = self.gateway.current();
        let number = previous.as_ref().map(|g| g.number).unwrap_or(0) + 1;
        let path = self.initial.source.clone();
        let (runtime, state) = (self.runtime.clone(), self.state.clone());
        let running = previous.clone();
        let initial = self.initial.clone();
        let listeners = self.listeners.clone();
        // The files a config that parses but is refused names: watched too, so that fixing
        // one of them (copying in the missing plugin, say) retries.
        let named: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let named_by_refused = named.clone();
        let built = async move {
            let mut config = Config::load(&path).map_err(|e| e.to_string())?;
            *named.lock().unwrap_or_else(|e| e.into_inner()) = files_of(&config);
            if initial.listen_overridden {
                // `--listen` still says where the API listens, whatever the file says.
                config.listen = initial.listen;
                config.listen_overridden = true;
            }
            let changed = initial.admin_changes_needing_restart(&config);
            if !changed.is_empty() {
                return Err(format!(
                    "{} changed: the admin listener's address and whether it uses TLS take \
                     effect only at a restart, and applying the rest of this config could leave \
                     the admin API guarded other than the config says; restart the gateway to \
                     apply it",
                    changed.join(" and ")
                ));
            }
            if let Some(running) = &running {
                check_namespaces_kept(&running.config, &config, &*state).await?;
            }
            tokio::task::spawn_blocking(move || {
                // Everything that can fail is read before anything is installed.
                let prepared = listeners.prepare(&config)?;
                let generation =
                    Generation::load(number, config, &runtime, &state, previous.as_deref())
                        .map_err(|e| e.to_string())?;
                Ok((generation, prepared))
            })
            .await
            .map_err(|e| format!("the reload failed: {e}"))?
        }
        .await;
        let load_ms = started.elapsed().as_millis() as u64;

        match built {
            Ok((generation, prepared)) => {
                let mut restart_needed = self.initial.restart_only_changes(&generation.config);
                if !self.runtime.fits(generation.config.call_slots()) {
                    restart_needed.push(
                        "backends' concurrency (the instance pool is sized at start; calls \
                         beyond it are answered 503)",
                    );
                }
                if !restart_needed.is_empty() {
                    tracing::warn!(
                        settings = ?restart_needed,
                        "these settings changed and take effect only after a restart"
                    );
                }
                self.watch_files_of(&generation.config);
                let loaded_at = generation.loaded_at;
                let backends = generation.backends.len();
                let digests: Vec<String> = generation
                    .backends
                    .values()
                    .map(|b| b.digest().to_string())
                    .collect();
                self.listeners.install(prepared, &generation.config);
                self.gateway.install(generation);
                let runtime = self.runtime.clone();
                tokio::task::spawn_blocking(move || {
                    runtime.retain(digests.iter().map(String::as_str))
                });
                tracing::info!(generation = number, backends, load_ms, "reloaded");
                self.runtime.metrics().record_reload("ok");
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.generation = number;
                status.loaded_at = rfc3339(loaded_at);
                status.load_ms = load_ms;
                status.reloads += 1;
                status.restart_needed = restart_needed.into_iter().map(String::from).collect();
                let at = status.loaded_at.clone();
                status.remember(ReloadEvent {
                    at,
                    outcome: ReloadOutcome::Applied,
                    generation: number,
                    load_ms,
                    reason: None,
                });
                Ok(number)
            }
            Err(reason) => {
                tracing::error!(
                    "reload refused, generation {} keeps serving: {reason}",
                    number - 1
                );
                self.runtime.metrics().record_reload("refused");
                // Keep watching the serving generation's files, and add those the refused config
                // names; a config that no longer parses names none, but the old set's symlinks
                // are followed again (they may point elsewhere now).
                let named = std::mem::take(
                    &mut *named_by_refused.lock().unwrap_or_else(|e| e.into_inner()),
                );
                if let Some(watch) = &mut self.watch {
                    if named.is_empty() {
                        watch.refresh();
                    } else {
                        let mut files = self
                            .gateway
                            .current()
                            .map(|g| files_of(&g.config))
                            .unwrap_or_default();
                        files.extend(named);
                        watch.set(&files);
                    }
                }
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                let at = rfc3339(SystemTime::now());
                status.refused += 1;
                status.last_refused = Some(Refusal {
                    at: at.clone(),
                    reason: reason.clone(),
                });
                status.remember(ReloadEvent {
                    at,
                    outcome: ReloadOutcome::Refused,
                    generation: number - 1,
                    load_ms,
                    reason: Some(reason.clone()),
                });
                Err(reason)
            }
        }
    }

    fn watch_files_of(&mut self, config: &Config) {
        if let Some(watch) = &mut self.watch {
            watch.set(&files_of(config));
        }
    }
}

impl Listeners {
    /// Read the TLS files `config` names for the listeners there are.
    fn prepare(&self, config: &Config) -> Result<PreparedListeners, String> {
        let read = |tls: &Option<Arc<Tls>>, files: &Option<crate::server::TlsFiles>, what| match (
            tls, files,
        ) {
            (Some(_), Some(files)) => Tls::prepare(files)
                .map(Some)
                .map_err(|e| format!("{what}: {e}")),
            _ => Ok(None),
        };
        Ok(PreparedListeners {
            public_tls: read(&self.public_tls, &config.tls, "server.tls")?,
            admin_tls: read(&self.admin_tls, &config.admin_tls, "admin.tls")?,
        })
    }

    /// Switch to `prepared` and to `config`'s admin token, in the order that never leaves the
    /// admin API less guarded than either the old or the new config says: a token that is
    /// required now is required before client certificates stop being; client certificates
    /// that are required now are required before the token stops being.
    fn install(&self, prepared: PreparedListeners, config: &Config) {
        if let (Some(tls), Some(new)) = (&self.public_tls, prepared.public_tls) {
            tls.install(new);
        }
        let token = config.admin_token.as_ref().map(|t| t.0.as_str());
        let client_certs = config
            .admin_tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some());
        let Some(auth) = &self.admin_auth else {
            return;
        };
        let admin_tls = |prepared: Option<PreparedTls>| {
            if let (Some(tls), Some(new)) = (&self.admin_tls, prepared) {
                tls.install(new);
            }
        };
        if token.is_some() {
            auth.set_token(token);
            admin_tls(prepared.admin_tls);
            auth.set_client_certs(client_certs);
        } else {
            admin_tls(prepared.admin_tls);
            auth.set_client_certs(client_certs);
            auth.set_token(token);
        }
    }
}

/// The files `config` is made of: itself, its plugins, the files it took values from.
fn files_of(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.source.clone()];
    files.extend(config.backends.values().map(|b| b.plugin.clone()));
    files.extend(config.included_files.iter().cloned());
    files
}

/// Refuse a config that renames a backend away from state it holds: the new backend would start
/// from an empty namespace and hand out again what the old one had allocated. A renamed backend
/// keeps its data by naming the old namespace in `state_namespace`.
async fn check_namespaces_kept(
    running: &Config,
    next: &Config,
    state: &dyn StateStore,
) -> Result<(), String> {
    let kept: HashSet<&str> = next
        .backends
        .values()
        .map(|b| b.state_namespace.as_str())
        .collect();
    for old in running.backends.values() {
        if kept.contains(old.state_namespace.as_str()) {
            continue;
        }
        // Only a rename is refused: a new backend that takes the old one's plugin.
        let Some(new) = next
            .backends
            .values()
            .find(|b| b.plugin == old.plugin && !running.backends.contains_key(&b.name))
        else {
            continue;
        };
        let holds = crate::state::holds_data(state, &old.state_namespace)
            .await
            .map_err(|e| format!("cannot check backend `{}`'s state: {e}", old.name))?;
        if holds {
            return Err(format!(
                "backend `{old}` was renamed to `{new}`, but its state (namespace `{ns}`) holds \
                 data that `{new}` would not see, so it could hand out again what `{old}` \
                 allocated; to rename it, add `state_namespace = \"{ns}\"` to \
                 [backends.{new}]",
                old = old.name,
                new = new.name,
                ns = old.state_namespace,
            ));
        }
    }
    Ok(())
}

/// Note a trigger; keep the admin's reply channel. Whether it was a file event.
fn collect(trigger: Trigger, waiters: &mut Vec<oneshot::Sender<Result<u64, String>>>) -> bool {
    match trigger {
        Trigger::Admin(tx) => {
            waiters.push(tx);
            false
        }
        Trigger::File(path) => {
            tracing::debug!(path = %path.display(), "file changed");
            true
        }
        Trigger::Signal => {
            tracing::info!("SIGHUP: reloading");
            false
        }
    }
}

/// Watches the directories of the files of interest (a file replaced by rename is a new inode,
/// so watching the file itself would lose it) and reports events on those files and on every
/// symlink they are reached through.
struct FileWatch {
    watcher: notify::RecommendedWatcher,
    /// The files asked for.
    wanted: Vec<PathBuf>,
    /// Those files and the symlinks on their way: the paths whose events trigger a reload.
    files: Arc<Mutex<HashSet<PathBuf>>>,
    dirs: HashSet<PathBuf>,
}

impl FileWatch {
    fn new(triggers: mpsc::UnboundedSender<Trigger>) -> notify::Result<FileWatch> {
        let files: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let interest = files.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) && !is_close_after_write(&event.kind) {
                return;
            }
            let files = interest.lock().unwrap_or_else(|e| e.into_inner());
            for path in event.paths {
                if files.contains(&path) {
                    let _ = triggers.send(Trigger::File(path));
                }
            }
        })?;
        Ok(FileWatch {
            watcher,
            wanted: Vec::new(),
            files,
            dirs: HashSet::new(),
        })
    }

    /// Watch `files` (and what they are reached through) instead of what was watched.
    fn set(&mut self, files: &[PathBuf]) {
        self.wanted = files.to_vec();
        self.refresh();
    }

    /// Follow the symlinks of the watched files again.
    fn refresh(&mut self) {
        let files: HashSet<PathBuf> = self
            .wanted
            .iter()
            .flat_map(|f| reached_through(&absolute(f)))
            .collect();
        let dirs: HashSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for dir in self.dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(dir);
        }
        for dir in dirs.difference(&self.dirs) {
            if let Err(e) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), "cannot watch: {e}");
            }
        }
        self.dirs = dirs;
        *self.files.lock().unwrap_or_else(|e| e.into_inner()) = files;
    }
}

fn is_close_after_write(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(notify::event::AccessKind::Close(
            notify::event::AccessMode::Write
        ))
    )
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The paths whose change changes what reading `path` (absolute) gives: `path` itself, every
/// symlink met while resolving it (in any component, as Kubernetes' `..data`), and the file it
/// resolves to. Renaming a new symlink over one of them, as the kubelet publishes a ConfigMap,
/// is an event on that path.
fn reached_through(path: &Path) -> Vec<PathBuf> {
    use std::collections::VecDeque;
    use std::path::Component;

    /// As the kernel's limit on symlinks followed in one lookup.
    const MAX_LINKS: usize = 40;
    let owned = |p: &Path| -> Vec<PathBuf> {
        p.components()
            .map(|c| PathBuf::from(c.as_os_str()))
            .collect()
    };
    let mut paths = vec![path.to_path_buf()];
    let mut pending: VecDeque<PathBuf> = owned(path).into();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        match part.components().next() {
            Some(Component::Prefix(_) | Component::RootDir) => resolved = part,
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::Normal(name)) => {
                let next = resolved.join(name);
                let target = match std::fs::symlink_metadata(&next) {
                    Ok(meta) if meta.file_type().is_symlink() && links < MAX_LINKS => {
                        std::fs::read_link(&next).ok()
                    }
                    _ => None,
                };
                let Some(target) = target else {
                    resolved = next;
                    continue;
                };
                links += 1;
                paths.push(next);
                // The rest of the path now goes through the link's target: relative to the
                // link's directory (`resolved`), or from the root if absolute.
                for part in owned(&target).into_iter().rev() {
                    pending.push_front(part);
                }
            }
            Some(Component::CurDir) | None => {}
        }
    }
    paths.push(resolved);
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(unix)]
fn spawn_sighup(triggers: mpsc::UnboundedSender<Trigger>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    if triggers.send(Trigger::Signal).is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_: mpsc::UnboundedSender<Trigger>) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_reload_history_keeps_the_last_twenty_oldest_first() {
        let mut status = ReloadStatus::default();
        for generation in 1..=25 {
            status.remember(ReloadEvent {
                at: String::new(),
                outcome: ReloadOutcome::Applied,
                generation,
                load_ms: 0,
                reason: None,
            });
        }
        let kept: Vec<u64> = status.history.iter().map(|e| e.generation).collect();
        assert_eq!(kept, (6..=25).collect::<Vec<u64>>());
        // A status from a gateway without a history still reads.
        let old: ReloadStatus = serde_json::from_value(serde_json::json!({
            "generation": 1, "loaded_at": "", "load_ms": 0, "reloads": 0, "refused": 0,
            "last_refused": null, "restart_needed": []
        }))
        .unwrap();
        assert!(old.history.is_empty());
    }

    #[test]
    fn a_kubernetes_volume_file_is_reached_through_its_link_and_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().canonicalize().unwrap();
        std::fs::create_dir(vol.join("..2026_11_28_10_00_00.1")).unwrap();
        std::fs::write(vol.join("..2026_11_28_10_00_00.1/gateway.toml"), "").unwrap();
        symlink("..2026_11_28_10_00_00.1", vol.join("..data")).unwrap();
        symlink("..data/gateway.toml", vol.join("gateway.toml")).unwrap();
        let mut expected = vec![
            vol.join("gateway.toml"),
            vol.join("..data"),
            vol.join("..2026_11_28_10_00_00.1/gateway.toml"),
        ];
        expected.sort();
        assert_eq!(reached_through(&vol.join("gateway.toml")), expected);

        // A plain file is reached through itself only; an absolute link through both.
        std::fs::write(vol.join("plain"), "").unwrap();
        assert_eq!(reached_through(&vol.join("plain")), [vol.join("plain")]);
        symlink(vol.join("plain"), vol.join("absolute")).unwrap();
        assert_eq!(
            reached_through(&vol.join("absolute")),
            [vol.join("absolute"), vol.join("plain")]
        );
    }

    #[test]
    fn a_symlink_loop_ends() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        symlink("b", base.join("a")).unwrap();
        symlink("a", base.join("b")).unwrap();
        let paths = reached_through(&base.join("a"));
        assert!(paths.contains(&base.join("a")) && paths.contains(&base.join("b")));
    }
}

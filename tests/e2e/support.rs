//! The end-to-end harness: the real `platform-gateway` binary, real compiled plugins, a real
//! socket on 127.0.0.1.
//!
//! [`Gateway::start`] writes a config into a fresh directory, starts the binary on an ephemeral
//! port, waits until `/readyz` answers, and kills the process when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The compiled plugins, built once per test process.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(|| xtask::build_plugins().map(|_| ())) {
        panic!("{e}");
    }
    xtask::plugin_path(name)
}

/// The build of `name` (`pool`, `podman`, `aws_ec2`) with its `planted` feature, a deliberate
/// behaviour change for the replay tests (see `xtask::build_planted_plugins`), built once per
/// test process.
pub fn planted_plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(|| xtask::build_planted_plugins().map(|_| ())) {
        panic!("{e}");
    }
    xtask::planted_plugin(name)
}

/// An example plugin written in another language (`python-inventory`, `js-inventory`), built
/// once per test process by its `build.sh`.
pub fn example_plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, Result<PathBuf, String>>>> =
        OnceLock::new();
    let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap();
    let result = built
        .entry(name.to_string())
        .or_insert_with(|| xtask::build_example_plugin(name));
    match result {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// `platform-gateway test-plugin WASM --settings SETTINGS --cache <the shared cache> EXTRA...`:
/// (success, stdout, stderr).
pub fn test_plugin(wasm: &Path, settings: &Path, extra: &[&str]) -> (bool, String, String) {
    let (wasm, settings) = (wasm.display().to_string(), settings.display().to_string());
    let cache = shared_cache().display().to_string();
    let mut args = vec![
        "test-plugin",
        &wasm,
        "--settings",
        &settings,
        "--cache",
        &cache,
    ];
    args.extend(extra);
    run_cli(&args)
}

/// The kit's last line, `N passed, N failed, N skipped`: (passed, failed, skipped).
pub fn kit_summary(stdout: &str) -> (u32, u32, u32) {
    let last = stdout.lines().last().unwrap_or_default();
    let counts: Vec<u32> = last
        .split(", ")
        .zip(["passed", "failed", "skipped"])
        .filter_map(|(part, word)| part.strip_suffix(&format!(" {word}"))?.parse().ok())
        .collect();
    match counts[..] {
        [passed, failed, skipped] => (passed, failed, skipped),
        _ => panic!("no kit summary at the end of:\n{stdout}"),
    }
}

/// A kit run that passed every check of the lifecycle (at least the sixteen of today), the race
/// included, and skipped none.
pub fn assert_kit_passed_everything((ok, stdout, stderr): &(bool, String, String)) {
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("PASS  concurrent provisions never hand out one node twice"),
        "{stdout}"
    );
    let (passed, failed, skipped) = kit_summary(stdout);
    assert!(
        passed >= 16 && failed == 0 && skipped == 0,
        "not every check passed:\n{stdout}"
    );
}

/// A compiled-plugin cache shared by every test, so each plugin is compiled once per run.
pub fn shared_cache() -> PathBuf {
    xtask::root().join("target/e2e-compiled-cache")
}

/// A loopback port free a moment ago (for a server that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TOML string literal.
pub fn toml_str(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// The pool plugin's `machines` setting (a TOML line per machine) for `machines` (id, class),
/// the n-th on `http://10.0.0.n:37000` (then 10.0.1.x, ...). The one inventory table of the
/// tests: the pool plugin, the planted fixture and the example plugins read this shape.
pub fn machines(machines: &[(impl AsRef<str>, &str)]) -> String {
    let list: Vec<String> = machines
        .iter()
        .enumerate()
        .map(|(i, (id, class))| {
            format!(
                "{{ id = {}, agent_address = \"http://10.0.{}.{}:37000\", node_class = {} }}",
                toml_str(id.as_ref()),
                i / 250,
                i % 250 + 1,
                toml_str(class)
            )
        })
        .collect();
    format!("machines = [\n  {},\n]\n", list.join(",\n  "))
}

/// [`machines`] for `count` machines of class `small`, `m1` to `m{count}`.
pub fn small_machines(count: usize) -> String {
    let ids: Vec<(String, &str)> = (1..=count).map(|i| (format!("m{i}"), "small")).collect();
    machines(&ids)
}

/// A `[backends.NAME]` table for the pool plugin with [`machines`].
pub fn pool_backend(name: &str, list: &[(impl AsRef<str>, &str)]) -> String {
    format!(
        "[backends.{name}]\nplugin = {}\n[backends.{name}.settings]\n{}\n",
        toml_str(&plugin("pool").display().to_string()),
        machines(list)
    )
}

/// A `[backends.NAME]` table for the fault fixture in `mode`, with extra `limits`.
pub fn fault_backend(name: &str, mode: &str, limits: &str) -> String {
    fault_backend_with(name, mode, limits, "")
}

/// Like [`fault_backend`], with extra settings lines (`key = value`).
pub fn fault_backend_with(name: &str, mode: &str, limits: &str, settings: &str) -> String {
    format!(
        "[backends.{name}]\nplugin = {}\nlimits = {{ {limits} }}\n[backends.{name}.settings]\nmode = {}\n{settings}\n\n",
        toml_str(&plugin("fault").display().to_string()),
        toml_str(mode)
    )
}

/// A misbehaving backend `bad` (provisions for store `bad`, and in discovery) beside a healthy
/// pool (everything else).
pub fn beside_a_pool(mode: &str, limits: &str, settings: &str) -> String {
    format!(
        "{}{}[[routes]]\nstore = \"bad\"\nbackend = \"bad\"\n\n[[routes]]\nbackend = \"pool\"\n",
        fault_backend_with("bad", mode, limits, settings),
        pool_backend("pool", &[("m1", "small"), ("m2", "small"), ("m3", "small")])
    )
}

/// Provision for store `bad`: (status, body, how long it took).
pub async fn provision_bad(gw: &Gateway) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, body) = gw
        .post("/provision", &provision_body("c1", "bad", "data", "small"))
        .await;
    (status, body, started.elapsed())
}

/// An error in the shape, naming backend `bad`, that says `needle` (in its message or cause).
pub fn assert_names_backend(status: u16, body: &Value, needle: &str) {
    assert_error_shape(status, body);
    let message = body["error_msg"].as_str().unwrap();
    assert!(message.contains("backend `bad`"), "{message}");
    let full = format!("{message} {}", body["error_cause"].as_str().unwrap_or(""));
    assert!(full.contains(needle), "{needle}: {full}");
}

/// A `[backends.NAME]` table for the static plugin; `clusters` is the TOML value of its
/// `clusters` setting.
pub fn static_backend(name: &str, clusters: &str) -> String {
    format!(
        "[backends.{name}]\nplugin = {}\n[backends.{name}.settings]\nclusters = {clusters}\n\n",
        toml_str(&plugin("static_clusters").display().to_string()),
    )
}

/// The generation number in a response's headers.
pub fn generation_of(headers: &reqwest::header::HeaderMap) -> u64 {
    headers["platform-gateway-generation"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A running gateway.
pub struct Gateway {
    child: Child,
    _temp: Option<Arc<tempfile::TempDir>>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The admin API's base URL, when the config enables it.
    pub admin: Option<String>,
    pub client: reqwest::Client,
    log: Arc<Mutex<Vec<String>>>,
}

/// A directory that outlives one gateway process (for restarts).
pub struct Workdir {
    temp: Arc<tempfile::TempDir>,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            temp: Arc::new(tempfile::tempdir().expect("temp dir")),
        }
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Write `config` (state and cache settings added) and start a gateway on it.
    pub async fn start(&self, config: &str) -> Gateway {
        let path = self.write_config(config);
        Gateway::spawn(&path, Some(self.temp.clone())).await
    }

    /// Start a gateway on the config file at `path`, as it is.
    pub async fn start_at(&self, path: &Path) -> Gateway {
        Gateway::spawn(path, Some(self.temp.clone())).await
    }

    /// Like [`Workdir::start`], with the log filtered by `filter` (`RUST_LOG`) instead of `info`.
    pub async fn start_logging(&self, config: &str, filter: &str) -> Gateway {
        let path = self.write_config(config);
        Gateway::spawn_with(&path, Some(self.temp.clone()), true, filter).await
    }

    /// Write `config` as it is (no cache settings added: a cold compiled cache) and start a
    /// gateway on it without waiting for it to be ready.
    pub async fn start_cold(&self, config: &str) -> Gateway {
        let path = self.path().join("gateway.toml");
        std::fs::write(&path, config).expect("write config");
        Gateway::spawn_with(&path, Some(self.temp.clone()), false, "info").await
    }

    /// Write `config` (state and cache settings added) as the gateway's config file, in place.
    pub fn write_config(&self, config: &str) -> PathBuf {
        let path = self.path().join("gateway.toml");
        let text = format!(
            "[state]\ndir = \"state\"\ncache_dir = {}\n\n{config}",
            toml_str(&shared_cache().display().to_string())
        );
        std::fs::write(&path, text).expect("write config");
        path
    }
}

impl Gateway {
    /// Start a gateway with `config` in a directory of its own.
    pub async fn start(config: &str) -> Gateway {
        Workdir::new().start(config).await
    }

    async fn spawn(config: &Path, temp: Option<Arc<tempfile::TempDir>>) -> Gateway {
        Gateway::spawn_with(config, temp, true, "info").await
    }

    async fn spawn_with(
        config: &Path,
        temp: Option<Arc<tempfile::TempDir>>,
        wait_ready: bool,
        log_filter: &str,
    ) -> Gateway {
        let mut command = Command::new(env!("CARGO_BIN_EXE_platform-gateway"));
        command.env("RUST_LOG", log_filter);
        Gateway::spawn_command(command, config, temp, wait_ready).await
    }

    /// Start `program` (another build of the gateway, such as the packaged static binary) on
    /// the config file at `config`, with an empty environment, and wait until it is ready.
    pub async fn start_program(program: &Path, config: &Path) -> Gateway {
        let mut command = Command::new(program);
        command.env_clear().env("RUST_LOG", "info");
        Gateway::spawn_command(command, config, None, true).await
    }

    async fn spawn_command(
        mut command: Command,
        config: &Path,
        temp: Option<Arc<tempfile::TempDir>>,
        wait_ready: bool,
    ) -> Gateway {
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start platform-gateway");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let admin = line.contains("admin listening on ");
                        let _ = tx.send((admin, rest.trim().to_string()));
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        // The admin listener, when configured, is announced before the public one.
        let mut admin = None;
        let base = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((true, address)) => admin = Some(address),
                Ok((false, address)) => break address,
                Err(_) => {
                    let _ = child.kill();
                    panic!("gateway did not start:\n{}", log.lock().unwrap().join("\n"));
                }
            }
        };
        let gateway = Gateway {
            child,
            _temp: temp,
            base,
            admin,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            log,
        };
        if wait_ready {
            gateway.wait_ready().await;
        }
        gateway
    }

    /// Wait (120 s at most) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_ready_through(&self.client).await;
    }

    /// [`Gateway::wait_ready`] through `client` (one that trusts the listener's certificate).
    pub async fn wait_ready_through(&self, client: &reqwest::Client) {
        wait_ready(client, &self.base, Duration::from_secs(120), || self.log()).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until the gateway has logged a line containing `needle` (10 s at most, then panic
    /// with the log). A line a request causes may be written after its response is sent, and
    /// reaches `log` through a pipe and a reader thread in any case.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the gateway never logged {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /discover`, expecting 200.
    pub async fn discover(&self) -> Value {
        let (status, body) = self.get("/discover").await;
        assert_eq!(status, 200, "discover failed: {body}");
        body
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        reply(r).await
    }

    /// `GET` with the reply's headers.
    pub async fn get_with_headers(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let headers = r.headers().clone();
        let (status, body) = reply(r).await;
        (status, headers, body)
    }

    /// A request to the admin API (which must be enabled).
    pub async fn admin(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        let base = self.admin.as_ref().expect("the admin API is not enabled");
        let url = format!("{base}{path}");
        let request = match body {
            Some(body) => self.client.post(url).json(body),
            None => self.client.get(url),
        };
        reply(request.send().await.expect("admin request")).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        reply(r).await
    }

    /// `POST` with the reply's headers.
    pub async fn post_with_headers(
        &self,
        path: &str,
        body: &Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let headers = r.headers().clone();
        let (status, body) = reply(r).await;
        (status, headers, body)
    }

    /// POST with an `Idempotency-Key` header.
    pub async fn post_with_key(&self, path: &str, body: &Value, key: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("POST");
        reply(r).await
    }

    /// The generation number the admin API reports.
    pub async fn admin_generation(&self) -> Value {
        let (status, body) = self.admin("/admin/generation", None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Poll the admin API until `done` holds for the reload status (20 s at most).
    pub async fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.admin_generation().await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Wait until `calls` calls of `backend` run in a plugin (its in-flight gauge on the admin
    /// API's `/metrics`, 20 s at most): how a test knows a call is inside the plugin, rather
    /// than sleeping and hoping it is. Returns how many scrapes it took.
    pub async fn wait_calls_in_flight(&self, backend: &str, calls: u64) -> usize {
        let base = self.admin.as_ref().expect("the admin API is not enabled");
        let needle =
            format!("platform_gateway_plugin_calls_in_flight{{backend=\"{backend}\"}} {calls}\n");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut scrapes = 0;
        loop {
            scrapes += 1;
            let text = self
                .client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics");
            if text.contains(&needle) {
                return scrapes;
            }
            assert!(
                Instant::now() < deadline,
                "never {calls} calls of `{backend}` in flight:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POST `body`, or `None` if the connection failed (the gateway was killed): (status, its
    /// `Retry-After`, the body, JSON or the text as a JSON string).
    pub async fn try_post(&self, path: &str, body: &Value) -> Option<(u16, Option<String>, Value)> {
        let reply = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = reply.status().as_u16();
        let retry_after = reply
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = reply.bytes().await.ok()?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        Some((status, retry_after, body))
    }

    /// The gateway's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal to the gateway process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's PID, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// POST a raw body with a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        reply(r).await
    }

    /// Stop with SIGTERM; the gateway must exit by itself, successfully.
    /// The `host:port` the admin API listens on (it must be enabled).
    pub fn admin_address(&self) -> String {
        let admin = self.admin.as_ref().expect("the admin API is not enabled");
        admin.trim_start_matches("http://").to_string()
    }

    /// The `host:port` the public API listens on.
    pub fn address(&self) -> String {
        let base = self.base.as_str();
        base.strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .unwrap_or(base)
            .to_string()
    }

    /// Wait up to `bound` for the process to exit by itself; its exit status, if it did.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's PID, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "exit after SIGTERM: {status}\n{}",
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the gateway ignored SIGTERM:\n{}", self.log());
    }
}

/// Run `futures` concurrently; each result comes with its place in the order they finished
/// (0 first). Ordering shows what waited for what, where elapsed time would only suggest it.
pub async fn with_arrival<T>(
    futures: impl IntoIterator<Item = impl std::future::Future<Output = T>>,
) -> Vec<(usize, T)> {
    let arrived = std::sync::atomic::AtomicUsize::new(0);
    let arrived = &arrived;
    futures::future::join_all(futures.into_iter().map(|f| async move {
        let result = f.await;
        (
            arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            result,
        )
    }))
    .await
}

/// The sorted arrival places (from [`with_arrival`]) of the replies whose status is `status`.
pub fn arrivals_of<B, C>(replies: &[(usize, (u16, B, C))], status: u16) -> Vec<usize> {
    let mut places: Vec<usize> = replies
        .iter()
        .filter(|(_, (s, _, _))| *s == status)
        .map(|(place, _)| *place)
        .collect();
    places.sort();
    places
}

/// Poll `GET {base}/readyz` through `client` until it answers 200 (`bound` at most, then panic
/// with `logs()`); the time it took. The one readiness wait of the tests.
pub async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    bound: Duration,
    logs: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "{base} never became ready:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A name no other test or test run uses: `prefix`, the process ID, the time, a counter.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// Write `text` as it is (no state or cache settings added, unlike [`Workdir::write_config`])
/// to `dir/gateway.toml`, for the commands that only read a config; its path.
pub fn write_config_in(dir: &Path, text: &str) -> String {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// Run the binary with `args` to completion: (success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_platform-gateway"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run platform-gateway");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The backend the ownership index names for `node_id` of `cluster_id`, as the offline
/// `platform-gateway route` reads it from the state store of the config at `config` (None: not
/// in the index, so a deprovision would ask every backend). Reading the index itself is what
/// shows it survived: a deprovision answered 204 could come from an index rebuilt by discovery.
pub fn indexed_owner(config: &Path, cluster_id: &str, node_id: &str) -> Option<String> {
    let request = tempfile::NamedTempFile::new().expect("request file");
    std::fs::write(
        request.path(),
        json!({ "cluster_id": cluster_id, "node_id": node_id }).to_string(),
    )
    .expect("write request");
    let (ok, stdout, stderr) = run_cli(&[
        "route",
        "--config",
        config.to_str().expect("UTF-8 path"),
        request.path().to_str().expect("UTF-8 path"),
        "-o",
        "json",
    ]);
    assert!(ok, "route failed: {stderr}");
    let explanation: Value = serde_json::from_str(&stdout).expect("route's JSON");
    match explanation["decision"]["by"].as_str() {
        Some("owner") => Some(
            explanation["decision"]["backend"]
                .as_str()
                .expect("backend")
                .to_string(),
        ),
        Some("discovery") => None,
        _ => panic!("not a deprovision decision: {explanation}"),
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn reply(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let bytes = r.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("reply is not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, body)
}

/// Assert `body` has the error shape Replicante Core decodes.
pub fn assert_error_shape(status: u16, body: &Value) {
    assert!(
        (400..600).contains(&status),
        "not an error status: {status}"
    );
    assert_eq!(body["error"], json!(true), "no `error: true` in {body}");
    assert!(
        body["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
        "no `error_msg` in {body}"
    );
    if let Some(cause) = body.get("error_cause") {
        assert!(cause.is_string(), "`error_cause` is not a string in {body}");
    }
}

/// A provision body in the seed's schema.
pub fn provision_body(cluster_id: &str, store: &str, group: &str, class: &str) -> Value {
    json!({
        "cluster": {
            "cluster_id": cluster_id,
            "store": store,
            "store_version": "4.0",
            "attributes": {},
            "nodes": {
                group: { "attributes": {}, "desired_count": 3, "node_class": class }
            }
        },
        "provision": { "node_group_id": group }
    })
}

/// The node IDs of `cluster_id` in a discovery answer, sorted.
pub fn node_ids(discovery: &Value, cluster_id: &str) -> Vec<String> {
    let mut ids: Vec<String> = discovery["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter(|c| c["cluster_id"] == cluster_id)
        .flat_map(|c| c["nodes"].as_array().expect("nodes").clone())
        .map(|n| n["node_id"].as_str().expect("node_id").to_string())
        .collect();
    ids.sort();
    ids
}

/// A certificate authority made for the test.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate, as PEM.
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key, as PEM.
    pub fn sign(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

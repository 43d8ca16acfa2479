//! Reload latency, measured on the real binary over loopback (`cargo bench --bench reload`).
//!
//! - plugin write -> first response from the new generation, when the new build must be
//!   compiled (each round appends a custom section, so the digest is new) and when it is in the
//!   compiled cache;
//! - a config-only reload: through the file watcher (write -> first response) and through
//!   `POST /admin/reload` (the reload itself, no debounce).
//!
//! File-triggered figures include the watcher's debounce (the default, 250 ms), which is what an
//! operator sees.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;

struct Gateway {
    child: Child,
    base: String,
    admin: String,
    client: reqwest::Client,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_platform-gateway"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut base, mut admin) = (None, None);
    while base.is_none() {
        let line = lines.next().expect("gateway output").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            if line.contains("admin listening") {
                admin = Some(rest.trim().to_string());
            } else {
                base = Some(rest.trim().to_string());
            }
        }
    }
    // Keep draining the log so the gateway never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Gateway {
        child,
        base: base.unwrap(),
        admin: admin.expect("admin listener"),
        client: reqwest::Client::new(),
    }
}

impl Gateway {
    async fn generation(&self) -> Option<u64> {
        let reply = self
            .client
            .get(format!("{}/discover", self.base))
            .send()
            .await
            .ok()?;
        reply
            .headers()
            .get("platform-gateway-generation")?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// Time until a response comes from `generation` or later.
    async fn wait_generation(&self, generation: u64, since: Instant) -> Duration {
        loop {
            if self.generation().await.is_some_and(|g| g >= generation) {
                return since.elapsed();
            }
            assert!(since.elapsed() < Duration::from_secs(60), "no reload");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn load_ms(&self) -> u64 {
        let status: serde_json::Value = self
            .client
            .get(format!("{}/admin/generation", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["load_ms"].as_u64().unwrap()
    }
}

/// `bytes` with a custom section appended: the same component, a new digest.
fn with_custom_section(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"bench";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128 && name.len() < 128, "one-byte LEB128 sizes");
    let mut out = bytes.to_vec();
    out.extend([0u8, size as u8, name.len() as u8]);
    out.extend(name);
    out.extend(payload);
    out
}

fn replace(file: &Path, bytes: &[u8]) {
    let staged = file.with_extension("new");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, file).unwrap();
}

fn summary(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<48} min {:>8.1} ms   median {:>8.1} ms   max {:>8.1} ms   (n={})",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

fn main() {
    // `cargo test --all-targets` runs benches once in test mode: skip the measurement there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    xtask::build_plugins().expect("plugins build");
    let pool = std::fs::read(xtask::plugin_path("pool")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.wasm");
    std::fs::write(&file, &pool).unwrap();
    let config_path = dir.path().join("gateway.toml");
    let config = |timeout_ms: u64| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[backends.pool]\nplugin = \"plugin.wasm\"\n\
             limits = {{ timeout = \"{timeout_ms}ms\" }}\n[backends.pool.settings]\n\
             machines = [{{ id = \"m1\", agent_address = \"http://10.0.0.1:37000\" }}]\n\n\
             [[routes]]\nbackend = \"pool\"\n"
        )
    };
    std::fs::write(&config_path, config(5000)).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let gw = start(&config_path);
        gw.wait_generation(1, Instant::now()).await;
        let mut next = 2;

        let (mut cold, mut cold_build) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let bytes =
                with_custom_section(&pool, &format!("round-{round}-{}", std::process::id()));
            let since = Instant::now();
            replace(&file, &bytes);
            cold.push(gw.wait_generation(next, since).await);
            cold_build.push(Duration::from_millis(gw.load_ms().await));
            next += 1;
        }
        let mut warm = Vec::new();
        let cached = [
            with_custom_section(&pool, "cached-a"),
            with_custom_section(&pool, "cached-b"),
        ];
        for bytes in &cached {
            replace(&file, bytes);
            gw.wait_generation(next, Instant::now()).await;
            next += 1;
        }
        for round in 0..ROUNDS {
            let since = Instant::now();
            replace(&file, &cached[round % 2]);
            warm.push(gw.wait_generation(next, since).await);
            next += 1;
        }
        let mut config_watch = Vec::new();
        for round in 0..ROUNDS {
            let since = Instant::now();
            std::fs::write(&config_path, config(6000 + round as u64)).unwrap();
            config_watch.push(gw.wait_generation(next, since).await);
            next += 1;
        }
        let mut config_admin = Vec::new();
        for _ in 0..ROUNDS {
            let since = Instant::now();
            let reply = gw
                .client
                .post(format!("{}/admin/reload", gw.admin))
                .send()
                .await
                .unwrap();
            assert!(reply.status().is_success());
            config_admin.push(since.elapsed());
        }

        println!("reload latency (platform-gateway release build, loopback)");
        summary("plugin write -> new generation (compiled)", &mut cold);
        summary("  of which building the generation", &mut cold_build);
        summary("plugin write -> new generation (cached)", &mut warm);
        summary("config-only write -> new generation", &mut config_watch);
        summary("config-only POST /admin/reload", &mut config_admin);
    });
}

//! `cargo xtask soak`: a bounded soak of one gateway on loopback, for the security review's
//! promise that hostile clients and plugins cost their own requests and nothing else.
//!
//! For `--minutes` it mixes: provisions and deprovisions on a pool (every acknowledged node is
//! checked against a discovery at the end), discoveries, clients that pipeline requests and
//! read nothing, a plugin that logs 1 MiB per call, one that writes 1 KiB keys until its state
//! quota refuses it, and SIGHUP reloads from this process every few seconds. It samples the gateway's
//! RSS and open file descriptors, prints them over time, and fails if an acknowledged provision
//! was lost, a well-behaved backend stopped answering, or RSS or descriptors kept growing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Server, free_port, pool_backend, wait_ready};

/// What the soak counted, by request kind and outcome.
#[derive(Default)]
struct Counts(Mutex<BTreeMap<(&'static str, String), u64>>);

impl Counts {
    fn add(&self, kind: &'static str, outcome: impl Into<String>) {
        *self
            .0
            .lock()
            .unwrap()
            .entry((kind, outcome.into()))
            .or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}

/// One request on a connection of its own: the status and the body (`None`: no answer).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut reply))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&reply);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Some((status, body))
}

fn provision_body(cluster: &str, store: &str) -> Value {
    json!({
        "cluster": { "cluster_id": cluster, "store": store, "store_version": "1",
                     "nodes": { "data": { "desired_count": 1, "node_class": "small" } } },
        "provision": { "node_group_id": "data", "count": 1 },
    })
}

/// RSS in KiB and open descriptors of process `pid`.
fn sample(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

pub fn run(gateway: &Path, plugins: &Path, work: &Path, minutes: f64) -> anyhow::Result<()> {
    let addr = free_port()?;
    let admin = free_port()?;
    let fault = plugins.join("fault.wasm");
    if !fault.is_file() {
        bail!(
            "{} is missing: build the test plugins (cargo xtask plugins)",
            fault.display()
        );
    }
    let config = format!(
        "[server]\nlisten = \"{addr}\"\nwrite_timeout = \"2s\"\nhead_timeout = \"5s\"\n\
         [admin]\nlisten = \"{admin}\"\n[state]\ndir = \"state\"\n\
         [discovery]\non_backend_failure = \"partial\"\n\n{pool}\
         [backends.noisy]\nplugin = \"{fault}\"\n[backends.noisy.settings]\nmode = \"log-flood\"\n\n\
         [backends.filler]\nplugin = \"{fault}\"\nlimits = {{ timeout = \"2s\" }}\n\
         [backends.filler.settings]\nmode = \"fill-state\"\nfill_keys = 1000000\nfill_bytes = 1024\n\n\
         [[routes]]\nstore = \"kafka\"\nbackend = \"noisy\"\n\
         [[routes]]\nstore = \"redis\"\nbackend = \"filler\"\n\
         [[routes]]\nbackend = \"pool\"\n",
        pool = pool_backend(plugins, 64),
        fault = fault.display(),
    );
    let _ = std::fs::remove_dir_all(work.join("soak"));
    std::fs::create_dir_all(work.join("soak"))?;
    let config_path = work.join("soak/gateway.toml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(work.join("soak/gateway.log"))?;
    let child = Command::new(gateway)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", gateway.display()))?;
    let pid = child.id();
    let mut server = Server { child, addr };
    wait_ready(
        addr,
        &mut server.child,
        Instant::now() + Duration::from_secs(300),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(soak(addr, pid, Duration::from_secs_f64(minutes * 60.0)));
    drop(server);
    println!("gateway log: {}", work.join("soak/gateway.log").display());
    outcome
}

async fn soak(addr: SocketAddr, pid: u32, length: Duration) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Nodes acknowledged and not deprovisioned: each must be in the last discovery.
    let alive: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let dropped_connections = Arc::new(AtomicU64::new(0));
    // Workers finish their request before stopping (one cut short could have been carried out
    // without being recorded); the non-readers and the reloader are cut short.
    let mut tasks = Vec::new();
    let mut background = Vec::new();

    for worker in 0..4 {
        let (counts, stop, alive) = (counts.clone(), stop.clone(), alive.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut mine: Vec<(String, String)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let cluster = format!("soak-{worker}-{n}");
                match request(
                    addr,
                    "POST",
                    "/provision",
                    Some(&provision_body(&cluster, "mongodb")),
                )
                .await
                {
                    Some((200, body)) => {
                        counts.add("provision", "200");
                        if let Some(node) = body["node_ids"][0].as_str() {
                            alive
                                .lock()
                                .unwrap()
                                .insert(format!("{cluster}/{node}"), cluster.clone());
                            mine.push((cluster, node.to_string()));
                        }
                    }
                    Some((status, _)) => counts.add("provision", status.to_string()),
                    None => counts.add("provision", "no answer"),
                }
                // Keep up to 8 nodes each alive (of 64 machines); deprovision the oldest.
                if mine.len() > 8 {
                    let (cluster, node) = mine.remove(0);
                    let body = json!({ "cluster_id": cluster, "node_id": node });
                    match request(addr, "POST", "/deprovision", Some(&body)).await {
                        Some((204, _)) => {
                            counts.add("deprovision", "204");
                            alive.lock().unwrap().remove(&format!("{cluster}/{node}"));
                        }
                        Some((status, _)) => {
                            counts.add("deprovision", status.to_string());
                            mine.insert(0, (cluster, node));
                        }
                        None => {
                            counts.add("deprovision", "no answer");
                            mine.insert(0, (cluster, node));
                        }
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match request(addr, "GET", "/discover", None).await {
                    Some((status, _)) => counts.add("discover", status.to_string()),
                    None => counts.add("discover", "no answer"),
                }
            }
        }));
    }
    for (store, pause) in [("kafka", 100u64), ("redis", 200)] {
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let kind = if store == "kafka" {
                "log-flood"
            } else {
                "state-fill"
            };
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = provision_body(&format!("{store}-{n}"), store);
                match request(addr, "POST", "/provision", Some(&body)).await {
                    Some((status, _)) => counts.add(kind, status.to_string()),
                    None => counts.add(kind, "no answer"),
                }
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    for _ in 0..2 {
        let (stop, dropped) = (stop.clone(), dropped_connections.clone());
        background.push(tokio::spawn(async move {
            // Quick, small answers, so the gateway's buffers toward this client fill fast.
            let request = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".repeat(256);
            while !stop.load(Ordering::Relaxed) {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                    break;
                };
                let _ = socket.set_recv_buffer_size(4096);
                let Ok(mut stream) = socket.connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Pipeline and never read, until the gateway drops the connection (or 60 s).
                let held = tokio::time::timeout(Duration::from_secs(60), async {
                    loop {
                        if stream.write_all(&request).await.is_err() {
                            return;
                        }
                    }
                })
                .await;
                if held.is_ok() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        background.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = tokio::task::spawn_blocking(move || reload(pid)).await;
            }
        }));
    }

    let started = Instant::now();
    let mut samples: Vec<(u64, u64, usize, u64)> = Vec::new();
    println!("  time    RSS (MiB)   fds   requests  non-readers dropped");
    while started.elapsed() < length {
        let (rss, fds) = sample(pid);
        let at = started.elapsed().as_secs();
        let requests = counts.total();
        println!(
            "  {:>4} s  {:>9.1}  {:>5}  {:>9}  {:>6}",
            at,
            rss as f64 / 1024.0,
            fds,
            requests,
            dropped_connections.load(Ordering::Relaxed)
        );
        samples.push((at, rss, fds, requests));
        tokio::time::sleep(
            Duration::from_secs(30)
                .min(length.saturating_sub(started.elapsed()) + Duration::from_millis(1)),
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in background {
        task.abort();
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    let (rss, fds) = sample(pid);
    samples.push((started.elapsed().as_secs(), rss, fds, counts.total()));

    // Every acknowledged node that was not deprovisioned is still discovered.
    let discovery = request(addr, "GET", "/discover", None)
        .await
        .context("the final discovery got no answer")?;
    let mut discovered = std::collections::BTreeSet::new();
    for cluster in discovery.1["clusters"].as_array().into_iter().flatten() {
        for node in cluster["nodes"].as_array().into_iter().flatten() {
            discovered.insert(format!(
                "{}/{}",
                cluster["cluster_id"].as_str().unwrap_or_default(),
                node["node_id"].as_str().unwrap_or_default()
            ));
        }
    }
    let alive = alive.lock().unwrap();
    let lost: Vec<&String> = alive.keys().filter(|k| !discovered.contains(*k)).collect();

    let mut report = String::new();
    for ((kind, outcome), n) in counts.0.lock().unwrap().iter() {
        let _ = writeln!(report, "  {kind:<12} {outcome:<10} {n:>9}");
    }
    println!("\nrequests by kind and outcome:\n{report}");
    println!(
        "non-reading connections dropped by the gateway: {}",
        dropped_connections.load(Ordering::Relaxed)
    );
    println!(
        "acknowledged nodes alive at the end: {}, of them not discovered: {}",
        alive.len(),
        lost.len()
    );
    // Growth is judged from the first sample after a minute of warm-up to the last.
    let settled = samples
        .iter()
        .find(|s| s.0 >= 60)
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let last = *samples.last().unwrap();
    let max_rss = samples.iter().map(|s| s.1).max().unwrap_or(0);
    println!(
        "RSS: {:.1} MiB settled, {:.1} MiB at the end, {:.1} MiB at most; fds: {} settled, {} at the end",
        settled.1 as f64 / 1024.0,
        last.1 as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        settled.2,
        last.2
    );
    let counts = counts.0.lock().unwrap();
    let ok = |kind: &'static str, status: &str| {
        counts
            .get(&(kind, status.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let mut failures = Vec::new();
    if !lost.is_empty() {
        failures.push(format!("acknowledged nodes lost: {lost:?}"));
    }
    if ok("provision", "200") == 0 || ok("discover", "200") == 0 {
        failures.push("the pool or discovery stopped answering".to_string());
    }
    let bad: u64 = counts
        .iter()
        .filter(|((kind, outcome), _)| {
            matches!(*kind, "provision" | "deprovision" | "discover")
                && !matches!(outcome.as_str(), "200" | "204")
        })
        .map(|(_, n)| n)
        .sum();
    if bad > 0 {
        failures.push(format!(
            "{bad} requests to the well-behaved pool or to discovery failed"
        ));
    }
    if last.1 > settled.1 + settled.1 / 2 + 16 * 1024 {
        failures.push("RSS grew by more than half after the warm-up".to_string());
    }
    if last.2 > settled.2 + 32 {
        failures.push("open file descriptors grew".to_string());
    }
    if failures.is_empty() {
        println!("soak: passed");
        Ok(())
    } else {
        bail!("soak failed: {}", failures.join("; "))
    }
}

/// SIGHUP to the gateway `pid`, from a second process (`kill`), as an operator's would.
fn reload(pid: u32) {
    let _ = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .stdout(Stdio::null())
        .status();
}

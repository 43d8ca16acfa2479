//! Provision + deprovision throughput and latency with each state store, on the real binary over
//! loopback (`cargo bench --bench replicas`): the embedded store with one gateway, and a
//! three-member etcd cluster (started here, Debian's `etcd-server`) with one and with three
//! gateways.
//!
//! A bounded client: [`CLIENTS`] workers, each provisioning one node of the `pool` backend and
//! deprovisioning it (through the next replica, when there are several), [`CYCLES`] times in
//! all. Latency is per request, from send to the whole answer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use xtask::etcd::EtcdCluster;

/// Concurrent clients.
const CLIENTS: usize = 16;
/// Provision + deprovision cycles per measurement (each is two requests).
const CYCLES: usize = 1000;
/// Cycles before measuring (plugin instances warm, connections open).
const WARMUP: usize = 64;
/// Machines in the pool: more than the clients, so no provision finds it full.
const MACHINES: usize = 64;

struct Gateway {
    child: Child,
    base: String,
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
        .env("RUST_LOG", "warn,platform_gateway=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("gateway output").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1)
            && !line.contains("admin listening")
        {
            break rest.trim().to_string();
        }
    };
    // Keep draining the log so the gateway never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Gateway { child, base }
}

async fn wait_ready(client: &reqwest::Client, gw: &Gateway) {
    let started = Instant::now();
    loop {
        if let Ok(reply) = client.get(format!("{}/readyz", gw.base)).send().await
            && reply.status() == 200
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pool(plugin: &Path) -> String {
    let machines: Vec<String> = (0..MACHINES)
        .map(|i| {
            format!(
                "{{ id = \"m{i:03}\", agent_address = \"http://10.0.{}.{}:37000\", node_class = \"small\" }}",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    format!(
        "[backends.pool]\nplugin = {:?}\nlimits = {{ concurrency = {CLIENTS}, timeout = \"30s\" }}\n\
         [backends.pool.settings]\nmachines = [\n  {}\n]\n\n[[routes]]\nbackend = \"pool\"\n",
        plugin.display().to_string(),
        machines.join(",\n  ")
    )
}

struct Figures {
    wall: Duration,
    provision: Vec<Duration>,
    deprovision: Vec<Duration>,
}

/// Run `cycles` provision + deprovision cycles from [`CLIENTS`] workers over `bases`.
async fn cycles(client: &reqwest::Client, bases: &[String], cycles: usize) -> Figures {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (client, bases, next) = (client.clone(), bases.to_vec(), next.clone());
            tokio::spawn(async move {
                let (mut provision, mut deprovision) = (Vec::new(), Vec::new());
                let cluster = format!("bench-{w}");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cycles {
                        return (provision, deprovision);
                    }
                    let body = json!({
                        "cluster": {
                            "cluster_id": cluster, "store": "mongodb", "store_version": "4.0",
                            "attributes": {},
                            "nodes": { "data": { "attributes": {}, "desired_count": 1,
                                                 "node_class": "small" } }
                        },
                        "provision": { "node_group_id": "data" }
                    });
                    let sent = Instant::now();
                    let reply = client
                        .post(format!("{}/provision", bases[i % bases.len()]))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = reply.status();
                    let answer: serde_json::Value = reply.json().await.unwrap();
                    provision.push(sent.elapsed());
                    assert_eq!(status, 200, "{answer}");
                    let node = answer["node_ids"][0].as_str().unwrap().to_string();
                    let sent = Instant::now();
                    let reply = client
                        .post(format!("{}/deprovision", bases[(i + 1) % bases.len()]))
                        .json(&json!({ "cluster_id": cluster, "node_id": node }))
                        .send()
                        .await
                        .unwrap();
                    let status = reply.status();
                    let _ = reply.bytes().await.unwrap();
                    deprovision.push(sent.elapsed());
                    assert_eq!(status, 204, "deprovision {node}");
                }
            })
        })
        .collect();
    let mut figures = Figures {
        wall: Duration::ZERO,
        provision: Vec::new(),
        deprovision: Vec::new(),
    };
    for worker in workers {
        let (p, d) = worker.await.unwrap();
        figures.provision.extend(p);
        figures.deprovision.extend(d);
    }
    figures.wall = started.elapsed();
    figures
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i].as_secs_f64() * 1000.0
}

fn row(name: &str, mut f: Figures) {
    let requests = f.provision.len() + f.deprovision.len();
    println!(
        "{name:<28} {:>9.0} req/s {:>9.0} cycles/s   provision p50 {:>6.1} ms p99 {:>6.1} ms   \
         deprovision p50 {:>6.1} ms p99 {:>6.1} ms",
        requests as f64 / f.wall.as_secs_f64(),
        f.provision.len() as f64 / f.wall.as_secs_f64(),
        percentile(&mut f.provision, 0.50),
        percentile(&mut f.provision, 0.99),
        percentile(&mut f.deprovision, 0.50),
        percentile(&mut f.deprovision, 0.99),
    );
}

async fn measure(name: &str, configs: &[std::path::PathBuf]) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let gateways: Vec<Gateway> = configs.iter().map(|c| start(c)).collect();
    for gw in &gateways {
        wait_ready(&client, gw).await;
    }
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    cycles(&client, &bases, WARMUP).await;
    row(name, cycles(&client, &bases, CYCLES).await);
}

fn main() {
    // `cargo test --all-targets` runs benches once in test mode: skip the measurement there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    xtask::build_plugins().expect("plugins build");
    let plugin = xtask::plugin_path("pool");
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(3);
    let endpoints: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    let write = |name: &str, state: String| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("{state}\n{}", pool(&plugin))).unwrap();
        path
    };
    let embedded = write(
        "embedded",
        format!(
            "[state]\ndir = {:?}\n",
            dir.path().join("embedded").display().to_string()
        ),
    );
    let etcd = |name: &str, prefix: &str| {
        write(
            name,
            format!(
                "[state]\nbackend = \"etcd\"\nendpoints = [{}]\nprefix = \"/platform-gateway/bench-{prefix}\"\n\
                 timeout = \"2s\"\ndir = {:?}\n",
                endpoints.join(", "),
                dir.path().join(name).display().to_string()
            ),
        )
    };
    let etcd_one = etcd("etcd-one", "one");
    let etcd_three: Vec<_> = (0..3)
        .map(|i| etcd(&format!("etcd-three-{i}"), "three"))
        .collect();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        println!(
            "provision + deprovision, {CLIENTS} concurrent clients, {CYCLES} cycles \
             (platform-gateway release build, loopback, 3-member etcd {})",
            etcd_version()
        );
        measure("embedded store, 1 replica", &[embedded]).await;
        measure("etcd (3 members), 1 replica", &[etcd_one]).await;
        measure("etcd (3 members), 3 replicas", &etcd_three).await;
    });
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_default()
}

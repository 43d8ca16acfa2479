//! A bounded loopback load: a fixed number of keep-alive connections, each sending one request
//! after the other for a fixed time (and at most a fixed count), every latency recorded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// What each connection does, over and over.
#[derive(Clone, Copy)]
pub enum Work {
    /// `GET /discover`.
    Discover,
    /// `POST /provision` of one node in a cluster of the connection's own, then
    /// `POST /deprovision` of the node it got.
    ProvisionDeprovision,
    /// `POST /admin/plan/provision` of the same provision (on the admin listener): what a plan
    /// costs beside the real call.
    PlanProvision,
}

/// How long and how hard.
#[derive(Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_requests: u64,
}

/// The latencies of one kind of request.
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1), the samples being sorted.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[rank]
    }
}

/// What a run measured.
pub struct Measured {
    pub elapsed: Duration,
    /// By request kind (`discover`, `provision`, `deprovision`), sorted.
    pub latencies: BTreeMap<&'static str, Latencies>,
}

impl Measured {
    pub fn requests(&self) -> usize {
        self.latencies.values().map(Latencies::count).sum()
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }

    /// All requests' latencies together.
    pub fn all(&self) -> Latencies {
        let mut all: Vec<Duration> = self.latencies.values().flat_map(|l| l.0.clone()).collect();
        all.sort();
        Latencies(all)
    }
}

struct Connection {
    sender: SendRequest<Full<Bytes>>,
    recorded: Vec<(&'static str, Duration)>,
    recording: bool,
}

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            recorded: Vec::new(),
            recording: false,
        })
    }

    /// Send one request; its latency is recorded under `kind` once the warm-up is over.
    async fn send(
        &mut self,
        kind: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: StatusCode,
    ) -> anyhow::Result<Bytes> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        let started = Instant::now();
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::new(body))?)
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let latency = started.elapsed();
        if status != expect {
            bail!(
                "{kind}: answered {status}, not {expect}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        if self.recording {
            self.recorded.push((kind, latency));
        }
        Ok(body)
    }

    async fn step(&mut self, work: Work, worker: usize) -> anyhow::Result<()> {
        match work {
            Work::Discover => {
                self.send("discover", Method::GET, "/discover", None, StatusCode::OK)
                    .await?;
            }
            Work::PlanProvision => {
                let request = provision_request(&format!("bench-plan-{worker}"));
                self.send(
                    "plan",
                    Method::POST,
                    "/admin/plan/provision",
                    Some(&request),
                    StatusCode::OK,
                )
                .await?;
            }
            Work::ProvisionDeprovision => {
                let cluster = format!("bench-{worker}");
                let request = provision_request(&cluster);
                let body = self
                    .send(
                        "provision",
                        Method::POST,
                        "/provision",
                        Some(&request),
                        StatusCode::OK,
                    )
                    .await?;
                let answer: Value = serde_json::from_slice(&body)?;
                let node = answer["node_ids"][0]
                    .as_str()
                    .context("provision answered no node ID")?;
                let request = serde_json::json!({ "cluster_id": cluster, "node_id": node });
                self.send(
                    "deprovision",
                    Method::POST,
                    "/deprovision",
                    Some(&request),
                    StatusCode::NO_CONTENT,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// A provision of one `small` node in `cluster`'s `data` group.
fn provision_request(cluster: &str) -> Value {
    serde_json::json!({
        "cluster": {
            "cluster_id": cluster,
            "store": "mongodb",
            "store_version": "4.0",
            "attributes": {},
            "nodes": { "data": { "attributes": {}, "desired_count": 1, "node_class": "small" } }
        },
        "provision": { "node_group_id": "data" }
    })
}

/// Drive `addr` with `work` under `load`.
pub async fn run(addr: SocketAddr, work: Work, load: Load) -> anyhow::Result<Measured> {
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let measure_from = started + load.warmup;
    let end = measure_from + load.duration;
    let mut workers = Vec::new();
    for worker in 0..load.connections {
        let sent = sent.clone();
        workers.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await?;
            loop {
                let now = Instant::now();
                if now >= end || sent.fetch_add(1, Ordering::Relaxed) >= load.max_requests {
                    break;
                }
                connection.recording = now >= measure_from;
                connection.step(work, worker).await?;
            }
            anyhow::Ok(connection.recorded)
        }));
    }
    let mut latencies: BTreeMap<&'static str, Latencies> = BTreeMap::new();
    for worker in workers {
        for (kind, latency) in worker.await?? {
            latencies.entry(kind).or_default().0.push(latency);
        }
    }
    let elapsed = Instant::now()
        .min(end)
        .saturating_duration_since(measure_from);
    for kind in latencies.values_mut() {
        kind.0.sort();
    }
    Ok(Measured { elapsed, latencies })
}

/// Provision `count` nodes in `cluster`, one provision after the other on one connection:
/// allocations for the discoveries of a load to read.
pub async fn provision(addr: SocketAddr, cluster: &str, count: usize) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr).await?;
    let request = provision_request(cluster);
    for _ in 0..count {
        connection
            .send(
                "provision",
                Method::POST,
                "/provision",
                Some(&request),
                StatusCode::OK,
            )
            .await?;
    }
    Ok(())
}

/// One `GET path` on a fresh connection: the status, the body, and how long from sending the
/// request to the body's last byte.
pub async fn get_once(
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(StatusCode, Bytes, Duration)> {
    let mut connection = Connection::open(addr).await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))?;
    let started = Instant::now();
    connection.sender.ready().await?;
    let response = connection.sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body, started.elapsed()))
}

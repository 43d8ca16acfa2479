//! Test fixture, not shipped: a plugin whose every operation misbehaves as the `mode` setting
//! says, so that the gateway's tests can pin what it does with a misbehaving plugin.
//!
//! Modes: `echo` (provision answers one node whose ID is the request it received, as JSON;
//! discover reports one node, `node_id` in cluster `cluster_id` from the settings; deprovision
//! succeeds for that node only), `loop` (spins forever), `oom` (allocates until it cannot),
//! `trap` (executes `unreachable`), `panic`, `sleep` (sleeps `sleep_ms`, then behaves as `echo`),
//! `huge` (discovery reports `huge_nodes` nodes), `invalid` (what is invalid is the `invalid`
//! setting: by default discovery reports a node without an ID and provision a count its node
//! IDs disagree with; `repeated-id` a node ID twice in both; `empty-id` provision's node ID
//! empty; `no-address`, `cluster-twice`, `empty-cluster` discovery's), `state-loop` (writes state in a tight loop,
//! ignoring errors), `probe` (tries the filesystem, the environment and a socket to `probe_addr`,
//! and fails with a report of what it reached), `leak` (puts the `token` setting in a log message,
//! stdout and stderr, and fails with it in its message), `chatty` (prints 1 MiB to
//! stdout and to stderr, then behaves as `echo`), `busy` (every operation answers `unavailable`
//! with a retry hint of 7 seconds), `log-flood` (logs a message with a newline, then 1 MiB in
//! 1,024 messages, then behaves as `echo`), `fill-state` (writes keys `fill/000000`,
//! `fill/000001`... with values of `fill_bytes` bytes, up to `fill_keys` of them, and at the first
//! refusal answers it, in the same error kind, after `stored N keys, then: `), `remember` (fails
//! if it finds what an earlier call wrote into its memory, in a static near the start of the heap
//! and in one past the first 2 MiB, then writes there and behaves as `echo`).

use std::sync::atomic::{AtomicU64, Ordering};

use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, settings,
};

/// What a `remember` call leaves behind in its memory, for the next call to (not) find.
const LEFT_BEHIND: u64 = 0x5EC2_E71E_F7BE_041D;

/// Zero at instantiation (bss); the gateway resets the kept-resident first pages of a memory by
/// hand, the rest through the kernel: `LOW` sits in the first, `HIGH`'s last word in the second.
static LOW: AtomicU64 = AtomicU64::new(0);
static HIGH: [AtomicU64; 3 << 17] = [const { AtomicU64::new(0) }; 3 << 17];

fn setting(key: &str, default: &str) -> Result<String, Error> {
    Ok(settings::text(key)?.unwrap_or_else(|| default.to_string()))
}

fn misbehave() -> Result<(), Error> {
    let mode = settings::text("mode")?.unwrap_or_else(|| "echo".to_string());
    match mode.as_str() {
        "echo" | "huge" | "invalid" => Ok(()),
        "busy" => Err(Error::unavailable_for(
            "the fault plugin is busy on purpose",
            7,
        )),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => core::arch::wasm32::unreachable(),
        "panic" => panic!("the fault plugin panics on purpose"),
        "state-loop" => loop {
            let _ = platform_gateway_sdk::state::set("spin", b"x");
        },
        "probe" => Err(Error::Internal(probe())),
        "leak" => {
            let token = settings::text("token")?.unwrap_or_default();
            platform_gateway_sdk::log::warn(&format!("the token is {token}"));
            println!("stdout says the token is {token}");
            eprintln!("stderr says the token is {token}");
            Err(Error::Internal(format!("the token is {token}")))
        }
        "chatty" => {
            let line = "x".repeat(1023);
            for _ in 0..1024 {
                println!("{line}");
                eprintln!("{line}");
            }
            Ok(())
        }
        "log-flood" => {
            platform_gateway_sdk::log::warn(
                "one line\nERROR forged line that the plugin did not get to write",
            );
            let line = "y".repeat(1023);
            for _ in 0..1024 {
                platform_gateway_sdk::log::info(&line);
            }
            Ok(())
        }
        "fill-state" => fill_state(),
        "sleep" => {
            let ms: u64 = settings::value("sleep_ms")?.unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        // `resources`: holds 10,000 host resources (timers) at once, over the host's cap per
        // call, then behaves as `echo`.
        "resources" => {
            let held: Vec<_> = (0..10_000)
                .map(|_| wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000))
                .collect();
            std::hint::black_box(&held);
            Ok(())
        }
        "remember" => {
            let high = &HIGH[HIGH.len() - 1];
            let found = (
                LOW.swap(LEFT_BEHIND, Ordering::SeqCst),
                high.swap(LEFT_BEHIND, Ordering::SeqCst),
            );
            if found != (0, 0) {
                return Err(Error::Internal(format!(
                    "found memory left by an earlier call: {:#x} low, {:#x} high",
                    found.0, found.1
                )));
            }
            Ok(())
        }
        other => Err(Error::Internal(format!("unknown mode `{other}`"))),
    }
}

/// What the sandbox let through: each probe says `denied` or what it got.
fn probe() -> String {
    let fs = match std::fs::read_dir("/") {
        Ok(entries) => format!("listed {} entries", entries.count()),
        Err(_) => match std::fs::read("/etc/passwd") {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(_) => "denied".to_string(),
        },
    };
    let env = match std::env::vars().count() {
        0 => "denied".to_string(),
        n => format!("{n} variables"),
    };
    let addr = settings::text("probe_addr")
        .ok()
        .flatten()
        .unwrap_or_else(|| "127.0.0.1:9".to_string());
    let net = match std::net::TcpStream::connect(&addr) {
        Ok(_) => format!("connected to {addr}"),
        Err(_) => "denied".to_string(),
    };
    format!("probe: fs={fs} env={env} net={net}")
}

fn fill_state() -> Result<(), Error> {
    let count: u64 = settings::value("fill_keys")?.unwrap_or(1_000_000);
    let bytes: usize = settings::value("fill_bytes")?.unwrap_or(100);
    let value = vec![b'f'; bytes];
    for n in 0..count {
        if let Err(error) = platform_gateway_sdk::state::set(&format!("fill/{n:06}"), &value) {
            let said = |m: String| format!("stored {n} keys, then: {m}");
            return Err(match error {
                Error::Unavailable(u) => Error::unavailable(said(u.message)),
                Error::Internal(m) => Error::internal(said(m)),
                other => other,
            });
        }
    }
    Ok(())
}

fn mode() -> String {
    settings::text("mode").ok().flatten().unwrap_or_default()
}

struct Fault;

impl Provider for Fault {
    fn discover() -> Result<Vec<Cluster>, Error> {
        misbehave()?;
        match mode().as_str() {
            "huge" => {
                let count: usize = settings::value("huge_nodes")?.unwrap_or(100_000);
                let nodes = (0..count)
                    .map(|i| Node {
                        node_id: format!("node-{i:012}"),
                        agent_address: format!("http://10.0.0.1:{i}"),
                        node_class: None,
                        node_group: None,
                    })
                    .collect();
                return Ok(vec![Cluster {
                    cluster_id: "huge".to_string(),
                    nodes,
                }]);
            }
            "invalid" => {
                let node = |id: &str, address: &str| Node {
                    node_id: id.to_string(),
                    agent_address: address.to_string(),
                    node_class: None,
                    node_group: None,
                };
                let cluster = |id: &str, nodes: Vec<Node>| Cluster {
                    cluster_id: id.to_string(),
                    nodes,
                };
                let address = "http://10.0.0.1:1";
                return Ok(match setting("invalid", "empty-id")?.as_str() {
                    "repeated-id" => vec![cluster(
                        "bad",
                        vec![node("n1", address), node("n1", address)],
                    )],
                    "no-address" => vec![cluster("bad", vec![node("n1", "")])],
                    "cluster-twice" => vec![
                        cluster("bad", vec![node("n1", address)]),
                        cluster("bad", vec![node("n2", address)]),
                    ],
                    "empty-cluster" => vec![cluster("", vec![node("n1", address)])],
                    _ => vec![cluster("bad", vec![node("", address)])],
                });
            }
            _ => {}
        }
        Ok(vec![Cluster {
            cluster_id: setting("cluster_id", "fault")?,
            nodes: vec![Node {
                node_id: setting("node_id", "fault-node")?,
                agent_address: "http://127.0.0.1:1".to_string(),
                node_class: None,
                node_group: None,
            }],
        }])
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        misbehave()?;
        if mode() == "invalid" {
            let (count, ids) = match setting("invalid", "count")?.as_str() {
                "repeated-id" => (2, vec!["a", "a"]),
                "empty-id" => (1, vec![""]),
                _ => (1, vec!["a", "b"]),
            };
            return Ok(ProvisionResponse {
                count,
                node_ids: Some(ids.into_iter().map(String::from).collect()),
            });
        }
        let echo = serde_json::json!({
            "request_id": request.request_id,
            "cluster_id": request.cluster_id,
            "store": request.store,
            "store_version": request.store_version,
            "node_group": request.node_group,
            "node_class": request.node_class,
            "desired_count": request.desired_count,
            "count": request.count,
            "attributes": request.attributes()?,
        });
        Ok(ProvisionResponse {
            count: 1,
            node_ids: Some(vec![echo.to_string()]),
        })
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        misbehave()?;
        if request.cluster_id == setting("cluster_id", "fault")?
            && request.node_id == setting("node_id", "fault-node")?
        {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "no node `{}` in cluster `{}` here",
                request.node_id, request.cluster_id
            )))
        }
    }
}

export_provider!(Fault);

//! The `podman` plugin against a real podman: the test serves podman's REST API on loopback
//! (`apt-get install podman runc busybox-static`; `cargo xtask test` installs them) and runs busybox
//! containers whose `httpd` stands in for a node's agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::aws::{Moto, ec2_backend, provision, run_kit};
use crate::support::{
    Gateway, assert_kit_passed_everything, node_ids, plugin, pool_backend, toml_str,
};

const IMAGE: &str = "localhost/platform-gateway-busybox:test";

/// podman's settings for this machine: runc (crun fails here on rlimits and the hybrid cgroup
/// layout) with explicit ulimits.
fn containers_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let path = xtask::root().join("target/e2e-containers.conf");
        std::fs::write(
            &path,
            "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
             [engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        path
    })
}

pub(crate) fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run podman ({e}): `apt-get install podman runc busybox-static` (`cargo xtask test` installs them)")
        })
}

/// A busybox image, built from the machine's static busybox (no registry is reachable).
fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if podman(&["image", "exists", IMAGE]).status.success() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox is not installed: `apt-get install busybox-static`");
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "httpd", "sleep", "echo"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = dir.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let out = podman(&["import", &tar.display().to_string(), IMAGE]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `podman system service` on a free loopback port, stopped (with its containers) when dropped.
pub(crate) struct PodmanService {
    child: Child,
    endpoint: String,
    pub(crate) gateway_id: String,
}

impl PodmanService {
    pub(crate) async fn start() -> PodmanService {
        ensure_image();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("podman")
            .args([
                "system",
                "service",
                "--time=0",
                &format!("tcp:127.0.0.1:{port}"),
            ])
            .env("CONTAINERS_CONF", containers_conf())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(format!("{endpoint}/v4.0.0/libpod/_ping"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "podman's API did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        PodmanService {
            child,
            endpoint,
            gateway_id: crate::support::unique_name("e2e"),
        }
    }

    pub(crate) fn backend(&self, name: &str) -> String {
        format!(
            "[backends.{name}]\nplugin = {}\ngrants = {{ http = [{}] }}\nlimits = {{ timeout = \"60s\" }}\n\
             [backends.{name}.settings]\n{}\n",
            toml_str(&plugin("podman").display().to_string()),
            toml_str(&self.endpoint),
            self.settings(),
        )
    }

    /// The backend's settings, as the keys of a settings table.
    fn settings(&self) -> String {
        format!(
            "endpoint = {}\ngateway_id = {}\n\
             agent_address = \"http://127.0.0.1:{{published_port}}\"\n\
             templates = [{{ store = \"zookeeper\", image = \"{IMAGE}\", \
             command = [\"/bin/httpd\", \"-f\", \"-p\", \"37000\"], agent_port = 37000, publish = true }}]\n",
            toml_str(&self.endpoint),
            toml_str(&self.gateway_id),
        )
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let filter = format!("label=replicante.gateway={}", self.gateway_id);
        let listed = podman(&["ps", "-aq", "--filter", &filter]);
        for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            let _ = podman(&["rm", "-f", id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn provision_discover_deprovision_containers_and_serve_a_mixed_platform() {
    let service = PodmanService::start().await;
    let moto = Moto::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}{}\
         [[routes]]\nstore = \"zookeeper\"\nbackend = \"containers\"\n\n\
         [[routes]]\nstore = \"mongodb\"\nbackend = \"cloud\"\n\n[[routes]]\nbackend = \"pool\"\n",
        service.backend("containers"),
        ec2_backend("cloud", &moto, dir.path(), "AKIDTEST", "x"),
        pool_backend("pool", &[("m1", "small")]),
    );
    let gw = Gateway::start(&config).await;

    let zookeeper = provision("zk", "zookeeper", "3.9", "small", 2);
    let (status, reply) = gw.post_with_key("/provision", &zookeeper, "zk-1").await;
    assert_eq!(status, 200, "{reply}");
    let sorted = |reply: &serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> = reply["node_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let ids = sorted(&reply);
    assert_eq!(ids.len(), 2);
    // A retry of the request (the same Idempotency-Key) gets its containers, not new ones.
    let (status, again) = gw.post_with_key("/provision", &zookeeper, "zk-1").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(sorted(&again), ids);
    // This test's gateway only: another run's containers of a cluster `zk` are not counted.
    let listed = podman(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=replicante.gateway={}", service.gateway_id),
        "--filter",
        "label=replicante.cluster-id=zk",
    ]);
    let containers = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .count();
    assert_eq!(containers, 2, "a retry made no container");
    let (status, reply) = gw
        .post("/provision", &provision("db", "mongodb", "6.0", "", 1))
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = gw
        .post("/provision", &provision("q", "kafka", "3.0", "small", 1))
        .await;
    assert_eq!((status, &reply["node_ids"]), (200, &json!(["m1"])));

    // One endpoint, three providers.
    let discovery = gw.discover().await;
    assert_eq!(node_ids(&discovery, "zk"), ids);
    assert_eq!(node_ids(&discovery, "db").len(), 1);
    assert_eq!(node_ids(&discovery, "q"), vec!["m1"]);
    let zk = discovery["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster_id"] == "zk")
        .unwrap();
    for node in zk["nodes"].as_array().unwrap() {
        assert_eq!(node["node_group"], json!("data"));
        assert_eq!(node["node_class"], json!("small"));
        // The agent address reaches the container (busybox httpd answers, even if with 404).
        let address = node["agent_address"].as_str().unwrap();
        let answered = reqwest::get(address).await;
        assert!(answered.is_ok(), "{address}: {answered:?}");
    }

    // A container that stopped by itself is still a node.
    let stopped = podman(&["stop", "-t", "0", &ids[0]]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert_eq!(node_ids(&gw.discover().await, "zk"), ids);

    // Deprovision stops and removes it: gone from discovery and from podman.
    for id in &ids {
        let (status, reply) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": "zk", "node_id": id }),
            )
            .await;
        assert_eq!(status, 204, "{reply}");
        let left = podman(&["ps", "-aq", "--filter", &format!("name=^{id}$")]);
        assert!(left.stdout.is_empty(), "{id} is still there");
    }
    assert!(node_ids(&gw.discover().await, "zk").is_empty());
    // A retry of a deprovision that succeeded is answered as done (idempotent); a node the
    // gateway never knew is not found.
    let (status, _) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "zk", "node_id": ids[0] }),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "zk", "node_id": "never-created" }),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_podman_plugin_passes_every_check_of_the_kit() {
    let service = PodmanService::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, service.settings()).unwrap();
    let (ok, stdout, stderr) = run_kit(
        "podman",
        &settings,
        &[
            "--grant-http",
            &service.endpoint,
            // As the backend's: starting containers on a busy machine takes a while.
            "--timeout",
            "60s",
            "--store",
            "zookeeper",
            "--node-class",
            "small",
            "--provisions",
        ],
    )
    .await;
    assert_kit_passed_everything(&(ok, stdout, stderr));
    // The kit leaves no container behind.
    let filter = format!("label=replicante.gateway={}", service.gateway_id);
    let left = podman(&["ps", "-aq", "--filter", &filter]);
    assert!(
        left.stdout.is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

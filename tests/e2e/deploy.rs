//! What ships (docs/deploy.md): the static binary and package of `cargo xtask dist`,
//! the `FROM scratch` image of `cargo xtask image` under podman, the Kubernetes manifests under
//! `podman kube play`, and the systemd unit.
//!
//! These tests use the package that `cargo xtask test` builds before `cargo test` (building it
//! here, through the same code, when it is missing or stale). Every container and pod they start
//! is removed when the test ends, failed or not, and publishes its port on 127.0.0.1 only (or has
//! no network at all).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::podman::podman;
use crate::support::{Ca, Gateway, Workdir, free_port, node_ids, plugin, provision_body, toml_str};

/// The package of `cargo xtask dist`, brought up to date once per test process.
fn package() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(xtask::dist::dist) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("cargo xtask dist: {e}"),
    }
}

/// The image of `cargo xtask image`, built from [`package`] once per test process (podman
/// reuses its layers when the package did not change).
fn image() -> String {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    match BUILT.get_or_init(|| xtask::dist::build_image(&package())) {
        Ok(name) => name.clone(),
        Err(e) => panic!("cargo xtask image: {e}"),
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Poll `GET {base}/readyz` until it answers 200 (`bound` at most); the time it took.
async fn wait_ready(base: &str, bound: Duration, logs: impl Fn() -> String) -> Duration {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    crate::support::wait_ready(&client, base, bound, logs).await
}

/// Provision two nodes through `base`, find them in discovery, deprovision one and see it
/// leave discovery: the Platform lifecycle Replicante Core drives.
async fn lifecycle(base: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut body = provision_body("deploy-c1", "mongodb", "data", "small");
    body["provision"]["count"] = json!(2);
    let reply = client
        .post(format!("{base}/provision"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let provisioned: Value = reply.json().await.unwrap();
    let mut ids: Vec<String> = provisioned["node_ids"]
        .as_array()
        .expect("node_ids")
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "{provisioned}");

    let discover = || async {
        let reply = client.get(format!("{base}/discover")).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        reply.json::<Value>().await.unwrap()
    };
    assert_eq!(node_ids(&discover().await, "deploy-c1"), ids);

    let reply = client
        .post(format!("{base}/deprovision"))
        .json(&json!({ "cluster_id": "deploy-c1", "node_id": ids[0] }))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(reply.status().as_u16(), 200 | 204),
        "{}",
        reply.status()
    );
    assert_eq!(node_ids(&discover().await, "deploy-c1"), ids[1..].to_vec());
}

#[tokio::test]
async fn dist_binary_is_static_checksummed_and_serves_the_packaged_example() {
    let dir = package();
    let binary = dir.join("platform-gateway");

    // Static: no program interpreter, no shared library.
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    let said = text(&ldd);
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd {}: {said}",
        binary.display()
    );
    let size = std::fs::metadata(&binary).unwrap().len();
    eprintln!("static binary: {size} bytes");

    // Every file is in SHA256SUMS and matches it; so does the tarball its .sha256.
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for file in [
        "platform-gateway",
        "plugins/pool.wasm",
        "plugins/static_clusters.wasm",
        "plugins/aws_ec2.wasm",
        "plugins/podman.wasm",
        "examples/gateway.toml",
        "deploy/kubernetes/single-node.yaml",
        "deploy/kubernetes/ha.yaml",
        "deploy/systemd/platform-gateway.service",
        "README.md",
        "docs/deploy.md",
        "docs/configuration.md",
    ] {
        assert!(
            sums.lines().any(|l| l.ends_with(&format!("  {file}"))),
            "{file} is not in SHA256SUMS:\n{sums}"
        );
    }
    let check = Command::new("sha256sum")
        .current_dir(&dir)
        .args(["--check", "--strict", "SHA256SUMS"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    let tarball = xtask::dist::tarball();
    let check = Command::new("sha256sum")
        .current_dir(tarball.parent().unwrap())
        .arg("--check")
        .arg(tarball.with_extension("gz.sha256"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));

    // --version: the version, the commit, the contract versions.
    let version = Command::new(&binary)
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.starts_with(&format!("platform-gateway {}\n", xtask::dist::version())),
        "{version}"
    );
    assert!(version.contains("\ncommit: "), "{version}");
    assert!(
        version.contains("contracts: replicante:platform@0.1.0"),
        "{version}"
    );

    // The packaged example, as a downloaded tarball is used: unpacked anywhere, run with
    // nothing from the build's environment.
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let root = unpacked.path().join(xtask::dist::package_name());
    let config = root.join("examples/gateway.toml");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("plugin = \"../plugins/pool.wasm\""),
        "the packaged example does not use the packaged plugin"
    );
    let gateway = Gateway::start_program(&root.join("platform-gateway"), &config).await;
    lifecycle(&gateway.base).await;
    // Its state went next to the config, in the unpacked folder.
    assert!(root.join("examples/state/state.redb").is_file());
}

/// A container, removed (with its anonymous volumes) when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--volumes", "--time", "2", &self.0]);
    }
}

#[tokio::test]
async fn image_serves_the_lifecycle_read_only_as_a_non_root_user() {
    let image = image();
    let inspect = podman(&["image", "inspect", &image]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let inspected: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let config = &inspected[0]["Config"];
    assert_eq!(config["User"], "65532:65532", "{config:#}");
    assert!(
        config["Volumes"]
            .as_object()
            .is_some_and(|v| v.contains_key("/var/lib/platform-gateway")),
        "{config:#}"
    );
    assert_eq!(
        config["Entrypoint"],
        json!(["/usr/bin/platform-gateway"]),
        "{config:#}"
    );
    // Nothing but the binary, the plugins and the config: no base image.
    let size = inspected[0]["Size"].as_u64().unwrap();
    let binary = std::fs::metadata(xtask::dist::binary()).unwrap().len();
    eprintln!("image: {size} bytes (binary {binary})");
    assert!(size < binary + 4 * 1024 * 1024, "{size} bytes");

    // With no arguments: the example platform, on a read-only root, as the image's user.
    let port = free_port();
    let name = crate::support::unique_name("pg-image");
    let started = Instant::now();
    let run = podman(&[
        "run",
        "--detach",
        "--read-only",
        "--name",
        &name,
        "--publish",
        &format!("127.0.0.1:{port}:8080"),
        &image,
    ]);
    let container = Container(name.clone());
    assert!(run.status.success(), "{}", text(&run));
    let logs = || text(&podman(&["logs", &container.0]));
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_ready(&base, Duration::from_secs(60), logs).await;
    eprintln!(
        "image: /readyz 200 {} ms after `podman run` ({} ms after the container started)",
        started.elapsed().as_millis(),
        ready.as_millis()
    );
    lifecycle(&base).await;

    let inspect = podman(&["inspect", &name]);
    let inspected: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspected[0]["HostConfig"]["ReadonlyRootfs"], true);
    let top = podman(&["top", &name, "user", "huser"]);
    let top = text(&top);
    assert!(
        top.lines()
            .skip(1)
            .all(|l| l.split_whitespace().next() == Some("65532")),
        "{top}"
    );

    // The image's health check, and the admin API on the container's loopback.
    let health = podman(&["healthcheck", "run", &name]);
    assert!(health.status.success(), "{}", text(&health));
    let status = podman(&[
        "exec",
        &name,
        "/usr/bin/platform-gateway",
        "status",
        "--output",
        "json",
    ]);
    assert!(status.status.success(), "{}", text(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["backends"][0]["name"], "pool", "{status:#}");
    drop(container);

    // An operator's config mounted over the bundled one.
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(xtask::root().join("examples/gateway.toml")).unwrap();
    let own = xtask::dist::image_config(&example)
        .unwrap()
        .replace("\"pool-1\"", "\"mine-1\"");
    std::fs::write(dir.path().join("gateway.toml"), own).unwrap();
    let port = free_port();
    let name = crate::support::unique_name("pg-image-config");
    let run = podman(&[
        "run",
        "--detach",
        "--read-only",
        "--name",
        &name,
        "--publish",
        &format!("127.0.0.1:{port}:8080"),
        "--volume",
        &format!(
            "{}:/etc/platform-gateway/gateway.toml:ro",
            dir.path().join("gateway.toml").display()
        ),
        &image,
    ]);
    let container = Container(name);
    assert!(run.status.success(), "{}", text(&run));
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, Duration::from_secs(60), || {
        text(&podman(&["logs", &container.0]))
    })
    .await;
    let reply = reqwest::Client::new()
        .post(format!("{base}/provision"))
        .json(&provision_body("deploy-c2", "mongodb", "data", "small"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["node_ids"], json!(["mine-1"]));
}

/// The documents of a manifest, split on `---` lines.
fn documents(manifest: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in manifest.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| d.contains("kind: "));
    docs
}

/// The block scalar `key: |` of a document, unindented (a ConfigMap's file).
fn block(doc: &str, key: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` in\n{doc}"));
    let indent = head.len() - head.trim_start().len();
    let mut text = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() <= indent {
            break;
        }
        text.push_str(line.get(indent + 2..).unwrap_or(""));
        text.push('\n');
    }
    text
}

/// The `stringData` of the manifest's Secret: (key, value).
fn secret_data(docs: &[String]) -> Vec<(String, String)> {
    let secret = docs
        .iter()
        .find(|d| d.contains("\nkind: Secret\n"))
        .expect("a Secret");
    secret
        .lines()
        .skip_while(|l| *l != "stringData:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| {
            let (key, value) = l.trim().split_once(": ").expect("key: value");
            (key.to_string(), value.trim_matches('"').to_string())
        })
        .collect()
}

/// The manifest as podman 4.3 can play it: the Secret volume (on which `podman kube play`
/// 4.3.1 crashes) becomes a host folder holding the Secret's files.
fn playable(manifest: &str, secret_name: &str, secrets: &Path) -> String {
    let docs = documents(manifest);
    for (key, value) in secret_data(&docs) {
        std::fs::write(secrets.join(key), value).unwrap();
    }
    let from = format!("          secret:\n            secretName: {secret_name}\n");
    assert!(manifest.contains(&from), "no Secret volume `{secret_name}`");
    manifest.replace(
        &from,
        &format!(
            "          hostPath:\n            path: {}\n            type: Directory\n",
            secrets.display()
        ),
    )
}

/// `podman kube play` of a manifest file, brought down (pods and the named volumes) when
/// dropped.
struct Played {
    file: PathBuf,
    volumes: Vec<String>,
}

impl Played {
    fn play(file: PathBuf, extra: &[&str], volumes: &[&str]) -> Played {
        let played = Played {
            file,
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
        };
        // Whatever an interrupted run left behind.
        played.down();
        let path = played.file.display().to_string();
        let mut args = vec!["kube", "play"];
        args.extend_from_slice(extra);
        args.push(&path);
        let out = podman(&args);
        assert!(out.status.success(), "podman kube play: {}", text(&out));
        played
    }

    fn down(&self) {
        let _ = podman(&["kube", "down", &self.file.display().to_string()]);
        for volume in &self.volumes {
            let _ = podman(&["volume", "rm", "--force", volume]);
        }
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test]
async fn single_node_manifest_serves_the_lifecycle_under_podman_kube_play() {
    let image = image();
    let manifest =
        std::fs::read_to_string(xtask::root().join("deploy/kubernetes/single-node.yaml")).unwrap();
    assert!(manifest.contains(&format!("image: {image}\n")), "{image}");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let mut playable = playable(&manifest, "platform-gateway-secrets", &secrets);
    // podman 4.3 has no `kube play --publish`: publish on loopback through the manifest.
    let (port, admin_port) = (free_port(), free_port());
    for (container_port, host_port) in [(8080, port), (9090, admin_port)] {
        let from = format!("              containerPort: {container_port}\n");
        assert!(playable.contains(&from));
        playable = playable.replace(
            &from,
            &format!(
                "{from}              hostIP: 127.0.0.1\n              hostPort: {host_port}\n"
            ),
        );
    }
    let file = dir.path().join("single-node.yaml");
    std::fs::write(&file, playable).unwrap();

    let _played = Played::play(
        file,
        &[],
        &["platform-gateway-state", "platform-gateway-config"],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, Duration::from_secs(60), || {
        text(&podman(&["logs", "platform-gateway-pod-0-gateway"]))
    })
    .await;
    lifecycle(&base).await;

    // The admin API and /metrics, on every address of the pod, with the Secret's token.
    let token = secret_data(&documents(&manifest))
        .into_iter()
        .find(|(key, _)| key == "admin-token")
        .expect("admin-token")
        .1;
    let metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    let client = reqwest::Client::new();
    let reply = client.get(&metrics).send().await.unwrap();
    assert_eq!(reply.status(), 401);
    let reply = client
        .get(&metrics)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        reply
            .text()
            .await
            .unwrap()
            .contains("platform_gateway_plugin_calls_total")
    );

    // The state is on the claim's volume: the pod's user owns what it wrote there.
    let inspect = podman(&["inspect", "platform-gateway-pod-0-gateway"]);
    let inspected: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspected[0]["Config"]["User"], "65532:65532");
    assert_eq!(inspected[0]["HostConfig"]["ReadonlyRootfs"], true);
    let mounts = inspected[0]["Mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["Name"] == "platform-gateway-state"
            && m["Destination"] == "/var/lib/platform-gateway"),
        "{mounts:#?}"
    );
}

#[tokio::test]
async fn ha_manifest_config_checks_and_its_gateway_pods_start_under_podman() {
    let image = image();
    let manifest =
        std::fs::read_to_string(xtask::root().join("deploy/kubernetes/ha.yaml")).unwrap();
    let docs = documents(&manifest);
    let config_map = docs
        .iter()
        .find(|d| d.contains("\nkind: ConfigMap\n"))
        .expect("a ConfigMap");
    let config = block(config_map, "gateway.toml");
    assert!(config.contains("backend = \"etcd\""), "{config}");

    // The ConfigMap's config passes `check` in the image, with the Secret's files mounted
    // where the Deployment mounts them.
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let etc = dir.path().join("etc");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("gateway.toml"), &config).unwrap();
    let playable = playable(&manifest, "platform-gateway-ha-secrets", &secrets);
    // The etcd client certificate's Secret, made here, as a host folder too.
    let etcd_client = dir.path().join("etcd-client");
    std::fs::create_dir(&etcd_client).unwrap();
    let ca = Ca::new("etcd test CA");
    let (cert, key) = ca.sign(&["platform-gateway-client"]);
    for (name, pem) in [("ca.crt", &ca.pem), ("tls.crt", &cert), ("tls.key", &key)] {
        std::fs::write(etcd_client.join(name), pem).unwrap();
    }
    let from = "          secret:\n            secretName: platform-gateway-etcd-client\n";
    assert!(playable.contains(from), "no etcd client Secret volume");
    let playable = playable.replacen(
        from,
        &format!(
            "          hostPath:\n            path: {}\n            type: Directory\n",
            etcd_client.display()
        ),
        1,
    );
    let check = podman(&[
        "run",
        "--rm",
        "--read-only",
        "--network",
        "none",
        "--volume",
        &format!("{}:/etc/platform-gateway:ro", etc.display()),
        "--volume",
        &format!("{}:/run/secrets/platform-gateway:ro", secrets.display()),
        &image,
        "check",
    ]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("ok (1 backends, 1 routes)"),
        "{}",
        text(&check)
    );

    // podman 4.3 plays the Deployment (three pods) and skips what it has no support for: the
    // Secret, the Services, the budgets and the etcd StatefulSet (whose image is not pulled
    // here). Without a network, each gateway answers on its own loopback only.
    // A pod without a network has no port mappings, which podman makes of `containerPort`.
    let ports = "          ports:\n            - name: http\n              containerPort: 8080\n            \
                 - name: admin\n              containerPort: 9090\n";
    assert!(playable.contains(ports), "the gateway's ports moved");
    let playable = playable.replace(ports, "");
    let file = dir.path().join("ha.yaml");
    std::fs::write(&file, playable).unwrap();
    let _played = Played::play(
        file,
        &["--network", "none"],
        &["platform-gateway-ha-config"],
    );
    for pod in 0..3 {
        let container = format!("platform-gateway-ha-pod-{pod}-gateway");
        let exec = |path: &str| {
            podman(&[
                "exec",
                &container,
                "/usr/bin/platform-gateway",
                "healthcheck",
                "--url",
                &format!("http://127.0.0.1:8080{path}"),
            ])
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let alive = exec("/healthz");
            if alive.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{container}: {}\n{}",
                text(&alive),
                text(&podman(&["logs", &container]))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Alive, its backends loaded, and not ready: its etcd is not there.
        loop {
            let ready = exec("/readyz");
            assert!(!ready.status.success(), "{}", text(&ready));
            assert!(text(&ready).contains("503"), "{}", text(&ready));
            if text(&ready).contains("state store") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{container} never got past loading: {}",
                text(&ready)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The `- --flag=value` lines of the etcd container's command in the StatefulSet.
fn etcd_flags(docs: &[String]) -> Vec<String> {
    let statefulset = docs
        .iter()
        .find(|d| d.contains("\nkind: StatefulSet\n"))
        .expect("an etcd StatefulSet");
    statefulset
        .lines()
        .skip_while(|l| l.trim() != "- etcd")
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .take_while(|l| l.starts_with("- --"))
        .map(|l| l.trim_start_matches("- ").to_string())
        .collect()
}

/// The document of `kind` named `name`.
fn document<'a>(docs: &'a [String], kind: &str, name: &str) -> &'a str {
    docs.iter()
        .find(|d| {
            d.contains(&format!("\nkind: {kind}\n")) && d.contains(&format!("\n  name: {name}\n"))
        })
        .unwrap_or_else(|| panic!("no {kind} `{name}`"))
}

#[test]
fn ha_manifest_lets_only_the_gateway_reach_etcd() {
    let manifest =
        std::fs::read_to_string(xtask::root().join("deploy/kubernetes/ha.yaml")).unwrap();
    let docs = documents(&manifest);
    let policy = document(&docs, "NetworkPolicy", "platform-gateway-etcd");
    let lines: Vec<&str> = policy.lines().map(str::trim).collect();
    // It selects the etcd members and restricts what comes in.
    let selector = policy
        .split("\nspec:\n")
        .nth(1)
        .and_then(|spec| spec.split("ingress:").next())
        .unwrap();
    assert!(
        selector.contains("podSelector:")
            && selector.contains("app.kubernetes.io/name: platform-gateway-etcd\n"),
        "{policy}"
    );
    assert!(lines.contains(&"policyTypes: [Ingress]"), "{policy}");
    // Each rule: the pods it lets in, and the ports.
    let ingress = policy.split("ingress:").nth(1).unwrap();
    let rules: Vec<&str> = ingress.split("\n    - from:").skip(1).collect();
    assert_eq!(rules.len(), 2, "{policy}");
    let labels = |rule: &str| -> Vec<String> {
        rule.lines()
            .filter_map(|l| l.trim().strip_prefix("app.kubernetes.io/name: "))
            .map(str::to_string)
            .collect()
    };
    let ports = |rule: &str| -> Vec<String> {
        rule.lines()
            .filter_map(|l| l.trim().strip_prefix("- port: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        labels(rules[0]),
        ["platform-gateway-ha", "platform-gateway-etcd-auth"]
    );
    assert_eq!(ports(rules[0]), ["2379"]);
    assert_eq!(labels(rules[1]), ["platform-gateway-etcd"]);
    assert_eq!(ports(rules[1]), ["2380"]);
    // Those labels are the gateway's pods' and the setup Job's pods'.
    let deployment = document(&docs, "Deployment", "platform-gateway-ha");
    let template = deployment.split("  template:\n").nth(1).unwrap();
    assert!(template.contains("app.kubernetes.io/name: platform-gateway-ha\n"));
    let job = document(&docs, "Job", "platform-gateway-etcd-auth");
    let template = job.split("  template:\n").nth(1).unwrap();
    assert!(template.contains("app.kubernetes.io/name: platform-gateway-etcd-auth\n"));
}

/// The manifest's etcd, run here: the StatefulSet's flags on one local member (addresses,
/// ports and files moved to this machine, every other flag as it is), the setup Job's etcdctl
/// steps in order, then the gateway on the ConfigMap's config (endpoints and files moved the
/// same way). The gateway serves through TLS with its client certificate and its user; a client
/// without a certificate, or without the user, or outside the prefix, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_manifest_etcd_takes_the_gateway_with_tls_client_certificates_and_its_user_only() {
    use etcd_client::{Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions};

    let manifest =
        std::fs::read_to_string(xtask::root().join("deploy/kubernetes/ha.yaml")).unwrap();
    let docs = documents(&manifest);
    let flags = etcd_flags(&docs);
    for required in [
        "--client-cert-auth=true",
        "--trusted-ca-file=/etc/etcd/tls/ca.crt",
        "--cert-file=/etc/etcd/tls/tls.crt",
        "--key-file=/etc/etcd/tls/tls.key",
        "--peer-client-cert-auth=true",
        "--auto-compaction-mode=periodic",
    ] {
        assert!(
            flags.iter().any(|f| f == required),
            "no {required} in {flags:?}"
        );
    }
    assert!(
        flags
            .iter()
            .any(|f| f.starts_with("--auto-compaction-retention=")),
        "{flags:?}"
    );
    for url_flag in [
        "--listen-client-urls=",
        "--advertise-client-urls=",
        "--listen-peer-urls=",
    ] {
        let flag = flags.iter().find(|f| f.starts_with(url_flag)).unwrap();
        assert!(
            flag.contains("https://") && !flag.contains("http://"),
            "{flag}"
        );
    }

    // This machine's files and ports in place of the pod's.
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let client_dir = dir.path().join("client");
    let secrets = dir.path().join("secrets");
    for d in [&tls, &client_dir, &secrets] {
        std::fs::create_dir(d).unwrap();
    }
    let ca = Ca::new("etcd CA");
    let (member_cert, member_key) = ca.sign(&["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = ca.sign(&["platform-gateway-client"]);
    for (d, cert, key) in [
        (&tls, &member_cert, &member_key),
        (&client_dir, &client_cert, &client_key),
    ] {
        std::fs::write(d.join("ca.crt"), &ca.pem).unwrap();
        std::fs::write(d.join("tls.crt"), cert).unwrap();
        std::fs::write(d.join("tls.key"), key).unwrap();
    }
    let (client_port, peer_port, metrics_port) = (free_port(), free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    let args: Vec<String> = flags
        .iter()
        .map(|flag| {
            let (name, value) = flag.split_once('=').unwrap();
            let value = match name {
                "--name" => "m0".to_string(),
                "--data-dir" => dir.path().join("data").display().to_string(),
                "--listen-client-urls" | "--advertise-client-urls" => client_url.clone(),
                "--listen-peer-urls" | "--initial-advertise-peer-urls" => peer_url.clone(),
                "--initial-cluster" => format!("m0={peer_url}"),
                "--listen-metrics-urls" => format!("http://127.0.0.1:{metrics_port}"),
                _ => match value.strip_prefix("/etc/etcd/tls/") {
                    Some(file) => tls.join(file).display().to_string(),
                    None => value.to_string(),
                },
            };
            format!("{name}={value}")
        })
        .collect();
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let mut etcd = Command::new(xtask::etcd::etcd_binary())
        .args(&args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("etcd");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let etcd_log = || std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{metrics_port}/health"))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "etcd did not start:\n{}",
            etcd_log()
        );
        if let Ok(Some(status)) = etcd.try_wait() {
            panic!(
                "etcd exited ({status}) with the manifest's flags:\n{}",
                etcd_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let etcd = Kill(etcd);

    // The setup Job's steps, in order, with the Secrets' passwords.
    let passwords: Vec<(String, String)> = docs
        .iter()
        .filter(|d| d.contains("\nkind: Secret\n"))
        .flat_map(|d| secret_data(std::slice::from_ref(d)))
        .collect();
    let password = |key: &str| {
        passwords
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no `{key}` in the Secrets"))
            .1
            .clone()
    };
    let tls_options = |identity: bool| {
        let options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca.pem.clone()));
        if identity {
            options.identity(Identity::from_pem(client_cert.clone(), client_key.clone()))
        } else {
            options
        }
    };
    let connect = |identity: bool, user: Option<(&str, String)>| {
        let mut options = ConnectOptions::new()
            .with_tls(tls_options(identity))
            .with_timeout(Duration::from_secs(5));
        if let Some((name, password)) = user {
            options = options.with_user(name, password);
        }
        Client::connect([client_url.clone()], Some(options))
    };
    let job = document(&docs, "Job", "platform-gateway-etcd-auth");
    let steps: Vec<Vec<String>> = job
        .lines()
        .filter_map(|l| l.trim().strip_prefix("command: "))
        .map(|array| serde_json::from_str(array).unwrap())
        .collect();
    assert!(steps.len() >= 5, "{steps:?}");
    let mut setup = connect(true, None).await.unwrap();
    for step in &steps {
        let step: Vec<String> = step
            .iter()
            .map(|a| {
                a.replace("$(ROOT_PASSWORD)", &password("root-password"))
                    .replace("$(GATEWAY_PASSWORD)", &password("etcd-password"))
            })
            .collect();
        let words: Vec<&str> = step.iter().map(String::as_str).collect();
        let done = match words.as_slice() {
            ["etcdctl", "user", "add", user, password] => {
                let password = password.strip_prefix("--new-user-password=").unwrap();
                setup.user_add(*user, password, None).await.map(|_| ())
            }
            ["etcdctl", "user", "grant-role", user, role] => {
                setup.user_grant_role(*user, *role).await.map(|_| ())
            }
            ["etcdctl", "role", "add", role] => setup.role_add(*role).await.map(|_| ()),
            [
                "etcdctl",
                "role",
                "grant-permission",
                role,
                "--prefix=true",
                "readwrite",
                prefix,
            ] => setup
                .role_grant_permission(*role, Permission::read_write(*prefix).with_prefix())
                .await
                .map(|_| ()),
            ["etcdctl", "auth", "enable"] => setup.auth_enable().await.map(|_| ()),
            other => panic!("a setup step this test does not know: {other:?}"),
        };
        done.unwrap_or_else(|e| panic!("{words:?}: {e}"));
    }

    // The gateway on the ConfigMap's config, moved to this machine.
    let config_map = document(&docs, "ConfigMap", "platform-gateway-ha-config");
    let config = block(config_map, "gateway.toml");
    std::fs::write(secrets.join("etcd-password"), password("etcd-password")).unwrap();
    std::fs::write(secrets.join("admin-token"), password("admin-token")).unwrap();
    let endpoints_line = config
        .lines()
        .position(|l| l.starts_with("endpoints = ["))
        .expect("endpoints");
    let mut lines: Vec<String> = config.lines().map(str::to_string).collect();
    let end = endpoints_line
        + lines[endpoints_line..]
            .iter()
            .position(|l| l == "]")
            .unwrap();
    lines.splice(
        endpoints_line..=end,
        [format!("endpoints = [{}]", toml_str(&client_url))],
    );
    let work = Workdir::new();
    let config = lines
        .join("\n")
        .replace("0.0.0.0:9090", "127.0.0.1:0")
        .replace(
            "/run/secrets/platform-gateway-etcd/",
            &format!("{}/", client_dir.display()),
        )
        .replace(
            "/run/secrets/platform-gateway/",
            &format!("{}/", secrets.display()),
        )
        .replace(
            "/var/lib/platform-gateway",
            &work.path().join("state").display().to_string(),
        )
        .replace("/plugins/pool.wasm", &plugin("pool").display().to_string());
    assert!(
        config.contains("tls = {") && config.contains("username = "),
        "{config}"
    );
    let path = work.path().join("gateway.toml");
    std::fs::write(&path, &config).unwrap();
    let gw = work.start_at(&path).await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", gw.log());
    let mut provisioned: Vec<String> = reply["node_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    provisioned.sort();
    assert!(!provisioned.is_empty(), "{reply}");
    assert_eq!(node_ids(&gw.discover().await, "c1"), provisioned);

    // A client without a certificate is not let in, whatever its password.
    let without_cert = async {
        let mut c = connect(false, Some(("gateway", password("etcd-password")))).await?;
        c.get("/platform-gateway/prod/", None).await
    };
    assert!(
        without_cert.await.is_err(),
        "a client without a certificate was served"
    );
    // With the certificate but not the user: no key at all.
    let mut anonymous = connect(true, None).await.unwrap();
    let e = anonymous
        .get("/platform-gateway/prod/", None)
        .await
        .expect_err("served without a user");
    let refused = [
        "user name is empty",
        "user name not found",
        "permission denied",
    ];
    assert!(refused.iter().any(|r| e.to_string().contains(r)), "{e}");
    // The gateway's user: its prefix, and nothing else.
    let mut gateway_user = connect(true, Some(("gateway", password("etcd-password"))))
        .await
        .unwrap();
    gateway_user
        .put("/platform-gateway/prod/probe", "x", None)
        .await
        .unwrap();
    let e = gateway_user
        .put("/platform-gateway/other/probe", "x", None)
        .await
        .expect_err("wrote outside its prefix");
    assert!(e.to_string().contains("permission denied"), "{e}");

    // The admin API names the store; once etcd is gone, it says why, and the public `/readyz`
    // says only that the store is unavailable.
    let admin_state = || async {
        let admin = gw.admin.as_ref().expect("the ConfigMap's admin listener");
        let reply = gw
            .client
            .get(format!("{admin}/admin/state"))
            .bearer_auth(password("admin-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        reply.json::<Value>().await.unwrap()
    };
    let state = admin_state().await;
    assert_eq!(state["ready"], json!(true), "{state}");
    assert!(
        state["store"].as_str().unwrap().contains(&client_url),
        "{state}"
    );
    drop(etcd);
    let started = Instant::now();
    let state = loop {
        let state = admin_state().await;
        if state["ready"] == json!(false) {
            break state;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        state["error"].as_str().unwrap().contains(&client_url),
        "{state}"
    );
    let (status, reply) = gw.get("/readyz").await;
    assert_eq!(status, 503, "{reply}");
    assert!(reply.to_string().contains("state store"), "{reply}");
    assert!(
        !reply.to_string().contains(&client_port.to_string()),
        "{reply}"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let dir = package();
    let unit =
        std::fs::read_to_string(dir.join("deploy/systemd/platform-gateway.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=platform-gateway",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == directive),
            "no `{directive}` in the unit"
        );
    }
    // `verify` also checks the programs exist: the packaged binary stands in for the
    // installed one.
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("platform-gateway.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/platform-gateway",
            &dir.join("platform-gateway").display().to_string(),
        ),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        !text(&verify).contains("platform-gateway.service:"),
        "systemd-analyze verify: {}",
        text(&verify)
    );
}

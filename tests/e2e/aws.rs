//! The `aws-ec2` plugin against a real EC2-compatible API: moto's server, started by the test on
//! loopback (`pip install 'moto[ec2,server]'`; `cargo xtask test` installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Gateway, free_port, node_ids, plugin, pool_backend, test_plugin, toml_str};

/// A moto server on a free loopback port, stopped when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) endpoint: String,
    client: reqwest::Client,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Start moto; with `auth_after`, requests after that many actions must be signed by a
    /// known IAM key (moto's `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub(crate) async fn start(auth_after: Option<u32>) -> Moto {
        let port = free_port();
        // The one `cargo xtask setup` installs, else whatever the PATH has.
        let venv = xtask::root().join("target/venv/bin/moto_server");
        let program = match venv.exists() {
            true => venv.into_os_string(),
            false => "moto_server".into(),
        };
        let mut command = Command::new(program);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(count) = auth_after {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", count.to_string());
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server ({e}): install it with `pip install 'moto[ec2,server]'` \
                 (`cargo xtask test` installs it)"
            )
        });
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = moto
                .client
                .get(format!("{}/moto-api/", moto.endpoint))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return moto;
            }
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A Query API action before authentication is enforced (the signature is not checked, but
    /// moto reads the service from the credential scope).
    pub(crate) async fn unsigned(&self, service: &str, params: &[(&str, &str)]) -> String {
        let reply = self
            .client
            .post(format!("{}/", self.endpoint))
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/{service}/aws4_request, \
                     SignedHeaders=host, Signature=00"
                ),
            )
            .form(params)
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        assert!(status.is_success(), "{service} {params:?}: {status} {text}");
        text
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap() + open.len();
    let end = start + text[start..].find(close).unwrap();
    &text[start..end]
}

/// `platform-gateway test-plugin` on the first-party plugin `name` with the settings file
/// `settings` and `extra` flags, off the async runtime (against a real API the kit takes a while):
/// (success, stdout, stderr).
pub(crate) async fn run_kit(
    name: &str,
    settings: &std::path::Path,
    extra: &[&str],
) -> (bool, String, String) {
    let (wasm, settings) = (plugin(name), settings.to_path_buf());
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        test_plugin(&wasm, &settings, &extra)
    })
    .await
    .unwrap()
}

/// A backend of the aws-ec2 plugin; the keys are written to files and read as secrets. Its
/// deadline is 30 s: moto answers a fresh server's first EC2 actions slowly, and on a busy
/// machine (load 11 on 2 cores) past the default 10 s (a `ConnectionReadTimeout` in the plugin).
pub(crate) fn ec2_backend(
    name: &str,
    moto: &Moto,
    dir: &std::path::Path,
    key_id: &str,
    secret: &str,
) -> String {
    let secret_file = dir.join(format!("{name}-secret"));
    std::fs::write(&secret_file, secret).unwrap();
    format!(
        "[backends.{name}]\nplugin = {}\ngrants = {{ http = [{}] }}\nlimits = {{ timeout = \"30s\" }}\n\
         [backends.{name}.settings]\n\
         region = \"us-east-1\"\nendpoint = {}\naccess_key_id = {}\n\
         secret_access_key = {{ from_file = {} }}\nagent = {{ scheme = \"http\", port = 37000 }}\n\
         templates = [\n  {{ store = \"mongodb\", image_id = \"ami-12345678\", instance_type = \"t3.micro\" }},\n  \
         {{ store = \"mongodb\", store_version = \"7.0\", image_id = \"ami-87654321\", instance_type = \"m5.large\" }},\n]\n\n",
        toml_str(&plugin("aws_ec2").display().to_string()),
        toml_str(&moto.endpoint),
        toml_str(&moto.endpoint),
        toml_str(key_id),
        toml_str(&secret_file.display().to_string()),
    )
}

pub(crate) fn provision(
    cluster: &str,
    store: &str,
    version: &str,
    class: &str,
    count: u32,
) -> Value {
    json!({
        "cluster": { "cluster_id": cluster, "store": store, "store_version": version,
                     "nodes": { "data": { "desired_count": 3, "node_class": class } } },
        "provision": { "node_group_id": "data", "count": count }
    })
}

#[tokio::test]
async fn provision_discover_deprovision_on_ec2_and_a_mixed_platform() {
    let moto = Moto::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}[[routes]]\nstore = \"mongodb\"\nbackend = \"cloud\"\n\n[[routes]]\nbackend = \"pool\"\n",
        ec2_backend("cloud", &moto, dir.path(), "AKIDTEST", "not-checked"),
        pool_backend("pool", &[("m1", "small")]),
    );
    let gw = Gateway::start(&config).await;

    let (status, reply) = gw
        .post("/provision", &provision("c1", "mongodb", "6.0", "", 2))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["count"], json!(2));
    let mut ids: Vec<String> = reply["node_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert!(ids.iter().all(|id| id.starts_with("i-")), "{ids:?}");

    // A group class is the instance type; a template for the version wins.
    let (status, reply) = gw
        .post("/provision", &provision("c2", "mongodb", "7.0", "", 1))
        .await;
    assert_eq!(status, 200, "{reply}");
    let c2 = reply["node_ids"][0].as_str().unwrap().to_string();
    // The pool serves the other stores behind the same endpoint.
    let (status, reply) = gw
        .post("/provision", &provision("c3", "kafka", "3.0", "small", 1))
        .await;
    assert_eq!((status, &reply["node_ids"]), (200, &json!(["m1"])));

    let discovery = gw.discover().await;
    assert_eq!(node_ids(&discovery, "c1"), ids);
    assert_eq!(node_ids(&discovery, "c2"), vec![c2.clone()]);
    assert_eq!(node_ids(&discovery, "c3"), vec!["m1"]);
    let c2_node = &discovery["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster_id"] == "c2")
        .unwrap()["nodes"][0];
    assert_eq!(c2_node["node_class"], json!("m5.large"));
    assert_eq!(c2_node["node_group"], json!("data"));
    let address = c2_node["agent_address"].as_str().unwrap();
    assert!(
        address.starts_with("http://") && address.ends_with(":37000"),
        "{address}"
    );

    // An instance that stopped by itself is still a node.
    moto.unsigned(
        "ec2",
        &[
            ("Action", "StopInstances"),
            ("Version", "2016-11-15"),
            ("InstanceId.1", &ids[0]),
        ],
    )
    .await;
    assert_eq!(node_ids(&gw.discover().await, "c1"), ids);

    // Deprovision terminates; the instance leaves discovery and is not replaced.
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": ids[0] }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let discovery = gw.discover().await;
    assert_eq!(node_ids(&discovery, "c1"), vec![ids[1].clone()]);
    // Not a node of that cluster: 404.
    let (status, _) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": c2 }),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_endpoint_outside_the_grant_is_refused_inside_the_plugin() {
    let moto = Moto::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ec2_backend("cloud", &moto, dir.path(), "AKIDTEST", "x").replace(
        &format!("grants = {{ http = [\"{}\"] }}", moto.endpoint),
        "grants = { http = [\"https://ec2.us-east-1.amazonaws.com\"] }",
    ) + "[[routes]]\nbackend = \"cloud\"\n";
    let gw = Gateway::start(&config).await;
    let (status, reply) = gw
        .post("/provision", &provision("c1", "mongodb", "6.0", "", 1))
        .await;
    assert_eq!(status, 500, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(message.contains("backend `cloud`"), "{message}");
    assert!(
        message.contains("denied: not in this backend's http grant"),
        "{message}"
    );
    // moto saw nothing: no instance exists.
    let described = moto
        .unsigned(
            "ec2",
            &[("Action", "DescribeInstances"), ("Version", "2016-11-15")],
        )
        .await;
    assert!(!described.contains("<instanceId>"), "{described}");
}

#[tokio::test]
async fn signatures_are_checked_and_a_wrong_secret_is_a_clear_error_that_never_leaks() {
    // Three unauthenticated actions to create an IAM user with a key; then every request must
    // carry a valid signature of a known key.
    let moto = Moto::start(Some(3)).await;
    moto.unsigned(
        "iam",
        &[
            ("Action", "CreateUser"),
            ("Version", "2010-05-08"),
            ("UserName", "gateway"),
        ],
    )
    .await;
    moto.unsigned(
        "iam",
        &[
            ("Action", "PutUserPolicy"),
            ("Version", "2010-05-08"),
            ("UserName", "gateway"),
            ("PolicyName", "all"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            ),
        ],
    )
    .await;
    let key = moto
        .unsigned(
            "iam",
            &[
                ("Action", "CreateAccessKey"),
                ("Version", "2010-05-08"),
                ("UserName", "gateway"),
            ],
        )
        .await;
    let key_id = between(&key, "<AccessKeyId>", "</AccessKeyId>").to_string();
    let secret = between(&key, "<SecretAccessKey>", "</SecretAccessKey>").to_string();
    let wrong = format!("{}WRONG", &secret[..secret.len() - 5]);

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[discovery]\non_backend_failure = \"partial\"\n\n{}{}\
         [[routes]]\ncluster_id = \"forged-*\"\nbackend = \"forged\"\n\n[[routes]]\nbackend = \"cloud\"\n",
        ec2_backend("cloud", &moto, dir.path(), &key_id, &secret),
        ec2_backend("forged", &moto, dir.path(), &key_id, &wrong),
    );
    let gw = Gateway::start(&config).await;

    // Signed right: served.
    let (status, reply) = gw
        .post("/provision", &provision("c1", "mongodb", "6.0", "", 1))
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, headers, discovery) = gw.get_with_headers("/discover").await;
    assert_eq!(status, 200);
    assert_eq!(node_ids(&discovery, "c1").len(), 1);
    assert_eq!(headers["platform-gateway-failed-backends"], "forged");

    // Signed with the wrong secret: refused by EC2, reported naming the backend.
    let (status, reply) = gw
        .post(
            "/provision",
            &provision("forged-1", "mongodb", "6.0", "", 1),
        )
        .await;
    assert_eq!(status, 500, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(message.contains("backend `forged`"), "{message}");
    assert!(
        message.contains("SignatureDoesNotMatch") || message.contains("AuthFailure"),
        "{message}"
    );
    assert!(
        message.contains("check the backend's AWS credentials"),
        "{message}"
    );

    // Neither secret shows anywhere. The forged provision's request line comes after everything
    // the requests logged.
    gw.wait_for_log("request failed").await;
    let everything = format!("{reply} {discovery} {}", gw.log());
    assert!(!everything.contains(&secret), "the secret leaked");
    assert!(!everything.contains(&wrong), "the wrong secret leaked");
}

/// The instances' IDs in a provision answer.
fn ids_of(reply: &Value) -> Vec<String> {
    let mut ids: Vec<String> = reply["node_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no node_ids: {reply}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_request_id_reaches_ec2_as_the_client_token_the_same_on_a_retry() {
    // Real EC2 answers a RunInstances whose ClientToken it has seen with the instances it
    // launched then, so a retried provision launches nothing more. moto (5.2) records the token
    // but launches again, so this test checks what EC2 is sent: every instance of a provision
    // carries its request's ID as `clientToken`, the same for a retry with the same
    // `Idempotency-Key`, another for another key or no key.
    let moto = Moto::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}[[routes]]\nbackend = \"cloud\"\n",
        ec2_backend("cloud", &moto, dir.path(), "AKIDTEST", "not-checked"),
    );
    let gw = Gateway::start(&config).await;
    let body = provision("c1", "mongodb", "6.0", "", 2);

    let mut tokens = Vec::new();
    for key in [Some("retry-me"), Some("retry-me"), Some("another"), None] {
        let (status, reply) = match key {
            Some(key) => gw.post_with_key("/provision", &body, key).await,
            None => gw.post("/provision", &body).await,
        };
        assert_eq!(status, 200, "{reply}");
        let ids = ids_of(&reply);
        assert_eq!(ids.len(), 2, "{reply}");
        let mut token = None;
        for id in &ids {
            let described = moto
                .unsigned(
                    "ec2",
                    &[
                        ("Action", "DescribeInstances"),
                        ("Version", "2016-11-15"),
                        ("InstanceId.1", id),
                    ],
                )
                .await;
            let this = between(&described, "<clientToken>", "</clientToken>").to_string();
            assert!(!this.is_empty(), "{id} has no client token: {described}");
            // One RunInstances call: both instances carry the one token.
            assert!(
                token.as_ref().is_none_or(|t| *t == this),
                "{id}: {this} vs {token:?}"
            );
            token = Some(this);
        }
        tokens.push(token.unwrap());
    }
    assert_eq!(tokens[0], tokens[1], "a retry must send the same token");
    assert_ne!(tokens[0], tokens[2], "another key must send another token");
    assert_ne!(tokens[0], tokens[3], "no key must send a token of its own");
    assert_ne!(tokens[2], tokens[3]);
}

#[tokio::test]
async fn the_aws_ec2_plugin_passes_every_check_of_the_kit_against_moto() {
    let moto = Moto::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    // The settings of `ec2_backend`, as a settings file; the secret is read from a file named
    // relative to it.
    std::fs::write(dir.path().join("secret"), "not-checked").unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "region = \"us-east-1\"\nendpoint = {}\naccess_key_id = \"AKIDTEST\"\n\
             secret_access_key = {{ from_file = \"secret\" }}\n\
             agent = {{ scheme = \"http\", port = 37000 }}\n\
             templates = [{{ store = \"mongodb\", image_id = \"ami-12345678\", instance_type = \"t3.micro\" }}]\n",
            toml_str(&moto.endpoint),
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = run_kit(
        "aws_ec2",
        &settings,
        &[
            "--grant-http",
            &moto.endpoint,
            // moto answers a fresh server's first actions slowly (see `ec2_backend`).
            "--timeout",
            "30s",
            "--node-class",
            "t3.micro",
            // The plugin's idempotency is EC2's ClientToken, which moto stores and ignores: a
            // retry there launches new instances (the gateway tests check the token it sends).
            "--skip-idempotency",
        ],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("SKIP  a provision repeated with its request ID gets the same nodes")
            && stdout.ends_with("15 passed, 0 failed, 1 skipped\n"),
        "{stdout}"
    );
    // The kit leaves nothing running: every instance it launched is terminated.
    let described = moto
        .unsigned(
            "ec2",
            &[
                ("Action", "DescribeInstances"),
                ("Version", "2016-11-15"),
                ("Filter.1.Name", "instance-state-name"),
                ("Filter.1.Value.1", "pending"),
                ("Filter.1.Value.2", "running"),
            ],
        )
        .await;
    assert!(!described.contains("<instanceId>"), "{described}");
}

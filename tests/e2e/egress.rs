//! Egress by address: a plugin's http grant names destinations, and the gateway checks the
//! addresses a granted name resolves to before it connects. Loopback, link-local (the cloud
//! metadata service) and the other reserved addresses are reached only when the grant names the
//! address itself; a name or a glob that leads there is refused inside the plugin with
//! `destination-IP-prohibited`, and nothing reaches the server.

use std::sync::atomic::Ordering;

use crate::aws::{Moto, ec2_backend, provision};
use crate::outbound::{report, target_on};
use crate::support::{Gateway, plugin, toml_str};

/// A backend `caller` (the http-probe fixture) that GETs `http://{target}/`, granted `grants`.
fn caller(grants: &[&str], target: &str) -> String {
    let grants: Vec<String> = grants.iter().map(|g| toml_str(g)).collect();
    format!(
        "[backends.caller]\nplugin = {}\ngrants = {{ http = [{}] }}\n\
         [backends.caller.settings]\ntarget = {}\n\n[[routes]]\nbackend = \"caller\"\n",
        toml_str(&plugin("http_probe").display().to_string()),
        grants.join(", "),
        toml_str(target),
    )
}

/// The probe's report for one provision through a gateway on `config` (it always fails with
/// one), and the gateway, for its log.
async fn probe(config: &str) -> (String, Gateway) {
    let gw = Gateway::start(config).await;
    let (status, message) = report(&gw).await;
    assert_eq!(status, 500, "{message}");
    (message, gw)
}

#[tokio::test]
async fn a_granted_name_that_resolves_to_loopback_is_refused_unless_the_grant_names_the_address() {
    let server = target_on("127.0.0.1:0").await;
    let port = server.address.rsplit_once(':').unwrap().1.to_string();
    let by_name = format!("localhost:{port}");
    let name_grant = format!("http://localhost:{port}");

    // Granted by name, by a glob, by a glob over any host: `localhost` is loopback.
    for grant in [name_grant.as_str(), "http://local*:*", "http://*:*"] {
        let (message, gw) = probe(&caller(&[grant], &by_name)).await;
        assert!(
            message.contains("DestinationIpProhibited"),
            "{grant}: {message}"
        );
        gw.wait_for_log("denied: it resolves to 127.0.0.1 (loopback)")
            .await;
    }
    // The address written as text, matched by a glob over names: refused too.
    let (message, _) = probe(&caller(&["http://*:*"], &server.address)).await;
    assert!(message.contains("DestinationIpProhibited"), "{message}");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "a request reached the loopback server"
    );

    // The grant names the address: reached by the address, and by the name that resolves to
    // it.
    let address_grant = format!("http://127.0.0.1:{port}");
    let (message, _) = probe(&caller(&[&address_grant], &server.address)).await;
    assert!(message.ends_with("http: status 200, 2 bytes"), "{message}");
    let (message, _) = probe(&caller(&[&name_grant, &address_grant], &by_name)).await;
    assert!(message.ends_with("http: status 200, 2 bytes"), "{message}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_metadata_address_is_refused_before_any_connection_unless_granted_by_address() {
    // Nothing listens at 169.254.169.254 here: refused before connecting, the plugin is told
    // `destination-IP-prohibited` (a connection attempt would end in another error).
    for target in ["169.254.169.254", "[::ffff:169.254.169.254]"] {
        let (message, gw) = probe(&caller(&["http://*:*"], target)).await;
        assert!(
            message.contains("DestinationIpProhibited"),
            "{target}: {message}"
        );
        gw.wait_for_log("169.254.169.254 (link-local)").await;
    }
}

#[tokio::test]
async fn an_ipv6_loopback_pattern_reaches_a_server_on_that_address() {
    let server = target_on("[::1]:0").await;
    let grant = format!("http://{}", server.address);
    assert!(grant.starts_with("http://[::1]:"), "{grant}");
    let (message, _) = probe(&caller(&[&grant], &server.address)).await;
    assert!(message.ends_with("http: status 200, 2 bytes"), "{message}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_plugin_on_the_sdk_granted_localhost_answers_a_clear_500_and_sends_nothing() {
    let moto = Moto::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    // The aws-ec2 plugin, its endpoint and its grant both `http://localhost:PORT`.
    let by_name = moto.endpoint.replace("127.0.0.1", "localhost");
    let config = ec2_backend("cloud", &moto, dir.path(), "AKIDTEST", "x")
        .replace(&moto.endpoint, &by_name)
        + "[[routes]]\nbackend = \"cloud\"\n";
    assert!(
        config.contains(&format!("http = [\"{by_name}\"]")),
        "{config}"
    );
    let gw = Gateway::start(&config).await;
    let (status, reply) = gw
        .post("/provision", &provision("c1", "mongodb", "6.0", "", 1))
        .await;
    // A configuration problem, not an outage: 500, not a 503 to retry.
    assert_eq!(status, 500, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(
        message.contains("backend `cloud`")
            && message.contains("resolves to an address")
            && message.contains("does not name"),
        "{message}"
    );
    let described = moto
        .unsigned(
            "ec2",
            &[("Action", "DescribeInstances"), ("Version", "2016-11-15")],
        )
        .await;
    assert!(!described.contains("<instanceId>"), "{described}");
}

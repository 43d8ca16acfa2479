//! Operating the gateway in production: TLS on the API (certificates rotated by a reload),
//! client certificates, the admin token, and trace context carried into plugin log lines.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Ca, Workdir, pool_backend, provision_body, run_cli, shared_cache, toml_str};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn config(server_tls: &str, admin: &str) -> String {
    format!(
        "[state]\ndir = \"state\"\ncache_dir = {}\n[server]\n{server_tls}\n[admin]\n{admin}\n\n{}[[routes]]\nbackend = \"pool\"\n",
        toml_str(&shared_cache().display().to_string()),
        pool_backend("pool", &[("m1", "small"), ("m2", "small")]),
    )
    .replace("[server]\n\n", "")
}

pub(crate) fn client(ca: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(20))
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// The certificate a TLS server presents, as DER.
async fn presented_certificate(address: &str, ca: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn tls_serves_every_endpoint_refuses_plain_http_and_rotates_certificates_on_reload() {
    let work = Workdir::new();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.sign(&["127.0.0.1", "localhost"]);
    let cert_path = write(work.path(), "server.pem", &cert);
    let key_path = write(work.path(), "server-key.pem", &key);
    let server_tls = format!(
        "tls = {{ cert = {}, key = {} }}",
        toml_str(&cert_path),
        toml_str(&key_path)
    );
    let text = config(&server_tls, "listen = \"127.0.0.1:0\"");
    let gw = work.start_cold(&text).await;
    assert!(gw.url("/").starts_with("https://"), "{}", gw.url("/"));
    let https = client(&ca.pem, None);
    gw.wait_ready_through(&https).await;

    let r = https.get(gw.url("/discover")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = https
        .post(gw.url("/provision"))
        .json(&provision_body("c1", "mongodb", "data", "small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let node = r.json::<Value>().await.unwrap()["node_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let r = https
        .post(gw.url("/deprovision"))
        .json(&json!({ "cluster_id": "c1", "node_id": node }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let address = gw.address();
    assert!(
        plain
            .get(format!("http://{address}/discover"))
            .send()
            .await
            .is_err()
    );

    // Rotate the certificate under load: no request fails, new connections get the new one.
    let before = presented_certificate(&address, &ca.pem).await;
    let load = {
        let (https, url) = (https.clone(), gw.url("/discover"));
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                match https.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    let (new_cert, new_key) = ca.sign(&["127.0.0.1", "localhost"]);
    write(work.path(), "server.pem", &new_cert);
    write(work.path(), "server-key.pem", &new_key);
    let (status, reply) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{reply}");
    let (ok, failed) = load.await.unwrap();
    assert!(
        ok > 0 && failed == 0,
        "{ok} served, {failed} failed during the rotation"
    );
    let after = presented_certificate(&address, &ca.pem).await;
    assert_ne!(before, after, "the new certificate is not served");
    use rustls::pki_types::pem::PemObject;
    let expected = rustls::pki_types::CertificateDer::from_pem_slice(new_cert.as_bytes()).unwrap();
    assert_eq!(after, expected.to_vec());
}

#[tokio::test]
async fn client_certificates_from_the_configured_ca_only() {
    let work = Workdir::new();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let other_ca = Ca::new("someone else");
    let (cert, key) = server_ca.sign(&["127.0.0.1"]);
    let server_tls = format!(
        "tls = {{ cert = {}, key = {}, client_ca = {} }}",
        toml_str(&write(work.path(), "s.pem", &cert)),
        toml_str(&write(work.path(), "s-key.pem", &key)),
        toml_str(&write(work.path(), "client-ca.pem", &client_ca.pem)),
    );
    let gw = work
        .start_cold(&config(&server_tls, "listen = \"127.0.0.1:0\""))
        .await;
    let (good_cert, good_key) = client_ca.sign(&["replicante-core"]);
    let good = client(&server_ca.pem, Some((&good_cert, &good_key)));
    gw.wait_ready_through(&good).await;
    let r = good.get(gw.url("/discover")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let anonymous = client(&server_ca.pem, None);
    assert!(anonymous.get(gw.url("/discover")).send().await.is_err());
    let (bad_cert, bad_key) = other_ca.sign(&["intruder"]);
    let stranger = client(&server_ca.pem, Some((&bad_cert, &bad_key)));
    assert!(stranger.get(gw.url("/discover")).send().await.is_err());
    // Refused by the handshake, not by a server that went away: the good client is still
    // served, and it is a new connection each time (a failed one is never pooled).
    let r = good.get(gw.url("/discover")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client(&server_ca.pem, Some((&good_cert, &good_key)))
        .get(gw.url("/discover"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn status_presents_a_client_certificate_to_an_admin_api_that_requires_one() {
    let work = Workdir::new();
    let dir = work.path();
    let server_ca = Ca::new("admin server CA");
    let client_ca = Ca::new("admin client CA");
    let other_ca = Ca::new("someone else");
    let (cert, key) = server_ca.sign(&["127.0.0.1"]);
    let admin = format!(
        "listen = \"127.0.0.1:0\"\ntls = {{ cert = {}, key = {}, client_ca = {} }}",
        toml_str(&write(dir, "admin.pem", &cert)),
        toml_str(&write(dir, "admin-key.pem", &key)),
        toml_str(&write(dir, "client-ca.pem", &client_ca.pem)),
    );
    let gw = work.start_cold(&config("", &admin)).await;
    gw.wait_ready().await;
    let url = gw.admin.clone().unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let server_ca = write(dir, "server-ca.pem", &server_ca.pem);
    let (good_cert, good_key) = client_ca.sign(&["operator"]);
    let (good_cert, good_key) = (
        write(dir, "operator.pem", &good_cert),
        write(dir, "operator-key.pem", &good_key),
    );
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--admin", &url, "--admin-ca", &server_ca];
        args.extend_from_slice(extra);
        run_cli(&args)
    };

    let (ok, out, err) = status(&["--admin-cert", &good_cert, "--admin-key", &good_key]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("generation 1"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("pool ")), "{out}");

    // Without a certificate, or with one from another CA, the listener refuses the handshake.
    let (ok, out, err) = status(&[]);
    assert!(!ok, "{out}");
    assert!(err.contains(&url), "{err}");
    let (bad_cert, bad_key) = other_ca.sign(&["intruder"]);
    let (bad_cert, bad_key) = (
        write(dir, "intruder.pem", &bad_cert),
        write(dir, "intruder-key.pem", &bad_key),
    );
    let (ok, out, _) = status(&["--admin-cert", &bad_cert, "--admin-key", &bad_key]);
    assert!(!ok, "{out}");

    // A certificate without its key is a usage error; a key file that holds no key is named,
    // and its text is not shown.
    let (ok, _, err) = status(&["--admin-cert", &good_cert]);
    assert!(!ok);
    assert!(err.contains("--admin-key"), "{err}");
    let not_a_key = write(dir, "not-a-key.pem", "s3cret-not-a-pem-key\n");
    let (ok, _, err) = status(&["--admin-cert", &good_cert, "--admin-key", &not_a_key]);
    assert!(!ok);
    assert!(err.contains("not-a-key.pem"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test]
async fn the_admin_token_is_required_on_every_admin_route_and_never_shown() {
    let work = Workdir::new();
    let token = "s3cret-admin-token-0123456789";
    let admin = format!(
        "listen = \"127.0.0.1:0\"\ntoken = {{ from_file = {} }}",
        toml_str(&write(work.path(), "admin-token", &format!("{token}\n")))
    );
    let gw = work.start_cold(&config("", &admin)).await;
    gw.wait_ready().await;
    let base = format!("http://{}", gw.admin_address());
    let http = reqwest::Client::new();
    let routes: [(&str, Option<Value>); 9] = [
        ("/admin/generation", None),
        ("/admin/recordings/pool", None),
        ("/admin/state", None),
        ("/admin/backends", None),
        ("/admin/activity", None),
        ("/admin/routes", None),
        ("/metrics", None),
        ("/admin/reload", Some(json!({}))),
        (
            "/admin/route",
            Some(json!({ "cluster_id": "c", "node_id": "n" })),
        ),
    ];
    for (path, body) in &routes {
        for auth in [
            None,
            Some("Bearer wrong-token-wrong-token"),
            Some("Basic eDp5"),
        ] {
            let mut request = match body {
                Some(body) => http.post(format!("{base}{path}")).json(body),
                None => http.get(format!("{base}{path}")),
            };
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {auth:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], json!(true), "{body}");
            assert!(!body.to_string().contains(token));
        }
        let mut request = match body {
            Some(body) => http.post(format!("{base}{path}")).json(body),
            None => http.get(format!("{base}{path}")),
        };
        request = request.bearer_auth(token);
        let r = request.send().await.unwrap();
        assert_ne!(r.status(), 401, "{path} with the token");
        assert!(
            r.status().is_success() || r.status() == 404,
            "{path}: {}",
            r.status()
        );
    }
    assert!(!gw.log().contains(token), "the token reached the log");

    // An admin API on a non-loopback address without a token is refused by `check`.
    let exposed = config("", "listen = \"0.0.0.0:0\"");
    let path = write(work.path(), "exposed.toml", &exposed);
    let (ok, _, stderr) = run_cli(&["check", "--config", &path]);
    assert!(!ok);
    assert!(
        stderr.contains("admin.listen") && stderr.contains("admin.token"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_traceparent_reaches_the_plugins_log_line_for_that_call() {
    let work = Workdir::new();
    let gw = work
        .start(&format!(
            "{}[[routes]]\nbackend = \"pool\"\n",
            pool_backend("pool", &[("m1", "small")])
        ))
        .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(gw.url("/provision"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&provision_body("c1", "mongodb", "data", "small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.wait_for_log("allocated m1").await;
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("allocated m1")).unwrap();
    assert!(line.contains(trace_id), "{line}");
    assert!(line.contains("plugin_call"), "{line}");
}

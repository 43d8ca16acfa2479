//! The config file end to end: each section through its owner, errors naming key and line.

use super::*;
use crate::state::StateQuota;
use crate::telemetry::{LogFormat, OtlpTls};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/gateway/gateway.toml"), text)
}

const MINIMAL: &str = r#"
[backends.pool]
plugin = "plugins/pool.wasm"

[[routes]]
backend = "pool"
"#;

#[test]
fn a_syntax_error_names_the_line_and_key_but_never_shows_the_value() {
    let secret = "sekret-0123456789abcdef";
    // An unterminated string on the last line: the parser's own message quotes that line.
    let text = format!("{MINIMAL}\n[backends.pool.settings]\napi_key = \"{secret}");
    let error = parse(&text).unwrap_err().to_string();
    assert!(!error.contains(secret), "{error}");
    assert!(!error.contains("sekret"), "{error}");
    let line = text.lines().count();
    assert!(error.contains(&format!("line {line}")), "{error}");
    assert!(error.contains("backends.pool.settings.api_key"), "{error}");
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_its_key_and_not_quoted() {
    let secret = "sekret-0123456789abcdef";
    let text = format!("[admin]\nlisten = \"{secret}\"\n{MINIMAL}");
    let error = parse(&text).unwrap_err().to_string();
    assert!(!error.contains(secret), "{error}");
    assert!(error.contains("line 2"), "{error}");
    assert!(error.contains("admin.listen"), "{error}");
}

#[test]
fn minimal_config_gets_defaults_and_paths_relative_to_the_file() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(config.state_dir, PathBuf::from("/etc/gateway/state"));
    assert_eq!(
        config.cache_dir,
        PathBuf::from("/etc/gateway/state/compiled")
    );
    assert_eq!(config.max_body_size, 1 << 20);
    let pool = config.backends.values().next().unwrap();
    assert_eq!(pool.plugin, PathBuf::from("/etc/gateway/plugins/pool.wasm"));
    assert_eq!(pool.limits, Limits::default());
}

#[test]
fn settings_pass_strings_as_is_and_other_values_as_json() {
    let config = parse(
        r#"
[backends.pool]
plugin = "pool.wasm"
[backends.pool.settings]
region = "eu-west-1"
size = 3
machines = [{ id = "m1", ok = true }]
"#,
    )
    .unwrap();
    let settings = &config.backends.values().next().unwrap().settings;
    let get = |k: &str| settings.iter().find(|s| s.key == k).unwrap().text.clone();
    assert_eq!(get("region"), "eu-west-1");
    assert_eq!(get("size"), "3");
    let machines: serde_json::Value = serde_json::from_str(&get("machines")).unwrap();
    assert_eq!(machines, serde_json::json!([{ "id": "m1", "ok": true }]));
}

#[test]
fn limits_parse_human_units() {
    let config = parse(
        r#"
[backends.pool]
plugin = "pool.wasm"
limits = { memory = "16MiB", timeout = "250ms", concurrency = 4, queue = 2, max_response = "1KiB" }
"#,
    )
    .unwrap();
    let limits = &config.backends.values().next().unwrap().limits;
    assert_eq!(limits.memory, 16 << 20);
    assert_eq!(limits.timeout, Duration::from_millis(250));
    assert_eq!(limits.concurrency, 4);
    assert_eq!(limits.queue, 2);
    assert_eq!(limits.max_response, 1024);
}

#[test]
fn state_quotas_parse_and_a_bad_one_names_its_key_and_line() {
    let config = parse(
        "[backends.pool]\nplugin = \"p.wasm\"\n\n[backends.pool.limits]\nstate_keys = 500\n\
             state_bytes = \"2MiB\"\nstate_value_size = \"4KiB\"\nstate_writes_per_second = 50\n",
    )
    .unwrap();
    let quota = config.backends.values().next().unwrap().limits.state;
    assert_eq!(
        quota,
        StateQuota {
            keys: 500,
            bytes: 2 << 20,
            value: 4 << 10,
            writes_per_second: 50,
        }
    );
    // Unset, the defaults are bounded.
    let default = Limits::default().state;
    assert!(
        default.keys <= 1_000_000 && default.bytes <= 1 << 30,
        "{default:?}"
    );
    for (line, key) in [
        ("state_keys = 0", "state_keys"),
        ("state_bytes = \"0B\"", "state_bytes"),
        ("state_value_size = \"2MiB\"", "state_value_size"),
        ("state_writes_per_second = 0", "state_writes_per_second"),
        ("state_keys = -1", "state_keys"),
    ] {
        let err = parse(&format!(
            "[backends.pool]\nplugin = \"p.wasm\"\n\n[backends.pool.limits]\n{line}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 5"), "{line}: {err}");
        assert!(err.contains(key), "{line}: {err}");
    }
}

#[test]
fn unknown_key_is_an_error_naming_key_and_line() {
    let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn wrong_type_is_an_error_naming_key_and_line() {
    let err = parse("[backends.pool]\nplugin = \"p.wasm\"\nlimits = { concurrency = \"many\" }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("concurrency"), "{err}");
}

#[test]
fn bad_duration_is_an_error_naming_the_line() {
    let err = parse(
        "[backends.pool]\nplugin = \"p.wasm\"\n\n[backends.pool.limits]\ntimeout = \"soon\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("timeout"), "{err}");
}

#[test]
fn route_to_unknown_backend_names_it_and_the_line() {
    let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n\n[[routes]]\nstore = \"mongodb\"\nbackend = \"cloud\"\n",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 6"), "{err}");
    assert!(err.contains("routes[0].backend"), "{err}");
    assert!(err.contains("unknown backend `cloud`"), "{err}");
    assert!(err.contains("defined: pool"), "{err}");
}

#[test]
fn zero_concurrency_is_refused() {
    let err = parse("[backends.pool]\nplugin = \"p.wasm\"\nlimits = { concurrency = 0 }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("backends.pool.limits.concurrency"), "{err}");
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn bad_backend_name_is_refused() {
    let err = parse("[backends.\"my pool\"]\nplugin = \"p.wasm\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("backends.my pool"), "{err}");
}

#[test]
fn bad_listen_address_is_refused() {
    let err = parse("[server]\nlisten = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn discovery_policy_and_admin_listener_are_optional() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.discovery, DiscoveryPolicy::Fail);
    assert_eq!(config.admin_listen, None);
    let config = parse(&format!(
            "[discovery]\non_backend_failure = \"partial\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n{MINIMAL}"
        ))
        .unwrap();
    assert_eq!(config.discovery, DiscoveryPolicy::Partial);
    assert_eq!(config.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    let err = parse("[discovery]\non_backend_failure = \"ignore\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("ignore"), "{err}");
}

#[test]
fn shadowed_route_is_refused_naming_both_rules_and_lines() {
    let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n\n[[routes]]\nname = \"everything\"\nbackend = \"pool\"\n\n[[routes]]\nname = \"kafka\"\nstore = \"kafka\"\nbackend = \"pool\"\n",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("`kafka` can never match"), "{err}");
    assert!(err.contains("`everything`"), "{err}");
    assert!(err.contains("line 8") && err.contains("line 4"), "{err}");
}

#[test]
fn duplicate_route_names_are_refused_naming_both_lines() {
    let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n[[routes]]\nname = \"r\"\nstore = \"a\"\nbackend = \"pool\"\n[[routes]]\nname = \"r\"\nbackend = \"pool\"\n",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("route name `r`"), "{err}");
    assert!(err.contains("line 7") && err.contains("line 3"), "{err}");
}

#[test]
fn secrets_come_from_the_environment_or_a_file_and_never_show_in_debug() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "s3cr3t-file\n").unwrap();
    // SAFETY: the variable name is unique to this test.
    unsafe { std::env::set_var("PGW_TEST_SECRET_ENV", "s3cr3t-env") };
    let config = Config::parse(
        &dir.path().join("gateway.toml"),
        "[backends.cloud]\nplugin = \"p.wasm\"\n[backends.cloud.settings]\n\
             key = { from_env = \"PGW_TEST_SECRET_ENV\" }\nfile = { from_file = \"key\" }\n\
             other = { from_env = \"X\", extra = 1 }\n",
    )
    .unwrap();
    let backend = config.backends.values().next().unwrap();
    let get = |k: &str| {
        backend
            .settings
            .iter()
            .find(|s| s.key == k)
            .map(|s| s.text.clone())
            .unwrap()
    };
    assert_eq!(get("key"), "s3cr3t-env");
    assert_eq!(get("file"), "s3cr3t-file");
    // Two keys: an ordinary table, not a secret reference.
    assert_eq!(get("other"), r#"{"extra":1,"from_env":"X"}"#);
    assert_eq!(backend.secrets, vec!["s3cr3t-file", "s3cr3t-env"]);
    // The file is watched with the config; the environment cannot be.
    assert_eq!(config.included_files, [dir.path().join("key")]);
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
}

#[test]
fn a_missing_secret_is_an_error_naming_key_and_line() {
    let err = parse(
            "[backends.cloud]\nplugin = \"p.wasm\"\n[backends.cloud.settings]\ntoken = { from_env = \"PGW_SURELY_UNSET\" }\n",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("backends.cloud.settings.token"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("`PGW_SURELY_UNSET` is not set"), "{err}");
}

#[test]
fn read_grants_and_the_plan_ttl_are_checked_naming_the_key_and_line() {
    let config = parse(
        "[admin]\nplan_ttl = \"30s\"\n[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = \
         [\"https://*.amazonaws.com\"], reads = [{ method = \"POST\", url = \
         \"https://ec2.*.amazonaws.com/\", body = \"Action=Describe*\" }] }\n",
    )
    .unwrap();
    assert_eq!(config.plan_ttl, Duration::from_secs(30));
    let reads = config.backends.values().map(|b| match &b.grants.http {
        Some(allow) => allow.reads().len(),
        None => 0,
    });
    assert_eq!(reads.sum::<usize>(), 1);
    assert_eq!(
        parse("[backends.a]\nplugin = \"p.wasm\"\n")
            .unwrap()
            .plan_ttl,
        Duration::from_secs(600)
    );
    for (text, needle) in [
        (
            "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { reads = [{ method = \"POST\", url = \"https://x/\" }] }\n",
            "`http` grant",
        ),
        (
            "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"https://x\"], reads = [{ method = \"post\", url = \"https://x/\" }] }\n",
            "HTTP method in capitals",
        ),
        (
            "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"https://x\"], reads = [{ method = \"POST\", url = \"https://x/\", verb = 1 }] }\n",
            "verb",
        ),
        ("[admin]\nplan_ttl = \"0s\"\n", "admin.plan_ttl"),
        ("[admin]\nplan_ttl = \"2d\"\n", "at most 24h"),
    ] {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains(needle), "{needle}: {error}");
        assert!(error.contains("line"), "{error}");
    }
}

#[test]
fn http_grants_are_parsed_and_checked() {
    let config = parse(
            "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"https://*.amazonaws.com\"] }\n",
        )
        .unwrap();
    let grant = config
        .backends
        .values()
        .next()
        .unwrap()
        .grants
        .http
        .clone()
        .unwrap();
    assert_eq!(grant.patterns(), vec!["https://*.amazonaws.com"]);
    assert!(
        parse(MINIMAL)
            .unwrap()
            .backends
            .values()
            .next()
            .unwrap()
            .grants
            .http
            .is_none()
    );
    let err = parse("[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"ftp://x\"] }\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backends.cloud.grants.http") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn an_http_grant_may_trust_a_ca_bundle_instead_of_the_public_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["ca.internal".to_string()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let config = |ca: &str| {
        Config::parse(
            &dir.path().join("gateway.toml"),
            &format!(
                "[backends.cloud]\nplugin = \"p.wasm\"\n\
                     grants = {{ http = [\"https://api.internal\"], ca = \"{ca}\" }}\n"
            ),
        )
    };
    let parsed = config("ca.pem").unwrap();
    let grant = parsed
        .backends
        .values()
        .next()
        .unwrap()
        .grants
        .http
        .clone()
        .unwrap();
    assert_eq!(grant.ca(), Some(dir.path().join("ca.pem").as_path()));
    // A reload watches the bundle with the config.
    assert_eq!(parsed.included_files, [dir.path().join("ca.pem")]);

    for (file, why) in [
        ("empty.pem", "holds no PEM certificate"),
        ("missing.pem", "cannot read CA bundle"),
    ] {
        let e = config(file).unwrap_err().to_string();
        assert!(
            e.contains("backends.cloud.grants.ca") && e.contains("line 3") && e.contains(why),
            "{e}"
        );
    }
    let e = parse("[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { ca = \"ca.pem\" }\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("backends.cloud.grants.ca") && e.contains("`http` grant"),
        "{e}"
    );
}

#[test]
fn otlp_export_over_https_reads_its_ca_and_client_certificate_when_the_config_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["collector".to_string()]).unwrap();
    write("ca.pem", &ca.cert.pem());
    let client = rcgen::generate_simple_self_signed(vec!["gateway".to_string()]).unwrap();
    write("client.pem", &client.cert.pem());
    write("client-key.pem", &client.signing_key.serialize_pem());
    write("not-a-key.pem", "sekret-key-material\n");
    let config = |tls: &str| {
        Config::parse(
            &dir.path().join("gateway.toml"),
            &format!("[telemetry]\notlp_endpoint = \"https://collector:4318\"\n{tls}\n{MINIMAL}"),
        )
    };

    // Without `otlp_tls`: the system's roots.
    let plain = config("").unwrap().telemetry;
    assert_eq!(plain.otlp_tls, OtlpTls::default());
    assert_eq!(
        plain.traces_url().as_deref(),
        Some("https://collector:4318/v1/traces")
    );
    let parsed =
        config("otlp_tls = { ca = \"ca.pem\", cert = \"client.pem\", key = \"client-key.pem\" }")
            .unwrap()
            .telemetry;
    let at = |name: &str| dir.path().join(name);
    assert_eq!(
        parsed.otlp_tls,
        OtlpTls {
            ca: Some(at("ca.pem")),
            identity: Some((at("client.pem"), at("client-key.pem"))),
        }
    );
    for (tls, why) in [
        ("otlp_tls = { ca = \"missing.pem\" }", "missing.pem"),
        (
            "otlp_tls = { ca = \"not-a-key.pem\" }",
            "holds no PEM certificate",
        ),
        (
            "otlp_tls = { cert = \"client.pem\", key = \"not-a-key.pem\" }",
            "not-a-key.pem holds no readable PEM private key",
        ),
        (
            "otlp_tls = { cert = \"client.pem\", key = \"client-key.pem\", extra = 1 }",
            "extra",
        ),
    ] {
        let e = config(tls).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains(why), "{tls}: {e}");
        assert!(!e.contains("sekret"), "{e}");
    }
}

#[test]
fn bad_cluster_glob_is_refused() {
    let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n[[routes]]\nbackend = \"pool\"\ncluster_id = \"prod-[\"\n",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes[0].cluster_id"), "{err}");
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn zero_and_absurd_timeouts_are_refused_naming_key_and_line() {
    for timeout in ["0s", "100000h"] {
        let text = format!(
            "[backends.pool]\nplugin = \"p.wasm\"\nlimits = {{ timeout = \"{timeout}\" }}\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("backends.pool.limits.timeout"),
            "{e}"
        );
    }
    let e = parse(
        "[state]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\ntimeout = \"0s\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("state.timeout") && e.contains("line 4"), "{e}");
}

#[test]
fn a_zero_body_size_limit_is_refused() {
    let e = parse("[server]\nmax_body_size = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server.max_body_size") && e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn toml_dates_and_times_reach_plugins_as_rfc3339_strings() {
    let config = parse(
        r#"
[backends.pool]
plugin = "p.wasm"
[backends.pool.settings]
since = 1979-05-27T07:32:00Z
day = 1979-05-27
nested = { at = 1979-05-27T00:32:00-07:00, list = [07:32:00] }
"#,
    )
    .unwrap();
    let settings: BTreeMap<_, _> = config
        .backends
        .values()
        .next()
        .unwrap()
        .settings
        .iter()
        .map(|s| (s.key.clone(), s.text.clone()))
        .collect();
    assert_eq!(settings["since"], "\"1979-05-27T07:32:00Z\"");
    assert_eq!(settings["day"], "\"1979-05-27\"");
    assert_eq!(
        settings["nested"],
        r#"{"at":"1979-05-27T00:32:00-07:00","list":["07:32:00"]}"#
    );
}

#[test]
fn a_changed_listen_address_is_reported_as_needing_a_restart() {
    let before = parse(MINIMAL).unwrap();
    let after = parse(&format!("[server]\nlisten = \"127.0.0.1:9999\"\n{MINIMAL}")).unwrap();
    assert_eq!(before.restart_only_changes(&after), ["server.listen"]);
}

#[test]
fn the_etcd_store_takes_endpoints_prefix_timeout_and_credentials() {
    // SAFETY: a variable only this test reads, set before any thread of it reads it.
    unsafe { std::env::set_var("PG_TEST_ETCD_PASSWORD", "hunter2") };
    let config = parse(
        r#"
[state]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
prefix = "/platform-gateway/prod/"
timeout = "3s"
username = "gateway"
password = { from_env = "PG_TEST_ETCD_PASSWORD" }
tls = { ca = "ca.pem" }
dir = "state"
"#,
    )
    .unwrap();
    let StoreConfig::Etcd(etcd) = &config.store else {
        panic!("not etcd: {:?}", config.store);
    };
    assert_eq!(etcd.endpoints.len(), 2);
    assert_eq!(etcd.prefix, "/platform-gateway/prod");
    assert_eq!(etcd.timeout, Duration::from_secs(3));
    assert_eq!(etcd.username.as_deref(), Some("gateway"));
    assert_eq!(etcd.password.as_deref(), Some("hunter2"));
    assert_eq!(
        etcd.tls.as_ref().unwrap().ca.as_deref(),
        Some(Path::new("/etc/gateway/ca.pem"))
    );
    assert_eq!(config.state_dir, PathBuf::from("/etc/gateway/state"));
    // The embedded store is the default, and etcd keys are refused beside it.
    assert_eq!(parse(MINIMAL).unwrap().store, StoreConfig::Embedded);
    let e = parse("[state]\nendpoints = [\"http://x:1\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("state.endpoints") && e.contains("etcd"), "{e}");
    let e = parse("[state]\nbackend = \"etcd\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("state.endpoints") && e.contains("line 2"), "{e}");
    let e = parse("[state]\nbackend = \"zookeeper\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend") && e.contains("line 2"), "{e}");
}

#[test]
fn two_backends_cannot_share_a_state_namespace() {
    let e = parse(
            "[backends.a]\nplugin = \"p.wasm\"\n[backends.b]\nplugin = \"p.wasm\"\nstate_namespace = \"a\"\n",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("already used by backend `a`"), "{e}");
}

#[test]
fn telemetry_sets_the_log_format_and_otlp_export_strictly() {
    let defaults = parse(MINIMAL).unwrap().telemetry;
    assert_eq!(defaults, TelemetrySettings::default());
    assert_eq!(defaults.service_name, "platform-gateway");
    assert_eq!(defaults.traces_url(), None);

    let config = parse(&format!(
            "[telemetry]\nlog_format = \"json\"\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"gw-eu\"\n{MINIMAL}"
        ))
        .unwrap();
    assert_eq!(config.telemetry.log_format, Some(LogFormat::Json));
    assert_eq!(
        config.telemetry.traces_url().as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(config.telemetry.service_name, "gw-eu");
    let text = parse(&format!("[telemetry]\nlog_format = \"text\"\n{MINIMAL}")).unwrap();
    assert_eq!(text.telemetry.log_format, Some(LogFormat::Text));
    // A telemetry change needs a restart: the subscriber is installed once.
    let mut before = config.clone();
    before.telemetry = TelemetrySettings::default();
    assert_eq!(before.restart_only_changes(&config), ["telemetry"]);

    for (text, key, line) in [
        (
            "[telemetry]\nlog_format = \"xml\"\n",
            "log_format",
            "line 2",
        ),
        (
            "[telemetry]\n\nlog_fromat = \"json\"\n",
            "log_fromat",
            "line 3",
        ),
        (
            "[telemetry]\notlp_endpoint = \"ftp://collector:4318\"\n",
            "telemetry.otlp_endpoint",
            "line 2",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://collector:4318\"\notlp_tls = {}\n",
            "telemetry.otlp_tls",
            "line 3",
        ),
        (
            "[telemetry]\notlp_endpoint = \"https://c:4318\"\notlp_tls = { cert = \"c.pem\" }\n",
            "go together",
            "line 3",
        ),
        (
            "[telemetry]\notlp_endpoint = \"collector\"\n",
            "telemetry.otlp_endpoint",
            "line 2",
        ),
        (
            "[telemetry]\notlp_endpoint = 4318\n",
            "otlp_endpoint",
            "line 2",
        ),
        (
            "[telemetry]\nservice_name = \" \"\n",
            "telemetry.service_name",
            "line 2",
        ),
    ] {
        let e = parse(&format!("{text}{MINIMAL}")).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(line), "{text}: {e}");
    }
}

#[test]
fn record_tables_apply_to_their_backend_and_the_top_level_one_to_every_other() {
    use crate::recording::{DEFAULT_BYTES, RecordConfig};
    let text = "[record]\ncalls = 500\n\n\
        [backends.a]\nplugin = \"a.wasm\"\n\n\
        [backends.b]\nplugin = \"b.wasm\"\n[backends.b.record]\ncalls = 20\nbytes = \"2MiB\"\n\n\
        [[routes]]\nbackend = \"a\"\n";
    let config = parse(text).unwrap();
    let record = |name: &str| config.backends[&BackendId::new(name).unwrap()].record;
    assert_eq!(
        record("a"),
        Some(RecordConfig {
            calls: 500,
            bytes: DEFAULT_BYTES
        })
    );
    assert_eq!(
        record("b"),
        Some(RecordConfig {
            calls: 20,
            bytes: 2 << 20
        })
    );
    assert_eq!(
        parse(MINIMAL)
            .unwrap()
            .backends
            .values()
            .next()
            .unwrap()
            .record,
        None
    );
    for (text, key, line) in [
        (format!("[record]\ncalls = 0\n{MINIMAL}"), "record.calls", 2),
        (
            format!("{MINIMAL}\n[backends.pool.record]\ncalls = 5\nbytes = \"1KiB\"\n"),
            "backends.pool.record.bytes",
            10,
        ),
    ] {
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains(key), "{text}: {error}");
        assert!(error.contains(&format!("line {line}")), "{text}: {error}");
    }
}

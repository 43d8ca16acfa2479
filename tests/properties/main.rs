//! Property tests of bad input: malformed and adversarial bodies for the three endpoints (wrong
//! types, missing fields, huge strings and maps, deep nesting, invalid UTF-8,
//! duplicate keys) always get a 4xx in the error shape, and change nothing.
//!
//! The API runs in process (`tower::ServiceExt::oneshot`) over a real gateway: the real pool
//! plugin, a real state store, so "nothing changed" is checked in the store itself.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use platform_gateway::config::Config;
use platform_gateway::gateway::{Gateway, Generation};
use platform_gateway::runtime::Runtime;
use platform_gateway::state::{RedbStore, StateStore};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const MAX_BODY: usize = 16 << 10;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: Router,
    state: Arc<dyn StateStore>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        xtask::build_plugins().expect("plugins build");
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nmax_body_size = \"{}B\"\n[backends.pool]\nplugin = {}\n\
             [backends.pool.settings]\nmachines = [{{ id = \"m1\", agent_address = \"http://a\", node_class = \"small\" }}]\n\
             [[routes]]\nbackend = \"pool\"\n",
            MAX_BODY,
            toml::Value::String(xtask::plugin_path("pool").display().to_string())
        );
        let config = Config::parse(&dir.path().join("gateway.toml"), &text).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let state: Arc<dyn StateStore> = Arc::new(RedbStore::open(&config.state_dir).unwrap());
        let engine = Runtime::new(None, u64::MAX, 64).unwrap();
        let generation = Generation::load(1, config.clone(), &engine, &state, None).unwrap();
        let gateway = Arc::new(Gateway::new(state.clone()));
        gateway.install(generation);
        let router = platform_gateway::api::router(gateway, config.max_body_size);
        Fixture {
            runtime,
            router,
            state,
            _dir: dir,
        }
    })
}

fn send(method: Method, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let f = fixture();
    f.runtime.block_on(async {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = f.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, bytes.to_vec())
    })
}

/// Everything the store holds: every namespace (the plugin's keys, the gateway's deprovision
/// records) and the ownership index. Empty means nothing changed.
fn store_contents() -> (Vec<String>, Vec<String>) {
    let f = fixture();
    f.runtime.block_on(async {
        let namespaces = f.state.namespaces(None, 100).await.unwrap();
        let owners = f.state.owners(None, 100).await.unwrap();
        let owners = owners
            .into_iter()
            .map(|o| format!("{}/{} -> {}", o.cluster_id, o.node_id, o.backend))
            .collect();
        (namespaces, owners)
    })
}

/// The reply is `expected`, in the error shape Replicante decodes, and the store is untouched.
fn refused_with(expected: u16, status: u16, body: &[u8]) -> Result<(), String> {
    let (namespaces, owners) = store_contents();
    if !namespaces.is_empty() || !owners.is_empty() {
        return Err(format!(
            "state changed: namespaces {namespaces:?}, owners {owners:?}"
        ));
    }
    shaped(status, body)?;
    if status != expected {
        return Err(format!(
            "status {status}, not {expected}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    Ok(())
}

/// The reply is an error in the shape Replicante decodes.
fn shaped(status: u16, body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    if !(400..500).contains(&status) {
        return Err(format!("status {status}: {text}"));
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|e| format!("reply is not JSON: {e}: {text}"))?;
    if body["error"] != json!(true) || body["error_msg"].as_str().is_none_or(|m| m.is_empty()) {
        return Err(format!("not the error shape: {body}"));
    }
    Ok(())
}

/// [`refused_with`] 400, the status the HTTP API (docs/http-api.md) gives bad input.
fn refused(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    refused_with(400, status, body).map_err(TestCaseError::fail)
}

fn nothing_changed() {
    assert_eq!(store_contents(), (Vec::new(), Vec::new()));
    let (status, body) = send(Method::GET, "/discover", Vec::new());
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({ "clusters": [] })
    );
}

/// Send `body` as a provision: refused with 400, the store untouched.
fn provision_refused(what: &str, body: &Value) {
    let (status, reply) = send(Method::POST, "/provision", body.to_string().into_bytes());
    if let Err(e) = refused_with(400, status, &reply) {
        panic!("{what}: {e}");
    }
}

fn valid_provision() -> Value {
    json!({
        "cluster": {
            "cluster_id": "c1",
            "store": "mongodb",
            "store_version": "4.0",
            "attributes": { "a": 1 },
            "nodes": {
                "data": { "attributes": { "b": 2 }, "desired_count": 3, "node_class": "small", "version": "4.0" }
            }
        },
        "provision": { "node_group_id": "data", "count": 1 }
    })
}

/// Required fields of the provision body (removing one is a 400).
const REQUIRED: &[&[&str]] = &[
    &["cluster"],
    &["provision"],
    &["cluster", "cluster_id"],
    &["cluster", "store"],
    &["cluster", "store_version"],
    &["cluster", "nodes"],
    &["cluster", "nodes", "data", "desired_count"],
    &["cluster", "nodes", "data", "node_class"],
    &["provision", "node_group_id"],
];

/// Every typed field, with a value of a type it never accepts.
fn wrong_types() -> Vec<(&'static [&'static str], Value)> {
    vec![
        (&["cluster"], json!("c")),
        (&["provision"], json!([1])),
        (&["cluster", "cluster_id"], json!(7)),
        (&["cluster", "store"], json!(null)),
        (&["cluster", "store_version"], json!(4.0)),
        (&["cluster", "attributes"], json!([1, 2])),
        (&["cluster", "nodes"], json!(["data"])),
        (&["cluster", "nodes", "data"], json!(3)),
        (&["cluster", "nodes", "data", "attributes"], json!("x")),
        (&["cluster", "nodes", "data", "desired_count"], json!(-1)),
        (&["cluster", "nodes", "data", "desired_count"], json!(1.5)),
        (
            &["cluster", "nodes", "data", "desired_count"],
            json!(u64::MAX),
        ),
        (&["cluster", "nodes", "data", "node_class"], json!({})),
        (&["cluster", "nodes", "data", "version"], json!(4)),
        (&["cluster", "nodes", "data", "store_version"], json!(true)),
        (&["provision", "node_group_id"], json!(null)),
        (&["provision", "count"], json!("1")),
        (&["provision", "count"], json!(-3)),
    ]
}

/// The objects of a provision body (a field added to any of them is read past).
const OBJECTS: &[&[&str]] = &[
    &[],
    &["cluster"],
    &["provision"],
    &["cluster", "nodes", "data"],
];

/// Values that are well-typed but invalid.
fn semantic() -> Vec<(&'static [&'static str], Value)> {
    vec![
        (&["provision", "node_group_id"], json!("arbiter")),
        (&["provision", "node_group_id"], json!("")),
        (&["provision", "count"], json!(0)),
        (&["cluster", "cluster_id"], json!("")),
        (&["cluster", "store"], json!("")),
        (&["cluster", "nodes", "data", "store_version"], json!("5.0")),
        (&["cluster", "nodes"], json!({})),
    ]
}

fn at<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Value {
    path.iter().fold(value, |v, key| &mut v[*key])
}

fn remove(value: &mut Value, path: &[&str]) {
    let (last, parent) = path.split_last().unwrap();
    at(value, parent).as_object_mut().unwrap().remove(*last);
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for path in ["/provision", "/deprovision"] {
            let (status, body) = send(Method::POST, path, bytes.clone());
            refused(status, &body)?;
        }
    }

    #[test]
    /// Unknown fields are read past (a newer Core may send them): a body with one gets exactly
    /// the answer it gets without it. The body names an undefined node group, so the answer is
    /// a refusal that allocates nothing, whichever it is.
    #[test]
    fn an_extra_field_changes_nothing(index in 0..OBJECTS.len(), name in "[a-z_]{1,12}", value in any::<i32>()) {
        let mut body = valid_provision();
        *at(&mut body, &["provision", "node_group_id"]) = json!("undefined-group");
        let (status, without) = send(Method::POST, "/provision", body.to_string().into_bytes());
        let object = at(&mut body, OBJECTS[index]).as_object_mut().unwrap();
        prop_assume!(!object.contains_key(&name));
        object.insert(name, json!(value));
        let (with_status, with) = send(Method::POST, "/provision", body.to_string().into_bytes());
        prop_assert_eq!(with_status, status);
        prop_assert_eq!(String::from_utf8_lossy(&with), String::from_utf8_lossy(&without));
        refused(with_status, &with)?;
    }

    #[test]
    fn huge_strings_and_maps_are_refused(size in MAX_BODY..4 * MAX_BODY, as_map in any::<bool>()) {
        let mut body = valid_provision();
        body["cluster"]["attributes"] = if as_map {
            Value::Object((0..size / 8).map(|i| (format!("k{i}"), json!(1))).collect())
        } else {
            json!({ "blob": "x".repeat(size) })
        };
        let (status, reply) = send(Method::POST, "/provision", body.to_string().into_bytes());
        refused_with(413, status, &reply).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn deep_nesting_is_refused(depth in 130..2000usize) {
        let text = valid_provision()
            .to_string()
            .replacen("{\"a\":1}", &format!("{{\"a\":{}}}", nested(depth)), 1);
        let (status, reply) = send(Method::POST, "/provision", text.into_bytes());
        refused(status, &reply)?;
    }

    #[test]
    fn invalid_utf8_is_refused(position in 0..60usize, byte in 0x80u8..=0xff) {
        let mut text = valid_provision().to_string().into_bytes();
        // Inside a string value: after the opening quote of the cluster ID.
        let start = text.windows(4).position(|w| w == b"\"c1\"").unwrap() + 1;
        text.insert(start + position % 2, byte);
        let (status, reply) = send(Method::POST, "/provision", text);
        refused(status, &reply)?;
    }

    #[test]
    fn bad_deprovision_bodies_are_refused(
        cluster in proptest::option::of(prop_oneof![Just(json!("")), Just(json!(1)), Just(json!(null)), "[a-z]{1,8}".prop_map(Value::from)]),
        node in proptest::option::of(prop_oneof![Just(json!("")), Just(json!([])), Just(json!({})), "[a-z0-9]{1,8}".prop_map(Value::from)]),
        extra in proptest::option::of("[a-z]{1,8}"),
    ) {
        let id = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        let well_formed = id(&cluster) && id(&node);
        let mut body = serde_json::Map::new();
        if let Some(c) = cluster { body.insert("cluster_id".into(), c); }
        if let Some(n) = node { body.insert("node_id".into(), n); }
        if let Some(e) = extra {
            prop_assume!(e != "node_id" && e != "cluster_id");
            body.insert(e, json!(1));
        }
        let (status, reply) = send(Method::POST, "/deprovision", Value::Object(body).to_string().into_bytes());
        if well_formed {
            // It names a node that does not exist: 404, an unknown field or not (read past).
            refused_with(404, status, &reply).map_err(TestCaseError::fail)?;
        } else {
            // A missing, empty or mistyped ID: 400, whatever else the body holds.
            refused(status, &reply)?;
        }
    }

    #[test]
    fn discover_takes_only_get(method in prop_oneof![Just(Method::POST), Just(Method::PUT), Just(Method::DELETE), Just(Method::PATCH)],
                               bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (status, reply) = send(method, "/discover", bytes);
        refused_with(405, status, &reply).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn nothing_is_allocated_or_discovered_after_refused_requests() {
    let mut body = valid_provision();
    body["provision"]["node_group_id"] = json!("nope");
    let (status, _) = send(Method::POST, "/provision", body.to_string().into_bytes());
    assert_eq!(status, 400);
    nothing_changed();
}

// The fixed lists are checked entry by entry, every one, rather than sampled: an entry added
// later is checked too.

#[test]
fn every_missing_required_field_is_refused() {
    for path in REQUIRED {
        let mut body = valid_provision();
        remove(&mut body, path);
        provision_refused(&format!("without {path:?}"), &body);
    }
}

#[test]
fn every_wrong_type_is_refused() {
    for (path, value) in wrong_types() {
        let mut body = valid_provision();
        *at(&mut body, path) = value.clone();
        provision_refused(&format!("{path:?} = {value}"), &body);
    }
}

#[test]
fn every_invalid_value_is_refused() {
    for (path, value) in semantic() {
        let mut body = valid_provision();
        *at(&mut body, path) = value.clone();
        provision_refused(&format!("{path:?} = {value}"), &body);
    }
}

#[test]
fn every_duplicate_key_is_refused() {
    let text = valid_provision().to_string();
    for (what, from, to) in [
        (
            "a second `provision`",
            "{\"cluster\":",
            "{\"provision\":{\"node_group_id\":\"data\"},\"cluster\":",
        ),
        (
            "a key twice in attributes",
            "{\"a\":1}",
            "{\"a\":1,\"a\":2}",
        ),
        (
            "a node group twice",
            "\"nodes\":{",
            "\"nodes\":{\"data\":{\"desired_count\":1,\"node_class\":\"x\"},",
        ),
        ("`count` twice", "\"count\":1", "\"count\":1,\"count\":5"),
    ] {
        assert!(text.contains(from), "{what}: {from} not in {text}");
        let (status, reply) = send(
            Method::POST,
            "/provision",
            text.replacen(from, to, 1).into_bytes(),
        );
        if let Err(e) = refused_with(400, status, &reply) {
            panic!("{what}: {e}");
        }
    }
}

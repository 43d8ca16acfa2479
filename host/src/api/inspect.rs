//! Inspecting routes: which backend a request would go to, and what decided it.
//!
//! The same explanation is given by `platform-gateway route` (from the config file and, when no
//! gateway holds it, the state store) and by the admin API's `POST /admin/route` (from the live
//! generation and ownership index), so an operator can predict and check where requests go.

use serde_json::Value;

use super::error::ApiError;
use super::{model, validate};
use crate::config::Config;
use crate::gateway::{Gateway, Generation};
use crate::routing::RouteKey;
pub use crate::routing::{Decision, Explanation};

/// Explain `body` (a provision or deprovision request) against `config`, refusing what the API
/// would refuse. `owner` looks a node up in the ownership index, which records state
/// namespaces; the explanation names the backend of `config` that uses the namespace (the
/// namespace itself when none does).
pub fn explain(
    config: &Config,
    body: Value,
    owner: impl FnOnce(&str, &str) -> Result<Option<String>, String>,
) -> Result<Explanation, ApiError> {
    let is_provision = body.get("provision").is_some() || body.get("cluster").is_some();
    if is_provision {
        let request: model::ProvisionRequest = super::strict::object(body).map_err(|e| {
            ApiError::bad_request("invalid provision request").with_cause(e.to_string())
        })?;
        let request = validate::provision_request(request, None)?;
        Ok(config.routes.explain(&RouteKey::of(&request)))
    } else {
        let request: model::DeprovisionRequest = super::strict::object(body).map_err(|e| {
            ApiError::bad_request("not a provision or deprovision request")
                .with_cause(e.to_string())
        })?;
        let request = validate::deprovision_request(request)?;
        let namespace = owner(&request.cluster_id, &request.node_id)
            .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e))?;
        let backend = namespace.map(|namespace| {
            config
                .backends
                .values()
                .find(|backend| backend.state_namespace == namespace)
                .map_or(namespace, |backend| backend.name.to_string())
        });
        Ok(Explanation::deprovision(
            &request.cluster_id,
            &request.node_id,
            backend,
        ))
    }
}

/// Where a request would go now, from `generation`'s routes and the live ownership index.
pub(super) async fn explain_live(
    gateway: &Gateway,
    generation: &Generation,
    body: Value,
) -> Result<Explanation, ApiError> {
    // The ownership lookup is async; resolve it first when the body is a deprovision request.
    let owner = match (body.get("cluster_id"), body.get("node_id")) {
        (Some(Value::String(c)), Some(Value::String(n))) => gateway.recorded_owner(c, n).await?,
        _ => None,
    };
    explain(&generation.config, body, |_, _| Ok(owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            Path::new("/g/gateway.toml"),
            r#"
[backends.a]
plugin = "a.wasm"
[backends.b]
plugin = "b.wasm"

[[routes]]
name = "kafka"
store = "kafka"
backend = "b"

[[routes]]
name = "default"
backend = "a"
"#,
        )
        .unwrap()
    }

    fn provision(store: &str) -> Value {
        json!({
            "cluster": { "cluster_id": "c", "store": store, "store_version": "1",
                         "nodes": { "g": { "desired_count": 1, "node_class": "x" } } },
            "provision": { "node_group_id": "g" }
        })
    }

    #[test]
    fn provision_lists_the_routes_tried_and_the_one_that_decided() {
        let e = explain(&config(), provision("mongodb"), |_, _| Ok(None)).unwrap();
        assert_eq!(e.tried.len(), 2);
        assert!(!e.tried[0].matched && e.tried[1].matched);
        assert_eq!(
            e.decision,
            Decision::Route {
                backend: "a".into(),
                route: "default".into(),
                index: 1
            }
        );
        let e = explain(&config(), provision("kafka"), |_, _| Ok(None)).unwrap();
        assert_eq!(e.tried.len(), 1);
        assert!(
            e.render()
                .contains("=> backend `b`, chosen by route `kafka`")
        );
    }

    #[test]
    fn deprovision_uses_the_ownership_index_then_discovery() {
        let body = json!({ "cluster_id": "c", "node_id": "n" });
        let e = explain(&config(), body.clone(), |c, n| {
            assert_eq!((c, n), ("c", "n"));
            Ok(Some("b".into()))
        })
        .unwrap();
        assert_eq!(
            e.decision,
            Decision::Owner {
                backend: "b".into()
            }
        );
        let e = explain(&config(), body, |_, _| Ok(None)).unwrap();
        assert_eq!(e.decision, Decision::Discovery);
    }

    #[test]
    fn the_owner_is_the_backend_that_uses_the_recorded_namespace_not_the_namespace() {
        let config = Config::parse(
            Path::new("/g/gateway.toml"),
            "[backends.machines]\nplugin = \"a.wasm\"\nstate_namespace = \"pool\"\n\
             [[routes]]\nbackend = \"machines\"\n",
        )
        .unwrap();
        let body = json!({ "cluster_id": "c", "node_id": "n" });
        let e = explain(&config, body.clone(), |_, _| Ok(Some("pool".into()))).unwrap();
        assert_eq!(
            e.decision,
            Decision::Owner {
                backend: "machines".into()
            }
        );
        assert!(
            e.render().contains("=> backend `machines`"),
            "{}",
            e.render()
        );
        // A namespace no backend uses any more is named as it is.
        let e = explain(&config, body, |_, _| Ok(Some("gone".into()))).unwrap();
        assert_eq!(
            e.decision,
            Decision::Owner {
                backend: "gone".into()
            }
        );
    }

    #[test]
    fn invalid_requests_are_refused_as_the_api_would() {
        let mut body = provision("kafka");
        body["provision"]["node_group_id"] = json!("nope");
        assert_eq!(
            explain(&config(), body, |_, _| Ok(None))
                .unwrap_err()
                .status,
            400
        );
        let e = explain(&config(), json!({ "hello": 1 }), |_, _| Ok(None)).unwrap_err();
        assert_eq!(e.message, "not a provision or deprovision request");
    }
}

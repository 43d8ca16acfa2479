//! Inspecting routes: which backend a request would go to, and what decided it.
//!
//! The same explanation is given by `platform-gateway route` (from the config file and, when no
//! gateway holds it, the state store) and by the admin API's `POST /admin/route` (from the live
//! generation and ownership index), so an operator can predict and check where requests go.

use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::{model, validate};
use crate::config::Config;
use crate::convert;

/// One route tried for a provision request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Tried {
    /// The route's name.
    pub route: String,
    /// Its conditions, in words.
    pub conditions: String,
    /// Its backend.
    pub backend: String,
    /// Whether it matched.
    pub matched: bool,
}

/// What decided the backend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Decision {
    /// A provision route matched.
    Route {
        /// The backend.
        backend: String,
        /// The route's name.
        route: String,
        /// Its position in the table (0-based).
        index: usize,
    },
    /// No route matched: the gateway answers 422.
    NoRoute,
    /// The ownership index names the node's owner.
    Owner {
        /// The backend.
        backend: String,
    },
    /// The node is not in the index: the gateway asks every backend and sends the request to
    /// the one that reports the node (404 if none does, 409 if several do).
    Discovery,
}

/// Where a request would go, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Explanation {
    /// `provision` or `deprovision`.
    pub operation: &'static str,
    /// The request, as routing sees it.
    pub request: String,
    /// For provision: the routes tried, in order, up to the first match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Tried>,
    /// The decision.
    pub decision: Decision,
}

/// Explain `body` (a provision or deprovision request) against `config`; `owner` looks a node
/// up in the ownership index.
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
        let key = convert::route_key(&request);
        // Decide through the same selection the gateway uses; list what was tried up to it.
        let selected = config.routes.select(&key);
        let tried_up_to = selected.map_or(config.routes.routes().len(), |(index, _)| index + 1);
        let tried = config.routes.routes()[..tried_up_to]
            .iter()
            .map(|route| Tried {
                route: route.name.clone(),
                conditions: route.matches.describe(),
                backend: route.backend.to_string(),
                matched: route.matches.matches(&key),
            })
            .collect();
        let decision = match selected {
            Some((index, route)) => Decision::Route {
                backend: route.backend.to_string(),
                route: route.name.clone(),
                index,
            },
            None => Decision::NoRoute,
        };
        Ok(Explanation {
            operation: "provision",
            request: key.to_string(),
            tried,
            decision,
        })
    } else {
        let request: model::DeprovisionRequest = super::strict::object(body).map_err(|e| {
            ApiError::bad_request("not a provision or deprovision request")
                .with_cause(e.to_string())
        })?;
        let request = validate::deprovision_request(request)?;
        let decision = match owner(&request.cluster_id, &request.node_id)
            .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e))?
        {
            Some(backend) => Decision::Owner { backend },
            None => Decision::Discovery,
        };
        Ok(Explanation {
            operation: "deprovision",
            request: format!(
                "node `{}` of cluster `{}`",
                request.node_id, request.cluster_id
            ),
            tried: Vec::new(),
            decision,
        })
    }
}

impl Explanation {
    /// The explanation for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("{} of {}\n", self.operation, self.request);
        for (i, tried) in self.tried.iter().enumerate() {
            out.push_str(&format!(
                "  route {i} `{}` ({}) -> {}: {}\n",
                tried.route,
                tried.conditions,
                tried.backend,
                if tried.matched { "matches" } else { "no match" }
            ));
        }
        out.push_str(&match &self.decision {
            Decision::Route {
                backend,
                route,
                index,
            } => format!("=> backend `{backend}`, chosen by route `{route}` (routes[{index}])\n"),
            Decision::NoRoute => "=> no route matches: the gateway answers 422\n".to_string(),
            Decision::Owner { backend } => format!(
                "=> backend `{backend}`, from the ownership index (the backend that created or \
                 reported the node; the route table is not consulted)\n"
            ),
            Decision::Discovery => "=> not in the ownership index: the gateway asks every backend \
                 and sends the request to the one that reports the node (404 if none does, 409 \
                 if several do)\n"
                .to_string(),
        });
        out
    }
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

//! Routing: which backend serves a request.
//!
//! Provision requests follow the operator's ordered route table (first match wins; a route
//! without conditions matches everything). Deprovision requests go to the backend that owns the
//! node, from the ownership index in [`crate::state`], never through the rules: a node lives where
//! it was created. Discovery asks every backend.
//!
//! The config's `[[routes]]` are checked here too (`parse_routes`), against the backends the
//! config defines.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config_file::{ConfigError, Source};
use crate::model::{BackendId, ProvisionRequest};

/// A `cluster_id` condition: an exact ID, or a glob (`*`, `?`, `[...]`).
#[derive(Debug, Clone)]
pub struct ClusterPattern {
    source: String,
    matcher: GlobMatcher,
}

impl ClusterPattern {
    /// Compile a pattern; a string without glob characters matches only itself.
    pub fn new(source: &str) -> Result<ClusterPattern, String> {
        let glob = Glob::new(source).map_err(|e| format!("invalid glob: {}", e.kind()))?;
        Ok(ClusterPattern {
            source: source.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether `cluster_id` matches.
    pub fn matches(&self, cluster_id: &str) -> bool {
        self.matcher.is_match(cluster_id)
    }

    /// The pattern as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no glob characters (it matches only itself).
    fn is_literal(&self) -> bool {
        !self.source.contains(['*', '?', '[', ']', '{', '}', '\\'])
    }

    /// Whether every cluster ID that `other` matches, this matches too. Conservative: `false`
    /// when that cannot be decided from the patterns alone.
    fn covers(&self, other: &ClusterPattern) -> bool {
        self.source == "*"
            || self.source == other.source
            || (other.is_literal() && self.matches(&other.source))
    }
}

/// The conditions of a route; every one that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// The cluster ID, exact or glob.
    pub cluster_id: Option<ClusterPattern>,
    /// The store, exactly.
    pub store: Option<String>,
    /// The effective store version of the group, exactly.
    pub store_version: Option<String>,
    /// The node group, exactly.
    pub node_group_id: Option<String>,
    /// The group's node class, exactly.
    pub node_class: Option<String>,
}

/// What a provision request looks like to the route table.
#[derive(Debug, Clone, Copy)]
pub struct RouteKey<'a> {
    /// The request's cluster ID.
    pub cluster_id: &'a str,
    /// The request's store.
    pub store: &'a str,
    /// The effective store version of the requested group.
    pub store_version: &'a str,
    /// The requested node group.
    pub node_group_id: &'a str,
    /// The requested group's node class.
    pub node_class: &'a str,
}

impl<'a> RouteKey<'a> {
    /// What the route table matches a resolved provision request on.
    pub fn of(request: &'a ProvisionRequest) -> RouteKey<'a> {
        RouteKey {
            cluster_id: &request.cluster_id,
            store: &request.store,
            store_version: &request.store_version,
            node_group_id: &request.node_group,
            node_class: &request.node_class,
        }
    }
}

impl std::fmt::Display for RouteKey<'_> {
    /// The request as routing sees it, for errors and explanations.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster `{}`, store `{}` {}, node group `{}`, node class `{}`",
            self.cluster_id, self.store, self.store_version, self.node_group_id, self.node_class
        )
    }
}

impl RouteMatch {
    /// Whether every condition holds for `key`.
    pub fn matches(&self, key: &RouteKey<'_>) -> bool {
        fn eq(condition: &Option<String>, value: &str) -> bool {
            condition.as_deref().is_none_or(|c| c == value)
        }
        self.cluster_id
            .as_ref()
            .is_none_or(|p| p.matches(key.cluster_id))
            && eq(&self.store, key.store)
            && eq(&self.store_version, key.store_version)
            && eq(&self.node_group_id, key.node_group_id)
            && eq(&self.node_class, key.node_class)
    }

    /// Whether every request that `other` matches, this matches too: then a route with `other`
    /// placed after a route with `self` can never be chosen.
    pub fn covers(&self, other: &RouteMatch) -> bool {
        fn exact(this: &Option<String>, other: &Option<String>) -> bool {
            match (this, other) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            }
        }
        let cluster = match (&self.cluster_id, &other.cluster_id) {
            (None, _) => true,
            (Some(a), Some(b)) => a.covers(b),
            (Some(a), None) => a.as_str() == "*",
        };
        cluster
            && exact(&self.store, &other.store)
            && exact(&self.store_version, &other.store_version)
            && exact(&self.node_group_id, &other.node_group_id)
            && exact(&self.node_class, &other.node_class)
    }

    /// The conditions in words, for errors and logs (`store = "mongodb", cluster_id = "prod-*"`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.cluster_id {
            parts.push(format!("cluster_id = {:?}", p.as_str()));
        }
        for (name, value) in [
            ("store", &self.store),
            ("store_version", &self.store_version),
            ("node_group_id", &self.node_group_id),
            ("node_class", &self.node_class),
        ] {
            if let Some(value) = value {
                parts.push(format!("{name} = {value:?}"));
            }
        }
        if parts.is_empty() {
            "default".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// One rule of the table.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name (`routes[N]` when the operator gave none).
    pub name: String,
    /// Where matching requests go.
    pub backend: BackendId,
    /// When the route applies.
    pub matches: RouteMatch,
}

/// The ordered provision routes.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// Why a route table was refused. Indexes are positions in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteTableError {
    /// Two routes have the same name.
    #[error("route name `{name}` is used by routes {first} and {second}")]
    DuplicateName {
        /// The name.
        name: String,
        /// The first route with it.
        first: usize,
        /// The second.
        second: usize,
    },
    /// A route can never match: an earlier one matches every request it would.
    #[error(
        "route `{later_name}` can never match: the earlier route `{earlier_name}` ({conditions}) \
         matches every request it would"
    )]
    Shadowed {
        /// The earlier, wider route.
        earlier: usize,
        /// Its name.
        earlier_name: String,
        /// Its conditions, in words.
        conditions: String,
        /// The unreachable route.
        later: usize,
        /// Its name.
        later_name: String,
    },
}

impl RouteTable {
    /// A table of `routes`, tried in order. Refuses duplicate names and routes that an earlier
    /// route shadows completely (so a default route must come last, and only once). The backends
    /// the routes name are checked by the caller.
    pub fn new(routes: Vec<Route>) -> Result<RouteTable, RouteTableError> {
        for (later, route) in routes.iter().enumerate() {
            for (earlier, before) in routes[..later].iter().enumerate() {
                if before.name == route.name {
                    return Err(RouteTableError::DuplicateName {
                        name: route.name.clone(),
                        first: earlier,
                        second: later,
                    });
                }
                if before.matches.covers(&route.matches) {
                    return Err(RouteTableError::Shadowed {
                        earlier,
                        earlier_name: before.name.clone(),
                        conditions: before.matches.describe(),
                        later,
                        later_name: route.name.clone(),
                    });
                }
            }
        }
        Ok(RouteTable { routes })
    }

    /// The first route that matches `key`, with its position in the table. The gateway and
    /// the `route` explanation both decide through this.
    pub fn select(&self, key: &RouteKey<'_>) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.matches.matches(key))
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Where a provision request with `key` would go, and the routes tried up to it: decided
    /// by [`RouteTable::select`], the gateway's own choice.
    pub fn explain(&self, key: &RouteKey<'_>) -> Explanation {
        let selected = self.select(key);
        let tried_up_to = selected.map_or(self.routes.len(), |(index, _)| index + 1);
        let tried = self.routes[..tried_up_to]
            .iter()
            .map(|route| Tried {
                route: route.name.clone(),
                conditions: route.matches.describe(),
                backend: route.backend.to_string(),
                matched: route.matches.matches(key),
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
        Explanation {
            operation: Operation::Provision,
            request: key.to_string(),
            tried,
            decision,
        }
    }
}

/// Which request an [`Explanation`] is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `POST /provision`.
    Provision,
    /// `POST /deprovision`.
    Deprovision,
}

/// One route tried for a provision request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
        /// The backend (the one that uses the state namespace the index records).
        backend: String,
    },
    /// The node is not in the index: the gateway asks every backend and sends the request to
    /// the one that reports the node (404 if none does, 409 if several do).
    Discovery,
}

/// Where a request would go, and why: what `platform-gateway route` prints and
/// `POST /admin/route` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Explanation {
    /// The request's operation.
    pub operation: Operation,
    /// The request, as routing sees it.
    pub request: String,
    /// For provision: the routes tried, in order, up to the first match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Tried>,
    /// The decision.
    pub decision: Decision,
}

impl Explanation {
    /// Where a deprovision of `node_id` in `cluster_id` would go: to `owner` (the backend the
    /// ownership index names) or, when the index names none, to the backend discovery finds.
    /// The route table is never consulted: a node lives where it was created.
    pub fn deprovision(cluster_id: &str, node_id: &str, owner: Option<String>) -> Explanation {
        Explanation {
            operation: Operation::Deprovision,
            request: format!("node `{node_id}` of cluster `{cluster_id}`"),
            tried: Vec::new(),
            decision: match owner {
                Some(backend) => Decision::Owner { backend },
                None => Decision::Discovery,
            },
        }
    }

    /// The explanation for a terminal.
    pub fn render(&self) -> String {
        let operation = match self.operation {
            Operation::Provision => "provision",
            Operation::Deprovision => "deprovision",
        };
        let mut out = format!("{operation} of {}\n", self.request);
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

/// One `[[routes]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    name: Option<String>,
    backend: Spanned<String>,
    cluster_id: Option<Spanned<String>>,
    store: Option<String>,
    store_version: Option<String>,
    node_group_id: Option<String>,
    node_class: Option<String>,
}

/// Check the `[[routes]]` against the `defined` backends and build the table; a route that
/// names an unknown backend or can never match is an error naming its line.
pub(crate) fn parse_routes(
    raw: Vec<Spanned<RawRoute>>,
    defined: &[BackendId],
    source: &Source,
) -> Result<RouteTable, ConfigError> {
    let mut routes = Vec::new();
    let mut route_lines = Vec::new();
    for (index, raw_route) in raw.into_iter().enumerate() {
        route_lines.push(source.line(raw_route.span()));
        let raw_route = raw_route.into_inner();
        let key = format!("routes[{index}]");
        let backend_span = raw_route.backend.span();
        let backend_name = raw_route.backend.into_inner();
        let backend = defined
            .iter()
            .find(|id| id.as_str() == backend_name)
            .cloned()
            .ok_or_else(|| {
                let defined: Vec<&str> = defined.iter().map(BackendId::as_str).collect();
                source.invalid(
                    backend_span,
                    format!("{key}.backend"),
                    format!(
                        "unknown backend `{backend_name}` (defined: {})",
                        if defined.is_empty() {
                            "none".to_string()
                        } else {
                            defined.join(", ")
                        }
                    ),
                )
            })?;
        let cluster_id = match raw_route.cluster_id {
            None => None,
            Some(pattern) => Some(
                ClusterPattern::new(pattern.get_ref())
                    .map_err(|e| source.invalid(pattern.span(), format!("{key}.cluster_id"), e))?,
            ),
        };
        routes.push(Route {
            name: raw_route.name.unwrap_or_else(|| key.clone()),
            backend,
            matches: RouteMatch {
                cluster_id,
                store: raw_route.store,
                store_version: raw_route.store_version,
                node_group_id: raw_route.node_group_id,
                node_class: raw_route.node_class,
            },
        });
    }
    RouteTable::new(routes).map_err(|e| {
        let (later, message) = match &e {
            RouteTableError::DuplicateName { first, second, .. } => {
                (*second, format!("{e} (line {})", route_lines[*first]))
            }
            RouteTableError::Shadowed { earlier, later, .. } => (
                *later,
                format!(
                    "{e} (the earlier route is at line {})",
                    route_lines[*earlier]
                ),
            ),
        };
        ConfigError::Invalid {
            path: source.file().to_path_buf(),
            line: route_lines[later],
            key: format!("routes[{later}]"),
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, backend: &str, matches: RouteMatch) -> Route {
        Route {
            name: name.to_string(),
            backend: BackendId::new(backend).unwrap(),
            matches,
        }
    }

    fn key<'a>(cluster_id: &'a str, store: &'a str) -> RouteKey<'a> {
        RouteKey {
            cluster_id,
            store,
            store_version: "4.0",
            node_group_id: "data",
            node_class: "small",
        }
    }

    fn table() -> RouteTable {
        table_of(vec![
            route(
                "prod-mongo",
                "cloud",
                RouteMatch {
                    cluster_id: Some(ClusterPattern::new("prod-*").unwrap()),
                    store: Some("mongodb".into()),
                    ..RouteMatch::default()
                },
            ),
            route(
                "kafka",
                "pool",
                RouteMatch {
                    store: Some("kafka".into()),
                    ..RouteMatch::default()
                },
            ),
            route(
                "exact",
                "pool",
                RouteMatch {
                    cluster_id: Some(ClusterPattern::new("staging").unwrap()),
                    ..RouteMatch::default()
                },
            ),
            route("default", "pool", RouteMatch::default()),
        ])
        .unwrap()
    }

    fn table_of(routes: Vec<Route>) -> Result<RouteTable, RouteTableError> {
        RouteTable::new(routes)
    }

    fn glob(p: &str) -> Option<ClusterPattern> {
        Some(ClusterPattern::new(p).unwrap())
    }

    fn shadowed(earlier: RouteMatch, later: RouteMatch) -> bool {
        matches!(
            table_of(vec![route("a", "x", earlier), route("b", "x", later)]),
            Err(RouteTableError::Shadowed {
                earlier: 0,
                later: 1,
                ..
            })
        )
    }

    #[test]
    fn a_route_after_a_wider_one_is_refused_naming_both() {
        let store = |s: &str| RouteMatch {
            store: Some(s.into()),
            ..RouteMatch::default()
        };
        // A default route before anything shadows it; so does a second default.
        assert!(shadowed(RouteMatch::default(), store("kafka")));
        assert!(shadowed(RouteMatch::default(), RouteMatch::default()));
        // The same condition twice.
        assert!(shadowed(store("kafka"), store("kafka")));
        // Fewer conditions cover more.
        assert!(shadowed(
            store("kafka"),
            RouteMatch {
                node_class: Some("large".into()),
                ..store("kafka")
            }
        ));
        // A glob covers the exact IDs it matches, and `*` covers everything.
        assert!(shadowed(
            RouteMatch {
                cluster_id: glob("prod-*"),
                ..RouteMatch::default()
            },
            RouteMatch {
                cluster_id: glob("prod-eu"),
                ..store("kafka")
            }
        ));
        assert!(shadowed(
            RouteMatch {
                cluster_id: glob("*"),
                ..RouteMatch::default()
            },
            store("kafka")
        ));
        let err = table_of(vec![
            route("wide", "x", store("kafka")),
            route("narrow", "x", store("kafka")),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`narrow`") && err.contains("`wide`"), "{err}");
    }

    #[test]
    fn narrower_or_disjoint_earlier_routes_do_not_shadow() {
        let store = |s: &str| RouteMatch {
            store: Some(s.into()),
            ..RouteMatch::default()
        };
        assert!(!shadowed(store("kafka"), RouteMatch::default()));
        assert!(!shadowed(store("kafka"), store("mongodb")));
        assert!(!shadowed(
            RouteMatch {
                cluster_id: glob("prod-*"),
                ..RouteMatch::default()
            },
            RouteMatch {
                cluster_id: glob("dev-1"),
                ..RouteMatch::default()
            }
        ));
        // Overlapping globs where the later one matches IDs the earlier does not.
        assert!(!shadowed(
            RouteMatch {
                cluster_id: glob("prod-*"),
                ..RouteMatch::default()
            },
            RouteMatch {
                cluster_id: glob("*-eu"),
                ..RouteMatch::default()
            }
        ));
    }

    #[test]
    fn duplicate_route_names_are_refused() {
        let err = table_of(vec![
            route(
                "a",
                "x",
                RouteMatch {
                    store: Some("s".into()),
                    ..RouteMatch::default()
                },
            ),
            route("a", "x", RouteMatch::default()),
        ])
        .unwrap_err();
        assert!(matches!(
            err,
            RouteTableError::DuplicateName {
                first: 0,
                second: 1,
                ..
            }
        ));
    }

    #[test]
    fn first_matching_route_wins() {
        let table = table();
        assert_eq!(
            table.select(&key("prod-1", "mongodb")).unwrap().1.name,
            "prod-mongo"
        );
        assert_eq!(
            table.select(&key("prod-1", "kafka")).unwrap().1.name,
            "kafka"
        );
        assert_eq!(
            table.select(&key("dev-1", "mongodb")).unwrap().1.name,
            "default"
        );
    }

    #[test]
    fn every_condition_of_a_route_must_hold() {
        let table = table();
        // cluster matches the glob but the store does not: falls through to the default.
        assert_eq!(
            table.select(&key("prod-1", "zookeeper")).unwrap().1.name,
            "default"
        );
    }

    #[test]
    fn pattern_without_glob_characters_matches_exactly() {
        let table = table();
        assert_eq!(
            table.select(&key("staging", "zookeeper")).unwrap().1.name,
            "exact"
        );
        assert_eq!(
            table.select(&key("staging-2", "zookeeper")).unwrap().1.name,
            "default"
        );
    }

    #[test]
    fn version_group_and_class_conditions_match_exactly() {
        let matches = RouteMatch {
            store_version: Some("4.0".into()),
            node_group_id: Some("data".into()),
            node_class: Some("small".into()),
            ..RouteMatch::default()
        };
        assert!(matches.matches(&key("c", "s")));
        let other_class = RouteKey {
            node_class: "large",
            ..key("c", "s")
        };
        assert!(!matches.matches(&other_class));
        let other_group = RouteKey {
            node_group_id: "arbiter",
            ..key("c", "s")
        };
        assert!(!matches.matches(&other_group));
    }

    #[test]
    fn no_route_matches_without_a_default() {
        let table = table_of(table().routes()[..3].to_vec()).unwrap();
        assert!(table.select(&key("dev-1", "mongodb")).is_none());
    }

    #[test]
    fn backend_names_are_checked() {
        assert!(BackendId::new("pool-1_a").is_ok());
        assert!(BackendId::new("").is_err());
        assert!(BackendId::new("a b").is_err());
        assert!(BackendId::new("a/b").is_err());
    }

    #[test]
    fn describe_lists_conditions() {
        let table = table();
        let r = &table.routes()[0];
        assert_eq!(
            r.matches.describe(),
            r#"cluster_id = "prod-*", store = "mongodb""#
        );
        assert_eq!(RouteMatch::default().describe(), "default");
    }
}

//! `podman`: a Replicante platform on podman, one container per node, over podman's REST API
//! (the libpod endpoints of `podman system service tcp:HOST:PORT`).
//!
//! - Provision: picks a node template by store and store version, then creates and starts one
//!   container per node, labelled with the gateway, cluster ID, node ID, node group and class,
//!   and named after the request's ID, so that a retried provision gets its first attempt's
//!   containers instead of more.
//! - Discover: lists the containers with this gateway's label, running or not (the specification
//!   wants every node whatever its health), and derives each agent address from a template.
//! - Deprovision: stops and removes the container; it leaves discovery and is not replaced.
//!
//! The backend needs `grants.http` for the API address. Settings:
//!
//! ```toml
//! [backends.containers.settings]
//! endpoint = "http://127.0.0.1:8888"
//! gateway_id = "gw-1"          # label value that marks this gateway's containers
//! # Placeholders: {container_ip}, {published_port}, {agent_port}, {name}
//! agent_address = "http://127.0.0.1:{published_port}"
//! templates = [
//!   { store = "zookeeper", image = "docker.io/library/zookeeper:3.9", agent_port = 37000,
//!     command = ["/start.sh"], env = { ZOO_MY_ID = "1" }, publish = true, memory_bytes = 536870912 },
//! ]
//! ```

use std::collections::BTreeMap;

use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, http, log, select_by_store, settings,
};
use serde::Deserialize;
use serde_json::{Value, json};

const GATEWAY_LABEL: &str = "replicante.gateway";
const CLUSTER_LABEL: &str = "replicante.cluster-id";
const GROUP_LABEL: &str = "replicante.node-group";
const CLASS_LABEL: &str = "replicante.node-class";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    store: String,
    #[serde(default)]
    store_version: Option<String>,
    image: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "default_agent_port")]
    agent_port: u16,
    /// Publish the agent port on the podman host's loopback (a random host port).
    #[serde(default)]
    publish: bool,
    /// Memory limit in bytes.
    #[serde(default)]
    memory_bytes: Option<u64>,
}

fn default_agent_port() -> u16 {
    37000
}

struct Podman {
    base: String,
    gateway_id: String,
}

impl Podman {
    fn from_settings() -> Result<Podman, Error> {
        let endpoint = settings::text("endpoint")?
            .ok_or_else(|| Error::Internal("setting `endpoint` is missing".to_string()))?;
        let version = settings::text("api_version")?.unwrap_or_else(|| "v4.0.0".to_string());
        Ok(Podman {
            base: format!("{}/{version}/libpod", endpoint.trim_end_matches('/')),
            gateway_id: settings::text("gateway_id")?
                .unwrap_or_else(|| "platform-gateway".to_string()),
        })
    }

    /// Call the API; the answer's status and JSON body (`null` when empty).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), Error> {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        let response = http::send(
            method,
            &format!("{}{path}", self.base),
            headers,
            payload.as_bytes(),
        )?;
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&response.body).into_owned())
            })
        };
        Ok((response.status, value))
    }

    /// Like `call`, but a status outside 2xx is an error naming what failed.
    fn expect(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let (status, value) = self.call(method, path, body)?;
        if (200..300).contains(&status) || status == 304 {
            return Ok(value);
        }
        let message = value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let text = format!("podman {what} failed ({status}): {message}");
        Err(match status {
            404 => Error::NotFound(text),
            409 => Error::Conflict(text),
            400 => Error::InvalidRequest(text),
            _ => Error::unavailable(text),
        })
    }
}

/// A container name from the request: podman accepts `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. The request's
/// ID is in it, the same on every retry of the request, so a retried provision finds the
/// containers its first attempt made (podman refuses a second container of one name) instead of
/// making more.
fn container_name(request: &ProvisionRequest, index: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "rg-{}-{}-{}-{index}",
        clean(&request.cluster_id),
        clean(&request.node_group),
        clean(&request.request_id)
    )
}

fn template_for(request: &ProvisionRequest) -> Result<Template, Error> {
    let templates: Vec<Template> = settings::require("templates")?;
    select_by_store(request, templates, |t| {
        (&t.store, t.store_version.as_deref())
    })
    .ok_or_else(|| {
        Error::InvalidRequest(format!(
            "no node template for store `{}` version `{}`",
            request.store, request.store_version
        ))
    })
}

/// What `POST /containers/create` gets for the container `name` of `request`.
fn container_spec(
    gateway_id: &str,
    request: &ProvisionRequest,
    template: &Template,
    name: &str,
) -> Value {
    let mut spec = json!({
        "name": name,
        "image": template.image,
        "env": template.env,
        "labels": {
            GATEWAY_LABEL: gateway_id,
            CLUSTER_LABEL: request.cluster_id,
            GROUP_LABEL: request.node_group,
            CLASS_LABEL: request.node_class,
            "replicante.agent-port": template.agent_port.to_string(),
        },
    });
    // Test fixture only, never shipped: a deliberate behaviour change for the replay tests.
    #[cfg(feature = "planted")]
    {
        spec["labels"]["replicante.planted"] = json!("1");
    }
    if !template.command.is_empty() {
        spec["command"] = json!(template.command);
    }
    if template.publish {
        spec["portmappings"] = json!([{
            "container_port": template.agent_port,
            "host_port": 0,
            "host_ip": "127.0.0.1",
        }]);
    }
    if let Some(bytes) = template.memory_bytes {
        spec["resource_limits"] = json!({ "memory": { "limit": bytes } });
    }
    spec
}

fn label_filter(podman: &Podman) -> String {
    // filters={"label":["replicante.gateway=<id>"]}, percent-encoded.
    let filter = json!({ "label": [format!("{GATEWAY_LABEL}={}", podman.gateway_id)] });
    http::percent_encode(&filter.to_string())
}

struct Containers;

impl Provider for Containers {
    fn discover() -> Result<Vec<Cluster>, Error> {
        let podman = Podman::from_settings()?;
        let address_template = settings::text("agent_address")?
            .unwrap_or_else(|| "http://{container_ip}:{agent_port}".to_string());
        let list = podman.expect(
            "listing containers",
            "GET",
            &format!(
                "/containers/json?all=true&filters={}",
                label_filter(&podman)
            ),
            None,
        )?;
        let mut clusters: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        for container in list.as_array().into_iter().flatten() {
            let labels = &container["Labels"];
            let Some(cluster) = labels[CLUSTER_LABEL].as_str() else {
                continue;
            };
            let name = container["Names"][0]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let agent_port: u16 = labels["replicante.agent-port"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_agent_port());
            let published = container["Ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["container_port"].as_u64() == Some(u64::from(agent_port)))
                .and_then(|p| p["host_port"].as_u64())
                .map(|p| p.to_string())
                .unwrap_or_default();
            let container_ip = if address_template.contains("{container_ip}") {
                let inspect = podman.expect(
                    "inspecting a container",
                    "GET",
                    &format!("/containers/{name}/json"),
                    None,
                )?;
                inspect["NetworkSettings"]["IPAddress"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            } else {
                String::new()
            };
            let address = address_template
                .replace("{container_ip}", &container_ip)
                .replace("{published_port}", &published)
                .replace("{agent_port}", &agent_port.to_string())
                .replace("{name}", &name);
            clusters.entry(cluster.to_string()).or_default().push(Node {
                node_id: name,
                agent_address: address,
                node_class: labels[CLASS_LABEL]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .map(String::from),
                node_group: labels[GROUP_LABEL].as_str().map(str::to_string),
            });
        }
        Ok(clusters
            .into_iter()
            .map(|(cluster_id, nodes)| Cluster { cluster_id, nodes })
            .collect())
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        let podman = Podman::from_settings()?;
        let template = template_for(&request)?;
        let mut created = Vec::new();
        for index in 0..request.count {
            let name = container_name(&request, index);
            let spec = container_spec(&podman.gateway_id, &request, &template, &name);
            let outcome = match podman.expect(
                "creating a container",
                "POST",
                "/containers/create",
                Some(&spec),
            ) {
                // The name is taken (podman says 409 or 500, by version): when by this request's
                // container, this is a retry whose first attempt made it.
                Err(error) => match podman.call("GET", &format!("/containers/{name}/json"), None) {
                    Ok((200, found))
                        if found["Config"]["Labels"][CLUSTER_LABEL].as_str()
                            == Some(request.cluster_id.as_str()) =>
                    {
                        log::info(&format!(
                            "container `{name}` exists already: request `{}` is a retry",
                            request.request_id
                        ));
                        Ok(Value::Null)
                    }
                    _ => Err(error),
                },
                created => created,
            }
            .and_then(|_| {
                podman.expect(
                    "starting a container",
                    "POST",
                    &format!("/containers/{name}/start"),
                    None,
                )
            });
            if let Err(error) = outcome {
                // Leave nothing half-made behind: a created but unstarted container would be
                // discovered as a node nobody asked for.
                let _ = podman.call("DELETE", &format!("/containers/{name}?force=true"), None);
                if created.is_empty() {
                    return Err(error);
                }
                log::warn(&format!(
                    "started {} of {} containers: {error:?}",
                    created.len(),
                    request.count
                ));
                break;
            }
            created.push(name);
        }
        Ok(ProvisionResponse {
            count: created.len() as u32,
            node_ids: Some(created),
        })
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        let podman = Podman::from_settings()?;
        let not_found = || {
            Error::NotFound(format!(
                "container `{}` is not a node of cluster `{}`",
                request.node_id, request.cluster_id
            ))
        };
        let name = &request.node_id;
        let (status, inspect) = podman.call("GET", &format!("/containers/{name}/json"), None)?;
        if status == 404 {
            return Err(not_found());
        }
        let labels = &inspect["Config"]["Labels"];
        if labels[CLUSTER_LABEL].as_str() != Some(request.cluster_id.as_str())
            || labels[GATEWAY_LABEL].as_str() != Some(podman.gateway_id.as_str())
        {
            return Err(not_found());
        }
        podman.expect(
            "stopping a container",
            "POST",
            &format!("/containers/{name}/stop?timeout=5"),
            None,
        )?;
        podman.expect(
            "removing a container",
            "DELETE",
            &format!("/containers/{name}?force=true"),
            None,
        )?;
        Ok(())
    }
}

export_provider!(Containers);

/// The provider's logic that needs no podman, run natively
/// (`cargo test --target x86_64-unknown-linux-gnu -p podman` in `plugins/`).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// What the `planted` build changes (it adds a label).
    #[test]
    #[cfg_attr(feature = "planted", should_panic(expected = "exactly these labels"))]
    fn a_container_is_created_with_exactly_the_gateway_cluster_group_class_and_port_labels() {
        let request = ProvisionRequest {
            request_id: "r1".into(),
            cluster_id: "zk".into(),
            store: "zookeeper".into(),
            store_version: "3.9".into(),
            node_group: "ensemble".into(),
            node_class: "small".into(),
            desired_count: 1,
            count: 1,
            attributes: "{}".into(),
        };
        let template: Template = serde_json::from_value(json!({
            "store": "zookeeper", "image": "docker.io/library/zookeeper:3.9", "agent_port": 2181,
        }))
        .unwrap();
        let spec = container_spec("gw-1", &request, &template, "rg-zk-ensemble-r1-0");
        assert_eq!(spec["name"], "rg-zk-ensemble-r1-0");
        assert_eq!(
            spec["labels"],
            json!({
                "replicante.gateway": "gw-1",
                "replicante.cluster-id": "zk",
                "replicante.node-group": "ensemble",
                "replicante.node-class": "small",
                "replicante.agent-port": "2181",
            }),
            "exactly these labels"
        );
    }
}

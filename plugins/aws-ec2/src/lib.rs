//! `aws-ec2`: a Replicante platform on AWS EC2, over the EC2 Query API (form-encoded POSTs,
//! `Version=2016-11-15`, signed with Signature Version 4).
//!
//! - Provision: picks a launch template by store and store version from the settings (a template
//!   with the request's version, else one without a version) and calls RunInstances for exactly
//!   `count` instances (EC2 starts all or none), tagged with the cluster ID, node group and node
//!   class. The group's `node_class`, when set, is the instance type. The request's ID is the
//!   call's `ClientToken`, so a retried provision gets the instances of its first attempt back
//!   instead of launching more (EC2 keeps a token's answer; the same token with other
//!   parameters is refused as `IdempotentParameterMismatch`).
//! - Discover: DescribeInstances filtered on the cluster tag, following `nextToken`; every
//!   instance that is not terminated is reported (stopped ones too: the specification wants every
//!   node whatever its health). The agent address is `scheme://private-ip:port`.
//! - Deprovision: TerminateInstances, after checking the instance belongs to the cluster.
//!
//! The backend needs `grants.http` for its endpoint. Settings:
//!
//! ```toml
//! [backends.cloud.settings]
//! region = "eu-west-1"
//! endpoint = "https://ec2.eu-west-1.amazonaws.com"      # default: from the region
//! access_key_id = { from_env = "AWS_ACCESS_KEY_ID" }
//! secret_access_key = { from_env = "AWS_SECRET_ACCESS_KEY" }
//! agent = { scheme = "http", port = 37000 }
//! templates = [
//!   { store = "mongodb", store_version = "6.0", image_id = "ami-0abc", instance_type = "m5.large",
//!     subnet_id = "subnet-1", security_group_ids = ["sg-1"], user_data = "#!/bin/sh\n..." },
//! ]
//! ```

mod sigv4;

use std::collections::BTreeMap;

use base64::Engine;
use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, http, select_by_store, settings,
};
use serde::Deserialize;

const CLUSTER_TAG: &str = "replicante:cluster-id";
const GROUP_TAG: &str = "replicante:node-group";
const CLASS_TAG: &str = "replicante:node-class";
const LIVE_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    store: String,
    #[serde(default)]
    store_version: Option<String>,
    image_id: String,
    instance_type: String,
    #[serde(default)]
    subnet_id: Option<String>,
    #[serde(default)]
    security_group_ids: Vec<String>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    user_data: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Agent {
    #[serde(default = "default_scheme")]
    scheme: String,
    #[serde(default = "default_port")]
    port: u16,
}

fn default_scheme() -> String {
    "http".to_string()
}

fn default_port() -> u16 {
    37000
}

/// The EC2 client of one call.
struct Ec2 {
    endpoint: String,
    host: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

fn required(key: &str) -> Result<String, Error> {
    settings::text(key)?.ok_or_else(|| Error::Internal(format!("setting `{key}` is missing")))
}

impl Ec2 {
    fn from_settings() -> Result<Ec2, Error> {
        let region = required("region")?;
        let endpoint = settings::text("endpoint")?
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
            .ok_or_else(|| {
                Error::Internal(format!("setting `endpoint` is not a URL: {endpoint}"))
            })?;
        Ok(Ec2 {
            endpoint,
            host,
            region,
            access_key_id: required("access_key_id")?,
            secret_access_key: required("secret_access_key")?,
            session_token: settings::text("session_token")?,
        })
    }

    /// Call `action` with `params`; the parsed XML answer, or the EC2 error as a contract error.
    fn call(&self, action: &str, params: &[(String, String)]) -> Result<String, Error> {
        let mut body = format!("Action={action}&Version=2016-11-15");
        for (key, value) in params {
            body.push('&');
            body.push_str(&http::percent_encode(key));
            body.push('=');
            body.push_str(&http::percent_encode(value));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let credentials = sigv4::Credentials {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: self.session_token.as_deref(),
        };
        let headers = sigv4::sign(
            &credentials,
            &self.region,
            "ec2",
            &self.host,
            &body,
            &sigv4::amz_date(now),
        );
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = http::send(
            "POST",
            &format!("{}/", self.endpoint),
            &headers,
            body.as_bytes(),
        )?;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        if (200..300).contains(&response.status) {
            return Ok(text);
        }
        Err(ec2_error(action, response.status, &text))
    }
}

/// An EC2 error answer as a contract error: credentials and permissions are the operator's to
/// fix (internal), throttling and capacity pass (unavailable), bad parameters are the request's.
fn ec2_error(action: &str, status: u16, text: &str) -> Error {
    let (code, message) = roxmltree::Document::parse(text)
        .ok()
        .and_then(|doc| {
            let error = doc.descendants().find(|n| n.has_tag_name("Error"))?;
            let child = |name: &str| {
                error
                    .children()
                    .find(|c| c.has_tag_name(name))
                    .and_then(|c| c.text())
                    .unwrap_or_default()
                    .to_string()
            };
            Some((child("Code"), child("Message")))
        })
        .unwrap_or_else(|| (format!("HTTP {status}"), text.chars().take(200).collect()));
    let what = format!("EC2 {action} failed: {code}: {message}");
    match code.as_str() {
        "AuthFailure"
        | "SignatureDoesNotMatch"
        | "InvalidClientTokenId"
        | "UnauthorizedOperation"
        | "InvalidAccessKeyId"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => {
            Error::Internal(format!("{what} (check the backend's AWS credentials)"))
        }
        "RequestLimitExceeded"
        | "InsufficientInstanceCapacity"
        | "Unavailable"
        | "ServiceUnavailable"
        | "InternalError" => Error::unavailable(what),
        _ if status >= 500 => Error::unavailable(what),
        c if c.starts_with("InvalidInstanceID") => Error::NotFound(what),
        _ => Error::InvalidRequest(what),
    }
}

/// One instance, as DescribeInstances reports it.
struct Instance {
    id: String,
    state: String,
    private_ip: Option<String>,
    tags: BTreeMap<String, String>,
}

fn parse_instances(text: &str) -> Result<(Vec<Instance>, Option<String>), Error> {
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| Error::Internal(format!("EC2 answered with invalid XML: {e}")))?;
    let text_of = |node: roxmltree::Node<'_, '_>, name: &str| {
        node.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .map(str::to_string)
    };
    let mut instances = Vec::new();
    for set in doc.descendants().filter(|n| n.has_tag_name("instancesSet")) {
        for item in set.children().filter(|n| n.has_tag_name("item")) {
            let state = item
                .children()
                .find(|c| c.has_tag_name("instanceState"))
                .and_then(|s| text_of(s, "name"))
                .unwrap_or_default();
            let mut tags = BTreeMap::new();
            if let Some(tag_set) = item.children().find(|c| c.has_tag_name("tagSet")) {
                for tag in tag_set.children().filter(|n| n.has_tag_name("item")) {
                    if let (Some(k), Some(v)) = (text_of(tag, "key"), text_of(tag, "value")) {
                        tags.insert(k, v);
                    }
                }
            }
            instances.push(Instance {
                id: text_of(item, "instanceId").unwrap_or_default(),
                state,
                private_ip: text_of(item, "privateIpAddress"),
                tags,
            });
        }
    }
    let next = doc
        .root_element()
        .children()
        .find(|c| c.has_tag_name("nextToken"))
        .and_then(|c| c.text())
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok((instances, next))
}

fn agent() -> Result<Agent, Error> {
    Ok(settings::value("agent")?.unwrap_or(Agent {
        scheme: default_scheme(),
        port: default_port(),
    }))
}

fn template_for(request: &ProvisionRequest) -> Result<Template, Error> {
    let templates: Vec<Template> = settings::require("templates")?;
    select_by_store(request, templates, |t| {
        (&t.store, t.store_version.as_deref())
    })
    .ok_or_else(|| {
        Error::InvalidRequest(format!(
            "no launch template for store `{}` version `{}`",
            request.store, request.store_version
        ))
    })
}

/// The parameters of the RunInstances call of `request`, from its launch template.
fn run_instances_params(request: &ProvisionRequest, template: &Template) -> Vec<(String, String)> {
    let instance_type = if request.node_class.is_empty() {
        template.instance_type.clone()
    } else {
        request.node_class.clone()
    };
    let mut params = vec![
        ("ImageId".to_string(), template.image_id.clone()),
        ("InstanceType".to_string(), instance_type.clone()),
        // All or nothing: EC2 starts exactly `count` instances, or none (and says why).
        ("MinCount".to_string(), request.count.to_string()),
        ("MaxCount".to_string(), request.count.to_string()),
        // Idempotency: a retry of this request (same ID) gets the instances the first attempt
        // launched instead of launching more. The ID is at most 64 characters of
        // `[A-Za-z0-9-]`, which is what EC2 accepts as a token.
        ("ClientToken".to_string(), request.request_id.clone()),
        (
            "TagSpecification.1.ResourceType".to_string(),
            "instance".to_string(),
        ),
    ];
    // Test fixture only, never shipped: a deliberate behaviour change for the replay tests.
    #[cfg(feature = "planted")]
    {
        params[1].1 = "t3.nano".to_string(); // InstanceType
    }
    for (i, (key, value)) in [
        (CLUSTER_TAG, request.cluster_id.as_str()),
        (GROUP_TAG, request.node_group.as_str()),
        (CLASS_TAG, instance_type.as_str()),
    ]
    .iter()
    .enumerate()
    {
        params.push((
            format!("TagSpecification.1.Tag.{}.Key", i + 1),
            key.to_string(),
        ));
        params.push((
            format!("TagSpecification.1.Tag.{}.Value", i + 1),
            value.to_string(),
        ));
    }
    if let Some(subnet) = &template.subnet_id {
        params.push(("SubnetId".to_string(), subnet.clone()));
    }
    for (i, group) in template.security_group_ids.iter().enumerate() {
        params.push((format!("SecurityGroupId.{}", i + 1), group.clone()));
    }
    if let Some(key) = &template.key_name {
        params.push(("KeyName".to_string(), key.clone()));
    }
    if let Some(data) = &template.user_data {
        params.push((
            "UserData".to_string(),
            base64::engine::general_purpose::STANDARD.encode(data),
        ));
    }
    params
}

struct Aws;

impl Provider for Aws {
    fn discover() -> Result<Vec<Cluster>, Error> {
        let ec2 = Ec2::from_settings()?;
        let agent = agent()?;
        let mut clusters: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = vec![
                ("Filter.1.Name".to_string(), "tag-key".to_string()),
                ("Filter.1.Value.1".to_string(), CLUSTER_TAG.to_string()),
                (
                    "Filter.2.Name".to_string(),
                    "instance-state-name".to_string(),
                ),
                ("MaxResults".to_string(), "100".to_string()),
            ];
            for (i, state) in LIVE_STATES.iter().enumerate() {
                params.push((format!("Filter.2.Value.{}", i + 1), state.to_string()));
            }
            if let Some(token) = &token {
                params.push(("NextToken".to_string(), token.clone()));
            }
            let (instances, next) = parse_instances(&ec2.call("DescribeInstances", &params)?)?;
            for instance in instances {
                if instance.state == "terminated" {
                    continue;
                }
                let Some(cluster) = instance.tags.get(CLUSTER_TAG) else {
                    continue;
                };
                let host = instance
                    .private_ip
                    .clone()
                    .unwrap_or_else(|| instance.id.clone());
                clusters.entry(cluster.clone()).or_default().push(Node {
                    agent_address: format!("{}://{host}:{}", agent.scheme, agent.port),
                    node_class: instance.tags.get(CLASS_TAG).cloned(),
                    node_group: instance.tags.get(GROUP_TAG).cloned(),
                    node_id: instance.id,
                });
            }
            match next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(clusters
            .into_iter()
            .map(|(cluster_id, nodes)| Cluster { cluster_id, nodes })
            .collect())
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        let ec2 = Ec2::from_settings()?;
        let template = template_for(&request)?;
        let params = run_instances_params(&request, &template);
        let (instances, _) = parse_instances(&ec2.call("RunInstances", &params)?)?;
        let ids: Vec<String> = instances.into_iter().map(|i| i.id).collect();
        if ids.is_empty() {
            return Err(Error::Internal(
                "RunInstances started no instance".to_string(),
            ));
        }
        Ok(ProvisionResponse {
            count: ids.len() as u32,
            node_ids: Some(ids),
        })
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        let ec2 = Ec2::from_settings()?;
        let not_found = || {
            Error::NotFound(format!(
                "instance `{}` is not a node of cluster `{}`",
                request.node_id, request.cluster_id
            ))
        };
        let (instances, _) = parse_instances(&ec2.call(
            "DescribeInstances",
            &[("InstanceId.1".to_string(), request.node_id.clone())],
        )?)?;
        let instance = instances.into_iter().next().ok_or_else(not_found)?;
        if instance.tags.get(CLUSTER_TAG) != Some(&request.cluster_id)
            || instance.state == "terminated"
        {
            return Err(not_found());
        }
        ec2.call(
            "TerminateInstances",
            &[("InstanceId.1".to_string(), request.node_id.clone())],
        )?;
        Ok(())
    }
}

export_provider!(Aws);

/// The provider's logic that needs no EC2, run natively
/// (`cargo test --target x86_64-unknown-linux-gnu -p aws-ec2` in `plugins/`).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// What the `planted` build changes (it asks for another instance type).
    #[test]
    #[cfg_attr(
        feature = "planted",
        should_panic(expected = "the template's instance type")
    )]
    fn run_instances_asks_for_the_template_s_instance_type_when_the_group_names_no_class() {
        let request = ProvisionRequest {
            request_id: "r1".into(),
            cluster_id: "db".into(),
            store: "mongodb".into(),
            store_version: "7.0".into(),
            node_group: "data".into(),
            node_class: String::new(),
            desired_count: 2,
            count: 2,
            attributes: "{}".into(),
        };
        let template = Template {
            store: "mongodb".into(),
            store_version: None,
            image_id: "ami-1".into(),
            instance_type: "m5.large".into(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            key_name: None,
            user_data: None,
        };
        let params = run_instances_params(&request, &template);
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let others: Vec<_> = params
            .iter()
            .filter(|(key, _)| key != "InstanceType")
            .collect();
        assert_eq!(
            (
                param("ImageId"),
                param("MinCount"),
                param("ClientToken"),
                others.len()
            ),
            (Some("ami-1"), Some("2"), Some("r1"), 11),
            "the other parameters"
        );
        assert_eq!(
            param("TagSpecification.1.Tag.3.Value"),
            Some("m5.large"),
            "the class tag"
        );
        assert_eq!(
            param("InstanceType"),
            Some("m5.large"),
            "the template's instance type"
        );
    }
}

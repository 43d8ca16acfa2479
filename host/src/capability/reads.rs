//! Which outbound requests are reads: GET, HEAD and OPTIONS, plus what a backend's grant
//! declares (`grants.reads`), since some APIs read with POST (the EC2 query API sends
//! `Action=Describe*` as a form). Plan and shadow calls send reads and withhold everything else.
//!
//! ```toml
//! grants = { http = ["https://ec2.eu-west-1.amazonaws.com"], reads = [
//!   { method = "POST", url = "https://ec2.*.amazonaws.com/", body = "Action=Describe*" },
//! ] }
//! ```
//!
//! `url` is a glob over the request's `scheme://host[:port]/path` (the port only when the URL
//! names one; the query is not part of it), `body` a glob over the whole body as text (a body
//! larger than [`MAX_INSPECTED_BODY`] or not UTF-8 never matches); `*` matches any run of
//! characters, `/` included.

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

/// The most bytes of a request body a dry call reads to decide whether it is a read.
pub const MAX_INSPECTED_BODY: usize = 64 << 10;

/// One `grants.reads` entry as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadGrant {
    /// The method, such as `POST`.
    pub method: String,
    /// A glob over `scheme://host[:port]/path`.
    pub url: String,
    /// A glob over the body, if the method and URL are not enough.
    pub body: Option<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    method: String,
    url: GlobMatcher,
    body: Option<GlobMatcher>,
}

/// The requests a backend's grant counts as reads, beyond GET, HEAD and OPTIONS.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    rules: Vec<Rule>,
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad pattern `{pattern}`: {}", e.kind()))
}

impl Reads {
    /// Check and compile the entries; the message names the entry (0-based) that is wrong.
    pub fn parse(grants: &[ReadGrant]) -> Result<Reads, String> {
        let rules = grants
            .iter()
            .enumerate()
            .map(|(i, grant)| {
                let invalid = |why: String| format!("entry {i}: {why}");
                let method = grant.method.trim();
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(invalid(format!(
                        "`method = {:?}`: expected an HTTP method in capitals, such as \"POST\"",
                        grant.method
                    )));
                }
                let url = grant.url.as_str();
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"))
                    .ok_or_else(|| {
                        invalid(format!(
                            "`url = {url:?}`: expected http:// or https:// then a host and a path"
                        ))
                    })?;
                if !rest.contains('/') || url.contains('?') {
                    return Err(invalid(format!(
                        "`url = {url:?}`: expected scheme://host[:port]/path, without a query \
                         (end it with `/` or `/*`)"
                    )));
                }
                Ok(Rule {
                    method: method.to_string(),
                    url: glob(&url.to_ascii_lowercase()).map_err(invalid)?,
                    body: grant
                        .body
                        .as_deref()
                        .map(glob)
                        .transpose()
                        .map_err(invalid)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Reads { rules })
    }

    /// Whether any rule needs the body to decide about a request with this method.
    pub fn needs_body(&self, method: &http::Method) -> bool {
        !always_read(method)
            && self
                .rules
                .iter()
                .any(|r| r.method == method.as_str() && r.body.is_some())
    }

    /// Whether `method uri` with `body` (`None`: not read, or too large) is a read.
    pub fn is_read(&self, method: &http::Method, uri: &http::Uri, body: Option<&[u8]>) -> bool {
        if always_read(method) {
            return true;
        }
        let url = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        )
        .to_ascii_lowercase();
        let text = body.and_then(|b| std::str::from_utf8(b).ok());
        self.rules.iter().any(|rule| {
            rule.method == method.as_str()
                && rule.url.is_match(&url)
                && match (&rule.body, text) {
                    (None, _) => true,
                    (Some(pattern), Some(text)) => pattern.is_match(text),
                    (Some(_), None) => false,
                }
        })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// GET, HEAD and OPTIONS: reads by HTTP's definition (safe methods; TRACE is never granted).
fn always_read(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(method: &str, url: &str, body: Option<&str>) -> ReadGrant {
        ReadGrant {
            method: method.into(),
            url: url.into(),
            body: body.map(str::to_string),
        }
    }

    #[test]
    fn safe_methods_are_reads_and_a_grant_adds_posts_by_url_and_body() {
        let reads = Reads::parse(&[grant(
            "POST",
            "https://ec2.*.amazonaws.com/",
            Some("Action=Describe*"),
        )])
        .unwrap();
        let uri = |u: &str| u.parse::<http::Uri>().unwrap();
        let ec2 = uri("https://ec2.eu-west-1.amazonaws.com/");
        for method in [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS] {
            assert!(Reads::default().is_read(&method, &ec2, None));
        }
        let post = http::Method::POST;
        assert!(reads.needs_body(&post));
        assert!(!reads.needs_body(&http::Method::GET));
        assert!(reads.is_read(
            &post,
            &ec2,
            Some(b"Action=DescribeInstances&Version=2016-11-15")
        ));
        assert!(!reads.is_read(&post, &ec2, Some(b"Action=RunInstances&Version=2016-11-15")));
        assert!(!reads.is_read(&post, &ec2, None));
        assert!(!reads.is_read(&post, &ec2, Some(&[0xff, 0xfe])));
        assert!(!reads.is_read(&http::Method::PUT, &ec2, Some(b"Action=Describe")));
        assert!(!reads.is_read(
            &post,
            &uri("https://ec2.eu-west-1.amazonaws.com/other"),
            Some(b"Action=DescribeInstances")
        ));
        assert!(!reads.is_read(
            &post,
            &uri("https://evil.example/"),
            Some(b"Action=DescribeInstances")
        ));
        // Without a body pattern, the method and URL decide; the query is not part of the URL.
        let reads = Reads::parse(&[grant("POST", "http://127.0.0.1:8888/*/json", None)]).unwrap();
        assert!(reads.is_read(
            &post,
            &uri("http://127.0.0.1:8888/v4/containers/json?all=1"),
            None
        ));
        assert!(!reads.needs_body(&post));
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry_and_the_field() {
        for (bad, needle) in [
            (grant("post", "https://x/", None), "entry 0: `method"),
            (grant("", "https://x/", None), "`method"),
            (grant("POST", "ftp://x/", None), "`url"),
            (
                grant("POST", "https://x", None),
                "scheme://host[:port]/path",
            ),
            (grant("POST", "https://x/?a=1", None), "without a query"),
            (grant("POST", "https://x/[", None), "bad pattern"),
            (grant("POST", "https://x/", Some("a[")), "bad pattern"),
        ] {
            let error = Reads::parse(&[bad]).unwrap_err();
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }
}

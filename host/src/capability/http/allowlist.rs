//! Where a grant lets a request go: the `scheme://host[:port]` patterns of a backend's `http`
//! grant, the addresses no name or glob opens ([`reserved`]), the TLS trust the grant names, and
//! the name lookups whose every address is checked against them before a connection is made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use globset::{Glob, GlobMatcher};

use crate::capability::reads::Reads;

/// One allowed destination: a scheme, a host (a name, exact or glob, or one address) and a
/// port (or any).
#[derive(Debug, Clone)]
struct Rule {
    source: String,
    scheme: String,
    host: Host,
    port: Option<u16>,
}

/// The host part of a pattern.
#[derive(Debug, Clone)]
enum Host {
    /// A name or a glob over names, matched against the URL's host as written.
    Name(GlobMatcher),
    /// One IP address (IPv4-mapped IPv6 addresses as their IPv4 form): the URL's host is that
    /// address, and it may be reached even when [`reserved`].
    Address(IpAddr),
}

impl Rule {
    fn covers(&self, scheme: &str, port: u16) -> bool {
        self.scheme == scheme && self.port.is_none_or(|p| p == port)
    }
}

/// The destinations a backend may call, and the certificate authorities it trusts there.
#[derive(Debug, Clone)]
pub struct Allowlist {
    rules: Vec<Rule>,
    /// The requests beyond GET, HEAD and OPTIONS that count as reads.
    reads: Reads,
    /// The CA bundle that replaces the public roots, if the grant names one.
    ca: Option<PathBuf>,
    pub(super) tls: Arc<rustls::ClientConfig>,
}

impl Default for Allowlist {
    /// Nowhere, trusting the public roots.
    fn default() -> Self {
        Allowlist {
            rules: Vec::new(),
            reads: Reads::default(),
            ca: None,
            tls: public_roots(),
        }
    }
}

/// A TLS client trusting `roots`, over the ring provider that the rest of the gateway uses.
fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The TLS client of grants without a CA bundle: the public web roots, built once.
fn public_roots() -> Arc<rustls::ClientConfig> {
    static PUBLIC: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    PUBLIC
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            client_config(roots).expect("ring supports rustls' default protocol versions")
        })
        .clone()
}

impl Allowlist {
    /// Parse patterns such as `https://ec2.eu-west-1.amazonaws.com`, `http://127.0.0.1:8080`,
    /// `http://[::1]:8080`, `https://*.example.com:*`. A missing port means the scheme's
    /// default; `*` means any. A host that is an IP address (IPv6 in brackets) names that
    /// address; any other host is a name or a glob over names.
    pub fn parse(patterns: &[String]) -> Result<Allowlist, String> {
        let rules = patterns
            .iter()
            .map(|pattern| {
                let invalid = |why: &str| format!("`{pattern}`: {why}");
                let (scheme, rest) = pattern
                    .split_once("://")
                    .ok_or_else(|| invalid("expected scheme://host[:port]"))?;
                let scheme = scheme.to_ascii_lowercase();
                let default_port = match scheme.as_str() {
                    "http" => 80,
                    "https" => 443,
                    _ => return Err(invalid("the scheme must be http or https")),
                };
                if rest.contains('/') || rest.is_empty() {
                    return Err(invalid("expected scheme://host[:port], without a path"));
                }
                // An IPv6 address is written in brackets; its colons are not a port's.
                let (host, port) = match rest.strip_prefix('[') {
                    Some(bracketed) => {
                        let (address, after) = bracketed
                            .split_once(']')
                            .ok_or_else(|| invalid("an IPv6 address needs its closing `]`"))?;
                        let address = address
                            .parse::<Ipv6Addr>()
                            .map_err(|_| invalid("only an IPv6 address may stand in brackets"))?;
                        let port = match after {
                            "" => Some(""),
                            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                                invalid("expected `:port` after the IPv6 address")
                            })?),
                        };
                        (Host::Address(IpAddr::V6(address).to_canonical()), port)
                    }
                    None => {
                        let (host, port) = match rest.rsplit_once(':') {
                            Some((host, port)) => (host, Some(port)),
                            None => (rest, Some("")),
                        };
                        if host.contains(':') {
                            return Err(invalid("an IPv6 address goes in brackets: `[::1]`"));
                        }
                        let host = match host.parse::<Ipv4Addr>() {
                            Ok(address) => Host::Address(IpAddr::V4(address)),
                            Err(_) => Host::Name(
                                Glob::new(&host.to_ascii_lowercase())
                                    .map_err(|e| {
                                        invalid(&format!("bad host pattern: {}", e.kind()))
                                    })?
                                    .compile_matcher(),
                            ),
                        };
                        (host, port)
                    }
                };
                let port = match port {
                    Some("") | None => Some(default_port),
                    Some("*") => None,
                    Some(port) => Some(port.parse::<u16>().map_err(|_| invalid("bad port"))?),
                };
                Ok(Rule {
                    source: pattern.clone(),
                    scheme,
                    host,
                    port,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Allowlist {
            rules,
            ..Allowlist::default()
        })
    }

    /// The same destinations, whose HTTPS servers are trusted if (and only if) their
    /// certificates chain to one in the PEM bundle `ca`.
    pub fn trusting(self, ca: &Path) -> Result<Allowlist, String> {
        let roots = crate::pem::ca_bundle(ca)?.roots;
        Ok(Allowlist {
            ca: Some(ca.to_path_buf()),
            tls: client_config(roots)?,
            ..self
        })
    }

    /// The same destinations, with `reads` counted as reads (`grants.reads`).
    pub fn with_reads(self, reads: Reads) -> Allowlist {
        Allowlist { reads, ..self }
    }

    /// The requests beyond GET, HEAD and OPTIONS that count as reads.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The CA bundle the backend trusts instead of the public roots, if any.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Whether a request to `uri` may leave the gateway, by its scheme, host and port as
    /// written; where it may connect is then [`Allowlist::admits`]'s to say.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(target) = Target::of(uri) else {
            return false;
        };
        self.rules.iter().any(|rule| {
            rule.covers(&target.scheme, target.port)
                && match (&rule.host, target.address) {
                    (Host::Address(granted), Some(address)) => *granted == address,
                    (Host::Address(_), None) => false,
                    (Host::Name(glob), _) => glob.is_match(&target.host),
                }
        })
    }

    /// Whether a request for `scheme` and `port` may connect to `address`: any address
    /// that is not [`reserved`], and a reserved one only when a pattern names it.
    pub fn admits(&self, scheme: &str, port: u16, address: IpAddr) -> bool {
        let address = address.to_canonical();
        reserved(address).is_none()
            || self.rules.iter().any(|rule| {
                rule.covers(scheme, port) && matches!(rule.host, Host::Address(a) if a == address)
            })
    }

    /// The patterns, as the operator wrote them.
    pub fn patterns(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.source.as_str()).collect()
    }
}

/// Why a plugin may not reach `address` unless its grant names the address: loopback,
/// link-local (169.254.0.0/16, where clouds serve instance metadata and credentials, and
/// fe80::/10), unspecified (0.0.0.0/8, which Linux connects to this host, and `::`),
/// multicast, broadcast, and the metadata services that live outside link-local (AWS's
/// fd00:ec2::254, Alibaba Cloud's 100.100.100.200). IPv4-mapped IPv6 addresses
/// (`::ffff:127.0.0.1`) and NAT64 ones (`64:ff9b::127.0.0.1`) are judged by their IPv4
/// address. Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are not reserved: private
/// clouds serve their APIs there.
pub fn reserved(address: IpAddr) -> Option<&'static str> {
    const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;
    let address = match address.to_canonical() {
        IpAddr::V6(v6) if u128::from(v6) >> 32 == NAT64 >> 32 => {
            IpAddr::V4(Ipv4Addr::from(u128::from(v6) as u32))
        }
        other => other,
    };
    match address {
        IpAddr::V4(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V4(a) if a.is_link_local() => Some("link-local"),
        IpAddr::V4(a) if a.octets()[0] == 0 => Some("unspecified"),
        IpAddr::V4(a) if a.is_multicast() => Some("multicast"),
        IpAddr::V4(a) if a.is_broadcast() => Some("broadcast"),
        IpAddr::V4(a) if a == Ipv4Addr::new(100, 100, 100, 200) => Some("a metadata service"),
        IpAddr::V6(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V6(a) if a.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(a) if a.is_unspecified() => Some("unspecified"),
        IpAddr::V6(a) if a.is_multicast() => Some("multicast"),
        IpAddr::V6(a) if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            Some("a metadata service")
        }
        _ => None,
    }
}

/// A request's destination as its URL writes it.
pub(super) struct Target {
    pub(super) scheme: String,
    /// Lowercase; an IPv6 address in brackets, as in the URL.
    pub(super) host: String,
    /// The host as an address, when it is one (IPv4-mapped IPv6 as IPv4).
    address: Option<IpAddr>,
    pub(super) port: u16,
}

impl Target {
    pub(super) fn of(uri: &http::Uri) -> Option<Target> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })?;
        let address = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|a| a.to_canonical());
        Some(Target {
            scheme,
            host,
            address,
            port,
        })
    }
}

/// How many name lookups may run at once, over every plugin. The system resolver
/// (`getaddrinfo`, which follows /etc/hosts and nsswitch as every other program on the host
/// does) blocks a thread of the blocking pool until it answers, and a lookup the plugin gave
/// up on still runs to its end: this bound keeps a plugin that loops over slow names from
/// growing that pool without limit.
const LOOKUPS: usize = 32;

/// The addresses of `host` (a name, or an address in or out of brackets) on `port`.
pub(super) async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOOKUPS);

    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(address, port)]);
    }
    let slot = SLOTS.acquire().await.map_err(std::io::Error::other)?;
    let name = bare.to_string();
    // The slot is freed when the lookup ends, not when its caller stops waiting.
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        (name.as_str(), port)
            .to_socket_addrs()
            .map(|addresses| addresses.collect())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(patterns: &[&str]) -> Allowlist {
        Allowlist::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allowed(list: &Allowlist, uri: &str) -> bool {
        list.allows(&uri.parse().unwrap())
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let list = allow(&[
            "https://ec2.eu-west-1.amazonaws.com",
            "http://127.0.0.1:8080",
        ]);
        assert!(allowed(&list, "https://ec2.eu-west-1.amazonaws.com/"));
        assert!(allowed(
            &list,
            "https://EC2.eu-west-1.amazonaws.com:443/?Action=x"
        ));
        assert!(!allowed(&list, "http://ec2.eu-west-1.amazonaws.com/"));
        assert!(!allowed(&list, "https://ec2.eu-west-1.amazonaws.com:8443/"));
        assert!(allowed(&list, "http://127.0.0.1:8080/v4.0.0/libpod/info"));
        assert!(!allowed(&list, "http://127.0.0.1:8081/"));
        assert!(!allowed(&list, "http://127.0.0.2:8080/"));
    }

    #[test]
    fn host_globs_and_any_port() {
        let list = allow(&["https://*.amazonaws.com:*"]);
        assert!(allowed(&list, "https://ec2.us-east-1.amazonaws.com:9443/"));
        assert!(!allowed(&list, "https://amazonaws.com.evil.net/"));
    }

    #[test]
    fn an_empty_list_allows_nothing_and_bad_patterns_are_refused() {
        assert!(!allowed(&Allowlist::default(), "http://127.0.0.1/"));
        for bad in [
            "127.0.0.1:80",
            "ftp://host",
            "http://host/path",
            "http://host:port",
        ] {
            assert!(Allowlist::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_link_local_unspecified_multicast_and_metadata_addresses_are_reserved() {
        for (address, why) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("100.100.100.200", "a metadata service"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            ("ff02::1", "multicast"),
            ("fd00:ec2::254", "a metadata service"),
            // IPv4-mapped and NAT64 addresses are their IPv4 address.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("64:ff9b::169.254.169.254", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
        ] {
            assert_eq!(reserved(ip(address)), Some(why), "{address}");
        }
        for address in [
            "93.184.216.34",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.255.0.1",
            "128.0.0.1",
            "2001:db8::1",
            "fd00::2",
            "fec0::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert_eq!(reserved(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn ipv6_patterns_name_an_address_in_brackets() {
        let list = allow(&[
            "http://[::1]:8080",
            "https://[fe80::1]",
            "http://[::ffff:127.0.0.2]:*",
        ]);
        assert!(allowed(&list, "http://[::1]:8080/"));
        assert!(allowed(&list, "http://[0:0:0:0:0:0:0:1]:8080/"));
        assert!(!allowed(&list, "http://[::2]:8080/"));
        assert!(!allowed(&list, "http://[::1]:8081/"));
        assert!(!allowed(&list, "https://[::1]:8080/"));
        assert!(allowed(&list, "https://[FE80::1]/"));
        assert!(!allowed(&list, "https://[fe80::1]:8443/"));
        // A mapped address is its IPv4 address, in a pattern and in a URL.
        assert!(allowed(&list, "http://127.0.0.2:1234/"));
        assert!(allowed(&list, "http://[::ffff:127.0.0.2]:1234/"));
        assert!(!allowed(&list, "http://127.0.0.1:1234/"));
        for bad in [
            "http://::1",
            "http://::1:8080",
            "http://[::1",
            "http://[::1]8080",
            "http://[::1]:port",
            "http://[example.com]:80",
            "http://[127.0.0.1]:80",
        ] {
            assert!(Allowlist::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_or_glob_never_opens_a_reserved_address_and_a_pattern_naming_it_does() {
        let list = allow(&[
            "http://localhost:8080",
            "https://*.example.com:*",
            "http://*:*",
            "http://127.0.0.1:9000",
            "http://[::1]:*",
            "http://169.254.169.254",
        ]);
        // The names are granted...
        assert!(allowed(&list, "http://localhost:8080/"));
        assert!(allowed(&list, "https://api.example.com/"));
        // ...but not the reserved addresses they may resolve to.
        let v4_loopback = ip("127.0.0.1");
        assert!(!list.admits("http", 8080, v4_loopback));
        assert!(!list.admits("https", 443, ip("169.254.170.2")));
        assert!(!list.admits("https", 443, ip("::ffff:169.254.169.254")));
        assert!(!list.admits("http", 8080, ip("fe80::1")));
        assert!(!list.admits("http", 8080, ip("0.0.0.0")));
        // Addresses that are not reserved are the names' to reach.
        assert!(list.admits("https", 443, ip("93.184.216.34")));
        assert!(list.admits("http", 8080, ip("10.1.2.3")));
        // A pattern that names the address opens it, on its scheme and port only.
        assert!(list.admits("http", 9000, v4_loopback));
        assert!(list.admits("http", 9000, ip("::ffff:127.0.0.1")));
        assert!(!list.admits("https", 9000, v4_loopback));
        assert!(!list.admits("http", 9001, v4_loopback));
        assert!(!list.admits("http", 9000, ip("127.0.0.2")));
        assert!(list.admits("http", 1, ip("::1")));
        assert!(list.admits("http", 80, ip("169.254.169.254")));
        assert!(!list.admits("http", 81, ip("169.254.169.254")));
        // A glob over names matches an address written as text, which is then checked as
        // an address: `http://*:*` does not open 127.0.0.5.
        assert!(allowed(&list, "http://127.0.0.5:1/"));
        assert!(!list.admits("http", 1, ip("127.0.0.5")));
    }

    #[tokio::test]
    async fn names_are_resolved_and_addresses_are_taken_as_they_are() {
        let localhost = resolve("localhost", 8080).await.unwrap();
        assert!(!localhost.is_empty());
        assert!(
            localhost
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{localhost:?}"
        );
        let literal = resolve("[::1]", 9).await.unwrap();
        assert_eq!(literal, vec!["[::1]:9".parse::<SocketAddr>().unwrap()]);
        let literal = resolve("169.254.169.254", 80).await.unwrap();
        assert_eq!(
            literal,
            vec!["169.254.169.254:80".parse::<SocketAddr>().unwrap()]
        );
    }
}

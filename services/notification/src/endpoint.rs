//! Where push requests may go. A push endpoint or webhook URL comes from a
//! client, so without a check this service would POST wherever a user points
//! it: at itself, at the cloud's metadata address, at anything on the private
//! network (server-side request forgery).
//!
//! Only public unicast addresses are allowed, unless the operator allows
//! private ones (`NOTIFICATION_ALLOW_PRIVATE_ENDPOINTS`, for development and
//! tests); only `https` unless `http` is allowed. The check runs twice: at
//! registration (a literal address, and every address a host name resolves
//! to), and at every send, because the settings may have changed since a
//! subscription was stored and a name may resolve elsewhere now (DNS
//! rebinding). At send time a literal address is checked before the request
//! is made, and a host name goes through [`PublicOnly`], the HTTP client's
//! resolver, which hands it only allowed addresses: nothing else is ever
//! connected to. The client follows no redirects and uses no proxy (a proxy
//! would resolve names itself, past this check).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

/// How long registration waits for a host name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an endpoint is refused: said to the client at registration, logged
/// and kept in the dead letter at send time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What kind of address `ip` is when it is not a public unicast address;
/// `None` when a push may go there.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, ..) => "\"this network\"",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // Addresses that carry an IPv4 address are what that address is.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    Some(match segments {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // IPv4-compatible (deprecated): ::a.b.c.d
        [0, 0, 0, 0, 0, 0, ..] => "IPv4-compatible",
        // NAT64 well-known prefix: what the embedded address is.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return non_public_v4(embedded(high, low)),
        [0x64, 0xff9b, 1, ..] => "local NAT64",
        // 6to4: the embedded address is what the packets reach.
        [0x2002, high, low, ..] => return non_public_v4(embedded(high, low)),
        [0x100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x2001, 0x0000..=0x01ff, ..] => "IETF protocol (Teredo, ORCHID, benchmarking)",
        [0xfc00..=0xfdff, ..] => "unique local (private)",
        [0xfe80..=0xfebf, ..] => "link-local",
        [0xfec0..=0xfeff, ..] => "site-local",
        [0xff00..=0xffff, ..] => "multicast",
        _ => return None,
    })
}

/// The operator's rules for push endpoints.
#[derive(Debug, Clone, Copy)]
pub struct EndpointPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

impl EndpointPolicy {
    /// What the URL alone decides: its scheme, and its host when that is an
    /// address. Nothing is resolved or connected to.
    ///
    /// # Errors
    /// [`Refused`] with the reason.
    pub fn check(&self, url: &Url) -> Result<(), Refused> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Refused("must be an https URL (http endpoints are not allowed here)".into())),
            _ => return Err(Refused("must be an https URL".into())),
        }
        let address = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(Refused("must name a host".into())),
        };
        self.check_address(address, &address.to_string())
    }

    fn check_address(&self, address: IpAddr, host: &str) -> Result<(), Refused> {
        match non_public(address) {
            Some(kind) if !self.allow_private => {
                Err(Refused(format!("must not point at a {kind} address ({host} is {address})")))
            }
            _ => Ok(()),
        }
    }

    /// [`check`](Self::check), then every address a host name resolves to
    /// (for registration, where a clear answer helps the client). A name
    /// that does not resolve now is let through: the send-time check stands.
    ///
    /// # Errors
    /// [`Refused`] with the reason.
    pub async fn check_with_names(&self, url: &Url) -> Result<(), Refused> {
        self.check(url)?;
        let Some(Host::Domain(name)) = url.host() else { return Ok(()) };
        if self.allow_private {
            return Ok(());
        }
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
        let Ok(Ok(addresses)) = lookup else { return Ok(()) };
        for address in addresses {
            self.check_address(address.ip(), name)?;
        }
        Ok(())
    }

    /// The HTTP client for pushes: no redirects, no proxy, and, unless private
    /// addresses are allowed, a resolver that returns only public ones.
    pub fn http_client(&self, timeout: Duration) -> reqwest::Client {
        let mut builder =
            reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).no_proxy();
        if !self.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        builder.build().expect("an HTTP client with default TLS settings")
    }
}

/// Resolves a host name to its public addresses only; a name with none
/// fails with [`Refused`], so no connection is attempted.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved.iter().copied().filter(|a| non_public(a.ip()).is_none()).collect();
            if let (true, Some(first)) = (public.is_empty(), resolved.first()) {
                let kind = non_public(first.ip()).unwrap_or("non-public");
                let refused = Refused(format!("must not point at a {kind} address ({host} is {})", first.ip()));
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The [`Refused`] somewhere in an error's chain of causes (a resolver's
/// refusal reaches the caller wrapped in the HTTP client's errors).
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(address: &str) -> Option<&'static str> {
        non_public(address.parse().expect("an address"))
    }

    #[test]
    fn every_non_public_ipv4_range_is_refused() {
        let refused = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\""),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("192.0.0.8", "IETF protocol"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("192.88.99.1", "6to4 relay"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ];
        for (address, expected) in refused {
            assert_eq!(kind(address), Some(expected), "{address}");
        }
    }

    #[test]
    fn public_ipv4_addresses_next_to_the_ranges_are_allowed() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(kind(address), None, "{address}");
        }
    }

    #[test]
    fn every_non_public_ipv6_range_is_refused_including_embedded_ipv4() {
        let refused = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b:1::1", "local NAT64"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a00:1::", "private"),
            ("100::1", "discard-only"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "IETF protocol (Teredo, ORCHID, benchmarking)"),
            ("2001:10::1", "IETF protocol (Teredo, ORCHID, benchmarking)"),
            ("fc00::1", "unique local (private)"),
            ("fd12:3456::1", "unique local (private)"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ff05::1:3", "multicast"),
        ];
        for (address, expected) in refused {
            assert_eq!(kind(address), Some(expected), "{address}");
        }
    }

    #[test]
    fn public_ipv6_addresses_are_allowed() {
        for address in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(kind(address), None, "{address}");
        }
    }

    fn policy(allow_http: bool, allow_private: bool) -> EndpointPolicy {
        EndpointPolicy { allow_http, allow_private }
    }

    fn check(policy: EndpointPolicy, url: &str) -> Result<(), Refused> {
        policy.check(&Url::parse(url).expect("a URL"))
    }

    #[test]
    fn literal_addresses_are_refused_in_every_spelling_the_url_parser_accepts() {
        let strict = policy(true, false);
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://2130706433/",
            "http://017700000001/",
            "http://127.0.0.1./",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:169.254.169.254]/latest/meta-data",
            "http://169.254.169.254/latest/meta-data",
            "https://10.0.0.1:8443/hook",
            "http://0.0.0.0/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://100.64.1.1/",
            "http://255.255.255.255/",
            "http://224.0.0.251/",
        ] {
            let refused = check(strict, url).expect_err(url);
            assert!(refused.0.starts_with("must not point at a"), "{url}: {refused}");
        }
        assert_eq!(check(strict, "https://8.8.8.8/hook"), Ok(()));
        assert_eq!(check(strict, "https://push.example.com/x"), Ok(()), "names are checked when resolved");
        assert_eq!(check(policy(true, true), "http://127.0.0.1:9000/hook"), Ok(()));
    }

    #[test]
    fn http_is_refused_unless_allowed_and_other_schemes_always() {
        assert!(check(policy(false, true), "http://push.example.com/").is_err());
        assert_eq!(check(policy(true, true), "http://push.example.com/"), Ok(()));
        for url in ["ftp://push.example.com/", "file:///etc/passwd", "gopher://127.0.0.1:6379/_"] {
            assert!(check(policy(true, true), url).is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_by_both_checks() {
        let strict = policy(true, false);
        let url = Url::parse("http://localhost:9/hook").unwrap();
        let refused = strict.check_with_names(&url).await.expect_err("localhost is loopback");
        assert!(refused.0.contains("loopback") && refused.0.contains("localhost"), "{refused}");
        assert_eq!(policy(true, true).check_with_names(&url).await, Ok(()));

        let resolved = PublicOnly.resolve("localhost".parse().expect("a name")).await;
        let error = resolved.err().expect("the resolver refuses localhost");
        assert!(refusal_in(error.as_ref()).is_some_and(|r| r.0.contains("loopback")), "{error}");
    }
}

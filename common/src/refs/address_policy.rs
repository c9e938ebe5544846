//! Which network addresses a reference may point at. A reference URL comes from a spreadsheet cell,
//! so without this check anyone with the Sheet could make our service fetch its own metadata server
//! (and its credentials) or probe the VPC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names that always mean "inside": refused before any DNS lookup.
const INTERNAL_NAMES: [&str; 4] = ["localhost", "metadata", "metadata.google.internal", "metadata.goog"];

pub fn host_is_forbidden(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            INTERNAL_NAMES.iter().any(|n| name == *n || name.ends_with(&format!(".{n}")))
                || name.ends_with(".internal")
                || name.ends_with(".local")
        }
        url::Host::Ipv4(ip) => ip_is_forbidden(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => ip_is_forbidden(IpAddr::V6(*ip)),
    }
}

/// Loopback, private, link-local (the metadata server lives at 169.254.169.254), CGNAT, unspecified,
/// multicast, documentation and other non-global ranges.
pub fn ip_is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_forbidden(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_is_forbidden(v4);
            }
            v6_is_forbidden(v6)
        }
    }
}

fn v4_is_forbidden(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0) // 192.0.0.0/24 protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

fn v6_is_forbidden(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || ip.to_ipv4().is_some_and(v4_is_forbidden) // IPv4-compatible ::a.b.c.d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(ip_is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in ["8.8.8.8", "142.250.74.46", "2a00:1450:4001:80b::200e"] {
            assert!(!ip_is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
    }
}

//! Which network addresses a reference may point at. A reference URL comes from a spreadsheet cell,
//! so without this check anyone with the Sheet could make our service fetch its own metadata server
//! (and its credentials) or probe the VPC.
//!
//! The rule is the IANA IPv4 and IPv6 Special-Purpose Address Registries, row by row (the tables
//! below), plus multicast, the reserved space and IPv6 outside global unicast `2000::/3`. Every
//! block of the registries is refused, also the few marked "globally reachable" (anycast services
//! such as AS112 and TURN): none of them serves images, and a shorter rule is easier to trust.
//!
//! IPv6 forms that carry an IPv4 address:
//! - IPv4-mapped `::ffff:a.b.c.d` and NAT64's well-known prefix `64:ff9b::/96` (what DNS64 hands an
//!   IPv6-only host for an IPv4-only name) are judged by the IPv4 address they carry;
//! - the local-use NAT64 prefix `64:ff9b:1::/48`, 6to4 `2002::/16` and Teredo `2001::/32` (inside
//!   `2001::/23`) are refused whatever they carry: local-use translation is inside by definition,
//!   6to4 and Teredo are deprecated relays no image host needs, and decoding Teredo's obfuscated
//!   client address would be one more place to get wrong.
//!
//! The prefixes are `ipnet` values (the crate reqwest already brings); the registries themselves
//! are in no maintained crate (`ip_network::is_global` misses benchmarking, NAT64, 6to4, Teredo and
//! the 2024 additions), so they are written out here with their RFCs.

use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names that always mean "inside": refused before any DNS lookup.
const INTERNAL_NAMES: [&str; 4] = ["localhost", "metadata", "metadata.google.internal", "metadata.goog"];

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

#[allow(clippy::too_many_arguments)]
const fn v6(s0: u16, s1: u16, s2: u16, s3: u16, s4: u16, s5: u16, s6: u16, s7: u16, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7), prefix)
}

/// The IANA IPv4 Special-Purpose Address Registry (every row), multicast and the limited broadcast.
pub const REFUSED_V4: [(&str, Ipv4Net); 18] = [
    ("\"this network\" (RFC 791)", v4(0, 0, 0, 0, 8)),
    ("private use (RFC 1918)", v4(10, 0, 0, 0, 8)),
    ("shared address space, CGNAT (RFC 6598)", v4(100, 64, 0, 0, 10)),
    ("loopback (RFC 1122)", v4(127, 0, 0, 0, 8)),
    ("link local, the metadata server's (RFC 3927)", v4(169, 254, 0, 0, 16)),
    ("private use (RFC 1918)", v4(172, 16, 0, 0, 12)),
    ("IETF protocol assignments, DS-Lite, NAT64 discovery (RFC 6890)", v4(192, 0, 0, 0, 24)),
    ("documentation TEST-NET-1 (RFC 5737)", v4(192, 0, 2, 0, 24)),
    ("AS112-v4 (RFC 7535)", v4(192, 31, 196, 0, 24)),
    ("AMT (RFC 7450)", v4(192, 52, 193, 0, 24)),
    ("deprecated 6to4 relay anycast (RFC 7526)", v4(192, 88, 99, 0, 24)),
    ("private use (RFC 1918)", v4(192, 168, 0, 0, 16)),
    ("direct delegation AS112 (RFC 7534)", v4(192, 175, 48, 0, 24)),
    ("benchmarking (RFC 2544)", v4(198, 18, 0, 0, 15)),
    ("documentation TEST-NET-2 (RFC 5737)", v4(198, 51, 100, 0, 24)),
    ("documentation TEST-NET-3 (RFC 5737)", v4(203, 0, 113, 0, 24)),
    ("multicast (RFC 5771)", v4(224, 0, 0, 0, 4)),
    ("reserved, and the limited broadcast 255.255.255.255 (RFC 1112, RFC 919)", v4(240, 0, 0, 0, 4)),
];

/// The IANA IPv6 Special-Purpose Address Registry inside global unicast `2000::/3` (every row; the
/// rows outside it — loopback, unspecified, discard-only `100::/64`, local-use NAT64, unique and
/// link local, multicast, segment routing `5f00::/16`, and the old site local `fec0::/10` — are refused by [`GLOBAL_UNICAST`] already).
pub const REFUSED_V6: [(&str, Ipv6Net); 5] = [
    (
        "IETF protocol assignments: Teredo, benchmarking, AMT, AS112, ORCHID (RFC 2928, RFC 4380, RFC 5180)",
        v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23),
    ),
    ("documentation (RFC 3849)", v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32)),
    ("6to4 (RFC 3056)", v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16)),
    ("direct delegation AS112 (RFC 7534)", v6(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0, 48)),
    ("documentation (RFC 9637)", v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20)),
];

/// Where every globally routed IPv6 unicast address is allocated from (RFC 4291, IANA's IPv6
/// address space registry). The rest of the space is special or unassigned.
const GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 0, 0, 3);

/// NAT64's well-known prefix (RFC 6052): its last 32 bits are the IPv4 address it reaches.
const NAT64_WELL_KNOWN: Ipv6Net = v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96);

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

/// Whether a reference may not be fetched from `ip` (see the module's rule).
pub fn ip_is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_forbidden(v4),
        IpAddr::V6(v6) => v6_is_forbidden(v6),
    }
}

fn v4_is_forbidden(ip: Ipv4Addr) -> bool {
    REFUSED_V4.iter().any(|(_, net)| net.contains(&ip))
}

fn v6_is_forbidden(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return v4_is_forbidden(v4);
    }
    !GLOBAL_UNICAST.contains(&ip) || REFUSED_V6.iter().any(|(_, net)| net.contains(&ip))
}

/// The IPv4 address an IPv4-mapped or NAT64 well-known address reaches.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let [.., a, b, c, d] = ip.octets();
    NAT64_WELL_KNOWN.contains(&ip).then_some(Ipv4Addr::new(a, b, c, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(ip: &str) -> bool {
        ip_is_forbidden(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")))
    }

    #[test]
    fn private_and_metadata_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(forbidden(ip), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "8.8.8.8",
            "142.250.74.46",
            "1.1.1.1",
            "100.63.255.255", // just below CGNAT
            "100.128.0.0",    // just above it
            "198.17.255.255", // just below benchmarking
            "198.20.0.0",     // just above it
            "223.255.255.255",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808", // NAT64 of 8.8.8.8
        ] {
            assert!(!forbidden(ip), "{ip}");
        }
    }

    /// One named address in each range the issue lists, so a range that goes missing is named.
    #[test]
    fn every_named_special_range_is_forbidden() {
        for (ip, what) in [
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT, last"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.254", "benchmarking, last"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.251", "multicast (mDNS)"),
            ("239.255.255.250", "multicast (SSDP)"),
            ("192.0.2.10", "TEST-NET-1"),
            ("198.51.100.10", "TEST-NET-2"),
            ("203.0.113.10", "TEST-NET-3"),
            ("192.0.0.170", "NAT64 discovery"),
            ("192.31.196.1", "AS112-v4"),
            ("192.52.193.1", "AMT"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.175.48.1", "direct delegation AS112"),
            ("2001:2::1", "IPv6 benchmarking"),
            ("2001:db8::1", "IPv6 documentation"),
            ("3fff::1", "IPv6 documentation (RFC 9637)"),
            ("100::1", "discard-only"),
            ("ff02::1", "IPv6 multicast"),
            ("ff0e::1", "IPv6 global multicast"),
            ("fec0::1", "site local"),
            ("5f00::1", "segment routing"),
            ("2620:4f:8000::1", "direct delegation AS112"),
            ("::10.0.0.1", "IPv4-compatible"),
        ] {
            assert!(forbidden(ip), "{what}: {ip}");
        }
    }

    #[test]
    fn every_row_of_the_tables_is_forbidden_from_first_to_last_address() {
        for (what, net) in REFUSED_V4 {
            for ip in [net.network(), net.broadcast()] {
                assert!(ip_is_forbidden(IpAddr::V4(ip)), "{what}: {ip}");
            }
        }
        for (what, net) in REFUSED_V6 {
            for ip in [net.network(), net.broadcast()] {
                assert!(ip_is_forbidden(IpAddr::V6(ip)), "{what}: {ip}");
            }
        }
    }

    #[test]
    fn nat64_is_judged_by_the_ipv4_address_it_carries() {
        for ip in ["64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::6440:1", "64:ff9b::c612:1"] {
            assert!(forbidden(ip), "{ip}");
        }
        assert!(!forbidden("64:ff9b::8efa:4a2e"), "NAT64 of a public address");
        // The local-use prefix is inside by definition, whatever it carries.
        assert!(forbidden("64:ff9b:1::808:808"), "local-use NAT64");
        assert!(forbidden("64:ff9b:1::a00:1"), "local-use NAT64");
    }

    #[test]
    fn six_to_four_and_teredo_are_refused_wholesale() {
        // 6to4 of 10.0.0.1, of 169.254.169.254, and of the public 8.8.8.8.
        for ip in ["2002:a00:1::1", "2002:a9fe:a9fe::1", "2002:808:808::1"] {
            assert!(forbidden(ip), "6to4 {ip}");
        }
        // Teredo: server 65.54.227.120, client 127.0.0.1 and 8.8.8.8 (obfuscated: bits inverted).
        for ip in ["2001:0:4136:e378:8000:63bf:80ff:fffe", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"] {
            assert!(forbidden(ip), "Teredo {ip}");
        }
    }

    #[test]
    fn internal_names_are_forbidden() {
        for name in ["localhost", "LOCALHOST.", "metadata.google.internal", "x.metadata.goog", "printer.local"] {
            assert!(host_is_forbidden(&url::Host::Domain(name)), "{name}");
        }
        assert!(!host_is_forbidden(&url::Host::Domain("example.com")));
    }
}

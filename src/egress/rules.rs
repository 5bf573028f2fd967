//! Which destinations a job may reach: the allow list, loopback names, and the addresses a name may resolve to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::EgressRules;

/// A host as the rules compare it: lower case, without IPv6 brackets or a trailing dot.
pub(crate) fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// One entry of the allow list: a host (or `*.domain`) and maybe a port.
struct Entry {
    host: String,
    port: Option<u16>,
}

fn parse_entry(entry: &str) -> Option<Entry> {
    let entry = entry.trim();
    if entry.is_empty() {
        return None;
    }
    // `[v6]` or `[v6]:port`
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some(Entry {
            host: normalize_host(host),
            port,
        });
    }
    // A bare IPv6 address has several colons and no port.
    if entry.matches(':').count() > 1 {
        return Some(Entry {
            host: normalize_host(entry),
            port: None,
        });
    }
    match entry.rsplit_once(':') {
        Some((host, port)) => Some(Entry {
            host: normalize_host(host),
            port: Some(port.parse().ok()?),
        }),
        None => Some(Entry {
            host: normalize_host(entry),
            port: None,
        }),
    }
}

fn port_matches(entry: &Entry, port: u16) -> bool {
    entry.port.is_none_or(|p| p == port)
}

/// Whether `host:port` is named exactly (not through a `*.domain` entry): such a destination may resolve to
/// loopback or link-local addresses.
pub(crate) fn listed_literally(rules: &EgressRules, host: &str, port: u16) -> bool {
    let host = normalize_host(host);
    rules
        .allow
        .iter()
        .filter_map(|e| parse_entry(e))
        .any(|e| !e.host.starts_with("*.") && e.host == host && port_matches(&e, port))
}

/// `localhost`, `*.localhost`, and loopback addresses.
pub(crate) fn is_loopback_name(host: &str) -> bool {
    let host = normalize_host(host);
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(forbidden_address)
}

/// Whether the allow list lets a job reach `host:port`. A bare host allows any port; `*.domain` allows the
/// names under `domain` (not `domain` itself). Loopback names and addresses are allowed only when listed
/// literally, never through a wildcard.
pub fn allowed(rules: &EgressRules, host: &str, port: u16) -> bool {
    let host = normalize_host(host);
    if host.is_empty() {
        return false;
    }
    if is_loopback_name(&host) {
        return listed_literally(rules, &host, port);
    }
    rules.allow.iter().filter_map(|e| parse_entry(e)).any(|e| {
        if !port_matches(&e, port) {
            return false;
        }
        match e.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => e.host == host,
        }
    })
}

/// Addresses no unlisted destination may resolve to: loopback (the daemon's host, its metrics), link-local
/// (cloud metadata) and unspecified ones (`0.0.0.0` reaches the host's own services).
pub(crate) fn forbidden_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            v6.is_loopback() || v6.is_unspecified() || is_link_local_v6(v6)
        }
    }
}

fn forbidden_v4(v4: Ipv4Addr) -> bool {
    v4.is_loopback() || v4.is_link_local() || v4.octets()[0] == 0
}

fn is_link_local_v6(v6: Ipv6Addr) -> bool {
    (v6.segments()[0] & 0xffc0) == 0xfe80
}

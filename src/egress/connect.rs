//! Opening a TCP connection to a destination the rules allow: resolve, drop forbidden addresses, connect.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::rules::{allowed, forbidden_address, listed_literally, normalize_host};
use super::{CONNECT_TIMEOUT, EgressRules};

/// Why no connection was opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The rules refuse the destination (the text says why, in one line).
    Refused(String),
    /// Allowed, but resolving or connecting failed or timed out.
    Failed(String),
}

/// Connects to `host:port` if the rules allow it. A destination not listed literally must not resolve to a
/// loopback, link-local or unspecified address.
pub(crate) async fn connect(
    rules: &EgressRules,
    host: &str,
    port: u16,
) -> Result<TcpStream, ConnectError> {
    let host = normalize_host(host);
    if !allowed(rules, &host, port) {
        return Err(ConnectError::Refused(format!(
            "televibe egress: {host} is not on agent.network_allow"
        )));
    }
    let literal = listed_literally(rules, &host, port);
    let attempt = async {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ConnectError::Failed(format!("cannot resolve {host}: {e}")))?
            .collect();
        let usable: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| literal || !forbidden_address(a.ip()))
            .collect();
        if usable.is_empty() {
            return Err(if resolved.is_empty() {
                ConnectError::Failed(format!("{host} resolves to no address"))
            } else {
                ConnectError::Refused(format!(
                    "televibe egress: {host} resolves to a loopback, link-local or unspecified address; \
                     only a literal entry of agent.network_allow allows that"
                ))
            });
        }
        let mut last = String::new();
        for addr in usable {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = format!("cannot connect to {host}:{port}: {e}"),
            }
        }
        Err(ConnectError::Failed(last))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Failed(format!(
            "connecting to {host}:{port} timed out after {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

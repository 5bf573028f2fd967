//! `[cluster]`: this node's name and how the nodes sharing one PostgreSQL store (`store.url`) watch each
//! other, as written and validated. On SQLite (the default) there is one node and only its name is shown.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[cluster]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// This node's name, unique among the nodes of one store; empty: the host name.
    pub node_id: String,
    /// A node silent (no heartbeat) for this long is gone: its running jobs fail `node_lost` (run once
    /// more when it returns, as after a restart) and its sessions show as unavailable.
    pub node_timeout_secs: u64,
    /// How often a node writes its heartbeat and a follower tries to become the leader.
    pub heartbeat_secs: u64,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            node_id: String::new(),
            node_timeout_secs: 30,
            heartbeat_secs: 2,
        }
    }
}

/// `[cluster]`, validated.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: String,
    pub node_timeout: Duration,
    pub heartbeat: Duration,
}

/// The machine's host name (`/proc/sys/kernel/hostname`, else `uname`), "node" if it has none.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !name.is_empty() {
        return name;
    }
    // SAFETY: `uname` fills the zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } == 0 {
        let raw: Vec<u8> = u
            .nodename
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let s = String::from_utf8_lossy(&raw).trim().to_string();
        if !s.is_empty() {
            return s;
        }
    }
    "node".into()
}

pub fn cluster(raw: &RawCluster) -> Result<ClusterSettings, ConfigError> {
    let node_id = if raw.node_id.trim().is_empty() {
        host_name()
    } else {
        raw.node_id.trim().to_string()
    };
    if node_id.len() > 63
        || !node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "cluster.node_id",
            format!("{node_id:?}: at most 63 letters, digits, '-', '_' or '.'"),
        ));
    }
    if raw.heartbeat_secs == 0 || raw.heartbeat_secs > 60 {
        return Err(invalid(
            "cluster.heartbeat_secs",
            format!("{}: between 1 and 60", raw.heartbeat_secs),
        ));
    }
    let heartbeat = Duration::from_secs(raw.heartbeat_secs);
    let node_timeout = Duration::from_secs(raw.node_timeout_secs);
    if node_timeout < heartbeat * 3 {
        return Err(invalid(
            "cluster.node_timeout_secs",
            format!(
                "{} s is less than three heartbeats ({} s each): a node would be taken for gone between two",
                node_timeout.as_secs(),
                heartbeat.as_secs()
            ),
        ));
    }
    Ok(ClusterSettings {
        node_id,
        node_timeout,
        heartbeat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let c = cluster(&RawCluster::default()).unwrap();
        assert_eq!(c.node_id, host_name());
        assert_eq!(c.node_timeout, Duration::from_secs(30));
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        let bad = RawCluster {
            node_id: "a b".into(),
            ..Default::default()
        };
        assert!(
            cluster(&bad)
                .unwrap_err()
                .to_string()
                .contains("cluster.node_id")
        );
        let zero = RawCluster {
            heartbeat_secs: 0,
            ..Default::default()
        };
        assert!(
            cluster(&zero)
                .unwrap_err()
                .to_string()
                .contains("cluster.heartbeat_secs")
        );
        let tight = RawCluster {
            node_timeout_secs: 4,
            heartbeat_secs: 2,
            ..Default::default()
        };
        assert!(
            cluster(&tight)
                .unwrap_err()
                .to_string()
                .contains("cluster.node_timeout_secs")
        );
    }
}

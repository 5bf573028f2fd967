//! Health: liveness (the root supervisor answers), readiness (database, the chat front, repos, sandbox)
//! and the `get_health` view with the breakers.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

use super::Core;
use crate::breaker::BreakerStatus;
use crate::supervisor::SupervisorMsg;

/// A readiness check a front brings (Telegram's live state); readiness reports it as `telegram`.
pub trait FrontCheck: Send + Sync {
    fn check(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The readiness answer of the spec.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub status: &'static str,
    pub checks: ReadinessChecks,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadinessChecks {
    pub database: String,
    pub telegram: String,
    pub repos: String,
    /// `ok`, `failed: …` (jobs cannot start), or `none (agents run unconfined)` by the operator's choice.
    pub sandbox: String,
}

/// What `get_health` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub live: bool,
    pub ready: bool,
    pub readiness: Readiness,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub read_only: bool,
    pub agent_command: String,
    pub agent_found: bool,
    pub breakers: Vec<BreakerStatus>,
    /// Where the daemon's jobs get cgroups, or why they cannot (as `doctor` reports it).
    pub cgroups: JobCgroups,
}

/// The daemon's jobs' cgroups as `get_health` reports them.
#[derive(Debug, Clone, Serialize)]
pub struct JobCgroups {
    pub available: bool,
    /// The jobs' parent cgroup, when available.
    pub base: Option<String>,
    /// Whether `jobs.memory_max` is enforced.
    pub memory_limit: bool,
    /// Why jobs get no cgroups, when they do not.
    pub reason: Option<String>,
}

impl Core {
    /// Liveness: the root supervisor answers within 1000 ms (the spec's event-loop ping).
    pub async fn liveness(&self) -> Result<(), String> {
        let root = self.root().ok_or("supervision tree not started")?;
        ractor::call_t!(root, SupervisorMsg::Healthy, 1000)
            .map(|_| ())
            .map_err(|e| format!("supervision tree not responding: {e}"))
    }

    /// Readiness: database `SELECT 1`, Telegram's live state (what the poller and the notifier saw last),
    /// repos directory present.
    pub async fn readiness(&self) -> Readiness {
        let database = match tokio::time::timeout(Duration::from_secs(5), self.store.ping()).await {
            Ok(Ok(())) if self.store.is_read_only() => format!(
                "failed: read-only mode ({})",
                self.store.read_only_reason().unwrap_or_default()
            ),
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(_) => "failed: timeout".to_string(),
        };
        let telegram = match self.front_check.get() {
            None => "disabled".to_string(),
            Some(check) => match check.check(Duration::from_millis(5000)).await {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            },
        };
        let repos_path = self.layout.repos();
        let repos = if repos_path.is_dir() {
            "ok".to_string()
        } else {
            format!("failed: {} does not exist", repos_path.display())
        };
        // The database gauge is the integrity signal (`DatabaseCorruption` reads it): a store read-only for a
        // full disk or an I/O error is still a sound database, and says so in
        // `televibe_database_read_only_reason`; readiness above fails either way.
        self.metrics
            .set_health("database", !self.store.is_corrupt());
        self.metrics
            .set_health("telegram", telegram == "ok" || telegram == "disabled");
        self.metrics.set_health("repos", repos == "ok");
        let sandbox = self.sandbox_status();
        let all_ok = database == "ok"
            && repos == "ok"
            && (telegram == "ok" || telegram == "disabled")
            && !sandbox.starts_with("failed");
        let shutting_down = self.is_shutting_down();
        Readiness {
            status: if all_ok && !shutting_down {
                "ready"
            } else {
                "not_ready"
            },
            reason: shutting_down.then(|| "shutting down".to_string()),
            checks: ReadinessChecks {
                database,
                telegram,
                repos,
                sandbox,
            },
        }
    }

    /// Whether jobs can be sandboxed, checked by starting an empty sandbox at most once a minute.
    pub fn sandbox_status(&self) -> String {
        if !self.config.agent.sandboxed {
            return crate::core::jobs::sandbox::UNCONFINED.to_string();
        }
        let mut cached = self
            .sandbox_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, status)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(60)
        {
            return status.clone();
        }
        let status = match crate::core::jobs::sandbox::check(
            crate::agent_path::find("bwrap").as_deref(),
            &self.config,
        ) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        *cached = Some((std::time::Instant::now(), status.clone()));
        status
    }

    pub async fn health(&self) -> Health {
        let live = self.liveness().await.is_ok();
        let readiness = self.readiness().await;
        self.breakers.refresh();
        Health {
            live,
            ready: readiness.status == "ready",
            readiness,
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            read_only: self.store.is_read_only(),
            agent_command: self.config.agent.command.clone(),
            agent_found: crate::agent_path::find(&self.config.agent.command).is_some(),
            breakers: self.breakers.statuses(),
            cgroups: match self.cgroups() {
                Ok(g) => JobCgroups {
                    available: true,
                    base: Some(g.base().display().to_string()),
                    memory_limit: g.memory && self.config.jobs.memory_max > 0,
                    reason: None,
                },
                Err(e) => JobCgroups {
                    available: false,
                    base: None,
                    memory_limit: false,
                    reason: Some(e.to_string()),
                },
            },
        }
    }
}

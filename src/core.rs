//! The core: the handles every front and actor shares (config, store, metrics, breakers, the tree).
//!
//! Fronts (MCP, admin, later Telegram) call methods here; none of them touches the database or spawns processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::audit::{Audit, AuditSubject};
use crate::breaker::{BreakerStatus, Breakers};
use crate::config::Config;
use crate::domain::OutboxEvent;
use crate::errors::CoreError;
use crate::git::Git;
use crate::layout::Layout;
use crate::sessions::actor::SessionMsg;
use crate::store::Store;
use crate::supervisor::{SupervisorMsg, TreeNode};
use crate::telemetry::Metrics;

/// A readiness check a front brings (Telegram's `getMe`); readiness reports it as `telegram`.
pub trait FrontCheck: Send + Sync {
    fn check(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Serves a job's approval endpoint (the protocol the agent's permission tool speaks), until aborted.
/// The MCP front provides it; the daemon installs it at boot.
pub type ApprovalServer =
    fn(tokio::net::UnixListener, Arc<Core>, String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Shared state of one daemon.
pub struct Core {
    pub config: Arc<Config>,
    pub layout: Layout,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub breakers: Arc<Breakers>,
    /// The readiness check of the chat front (Telegram's `getMe`), when one is configured.
    front_check: OnceLock<Box<dyn FrontCheck>>,
    /// The server of jobs' approval endpoints.
    approval_server: OnceLock<ApprovalServer>,
    pub git: Git,
    pub audit: Audit,
    pub started: Instant,
    /// Running session actors by session id (each registers itself when it starts).
    pub session_actors: Mutex<HashMap<String, ActorRef<SessionMsg>>>,
    /// Serialises session creation: limits, numbering and branch checks happen under it.
    pub session_create: tokio::sync::Mutex<()>,
    /// Approval calls waiting for a person.
    pub approval_waiters: Mutex<crate::approvals::Waiters>,
    /// Per-job secrets of the approval tool connections (job id → token), alive while the job runs.
    job_tokens: Mutex<HashMap<String, String>>,
    /// Jobs this daemon counts in `televibe_jobs_active` (so a gauge never goes below what it added).
    pub active_jobs: Mutex<HashSet<String>>,
    /// Run slots: `jobs.max_concurrent` permits, held by running jobs.
    pub job_slots: Arc<tokio::sync::Semaphore>,
    /// Whether users were told that the Claude API is unavailable (reset when a job starts again).
    pub claude_notice_sent: AtomicBool,
    /// Label sets of `televibe_sessions_active` set last time, so vanished ones go back to 0.
    pub session_gauge_labels: Mutex<HashSet<(String, String)>>,
    shutting_down: AtomicBool,
    root: OnceLock<ActorRef<SupervisorMsg>>,
    /// The last sandbox check and when it ran (readiness asks often; bwrap is started at most once a minute).
    sandbox_checked: Mutex<Option<(std::time::Instant, String)>>,
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
}

impl Core {
    pub fn new(config: Arc<Config>, store: Store, metrics: Arc<Metrics>) -> Arc<Core> {
        let breakers = Arc::new(Breakers::new(&config.breakers, metrics.clone()));
        let layout = Layout::new(&config.root);
        let job_slots = Arc::new(tokio::sync::Semaphore::new(
            config.raw.jobs.max_concurrent as usize,
        ));
        Arc::new(Core {
            git: Git::new(
                breakers.clone(),
                Duration::from_secs(config.raw.git.timeout_secs),
            ),
            audit: Audit::new(layout.audit_log()),
            layout,
            config,
            store,
            metrics,
            breakers,
            front_check: OnceLock::new(),
            approval_server: OnceLock::new(),
            started: Instant::now(),
            session_actors: Mutex::new(HashMap::new()),
            session_create: tokio::sync::Mutex::new(()),
            job_slots,
            active_jobs: Mutex::new(HashSet::new()),
            approval_waiters: Mutex::new(Default::default()),
            job_tokens: Mutex::new(HashMap::new()),
            claude_notice_sent: AtomicBool::new(false),
            session_gauge_labels: Mutex::new(HashSet::new()),
            shutting_down: AtomicBool::new(false),
            root: OnceLock::new(),
            sandbox_checked: Mutex::new(None),
        })
    }

    pub fn set_root(&self, root: ActorRef<SupervisorMsg>) {
        let _ = self.root.set(root);
    }

    pub fn root(&self) -> Option<&ActorRef<SupervisorMsg>> {
        self.root.get()
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The live supervision tree, asked of the root supervisor.
    pub async fn supervision_tree(&self) -> Result<TreeNode, String> {
        let root = self.root().ok_or("the supervision tree is not running")?;
        ractor::call_t!(root, SupervisorMsg::Tree, 2000)
            .map_err(|e| format!("supervision tree did not answer: {e}"))
    }

    /// A fresh secret for a job's approval connection (256 random bits).
    pub fn issue_job_token(&self, job_id: &str) -> String {
        let mut b = [0u8; 32];
        rand::fill(&mut b[..]);
        let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
        self.job_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.to_string(), token.clone());
        token
    }

    pub fn revoke_job_token(&self, job_id: &str) {
        self.job_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job_id);
    }

    /// Whether `token` is the live secret of job `job_id` (compared in constant time).
    pub fn job_token_valid(&self, job_id: &str, token: &str) -> bool {
        let tokens = self.job_tokens.lock().unwrap_or_else(|p| p.into_inner());
        let Some(expected) = tokens.get(job_id) else {
            return false;
        };
        expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Installs the chat front's readiness check (once, at boot).
    pub fn set_front_check(&self, check: Box<dyn FrontCheck>) {
        let _ = self.front_check.set(check);
    }

    /// Installs the server of jobs' approval endpoints (once, at boot).
    pub fn set_approval_server(&self, server: ApprovalServer) {
        let _ = self.approval_server.set(server);
    }

    pub fn approval_server(&self) -> Option<ApprovalServer> {
        self.approval_server.get().copied()
    }

    /// A value a front keeps across restarts (chat routing, its poll offset), by key.
    pub async fn front_value(&self, key: &str) -> Option<String> {
        self.store.kv_get(key).await.ok().flatten()
    }

    pub async fn set_front_value(&self, key: &str, value: &str) -> Result<(), CoreError> {
        Ok(self.store.kv_set(key, value).await?)
    }

    /// Whether the store refuses writes (degraded mode).
    pub fn is_read_only(&self) -> bool {
        self.store.is_read_only()
    }

    /// Outbox events not yet delivered, after `cursor` (an event id), oldest first.
    pub async fn undelivered_events(
        &self,
        cursor: i64,
        limit: u64,
    ) -> Result<Vec<OutboxEvent>, CoreError> {
        Ok(self.store.undelivered_events(cursor, limit).await?)
    }

    /// Marks outbox events delivered (their message went out, or was refused for good).
    pub async fn mark_delivered(&self, ids: &[i64]) -> Result<(), CoreError> {
        Ok(self.store.mark_delivered(ids).await?)
    }

    /// A job by its whole id (the outbox names jobs so); `None` when unknown or unreadable.
    pub async fn job_by_id(&self, id: &str) -> Option<crate::domain::Job> {
        self.store.job(id).await.ok().flatten()
    }

    /// An approval request by id; `None` when unknown or unreadable.
    pub async fn approval(&self, id: &str) -> Option<crate::domain::Approval> {
        self.store.approval(id).await.ok().flatten()
    }

    /// Records the chat message that shows an approval request (its buttons are edited there later).
    pub async fn set_approval_message(&self, id: &str, chat_id: i64, message_id: i64) {
        if let Err(e) = self
            .store
            .set_approval_message(id, chat_id, message_id)
            .await
        {
            tracing::warn!(target: "televibe.approvals", approval_id = id, error = %e, "approval message not recorded");
        }
    }

    /// The process groups of the jobs running now (the control socket refuses their processes).
    pub async fn running_job_groups(&self) -> Result<Vec<i32>, CoreError> {
        Ok(self
            .store
            .unfinished_running_jobs()
            .await?
            .iter()
            .filter_map(|j| j.pgid)
            .collect())
    }

    /// Writes an audit record for a front's caller `by`.
    pub async fn record_audit(&self, event: &str, by: &str, subject: AuditSubject, details: Value) {
        self.audit
            .record(&self.store, event, by, subject, details)
            .await;
    }

    /// The session's changes against its base branch (uncommitted ones included) and its new files.
    pub async fn session_diff(&self, s: &crate::domain::Session) -> Result<String, CoreError> {
        let wt = std::path::Path::new(&s.worktree_path);
        if !wt.is_dir() {
            return Err(CoreError::new(
                crate::errors::ErrorCode::GitError,
                format!("the worktree of {} is missing", s.id),
                "close the session and open a new one on the branch",
            ));
        }
        Ok(self.git.diff(wt, &s.base_branch).await?)
    }

    /// The running child of the root with this name.
    pub async fn root_child(&self, name: &str) -> Result<ractor::ActorCell, CoreError> {
        let root = self
            .root()
            .ok_or_else(|| CoreError::internal("supervision tree not running"))?;
        ractor::call_t!(root, SupervisorMsg::Child, 2000, name.to_string())
            .map_err(|e| CoreError::internal(format!("supervision tree did not answer: {e}")))?
            .ok_or_else(|| CoreError::internal(format!("{name} is restarting; retry in a moment")))
    }

    /// Liveness: the root supervisor answers within 1000 ms (the spec's event-loop ping).
    pub async fn liveness(&self) -> Result<(), String> {
        let root = self.root().ok_or("supervision tree not started")?;
        ractor::call_t!(root, SupervisorMsg::Healthy, 1000)
            .map(|_| ())
            .map_err(|e| format!("supervision tree not responding: {e}"))
    }

    /// Readiness: database `SELECT 1`, Telegram `getMe` (5 s, its answer reused for 30 s), repos directory present.
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
        self.metrics.set_health("database", database == "ok");
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
        if self.config.raw.agent.sandbox == "none" {
            return crate::jobs::sandbox::UNCONFINED.to_string();
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
        let status = match crate::jobs::sandbox::check(crate::agent_path::find("bwrap").as_deref())
        {
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
            agent_command: self.config.raw.agent.command.clone(),
            agent_found: crate::agent_path::find(&self.config.raw.agent.command).is_some(),
            breakers: self.breakers.statuses(),
        }
    }
}

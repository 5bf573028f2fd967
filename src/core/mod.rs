//! The core: the handles every front and actor shares (config, store, metrics, breakers, the tree).
//!
//! Fronts (MCP, admin, later Telegram) call methods here; none of them touches the database or spawns processes.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ractor::ActorRef;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::audit::Audit;
use crate::breaker::Breakers;
use crate::config::Config;
use crate::errors::CoreError;
use crate::git::Git;
use crate::layout::Layout;
use crate::store::Store;
use crate::supervisor::{SupervisorMsg, TreeNode};
use crate::telemetry::Metrics;

/// One period of the Claude API being unavailable: when it began (unix ms) and the sessions told.
#[derive(Debug, Default)]
pub struct ClaudeNotice {
    pub since: i64,
    pub told: HashSet<String>,
}

pub mod approvals;
pub mod events;
mod fronts;
mod health;
pub mod jobs;
pub mod projects;
pub mod sessions;
pub use fronts::ApprovalServer;
pub use health::{FrontCheck, Health, Readiness, ReadinessChecks};

/// Shared state of one daemon.
pub struct Core {
    config: Arc<Config>,
    layout: Layout,
    store: Store,
    metrics: Arc<Metrics>,
    breakers: Arc<Breakers>,
    /// The readiness check of the chat front (Telegram's `getMe`), when one is configured.
    front_check: OnceLock<Box<dyn FrontCheck>>,
    /// The server of jobs' approval endpoints.
    approval_server: OnceLock<ApprovalServer>,
    git: Git,
    audit: Audit,
    started: Instant,
    /// Running session actors by session id (each registers itself when it starts).
    session_actors: Mutex<HashMap<String, ractor::ActorCell>>,
    /// Serialises session creation: limits, numbering and branch checks happen under it.
    session_create: tokio::sync::Mutex<()>,
    /// Approval calls waiting for a person.
    approval_waiters: Mutex<crate::core::approvals::waiting::Waiters>,
    /// Per-job secrets of the approval tool connections (job id → token), alive while the job runs.
    job_tokens: Mutex<HashMap<String, String>>,
    /// Jobs this daemon counts in `televibe_jobs_active` (so a gauge never goes below what it added).
    active_jobs: Mutex<HashSet<String>>,
    /// Run slots: `jobs.max_concurrent` permits, held by running jobs.
    job_slots: Arc<tokio::sync::Semaphore>,
    /// While the `claude_code` breaker keeps jobs waiting: when that began (unix ms, the notice's episode)
    /// and the sessions told so far. `None` once it is closed again.
    claude_notice: Mutex<Option<ClaudeNotice>>,
    /// Label sets of `televibe_sessions_active` set last time, so vanished ones go back to 0.
    session_gauge_labels: Mutex<HashSet<(String, String)>>,
    /// Cancelled when shutdown begins: readiness turns not-ready and the fronts stop taking work.
    shutdown: tokio_util::sync::CancellationToken,
    root: OnceLock<ActorRef<SupervisorMsg>>,
    /// The last sandbox check and when it ran (readiness asks often; bwrap is started at most once a minute).
    sandbox_checked: Mutex<Option<(std::time::Instant, String)>>,
    /// Counts outbox rows written, so whoever delivers or waits for them is woken instead of polling.
    outbox_seq: tokio::sync::watch::Sender<u64>,
    /// Where jobs get cgroups of their own, or why they cannot (found once, at the first job or at boot).
    cgroups: OnceLock<Result<crate::cgroup::Cgroups, String>>,
}

impl Core {
    pub fn new(config: Arc<Config>, store: Store, metrics: Arc<Metrics>) -> Arc<Core> {
        let breakers = Arc::new(Breakers::new(&config.breakers, metrics.clone()));
        let layout = Layout::new(&config.root);
        let job_slots = Arc::new(tokio::sync::Semaphore::new(config.jobs.max_concurrent));
        Arc::new(Core {
            git: Git::new(breakers.clone(), config.git_timeout),
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
            claude_notice: Mutex::new(None),
            session_gauge_labels: Mutex::new(HashSet::new()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            root: OnceLock::new(),
            sandbox_checked: Mutex::new(None),
            outbox_seq: tokio::sync::watch::Sender::new(0),
            cgroups: OnceLock::new(),
        })
    }

    /// Where jobs get cgroups of their own (CPU accounting, `jobs.memory_max`, one kill for all), or why
    /// they cannot here (the runner then counts the process tree).
    pub fn cgroups(&self) -> Result<&crate::cgroup::Cgroups, &str> {
        self.cgroups
            .get_or_init(|| crate::cgroup::Cgroups::detect(self.config.jobs.memory_max > 0))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Changes whenever an outbox row is written (see `emit`).
    pub fn outbox_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox_seq.subscribe()
    }

    pub(crate) fn outbox_written(&self) {
        self.outbox_seq.send_modify(|n| *n = n.wrapping_add(1));
    }

    // Accessors. The fronts may read the configuration, layout, metrics and breakers; the store, git, the
    // audit log and the domains' live state are for the core's own modules (tests/layering.rs keeps the
    // fronts off the store).
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn breakers(&self) -> &Arc<Breakers> {
        &self.breakers
    }

    /// When this daemon started.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn git(&self) -> &Git {
        &self.git
    }

    pub(crate) fn audit(&self) -> &Audit {
        &self.audit
    }

    pub(crate) fn session_actors(&self) -> &Mutex<HashMap<String, ractor::ActorCell>> {
        &self.session_actors
    }

    pub(crate) fn session_create(&self) -> &tokio::sync::Mutex<()> {
        &self.session_create
    }

    pub(crate) fn approval_waiters(&self) -> &Mutex<crate::core::approvals::waiting::Waiters> {
        &self.approval_waiters
    }

    pub(crate) fn active_jobs(&self) -> &Mutex<HashSet<String>> {
        &self.active_jobs
    }

    pub(crate) fn job_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.job_slots
    }

    pub(crate) fn claude_notice(&self) -> &Mutex<Option<ClaudeNotice>> {
        &self.claude_notice
    }

    pub(crate) fn session_gauge_labels(&self) -> &Mutex<HashSet<(String, String)>> {
        &self.session_gauge_labels
    }

    pub fn set_root(&self, root: ActorRef<SupervisorMsg>) {
        let _ = self.root.set(root);
    }

    pub fn root(&self) -> Option<&ActorRef<SupervisorMsg>> {
        self.root.get()
    }

    /// Shutdown begins: the one token every long-running loop of the fronts watches is cancelled.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The shutdown token, for loops that must stop taking work when shutdown begins.
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
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

    /// The running child of the root with this name.
    pub async fn root_child(&self, name: &str) -> Result<ractor::ActorCell, CoreError> {
        let root = self
            .root()
            .ok_or_else(|| CoreError::internal("supervision tree not running"))?;
        ractor::call_t!(root, SupervisorMsg::Child, 2000, name.to_string())
            .map_err(|e| CoreError::internal(format!("supervision tree did not answer: {e}")))?
            .ok_or_else(|| CoreError::internal(format!("{name} is restarting; retry in a moment")))
    }
}

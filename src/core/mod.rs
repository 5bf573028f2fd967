//! The core: the handle every front and actor shares (config, store, metrics, breakers, the tree) and its
//! services (`projects()`, `sessions()`, `jobs()`, `approvals()`, `events()`, `schedules()`), each owning
//! its state.
//!
//! Fronts (Telegram, MCP, HTTP) call the services; none of them touches the database or spawns agents.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ractor::ActorRef;

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

pub mod approvals;
pub mod cluster;
pub mod events;
mod fronts;
mod health;
pub mod jobs;
pub mod projects;
pub mod schedules;
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
    /// This core, for the services that start actors holding it.
    me: std::sync::Weak<Core>,
    /// What each service owns (private to the service's module).
    sessions_state: sessions::State,
    jobs_state: jobs::State,
    approvals_state: approvals::State,
    events_state: events::State,
    schedules_state: schedules::State,
    cluster_state: cluster::State,
    /// Cancelled when shutdown begins: readiness turns not-ready and the fronts stop taking work.
    shutdown: tokio_util::sync::CancellationToken,
    root: OnceLock<ActorRef<SupervisorMsg>>,
    /// The last sandbox check and when it ran (readiness asks often; bwrap is started at most once a minute).
    sandbox_checked: Mutex<Option<(std::time::Instant, String)>>,
    /// Where jobs get cgroups of their own, or why they cannot (found once, at the first job or at boot).
    cgroups: OnceLock<Result<crate::cgroup::Cgroups, String>>,
}

impl Core {
    pub fn new(config: Arc<Config>, store: Store, metrics: Arc<Metrics>) -> Arc<Core> {
        let breakers = Arc::new(Breakers::new(&config.breakers, metrics.clone()));
        let layout = Layout::new(&config.root);
        let jobs_state = jobs::State::new(config.jobs.max_concurrent);
        Arc::new_cyclic(|me| Core {
            me: me.clone(),
            sessions_state: Default::default(),
            jobs_state,
            approvals_state: Default::default(),
            events_state: Default::default(),
            schedules_state: Default::default(),
            cluster_state: Default::default(),
            git: Git::new(
                breakers.clone(),
                config.git_timeout,
                config.git_remote_timeout,
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
            shutdown: tokio_util::sync::CancellationToken::new(),
            root: OnceLock::new(),
            sandbox_checked: Mutex::new(None),
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

    /// The cluster service: this node, its role, the other nodes (see `core/cluster/`).
    pub fn cluster(&self) -> cluster::Cluster<'_> {
        cluster::Cluster { core: self }
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

    /// This core as its services' actors hold it.
    pub(crate) fn arc(&self) -> Arc<Core> {
        self.me.upgrade().expect("the core outlives its calls")
    }

    // The services. Each owns its state; its methods are its API.
    pub fn projects(&self) -> projects::Projects<'_> {
        projects::Projects { core: self }
    }

    pub fn sessions(&self) -> sessions::Sessions<'_> {
        sessions::Sessions { core: self }
    }

    pub fn jobs(&self) -> jobs::Jobs<'_> {
        jobs::Jobs { core: self }
    }

    pub fn approvals(&self) -> approvals::Approvals<'_> {
        approvals::Approvals { core: self }
    }

    pub fn events(&self) -> events::Events<'_> {
        events::Events { core: self }
    }

    pub fn schedules(&self) -> schedules::Schedules<'_> {
        schedules::Schedules { core: self }
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

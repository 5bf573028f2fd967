//! `televibe serve`: boot in order (directories, logs, store, tree), run until a signal, stop gracefully.
//!
//! Boot order: the store is opened, checked and migrated before any actor starts. Shutdown order: readiness
//! turns not-ready first, systemd is told STOPPING, then the root stops its children in reverse start order.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::actors::{
    backup::BackupActor, breakers::BreakersActor, http::HttpActor, janitor::Janitor,
    scheduler::SchedulerActor, store::StoreActor,
};
use crate::config::Config;
use crate::core::Core;
use crate::layout::Layout;
use crate::store::{Store, StoreOptions};
use crate::supervisor::{ChildSpec, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::telemetry::Metrics;
use crate::{logging, sdnotify};

/// Why `serve` ended.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Boot(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    BudgetExhausted(String),
    /// Several machines: this node was taken for gone, or another took its name (exit 4).
    #[error("{0}")]
    Fenced(String),
}

impl ServeError {
    /// Process exit code: 1 for boot problems (config, files, database), 3 when supervision gave up.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::BudgetExhausted(_) => 3,
            ServeError::Fenced(_) => crate::core::cluster::actor::FENCED_EXIT as u8,
            _ => 1,
        }
    }
}

/// The root's children in start order (they stop in reverse).
/// `boot_lock`: on a shared store, the leader's lock when this node took it before the tree started (then the
/// leader's children start with the tree, in their usual places, as on one node).
pub fn root_children(
    core: &Arc<Core>,
    boot_lock: Option<crate::store::LeaderLock>,
) -> Vec<ChildSpec> {
    let c = core.clone();
    let store = ChildSpec::new("store", move || (StoreActor { core: c.clone() }, ()));
    let c = core.clone();
    let breakers = ChildSpec::new("breakers", move || (BreakersActor { core: c.clone() }, ()));
    let c = core.clone();
    let http = ChildSpec::new("http", move || (HttpActor { core: c.clone() }, ()));
    let c = core.clone();
    let janitor = ChildSpec::new("janitor", move || (Janitor { core: c.clone() }, ()));
    let c = core.clone();
    let backup = ChildSpec::new("backup", move || (BackupActor { core: c.clone() }, ()));
    let c = core.clone();
    let sessions = ChildSpec::new("sessions", move || {
        (
            Supervisor,
            SupervisorArgs {
                name: "sessions".into(),
                policy: c.config().supervision,
                children: Vec::new(),
                metrics: Some(c.metrics().clone()),
                exhausted: None,
                initial: Some(crate::core::sessions::initial_sessions(c.clone())),
            },
        )
    })
    .supervisor();
    let c = core.clone();
    // After `sessions`: a run missed while the daemon was down is queued once the session actors exist.
    let scheduler = ChildSpec::new("scheduler", move || {
        (SchedulerActor { core: c.clone() }, ())
    });
    let c = core.clone();
    let socket = ChildSpec::new("socket", move || {
        (crate::mcp::socket::SocketActor { core: c.clone() }, ())
    });
    let mut children = vec![store, breakers, http, janitor];
    // What one node at a time runs: on a store several nodes share, the `cluster` actor starts them when
    // it holds the leader's lock (and stops them when it loses it).
    let mut leader = vec![backup, scheduler];
    // Telegram's actors exist only with a bot token.
    if let Some(token) = &core.config().telegram_token {
        let link = crate::telegram::Link::new(crate::telegram::client::TelegramClient::new(
            &core.config().telegram.api_url,
            token,
            core.breakers().clone(),
        ));
        // Readiness reads what the poller and the notifier saw (`telegram::LiveCheck`).
        core.set_front_check(Box::new(crate::telegram::LiveCheck::new(
            link.client.clone(),
            crate::telegram::TelegramProbe::new(&core.config().telegram.api_url, token),
        )));
        let (c, l) = (core.clone(), link.clone());
        leader.push(ChildSpec::new("notifier", move || {
            (
                crate::telegram::notifier::Notifier {
                    core: c.clone(),
                    link: l.clone(),
                },
                (),
            )
        }));
        let c = core.clone();
        leader.push(ChildSpec::new("telegram", move || {
            (
                crate::telegram::poller::Poller {
                    core: c.clone(),
                    link: link.clone(),
                },
                (),
            )
        }));
    }
    if core.cluster().shared() {
        let leads = boot_lock.is_some();
        let held = Arc::new(std::sync::Mutex::new(boot_lock));
        let c = core.clone();
        let names = leader.clone();
        let cluster = ChildSpec::new("cluster", move || {
            (
                crate::core::cluster::actor::ClusterActor {
                    core: c.clone(),
                    leader_children: names.clone(),
                    // Only the first start finds the lock taken at boot.
                    boot_lock: held.clone(),
                },
                (),
            )
        })
        .with_below(Arc::new(|cell| {
            Box::pin(async move {
                let r: ractor::ActorRef<crate::core::cluster::actor::ClusterMsg> = cell.into();
                ractor::call_t!(r, crate::core::cluster::actor::ClusterMsg::Below, 1000)
                    .unwrap_or_default()
            })
        }));
        if leads {
            let mut rest = leader.into_iter();
            children.extend(rest.next());
            children.push(sessions);
            children.push(cluster);
            children.extend(rest);
        } else {
            children.push(sessions);
            children.push(cluster);
        }
    } else {
        core.metrics().cluster_leader.set(1);
        core.metrics().cluster_nodes.set(1);
        // One node: the tree as it always was (backup before sessions, the scheduler after them).
        let mut rest = leader.into_iter();
        children.extend(rest.next());
        children.push(sessions);
        children.extend(rest);
    }
    children.push(socket);
    children
}

/// On a shared store, the leader's lock tried once before the tree starts: a node that leads from the start
/// runs the leader's children in the tree's usual order (the scheduler's first pass before the socket is
/// bound, as on one node).
/// A node whose name another running node has is refused here (exit 1).
async fn boot_lock(core: &Core) -> Result<Option<crate::store::LeaderLock>, ServeError> {
    let Some(dial) = core.store().dial() else {
        return Ok(None);
    };
    core.cluster()
        .register()
        .await
        .map_err(|e| ServeError::Boot(format!("{}: {}", e.message, e.suggestion)))?;
    let mut lock = crate::store::LeaderLock::new();
    match lock.try_take(&dial).await {
        Ok(true) => Ok(Some(lock)),
        Ok(false) => Ok(None),
        Err(e) => {
            tracing::warn!(target: "televibe.cluster", error = %e, "leader's lock not tried at start");
            Ok(None)
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT (Ok) or a fatal condition (Err).
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let layout = Layout::new(&config.root);
    layout.create().map_err(|e| {
        ServeError::Boot(format!(
            "cannot prepare root {}: {e}",
            config.root.display()
        ))
    })?;
    // A missing state.db on a root that held one is a loss to repair, not a first start: an empty database
    // would forget every project, session and job.
    let earlier = match config.store.url {
        None => crate::store::file::earlier_state(&layout),
        // The state is the server's: no file under the root to miss.
        Some(_) => Vec::new(),
    };
    if !earlier.is_empty() {
        return Err(ServeError::Boot(format!(
            "{} is missing but this root held state before ({}); refusing to start on an empty database. \
             Restore the newest backup with `televibe backup restore latest`, or rebuild projects and sessions \
             from the disk with `televibe reconstruct`, then start again",
            layout.state_db().display(),
            earlier.join(", ")
        )));
    }
    // Run directories of jobs of an earlier run (approval sockets, copies of refs): those jobs are over.
    let _ = std::fs::remove_dir_all(layout.orchestrator().join("run"));
    let _ = std::fs::remove_dir_all(config.root.join("run"));
    let _log_guard = logging::init_daemon(
        &layout.logs(),
        &config.log_filter,
        &config.logging.stderr,
        config.logging.max_size_bytes,
    )
    .map_err(|e| {
        ServeError::Boot(format!(
            "cannot open logs in {}: {e}",
            layout.logs().display()
        ))
    })?;
    let result = run(config, layout).await;
    if let Err(e) = &result {
        tracing::error!(target: "televibe.daemon", critical = true, error = %e, "Daemon stopped on a fatal error");
    }
    result
}

async fn run(config: Arc<Config>, layout: Layout) -> Result<(), ServeError> {
    // Agents run as this user: keep them from reading this process's memory and environment
    // (`/proc/<pid>/environ` holds the bot token when it came from the environment).
    // SAFETY: prctl(PR_SET_DUMPABLE) only changes a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    tracing::info!(
        target: "televibe.daemon",
        version = env!("CARGO_PKG_VERSION"),
        root = %config.root.display(),
        config_file = %config.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(built-in defaults)".into()),
        "Daemon starting"
    );
    if config.root_is_fallback {
        // The default root was not writable for this user: say where the state goes instead.
        eprintln!(
            "televibe: /projects is not writable for this user; using root {} (set root or TELEVIBE_ROOT to choose)",
            config.root.display()
        );
    }
    if config.telegram_token.is_none() {
        tracing::warn!(target: "televibe.daemon", "Telegram disabled: no bot token configured (set TELEVIBE_TELEGRAM__TOKEN)");
    }
    if crate::agent_path::find(&config.agent.command).is_none() {
        tracing::warn!(target: "televibe.daemon", command = %config.agent.command, "Agent command not found; jobs cannot run until it is installed (agent.command)");
    }
    if !config.agent.sandboxed {
        tracing::warn!(target: "televibe.daemon", "Sandbox disabled (agent.sandbox = \"none\"): agents run unconfined and can read and write everything this user can, the daemon's state included");
    } else if !config.agent.network_allowlist {
        tracing::warn!(target: "televibe.daemon", "Network open (agent.network = \"open\"): jobs share this machine's network, its loopback services and abstract sockets included");
    }
    if config.agent.sandboxed
        && let Err(e) =
            crate::core::jobs::sandbox::check(crate::agent_path::find("bwrap").as_deref(), &config)
    {
        tracing::error!(target: "televibe.daemon", error = %e, "Sandbox unavailable: jobs will fail until bubblewrap works (or agent.sandbox = \"none\")");
    }
    // Held for the daemon's whole life: restore, reconstruct and an offline backup refuse while it is
    // (even before the socket is bound), and a second daemon on the same root stops here.
    let _state_lock =
        crate::lock::StateLock::acquire(&layout.orchestrator()).map_err(ServeError::Boot)?;
    // What a killed restore, reconstruct or fetch left (each a whole database copy): they hold the state
    // lock while they work, and the daemon holds it now, so none of them is running.
    for (dir, prefixes) in [
        (layout.orchestrator(), &[".restore-", ".reconstruct-"][..]),
        (layout.backups(), &[".fetch-"][..]),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if prefixes.iter().any(|p| name.starts_with(p))
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let metrics = Arc::new(Metrics::new());
    let location = config.store.location(layout.state_db());
    let store = Store::open_at(
        &location,
        StoreOptions {
            busy_timeout: config.store.busy_timeout,
            ..Default::default()
        },
        metrics.clone(),
    )
    .await?;
    tracing::info!(target: "televibe.store", engine = store.engine().as_str(), path = %location.shown(), "State database open, integrity ok, migrations applied");
    let core = Core::new(config.clone(), store, metrics.clone());
    match core.cgroups() {
        Ok(g) if config.jobs.memory_max > 0 && !g.memory => {
            tracing::warn!(target: "televibe.daemon", base = %g.base().display(), "Jobs get cgroups for CPU accounting, but no memory controller: jobs.memory_max is not enforced (the unit's Delegate=yes on cgroup v2 gives it)")
        }
        Ok(g) => {
            tracing::info!(target: "televibe.daemon", base = %g.base().display(), memory_limit = g.memory, "Jobs run in cgroups of their own")
        }
        Err(e) => {
            tracing::warn!(target: "televibe.daemon", reason = %e, "Jobs cannot get cgroups of their own: hang detection counts each job's process tree, jobs.memory_max is not enforced")
        }
    }
    // The core names no front: the fronts' parts it calls are installed here.
    core.set_approval_server(|listener, core, job_id| {
        Box::pin(crate::mcp::approval_endpoint::serve_endpoint(
            listener, core, job_id,
        ))
    });
    let boot_lock = boot_lock(&core).await?;
    let (exhausted_tx, mut exhausted_rx) = mpsc::unbounded_channel();
    let (root, root_handle) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: "root".into(),
            policy: config.supervision,
            children: root_children(&core, boot_lock),
            metrics: Some(metrics),
            exhausted: Some(exhausted_tx),
            initial: None,
        },
    )
    .await
    .map_err(|e| ServeError::Boot(format!("supervision tree failed to start: {e}")))?;
    core.set_root(root.clone());
    sdnotify::notify("READY=1");
    tracing::info!(target: "televibe.daemon", socket = %config.socket_path.display(), http = %config.http_listen, "Daemon ready");
    let watchdog =
        sdnotify::watchdog_interval().map(|every| tokio::spawn(watchdog_loop(root.clone(), every)));

    let mut term = signal(SignalKind::terminate()).map_err(|e| ServeError::Boot(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| ServeError::Boot(e.to_string()))?;
    let mut root_handle = root_handle;
    let cluster = core.cluster();
    let outcome = tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        why = exhausted_rx.recv() => Err(ServeError::BudgetExhausted(why.unwrap_or_else(|| "root supervisor gave up".into()))),
        _ = &mut root_handle => Err(ServeError::BudgetExhausted("root supervisor stopped unexpectedly".into())),
        why = cluster.fenced() => Err(ServeError::Fenced(why)),
    };
    if let Some(w) = watchdog {
        w.abort();
    }
    match outcome {
        Ok(signal_name) => {
            shutdown(&core, &root, signal_name).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), root_handle).await;
            core.store().clone().close().await;
            tracing::info!(target: "televibe.daemon", "Daemon stopped");
            Ok(())
        }
        Err(e) => {
            sdnotify::notify("STOPPING=1");
            Err(e)
        }
    }
}

/// How long a shutdown waits for the notifier to send what is queued (the rest stays in the outbox).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Graceful stop, in order: not ready (the shutdown token is cancelled: readiness answers 503 and the
/// fronts take no new work), the fronts stopped, the notifier drained, then the other children in reverse
/// start order.
async fn shutdown(core: &Arc<Core>, root: &ActorRef<SupervisorMsg>, signal_name: &str) {
    tracing::info!(target: "televibe.daemon", signal = signal_name, "Shutting down: readiness now reports not_ready");
    core.begin_shutdown();
    sdnotify::notify("STOPPING=1");
    let d = &core.config().debug;
    if d.test_hooks && !d.shutdown_hold.is_zero() {
        tokio::time::sleep(d.shutdown_hold).await;
    }
    let fronts = vec!["socket".to_string(), "telegram".to_string()];
    let _ = ractor::call_t!(root, SupervisorMsg::StopChildren, 30_000, fronts);
    if let Ok(cell) = core.root_child("notifier").await {
        let notifier: ActorRef<crate::telegram::notifier::NotifierMsg> = cell.into();
        let limit_ms = DRAIN_LIMIT.as_millis() as u64 + 5_000;
        match ractor::call_t!(
            notifier,
            crate::telegram::notifier::NotifierMsg::Drain,
            limit_ms,
            DRAIN_LIMIT
        ) {
            Ok(0) => {}
            Ok(left) => {
                tracing::warn!(target: "televibe.daemon", left, "Shutdown: messages left in the outbox for the next start")
            }
            Err(e) => {
                tracing::warn!(target: "televibe.daemon", error = %e, "Shutdown: the notifier did not drain")
            }
        }
    }
    let _ = ractor::call_t!(root, SupervisorMsg::Shutdown, 60_000);
    root.stop(Some("shutdown".into()));
}

/// Pings the systemd watchdog only while every child of the root runs.
async fn watchdog_loop(root: ActorRef<SupervisorMsg>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let healthy = matches!(
            ractor::call_t!(root, SupervisorMsg::Healthy, 1000),
            Ok(true)
        );
        if healthy {
            sdnotify::notify("WATCHDOG=1");
        } else {
            tracing::warn!(target: "televibe.daemon", "Supervision tree unhealthy: withholding the watchdog ping");
        }
    }
}

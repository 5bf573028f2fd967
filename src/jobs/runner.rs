//! `job:<id>`: runs one agent process for one job, child of its session actor.
//!
//! It owns the process group, the job log, the stream parser, the heartbeat and the timers. Readers of
//! stdout and stderr write the log and send parsed events here; the runner turns them into job events.
//! When the process has exited and both streams are closed, the runner writes the outcome and stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::OwnedSemaphorePermit;

use super::log::JobLog;
use super::outcome::{StopReason, decide};
use super::process::{self, AgentCommand};
use super::sandbox::{self, SandboxPlan};
use super::stream::{ResultEvent, StreamEvent, parse_line, tool_target};
use crate::breaker::BreakerPermit;
use crate::core::Core;
use crate::domain::{Job, Project, Session};
use crate::events::{Event, Scope};
use crate::jobs::Ending;
use crate::sessions::actor::SessionMsg;
use crate::supervisor::ChildMessage;

pub struct Runner {
    pub core: Arc<Core>,
}

pub struct RunnerArgs {
    pub job: Job,
    pub session: Session,
    pub project: Project,
    pub permit: OwnedSemaphorePermit,
    /// The `claude_code` permit this job runs under (a probe when the breaker is half-open).
    pub breaker: Option<BreakerPermit>,
    pub session_ref: ActorRef<SessionMsg>,
}

pub enum RunnerMsg {
    Events(Vec<StreamEvent>),
    StreamClosed,
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    Tick,
    HardTimeout,
    Stop(StopReason),
    KillNow,
    Finalize,
    /// Failure drill: the handler blocks, so the runner stops heart-beating like a wedged one.
    Stall,
    /// The worktree's changes are measured; write the outcome.
    Complete(Option<(Vec<String>, Option<String>)>),
    Panic,
}

impl ChildMessage for RunnerMsg {
    fn injected_panic() -> Self {
        RunnerMsg::Panic
    }
}

pub struct RunnerState {
    job: Job,
    session: Session,
    project: Project,
    pgid: i32,
    log: Arc<JobLog>,
    _permit: OwnedSemaphorePermit,
    breaker: Option<BreakerPermit>,
    session_ref: ActorRef<SessionMsg>,
    last_output_ms: Arc<AtomicI64>,
    /// The group's CPU ticks at recent checks, oldest first, covering about `CPU_WINDOW`.
    cpu_samples: std::collections::VecDeque<(Instant, u64)>,
    last_cpu_change: Instant,
    started: Instant,
    stop: Option<StopReason>,
    exit: Option<(Option<i32>, Option<i32>)>,
    streams_open: u8,
    result: Option<ResultEvent>,
    last_text: Option<String>,
    tools: HashMap<String, (String, String)>,
    malformed: u64,
    finishing: bool,
    finished: bool,
    endpoint: JobEndpoint,
}

/// The job's approval endpoint and run directory: the listener stops and the directory (socket, copy of
/// the refs) goes when the runner's state drops, so the endpoint dies with the job.
struct JobEndpoint {
    _serve: tokio_util::task::AbortOnDropHandle<()>,
    run_dir: PathBuf,
    sandboxed: bool,
}

impl Drop for JobEndpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Binds the job's approval socket (0600, in a 0700 directory of its run directory) and serves it.
fn open_endpoint(
    core: &Arc<Core>,
    job_id: &str,
    run_dir: &std::path::Path,
) -> Result<(std::path::PathBuf, tokio_util::task::AbortOnDropHandle<()>), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = sandbox::approval_dir(run_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let server = core
        .approval_server()
        .ok_or("no approval endpoint server is installed")?;
    let serve = tokio::spawn(server(listener, core.clone(), job_id.to_string()));
    Ok((path, tokio_util::task::AbortOnDropHandle::new(serve)))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The argv after the program: stream-json, resume, then `agent.extra_args`.
/// The MCP server a job's Claude starts: `televibe mcp --job <id>` with the job's secret, which sees
/// exactly one tool, `approval_prompt`, for this job only.
pub fn mcp_config(job_id: &str, token: &str, endpoint: &std::path::Path) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "televibe".into());
    serde_json::json!({"mcpServers": {"televibe": {
        "type": "stdio",
        "command": exe,
        "args": ["mcp", "--job", job_id, "--socket", endpoint.display().to_string()],
        "env": {"TELEVIBE_JOB_TOKEN": token},
    }}})
    .to_string()
}

/// The tool name Claude Code calls for permissions.
pub const PERMISSION_TOOL: &str = "mcp__televibe__approval_prompt";

/// The agent's argv. Unless the project is trusted, repository settings are not loaded: no hooks or
/// MCP servers from `.claude/` or `.mcp.json` (CLAUDE.md, being text, still is).
pub fn agent_args(
    core: &Core,
    session: &Session,
    job_id: &str,
    token: &str,
    endpoint: &std::path::Path,
    trusted: bool,
) -> Vec<String> {
    let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
        .map(String::from)
        .to_vec();
    args.extend([
        "--mcp-config".to_string(),
        mcp_config(job_id, token, endpoint),
    ]);
    if !trusted {
        args.extend(["--strict-mcp-config", "--setting-sources", "user"].map(String::from));
    }
    args.extend([
        "--permission-prompt-tool".to_string(),
        PERMISSION_TOOL.to_string(),
    ]);
    if let Some(conv) = &session.conversation_id {
        args.push("--resume".into());
        args.push(conv.clone());
    }
    args.extend(core.config().agent.extra_args.iter().cloned());
    args
}

/// CPU is judged over a window of recent checks: half the hang timeout, at most this long.
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// CPU ticks a second (of `CLK_TCK` = 100) that count as progress: 2 % of a core. Less is an agent idling on
/// a stalled connection (its timers and keep-alives tick), which must not keep a hung job alive.
const BUSY_TICKS_PER_SEC: f64 = 2.0;

/// Records the group's CPU `ticks` at `now`; whether it used at least `BUSY_TICKS_PER_SEC` over the last
/// `window`.
fn cpu_busy(
    samples: &mut std::collections::VecDeque<(Instant, u64)>,
    window: Duration,
    now: Instant,
    ticks: u64,
) -> bool {
    samples.push_back((now, ticks));
    while samples.len() > 2 && now.duration_since(samples[1].0) >= window {
        samples.pop_front();
    }
    let (t0, c0) = samples[0];
    let span = now.duration_since(t0).as_secs_f64();
    // Ticks can fall when a process of the group exits: that is no progress.
    let used = ticks.saturating_sub(c0) as f64;
    span > 0.0 && used > 0.0 && used >= span * BUSY_TICKS_PER_SEC
}

impl Actor for Runner {
    type Msg = RunnerMsg;
    type State = RunnerState;
    type Arguments = RunnerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RunnerMsg>,
        mut a: RunnerArgs,
    ) -> Result<RunnerState, ActorProcessingErr> {
        let core = &self.core;
        let program = crate::agent_path::find(&core.config().agent.command).ok_or_else(|| {
            format!(
                "agent command {:?} not found (agent.command)",
                core.config().agent.command
            )
        })?;
        let worktree = PathBuf::from(&a.session.worktree_path);
        let base_commit = core.git().head_commit(&worktree).await.ok().flatten();
        a.job.base_commit = base_commit.clone();
        let log_path = core.layout().job_logs().join(format!("{}.log", a.job.id));
        let log = Arc::new(JobLog::create(&log_path, core.config().jobs.max_log_bytes)?);
        let mut env = vec![
            ("TELEVIBE_PROJECT_ID".to_string(), a.project.id.clone()),
            ("TELEVIBE_SESSION_ID".to_string(), a.session.id.clone()),
            ("TELEVIBE_JOB_ID".to_string(), a.job.id.clone()),
            ("TELEVIBE_BRANCH".to_string(), a.session.branch.clone()),
            (
                "TELEVIBE_WORKSPACE".to_string(),
                a.session.worktree_path.clone(),
            ),
        ];
        env.extend(
            core.config()
                .agent
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let run_dir = sandbox::run_dir(&core.layout().orchestrator(), &a.job.id);
        let plan = self.sandbox_plan(&a, &program, &run_dir, base_commit.as_deref())?;
        if let Some(plan) = &plan {
            env.extend(plan.env());
        }
        let (endpoint_path, serve) = open_endpoint(core, &a.job.id, &run_dir)?;
        let endpoint = JobEndpoint {
            _serve: serve,
            run_dir,
            sandboxed: plan.is_some(),
        };
        let token = core.issue_job_token(&a.job.id);
        let trusted = a.project.trusted || core.config().trusted_projects.contains(&a.project.id);
        let cmd = AgentCommand {
            program: &program,
            args: agent_args(core, &a.session, &a.job.id, &token, &endpoint_path, trusted),
            cwd: &worktree,
            env,
            sandbox: plan.as_ref(),
        };
        let mut child =
            process::spawn(&cmd).map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child
            .id()
            .ok_or("agent exited before it could be tracked")? as i32;
        let last_output_ms = Arc::new(AtomicI64::new(now_ms()));

        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let prompt = a.job.instruction.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(prompt.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (me, log2, last) = (myself.clone(), log.clone(), last_output_ms.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(Some(line)) = read_line_capped(&mut reader, &mut buf).await {
                last.store(now_ms(), Ordering::Relaxed);
                log2.line("stdout", &line);
                let events = parse_line(&line);
                if !events.is_empty() {
                    let _ = me.cast(RunnerMsg::Events(events));
                }
            }
            let _ = me.cast(RunnerMsg::StreamClosed);
        });
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (me, log2, last) = (myself.clone(), log.clone(), last_output_ms.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            while let Ok(Some(line)) = read_line_capped(&mut reader, &mut buf).await {
                last.store(now_ms(), Ordering::Relaxed);
                log2.line("stderr", &line);
            }
            let _ = me.cast(RunnerMsg::StreamClosed);
        });
        let me = myself.clone();
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().await.ok();
            let _ = me.cast(RunnerMsg::Exited {
                code: status.and_then(|s| s.code()),
                signal: status.and_then(|s| s.signal()),
            });
        });

        let marked = core
            .store()
            .mark_job_running(&a.job.id, pid, &log_path.display().to_string(), base_commit)
            .await;
        match marked {
            Ok(true) => {}
            // Canceled or killed while starting, or the store refused: the agent must not outlive this.
            Ok(false) => {
                process::signal_group(pid, libc::SIGKILL);
                return Err(format!("job {} was ended before its agent started", a.job.id).into());
            }
            Err(e) => {
                process::signal_group(pid, libc::SIGKILL);
                return Err(e.into());
            }
        }
        let _ = a
            .session_ref
            .cast(SessionMsg::RunnerStarted(a.job.id.clone(), pid));
        core.job_started(&a.job, &a.session, pid).await;
        let jobs = &core.config().jobs;
        // Heartbeats come well inside the session's limit; hang checks a few times per hang timeout.
        let tick = (jobs.hang_timeout / 4)
            .min(jobs.heartbeat_timeout / 3)
            .clamp(Duration::from_millis(250), Duration::from_secs(5));
        myself.send_interval(tick, || RunnerMsg::Tick);
        myself.send_after(jobs.hard_timeout, || RunnerMsg::HardTimeout);
        tracing::info!(target: "televibe.runner", job_id = %a.job.id, session_id = %a.session.id, project_id = %a.project.id, pid, instruction_preview = %preview(&a.job.instruction), "Job started");
        Ok(RunnerState {
            job: a.job,
            session: a.session,
            project: a.project,
            pgid: pid,
            log,
            _permit: a.permit,
            breaker: a.breaker,
            session_ref: a.session_ref,
            last_output_ms,
            cpu_samples: std::collections::VecDeque::new(),
            last_cpu_change: Instant::now(),
            started: Instant::now(),
            stop: None,
            exit: None,
            streams_open: 2,
            result: None,
            last_text: None,
            tools: HashMap::new(),
            malformed: 0,
            finishing: false,
            finished: false,
            endpoint,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RunnerMsg>,
        msg: RunnerMsg,
        st: &mut RunnerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RunnerMsg::Events(events) => self.on_events(st, events).await,
            RunnerMsg::StreamClosed => {
                st.streams_open = st.streams_open.saturating_sub(1);
                if st.streams_open == 0 && st.exit.is_some() {
                    self.finalize(&myself, st).await;
                }
            }
            RunnerMsg::Exited { code, signal } => {
                st.exit = Some((code, signal));
                // The leader is gone; whatever it left in its group goes with it.
                process::signal_group(st.pgid, libc::SIGKILL);
                if st.streams_open == 0 {
                    self.finalize(&myself, st).await;
                } else {
                    myself.send_after(Duration::from_secs(3), || RunnerMsg::Finalize);
                }
            }
            RunnerMsg::Tick => self.on_tick(&myself, st).await,
            RunnerMsg::HardTimeout => begin_stop(&myself, st, StopReason::Timeout, self.grace()),
            RunnerMsg::Stop(reason) => begin_stop(&myself, st, reason, self.grace()),
            RunnerMsg::KillNow => {
                process::signal_group(st.pgid, libc::SIGKILL);
            }
            RunnerMsg::Finalize => self.finalize(&myself, st).await,
            RunnerMsg::Complete(changes) => self.complete(&myself, st, changes).await,
            RunnerMsg::Panic => panic!("injected panic in runner of job {}", st.job.id),
            RunnerMsg::Stall => tokio::time::sleep(Duration::from_secs(24 * 3600)).await,
        }
        Ok(())
    }
}

fn begin_stop(
    myself: &ActorRef<RunnerMsg>,
    st: &mut RunnerState,
    reason: StopReason,
    grace: Duration,
) {
    if st.stop.is_some() || st.exit.is_some() {
        return;
    }
    tracing::warn!(target: "televibe.runner", job_id = %st.job.id, reason = ?reason, "Stopping job: SIGTERM to its process group");
    st.stop = Some(reason);
    process::terminate_signal(st.pgid);
    myself.send_after(grace, || RunnerMsg::KillNow);
}

/// Longest line kept whole; the rest of a longer line is dropped (the log and parser get the start).
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The next line, lossily decoded (agents may print invalid UTF-8) and capped at `MAX_LINE_BYTES`,
/// so a reader never stops draining the pipe and never holds an unbounded line.
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    buf.clear();
    let mut seen_any = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(seen_any.then(|| {
                String::from_utf8_lossy(buf)
                    .trim_end_matches('\r')
                    .to_string()
            }));
        }
        seen_any = true;
        let (chunk, consumed, done) = match available.iter().position(|b| *b == b'\n') {
            Some(pos) => (&available[..pos], pos + 1, true),
            None => (available, available.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(consumed);
        if done {
            return Ok(Some(
                String::from_utf8_lossy(buf)
                    .trim_end_matches('\r')
                    .to_string(),
            ));
        }
    }
}

pub fn preview(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 60 {
        format!("{}...", one.chars().take(57).collect::<String>())
    } else {
        one
    }
}

impl Runner {
    /// The job's sandbox, or `None` when the operator set `agent.sandbox = "none"`. A job that should
    /// be sandboxed but cannot be does not start.
    fn sandbox_plan(
        &self,
        a: &RunnerArgs,
        program: &std::path::Path,
        run_dir: &std::path::Path,
        head: Option<&str>,
    ) -> Result<Option<SandboxPlan>, String> {
        let config = &self.core.config();
        if !config.agent.sandboxed {
            return Ok(None);
        }
        let bwrap = crate::agent_path::find("bwrap").ok_or(
            "cannot sandbox the agent: bwrap is not installed (Debian package bubblewrap); \
             agent.sandbox = \"none\" runs agents unconfined",
        )?;
        let plan = sandbox::plan_for(
            config,
            bwrap,
            &a.project.id,
            std::path::Path::new(&a.project.repo_path),
            std::path::Path::new(&a.session.worktree_path),
            run_dir.to_path_buf(),
            program,
        )
        .map_err(|e| format!("cannot sandbox the agent: {e}"))?;
        plan.prepare(&a.session.branch, head)
            .map_err(|e| format!("cannot sandbox the agent: {e}"))?;
        Ok(Some(plan))
    }

    fn grace(&self) -> Duration {
        self.core.config().jobs.kill_grace
    }

    async fn on_events(&self, st: &mut RunnerState, events: Vec<StreamEvent>) {
        let core = &self.core;
        for ev in events {
            match ev {
                StreamEvent::Init { session_id, .. } => {
                    if st.session.conversation_id.as_deref() != Some(session_id.as_str()) {
                        let _ = core
                            .store()
                            .set_conversation_id(&st.session.id, &session_id)
                            .await;
                        st.session.conversation_id = Some(session_id);
                    }
                }
                StreamEvent::ToolUse { id, name, input } => {
                    let target = tool_target(&name, &input);
                    core.emit(
                        Scope::job(&st.job, &st.session),
                        Event::ToolStarted {
                            tool: name.clone(),
                            target: target.clone(),
                            tool_use_id: id.clone(),
                        },
                    )
                    .await;
                    st.tools.insert(id, (name, target));
                }
                StreamEvent::ToolResult {
                    tool_use_id,
                    is_error,
                } => {
                    let (name, target) = st.tools.get(&tool_use_id).cloned().unwrap_or_default();
                    core.emit(
                        Scope::job(&st.job, &st.session),
                        Event::ToolCompleted {
                            tool: name,
                            target,
                            tool_use_id,
                            is_error,
                        },
                    )
                    .await;
                }
                StreamEvent::AssistantText(t) => st.last_text = Some(t),
                StreamEvent::Result(r) => st.result = Some(r),
                StreamEvent::ApiRetry {
                    attempt,
                    max_retries,
                    error_status,
                    error,
                } => {
                    tracing::warn!(target: "televibe.runner", job_id = %st.job.id, attempt, max_retries, error_status, "Agent retries the model API");
                    // The phone shows it: a job that waits on an overloaded API is not stuck.
                    core.emit(
                        Scope::job(&st.job, &st.session),
                        Event::ApiRetry {
                            attempt,
                            max_retries,
                            error_status,
                            error,
                        },
                    )
                    .await;
                }
                StreamEvent::PermissionDenied { tool_name, .. } => {
                    tracing::info!(target: "televibe.runner", job_id = %st.job.id, tool = %tool_name, "Agent was denied a tool");
                }
                StreamEvent::Malformed(_) => {
                    st.malformed += 1;
                    if st.malformed <= 3 {
                        tracing::warn!(target: "televibe.runner", job_id = %st.job.id, "Malformed line from the agent (kept in the job log)");
                    }
                }
                StreamEvent::Unknown(_) => {}
            }
        }
    }

    async fn on_tick(&self, myself: &ActorRef<RunnerMsg>, st: &mut RunnerState) {
        let core = &self.core;
        let _ = core.store().job_heartbeat(&st.job.id).await;
        let _ = st
            .session_ref
            .cast(SessionMsg::Heartbeat(st.job.id.clone()));
        core.metrics().set_log_bytes(&st.job.id, st.log.bytes());
        if st.exit.is_some() || st.stop.is_some() {
            return;
        }
        let now = Instant::now();
        let hang = core.config().jobs.hang_timeout;
        let window = (hang / 2).clamp(Duration::from_secs(1), CPU_WINDOW);
        if cpu_busy(
            &mut st.cpu_samples,
            window,
            now,
            crate::procs::group_cpu_ticks(st.pgid),
        ) {
            st.last_cpu_change = now;
        }
        let quiet_output = Duration::from_millis(
            (now_ms() - st.last_output_ms.load(Ordering::Relaxed)).max(0) as u64,
        );
        let quiet = quiet_output.min(st.last_cpu_change.elapsed());
        // Waiting for a person is not a hang.
        if core.job_waits_for_approval(&st.job.id) {
            st.last_cpu_change = Instant::now();
            st.last_output_ms.store(now_ms(), Ordering::Relaxed);
        } else if quiet >= core.config().jobs.hang_timeout {
            begin_stop(myself, st, StopReason::Hung, self.grace());
        }
    }

    /// The process is gone and its output read: measure the worktree off the handler (git may take a
    /// while and heartbeats must go on), then `Complete`.
    async fn finalize(&self, myself: &ActorRef<RunnerMsg>, st: &mut RunnerState) {
        if st.finishing {
            return;
        }
        st.finishing = true;
        let worktree = PathBuf::from(&st.session.worktree_path);
        let base = st.job.base_commit.clone();
        let (core, me) = (self.core.clone(), myself.clone());
        let sandboxed = st.endpoint.sandboxed;
        let run_dir = st.endpoint.run_dir.clone();
        let adopt = sandboxed
            .then(|| sandbox::branch_after(&run_dir, &st.session.branch))
            .flatten()
            .filter(|after| Some(after) != base.as_ref());
        let (repo, branch, job_id) = (
            PathBuf::from(&st.project.repo_path),
            st.session.branch.clone(),
            st.job.id.clone(),
        );
        tokio::spawn(async move {
            // The job wrote its objects into a private directory and committed into a private copy of
            // the refs: bring in its objects (each one checked) and move the session's branch (and only
            // it) to where the job left it, if nobody moved it meanwhile.
            if sandboxed {
                match core.git().reattach_head(&repo, &worktree, &branch).await {
                    Ok(true) => {
                        tracing::warn!(target: "televibe.runner", job_id = %job_id, branch = %branch, "The job left its session's branch; the worktree's HEAD points at it again (its changes show as uncommitted)");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(target: "televibe.runner", job_id = %job_id, error = %e, "Cannot check the worktree's HEAD");
                    }
                }
            }
            if sandboxed
                && let Err(e) = core
                    .git()
                    .import_objects(&repo, &sandbox::objects_dir(&run_dir))
                    .await
            {
                tracing::warn!(target: "televibe.runner", job_id = %job_id, error = %e, "The job's new git objects could not be imported");
            }
            if let Some(after) = adopt
                && let Err(e) = core
                    .git()
                    .adopt_branch(&repo, &branch, base.as_deref(), &after)
                    .await
            {
                tracing::warn!(target: "televibe.runner", job_id = %job_id, error = %e, "The job's commits could not be kept on its branch");
            }
            let changes = if worktree.is_dir() {
                core.git().changes(&worktree, base.as_deref()).await.ok()
            } else {
                None
            };
            let _ = me.cast(RunnerMsg::Complete(changes));
        });
    }

    async fn complete(
        &self,
        myself: &ActorRef<RunnerMsg>,
        st: &mut RunnerState,
        changes: Option<(Vec<String>, Option<String>)>,
    ) {
        if st.finished {
            return;
        }
        st.finished = true;
        let core = &self.core;
        let (code, signal) = st.exit.unwrap_or((None, None));
        let mut outcome = decide(
            code,
            signal,
            st.stop.as_ref(),
            st.result.as_ref(),
            st.log.truncated(),
        );
        if let Some((files, stat)) = changes {
            outcome.outcome.files_changed = files;
            outcome.outcome.diff_stat = stat;
        }
        if outcome.outcome.result_text.is_none() {
            outcome.outcome.result_text = st.last_text.clone();
        }
        let ending = Ending::Decided {
            decision: outcome,
            elapsed: st.started.elapsed(),
            breaker: st.breaker.take(),
        };
        if let Err(e) = core.end_job(&st.job, ending).await {
            tracing::error!(target: "televibe.runner", job_id = %st.job.id, error = %e, "the job's ending was not recorded");
        }
        let _ = st
            .session_ref
            .cast(SessionMsg::RunnerDone(st.job.id.clone()));
        myself.stop(Some("job finished".into()));
    }
}

impl Drop for RunnerState {
    fn drop(&mut self) {
        // A runner that goes away before the end (killed, crashed, its session gone) takes its agent with it.
        if !self.finished {
            process::signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_ticks_are_not_progress_and_real_work_is() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = std::collections::VecDeque::new();
        assert!(
            !cpu_busy(&mut s, CPU_WINDOW, at(0), 100),
            "a first sample proves nothing"
        );
        assert!(
            !cpu_busy(&mut s, CPU_WINDOW, at(5_000), 100),
            "no CPU at all"
        );
        // One tick in five seconds (0.2 % of a core): an idle process's timers.
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(10_000), 101));
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(15_000), 102));
        // A busy second: 50 ticks over the 10 s window is 5 ticks a second.
        assert!(cpu_busy(&mut s, CPU_WINDOW, at(20_000), 152));
        // The window slides: the burst ages out and idling is idling again.
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(35_000), 153));
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(40_000), 154));
        // Exactly the threshold counts: 2 ticks a second over 10 s.
        assert!(cpu_busy(&mut s, CPU_WINDOW, at(50_000), 174));
        // A process leaving the group lowers the total: not progress.
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(55_000), 20));
        assert!(s.len() <= 4, "samples stay bounded: {}", s.len());
    }
}

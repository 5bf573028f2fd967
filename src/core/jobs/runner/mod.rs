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

use super::ending::Ending;
use super::log::JobLog;
use super::outcome::{StopReason, decide};
use super::process::{self, AgentCommand};
use super::sandbox::{self, SandboxPlan};
use super::stream::{ResultEvent, StreamEvent, parse_line, tool_target};
use crate::breaker::BreakerPermit;
use crate::core::Core;
use crate::core::events::{Event, Scope};
use crate::domain::{Job, Project, Session};
use crate::supervisor::ChildMessage;
use crate::text::preview;

/// What a runner tells its session: its agent started (with its process group), it is alive, and at the
/// end its decision (the outcome read from the agent, the changes, the breaker's verdict). The session
/// ends the job with it and then stops the runner: the runner never writes the job's end itself.
pub enum Report {
    Started {
        job_id: String,
        pgid: i32,
    },
    Alive {
        job_id: String,
    },
    /// The agent's conversation, to resume in the session's next job.
    Conversation {
        job_id: String,
        id: String,
    },
    Decided {
        job_id: String,
        ending: Ending,
    },
}

/// Where a runner's reports go: its session's mailbox (the session actor builds it).
pub type ReportTo = Arc<dyn Fn(Report) + Send + Sync>;

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
    /// Where the runner reports (its session).
    pub report_to: ReportTo,
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
    /// The worktree's changes are measured (and what the job left refused, if it was); write the
    /// outcome.
    Complete(Option<(Vec<String>, Option<String>)>, Option<String>),
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
    report_to: ReportTo,
    last_output_ms: Arc<AtomicI64>,
    /// The job's own cgroup (its CPU, memory limit and kill); `None` where cgroups are unavailable.
    cgroup: Option<crate::cgroup::JobCgroup>,
    /// The job's CPU ticks at recent checks, oldest first, covering about `CPU_WINDOW`.
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

mod launch;
mod watch;

use launch::*;
pub use launch::{PERMISSION_TOOL, agent_args, mcp_config};
use watch::*;

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
        let run_dir = sandbox::run_dir(&core.config().root, &a.job.id);
        let plan = self
            .sandbox_plan(&a, &program, &run_dir, base_commit.as_deref())
            .await?;
        if let Some(plan) = &plan {
            env.extend(plan.env());
        }
        let (endpoint_path, serve) = open_endpoint(
            core,
            &a.job.id,
            &run_dir,
            plan.as_ref().and_then(|p| p.user),
        )?;
        let token = core.jobs().issue_job_token(&a.job.id);
        let trusted = a.project.trusted || core.config().trusted_projects.contains(&a.project.id);
        let mut program_path = program.clone();
        let mut args = agent_args(core, &a.session, &a.job.id, &token, &endpoint_path, trusted);
        let mut egress = None;
        if let Some(p) = plan.as_ref().filter(|p| p.isolate_network) {
            let (socket, serve) = open_egress(core, p, &a.job.id, &mut env)?;
            egress = Some(serve);
            // Inside, the relay (this binary, bound into every sandbox) carries the agent's proxy and
            // model connections from the sandbox's own loopback to the socket.
            program_path = std::env::current_exe()
                .map_err(|e| format!("cannot find the daemon binary: {e}"))?;
            let mut relay: Vec<String> = vec![
                "sandbox-relay".into(),
                "--socket".into(),
                socket.display().to_string(),
                "--model".into(),
                "--".into(),
                program
                    .canonicalize()
                    .unwrap_or_else(|_| program.clone())
                    .display()
                    .to_string(),
            ];
            relay.append(&mut args);
            args = relay;
        }
        let endpoint = JobEndpoint {
            _serve: serve,
            _egress: egress,
            run_dir,
            plan: plan.clone(),
        };
        let mut cgroup = job_cgroup(core, &a.job.id);
        let cmd = AgentCommand {
            program: &program_path,
            args,
            cwd: &worktree,
            env,
            sandbox: plan.as_ref(),
            cgroup_procs: cgroup.as_ref().map(|c| c.procs_fd()),
        };
        let mut child =
            process::spawn(&cmd).map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child
            .id()
            .ok_or("agent exited before it could be tracked")? as i32;
        if cgroup.as_ref().is_some_and(|c| !c.holds(pid))
            && child.try_wait().ok().flatten().is_none()
        {
            tracing::warn!(target: "televibe.runner", job_id = %a.job.id, "The agent did not enter its cgroup; its CPU is counted over its process tree");
            cgroup = None;
        }
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
            // Only the last assistant text matters (a fallback for the result): it is kept here and
            // handed over once, so a chatty agent does not fill the runner's mailbox with text.
            let mut last_text = None;
            while let Ok(Some(line)) = read_line_capped(&mut reader, &mut buf).await {
                last.store(now_ms(), Ordering::Relaxed);
                log2.line("stdout", &line);
                let mut events = parse_line(&line);
                events.retain_mut(|e| match e {
                    StreamEvent::AssistantText(t) => {
                        last_text = Some(std::mem::take(t));
                        false
                    }
                    StreamEvent::Unknown(_) => false,
                    // Counted, not kept: the line is in the job log.
                    StreamEvent::Malformed(l) => {
                        l.clear();
                        true
                    }
                    _ => true,
                });
                if !events.is_empty() {
                    let _ = me.cast(RunnerMsg::Events(events));
                }
            }
            if let Some(t) = last_text {
                let _ = me.cast(RunnerMsg::Events(vec![StreamEvent::AssistantText(t)]));
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
        (a.report_to)(Report::Started {
            job_id: a.job.id.clone(),
            pgid: pid,
        });
        core.jobs().job_started(&a.job, &a.session, pid).await;
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
            report_to: a.report_to,
            last_output_ms,
            cgroup,
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
            RunnerMsg::StreamClosed => self.stream_closed(&myself, st).await,
            RunnerMsg::Exited { code, signal } => self.exited(&myself, st, code, signal).await,
            RunnerMsg::Tick => self.on_tick(&myself, st).await,
            RunnerMsg::HardTimeout => begin_stop(&myself, st, StopReason::Timeout, self.grace()),
            RunnerMsg::Stop(reason) => begin_stop(&myself, st, reason, self.grace()),
            RunnerMsg::KillNow => st.kill(),
            RunnerMsg::Finalize => self.finalize(&myself, st).await,
            RunnerMsg::Complete(changes, violation) => self.complete(st, changes, violation).await,
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

impl Runner {
    fn grace(&self) -> Duration {
        self.core.config().jobs.kill_grace
    }
}

impl RunnerState {
    /// SIGKILL to the job's process group and to everything in its cgroup (what left the group too).
    fn kill(&self) {
        process::signal_group(self.pgid, libc::SIGKILL);
        if let Some(c) = &self.cgroup {
            c.kill();
        }
    }

    /// CPU ticks (1/100 s) the job used: its cgroup's count, else its process tree's.
    fn cpu_ticks(&self) -> u64 {
        match self.cgroup.as_ref().and_then(|c| c.cpu_usec()) {
            Some(usec) => usec / 10_000,
            None => crate::procs::tree_cpu_ticks(self.pgid),
        }
    }
}

/// The job's cgroup, or `None` (said once in the log) where jobs cannot have one.
fn job_cgroup(core: &Arc<Core>, job_id: &str) -> Option<crate::cgroup::JobCgroup> {
    let groups = core.cgroups().ok()?;
    match groups.create(job_id, core.config().jobs.memory_max) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(target: "televibe.runner", job_id = %job_id, error = %e, "Cannot create the job's cgroup; its CPU is counted over its process tree");
            None
        }
    }
}

impl Drop for RunnerState {
    fn drop(&mut self) {
        // A runner that goes away before the end (killed, crashed, its session gone) takes its agent with it.
        // The job's cgroup goes with the state (what the job left running in it is killed then).
        if !self.finished {
            self.kill();
        }
    }
}

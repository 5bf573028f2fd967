//! `job:<id>`: runs one agent process for one job, child of its session actor.
//!
//! It owns the process group, the job log, the agent's output reader, the heartbeat and the timers. The
//! agent is its driver's business (`crate::agents`): its argv, what its output means, how its approvals
//! are answered. Readers of stdout and stderr write the log and send the driver's events here; the runner
//! turns them into job events. When the process has exited and both streams are closed, the runner writes
//! the outcome and stops.

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
use crate::agents::{AgentDriver, AgentEvent, AgentResult, BridgeCommand, Exit, tool_target};
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
    /// The agent's conversation, to resume in the session's next job of the same agent.
    Conversation {
        job_id: String,
        agent: &'static str,
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
    /// The permit of its agent's breaker this job runs under (a probe when the breaker is half-open).
    pub breaker: Option<BreakerPermit>,
    /// Where the runner reports (its session).
    pub report_to: ReportTo,
}

pub enum RunnerMsg {
    Events(Vec<AgentEvent>),
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
    /// The job's agent.
    driver: &'static dyn AgentDriver,
    /// The agent's stdin while its driver keeps it open (a protocol spoken both ways).
    input: Option<start::Input>,
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
    result: Option<AgentResult>,
    last_text: Option<String>,
    tools: HashMap<String, (String, String)>,
    malformed: u64,
    finishing: bool,
    finished: bool,
    endpoint: JobEndpoint,
    /// The agent reported a usage limit in this run: its reset (Unix seconds) when it gave one.
    limit: Option<Option<i64>>,
    /// The agent waits out a retry of the model API until then: the job is not hung meanwhile.
    api_wait_until: Option<Instant>,
    /// The chat was told of a rate limit the agent waits out itself (once a run).
    self_wait_told: bool,
    /// A stop asked for after the agent exited (nothing left to signal; it still decides the ending).
    late_stop: Option<StopReason>,
    /// The conversation to resume was not found: the job runs again in a new one.
    conversation_lost: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

mod events;
mod launch;
mod start;
mod watch;

pub use launch::bridge_command;
use launch::*;
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
        let driver = crate::agents::of_job(&a.job);
        let prepared = self.prepare(&mut a, driver).await?;
        let started = self.spawn_agent(&myself, &a, prepared)?;
        self.mark_running(&myself, &a, &started).await?;
        Ok(RunnerState {
            driver,
            input: started.input,
            job: a.job,
            session: a.session,
            project: a.project,
            pgid: started.pid,
            log: started.log,
            _permit: a.permit,
            breaker: a.breaker,
            report_to: a.report_to,
            last_output_ms: started.last_output_ms,
            cgroup: started.cgroup,
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
            endpoint: started.endpoint,
            limit: None,
            api_wait_until: None,
            self_wait_told: false,
            late_stop: None,
            conversation_lost: false,
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
    if st.stop.is_some() {
        return;
    }
    // The agent is gone already; a run its outcome would put back in the queue must not come back.
    if st.exit.is_some() {
        if !st.finished && st.late_stop.is_none() {
            st.late_stop = Some(reason);
        }
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

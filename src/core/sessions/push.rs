//! `job:<id>` of a push job: pushes its session's branch to the project's `origin` once a person approves.
//!
//! It runs no agent, so it takes no run slot, no agent breaker permit and waits for no usage limit. It
//! answers its session as an agent's runner does (the same `RunnerMsg` and `ReportTo`): heartbeats
//! (`Alive`, so the session's hang check leaves a push waiting for a person alone), and one `Decided` with
//! the ending. The work is a task: what would be pushed (the branch's commit, the remote's, the number of
//! commits: `Git::push_plan`), the approval of scope `git_push` (`request_push_approval`: a person only),
//! then the push (`Git::push_branch`) in the project's repository with the daemon's own credentials. A
//! stop (a cancel, an approval's expiry, deny-and-stop) ends the job at once while it prepares or waits;
//! once the push has begun, it finishes (a push cannot be taken back half-way) and its result is told.
//! The task is never aborted: a task dropped while it waits for a person would leave its wait registered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;

use crate::core::Core;
use crate::core::jobs::Ending;
use crate::core::jobs::log::JobLog;
use crate::core::jobs::outcome::{BreakerVerdict, Decision, StopReason, stopped};
use crate::core::jobs::runner::{Report, ReportTo, RunnerMsg};
use crate::domain::{Job, JobOutcome, JobStatus, Project, Session};
use crate::git::{PushPlan, Pushed, REMOTE};

/// Where a push stands: preparing or waiting for a person (a stop ends it), pushing (it finishes), or
/// its ending reported.
const PREPARING: u8 = 0;
const PUSHING: u8 = 1;
const REPORTED: u8 = 2;

pub struct PushRunner {
    pub core: Arc<Core>,
}

pub struct PushArgs {
    pub job: Job,
    pub session: Session,
    pub project: Project,
    pub report_to: ReportTo,
}

pub struct PushState {
    job: Job,
    report_to: ReportTo,
    phase: Arc<AtomicU8>,
    started: Instant,
    log: Arc<JobLog>,
}

impl Actor for PushRunner {
    type Msg = RunnerMsg;
    type State = PushState;
    type Arguments = PushArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RunnerMsg>,
        a: PushArgs,
    ) -> Result<PushState, ActorProcessingErr> {
        let core = &self.core;
        let log_path = core.layout().job_logs().join(format!("{}.log", a.job.id));
        let log = Arc::new(JobLog::create(&log_path, core.config().jobs.max_log_bytes)?);
        log.line("push", &a.job.instruction);
        let marked = core
            .store()
            .mark_job_running(&a.job.id, None, &log_path.display().to_string(), None)
            .await?;
        if !marked {
            return Err(format!("job {} was ended before its push started", a.job.id).into());
        }
        core.jobs().job_started(&a.job, &a.session, 0).await;
        let tick = (core.config().jobs.heartbeat_timeout / 3)
            .clamp(Duration::from_millis(250), Duration::from_secs(5));
        myself.send_interval(tick, || RunnerMsg::Tick);
        tracing::info!(target: "televibe.runner", job_id = %a.job.id, session_id = %a.session.id, branch = %a.session.branch, "Push job started");
        let st = PushState {
            job: a.job.clone(),
            report_to: a.report_to.clone(),
            phase: Arc::new(AtomicU8::new(PREPARING)),
            started: Instant::now(),
            log: log.clone(),
        };
        let work = Work {
            core: core.clone(),
            job: a.job,
            session: a.session,
            project: a.project,
            report_to: a.report_to,
            phase: st.phase.clone(),
            started: st.started,
            log,
        };
        tokio::spawn(work.run());
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RunnerMsg>,
        msg: RunnerMsg,
        st: &mut PushState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RunnerMsg::Tick => {
                (st.report_to)(Report::Alive {
                    job_id: st.job.id.clone(),
                });
                let _ = self.core.store().job_heartbeat(&st.job.id).await;
            }
            RunnerMsg::Stop(reason) => st.stop(&reason),
            RunnerMsg::KillNow => st.stop(&StopReason::Manual),
            RunnerMsg::Panic => panic!("injected panic in push runner of job {}", st.job.id),
            RunnerMsg::Stall => tokio::time::sleep(Duration::from_secs(24 * 3600)).await,
            // An agent's messages; a push has none.
            _ => {}
        }
        Ok(())
    }

    /// A runner stopped before its push began (its session stopped it, or closed) never pushes.
    async fn post_stop(
        &self,
        _myself: ActorRef<RunnerMsg>,
        st: &mut PushState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = st
            .phase
            .compare_exchange(PREPARING, REPORTED, Ordering::SeqCst, Ordering::SeqCst);
        Ok(())
    }
}

impl PushState {
    /// A stop before the push began ends the job now; during the push it is too late (logged).
    fn stop(&self, reason: &StopReason) {
        if self
            .phase
            .compare_exchange(PREPARING, REPORTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            if self.phase.load(Ordering::SeqCst) == PUSHING {
                self.log
                    .line("push", "stop asked while pushing: the push finishes");
                tracing::warn!(target: "televibe.runner", job_id = %self.job.id, reason = ?reason, "Stop asked while the branch is being pushed; the push finishes");
            }
            return;
        }
        let (status, error_type, why) = stopped(reason);
        self.log.line("push", &format!("stopped: {why}"));
        (self.report_to)(Report::Decided {
            job_id: self.job.id.clone(),
            ending: Ending::Imposed {
                status,
                error_type,
                reason: why,
            },
        });
    }
}

/// The push's work, off the actor.
struct Work {
    core: Arc<Core>,
    job: Job,
    session: Session,
    project: Project,
    report_to: ReportTo,
    phase: Arc<AtomicU8>,
    started: Instant,
    log: Arc<JobLog>,
}

impl Work {
    async fn run(self) {
        let ending = self.push().await;
        // Reported unless a stop already ended the job (then the push never began).
        let before = self.phase.swap(REPORTED, Ordering::SeqCst);
        if before != REPORTED {
            (self.report_to)(Report::Decided {
                job_id: self.job.id.clone(),
                ending,
            });
        }
    }

    fn stopped(&self) -> bool {
        self.phase.load(Ordering::SeqCst) != PREPARING
    }

    /// What would be pushed, the person's decision, the push: the job's ending.
    async fn push(&self) -> Ending {
        let repo = std::path::Path::new(&self.project.repo_path);
        let branch = &self.session.branch;
        let plan = match self.core.git().push_plan(repo, branch).await {
            Ok(p) => p,
            Err(e) => return self.failed(&format!("cannot push {branch}: {e}")),
        };
        self.log.line(
            "push",
            &format!(
                "{REMOTE} ({}) {branch}: {} ({} commits)",
                plan.url,
                plan.range(),
                plan.commits
            ),
        );
        if plan.remote_head.as_deref() == Some(plan.head.as_str()) {
            return self.done(format!(
                "{REMOTE} already has {branch} at {}: nothing to push.",
                short(&plan.head)
            ));
        }
        if self.stopped() {
            return self.failed("stopped before asking");
        }
        let answer = self
            .core
            .approvals()
            .request_push_approval(&self.job.id, request(&plan))
            .await;
        let by = match answer {
            Ok(a) if a.approved => a.by,
            Ok(a) if a.by == "expiry" => {
                let (status, error_type, reason) = stopped(&StopReason::ApprovalTimeout);
                return Ending::Imposed {
                    status,
                    error_type,
                    reason,
                };
            }
            Ok(a) => {
                self.log.line("push", &format!("denied by {}", a.by));
                return Ending::canceled(&format!("push denied by {}", a.by));
            }
            Err(e) => return self.failed(&format!("cannot ask to push: {}", e.message)),
        };
        // A job ended meanwhile by a path that does not stop this task (a forced close, the hang check, a
        // restart of its session) is not pushed for.
        if !matches!(self.core.store().job(&self.job.id).await, Ok(Some(j)) if !j.status.is_final())
        {
            return self.failed("the job ended before its push began");
        }
        // From here the push runs to its end; a stop that came first wins.
        if self
            .phase
            .compare_exchange(PREPARING, PUSHING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return self.failed("stopped before pushing");
        }
        self.log.line("push", &format!("approved by {by}; pushing"));
        match self.core.git().push_branch(repo, branch, &plan.head).await {
            Ok(Pushed::Updated { range, new_branch }) => {
                let n = plan.commits;
                self.done(format!(
                    "⬆️ Pushed {branch} to {REMOTE}: {range} ({n} commit{}{}), approved by {by}.",
                    if n == 1 { "" } else { "s" },
                    if new_branch { ", new branch" } else { "" },
                ))
            }
            Ok(Pushed::UpToDate) => self.done(format!(
                "{REMOTE} already has {branch} at {}: nothing to push.",
                short(&plan.head)
            )),
            Ok(Pushed::Refused(words)) => {
                self.failed(&format!("{REMOTE} refused the push of {branch}:\n{words}"))
            }
            Err(e) => self.failed(&format!("cannot push {branch}: {e}")),
        }
    }

    fn done(&self, text: String) -> Ending {
        self.log.line("push", &text);
        self.decided(JobOutcome {
            status: Some(JobStatus::Done),
            result_text: Some(text),
            ..Default::default()
        })
    }

    /// A push that did not happen: the reason is the job's error (a refused push is not an agent's
    /// error, so it has no error type).
    fn failed(&self, why: &str) -> Ending {
        self.log.line("push", why);
        tracing::warn!(target: "televibe.runner", job_id = %self.job.id, error = %why, "Push failed");
        self.decided(JobOutcome {
            status: Some(JobStatus::Failed),
            error: Some(why.to_string()),
            ..Default::default()
        })
    }

    fn decided(&self, outcome: JobOutcome) -> Ending {
        Ending::Decided {
            decision: Box::new(Decision {
                outcome,
                // No agent ran: its breaker neither gains nor loses.
                breaker: BreakerVerdict::Neutral,
                usage_limited: false,
                resets_at: None,
                agent_reset: None,
                conversation_lost: false,
            }),
            elapsed: self.started.elapsed(),
            breaker: None,
        }
    }
}

/// The approval request of a push, as people see it: remote, branch, the range and the commits.
fn request(plan: &PushPlan) -> serde_json::Value {
    json!({
        "remote": format!("{REMOTE} ({})", plan.url),
        "branch": plan.branch,
        "range": plan.range(),
        "commits": plan.commits,
        "new_branch": plan.remote_head.is_none(),
        "commit": plan.head,
        "files": plan.files,
        "files_total": plan.files_total,
        // What the commits change that runs code elsewhere once pushed (a forge's CI, hooks managers).
        "runs_elsewhere": plan.files.iter().filter(|f| crate::git::runs_elsewhere(f)).collect::<Vec<_>>(),
    })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

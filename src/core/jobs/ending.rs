//! How a job starts and ends, as bookkeeping. Every ending — done, failed, canceled, killed, timeout, hung,
//! orphaned, restart-recovered, could not start — goes through `Jobs::end_job`: the outcome is written
//! (the first ending wins), the breaker probe is settled, the job's approval secret and pending requests
//! go, the gauges drop it, and the ending is counted and told (`job.completed|failed|canceled`). A running
//! job is ended by its session with the runner's decision. Killing what is left of the job's processes is
//! the caller's part.

use std::time::Duration;

use crate::breaker::BreakerPermit;
use crate::core::events::{Event, JobEnd, Scope};
use crate::domain::{ErrorType, Job, JobOutcome, JobStatus, Session};
use crate::errors::CoreError;
use crate::telemetry::{JobLabel, ProjectLabel, ProjectStatusLabel};

use super::outcome::{BreakerVerdict, Decision, MANUAL_TERMINATION};

/// The spec's message while the `claude_code` breaker is open.
pub const CLAUDE_UNAVAILABLE: &str = "⚠️ Claude API temporarily unavailable. Jobs queued.";

/// How a job ends.
pub enum Ending {
    /// Its runner's verdict: the agent exited or was stopped (`decide` in `jobs::outcome`).
    Decided {
        decision: Box<Decision>,
        elapsed: Duration,
        /// The permit of its agent's breaker the job ran under, settled by the verdict.
        breaker: Option<BreakerPermit>,
    },
    /// No runner decides: the daemon ends the job itself (a queued job canceled, its session closed, its
    /// runner gone or silent, a manual kill, the daemon restarted, the agent could not start).
    Imposed {
        status: JobStatus,
        error_type: Option<ErrorType>,
        reason: String,
    },
}

impl Ending {
    pub fn canceled(reason: &str) -> Ending {
        Ending::Imposed {
            status: JobStatus::Canceled,
            error_type: None,
            reason: reason.to_string(),
        }
    }

    pub fn failed(error_type: ErrorType, reason: &str) -> Ending {
        Ending::Imposed {
            status: JobStatus::Failed,
            error_type: Some(error_type),
            reason: reason.to_string(),
        }
    }
}

use super::Jobs;

impl Jobs<'_> {
    /// Bookkeeping when a runner has started its process.
    pub async fn job_started(&self, job: &Job, session: &Session, pid: i32) {
        let project = ProjectLabel {
            project_id: session.project_id.clone(),
        };
        super::lock(&self.state().active).insert(job.id.clone());
        self.core
            .metrics()
            .jobs_active
            .get_or_create(&project)
            .inc();
        self.core
            .metrics()
            .job_start_timestamp
            .get_or_create(&JobLabel {
                job_id: job.id.clone(),
            })
            .set(chrono::Utc::now().timestamp());
        self.core
            .events()
            .emit(
                Scope::job(job, session),
                Event::JobStarted {
                    pid,
                    instruction_preview: crate::text::preview(&job.instruction),
                },
            )
            .await;
    }

    /// Ends a job: the one path every ending takes. Answers whether this call ended it (false when it had
    /// ended already: then nothing else happens). Its lines (the breaker's too) are in the job's trace.
    pub async fn end_job(&self, job: &Job, ending: Ending) -> Result<bool, CoreError> {
        use tracing::Instrument;
        self.end_job_traced(job, ending)
            .instrument(crate::logging::job_span(&job.id))
            .await
    }

    async fn end_job_traced(&self, job: &Job, ending: Ending) -> Result<bool, CoreError> {
        let (outcome, elapsed, message) = match ending {
            Ending::Decided {
                decision,
                elapsed,
                breaker,
            } => {
                if let Some(permit) = breaker {
                    match decision.breaker {
                        BreakerVerdict::Success => permit.success(),
                        BreakerVerdict::Failure => permit.failure(),
                        // Dropping it gives a probe slot back.
                        BreakerVerdict::Neutral => drop(permit),
                    }
                    // The probe closed the breaker: the next opening is a new period, told again.
                    let breaker = crate::agents::of_job(job).breaker();
                    if self.core.breakers().get(breaker).state()
                        == crate::breaker::BreakerState::Closed
                    {
                        self.agent_available_again(breaker);
                    }
                }
                (decision.outcome, Some(elapsed), None)
            }
            Ending::Imposed {
                status,
                error_type,
                reason,
            } => {
                let message = (error_type == Some(ErrorType::Killed))
                    .then(|| format!("Job {} was terminated after getting stuck", job.id));
                let outcome = JobOutcome {
                    status: Some(status),
                    error_type,
                    error: Some(reason),
                    ..Default::default()
                };
                (outcome, None, message)
            }
        };
        // A job ended for being stuck (the hang detector, or `admin job kill`) tells the user in the
        // stuck-job runbook's words.
        // (An agent killed by a signal from elsewhere keeps its own error: it was not judged stuck.)
        let stuck = match outcome.error_type {
            Some(ErrorType::Hung) => true,
            Some(ErrorType::Killed) => outcome.error.as_deref() == Some(MANUAL_TERMINATION),
            _ => false,
        };
        let message = message.or_else(|| {
            stuck.then(|| format!("Job {} was terminated after getting stuck", job.id))
        });
        let status = outcome.status.unwrap_or(JobStatus::Failed);
        let end = JobEnd {
            status: Some(status),
            error_type: outcome.error_type,
            error: outcome.error.clone(),
            result: outcome
                .result_text
                .as_deref()
                .map(|t| t.chars().take(3000).collect()),
            num_turns: outcome.num_turns,
            total_cost_usd: outcome.total_cost_usd,
            files_changed: outcome.files_changed.clone(),
            diff_stat: outcome.diff_stat.clone(),
            duration_secs: elapsed.map(|e| e.as_secs_f64()),
            message,
        };
        let session = self
            .core
            .store()
            .session(&job.session_id)
            .await
            .ok()
            .flatten();
        let project_id = session
            .as_ref()
            .map(|s| s.project_id.clone())
            .unwrap_or_default();
        match self.core.store().finish_job(&job.id, outcome).await {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                // The job is over all the same: its secret, requests and gauges go now; the next
                // session incarnation or boot recovery writes the outcome.
                tracing::error!(target: "televibe.jobs", job_id = %job.id, error = %e, "job outcome not stored");
                self.job_inactive(&job.id, &project_id).await;
                return Err(e.into());
            }
        }
        let labels = ProjectStatusLabel {
            project_id: project_id.clone(),
            status: status.as_str().into(),
        };
        if let Some(elapsed) = elapsed {
            self.core
                .metrics()
                .job_duration_seconds
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
        }
        self.core.metrics().jobs_total.get_or_create(&labels).inc();
        self.job_inactive(&job.id, &project_id).await;
        tracing::info!(target: "televibe.runner", job_id = %job.id, session_id = %job.session_id, status = status.as_str(), error = %end.error.as_deref().unwrap_or(""), "Job finished");
        if let Some(session) = &session {
            self.core
                .events()
                .emit(Scope::job(job, session), Event::ending(status, end))
                .await;
        }
        Ok(true)
    }

    /// A job ended: its approval connection and pending requests end with it, and it leaves the running
    /// gauges (once, and only if this daemon counted it in).
    pub(super) async fn job_inactive(&self, job_id: &str, project_id: &str) {
        self.revoke_job_token(job_id);
        self.core.approvals().end_approvals_of_job(job_id).await;
        if !super::lock(&self.state().active).remove(job_id) {
            return;
        }
        self.core
            .metrics()
            .jobs_active
            .get_or_create(&ProjectLabel {
                project_id: project_id.to_string(),
            })
            .dec();
        // Per-job gauges exist while the job runs, so their label set stays bounded.
        let label = JobLabel {
            job_id: job_id.to_string(),
        };
        self.core.metrics().job_start_timestamp.remove(&label);
        self.core.metrics().log_file_bytes.remove(&label);
    }

    /// At boot (and whenever the `sessions` supervisor starts): jobs left `running` are failed
    /// (`orchestrator_restart`) after their process group, if still alive and still theirs, is killed.
    /// The jobs are written off, so the groups get SIGKILL at once rather than a grace period each.
    /// Writes are best effort: a read-only store must not keep the daemon from starting.
    pub async fn recover_jobs(&self) -> Result<(), CoreError> {
        let hosted = self.core.sessions().hosted_here().await;
        for job in self.core.store().unfinished_running_jobs().await? {
            // Another node's running jobs are its own (or, gone silent, the leader's to end).
            if hosted
                .as_ref()
                .is_some_and(|h| !h.contains(&job.session_id))
            {
                continue;
            }
            if let Some(pgid) = job.recorded_group()
                && super::process::group_alive(pgid)
            {
                tracing::warn!(target: "televibe.jobs", job_id = %job.id, pgid, "Killing the process group of a job left running by the previous daemon");
                super::process::signal_group(pgid, libc::SIGKILL);
            }
            // What it left in its cgroup (detached children included) goes too.
            if let Ok(groups) = self.core.cgroups() {
                groups.release(&job.id);
            }
            // Run once more, resuming its conversation; a job cut twice fails, and so does one whose
            // agent had ended (its work was being collected) or that a restore brought back running.
            let restored = job.error_type == Some(ErrorType::OrchestratorRestart);
            let agent_ended = job.exit_code.is_some() || job.signal.is_some();
            if self.core.config().jobs.retry_interrupted
                && job.interruptions == 0
                && !restored
                && !agent_ended
            {
                match self.requeue_interrupted(&job).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(target: "televibe.jobs", job_id = %job.id, error = %e, "cannot queue the interrupted job again; it fails");
                    }
                }
            }
            let reason = if restored {
                "the state was restored from a backup taken while the job ran; it may have finished \
                 after the backup, so it is not run again"
            } else if agent_ended {
                "the daemon restarted while it collected the job's work (the agent had ended; it is \
                 not run again)"
            } else if job.interruptions > 0 {
                "the daemon restarted while the job was running, a second time (it runs again only once)"
            } else {
                "the daemon restarted while the job was running"
            };
            let ending = Ending::failed(ErrorType::OrchestratorRestart, reason);
            match self.end_job(&job, ending).await {
                Ok(true) => {
                    tracing::warn!(target: "televibe.jobs", job_id = %job.id, "Job failed: orchestrator_restart");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(target: "televibe.jobs", job_id = %job.id, error = %e, "cannot record the failed job; retried at the next start")
                }
            }
        }
        Ok(())
    }

    /// The running jobs of a node gone silent (the leader's watch): each is queued once more, as after a
    /// restart (it runs when its node is back, resuming its conversation), or, cut before or not to be
    /// run again, fails `node_lost`.
    pub async fn node_lost(&self, node: &str, timeout: std::time::Duration) {
        let jobs = match self.core.store().running_jobs_on_node(node).await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(target: "televibe.jobs", node_id = node, error = %e, "jobs of a lost node not read");
                return;
            }
        };
        for job in jobs {
            let agent_ended = job.exit_code.is_some() || job.signal.is_some();
            let session = self
                .core
                .store()
                .session(&job.session_id)
                .await
                .ok()
                .flatten();
            let open = session.as_ref().is_some_and(|s| {
                s.state.is_open() && s.state != crate::domain::SessionState::Closing
            });
            if self.core.config().jobs.retry_interrupted
                && job.interruptions == 0
                && !agent_ended
                && open
                && let Ok(true) = self
                    .core
                    .store()
                    .requeue_job(&job.id, None, crate::store::Requeue::Interrupted)
                    .await
            {
                tracing::warn!(target: "televibe.jobs", job_id = %job.id, node_id = node, "Job of a lost node queued again: it runs when the node is back");
                if let Some(session) = &session {
                    self.core
                        .events()
                        .emit(
                            Scope::job(&job, session),
                            Event::JobRequeued {
                                reason: crate::core::events::REQUEUED_RESTART.into(),
                                not_before: None,
                            },
                        )
                        .await;
                }
                continue;
            }
            let reason = format!(
                "its node {node} stopped answering (no heartbeat for {} s){}",
                timeout.as_secs(),
                if job.interruptions > 0 {
                    ", a second time (it runs again only once)"
                } else {
                    ""
                }
            );
            match self
                .end_job(&job, Ending::failed(ErrorType::NodeLost, &reason))
                .await
            {
                Ok(true) => {
                    tracing::warn!(target: "televibe.jobs", job_id = %job.id, node_id = node, "Job failed: node_lost")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(target: "televibe.jobs", job_id = %job.id, error = %e, "job of a lost node not ended")
                }
            }
        }
    }

    /// A job a daemon restart cut goes back to the head of its session's queue (`jobs.retry_interrupted`):
    /// its tracker says so. False when it was not running any more.
    async fn requeue_interrupted(&self, job: &Job) -> Result<bool, CoreError> {
        let session = self.core.store().session(&job.session_id).await?;
        if !session
            .as_ref()
            .is_some_and(|s| s.state.is_open() && s.state != crate::domain::SessionState::Closing)
        {
            return Ok(false);
        }
        if !self
            .core
            .store()
            .requeue_job(&job.id, None, crate::store::Requeue::Interrupted)
            .await?
        {
            return Ok(false);
        }
        let project_id = session
            .as_ref()
            .map(|s| s.project_id.clone())
            .unwrap_or_default();
        self.job_inactive(&job.id, &project_id).await;
        tracing::warn!(target: "televibe.jobs", job_id = %job.id, session_id = %job.session_id, "Job cut by a daemon restart is queued again, resuming its conversation");
        if let Some(session) = &session {
            self.core
                .events()
                .emit(
                    Scope::job(job, session),
                    Event::JobRequeued {
                        reason: crate::core::events::REQUEUED_RESTART.into(),
                        not_before: None,
                    },
                )
                .await;
        }
        Ok(true)
    }

    /// A run whose conversation to resume was not found goes back to the head of its session's queue, to
    /// run at once in a new conversation (the caller forgets the old one, so this cannot repeat). Its
    /// breaker permit goes back uncounted. `None`: it is not running any more.
    pub async fn rerun_in_new_conversation(
        &self,
        job: &Job,
        session: &Session,
        breaker: Option<crate::breaker::BreakerPermit>,
    ) -> Option<Job> {
        let requeued = self
            .core
            .store()
            .requeue_job(&job.id, None, crate::store::Requeue::NewConversation)
            .await;
        if !matches!(requeued, Ok(true)) {
            return None;
        }
        drop(breaker);
        self.job_inactive(&job.id, &session.project_id).await;
        tracing::warn!(target: "televibe.jobs", job_id = %job.id, session_id = %session.id, agent = %job.agent, "Job runs again in a new conversation: the one to resume was not found");
        self.core.store().job(&job.id).await.ok().flatten()
    }

    /// Tells that jobs wait for the Claude API: at the first refusal of a period, every session with a
    /// queued or waiting job; later, each further session whose job is refused. One `claude.unavailable`
    /// row per session, all carrying the period's start (`since`), so the notifier tells each chat once.
    pub async fn notify_claude_unavailable(
        &self,
        session: &Session,
        breaker: crate::domain::breaker::BreakerName,
    ) {
        let first = !super::lock(&self.state().claude_notice).contains_key(&breaker);
        let mut sessions = vec![session.id.clone()];
        if first {
            sessions.extend(
                self.core
                    .store()
                    .sessions_with_waiting_jobs()
                    .await
                    .unwrap_or_default(),
            );
        }
        let (since, new): (i64, Vec<String>) = {
            let mut notice = super::lock(&self.state().claude_notice);
            let notice = notice
                .entry(breaker)
                .or_insert_with(|| super::ClaudeNotice {
                    since: chrono::Utc::now().timestamp_millis(),
                    told: Default::default(),
                });
            let new = sessions
                .into_iter()
                .filter(|s| notice.told.insert(s.clone()))
                .collect();
            (notice.since, new)
        };
        if new.is_empty() {
            return;
        }
        tracing::warn!(target: "televibe.jobs", sessions = ?new, "{CLAUDE_UNAVAILABLE}");
        for id in new {
            // This node's breaker speaks for this node's sessions only.
            let scope = match self.core.store().session(&id).await {
                Ok(Some(s)) if self.core.cluster().hosts(&s) => Scope::session(&s),
                _ => continue,
            };
            self.core
                .events()
                .emit(
                    scope,
                    Event::ClaudeUnavailable {
                        message: unavailable_message(breaker),
                        since,
                    },
                )
                .await;
        }
    }
}

/// What the chat is told while `breaker` holds jobs: the spec's message for Claude Code's, the same words
/// for another agent's.
fn unavailable_message(breaker: crate::domain::breaker::BreakerName) -> String {
    match breaker {
        crate::domain::breaker::BreakerName::Codex => {
            "⚠️ Codex API temporarily unavailable. Jobs queued.".into()
        }
        _ => CLAUDE_UNAVAILABLE.into(),
    }
}

//! Jobs: one agent run on one instruction, queued per session, run by a `job:<id>` runner actor.
//!
//! The core API here validates and queues; the session actor decides when a job starts (one at a time per
//! session, `jobs.max_concurrent` overall, never while the `claude_code` breaker is open); the runner runs it.

pub mod log;
pub mod outcome;
pub mod process;
pub mod runner;
pub mod sandbox;
pub mod stream;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::AuditSubject;
use crate::breaker::BreakerPermit;
use crate::core::Core;
use crate::domain::{ErrorType, Job, JobOutcome, JobStatus, Project, Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::sessions::actor::SessionMsg;
use crate::telemetry::{JobLabel, ProjectLabel, ProjectStatusLabel, SessionLabel};
use outcome::{BreakerVerdict, Decision};

/// The most characters an instruction may have.
pub const MAX_INSTRUCTION_CHARS: usize = 10_000;

/// The spec's message while the `claude_code` breaker is open.
pub const CLAUDE_UNAVAILABLE: &str = "⚠️ Claude API temporarily unavailable. Jobs queued.";

/// The answer of `run_instruction`.
#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    #[serde(flatten)]
    pub job: Job,
    /// 1 = next to run in its session (0 = already running).
    pub position: usize,
}

/// The answer of `get_job_logs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobLogs {
    pub job_id: String,
    pub lines: Vec<String>,
    /// More lines exist before the returned ones.
    pub truncated: bool,
    /// The log reached its size limit and later output was discarded.
    pub log_capped: bool,
}

pub fn job_not_found(id: &str) -> CoreError {
    CoreError::new(
        ErrorCode::JobNotFound,
        format!("no job {id:?}"),
        "use a job id from list_jobs (a unique prefix of 8 or more characters works)",
    )
}

impl Core {
    /// Records an event in the outbox and counts it.
    pub async fn emit(
        &self,
        event_type: &str,
        project_id: Option<&str>,
        session_id: Option<&str>,
        job_id: Option<&str>,
        payload: Value,
    ) {
        self.metrics()
            .events_total
            .get_or_create(&crate::telemetry::EventTypeLabel {
                event_type: event_type.to_string(),
            })
            .inc();
        if let Err(e) = self
            .store()
            .insert_event(event_type, project_id, session_id, job_id, payload)
            .await
        {
            tracing::warn!(target: "televibe.events", event_type, error = %e, "event not recorded");
        }
    }

    pub async fn job_event(&self, event_type: &str, job: &Job, session: &Session, payload: Value) {
        self.emit(
            event_type,
            Some(&session.project_id),
            Some(&session.id),
            Some(&job.id),
            payload,
        )
        .await;
    }

    /// Queues an instruction in a session.
    pub async fn run_instruction(
        &self,
        actor: &str,
        session_id: &str,
        instruction: &str,
    ) -> Result<Queued, CoreError> {
        if instruction.trim().is_empty() {
            return Err(CoreError::new(
                ErrorCode::InstructionEmpty,
                "the instruction is empty",
                "say what the agent should do",
            ));
        }
        let chars = instruction.chars().count();
        if chars > MAX_INSTRUCTION_CHARS {
            return Err(CoreError::new(
                ErrorCode::InstructionTooLong,
                format!(
                    "the instruction has {chars} characters; at most {MAX_INSTRUCTION_CHARS} are accepted"
                ),
                "shorten it, or put the details in a file in the worktree and refer to it",
            ));
        }
        let session = self.get_session(session_id).await?;
        if matches!(session.state, SessionState::Closing | SessionState::Closed) {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is {}", session.id, session.state.as_str()),
                "open a new session (create_session) on the same branch",
            ));
        }
        let queued = self.store().queued_jobs(&session.id).await?;
        let max = self.config().raw.jobs.max_queued_per_session as usize;
        if queued.len() >= max {
            return Err(CoreError::new(
                ErrorCode::QueueFull,
                format!(
                    "session {} already has {max} queued jobs (jobs.max_queued_per_session)",
                    session.id
                ),
                "wait for the queue to drain, or cancel queued jobs",
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let Some(job) = self
            .store()
            .insert_job(&id, &session.id, instruction)
            .await?
        else {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} was closed", session.id),
                "open a new session (create_session) on the same branch",
            ));
        };
        let position = queued.len() + 1;
        self.job_event(
            "job.queued",
            &job,
            &session,
            json!({"instruction_preview": runner::preview(instruction), "position": position}),
        )
        .await;
        self.set_queue_gauge(&session.id).await;
        tracing::info!(target: "televibe.jobs", job_id = %job.id, session_id = %session.id, position, "Job queued");
        if let Some(actor_ref) = self.session_actor(&session.id) {
            let _ = actor_ref.cast(SessionMsg::TryStart);
        }
        let _ = actor;
        Ok(Queued { job, position })
    }

    pub fn session_actor(&self, id: &str) -> Option<ractor::ActorRef<SessionMsg>> {
        self.session_actors()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub async fn set_queue_gauge(&self, session_id: &str) {
        if let Ok(q) = self.store().queued_jobs(session_id).await {
            self.metrics()
                .job_queue_size
                .get_or_create(&SessionLabel {
                    session_id: session_id.to_string(),
                })
                .set(q.len() as i64);
        }
    }

    /// A job by full id or by a unique prefix of at least 8 characters.
    pub async fn get_job(&self, id: &str) -> Result<Job, CoreError> {
        let id = id.trim().to_lowercase();
        if let Some(job) = self.store().job(&id).await? {
            return Ok(job);
        }
        if id.len() < 8 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(job_not_found(&id));
        }
        let mut found = self.store().jobs_by_prefix(&id).await?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(job_not_found(&id)),
            _ => Err(CoreError::new(
                ErrorCode::JobNotFound,
                format!("{id:?} matches several jobs"),
                "type more characters of the id",
            )),
        }
    }

    pub async fn list_jobs(
        &self,
        session_id: Option<&str>,
        status: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<Job>, CoreError> {
        let session = match session_id {
            Some(s) => Some(self.get_session(s).await?.id),
            None => None,
        };
        let status = match status {
            Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
                CoreError::new(
                    ErrorCode::InternalError,
                    format!("unknown status {s:?}"),
                    "use queued, running, waiting_approval, done, failed or canceled",
                )
            })?),
            None => None,
        };
        Ok(self
            .store()
            .jobs(
                session.as_deref(),
                status,
                limit.unwrap_or(50).clamp(1, 500),
            )
            .await?)
    }

    /// Cancels a queued job at once, or stops a running one (TERM, grace, KILL).
    pub async fn cancel_job(&self, actor: &str, id: &str) -> Result<Job, CoreError> {
        let job = self.get_job(id).await?;
        if job.status.is_final() {
            return Ok(job);
        }
        let actor_ref = self.session_actor(&job.session_id).ok_or_else(|| {
            CoreError::internal(format!(
                "session {} is restarting; retry in a moment",
                job.session_id
            ))
        })?;
        ractor::call_t!(
            actor_ref,
            SessionMsg::CancelJob,
            10_000,
            job.id.clone(),
            actor.to_string()
        )
        .map_err(|e| {
            CoreError::internal(format!("session {} did not answer: {e}", job.session_id))
        })??;
        self.get_job(&job.id).await
    }

    /// The spec's runbook for a stuck job: TERM, grace, KILL, failed "Manual termination", session idle, user told.
    pub async fn kill_job(&self, actor: &str, id: &str) -> Result<Job, CoreError> {
        let job = self.get_job(id).await?;
        if job.status.is_final() {
            return Ok(job);
        }
        self.audit()
            .record(
                &self.store(),
                "admin.job_kill",
                actor,
                AuditSubject {
                    session_id: Some(job.session_id.clone()),
                    job_id: Some(job.id.clone()),
                    ..Default::default()
                },
                json!({"status": job.status.as_str()}),
            )
            .await;
        let grace = Duration::from_secs(self.config().raw.jobs.kill_grace_secs);
        let delivered = match self.session_actor(&job.session_id) {
            Some(a) => {
                ractor::call_t!(a, SessionMsg::KillJob, 10_000, job.id.clone()).unwrap_or(false)
            }
            None => false,
        };
        if !delivered {
            // No runner owns it: do the runbook here.
            if let Some(pgid) = job.recorded_group() {
                process::terminate_group(pgid, grace).await;
            }
            let outcome = JobOutcome {
                status: Some(JobStatus::Failed),
                error_type: Some(ErrorType::Killed),
                error: Some("Manual termination".into()),
                ..Default::default()
            };
            if self.store().finish_job(&job.id, outcome).await? {
                self.after_job_end(&job, JobStatus::Failed, "Manual termination")
                    .await;
            }
        }
        // Wait for the runner to finish its stop sequence.
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(10);
        loop {
            let now = self.get_job(&job.id).await?;
            if now.status.is_final() || tokio::time::Instant::now() > deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn job_logs(&self, id: &str, lines: Option<usize>) -> Result<JobLogs, CoreError> {
        let job = self.get_job(id).await?;
        let n = lines.unwrap_or(100).clamp(1, 5000);
        let Some(path) = job.log_path.clone() else {
            return Ok(JobLogs {
                job_id: job.id,
                lines: Vec::new(),
                truncated: false,
                log_capped: false,
            });
        };
        let (lines, truncated) = log::tail(Path::new(&path), n)
            .map_err(|e| CoreError::internal(format!("cannot read {path}: {e}")))?;
        let log_capped = lines.last().is_some_and(|l| l == log::TRUNCATION_MARKER);
        Ok(JobLogs {
            job_id: job.id,
            lines,
            truncated,
            log_capped,
        })
    }

    /// Bookkeeping when a runner has started its process.
    pub async fn job_started(&self, job: &Job, session: &Session, pid: i32) {
        let project = ProjectLabel {
            project_id: session.project_id.clone(),
        };
        self.active_jobs()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.id.clone());
        self.metrics().jobs_active.get_or_create(&project).inc();
        self.metrics()
            .job_start_timestamp
            .get_or_create(&JobLabel {
                job_id: job.id.clone(),
            })
            .set(chrono::Utc::now().timestamp());
        self.set_queue_gauge(&session.id).await;
        self.job_event(
            "job.started",
            job,
            session,
            json!({"pid": pid, "instruction_preview": runner::preview(&job.instruction)}),
        )
        .await;
    }

    /// Writes a runner's outcome, accounts the breaker and metrics, and tells the user through the outbox.
    pub async fn job_finished(
        &self,
        job: &Job,
        session: &Session,
        project: &Project,
        d: Decision,
        elapsed: Duration,
        breaker: Option<BreakerPermit>,
    ) {
        if let Some(permit) = breaker {
            match d.breaker {
                BreakerVerdict::Success => permit.success(),
                BreakerVerdict::Failure => permit.failure(),
                // Dropping it gives a probe slot back.
                BreakerVerdict::Neutral => drop(permit),
            }
        }
        let status = d.outcome.status.unwrap_or(JobStatus::Failed);
        let summary = json!({
            "status": status.as_str(),
            "error_type": d.outcome.error_type,
            "error": d.outcome.error,
            "result": d.outcome.result_text.as_deref().map(|t| t.chars().take(3000).collect::<String>()),
            "num_turns": d.outcome.num_turns,
            "total_cost_usd": d.outcome.total_cost_usd,
            "files_changed": d.outcome.files_changed,
            "diff_stat": d.outcome.diff_stat,
            "duration_secs": elapsed.as_secs_f64(),
        });
        let error = d.outcome.error.clone().unwrap_or_default();
        match self.store().finish_job(&job.id, d.outcome).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(target: "televibe.jobs", job_id = %job.id, error = %e, "job outcome not stored")
            }
        }
        let labels = ProjectStatusLabel {
            project_id: project.id.clone(),
            status: status.as_str().into(),
        };
        self.metrics()
            .job_duration_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.job_inactive(&job.id, &project.id).await;
        let event = match status {
            JobStatus::Done => "job.completed",
            JobStatus::Canceled => "job.canceled",
            _ => "job.failed",
        };
        self.metrics().jobs_total.get_or_create(&labels).inc();
        self.job_event(event, job, session, summary).await;
        tracing::info!(target: "televibe.runner", job_id = %job.id, session_id = %session.id, status = status.as_str(), error = %error, "Job finished");
    }

    /// A job ended: its approval connection and pending requests end with it, and it leaves the running
    /// gauges (once, and only if this daemon counted it in).
    async fn job_inactive(&self, job_id: &str, project_id: &str) {
        self.revoke_job_token(job_id);
        self.end_approvals_of_job(job_id).await;
        if !self
            .active_jobs()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job_id)
        {
            return;
        }
        self.metrics()
            .jobs_active
            .get_or_create(&ProjectLabel {
                project_id: project_id.to_string(),
            })
            .dec();
        // Per-job gauges exist while the job runs, so their label set stays bounded.
        let label = JobLabel {
            job_id: job_id.to_string(),
        };
        self.metrics().job_start_timestamp.remove(&label);
        self.metrics().log_file_bytes.remove(&label);
    }

    /// Bookkeeping for a job ended without a runner (queued cancel, recovery, manual kill of an orphan).
    pub async fn after_job_end(&self, job: &Job, status: JobStatus, reason: &str) {
        let Ok(session) = self.get_session(&job.session_id).await else {
            return;
        };
        let labels = ProjectStatusLabel {
            project_id: session.project_id.clone(),
            status: status.as_str().into(),
        };
        self.metrics().jobs_total.get_or_create(&labels).inc();
        self.job_inactive(&job.id, &session.project_id).await;
        let event = if status == JobStatus::Canceled {
            "job.canceled"
        } else {
            "job.failed"
        };
        let mut payload = json!({"status": status.as_str(), "error": reason});
        if reason == "Manual termination" {
            payload["message"] =
                json!(format!("Job {} was terminated after getting stuck", job.id));
        }
        self.job_event(event, job, &session, payload).await;
        self.set_queue_gauge(&session.id).await;
    }

    /// At boot (and whenever the `sessions` supervisor starts): jobs left `running` are failed
    /// (`orchestrator_restart`) after their process group, if still alive and still theirs, is killed.
    /// The jobs are written off, so the groups get SIGKILL at once rather than a grace period each.
    /// Writes are best effort: a read-only store must not keep the daemon from starting.
    pub async fn recover_jobs(&self) -> Result<(), CoreError> {
        for job in self.store().unfinished_running_jobs().await? {
            if let Some(pgid) = job.recorded_group()
                && process::group_alive(pgid)
            {
                tracing::warn!(target: "televibe.jobs", job_id = %job.id, pgid, "Killing the process group of a job left running by the previous daemon");
                process::signal_group(pgid, libc::SIGKILL);
            }
            let outcome = JobOutcome {
                status: Some(JobStatus::Failed),
                error_type: Some(ErrorType::OrchestratorRestart),
                error: Some("the daemon restarted while the job was running".into()),
                ..Default::default()
            };
            match self.store().finish_job(&job.id, outcome).await {
                Ok(true) => {
                    self.after_job_end(
                        &job,
                        JobStatus::Failed,
                        "the daemon restarted while the job was running",
                    )
                    .await;
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

    /// Tells the user once per open period that jobs wait for the Claude API.
    pub async fn notify_claude_unavailable(&self, session: &Session) {
        if !self
            .claude_notice_sent()
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.emit(
                "claude.unavailable",
                Some(&session.project_id),
                Some(&session.id),
                None,
                json!({"message": CLAUDE_UNAVAILABLE}),
            )
            .await;
            tracing::warn!(target: "televibe.jobs", "{CLAUDE_UNAVAILABLE}");
        }
    }
}

//! The jobs API: run an instruction (validated, queued, its session told), get and list jobs, cancel,
//! kill (the runbook's manual termination), and a job's log.

use crate::audit::AuditSubject;
use crate::core::Core;
use crate::core::events::{Event, Scope};
use crate::core::sessions::actor::SessionMsg;
use crate::domain::{ErrorType, Job, JobStatus, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::telemetry::SessionLabel;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tracing::Instrument;

use super::*;

impl Core {
    /// Queues an instruction in a session.
    pub async fn run_instruction(
        &self,
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
        let max = self.config().jobs.max_queued_per_session;
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
        // The job's trace begins here: its queued line, then every line about it until its end.
        let span = crate::logging::job_span(&job.id);
        span.in_scope(|| {
            tracing::info!(target: "televibe.jobs", session_id = %session.id, position, "Job queued");
        });
        self.emit(
            Scope::job(&job, &session),
            Event::JobQueued {
                instruction_preview: crate::text::preview(instruction),
                position,
            },
        )
        .instrument(span)
        .await;
        self.set_queue_gauge(&session.id).await;
        if let Some(actor_ref) = self.session_actor(&session.id) {
            let _ = actor_ref.cast(SessionMsg::TryStart);
        }
        Ok(Queued { job, position })
    }

    pub fn session_actor(&self, id: &str) -> Option<ractor::ActorRef<SessionMsg>> {
        self.session_actors()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|cell| cell.clone().into())
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
        Ok(self
            .list_jobs_page(session_id, status, limit, None)
            .await?
            .jobs)
    }

    /// One page of jobs, newest first: at most `limit` (default 50, at most 500) older than the job
    /// `before` (the previous page's `next_before`); `next_before` is set while older jobs may follow.
    pub async fn list_jobs_page(
        &self,
        session_id: Option<&str>,
        status: Option<&str>,
        limit: Option<u64>,
        before: Option<&str>,
    ) -> Result<JobPage, CoreError> {
        let before = match before {
            Some(b) => Some(self.get_job(b).await?.id),
            None => None,
        };
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
        let limit = limit.unwrap_or(50).clamp(1, 500);
        let jobs = self
            .store()
            .jobs_before(session.as_deref(), status, limit, before.as_deref())
            .await?;
        let next_before = (jobs.len() as u64 == limit)
            .then(|| jobs.last().map(|j| j.id.clone()))
            .flatten();
        Ok(JobPage { jobs, next_before })
    }

    /// Cancels a queued job at once, or stops a running one (TERM, grace, KILL).
    pub async fn cancel_job(&self, by: &str, id: &str) -> Result<Job, CoreError> {
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
            by.to_string()
        )
        .map_err(|e| {
            CoreError::internal(format!("session {} did not answer: {e}", job.session_id))
        })??;
        self.get_job(&job.id).await
    }

    /// The spec's runbook for a stuck job: TERM, grace, KILL, failed "Manual termination", session idle, user told.
    pub async fn kill_job(&self, by: &str, id: &str) -> Result<Job, CoreError> {
        let job = self.get_job(id).await?;
        if job.status.is_final() {
            return Ok(job);
        }
        self.audit()
            .record(
                self.store(),
                "admin.job_kill",
                by,
                AuditSubject {
                    session_id: Some(job.session_id.clone()),
                    job_id: Some(job.id.clone()),
                    ..Default::default()
                },
                json!({"status": job.status.as_str()}),
            )
            .await;
        let grace = self.config().jobs.kill_grace;
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
            self.end_job(
                &job,
                Ending::failed(
                    ErrorType::Killed,
                    crate::core::jobs::outcome::MANUAL_TERMINATION,
                ),
            )
            .await?;
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
}

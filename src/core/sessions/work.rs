//! A session's work: run an instruction (validated, queued, its session told), cancel and kill a job (the
//! runbook's manual termination). The session's actor owns the queue; this is the typed way in.

use super::SessionHandle;
use crate::audit::AuditSubject;
use crate::audit::Audited;
use crate::core::events::{Event, Scope};
use crate::domain::{ErrorType, Job, JobKind, ScheduledInstruction, Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::store::{ScheduleRun, ScheduleRunOutcome};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::Instrument;

use super::*;
use crate::core::jobs::*;

/// Refuses an instruction no job could take: empty, or longer than `MAX_INSTRUCTION_CHARS`.
pub fn check_instruction(instruction: &str) -> Result<(), CoreError> {
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
    Ok(())
}

fn closed(session: &Session) -> CoreError {
    CoreError::new(
        ErrorCode::SessionClosing,
        format!("session {} was closed", session.id),
        "open a new session (create_session) on the same branch",
    )
}

impl Sessions<'_> {
    /// Queues an instruction in a session.
    pub async fn run_instruction(
        &self,
        session_id: &str,
        instruction: &str,
        agent: Option<&str>,
    ) -> Result<Queued, CoreError> {
        check_instruction(instruction)?;
        let (session, agent, queued) = self.admit(session_id, agent).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let Some(job) = self
            .core
            .store()
            .insert_job(&id, &session.id, instruction, agent)
            .await?
        else {
            return Err(closed(&session));
        };
        Ok(self.queued(job, &session, queued + 1).await)
    }

    /// Queues a push of the session's branch to the project's `origin`: a job of the session's queue
    /// (so it waits for the job before it) that asks a person, then pushes with the daemon's credentials.
    /// Its instruction is the command it stands for, `git push origin <branch>`.
    pub async fn push_session(&self, session_id: &str) -> Result<Queued, CoreError> {
        let (session, agent, queued) = self.admit(session_id, None).await?;
        let instruction = format!("git push {} {}", crate::git::REMOTE, session.branch);
        let id = uuid::Uuid::new_v4().to_string();
        let Some(job) = self
            .core
            .store()
            .insert_job_of(JobKind::Push, &id, &session.id, &instruction, agent)
            .await?
        else {
            return Err(closed(&session));
        };
        Ok(self.queued(job, &session, queued + 1).await)
    }

    /// One occurrence of a schedule, queued as `run_instruction` queues: the schedule moves on to `next` and
    /// the job is written in one transaction, so the occurrence queues exactly one job. `Ok(None)`: another
    /// run came first, or the schedule was removed. A closed session is `SESSION_CLOSING`, a full queue
    /// `QUEUE_FULL` (the occurrence then queues nothing).
    pub async fn run_scheduled(
        &self,
        schedule: &ScheduledInstruction,
        occurrence: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<Option<Queued>, CoreError> {
        let (session, agent, queued) = self
            .admit(&schedule.session_id, schedule.agent.as_deref())
            .await?;
        let run = ScheduleRun {
            schedule_id: schedule.id.clone(),
            runs: schedule.runs,
            occurrence,
            next_run_at: next,
            job_id: uuid::Uuid::new_v4().to_string(),
            session_id: session.id.clone(),
            instruction: schedule.instruction.clone(),
            agent: agent.to_string(),
        };
        match self.core.store().run_schedule(&run).await? {
            ScheduleRunOutcome::Queued(job) => {
                Ok(Some(self.queued(*job, &session, queued + 1).await))
            }
            ScheduleRunOutcome::Stale => Ok(None),
            ScheduleRunOutcome::SessionClosed => Err(closed(&session)),
        }
    }

    /// Whether a job may be queued in the session: it exists and is open, the agent is configured and the
    /// queue has room. Answers the session, the agent and how many jobs wait already.
    async fn admit(
        &self,
        session_id: &str,
        agent: Option<&str>,
    ) -> Result<(Session, &'static str, usize), CoreError> {
        let session = self.get_session(session_id).await?;
        if matches!(session.state, SessionState::Closing | SessionState::Closed) {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is {}", session.id, session.state.as_str()),
                "open a new session (create_session) on the same branch",
            ));
        }
        let agent = crate::agents::choose(agent, &session, &self.core.config().agent.names())?;
        let queued = self.core.store().queued_jobs(&session.id).await?.len();
        let max = self.core.config().jobs.max_queued_per_session;
        if queued >= max {
            return Err(CoreError::new(
                ErrorCode::QueueFull,
                format!(
                    "session {} already has {max} queued jobs (jobs.max_queued_per_session)",
                    session.id
                ),
                "wait for the queue to drain, or cancel queued jobs",
            ));
        }
        Ok((session, agent.name(), queued))
    }

    /// A job just written `queued`: its trace begins, `job.queued` is emitted and the session's actor told.
    async fn queued(&self, job: Job, session: &Session, position: usize) -> Queued {
        // The job's trace begins here: its queued line, then every line about it until its end.
        let span = crate::logging::job_span(&job.id);
        span.in_scope(|| {
            tracing::info!(target: "televibe.jobs", session_id = %session.id, position, "Job queued");
        });
        self.core
            .events()
            .emit(
                Scope::job(&job, session),
                Event::JobQueued {
                    instruction_preview: crate::text::preview(&job.instruction),
                    position,
                },
            )
            .instrument(span)
            .await;
        // The session's actor keeps the queue; one that is restarting loads it from the store.
        if let Some(handle) = self.handle(&session.id) {
            handle.enqueued(job.clone());
        } else if let Some(node) = self.core.cluster().elsewhere(session) {
            // Its node takes it up from the store.
            self.core.cluster().wake(&format!("enqueued:{node}")).await;
        }
        Queued { job, position }
    }

    /// Sets the agent a session's instructions run with when they name none (`/agent <name>`).
    pub async fn set_session_agent(
        &self,
        by: &str,
        session_id: &str,
        agent: &str,
    ) -> Result<Session, CoreError> {
        let session = self.get_session(session_id).await?;
        let driver =
            crate::agents::configured_driver(agent.trim(), &self.core.config().agent.names())?;
        if matches!(session.state, SessionState::Closing | SessionState::Closed) {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is {}", session.id, session.state.as_str()),
                "open a new session (create_session) on the same branch",
            ));
        }
        self.core
            .store()
            .set_session_agent(&session.id, driver.name())
            .await?;
        self.core
            .events()
            .audit(
                by,
                super::subject(&session),
                Audited::SessionAgentSet {
                    agent: driver.name().to_string(),
                },
            )
            .await;
        self.get_session(&session.id).await
    }

    /// The running actor of a session, as its typed handle.
    pub fn handle(&self, id: &str) -> Option<SessionHandle> {
        let cell = self.actors().get(id)?.clone();
        Some(SessionHandle::new(id, cell.into()))
    }

    /// Cancels a queued job at once, or stops a running one (TERM, grace, KILL).
    pub async fn cancel_job(&self, by: &str, id: &str) -> Result<Job, CoreError> {
        let job = self.core.jobs().get_job(id).await?;
        if job.status.is_final() {
            return Ok(job);
        }
        if let Some(job) = self.stop_elsewhere(by, &job, false).await? {
            return Ok(job);
        }
        let handle = self.handle(&job.session_id).ok_or_else(|| {
            CoreError::internal(format!(
                "session {} is restarting; retry in a moment",
                job.session_id
            ))
        })?;
        handle.cancel(&job.id, by).await?;
        self.core.jobs().get_job(&job.id).await
    }

    /// The spec's runbook for a stuck job: TERM, grace, KILL, failed "Manual termination", session idle, user told.
    pub async fn kill_job(&self, by: &str, id: &str) -> Result<Job, CoreError> {
        let job = self.core.jobs().get_job(id).await?;
        if job.status.is_final() {
            return Ok(job);
        }
        if let Some(job) = self.stop_elsewhere(by, &job, true).await? {
            return Ok(job);
        }
        self.core
            .events()
            .audit(
                by,
                AuditSubject::job(&job),
                Audited::JobKilled {
                    status: job.status.as_str().to_string(),
                },
            )
            .await;
        let grace = self.core.config().jobs.kill_grace;
        let delivered = match self.handle(&job.session_id) {
            Some(h) => h.kill(&job.id).await,
            None => false,
        };
        if !delivered {
            // No runner owns it: do the runbook here.
            if let Some(pgid) = job.recorded_group() {
                process::terminate_group(pgid, grace).await;
            }
            self.core
                .jobs()
                .end_job(
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
            let now = self.core.jobs().get_job(&job.id).await?;
            if now.status.is_final() || tokio::time::Instant::now() > deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

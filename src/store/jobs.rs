//! Queries and writes of jobs.

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, TransactionTrait,
};

use super::entities::job;
use super::{Store, StoreError};
use crate::domain::{ErrorType, Job, JobKind, JobOutcome, JobStatus};

impl From<job::Model> for Job {
    fn from(m: job::Model) -> Self {
        Job {
            id: m.id,
            session_id: m.session_id,
            // A CHECK constraint keeps the column inside the enum's words.
            kind: JobKind::parse(&m.kind).unwrap_or(JobKind::Agent),
            instruction: m.instruction,
            agent: m.agent,
            // CHECK constraints keep both columns inside their enum's words.
            status: JobStatus::parse(&m.status).unwrap_or(JobStatus::Failed),
            error_type: m.error_type.as_deref().and_then(ErrorType::parse),
            error: m.error,
            exit_code: m.exit_code,
            signal: m.signal,
            pid: m.pid,
            pgid: m.pgid,
            boot_id: m.boot_id,
            leader_start: m.leader_start,
            log_path: m.log_path,
            base_commit: m.base_commit,
            is_error: m.is_error,
            result_subtype: m.result_subtype,
            result_text: m.result_text,
            terminal_reason: m.terminal_reason,
            num_turns: m.num_turns,
            total_cost_usd: m.total_cost_usd,
            input_tokens: m.input_tokens,
            output_tokens: m.output_tokens,
            model_api_status: m.api_error_status,
            permission_denials: m.permission_denials,
            files_changed: m
                .files_changed
                .and_then(|f| serde_json::from_str(&f).ok())
                .unwrap_or_default(),
            diff_stat: m.diff_stat,
            queued_at: m.queued_at,
            started_at: m.started_at,
            finished_at: m.finished_at,
            heartbeat_at: m.heartbeat_at,
            not_before: m.not_before,
            limit_waits: m.limit_waits,
            interruptions: m.interruptions,
        }
    }
}

/// The statuses of a job whose agent runs (or ran, until its work is collected).
fn running() -> [&'static str; 2] {
    [
        JobStatus::Running.as_str(),
        JobStatus::WaitingApproval.as_str(),
    ]
}

/// Why a running job goes back to its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    UsageLimit,
    Interrupted,
    /// The conversation it was to resume was not found: it runs again in a new one.
    NewConversation,
}

/// The statement that queues a job in an open session (no row when it is closing or closed); its FIFO
/// position comes from a sequence taken in the same statement (on PostgreSQL under the jobs' lock,
/// [`super::Numbers::Jobs`], taken first in the same transaction).
pub(super) fn insert_job_statement(
    backend: DbBackend,
    id: String,
    session_id: String,
    instruction: String,
    agent: String,
    kind: JobKind,
) -> Statement {
    super::statement(
        backend,
        "INSERT INTO jobs (id, seq, session_id, instruction, agent, kind, status, queued_at) \
         SELECT ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), id, ?, ?, ?, 'queued', ? \
         FROM sessions WHERE id = ? AND state NOT IN ('closing', 'closed')",
        [
            id.into(),
            instruction.into(),
            agent.into(),
            kind.as_str().into(),
            Utc::now().into(),
            session_id.into(),
        ],
    )
}

impl Store {
    /// Queues an agent's job in an open session; `None` when the session is closing or closed. The FIFO
    /// position comes from a sequence taken in the same statement.
    pub async fn insert_job(
        &self,
        id: &str,
        session_id: &str,
        instruction: &str,
        agent: &str,
    ) -> Result<Option<Job>, StoreError> {
        self.insert_job_of(JobKind::Agent, id, session_id, instruction, agent)
            .await
    }

    /// Queues a job of `kind` as [`Store::insert_job`] does.
    pub async fn insert_job_of(
        &self,
        kind: JobKind,
        id: &str,
        session_id: &str,
        instruction: &str,
        agent: &str,
    ) -> Result<Option<Job>, StoreError> {
        let (id, session_id, instruction, agent) = (
            id.to_string(),
            session_id.to_string(),
            instruction.to_string(),
            agent.to_string(),
        );
        let job_id = id.clone();
        let inserted = self
            .write(|db| async move {
                let stmt = insert_job_statement(
                    db.get_database_backend(),
                    id,
                    session_id,
                    instruction,
                    agent,
                    kind,
                );
                if !super::serialized(&db) {
                    return db.execute_raw(stmt).await.map(|r| r.rows_affected());
                }
                let tx = db.begin().await?;
                super::serialize(&tx, super::Numbers::Jobs).await?;
                let n = tx.execute_raw(stmt).await?.rows_affected();
                tx.commit().await?;
                Ok(n)
            })
            .await?;
        if inserted == 0 {
            return Ok(None);
        }
        self.job(&job_id).await
    }

    pub async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        Ok(job::Entity::find_by_id(id.to_string())
            .one(self.reader())
            .await?
            .map(Job::from))
    }

    /// Jobs whose id starts with `prefix` (at most 2: enough to tell unique from ambiguous).
    pub async fn jobs_by_prefix(&self, prefix: &str) -> Result<Vec<Job>, StoreError> {
        Ok(job::Entity::find()
            .filter(job::Column::Id.starts_with(prefix))
            .limit(2)
            .all(self.reader())
            .await?
            .into_iter()
            .map(Job::from)
            .collect())
    }

    /// Newest first.
    pub async fn jobs(
        &self,
        session_id: Option<&str>,
        status: Option<JobStatus>,
        limit: u64,
    ) -> Result<Vec<Job>, StoreError> {
        self.jobs_before(session_id, status, limit, None).await
    }

    /// Like `jobs`, only jobs queued before the job `before` (a page after the one that ended with it).
    pub async fn jobs_before(
        &self,
        session_id: Option<&str>,
        status: Option<JobStatus>,
        limit: u64,
        before: Option<&str>,
    ) -> Result<Vec<Job>, StoreError> {
        let mut q = job::Entity::find()
            .order_by_desc(job::Column::Seq)
            .limit(limit);
        if let Some(b) = before {
            let seq = job::Entity::find_by_id(b.to_string())
                .one(self.reader())
                .await?
                .map(|j| j.seq)
                .unwrap_or(i64::MAX);
            q = q.filter(job::Column::Seq.lt(seq));
        }
        if let Some(s) = session_id {
            q = q.filter(job::Column::SessionId.eq(s));
        }
        if let Some(st) = status {
            q = q.filter(job::Column::Status.eq(st.as_str()));
        }
        Ok(q.all(self.reader())
            .await?
            .into_iter()
            .map(Job::from)
            .collect())
    }

    /// Queued jobs of a session in FIFO order.
    pub async fn queued_jobs(&self, session_id: &str) -> Result<Vec<Job>, StoreError> {
        Ok(job::Entity::find()
            .filter(job::Column::SessionId.eq(session_id))
            .filter(job::Column::Status.eq(JobStatus::Queued.as_str()))
            .order_by_asc(job::Column::Seq)
            .all(self.reader())
            .await?
            .into_iter()
            .map(Job::from)
            .collect())
    }

    /// Sessions with a queued job or one waiting for an approval.
    pub async fn sessions_with_waiting_jobs(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .reader()
            .query_all_raw(Statement::from_string(
                self.backend(),
                "SELECT DISTINCT session_id FROM jobs WHERE status IN ('queued', 'waiting_approval') \
                 ORDER BY session_id",
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get_by_index::<String>(0).ok())
            .collect())
    }

    /// Jobs a crash could have left mid-run.
    pub async fn unfinished_running_jobs(&self) -> Result<Vec<Job>, StoreError> {
        Ok(job::Entity::find()
            .filter(job::Column::Status.is_in(running()))
            .all(self.reader())
            .await?
            .into_iter()
            .map(Job::from)
            .collect())
    }

    /// Moves a queued job to running; false when it is no longer queued (canceled meanwhile).
    /// A queued job starts: its process (the leader of its group; `None` for a job that runs no process of
    /// its own, a push), log and base commit. False when it is not queued any more.
    pub async fn mark_job_running(
        &self,
        id: &str,
        pid: Option<i32>,
        log_path: &str,
        base_commit: Option<String>,
    ) -> Result<bool, StoreError> {
        let (id, log_path) = (id.to_string(), log_path.to_string());
        let boot = pid.and_then(|_| crate::procs::boot_id());
        let start = pid.and_then(crate::procs::start_ticks);
        let res = self
            .write(|db| async move {
                let now = Utc::now();
                job::Entity::update_many()
                    .col_expr(
                        job::Column::Status,
                        Expr::value(JobStatus::Running.as_str()),
                    )
                    .col_expr(job::Column::Pid, Expr::value(pid))
                    .col_expr(job::Column::Pgid, Expr::value(pid))
                    .col_expr(job::Column::BootId, Expr::value(boot))
                    .col_expr(
                        job::Column::LeaderStart,
                        Expr::value(start.map(|t| t as i64)),
                    )
                    .col_expr(job::Column::LogPath, Expr::value(log_path))
                    .col_expr(job::Column::BaseCommit, Expr::value(base_commit))
                    .col_expr(job::Column::StartedAt, Expr::value(now))
                    .col_expr(job::Column::HeartbeatAt, Expr::value(now))
                    .filter(job::Column::Id.eq(id))
                    .filter(job::Column::Status.eq(JobStatus::Queued.as_str()))
                    .exec(&db)
                    .await
            })
            .await?;
        Ok(res.rows_affected > 0)
    }

    pub async fn job_heartbeat(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(|db| async move {
            job::Entity::update_many()
                .col_expr(job::Column::HeartbeatAt, Expr::value(Utc::now()))
                .filter(job::Column::Id.eq(id))
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Puts a running job back in its session's queue, at the head it had (its place is its sequence):
    /// for a usage limit (`not_before` the reset; `limit_waits` counts it) or after a daemon restart cut
    /// it (`interruptions` counts it). Its run's traces go; false when it is not running any more (a job
    /// that ended is never run again).
    pub async fn requeue_job(
        &self,
        id: &str,
        not_before: Option<chrono::DateTime<Utc>>,
        why: Requeue,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        let res = self
            .write(|db| async move {
                let count = match why {
                    Requeue::UsageLimit => Some(job::Column::LimitWaits),
                    Requeue::Interrupted => Some(job::Column::Interruptions),
                    Requeue::NewConversation => None,
                };
                let mut update = job::Entity::update_many();
                if let Some(count) = count {
                    update = update.col_expr(count, Expr::col(count).add(1));
                }
                update
                    .col_expr(job::Column::Status, Expr::value(JobStatus::Queued.as_str()))
                    .col_expr(job::Column::NotBefore, Expr::value(not_before))
                    .col_expr(job::Column::Pid, Expr::value(Option::<i32>::None))
                    .col_expr(job::Column::Pgid, Expr::value(Option::<i32>::None))
                    .col_expr(job::Column::BootId, Expr::value(Option::<String>::None))
                    .col_expr(job::Column::LeaderStart, Expr::value(Option::<i64>::None))
                    .col_expr(job::Column::ExitCode, Expr::value(Option::<i32>::None))
                    .col_expr(job::Column::Signal, Expr::value(Option::<i32>::None))
                    .col_expr(
                        job::Column::StartedAt,
                        Expr::value(Option::<chrono::DateTime<Utc>>::None),
                    )
                    .col_expr(
                        job::Column::HeartbeatAt,
                        Expr::value(Option::<chrono::DateTime<Utc>>::None),
                    )
                    .filter(job::Column::Id.eq(id))
                    .filter(job::Column::Status.is_in(running()))
                    .exec(&db)
                    .await
            })
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// The agent of a running job exited (its status stays until the job's work is collected): a job
    /// whose agent ended is not run again after a restart.
    pub async fn job_exited(
        &self,
        id: &str,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        // A kill leaves no code; `-1` still says the agent ended.
        let code = if code.is_none() && signal.is_none() {
            Some(-1)
        } else {
            code
        };
        self.write(|db| async move {
            job::Entity::update_many()
                .col_expr(job::Column::ExitCode, Expr::value(code))
                .col_expr(job::Column::Signal, Expr::value(signal))
                .filter(job::Column::Id.eq(id))
                .filter(job::Column::Status.is_in(running()))
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Writes a final state, only if the job is not final yet (the first ending wins).
    pub async fn finish_job(&self, id: &str, o: JobOutcome) -> Result<bool, StoreError> {
        let id = id.to_string();
        let status = o.status.unwrap_or(JobStatus::Failed);
        let files = serde_json::to_string(&o.files_changed).unwrap_or_else(|_| "[]".into());
        let changed = self
            .write(|db| async move {
                job::Entity::update_many()
                    .col_expr(job::Column::Status, Expr::value(status.as_str()))
                    .col_expr(
                        job::Column::ErrorType,
                        Expr::value(o.error_type.map(ErrorType::as_str)),
                    )
                    .col_expr(job::Column::Error, Expr::value(o.error))
                    .col_expr(job::Column::ExitCode, Expr::value(o.exit_code))
                    .col_expr(job::Column::Signal, Expr::value(o.signal))
                    .col_expr(job::Column::IsError, Expr::value(o.is_error))
                    .col_expr(job::Column::ResultSubtype, Expr::value(o.result_subtype))
                    .col_expr(job::Column::ResultText, Expr::value(o.result_text))
                    .col_expr(job::Column::TerminalReason, Expr::value(o.terminal_reason))
                    .col_expr(job::Column::NumTurns, Expr::value(o.num_turns))
                    .col_expr(job::Column::TotalCostUsd, Expr::value(o.total_cost_usd))
                    .col_expr(job::Column::InputTokens, Expr::value(o.input_tokens))
                    .col_expr(job::Column::OutputTokens, Expr::value(o.output_tokens))
                    .col_expr(job::Column::ApiErrorStatus, Expr::value(o.model_api_status))
                    .col_expr(
                        job::Column::PermissionDenials,
                        Expr::value(o.permission_denials),
                    )
                    .col_expr(job::Column::FilesChanged, Expr::value(files))
                    .col_expr(job::Column::DiffStat, Expr::value(o.diff_stat))
                    .col_expr(job::Column::FinishedAt, Expr::value(Utc::now()))
                    .filter(job::Column::Id.eq(id))
                    .filter(
                        job::Column::Status.is_not_in(
                            JobStatus::ALL
                                .iter()
                                .filter(|s| s.is_final())
                                .map(|s| s.as_str()),
                        ),
                    )
                    .exec(&db)
                    .await
            })
            .await?;
        Ok(changed.rows_affected > 0)
    }

    /// Records agent `agent`'s conversation in session `session_id` (`None`: it has none any more):
    /// Claude Code's in `conversation_id` (the column it always had), every other agent's in the
    /// `conversations` object (`all` is the session's whole map, written as is).
    pub async fn set_conversation_id(
        &self,
        session_id: &str,
        agent: &str,
        conversation: Option<&str>,
        all: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let (sql, value) = if agent == crate::domain::CLAUDE {
            (
                "UPDATE sessions SET conversation_id = ?, last_activity_at = ? WHERE id = ?",
                conversation.map(str::to_string),
            )
        } else {
            let others: std::collections::BTreeMap<_, _> = all
                .iter()
                .filter(|(k, _)| *k != crate::domain::CLAUDE)
                .collect();
            (
                "UPDATE sessions SET conversations = ?, last_activity_at = ? WHERE id = ?",
                Some(serde_json::to_string(&others).unwrap_or_else(|_| "{}".into())),
            )
        };
        let sid = session_id.to_string();
        self.write(|db| async move {
            db.execute_raw(super::statement(
                db.get_database_backend(),
                sql,
                [value.into(), Utc::now().into(), sid.into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }

    /// Sets session `session_id`'s default agent.
    pub async fn set_session_agent(&self, session_id: &str, agent: &str) -> Result<(), StoreError> {
        let (sid, agent) = (session_id.to_string(), agent.to_string());
        self.write(|db| async move {
            db.execute_raw(super::statement(
                db.get_database_backend(),
                "UPDATE sessions SET agent = ? WHERE id = ?",
                [agent.into(), sid.into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }
}

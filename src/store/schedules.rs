//! Queries and writes of scheduled instructions. A run advances its schedule and queues its job in one
//! transaction, so an occurrence queues exactly one job whatever crashes around it.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::entities::schedule;
use super::jobs::insert_job_statement;
use super::{Store, StoreError};
use crate::domain::{Job, ScheduledInstruction};

impl From<schedule::Model> for ScheduledInstruction {
    fn from(m: schedule::Model) -> Self {
        ScheduledInstruction {
            id: m.id,
            session_id: m.session_id,
            cron: m.cron,
            instruction: m.instruction,
            agent: m.agent,
            created_by: m.created_by,
            created_at: m.created_at,
            last_run_at: m.last_run_at,
            last_job_id: m.last_job_id,
            next_run_at: m.next_run_at,
            runs: m.runs,
            removed_at: m.removed_at,
            removed_by: m.removed_by,
            removed_reason: m.removed_reason,
        }
    }
}

/// A schedule to write.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub session_id: String,
    pub cron: String,
    pub instruction: String,
    pub agent: Option<String>,
    pub created_by: String,
    pub next_run_at: DateTime<Utc>,
}

/// One run of a schedule: the occurrence it stands for, when the schedule runs next, and the job it queues.
#[derive(Debug, Clone)]
pub struct ScheduleRun {
    pub schedule_id: String,
    /// The schedule's `runs` as read: the run happens only if no other run came in between.
    pub runs: i64,
    pub occurrence: DateTime<Utc>,
    pub next_run_at: DateTime<Utc>,
    pub job_id: String,
    pub session_id: String,
    pub instruction: String,
    pub agent: String,
}

/// What a run did.
#[derive(Debug, Clone)]
pub enum ScheduleRunOutcome {
    /// The schedule advanced and its job is queued.
    Queued(Box<Job>),
    /// Another run came first, or the schedule was removed: nothing changed.
    Stale,
    /// The session is closing or closed: nothing changed.
    SessionClosed,
}

impl Store {
    /// Writes a schedule of an open session under the next free `SC<n>`; `None` when the session is closing
    /// or closed. Removed schedules keep their rows, so an id is never given twice.
    pub async fn insert_schedule(
        &self,
        new: &NewSchedule,
    ) -> Result<Option<ScheduledInstruction>, StoreError> {
        let new = new.clone();
        let id = self
            .write(|db| async move {
                let stmt = super::statement(
                        db.get_database_backend(),
                        "INSERT INTO schedules (id, seq, session_id, cron, instruction, agent, created_by, \
                         created_at, next_run_at) \
                         SELECT 'SC' || n.seq, n.seq, s.id, ?, ?, ?, ?, ?, ? \
                         FROM (SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM schedules) n, sessions s \
                         WHERE s.id = ? AND s.state NOT IN ('closing', 'closed') RETURNING id",
                        [
                            new.cron.into(),
                            new.instruction.into(),
                            new.agent.into(),
                            new.created_by.into(),
                            Utc::now().into(),
                            new.next_run_at.into(),
                            new.session_id.into(),
                        ],
                    );
                if !super::serialized(&db) {
                    let row = db.query_one_raw(stmt).await?;
                    return Ok(row.and_then(|r| r.try_get_by_index::<String>(0).ok()));
                }
                let tx = db.begin().await?;
                super::serialize(&tx, super::Numbers::Schedules).await?;
                let row = tx.query_one_raw(stmt).await?;
                tx.commit().await?;
                Ok(row.and_then(|r| r.try_get_by_index::<String>(0).ok()))
            })
            .await?;
        match id {
            Some(id) => self.schedule(&id).await,
            None => Ok(None),
        }
    }

    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduledInstruction>, StoreError> {
        Ok(schedule::Entity::find_by_id(id.to_string())
            .one(self.reader())
            .await?
            .map(ScheduledInstruction::from))
    }

    /// Schedules not removed, of one session or all, oldest first.
    pub async fn active_schedules(
        &self,
        session_id: Option<&str>,
    ) -> Result<Vec<ScheduledInstruction>, StoreError> {
        let mut q = schedule::Entity::find().filter(schedule::Column::RemovedAt.is_null());
        if let Some(s) = session_id {
            q = q.filter(schedule::Column::SessionId.eq(s));
        }
        Ok(q.order_by_asc(schedule::Column::Seq)
            .all(self.reader())
            .await?
            .into_iter()
            .map(ScheduledInstruction::from)
            .collect())
    }

    /// Removes a schedule (it stays as history); false when it was removed already.
    pub async fn remove_schedule(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let (id, by, reason) = (id.to_string(), by.to_string(), reason.to_string());
        self.write(|db| async move {
            db.execute_raw(super::statement(
                db.get_database_backend(),
                "UPDATE schedules SET removed_at = ?, removed_by = ?, removed_reason = ? \
                 WHERE id = ? AND removed_at IS NULL",
                [Utc::now().into(), by.into(), reason.into(), id.into()],
            ))
            .await
            .map(|r| r.rows_affected() == 1)
        })
        .await
    }

    /// Moves a schedule on to `next` without a run (a skipped occurrence); false when another run came
    /// first or it was removed.
    pub async fn skip_schedule_run(
        &self,
        id: &str,
        runs: i64,
        next: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(|db| async move {
            db.execute_raw(super::statement(
                db.get_database_backend(),
                "UPDATE schedules SET next_run_at = ? WHERE id = ? AND runs = ? AND removed_at IS NULL",
                [next.into(), id.into(), runs.into()],
            ))
            .await
            .map(|r| r.rows_affected() == 1)
        })
        .await
    }

    /// One run: the schedule advances (`runs`, `last_run_at`, `last_job_id`, `next_run_at`) and the job is
    /// queued in the same transaction, or neither happens.
    pub async fn run_schedule(&self, run: &ScheduleRun) -> Result<ScheduleRunOutcome, StoreError> {
        let run = run.clone();
        let job_id = run.job_id.clone();
        let queued = self
            .write(|db| async move {
                let tx = db.begin().await?;
                let moved = tx
                    .execute_raw(super::statement(
                        tx.get_database_backend(),
                        "UPDATE schedules SET runs = runs + 1, last_run_at = ?, last_job_id = ?, \
                         next_run_at = ? WHERE id = ? AND runs = ? AND removed_at IS NULL",
                        [
                            run.occurrence.into(),
                            run.job_id.clone().into(),
                            run.next_run_at.into(),
                            run.schedule_id.into(),
                            run.runs.into(),
                        ],
                    ))
                    .await?
                    .rows_affected();
                if moved != 1 {
                    tx.rollback().await?;
                    return Ok(Some(false));
                }
                super::serialize(&tx, super::Numbers::Jobs).await?;
                let inserted = tx
                    .execute_raw(insert_job_statement(
                        tx.get_database_backend(),
                        run.job_id,
                        run.session_id,
                        run.instruction,
                        run.agent,
                        crate::domain::JobKind::Agent,
                    ))
                    .await?
                    .rows_affected();
                if inserted != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                tx.commit().await?;
                Ok(Some(true))
            })
            .await?;
        Ok(match queued {
            Some(true) => match self.job(&job_id).await? {
                Some(job) => ScheduleRunOutcome::Queued(Box::new(job)),
                None => ScheduleRunOutcome::Stale,
            },
            Some(false) => ScheduleRunOutcome::Stale,
            None => ScheduleRunOutcome::SessionClosed,
        })
    }
}

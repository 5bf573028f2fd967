//! Append-only records: audit rows and the events outbox; job counts used by sessions.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};

use super::entities::{audit, event};
use super::{Store, StoreError};
use crate::domain::{AuditRecord, OutboxEvent};

/// Key-value rows kept per job, named `<prefix><job id>` (a front's values about one job: the Telegram
/// tracker's message, whether its long result went out as a document). They go with their job when it is
/// pruned.
pub const JOB_KV_PREFIXES: &[&str] = &["telegram.tracker.", "telegram.result_file."];

impl Store {
    pub async fn insert_audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
        let am = audit::ActiveModel {
            event: Set(r.event.clone()),
            actor: Set(r.actor.clone()),
            project_id: Set(r.project_id.clone()),
            session_id: Set(r.session_id.clone()),
            job_id: Set(r.job_id.clone()),
            details: Set(r.details.to_string()),
            created_at: Set(r.timestamp),
            ..Default::default()
        };
        self.write(|db| async move { am.insert(&db).await.map(|_| ()) })
            .await
    }

    /// Deletes audit rows recorded before `cutoff` (`logging.audit_retention_days`); returns how many.
    pub async fn delete_audit_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        self.write(|db| async move {
            audit::Entity::delete_many()
                .filter(audit::Column::CreatedAt.lt(cutoff))
                .exec(&db)
                .await
                .map(|r| r.rows_affected)
        })
        .await
    }

    /// Deletes delivered outbox rows delivered before `cutoff`, in batches so no write waits long; returns
    /// how many went. Undelivered rows are never deleted.
    pub async fn prune_delivered_events(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        in_batches(5000, || {
            self.write(|db| async move {
                db.execute_raw(super::statement(
                    db.get_database_backend(),
                    "DELETE FROM events WHERE id IN (SELECT id FROM events \
                     WHERE delivered_at IS NOT NULL AND delivered_at < ? LIMIT 5000)",
                    [cutoff.into()],
                ))
                .await
                .map(|r| r.rows_affected())
            })
        })
        .await
    }

    /// Deletes finished jobs (done, failed, canceled) that finished before `cutoff`, with their approvals,
    /// outbox rows and the key-value rows kept per job ([`JOB_KV_PREFIXES`]), in batches; a job with an
    /// undelivered outbox row stays until it is delivered. Returns how many jobs went.
    pub async fn prune_finished_jobs(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        const OLD: &str = "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? \
             AND status IN ('done','failed','canceled') \
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.job_id = jobs.id AND e.delivered_at IS NULL) \
             LIMIT 2000";
        in_batches(2000, || {
            self.write(|db| async move {
                let tx = db.begin().await?;
                tx.execute_unprepared(
                    "CREATE TEMP TABLE IF NOT EXISTS prune_jobs (id TEXT PRIMARY KEY)",
                )
                .await?;
                tx.execute_unprepared("DELETE FROM prune_jobs").await?;
                tx.execute_raw(super::statement(
                    tx.get_database_backend(),
                    &format!("INSERT INTO prune_jobs {OLD}"),
                    [cutoff.into()],
                ))
                .await?;
                for table in ["approvals", "events"] {
                    tx.execute_unprepared(&format!(
                        "DELETE FROM {table} WHERE job_id IN (SELECT id FROM prune_jobs)"
                    ))
                    .await?;
                }
                for prefix in JOB_KV_PREFIXES {
                    tx.execute_unprepared(&format!(
                        "DELETE FROM kv WHERE key IN (SELECT '{prefix}' || id FROM prune_jobs)"
                    ))
                    .await?;
                }
                let n = tx
                    .execute_unprepared("DELETE FROM jobs WHERE id IN (SELECT id FROM prune_jobs)")
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n)
            })
        })
        .await
    }

    /// Audit rows of one event type, oldest first (for tests and `doctor`).
    pub async fn audit_events(
        &self,
        event_name: &str,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>, StoreError> {
        let rows = self
            .reader()
            .query_all_raw(super::statement(
                self.backend(),
                "SELECT actor, project_id, session_id FROM audit WHERE event = ? ORDER BY id",
                [event_name.into()],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.try_get_by_index::<String>(0).unwrap_or_default(),
                    r.try_get_by_index::<Option<String>>(1).unwrap_or_default(),
                    r.try_get_by_index::<Option<String>>(2).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Adds an event to the outbox (delivered later by the notifier).
    pub async fn insert_event(
        &self,
        event_type: &str,
        project_id: Option<&str>,
        session_id: Option<&str>,
        job_id: Option<&str>,
        payload: serde_json::Value,
    ) -> Result<i64, StoreError> {
        let am = event::ActiveModel {
            event_type: Set(event_type.to_string()),
            project_id: Set(project_id.map(str::to_string)),
            session_id: Set(session_id.map(str::to_string)),
            job_id: Set(job_id.map(str::to_string)),
            payload: Set(payload.to_string()),
            created_at: Set(chrono::Utc::now()),
            delivered_at: Set(None),
            ..Default::default()
        };
        self.write(|db| async move {
            if !super::serialized(&db) {
                return am.insert(&db).await.map(|m| m.id);
            }
            // Ids commit in their order: the notifier reads the outbox with `id > last`.
            let tx = db.begin().await?;
            super::serialize(&tx, super::Numbers::Events).await?;
            let id = am.insert(&tx).await?.id;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    /// Undelivered outbox rows after `after_id`, oldest first.
    pub async fn undelivered_events(
        &self,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(event::Entity::find()
            .filter(event::Column::Id.gt(after_id))
            .filter(event::Column::DeliveredAt.is_null())
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .all(self.reader())
            .await?
            .into_iter()
            .map(outbox_event)
            .collect())
    }

    /// Marks outbox rows delivered (only once: the first delivery time stays).
    pub async fn mark_delivered(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.write(|db| async move {
            event::Entity::update_many()
                .col_expr(
                    event::Column::DeliveredAt,
                    sea_orm::sea_query::Expr::value(Some(chrono::Utc::now())),
                )
                .filter(event::Column::Id.is_in(ids))
                .filter(event::Column::DeliveredAt.is_null())
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }

    /// How many outbox events of a type exist.
    pub async fn reader_count_events(&self, event_type: &str) -> Result<u64, StoreError> {
        let row = self
            .reader()
            .query_one_raw(super::statement(
                self.backend(),
                "SELECT COUNT(*) FROM events WHERE event_type = ?",
                [event_type.into()],
            ))
            .await?;
        Ok(row
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0) as u64)
    }

    /// Outbox events of a job, oldest first: (event type, payload).
    pub async fn events_of_job(
        &self,
        job_id: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let rows = self
            .reader()
            .query_all_raw(super::statement(
                self.backend(),
                "SELECT event_type, payload FROM events WHERE job_id = ? ORDER BY id",
                [job_id.into()],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let t = r.try_get_by_index::<String>(0).unwrap_or_default();
                let p = r.try_get_by_index::<String>(1).unwrap_or_default();
                (t, serde_json::from_str(&p).unwrap_or_default())
            })
            .collect())
    }

    /// Outbox rows of a job after the row `after_id`, oldest first (for callers following a job).
    pub async fn job_events_after(
        &self,
        job_id: &str,
        after_id: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(event::Entity::find()
            .filter(event::Column::JobId.eq(job_id))
            .filter(event::Column::Id.gt(after_id))
            .order_by_asc(event::Column::Id)
            .limit(500)
            .all(self.reader())
            .await?
            .into_iter()
            .map(outbox_event)
            .collect())
    }

    /// Jobs of a session that hold it busy (running or waiting for an approval).
    pub async fn active_jobs_of_session(&self, session_id: &str) -> Result<u64, StoreError> {
        let row = self
            .reader()
            .query_one_raw(super::statement(
                self.backend(),
                "SELECT COUNT(*) FROM jobs WHERE session_id = ? AND status IN ('running', 'waiting_approval')",
                [session_id.into()],
            ))
            .await?;
        Ok(row
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0) as u64)
    }
}

/// An outbox row as the domain has it.
fn outbox_event(m: event::Model) -> OutboxEvent {
    OutboxEvent {
        id: m.id,
        event_type: m.event_type,
        project_id: m.project_id,
        session_id: m.session_id,
        job_id: m.job_id,
        payload: serde_json::from_str(&m.payload).unwrap_or_default(),
        created_at: m.created_at,
    }
}

/// Runs `one` (a delete of at most `batch` rows) until it deletes fewer, yielding between batches so other
/// writes get their turn; answers how many rows went in all.
async fn in_batches<F, Fut>(batch: u64, mut one: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = one().await?;
        total += n;
        if n < batch {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

//! Approvals and session grants.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};

use super::entities::approval;
use super::{Store, StoreError};
use crate::domain::{Approval, ApprovalState};

impl From<approval::Model> for Approval {
    fn from(m: approval::Model) -> Self {
        Approval {
            id: m.id,
            job_id: m.job_id,
            session_id: m.session_id,
            tool_name: m.tool_name,
            tool_input: serde_json::from_str(&m.tool_input).unwrap_or_default(),
            tool_use_id: m.tool_use_id,
            scope: m.scope,
            // A CHECK constraint keeps the column inside the enum's words.
            state: ApprovalState::parse(&m.state).unwrap_or(ApprovalState::Expired),
            decision: m.decision,
            decided_by: m.decided_by,
            requested_at: m.requested_at,
            decided_at: m.decided_at,
            expires_at: m.expires_at,
            telegram_chat_id: m.telegram_chat_id,
            telegram_message_id: m.telegram_message_id,
        }
    }
}

impl Store {
    pub async fn insert_approval(&self, a: &Approval) -> Result<(), StoreError> {
        let am = approval::ActiveModel {
            id: Set(a.id.clone()),
            job_id: Set(a.job_id.clone()),
            session_id: Set(a.session_id.clone()),
            tool_name: Set(a.tool_name.clone()),
            tool_input: Set(a.tool_input.to_string()),
            tool_use_id: Set(a.tool_use_id.clone()),
            scope: Set(a.scope.clone()),
            state: Set(a.state.as_str().to_string()),
            decision: Set(a.decision.clone()),
            decided_by: Set(a.decided_by.clone()),
            requested_at: Set(a.requested_at),
            decided_at: Set(a.decided_at),
            expires_at: Set(a.expires_at),
            telegram_chat_id: Set(None),
            telegram_message_id: Set(None),
        };
        self.write(|db| async move { am.insert(&db).await.map(|_| ()) })
            .await
    }

    pub async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        Ok(approval::Entity::find_by_id(id.to_string())
            .one(self.reader())
            .await?
            .map(Approval::from))
    }

    pub async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        Ok(approval::Entity::find()
            .filter(approval::Column::State.eq(ApprovalState::Pending.as_str()))
            .order_by_asc(approval::Column::RequestedAt)
            .all(self.reader())
            .await?
            .into_iter()
            .map(Approval::from)
            .collect())
    }

    /// Decides a pending approval; false when it was decided before (the first decision wins).
    pub async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        decision: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        let (id, decision, by) = (id.to_string(), decision.to_string(), by.to_string());
        let res = self
            .write(|db| async move {
                approval::Entity::update_many()
                    .col_expr(approval::Column::State, Expr::value(state.as_str()))
                    .col_expr(approval::Column::Decision, Expr::value(Some(decision)))
                    .col_expr(approval::Column::DecidedBy, Expr::value(Some(by)))
                    .col_expr(approval::Column::DecidedAt, Expr::value(Some(Utc::now())))
                    .filter(approval::Column::Id.eq(id))
                    .filter(approval::Column::State.eq(ApprovalState::Pending.as_str()))
                    .exec(&db)
                    .await
            })
            .await?;
        Ok(res.rows_affected > 0)
    }

    pub async fn set_approval_message(
        &self,
        id: &str,
        chat_id: i64,
        message_id: i64,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(|db| async move {
            approval::Entity::update_many()
                .col_expr(approval::Column::TelegramChatId, Expr::value(Some(chat_id)))
                .col_expr(
                    approval::Column::TelegramMessageId,
                    Expr::value(Some(message_id)),
                )
                .filter(approval::Column::Id.eq(id))
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Remembers "approve for this session" for a tool and a command or path.
    pub async fn insert_grant(
        &self,
        session_id: &str,
        tool: &str,
        pattern: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        let (s, t, p, b) = (
            session_id.to_string(),
            tool.to_string(),
            pattern.to_string(),
            by.to_string(),
        );
        self.write(|db| async move {
            db.execute_raw(super::statement(
                db.get_database_backend(),
                "INSERT INTO session_grants (session_id, tool_name, pattern, granted_by, created_at) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
                [s.into(), t.into(), p.into(), b.into(), Utc::now().into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }

    /// The grants of a session: (tool, pattern).
    pub async fn grants(&self, session_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .reader()
            .query_all_raw(super::statement(
                self.backend(),
                "SELECT tool_name, pattern FROM session_grants WHERE session_id = ?",
                [session_id.into()],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.try_get_by_index::<String>(0).unwrap_or_default(),
                    r.try_get_by_index::<String>(1).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Approvals pending when the daemon stopped: expired now (their jobs did not survive).
    pub async fn expire_pending_approvals(
        &self,
        at: DateTime<Utc>,
        which: impl Fn(&Approval) -> bool,
    ) -> Result<Vec<Approval>, StoreError> {
        let mut pending = self.pending_approvals().await?;
        pending.retain(|a| which(a));
        for a in &pending {
            let id = a.id.clone();
            self.write(|db| async move {
                approval::Entity::update_many()
                    .col_expr(
                        approval::Column::State,
                        Expr::value(ApprovalState::Expired.as_str()),
                    )
                    .col_expr(
                        approval::Column::Decision,
                        Expr::value(Some("expired".to_string())),
                    )
                    .col_expr(approval::Column::DecidedAt, Expr::value(Some(at)))
                    .filter(approval::Column::Id.eq(id))
                    .filter(approval::Column::State.eq(ApprovalState::Pending.as_str()))
                    .exec(&db)
                    .await
                    .map(|_| ())
            })
            .await?;
        }
        Ok(pending)
    }

    /// Moves a job between running and waiting_approval (only in that pair).
    pub async fn set_job_waiting(&self, job_id: &str, waiting: bool) -> Result<(), StoreError> {
        let (from, to) = if waiting {
            ("running", "waiting_approval")
        } else {
            ("waiting_approval", "running")
        };
        let id = job_id.to_string();
        self.write(|db| async move {
            db.execute_raw(super::statement(
                db.get_database_backend(),
                "UPDATE jobs SET status = ? WHERE id = ? AND status = ?",
                [to.into(), id.into(), from.into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }
}

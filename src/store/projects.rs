//! Queries and writes of projects and sessions.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};

use super::entities::{project, session};
use super::{Store, StoreError};
use crate::domain::{NewSession, Project, Session, SessionState};

impl From<project::Model> for Project {
    fn from(m: project::Model) -> Self {
        Project {
            id: m.id,
            name: m.name,
            repo_path: m.repo_path,
            default_branch: m.default_branch,
            remote_url: m.remote_url,
            created_at: m.created_at,
            trusted: m.trusted,
            node: m.node,
        }
    }
}

impl From<session::Model> for Session {
    fn from(m: session::Model) -> Self {
        Session {
            id: m.id,
            project_id: m.project_id,
            branch: m.branch,
            base_branch: m.base_branch,
            branch_created: m.branch_created,
            worktree_path: m.worktree_path,
            worktree_missing: m.worktree_missing,
            // A CHECK constraint keeps the column inside the enum's words.
            state: SessionState::parse(&m.state).unwrap_or(SessionState::Closed),
            conversations: {
                let mut all: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&m.conversations).unwrap_or_default();
                if let Some(c) = &m.conversation_id {
                    all.insert(crate::domain::CLAUDE.into(), c.clone());
                }
                all
            },
            conversation_id: m.conversation_id,
            agent: m.agent,
            waiting: None,
            unavailable: None,
            created_at: m.created_at,
            last_activity_at: m.last_activity_at,
            closed_at: m.closed_at,
            node: m.node,
        }
    }
}

impl Store {
    pub async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        Ok(project::Entity::find()
            .order_by_asc(project::Column::Id)
            .all(self.reader())
            .await?
            .into_iter()
            .map(Project::from)
            .collect())
    }

    pub async fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        Ok(project::Entity::find_by_id(id.to_string())
            .one(self.reader())
            .await?
            .map(Project::from))
    }

    pub async fn project_by_path(&self, path: &str) -> Result<Option<Project>, StoreError> {
        Ok(project::Entity::find()
            .filter(project::Column::RepoPath.eq(path))
            .one(self.reader())
            .await?
            .map(Project::from))
    }

    pub async fn insert_project(&self, p: &Project) -> Result<(), StoreError> {
        let am = project::ActiveModel {
            id: Set(p.id.clone()),
            name: Set(p.name.clone()),
            repo_path: Set(p.repo_path.clone()),
            default_branch: Set(p.default_branch.clone()),
            remote_url: Set(p.remote_url.clone()),
            created_at: Set(p.created_at),
            trusted: Set(p.trusted),
            node: Set(p.node.clone()),
        };
        self.write(|db| async move { am.insert(&db).await.map(|_| ()) })
            .await
    }

    pub async fn set_project_trusted(&self, id: &str, trusted: bool) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(|db| async move {
            project::Entity::update_many()
                .col_expr(project::Column::Trusted, Expr::value(trusted))
                .filter(project::Column::Id.eq(id))
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Sessions, newest first; closed ones only when asked.
    pub async fn sessions(
        &self,
        project_id: Option<&str>,
        include_closed: bool,
    ) -> Result<Vec<Session>, StoreError> {
        let mut q = session::Entity::find().order_by_desc(session::Column::Seq);
        if let Some(p) = project_id {
            q = q.filter(session::Column::ProjectId.eq(p));
        }
        if !include_closed {
            q = q.filter(session::Column::State.ne(SessionState::Closed.as_str()));
        }
        Ok(q.all(self.reader())
            .await?
            .into_iter()
            .map(Session::from)
            .collect())
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(session::Entity::find()
            .filter(session::Column::Id.eq(id))
            .one(self.reader())
            .await?
            .map(Session::from))
    }

    /// The open session on a branch of a project, if any.
    pub async fn open_session_on_branch(
        &self,
        project_id: &str,
        branch: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(session::Entity::find()
            .filter(session::Column::ProjectId.eq(project_id))
            .filter(session::Column::Branch.eq(branch))
            .filter(session::Column::State.ne(SessionState::Closed.as_str()))
            .one(self.reader())
            .await?
            .map(Session::from))
    }

    pub async fn count_open_sessions(&self, project_id: Option<&str>) -> Result<u64, StoreError> {
        let mut q = session::Entity::find()
            .filter(session::Column::State.ne(SessionState::Closed.as_str()));
        if let Some(p) = project_id {
            q = q.filter(session::Column::ProjectId.eq(p));
        }
        Ok(q.count(self.reader()).await?)
    }

    /// The number the next session gets: one above every number ever used. SQLite: read from the
    /// counter (the caller serialises creations). PostgreSQL: reserved from the `sessions.seq` sequence
    /// (a write), so two daemons on one database never get the same number.
    pub async fn next_session_seq(&self) -> Result<i64, StoreError> {
        match self.engine() {
            super::Engine::Sqlite => Ok(super::sqlite::next_session_seq(self.reader()).await?),
            super::Engine::Postgres => {
                self.write(|db| async move {
                    let tx = db.begin().await?;
                    super::serialize(&tx, super::Numbers::Sessions).await?;
                    let seq = super::postgres::next_session_seq(&tx).await?;
                    tx.commit().await?;
                    Ok(seq)
                })
                .await
            }
        }
    }

    /// Gives back a number [`Store::next_session_seq`] reserved for a creation that was refused, when no
    /// later number was taken since (PostgreSQL; SQLite reserves nothing).
    pub async fn release_session_seq(&self, seq: i64) -> Result<(), StoreError> {
        if !self.is_postgres() {
            return Ok(());
        }
        self.write(|db| async move {
            let tx = db.begin().await?;
            super::serialize(&tx, super::Numbers::Sessions).await?;
            super::postgres::release_session_seq(&tx, seq).await?;
            tx.commit().await
        })
        .await
    }

    /// Raises the sessions' counter to at least `seq`, so the next session gets a number above it (state
    /// reconstruction: numbers of sessions whose rows are lost stay used).
    pub async fn raise_session_counter(&self, seq: i64) -> Result<(), StoreError> {
        match self.engine() {
            super::Engine::Sqlite => {
                self.write(|db| async move { super::sqlite::raise_session_counter(&db, seq).await })
                    .await
            }
            super::Engine::Postgres => {
                self.write(|db| async move {
                    let tx = db.begin().await?;
                    super::serialize(&tx, super::Numbers::Sessions).await?;
                    super::postgres::raise_session_counter(&tx, seq).await?;
                    tx.commit().await
                })
                .await
            }
        }
    }

    /// Inserts session `S<seq>` (the caller serialises creations and picked an unused `seq`).
    pub async fn insert_session(&self, seq: i64, new: &NewSession) -> Result<Session, StoreError> {
        let now = Utc::now();
        let id = format!("S{seq}");
        let am = session::ActiveModel {
            seq: Set(seq),
            id: Set(id.clone()),
            project_id: Set(new.project_id.clone()),
            branch: Set(new.branch.clone()),
            base_branch: Set(new.base_branch.clone()),
            branch_created: Set(new.branch_created),
            worktree_path: Set(new.workspace_dir.join(&id).display().to_string()),
            worktree_missing: Set(false),
            state: Set(SessionState::Idle.as_str().to_string()),
            conversation_id: Set(None),
            agent: Set(new.agent.clone()),
            conversations: Set("{}".into()),
            created_at: Set(now),
            last_activity_at: Set(now),
            closed_at: Set(None),
            node: Set(new.node.clone()),
        };
        let model = self.write(|db| async move { am.insert(&db).await }).await?;
        if self.is_postgres() {
            // A number above the one reserved (a directory left by a crash was skipped) or given by
            // reconstruction: the sequence moves past it (SQLite's counter does so by itself).
            self.raise_session_counter(seq).await?;
        }
        Ok(model.into())
    }

    /// Removes a session row that never got its worktree (creation failed); its number stays used.
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(|db| async move {
            session::Entity::delete_many()
                .filter(session::Column::Id.eq(id))
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn set_session_state(&self, id: &str, state: SessionState) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(|db| async move {
            let now = Utc::now();
            let mut q = session::Entity::update_many()
                .col_expr(session::Column::State, Expr::value(state.as_str()))
                .col_expr(session::Column::LastActivityAt, Expr::value(now));
            if state == SessionState::Closed {
                q = q.col_expr(session::Column::ClosedAt, Expr::value(Some(now)));
            }
            q.filter(session::Column::Id.eq(id))
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Changes a session's state only from `from` (false when it was in another state).
    pub async fn set_session_state_if(
        &self,
        id: &str,
        from: SessionState,
        to: SessionState,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        let res = self
            .write(|db| async move {
                session::Entity::update_many()
                    .col_expr(session::Column::State, Expr::value(to.as_str()))
                    .col_expr(session::Column::LastActivityAt, Expr::value(Utc::now()))
                    .filter(session::Column::Id.eq(id))
                    .filter(session::Column::State.eq(from.as_str()))
                    .exec(&db)
                    .await
            })
            .await?;
        Ok(res.rows_affected > 0)
    }

    pub async fn set_worktree_missing(&self, id: &str, missing: bool) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(|db| async move {
            session::Entity::update_many()
                .col_expr(session::Column::WorktreeMissing, Expr::value(missing))
                .filter(session::Column::Id.eq(id))
                .exec(&db)
                .await
                .map(|_| ())
        })
        .await
    }
}

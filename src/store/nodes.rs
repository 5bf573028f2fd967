//! The cluster's records (nodes and their heartbeats, calls between nodes, wake-ups) as the services see
//! them. Only a PostgreSQL store has them: on SQLite there is one node, and every call here answers that
//! the store is not shared.

use std::time::Duration;

use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};

use super::entities::{job, session};
use crate::domain::{Job, SessionState};

use super::postgres::cluster as pg;
pub use super::postgres::cluster::{CallRow, Dial, LeaderLock, Listener, NodeRow};
use super::{Store, StoreError};

fn not_shared() -> StoreError {
    StoreError::Db(DbErr::Custom(
        "the state database is not shared (store.url is empty: one node on SQLite)".into(),
    ))
}

impl Store {
    /// How to open a connection of the cluster's own (the leader's lock, the listener), on PostgreSQL.
    pub fn dial(&self) -> Option<Dial> {
        self.postgres_url()
            .map(|(url, password)| Dial { url, password })
    }

    fn shared(&self) -> Result<(), StoreError> {
        if self.is_postgres() {
            Ok(())
        } else {
            Err(not_shared())
        }
    }

    /// Registers this node; `Some(age)`: another running node (a fresh heartbeat `age` seconds old) has the
    /// same name.
    pub async fn register_node(
        &self,
        id: &str,
        instance: &str,
        root: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<Option<f64>, StoreError> {
        self.shared()?;
        Ok(pg::register(self.reader(), id, instance, root, version, timeout).await?)
    }

    /// This node's heartbeat, past the write gate (a store read-only after a blip must not make the node
    /// look gone): false when its row takes it no more (marked lost, or another instance has the name).
    pub async fn node_heartbeat(&self, id: &str, instance: &str) -> Result<bool, StoreError> {
        self.shared()?;
        Ok(pg::heartbeat(self.reader(), id, instance).await?)
    }

    pub async fn lost_nodes(&self) -> Result<Vec<String>, StoreError> {
        self.shared()?;
        Ok(pg::lost_nodes(self.reader()).await?)
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.shared()?;
        Ok(pg::nodes(self.reader()).await?)
    }

    /// Marks lost the nodes silent for longer than `timeout`; answers those newly marked.
    pub async fn mark_lost_nodes(&self, timeout: Duration) -> Result<Vec<String>, StoreError> {
        self.shared()?;
        self.write(|db| async move { pg::mark_lost(&db, timeout).await })
            .await
    }

    /// Running jobs per node.
    pub async fn running_per_node(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.shared()?;
        Ok(pg::running_per_node(self.reader()).await?)
    }

    /// Wakes the other nodes with `payload`.
    pub async fn notify_nodes(&self, payload: &str) -> Result<(), StoreError> {
        self.shared()?;
        Ok(pg::notify(self.reader(), payload).await?)
    }

    pub async fn insert_call(
        &self,
        id: &str,
        node: &str,
        from: &str,
        kind: &str,
        args: &str,
        limit: Duration,
    ) -> Result<(), StoreError> {
        self.shared()?;
        let (id, node, from, kind, args) = (
            id.to_string(),
            node.to_string(),
            from.to_string(),
            kind.to_string(),
            args.to_string(),
        );
        self.write(|db| async move {
            pg::insert_call(&db, &id, &node, &from, &kind, &args, limit).await
        })
        .await
    }

    pub async fn claim_calls(&self, node: &str) -> Result<Vec<CallRow>, StoreError> {
        self.shared()?;
        let node = node.to_string();
        self.write(|db| async move { pg::claim_calls(&db, &node).await })
            .await
    }

    pub async fn finish_call(&self, id: &str, answer: &str) -> Result<(), StoreError> {
        self.shared()?;
        let (id, answer) = (id.to_string(), answer.to_string());
        self.write(|db| async move { pg::finish_call(&db, &id, &answer).await })
            .await
    }

    pub async fn call_answer(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.shared()?;
        Ok(pg::call_answer(self.reader(), id).await?)
    }

    pub async fn prune_calls(&self) -> Result<(), StoreError> {
        self.shared()?;
        self.write(|db| async move { pg::prune_calls(&db).await })
            .await
    }

    /// Jobs running or waiting for a person, on every node.
    pub async fn running_job_count(&self) -> Result<u64, StoreError> {
        Ok(job::Entity::find()
            .filter(job::Column::Status.is_in(["running", "waiting_approval"]))
            .count(self.reader())
            .await?)
    }

    /// Open sessions per hosting node.
    pub async fn open_sessions_per_node(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(Option<String>, i64)> = session::Entity::find()
            .select_only()
            .column(session::Column::Node)
            .column_as(session::Column::Id.count(), "n")
            .filter(session::Column::State.ne(SessionState::Closed.as_str()))
            .group_by(session::Column::Node)
            .into_tuple()
            .all(self.reader())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(n, c)| n.map(|n| (n, c)))
            .collect())
    }

    /// The ids of every session (closed ones too) a node hosts.
    pub async fn session_ids_on_node(&self, node: &str) -> Result<Vec<String>, StoreError> {
        Ok(session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .filter(session::Column::Node.eq(node))
            .into_tuple()
            .all(self.reader())
            .await?)
    }

    /// Jobs running (or waiting for a person) in the sessions a node hosts.
    pub async fn running_jobs_on_node(&self, node: &str) -> Result<Vec<Job>, StoreError> {
        Ok(job::Entity::find()
            .filter(job::Column::Status.is_in(["running", "waiting_approval"]))
            .filter(
                job::Column::SessionId.in_subquery(
                    Query::select()
                        .column(session::Column::Id)
                        .from(session::Entity)
                        .and_where(session::Column::Node.eq(node))
                        .to_owned(),
                ),
            )
            .all(self.reader())
            .await?
            .into_iter()
            .map(Job::from)
            .collect())
    }
}

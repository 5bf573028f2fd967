//! The key-value table: small values of the services (a front's offsets and trackers, the probe's row).

use sea_orm::ConnectionTrait;

use super::{Store, StoreError, statement};

impl Store {
    /// Reads a value of the key-value table.
    pub async fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_one_raw(statement(
                self.backend(),
                "SELECT value FROM kv WHERE key = ?",
                [key.into()],
            ))
            .await?;
        Ok(row.and_then(|r| r.try_get_by_index::<String>(0).ok()))
    }

    /// Writes a value of the key-value table through the gate.
    pub async fn kv_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(|db| async move {
            db.execute_raw(statement(
                db.get_database_backend(),
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [key.into(), value.into(), chrono::Utc::now().to_rfc3339().into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }

    /// Deletes a value of the key-value table (absent already: nothing to do).
    pub async fn kv_delete(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(|db| async move {
            db.execute_raw(statement(
                db.get_database_backend(),
                "DELETE FROM kv WHERE key = ?",
                [key.into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }

    /// Rows of the key-value table whose key starts with `prefix` (tests: bounded growth).
    pub async fn kv_count(&self, prefix: &str) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_one_raw(statement(
                self.backend(),
                "SELECT COUNT(*) FROM kv WHERE substr(key, 1, length(?)) = ?",
                [prefix.into(), prefix.into()],
            ))
            .await?;
        Ok(row
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0))
    }
}

//! Remote copies of backups: an object store (`s3://bucket/prefix`, `file:///path`) behind the
//! `backup_remote` breaker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt};

use super::schedule::parse_name;
use crate::breaker::{BreakerName, Breakers};

/// Why a `backup.remote` URL is refused (never repeating the URL, which may hold a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemoteUrlError {
    #[error("file:// needs an absolute path (file:///srv/backups)")]
    RelativeFile,
    #[error("must start with s3:// or file://")]
    Scheme,
    #[error(
        "must not hold credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the daemon's environment instead"
    )]
    Credentials,
    #[error("expected s3://bucket/prefix")]
    NotBucketPrefix,
}

/// Where remote copies go: `s3://bucket/prefix` or `file:///path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    S3 { bucket: String, prefix: String },
    File { dir: PathBuf },
}

impl Remote {
    /// `Ok(None)` when empty. Credentials in the URL are refused: they come from the standard AWS
    /// environment variables, so the configuration file never holds them in clear.
    pub fn parse(url: &str) -> Result<Option<Remote>, RemoteUrlError> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(RemoteUrlError::RelativeFile);
            }
            return Ok(Some(Remote::File {
                dir: PathBuf::from(path),
            }));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(RemoteUrlError::Scheme);
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') || bucket.contains(':') {
            return Err(RemoteUrlError::Credentials);
        }
        if bucket.is_empty() || prefix.contains('?') || prefix.contains('#') {
            return Err(RemoteUrlError::NotBucketPrefix);
        }
        Ok(Some(Remote::S3 {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
        }))
    }

    fn open(&self) -> Result<(Arc<dyn ObjectStore>, String), String> {
        match self {
            Remote::File { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| e.to_string())?;
                Ok((Arc::new(fs), String::new()))
            }
            Remote::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    // Our own retries run behind the breaker; the client's would hide failures for minutes.
                    .with_retry(object_store::RetryConfig {
                        backoff: Default::default(),
                        max_retries: 0,
                        retry_timeout: Duration::from_secs(30),
                    })
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(300)),
                    );
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .unwrap_or_default();
                if endpoint.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                let s3 = b.build().map_err(|e| e.to_string())?;
                Ok((Arc::new(s3), prefix.clone()))
            }
        }
    }

    fn object_path(prefix: &str, name: &str) -> object_store::path::Path {
        if prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{prefix}/{name}"))
        }
    }

    fn url_of(&self, name: &str) -> String {
        match self {
            Remote::File { dir } => format!("file://{}", dir.join(name).display()),
            Remote::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}/{name}"),
            Remote::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{name}"),
        }
    }

    /// One upload attempt.
    pub async fn upload(&self, local: &Path, name: &str) -> Result<String, String> {
        let (store, prefix) = self.open()?;
        let bytes = tokio::fs::read(local)
            .await
            .map_err(|e| format!("cannot read {}: {e}", local.display()))?;
        store
            .put(&Self::object_path(&prefix, name), bytes.into())
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.url_of(name))
    }

    /// Up to three attempts (1 s, then 2 s apart), each one through the `backup_remote` breaker.
    pub async fn upload_guarded(
        &self,
        breakers: &Arc<Breakers>,
        local: &Path,
        name: &str,
    ) -> Result<String, String> {
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
            let permit = breakers
                .acquire(BreakerName::BackupRemote)
                .map_err(|e| e.to_string())?;
            match self.upload(local, name).await {
                Ok(url) => {
                    permit.success();
                    return Ok(url);
                }
                Err(e) => {
                    permit.failure();
                    tracing::warn!(target: "televibe.backup", attempt = attempt + 1, error = %e, "Backup upload failed");
                    last = e;
                }
            }
        }
        Err(format!("upload failed after 3 attempts: {last}"))
    }

    /// Copies the remote backup `name` to `dest` (which must not exist), fsynced. The copy is not yet
    /// checked: the caller verifies it like any local backup.
    pub async fn download(&self, name: &str, dest: &Path) -> Result<(), String> {
        if parse_name(name).is_none() {
            return Err(format!(
                "{name} is not a backup name (state-YYYY-MM-DDTHH-MM-SS.db.gz)"
            ));
        }
        let (store, prefix) = self.open()?;
        let got = store
            .get(&Self::object_path(&prefix, name))
            .await
            .map_err(|e| format!("cannot fetch {}: {e}", self.url_of(name)))?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| format!("cannot fetch {}: {e}", self.url_of(name)))?;
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::create_new(&dest)
                .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", dest.display()))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The backup names stored remotely with their sizes.
    pub async fn list(&self) -> Result<Vec<(String, u64)>, String> {
        let (store, prefix) = self.open()?;
        let p = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix.as_str()));
        let listing = store
            .list_with_delimiter(p.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|o| {
                let name = o.location.filename()?.to_string();
                parse_name(&name).map(|_| (name, o.size))
            })
            .collect())
    }
}

//! The jobs service's lookups: a job by id or prefix, pages of jobs, and a job's log. Running, canceling
//! and killing a job are the sessions service's (`core/sessions/work.rs`).

use crate::domain::{Job, JobStatus};
use crate::errors::{CoreError, ErrorCode};
use std::path::Path;

use super::*;

impl Jobs<'_> {
    /// A job by full id or by a unique prefix of at least 8 characters.
    pub async fn get_job(&self, id: &str) -> Result<Job, CoreError> {
        let id = id.trim().to_lowercase();
        if let Some(job) = self.core.store().job(&id).await? {
            return Ok(job);
        }
        if id.len() < 8 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(job_not_found(&id));
        }
        let mut found = self.core.store().jobs_by_prefix(&id).await?;
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
            Some(s) => Some(self.core.sessions().get_session(s).await?.id),
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
            .core
            .store()
            .jobs_before(session.as_deref(), status, limit, before.as_deref())
            .await?;
        let next_before = (jobs.len() as u64 == limit)
            .then(|| jobs.last().map(|j| j.id.clone()))
            .flatten();
        Ok(JobPage { jobs, next_before })
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

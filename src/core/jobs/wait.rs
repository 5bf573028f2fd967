//! Waiting for a job to end without polling: woken by every outbox write, it reports the job's new
//! events as progress and answers when the job is final or the wait times out.

use std::time::Duration;

use super::Waited;
use crate::errors::CoreError;

/// The longest a caller may wait in one call.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

use super::Jobs;

impl Jobs<'_> {
    /// Waits until the job `id` (or a unique prefix) is final, at most `timeout` (capped at an hour).
    /// `progress` gets each event of the job as it is written (its count so far and a one-line summary),
    /// those before the call included.
    pub async fn wait_job(
        &self,
        id: &str,
        timeout: Duration,
        mut progress: impl FnMut(u64, String),
    ) -> Result<Waited, CoreError> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        // Subscribed before the first look, so an ending written in between still wakes us.
        let mut written = self.core.events().outbox_watch();
        let id = self.get_job(id).await?.id;
        let shutdown = self.core.shutdown_token();
        let mut cursor = 0;
        let mut seen = 0;
        loop {
            for row in self
                .core
                .store()
                .job_events_after(&id, cursor)
                .await
                .unwrap_or_default()
            {
                cursor = row.id;
                seen += 1;
                progress(seen, summary(&row.event_type, &row.payload));
            }
            let job = self.get_job(&id).await?;
            if job.status.is_final() {
                return Ok(Waited {
                    job,
                    timed_out: false,
                });
            }
            tokio::select! {
                changed = written.changed() => {
                    if changed.is_err() {
                        return Ok(Waited { job, timed_out: true });
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let job = self.get_job(&id).await?;
                    let timed_out = !job.status.is_final();
                    return Ok(Waited { job, timed_out });
                }
                _ = shutdown.cancelled() => {
                    return Ok(Waited { job, timed_out: true });
                }
            }
        }
    }
}

/// `job.tool_started {"tool":"Bash",…}` as one short line.
fn summary(event_type: &str, payload: &serde_json::Value) -> String {
    let mut line = format!("{event_type} {payload}");
    if line.chars().count() > 200 {
        line = line.chars().take(199).collect::<String>() + "…";
    }
    line
}

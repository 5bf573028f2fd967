//! Jobs: one agent run on one instruction, queued per session, run by a `job:<id>` runner actor.
//!
//! The API (`api.rs`) validates and queues; the session actor decides when a job starts (one at a time per
//! session, `jobs.max_concurrent` overall, never while its agent's breaker, `claude_code` for Claude Code, is open); the runner runs it.

mod api;
pub mod ending;
pub mod log;
pub mod outcome;
pub mod process;
pub mod runner;
pub mod sandbox;
mod wait;

use serde::Serialize;

use crate::domain::Job;
use crate::errors::{CoreError, ErrorCode};

/// The most characters an instruction may have.
pub const MAX_INSTRUCTION_CHARS: usize = 10_000;

pub use ending::{CLAUDE_UNAVAILABLE, Ending};

/// The answer of `run_instruction`.
#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    #[serde(flatten)]
    pub job: Job,
    /// 1 = next to run in its session (0 = already running).
    pub position: usize,
}

/// A page of `list_jobs`: pass `next_before` as `before` for the next (older) page.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_before: Option<String>,
}

/// The answer of `wait_job`: the job as it ended, or as it stands when the wait timed out.
#[derive(Debug, Clone, Serialize)]
pub struct Waited {
    #[serde(flatten)]
    pub job: Job,
    /// The wait ended before the job did.
    pub timed_out: bool,
}

/// The answer of `get_job_logs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobLogs {
    pub job_id: String,
    pub lines: Vec<String>,
    /// More lines exist before the returned ones.
    pub truncated: bool,
    /// The log reached its size limit and later output was discarded.
    pub log_capped: bool,
}

pub fn job_not_found(id: &str) -> CoreError {
    CoreError::new(
        ErrorCode::JobNotFound,
        format!("no job {id:?}"),
        "use a job id from list_jobs (a unique prefix of 8 or more characters works)",
    )
}

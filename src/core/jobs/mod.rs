//! Jobs: one agent run on one instruction, queued per session, run by a `job:<id>` runner actor.
//!
//! The sessions service validates and queues (`core/sessions/work.rs`); the session actor keeps the queue
//! and decides when a job starts (one at a time per
//! session, `jobs.max_concurrent` overall, never while its agent's breaker, `claude_code` for Claude Code, is open); the runner runs it.

mod api;
pub mod ending;
pub mod log;
pub mod outcome;
pub mod process;
pub mod runner;
pub mod sandbox;
pub mod usage;
mod wait;

use crate::domain::breaker::BreakerName;
use serde::Serialize;

use crate::domain::Job;
use crate::errors::{CoreError, ErrorCode};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::core::Core;

/// The jobs service: lookups, waiting, the start and end of each job, run slots and approval tokens.
pub struct Jobs<'a> {
    pub(super) core: &'a Core,
}

/// One period of the agent API being unavailable: when it began (unix ms) and the sessions told.
#[derive(Debug, Default)]
pub struct ClaudeNotice {
    pub since: i64,
    pub told: HashSet<String>,
}

/// What the jobs service owns.
pub struct State {
    /// Jobs this daemon counts in `televibe_jobs_active` (so a gauge never goes below what it added).
    active: Mutex<HashSet<String>>,
    /// Run slots: `jobs.max_concurrent` permits, held by running jobs.
    slots: Arc<tokio::sync::Semaphore>,
    /// Per-job secrets of the approval tool connections (job id → token), alive while the job runs.
    tokens: Mutex<HashMap<String, String>>,
    /// While an agent's breaker (`claude_code`, `codex`) keeps jobs waiting: when that began (unix ms, the
    /// notice's episode) and the sessions told so far. No entry once it is closed again.
    claude_notice: Mutex<HashMap<BreakerName, ClaudeNotice>>,
    /// What the agents reported of their usage limits, and the limits told.
    usage: Mutex<usage::UsageState>,
}

impl State {
    pub(super) fn new(max_concurrent: usize) -> State {
        State {
            active: Mutex::new(HashSet::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent)),
            tokens: Mutex::new(HashMap::new()),
            claude_notice: Mutex::new(HashMap::new()),
            usage: Mutex::new(Default::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs<'_> {
    fn state(&self) -> &State {
        &self.core.jobs_state
    }

    /// A run slot now, if one is free.
    pub fn try_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.state().slots.clone().try_acquire_owned().ok()
    }

    /// A run slot when one frees up (a future that holds no borrow of the core).
    pub fn slot(
        &self,
    ) -> impl std::future::Future<Output = Option<tokio::sync::OwnedSemaphorePermit>> + Send + 'static
    {
        let slots = self.state().slots.clone();
        async move { slots.acquire_owned().await.ok() }
    }

    /// The agent's API works again: the next outage is a new period, told anew.
    pub fn agent_available_again(&self, breaker: BreakerName) {
        lock(&self.state().claude_notice).remove(&breaker);
    }

    /// A fresh secret for a job's approval connection (256 random bits).
    pub fn issue_job_token(&self, job_id: &str) -> String {
        let mut b = [0u8; 32];
        rand::fill(&mut b[..]);
        let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
        lock(&self.state().tokens).insert(job_id.to_string(), token.clone());
        token
    }

    pub fn revoke_job_token(&self, job_id: &str) {
        lock(&self.state().tokens).remove(job_id);
    }

    /// Whether `token` is the live secret of job `job_id` (compared in constant time).
    pub fn job_token_valid(&self, job_id: &str, token: &str) -> bool {
        let tokens = lock(&self.state().tokens);
        let Some(expected) = tokens.get(job_id) else {
            return false;
        };
        expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

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

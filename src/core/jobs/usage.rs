//! Usage limits: what each agent reported of its limit windows (for `/usage` and `get_usage`), until when
//! its model API refuses it, and the jobs that wait for that. A job stopped by a limit is not failed: it
//! goes back to the head of its session's queue with a `not_before` (the reset, or a backoff when the agent
//! gives none) and runs again then, resuming its conversation. The chat is told once per limit.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::{Jobs, lock};
use crate::agents::{UsageReport, UsageWindow};
use crate::breaker::BreakerPermit;
use crate::core::events::{Event, Scope};
use crate::domain::{Job, Session};
use crate::store::Requeue;

/// A retry the agent waits out itself for at least this long, on a 429, is a usage limit too: the chat
/// is told (a shorter one only shows on the tracker).
pub const SELF_WAIT_NOTICE_MS: i64 = 10_000;

/// The longest retry wait of an agent believed (its output is untrusted); Claude Code waits about a minute
/// at most.
pub const MAX_SELF_WAIT_MS: i64 = 600_000;

/// A limited job runs again this long after the reset it was given (the model API's clock may be behind).
const AFTER_RESET_SECS: i64 = 2;

/// The longest backoff of a job limited without a reset time.
const MAX_BACKOFF_SECS: i64 = 3600;

/// The furthest ahead a reset is believed (Unix seconds from now): longer than the longest window (a week).
pub const MAX_RESET_AHEAD_SECS: i64 = 8 * 86_400;

/// Windows kept per agent, and the longest window name kept.
const MAX_WINDOWS: usize = 8;
const MAX_WINDOW_NAME: usize = 64;

/// A job that ran into a limit this often fails rather than waiting again (a refusal that never clears).
pub const MAX_LIMIT_WAITS: i64 = 20;

/// A reset the daemon believes: ahead of `now`, and at most [`MAX_RESET_AHEAD_SECS`] ahead (an agent's
/// output, which a job can write, may say anything).
pub fn bounded_reset(reset: i64, now: i64) -> Option<i64> {
    (reset > now).then(|| reset.min(now.saturating_add(MAX_RESET_AHEAD_SECS)))
}

/// What is known of one agent's limits.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentUsage {
    pub agent: String,
    /// The model API refuses the agent's requests until then (Unix seconds); `None`: not now.
    pub limited_until: Option<i64>,
    /// The windows the agent last reported, by name.
    pub windows: Vec<UsageWindow>,
    /// When the agent last reported them (Unix seconds).
    pub updated_at: Option<i64>,
}

/// The register of every agent's limits, and the limits each session was told of.
#[derive(Debug, Default)]
pub struct UsageState {
    agents: BTreeMap<String, Known>,
    /// (session, agent, until) told.
    told: HashSet<(String, String, i64)>,
    /// Sessions whose running job's agent waits out a retry itself, until when.
    self_waits: std::collections::HashMap<String, i64>,
}

#[derive(Debug, Default, Clone)]
struct Known {
    limited_until: Option<i64>,
    windows: BTreeMap<String, UsageWindow>,
    updated_at: Option<i64>,
}

/// `14:05 UTC`, with the date when it is not today.
pub fn resume_time(until: i64) -> String {
    let Some(at) = Utc.timestamp_opt(until, 0).single() else {
        return format!("{until} (Unix time)");
    };
    let today = Utc::now().date_naive();
    if at.date_naive() == today {
        at.format("%H:%M UTC").to_string()
    } else {
        at.format("%H:%M UTC on %b %-d").to_string()
    }
}

/// The agent's name as a person knows it.
pub fn agent_title(agent: &str) -> &str {
    match agent {
        "claude" => "Claude Code",
        "codex" => "Codex",
        other => other,
    }
}

/// What a session shows while its next job waits for a usage limit.
pub fn waiting_text(until: i64) -> String {
    format!("waiting for usage limit until {}", resume_time(until))
}

/// The chat's notice of a limit.
pub fn limit_message(agent: &str, until: i64) -> String {
    format!(
        "⏸ {} hit its usage limit; work resumes at {}",
        agent_title(agent),
        resume_time(until)
    )
}

impl Jobs<'_> {
    /// An agent's report of its windows. What an agent prints is untrusted (a job can write to its
    /// output): the report replaces the windows known (at most [`MAX_WINDOWS`], names cut short, resets
    /// held within [`MAX_RESET_AHEAD_SECS`]) and never holds the agent's jobs by itself; only a run that
    /// ended on the limit does (`wait_for_limit`).
    pub fn usage_reported(&self, agent: &str, report: &UsageReport) {
        let now = Utc::now().timestamp();
        let mut st = lock(&self.state().usage);
        let known = st.agents.entry(agent.to_string()).or_default();
        if !report.windows.is_empty() {
            known.windows = report
                .windows
                .iter()
                .take(MAX_WINDOWS)
                .map(|w| {
                    let mut w = w.clone();
                    w.name = w.name.chars().take(MAX_WINDOW_NAME).collect();
                    w.resets_at = w.resets_at.and_then(|t| bounded_reset(t, now));
                    w.used_percent = w.used_percent.filter(|p| p.is_finite());
                    (w.name.clone(), w)
                })
                .collect();
        }
        // A hold ends at its reset: an agent's word (which a job can forge) neither sets nor lifts it.
        known.updated_at = Some(now);
    }

    /// The agent is refused until `until` (Unix seconds, held within [`MAX_RESET_AHEAD_SECS`]).
    pub fn usage_limited_until(&self, agent: &str, until: i64) {
        let Some(until) = bounded_reset(until, Utc::now().timestamp()) else {
            return;
        };
        let mut st = lock(&self.state().usage);
        let known = st.agents.entry(agent.to_string()).or_default();
        known.limited_until = Some(known.limited_until.unwrap_or(0).max(until));
    }

    /// The running job of `session` waits out its agent's retry until `until` (the agent said so).
    pub fn agent_waits_itself(&self, session: &str, until: Option<i64>) {
        let mut st = lock(&self.state().usage);
        match until.and_then(|t| bounded_reset(t, Utc::now().timestamp())) {
            Some(t) => st.self_waits.insert(session.to_string(), t),
            None => st.self_waits.remove(session),
        };
    }

    /// Until when the running job of `session` waits out its agent's retry, if that is still ahead.
    pub fn session_waits_itself(&self, session: &str) -> Option<i64> {
        let now = Utc::now().timestamp();
        lock(&self.state().usage)
            .self_waits
            .get(session)
            .copied()
            .filter(|t| *t > now)
    }

    /// Until when the agent is refused, if that is still ahead.
    pub fn agent_limited_until(&self, agent: &str) -> Option<i64> {
        let now = Utc::now().timestamp();
        lock(&self.state().usage)
            .agents
            .get(agent)
            .and_then(|k| k.limited_until)
            .filter(|t| *t > now)
    }

    /// What is known of each of `agents`' limits (an agent not heard of yet: nothing known).
    pub fn usage(&self, agents: &[&str]) -> Vec<AgentUsage> {
        let now = Utc::now().timestamp();
        let st = lock(&self.state().usage);
        agents
            .iter()
            .map(|a| {
                let k = st.agents.get(*a).cloned().unwrap_or_default();
                AgentUsage {
                    agent: a.to_string(),
                    limited_until: k.limited_until.filter(|t| *t > now),
                    windows: k.windows.into_values().collect(),
                    updated_at: k.updated_at,
                }
            })
            .collect()
    }

    /// When a job limited without a reset time runs again: the backoff, doubled for each earlier limit of
    /// the same job, at most an hour.
    pub fn usage_backoff_until(&self, job: &Job) -> i64 {
        let base = self.core.config().jobs.usage_limit_backoff.as_secs() as i64;
        let waits = job.limit_waits.clamp(0, 12) as u32;
        let secs = base
            .saturating_mul(1 << waits)
            .min(MAX_BACKOFF_SECS.max(base));
        Utc::now().timestamp() + secs
    }

    /// A running job ran into its agent's usage limit: it goes back to the head of its session's queue
    /// until `resets_at` (a backoff when unknown), its breaker permit is given back uncounted, its tracker
    /// and its chat are told; `agent_reset` holds the agent's other jobs too. Answers the job as queued again, or `None` when it is not running any more
    /// (then the caller ends it as it would have).
    pub async fn wait_for_limit(
        &self,
        job: &Job,
        session: &Session,
        (resets_at, agent_reset): (Option<i64>, Option<i64>),
        breaker: Option<BreakerPermit>,
    ) -> Option<Job> {
        let now = Utc::now().timestamp();
        if job.limit_waits >= MAX_LIMIT_WAITS {
            tracing::warn!(target: "televibe.jobs", job_id = %job.id, waits = job.limit_waits, "The job's agent is still refused after its usage-limit waits; the job fails");
            return None;
        }
        let reset = resets_at.and_then(|t| bounded_reset(t, now));
        let until = match reset {
            Some(t) => t.saturating_add(AFTER_RESET_SECS),
            None => self.usage_backoff_until(job),
        };
        let not_before = DateTime::<Utc>::from_timestamp(until, 0);
        match self
            .core
            .store()
            .requeue_job(&job.id, not_before, Requeue::UsageLimit)
            .await
        {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::error!(target: "televibe.jobs", job_id = %job.id, error = %e, "cannot queue the limited job again; it ends");
                return None;
            }
        }
        // Neither a success nor a failure of the API: a probe slot goes back.
        drop(breaker);
        // A reset the model API named (through the job's egress proxy; the agent's own word where the
        // job's network is open) holds the agent's other jobs too; a backoff guessed for this job, or a
        // reset only the job's output claims, holds this job only.
        if let Some(reset) = agent_reset.and_then(|t| bounded_reset(t, now)) {
            self.usage_limited_until(&job.agent, reset);
        }
        self.job_inactive(&job.id, &session.project_id).await;
        tracing::warn!(target: "televibe.jobs", job_id = %job.id, session_id = %session.id, agent = %job.agent, until = %resume_time(until), "Job waits for its agent's usage limit");
        self.core
            .events()
            .emit(
                Scope::job(job, session),
                Event::JobRequeued {
                    reason: crate::core::events::REQUEUED_USAGE_LIMIT.into(),
                    not_before: Some(until),
                },
            )
            .await;
        self.notify_usage_limit(session, &job.agent, until).await;
        let mut again = self.core.store().job(&job.id).await.ok().flatten()?;
        again.not_before = not_before;
        Some(again)
    }

    /// Tells a session's chat that its jobs wait for `agent`'s limit until `until`: once per session and
    /// limit (the notifier tells a chat following several sessions once). Limits within a minute of one
    /// told are the same limit.
    pub async fn notify_usage_limit(&self, session: &Session, agent: &str, until: i64) {
        let first = {
            let mut st = lock(&self.state().usage);
            let now = Utc::now().timestamp();
            st.told.retain(|(_, _, t)| *t > now);
            let known = st
                .told
                .iter()
                .any(|(s, a, t)| s == &session.id && a == agent && (t - until).abs() <= 60);
            !known
                && st
                    .told
                    .insert((session.id.clone(), agent.to_string(), until))
        };
        if !first {
            return;
        }
        self.core
            .events()
            .emit(
                Scope::session(session),
                Event::UsageLimited {
                    agent: agent.to_string(),
                    until,
                    message: limit_message(agent, until),
                },
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_believed_ahead_and_at_most_eight_days_ahead() {
        let now = 1_800_000_000;
        assert_eq!(bounded_reset(now, now), None);
        assert_eq!(bounded_reset(now - 5, now), None);
        assert_eq!(bounded_reset(now + 40, now), Some(now + 40));
        assert_eq!(
            bounded_reset(i64::MAX, now),
            Some(now + MAX_RESET_AHEAD_SECS)
        );
        assert_eq!(bounded_reset(i64::MIN, now), None);
    }

    #[test]
    fn resume_times_name_the_day_when_it_is_not_today() {
        let now = Utc::now().timestamp();
        let soon = resume_time(now + 60);
        assert!(soon.ends_with(" UTC") && soon.len() == 9, "{soon}");
        let later = resume_time(now + 3 * 86_400);
        assert!(later.contains(" UTC on "), "{later}");
        assert!(waiting_text(now + 60).starts_with("waiting for usage limit until "));
        assert!(limit_message("claude", now + 60).contains("Claude Code hit its usage limit"));
        assert!(limit_message("codex", now + 60).contains("resumes at "));
    }
}

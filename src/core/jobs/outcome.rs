//! How a job ended: status and error type from the stop reason, else from its agent's verdict on the
//! exit and the final result; and whether the agent's breaker counts it.

use crate::agents::{AgentDriver, AgentResult, Exit};
use crate::domain::{ErrorType, JobOutcome, JobStatus};

/// The spec's error of a job an operator stopped (`admin job kill`, the stuck-job runbook).
pub const MANUAL_TERMINATION: &str = "Manual termination";

/// Why the daemon stopped a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// `cancel_job` or the Cancel button.
    Canceled { by: String },
    /// `jobs.hard_timeout_secs` passed.
    Timeout,
    /// No output and no CPU progress for `jobs.hang_timeout_secs`.
    Hung,
    /// `televibe admin job kill` (the spec's runbook).
    Manual,
    /// Its session was closed with force.
    SessionClosed,
    /// A permission request went unanswered for `approvals.timeout_secs`.
    ApprovalTimeout,
}

/// What the agent's breaker (`claude_code` for Claude Code) makes of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerVerdict {
    Success,
    Failure,
    /// The job said nothing about the API (canceled by a person).
    Neutral,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: JobOutcome,
    pub breaker: BreakerVerdict,
    /// The agent ran into a usage or rate limit: the job waits for its reset rather than ending.
    pub usage_limited: bool,
    /// The limit's reset (Unix seconds), when the agent gave one.
    pub resets_at: Option<i64>,
    /// The reset believed for every job of the agent: the one the job's egress proxy read in the model
    /// API's answer when the job's network is isolated (the agent's output can be forged by the job),
    /// else the agent's.
    pub agent_reset: Option<i64>,
    /// The conversation to resume was not found (the agent ended before it started): the job runs again
    /// in a new conversation rather than ending.
    pub conversation_lost: bool,
}

/// A stop by timeout or hang counts against the agent's API, a stop by a person or an approval says nothing
/// of it; otherwise the agent's driver judges the exit and result.
fn breaker_verdict(stop: Option<&StopReason>, api_failure: bool) -> BreakerVerdict {
    match stop {
        Some(StopReason::Timeout | StopReason::Hung) => BreakerVerdict::Failure,
        Some(_) => BreakerVerdict::Neutral,
        None if api_failure => BreakerVerdict::Failure,
        None => BreakerVerdict::Success,
    }
}

/// How a job the daemon stopped ends: its status, error type and error.
pub fn stopped(stop: &StopReason) -> (JobStatus, Option<ErrorType>, String) {
    match stop {
        StopReason::Canceled { by } => (JobStatus::Canceled, None, format!("canceled by {by}")),
        StopReason::SessionClosed => (JobStatus::Canceled, None, "its session was closed".into()),
        StopReason::ApprovalTimeout => (
            JobStatus::Canceled,
            Some(ErrorType::ApprovalTimeout),
            "an approval request timed out".into(),
        ),
        StopReason::Timeout => (
            JobStatus::Failed,
            Some(ErrorType::Timeout),
            "hard time limit reached".into(),
        ),
        StopReason::Hung => (
            JobStatus::Failed,
            Some(ErrorType::Hung),
            "no output and no CPU progress".into(),
        ),
        StopReason::Manual => (
            JobStatus::Failed,
            Some(ErrorType::Killed),
            MANUAL_TERMINATION.into(),
        ),
    }
}

/// The outcome of a job run by `driver`'s agent: a stop reason decides first, else the driver's verdict.
pub fn decide(
    driver: &dyn AgentDriver,
    exit: Exit,
    stop: Option<&StopReason>,
    result: Option<&AgentResult>,
    log_truncated: bool,
) -> Decision {
    let mut o = JobOutcome {
        exit_code: exit.code,
        signal: exit.signal,
        ..Default::default()
    };
    if let Some(r) = result {
        o.is_error = Some(r.is_error);
        o.result_subtype = Some(r.subtype.clone());
        o.result_text = r.result.clone();
        o.terminal_reason = r.terminal_reason.clone();
        o.num_turns = r.num_turns;
        o.total_cost_usd = r.total_cost_usd;
        o.input_tokens = r.input_tokens;
        o.output_tokens = r.output_tokens;
        o.model_api_status = r.model_api_status;
        o.permission_denials = Some(r.permission_denials as i64);
    }
    let verdict = stop.is_none().then(|| driver.verdict(exit, result));
    let (status, error_type, error): (JobStatus, Option<ErrorType>, Option<String>) = match stop {
        Some(stop) => {
            let (status, error_type, error) = stopped(stop);
            (status, error_type, Some(error))
        }
        None => match verdict.as_ref().and_then(|v| v.failure.clone()) {
            None => (JobStatus::Done, None, None),
            Some((error_type, error)) => (JobStatus::Failed, Some(error_type), Some(error)),
        },
    };
    o.status = Some(status);
    o.error_type = error_type;
    o.error = error.map(|e| {
        if log_truncated {
            format!("{e} (log truncated)")
        } else {
            e
        }
    });
    let usage_limited = verdict.as_ref().is_some_and(|v| v.usage_limited);
    Decision {
        outcome: o,
        breaker: if usage_limited {
            BreakerVerdict::Neutral
        } else {
            breaker_verdict(stop, verdict.is_some_and(|v| v.api_failure))
        },
        usage_limited,
        resets_at: None,
        agent_reset: None,
        conversation_lost: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of a Claude Code job.
    fn decide(
        code: Option<i32>,
        signal: Option<i32>,
        stop: Option<&StopReason>,
        result: Option<&AgentResult>,
        log_truncated: bool,
    ) -> Decision {
        super::decide(
            &crate::agents::claude::Claude,
            Exit { code, signal },
            stop,
            result,
            log_truncated,
        )
    }

    fn result(is_error: bool, api: Option<i64>) -> AgentResult {
        AgentResult {
            subtype: "success".into(),
            is_error,
            model_api_status: api,
            result: Some("text".into()),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes() {
        let d = decide(Some(0), None, None, Some(&result(false, None)), false);
        assert_eq!(
            (d.outcome.status, d.outcome.error_type, d.breaker),
            (Some(JobStatus::Done), None, BreakerVerdict::Success)
        );
        let d = decide(Some(1), None, None, Some(&result(true, Some(400))), false);
        assert_eq!(
            (d.outcome.status, d.outcome.error_type, d.breaker),
            (
                Some(JobStatus::Failed),
                Some(ErrorType::ApiError),
                BreakerVerdict::Failure
            )
        );
        let d = decide(Some(1), None, None, Some(&result(true, None)), false);
        assert_eq!(
            (d.outcome.error_type, d.breaker),
            (Some(ErrorType::AgentError), BreakerVerdict::Success),
            "exit 1 may be normal"
        );
        let d = decide(Some(2), None, None, None, false);
        assert_eq!(
            (d.outcome.error_type, d.breaker),
            (Some(ErrorType::AgentError), BreakerVerdict::Failure)
        );
        let d = decide(None, Some(libc::SIGKILL), None, None, false);
        assert_eq!(
            (d.outcome.error_type, d.breaker),
            (Some(ErrorType::Killed), BreakerVerdict::Failure)
        );
        let d = decide(
            None,
            Some(libc::SIGTERM),
            Some(&StopReason::Canceled { by: "mcp".into() }),
            None,
            false,
        );
        assert_eq!(
            (d.outcome.status, d.breaker),
            (Some(JobStatus::Canceled), BreakerVerdict::Neutral)
        );
        let d = decide(
            None,
            Some(libc::SIGKILL),
            Some(&StopReason::Timeout),
            None,
            true,
        );
        assert_eq!(
            (d.outcome.error_type, d.breaker),
            (Some(ErrorType::Timeout), BreakerVerdict::Failure)
        );
        assert!(d.outcome.error.unwrap().contains("log truncated"));
        let d = decide(
            None,
            Some(libc::SIGTERM),
            Some(&StopReason::Manual),
            None,
            false,
        );
        assert_eq!(d.outcome.error.as_deref(), Some("Manual termination"));
    }

    #[test]
    fn every_stop_reason_has_its_status_and_breaker_verdict() {
        use BreakerVerdict::{Failure, Neutral};
        use JobStatus::{Canceled, Failed};
        let cases = [
            (
                StopReason::Canceled { by: "alice".into() },
                Canceled,
                None,
                "canceled by alice",
                Neutral,
            ),
            (
                StopReason::SessionClosed,
                Canceled,
                None,
                "its session was closed",
                Neutral,
            ),
            (
                StopReason::ApprovalTimeout,
                Canceled,
                Some(ErrorType::ApprovalTimeout),
                "an approval request timed out",
                Neutral,
            ),
            (
                StopReason::Timeout,
                Failed,
                Some(ErrorType::Timeout),
                "hard time limit reached",
                Failure,
            ),
            (
                StopReason::Hung,
                Failed,
                Some(ErrorType::Hung),
                "no output and no CPU progress",
                Failure,
            ),
            (
                StopReason::Manual,
                Failed,
                Some(ErrorType::Killed),
                "Manual termination",
                Neutral,
            ),
        ];
        for (stop, status, error_type, error, breaker) in cases {
            let d = decide(None, Some(libc::SIGKILL), Some(&stop), None, false);
            assert_eq!(
                (
                    d.outcome.status,
                    d.outcome.error_type,
                    d.outcome.error.as_deref(),
                    d.breaker
                ),
                (Some(status), error_type, Some(error), breaker),
                "{stop:?}"
            );
        }
    }

    #[test]
    fn failures_without_a_clean_result_explain_themselves() {
        let d = decide(Some(1), None, None, Some(&result(false, None)), false);
        assert_eq!(
            (d.outcome.status, d.outcome.error.as_deref()),
            (Some(JobStatus::Failed), Some("agent exited with code 1")),
            "a clean result with a non-zero exit is not done"
        );
        let d = decide(Some(0), None, None, Some(&result(true, None)), false);
        assert_eq!(
            (d.outcome.status, d.outcome.error.as_deref(), d.breaker),
            (
                Some(JobStatus::Failed),
                Some("text"),
                BreakerVerdict::Success
            ),
            "an error result is a failure of the job, not of the API"
        );
        let mut r = result(true, Some(529));
        r.result = None;
        let d = decide(Some(1), None, None, Some(&r), false);
        assert_eq!(d.outcome.error.as_deref(), Some("API error 529"));
        let mut r = result(true, None);
        r.result = None;
        r.subtype = "error_max_turns".into();
        let d = decide(Some(1), None, None, Some(&r), false);
        assert_eq!(
            d.outcome.error.as_deref(),
            Some("agent reported an error (error_max_turns)")
        );
        let d = decide(None, Some(libc::SIGTERM), None, None, false);
        assert_eq!(
            (d.outcome.error_type, d.outcome.error.as_deref(), d.breaker),
            (
                Some(ErrorType::Killed),
                Some("agent killed by signal 15"),
                BreakerVerdict::Failure
            )
        );
        let d = decide(Some(2), None, None, None, false);
        assert_eq!(
            d.outcome.error.as_deref(),
            Some("agent exited with code 2 and no result")
        );
        let d = decide(None, None, None, None, false);
        assert_eq!(
            d.outcome.error.as_deref(),
            Some("agent exited with an unknown status and no result")
        );
    }

    #[test]
    fn the_outcome_keeps_the_exit_and_the_result_totals() {
        let r = AgentResult {
            subtype: "success".into(),
            is_error: false,
            num_turns: Some(3),
            total_cost_usd: Some(0.25),
            input_tokens: Some(100),
            output_tokens: Some(20),
            result: Some("done".into()),
            model_api_status: None,
            terminal_reason: Some("completed".into()),
            permission_denials: 2,
        };
        let o = decide(Some(0), None, None, Some(&r), false).outcome;
        assert_eq!((o.exit_code, o.signal), (Some(0), None));
        assert_eq!(
            (
                o.is_error,
                o.result_subtype.as_deref(),
                o.result_text.as_deref()
            ),
            (Some(false), Some("success"), Some("done"))
        );
        assert_eq!(o.terminal_reason.as_deref(), Some("completed"));
        assert_eq!(
            (
                o.num_turns,
                o.total_cost_usd,
                o.input_tokens,
                o.output_tokens
            ),
            (Some(3), Some(0.25), Some(100), Some(20))
        );
        assert_eq!((o.model_api_status, o.permission_denials), (None, Some(2)));
        let o = decide(None, Some(libc::SIGKILL), None, None, false).outcome;
        assert_eq!((o.exit_code, o.signal), (None, Some(libc::SIGKILL)));
    }
}

//! How a job ended: status and error type from the stop reason, the exit, and the `result` event;
//! and whether the `claude_code` breaker counts it.

use super::stream::ResultEvent;
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

/// What the `claude_code` breaker makes of a job.
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
}

/// The spec's failure conditions: non-zero exit except 1, timeouts, SIGKILL; plus API errors from the result.
fn verdict(
    code: Option<i32>,
    signal: Option<i32>,
    stop: Option<&StopReason>,
    result: Option<&ResultEvent>,
) -> BreakerVerdict {
    match stop {
        Some(StopReason::Timeout | StopReason::Hung) => return BreakerVerdict::Failure,
        Some(_) => return BreakerVerdict::Neutral,
        None => {}
    }
    if signal == Some(libc::SIGKILL) || result.is_some_and(|r| r.api_error_status.is_some()) {
        return BreakerVerdict::Failure;
    }
    match code {
        Some(0) | Some(1) => BreakerVerdict::Success,
        Some(_) => BreakerVerdict::Failure,
        None => BreakerVerdict::Failure,
    }
}

pub fn decide(
    code: Option<i32>,
    signal: Option<i32>,
    stop: Option<&StopReason>,
    result: Option<&ResultEvent>,
    log_truncated: bool,
) -> Decision {
    let mut o = JobOutcome {
        exit_code: code,
        signal,
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
        o.api_error_status = r.api_error_status;
        o.permission_denials = Some(r.permission_denials as i64);
    }
    let (status, error_type, error): (JobStatus, Option<ErrorType>, Option<String>) = match stop {
        Some(StopReason::Canceled { by }) => {
            (JobStatus::Canceled, None, Some(format!("canceled by {by}")))
        }
        Some(StopReason::SessionClosed) => (
            JobStatus::Canceled,
            None,
            Some("its session was closed".into()),
        ),
        Some(StopReason::ApprovalTimeout) => (
            JobStatus::Canceled,
            Some(ErrorType::ApprovalTimeout),
            Some("an approval request timed out".into()),
        ),
        Some(StopReason::Timeout) => (
            JobStatus::Failed,
            Some(ErrorType::Timeout),
            Some("hard time limit reached".into()),
        ),
        Some(StopReason::Hung) => (
            JobStatus::Failed,
            Some(ErrorType::Hung),
            Some("no output and no CPU progress".into()),
        ),
        Some(StopReason::Manual) => (
            JobStatus::Failed,
            Some(ErrorType::Killed),
            Some(MANUAL_TERMINATION.into()),
        ),
        None => match result {
            Some(r) if !r.is_error && code == Some(0) => (JobStatus::Done, None, None),
            Some(r) if r.api_error_status.is_some() => (
                JobStatus::Failed,
                Some(ErrorType::ApiError),
                Some(r.result.clone().unwrap_or_else(|| {
                    format!("API error {}", r.api_error_status.unwrap_or_default())
                })),
            ),
            Some(r) if r.is_error => (
                JobStatus::Failed,
                Some(ErrorType::AgentError),
                Some(
                    r.result
                        .clone()
                        .unwrap_or_else(|| format!("agent reported an error ({})", r.subtype)),
                ),
            ),
            Some(_) => (
                JobStatus::Failed,
                Some(ErrorType::AgentError),
                Some(format!("agent exited with {}", exit_text(code, signal))),
            ),
            None if signal.is_some() => (
                JobStatus::Failed,
                Some(ErrorType::Killed),
                Some(format!("agent killed by {}", exit_text(code, signal))),
            ),
            None => (
                JobStatus::Failed,
                Some(ErrorType::AgentError),
                Some(format!(
                    "agent exited with {} and no result",
                    exit_text(code, signal)
                )),
            ),
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
    Decision {
        outcome: o,
        breaker: verdict(code, signal, stop, result),
    }
}

fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(is_error: bool, api: Option<i64>) -> ResultEvent {
        ResultEvent {
            subtype: "success".into(),
            is_error,
            api_error_status: api,
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
        let r = ResultEvent {
            subtype: "success".into(),
            is_error: false,
            num_turns: Some(3),
            total_cost_usd: Some(0.25),
            input_tokens: Some(100),
            output_tokens: Some(20),
            result: Some("done".into()),
            api_error_status: None,
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
        assert_eq!((o.api_error_status, o.permission_denials), (None, Some(2)));
        let o = decide(None, Some(libc::SIGKILL), None, None, false).outcome;
        assert_eq!((o.exit_code, o.signal), (None, Some(libc::SIGKILL)));
    }
}

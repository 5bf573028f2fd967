//! How a Claude Code run the daemon did not stop ended: the `result` event and the exit decide the job's
//! status, and whether the `claude_code` breaker counts it as a failure of the API.

use crate::agents::{AgentResult, AgentVerdict, Exit};
use crate::domain::ErrorType;

/// The spec's failure conditions: a non-zero exit except 1 (Claude Code exits 1 after an error result),
/// SIGKILL, no exit status; plus API errors from the result.
fn api_failure(exit: Exit, result: Option<&AgentResult>) -> bool {
    if exit.signal == Some(libc::SIGKILL) || result.is_some_and(|r| r.model_api_status.is_some()) {
        return true;
    }
    !matches!(exit.code, Some(0) | Some(1))
}

pub fn verdict(exit: Exit, result: Option<&AgentResult>) -> AgentVerdict {
    let failure = match result {
        Some(r) if !r.is_error && exit.code == Some(0) => None,
        Some(r) if r.model_api_status.is_some() => Some((
            ErrorType::ApiError,
            r.result
                .clone()
                .unwrap_or_else(|| format!("API error {}", r.model_api_status.unwrap_or_default())),
        )),
        Some(r) if r.is_error => Some((
            ErrorType::AgentError,
            r.result
                .clone()
                .unwrap_or_else(|| format!("agent reported an error ({})", r.subtype)),
        )),
        Some(_) => Some((
            ErrorType::AgentError,
            format!("agent exited with {}", exit.describe()),
        )),
        None if exit.signal.is_some() => Some((
            ErrorType::Killed,
            format!("agent killed by {}", exit.describe()),
        )),
        None => Some((
            ErrorType::AgentError,
            format!("agent exited with {} and no result", exit.describe()),
        )),
    };
    // A 429 is a usage or rate limit: the job waits for it, the breaker does not count it.
    let usage_limited = result.is_some_and(|r| r.is_error && r.model_api_status == Some(429));
    AgentVerdict {
        failure,
        api_failure: api_failure(exit, result) && !usage_limited,
        usage_limited,
    }
}

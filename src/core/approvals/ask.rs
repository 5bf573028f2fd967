//! An agent asks: the policy answers at once, a session grant allows, or a person is asked (Telegram
//! buttons, `decide_approval`) until `approvals.timeout_secs`; an expiry stops the job.
//!
//! While the store is read-only neither a decision nor an expiry can be recorded: a person's decision is
//! refused with `READ_ONLY` (the request and its buttons stay), and the expiry waits for writes to work
//! again, then gives the request a grace of `READ_ONLY_GRACE` (at most the approval timeout) so the person
//! who could not answer meanwhile can. A store that failed its integrity check stays read-only: there the
//! expiry is applied without being recorded.

use crate::core::events::{Event, Scope};
use crate::core::jobs::outcome::StopReason;
use crate::domain::{Approval, ApprovalState, Job, JobKind, Session};
use crate::errors::{CoreError, ErrorCode};
use crate::policy::Verdict;
use crate::telemetry::ScopeLabel;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;

use super::*;

/// How long a request stays open once writes work again after its expiry came while they did not.
const READ_ONLY_GRACE: Duration = Duration::from_secs(60);

/// How often a postponed expiry looks whether writes work again.
const READ_ONLY_RECHECK: Duration = Duration::from_secs(1);

/// Where the wait for a person stands.
enum Wait {
    /// Until the approval timeout.
    Open,
    /// The expiry came while the store was read-only: checking every `READ_ONLY_RECHECK`.
    Postponed,
    /// Writes work again: the grace after a postponed expiry.
    Grace,
}

impl Approvals<'_> {
    /// The permission prompt of job `job_id`'s agent: the decision, which its driver words. Its lines
    /// (policy, waiting, the decision) are in the job's trace.
    pub async fn request_approval(
        &self,
        job_id: &str,
        tool: &str,
        input: Value,
        tool_use_id: Option<String>,
    ) -> Result<ApprovalAnswer, CoreError> {
        use tracing::Instrument;
        self.request_approval_traced(job_id, tool, input, tool_use_id)
            .instrument(crate::logging::job_span(job_id))
            .await
    }

    async fn request_approval_traced(
        &self,
        job_id: &str,
        tool: &str,
        input: Value,
        tool_use_id: Option<String>,
    ) -> Result<ApprovalAnswer, CoreError> {
        let job = open_job(self.core, job_id).await?;
        // A push is the daemon's own request: an agent asking it is refused (it could only mimic one).
        if tool == policy::PUSH_TOOL {
            let why = "git_push is asked by the daemon for a push job only; an agent cannot ask it";
            self.audit_decision(
                &job,
                "policy",
                Audited::PolicyDecided {
                    approved: false,
                    tool: tool.to_string(),
                    input: render_input(tool, &input),
                    scope: "git_push".into(),
                    reason: why.into(),
                },
            )
            .await;
            self.count("git_push", "denied");
            return Ok(answer(false, &input, why, false));
        }
        let scope = policy::scope(tool, &input);
        let grants = self.core.store().grants(&job.session_id).await?;
        let preview = render_input(tool, &input);
        // Paths in a command are judged against the session's worktree; without one nothing is auto-allowed.
        let worktree = self
            .core
            .store()
            .session(&job.session_id)
            .await?
            .map(|s| std::path::PathBuf::from(s.worktree_path))
            .unwrap_or_else(|| std::path::PathBuf::from("/nonexistent/worktree"));
        let (allow, why) = match self.policy().evaluate(tool, &input, &grants, &worktree) {
            Verdict::Allow(why) => (true, why),
            Verdict::Deny(why) => (false, why),
            Verdict::Ask => {
                return self
                    .ask(job, tool, input, tool_use_id, scope, preview)
                    .await
                    .map(|(answer, _)| answer);
            }
        };
        self.count(scope, if allow { "approved" } else { "denied" });
        self.audit_decision(
            &job,
            "policy",
            Audited::PolicyDecided {
                approved: allow,
                tool: tool.to_string(),
                input: preview.clone(),
                scope: scope.to_string(),
                reason: why.to_string(),
            },
        )
        .await;
        Ok(answer(allow, &input, &why, false))
    }

    /// A push job asks to push (`input` says what: remote, branch, range, commits): only a person decides,
    /// no rule nor grant; the answer says who (`expiry` when it expired, `daemon` when the job ended
    /// first). An expiry stops the job as any expiry does.
    pub async fn request_push_approval(
        &self,
        job_id: &str,
        input: Value,
    ) -> Result<PersonAnswer, CoreError> {
        use tracing::Instrument;
        let job = open_job(self.core, job_id).await?;
        if job.kind != JobKind::Push {
            return Err(CoreError::internal(format!(
                "job {job_id} is not a push; only a push job asks {}",
                policy::PUSH_TOOL
            )));
        }
        let tool = policy::PUSH_TOOL;
        let preview = render_input(tool, &input);
        let scope = policy::scope(tool, &input);
        let (answer, by) = self
            .ask(job, tool, input, None, scope, preview)
            .instrument(crate::logging::job_span(job_id))
            .await?;
        Ok(PersonAnswer {
            approved: matches!(answer, ApprovalAnswer::Allow { .. }),
            by,
        })
    }

    /// No rule decides: record the request, tell people, and wait for the first decision or the expiry.
    /// Answers the decision and who took it.
    async fn ask(
        &self,
        job: Job,
        tool: &str,
        input: Value,
        tool_use_id: Option<String>,
        scope: &str,
        preview: String,
    ) -> Result<(ApprovalAnswer, String), CoreError> {
        let timeout = self.core.config().approvals.timeout;
        let now = chrono::Utc::now();
        let approval = new_approval(&job, tool, &input, tool_use_id, scope, now, timeout);
        self.core.store().insert_approval(&approval).await?;
        let (tx, rx) = oneshot::channel();
        self.waiters()
            .map
            .insert(approval.id.clone(), (job.id.clone(), tx));
        self.core.metrics().approvals_pending.inc();
        let _ = self.core.store().set_job_waiting(&job.id, true).await;
        // The session is told (it shows `blocked`); it writes its own row.
        let session_handle = self.core.sessions().handle(&job.session_id);
        if let Some(h) = &session_handle {
            h.waiting_for_person(&job.id, true).await;
        }
        // The daemon asks for its own push; an agent for its tools.
        let asker = if tool == policy::PUSH_TOOL {
            "daemon"
        } else {
            "agent"
        };
        self.audit_decision(
            &job,
            asker,
            Audited::ApprovalNeeded {
                approval_id: approval.id.clone(),
                tool: tool.to_string(),
                input: preview,
                scope: scope.to_string(),
            },
        )
        .await;
        let session = self.core.sessions().get_session(&job.session_id).await.ok();
        self.core
            .events()
            .emit(
                job_scope(&job, session.as_ref()),
                Event::ApprovalRequested {
                    approval_id: approval.id.clone(),
                },
            )
            .await;
        tracing::info!(target: "televibe.approvals", approval_id = %approval.id, job_id = %job.id, tool, scope, "Approval needed");

        let reminder = Reminder {
            after: self.core.config().approvals.remind_after,
            scope: job_scope(&job, session.as_ref()),
        };
        let outcome = self
            .wait_for_person(rx, timeout, &approval.id, reminder)
            .await;
        self.waiters().map.remove(&approval.id);
        self.core.metrics().approvals_pending.dec();
        let _ = self.core.store().set_job_waiting(&job.id, false).await;
        if let Some(h) = &session_handle {
            h.waiting_for_person(&job.id, false).await;
        }
        // Only a person's answer is a response time; an expired request is not.
        if matches!(outcome, Some(Ok(_))) {
            let waited = (chrono::Utc::now() - now).num_milliseconds().max(0) as f64 / 1000.0;
            self.core
                .metrics()
                .approval_response_seconds
                .get_or_create(&ScopeLabel {
                    scope: scope.into(),
                })
                .observe(waited);
        }
        match outcome {
            Some(Ok((choice, by))) => {
                if choice == Choice::DenyStop {
                    self.stop_job(&job, StopReason::Canceled { by: by.clone() })
                        .await;
                }
                let answer = if choice.approves() {
                    answer(true, &input, "", false)
                } else {
                    answer(
                        false,
                        &input,
                        "Denied by the user",
                        choice == Choice::DenyStop,
                    )
                };
                Ok((answer, by))
            }
            // Expired (or the daemon lost the waiter): deny with interrupt and end the job.
            _ => {
                let recorded = self
                    .core
                    .store()
                    .decide_approval(&approval.id, ApprovalState::Expired, "expired", "expiry")
                    .await;
                let expired = match &recorded {
                    // Read-only for good (corruption): the expiry holds all the same, unrecorded.
                    Err(e) => {
                        tracing::warn!(target: "televibe.approvals", approval_id = %approval.id, job_id = %job.id, error = %e, "Approval expired; the expiry could not be recorded");
                        true
                    }
                    Ok(true) => {
                        self.audit_decision(
                            &job,
                            "expiry",
                            Audited::ApprovalExpired {
                                approval_id: approval.id.clone(),
                                tool: tool.to_string(),
                            },
                        )
                        .await;
                        self.core
                            .events()
                            .emit(
                                job_scope(&job, session.as_ref()),
                                Event::ApprovalExpired {
                                    approval_id: approval.id.clone(),
                                },
                            )
                            .await;
                        true
                    }
                    Ok(false) => false,
                };
                if expired {
                    self.count(scope, "expired");
                    self.stop_job(&job, StopReason::ApprovalTimeout).await;
                    let timed_out = answer(false, &input, "The approval request timed out", true);
                    return Ok((timed_out, "expiry".into()));
                }
                // Decided just as the wait ended (or its job ended): answer what was recorded.
                Ok(self.as_recorded(&approval.id, &input).await)
            }
        }
    }

    /// The answer recorded for `approval_id`, and who gave it (`daemon` when no one did).
    async fn as_recorded(&self, approval_id: &str, input: &Value) -> (ApprovalAnswer, String) {
        let recorded = self.core.store().approval(approval_id).await.ok().flatten();
        let by = recorded
            .as_ref()
            .and_then(|a| a.decided_by.clone())
            .unwrap_or_else(|| "daemon".into());
        let approved = recorded.is_some_and(|a| a.state == ApprovalState::Approved);
        if approved {
            (answer(true, input, "", false), by)
        } else {
            (answer(false, input, "Denied", false), by)
        }
    }

    /// Waits for the decision on `approval_id` until `timeout`; `None` once it expired. A request still
    /// pending after `reminder.after` is reminded once (`approval.reminded`), the expiry unchanged. An
    /// expiry that comes while the store is read-only (and not corrupt) waits for writes to work again,
    /// then gives the request `READ_ONLY_GRACE` (at most `timeout`) more.
    async fn wait_for_person(
        &self,
        mut rx: oneshot::Receiver<(Choice, String)>,
        timeout: Duration,
        approval_id: &str,
        reminder: Reminder,
    ) -> Option<Result<(Choice, String), oneshot::error::RecvError>> {
        let mut stage = Wait::Open;
        let mut wait = timeout;
        if let Some(after) = reminder.after.filter(|a| *a < timeout) {
            if let Ok(decided) = tokio::time::timeout(after, &mut rx).await {
                return Some(decided);
            }
            self.remind(approval_id, reminder.scope).await;
            wait = timeout - after;
        }
        loop {
            if let Ok(decided) = tokio::time::timeout(wait, &mut rx).await {
                return Some(decided);
            }
            let store = self.core.store();
            let held = store.is_read_only() && !store.is_corrupt();
            stage = match (stage, held) {
                (Wait::Postponed, true) => Wait::Postponed,
                (_, true) => {
                    tracing::warn!(target: "televibe.approvals", approval_id, "Approval expiry postponed: writes are disabled, so neither an answer nor the expiry can be recorded");
                    Wait::Postponed
                }
                (Wait::Postponed, false) => {
                    let grace = READ_ONLY_GRACE.min(timeout);
                    tracing::info!(target: "televibe.approvals", approval_id, grace_secs = grace.as_secs_f64(), "Writes work again: the approval stays open a little longer");
                    wait = grace;
                    Wait::Grace
                }
                (Wait::Open | Wait::Grace, false) => return None,
            };
            if matches!(stage, Wait::Postponed) {
                wait = READ_ONLY_RECHECK;
            }
        }
    }

    /// The one reminder of a request that still waits: an outbox row, so the notifier delivers it once
    /// (and skips it if the request was decided by the time it goes out). A request decided in the
    /// store while its waiter was not yet woken is not reminded.
    async fn remind(&self, approval_id: &str, scope: Scope) {
        let pending = matches!(
            self.core.store().approval(approval_id).await,
            Ok(Some(a)) if a.state == ApprovalState::Pending
        );
        if !pending {
            return;
        }
        tracing::info!(target: "televibe.approvals", approval_id, job_id = scope.job_id.as_deref(), "Approval still waits: reminding");
        self.core
            .events()
            .emit(
                scope,
                Event::ApprovalReminded {
                    approval_id: approval_id.to_string(),
                },
            )
            .await;
    }

    async fn stop_job(&self, job: &Job, reason: StopReason) {
        if let Some(session) = self.core.sessions().handle(&job.session_id) {
            session.stop(&job.id, reason);
        }
    }
}

/// Job `job_id`, still able to ask (not ended).
async fn open_job(core: &crate::core::Core, job_id: &str) -> Result<Job, CoreError> {
    let job = core.jobs().get_job(job_id).await?;
    if job.status.is_final() {
        return Err(CoreError::new(
            ErrorCode::JobNotFound,
            format!("job {job_id} has ended"),
            "nothing to approve",
        ));
    }
    Ok(job)
}

/// When a pending request is reminded (`approvals.remind_after_secs`), and the scope of its event.
struct Reminder {
    after: Option<Duration>,
    scope: Scope,
}

/// A pending request with a fresh random id, expiring `timeout` after `now`.
fn new_approval(
    job: &Job,
    tool: &str,
    input: &Value,
    tool_use_id: Option<String>,
    scope: &str,
    now: chrono::DateTime<chrono::Utc>,
    timeout: Duration,
) -> Approval {
    Approval {
        id: {
            let mut b = [0u8; 16];
            rand::fill(&mut b[..]);
            b.iter().map(|x| format!("{x:02x}")).collect()
        },
        job_id: job.id.clone(),
        session_id: job.session_id.clone(),
        tool_name: tool.to_string(),
        tool_input: input.clone(),
        tool_use_id,
        scope: scope.to_string(),
        state: ApprovalState::Pending,
        decision: None,
        decided_by: None,
        requested_at: now,
        decided_at: None,
        expires_at: now + chrono::Duration::from_std(timeout).unwrap_or_default(),
        telegram_chat_id: None,
        telegram_message_id: None,
    }
}

/// The scope of an approval event: the job, its session, and the project when the session is known.
pub(super) fn job_scope(job: &Job, session: Option<&Session>) -> Scope {
    Scope {
        project_id: session.map(|s| s.project_id.clone()),
        session_id: Some(job.session_id.clone()),
        job_id: Some(job.id.clone()),
    }
}

//! Approvals: a job's Claude asks before a risky tool use; the policy answers first, else a person does,
//! from Telegram or an MCP client. The first decision wins; an unanswered request expires.

pub mod policy;
mod shell;

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::audit::AuditSubject;
use crate::core::Core;
use crate::domain::{Approval, ApprovalState, Job, Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::events::{Event, Scope};
use crate::jobs::outcome::StopReason;
use crate::telemetry::{ScopeLabel, ScopeResultLabel};
use policy::{Policy, Verdict};

/// A person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    ApproveOnce,
    ApproveSession,
    Deny,
    DenyStop,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::ApproveOnce => "approve_once",
            Choice::ApproveSession => "approve_session",
            Choice::Deny => "deny",
            Choice::DenyStop => "deny_stop",
        }
    }

    pub fn approves(self) -> bool {
        matches!(self, Choice::ApproveOnce | Choice::ApproveSession)
    }
}

/// Waiting approval calls, by approval id.
#[derive(Default)]
pub struct Waiters {
    map: HashMap<String, (String, oneshot::Sender<(Choice, String)>)>,
}

/// The answer Claude Code expects from the permission prompt tool, echoing the input when allowing.
pub fn answer(allow: bool, input: &Value, message: &str, interrupt: bool) -> String {
    if allow {
        json!({"behavior": "allow", "updatedInput": input}).to_string()
    } else {
        json!({"behavior": "deny", "message": message, "interrupt": interrupt}).to_string()
    }
}

fn not_found(id: &str) -> CoreError {
    CoreError::new(
        ErrorCode::ApprovalNotFound,
        format!("no approval {id:?}"),
        "list them with list_pending_approvals",
    )
}

impl Core {
    fn policy(&self) -> Policy {
        Policy {
            allow: self.config().approvals.auto_allow.clone(),
            deny: self.config().approvals.auto_deny.clone(),
        }
    }

    /// Whether a job waits for a person (its runner does not count that as a hang).
    pub fn job_waits_for_approval(&self, job_id: &str) -> bool {
        self.approval_waiters()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .values()
            .any(|(j, _)| j == job_id)
    }

    fn count(&self, scope: &str, result: &str) {
        self.metrics()
            .approvals_total
            .get_or_create(&ScopeResultLabel {
                scope: scope.into(),
                result: result.into(),
            })
            .inc();
    }

    async fn audit_decision(&self, job: &Job, event: &str, actor: &str, details: Value) {
        self.audit()
            .record(
                &self.store(),
                event,
                actor,
                AuditSubject {
                    session_id: Some(job.session_id.clone()),
                    job_id: Some(job.id.clone()),
                    ..Default::default()
                },
                details,
            )
            .await;
    }

    /// The permission prompt of job `job_id`'s Claude: answers the JSON text Claude Code expects.
    pub async fn request_approval(
        &self,
        job_id: &str,
        tool: &str,
        input: Value,
        tool_use_id: Option<String>,
    ) -> Result<String, CoreError> {
        let job = self.get_job(job_id).await?;
        if job.status.is_final() {
            return Err(CoreError::new(
                ErrorCode::JobNotFound,
                format!("job {job_id} has ended"),
                "nothing to approve",
            ));
        }
        let scope = policy::scope(tool, &input);
        let grants = self.store().grants(&job.session_id).await?;
        let preview = render_input(tool, &input);
        // Paths in a command are judged against the session's worktree; without one nothing is auto-allowed.
        let worktree = self
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
                    .await;
            }
        };
        let (event, result) = if allow {
            ("job.approved", "approved")
        } else {
            ("job.denied", "denied")
        };
        self.count(scope, result);
        self.audit_decision(
            &job,
            event,
            "policy",
            json!({"tool": tool, "input": preview, "scope": scope, "reason": why}),
        )
        .await;
        Ok(answer(allow, &input, &why, false))
    }

    /// No rule decides: record the request, tell people, and wait for the first decision or the expiry.
    async fn ask(
        &self,
        job: Job,
        tool: &str,
        input: Value,
        tool_use_id: Option<String>,
        scope: &str,
        preview: String,
    ) -> Result<String, CoreError> {
        let timeout = self.config().approvals.timeout;
        let now = chrono::Utc::now();
        let approval = Approval {
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
        };
        self.store().insert_approval(&approval).await?;
        let (tx, rx) = oneshot::channel();
        self.approval_waiters()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .insert(approval.id.clone(), (job.id.clone(), tx));
        self.metrics().approvals_pending.inc();
        let _ = self.store().set_job_waiting(&job.id, true).await;
        let _ = self
            .store()
            .set_session_state_if(
                &job.session_id,
                SessionState::Running,
                SessionState::Blocked,
            )
            .await;
        self.audit_decision(
            &job,
            "job.approval_needed",
            "agent",
            json!({"approval_id": approval.id, "tool": tool, "input": preview, "scope": scope}),
        )
        .await;
        let session = self.get_session(&job.session_id).await.ok();
        self.emit(
            job_scope(&job, session.as_ref()),
            Event::ApprovalRequested {
                approval_id: approval.id.clone(),
            },
        )
        .await;
        tracing::info!(target: "televibe.approvals", approval_id = %approval.id, job_id = %job.id, tool, scope, "Approval needed");

        let outcome = tokio::time::timeout(timeout, rx).await;
        self.approval_waiters()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .remove(&approval.id);
        self.metrics().approvals_pending.dec();
        let _ = self.store().set_job_waiting(&job.id, false).await;
        // Only a session still blocked by this wait goes back to running (it may have been closed meanwhile).
        let _ = self
            .store()
            .set_session_state_if(
                &job.session_id,
                SessionState::Blocked,
                SessionState::Running,
            )
            .await;
        let waited = (chrono::Utc::now() - now).num_milliseconds().max(0) as f64 / 1000.0;
        self.metrics()
            .approval_response_seconds
            .get_or_create(&ScopeLabel {
                scope: scope.into(),
            })
            .observe(waited);
        match outcome {
            Ok(Ok((choice, by))) => {
                if choice == Choice::DenyStop {
                    self.stop_job(&job, StopReason::Canceled { by }).await;
                }
                Ok(if choice.approves() {
                    answer(true, &input, "", false)
                } else {
                    answer(
                        false,
                        &input,
                        "Denied by the user",
                        choice == Choice::DenyStop,
                    )
                })
            }
            // Expired (or the daemon lost the waiter): deny with interrupt and end the job.
            _ => {
                if self
                    .store()
                    .decide_approval(&approval.id, ApprovalState::Expired, "expired", "expiry")
                    .await
                    .unwrap_or(false)
                {
                    self.count(scope, "expired");
                    self.audit_decision(&job, "job.denied", "expiry", json!({"approval_id": approval.id, "tool": tool, "reason": "approval timed out"})).await;
                    self.emit(
                        job_scope(&job, session.as_ref()),
                        Event::ApprovalExpired {
                            approval_id: approval.id.clone(),
                        },
                    )
                    .await;
                    self.stop_job(&job, StopReason::ApprovalTimeout).await;
                    return Ok(answer(
                        false,
                        &input,
                        "The approval request timed out",
                        true,
                    ));
                }
                // Decided just as the wait ended: answer what was recorded.
                let approved = matches!(self.store().approval(&approval.id).await, Ok(Some(a)) if a.state == ApprovalState::Approved);
                Ok(if approved {
                    answer(true, &input, "", false)
                } else {
                    answer(false, &input, "Denied", false)
                })
            }
        }
    }

    async fn stop_job(&self, job: &Job, reason: StopReason) {
        if let Some(session) = self.session_actor(&job.session_id) {
            let _ = session.cast(crate::sessions::actor::SessionMsg::StopJob(
                job.id.clone(),
                reason,
            ));
        }
    }

    /// A person decides. The first decision wins; later ones get APPROVAL_ALREADY_DECIDED.
    pub async fn decide_approval(
        &self,
        id: &str,
        choice: Choice,
        actor: &str,
    ) -> Result<Approval, CoreError> {
        let a = self
            .store()
            .approval(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let state = if choice.approves() {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        if !self
            .store()
            .decide_approval(id, state, choice.as_str(), actor)
            .await?
        {
            let a = self
                .store()
                .approval(id)
                .await?
                .ok_or_else(|| not_found(id))?;
            return Err(CoreError::new(
                ErrorCode::ApprovalAlreadyDecided,
                format!(
                    "already {} by {}",
                    a.state.as_str(),
                    a.decided_by.as_deref().unwrap_or("?")
                ),
                "nothing to do",
            ));
        }
        if choice == Choice::ApproveSession {
            self.store()
                .insert_grant(
                    &a.session_id,
                    &a.tool_name,
                    &policy::grant_pattern(&a.tool_name, &a.tool_input),
                    actor,
                )
                .await?;
        }
        self.count(
            &a.scope,
            if choice.approves() {
                "approved"
            } else {
                "denied"
            },
        );
        if let Ok(job) = self.get_job(&a.job_id).await {
            let event = if choice.approves() {
                "job.approved"
            } else {
                "job.denied"
            };
            self.audit_decision(
                &job,
                event,
                actor,
                json!({"approval_id": a.id, "tool": a.tool_name, "decision": choice.as_str()}),
            )
            .await;
        }
        let waiter = self
            .approval_waiters()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .remove(id);
        if let Some((_, tx)) = waiter {
            let _ = tx.send((choice, actor.to_string()));
        }
        self.emit(
            Scope {
                project_id: None,
                session_id: Some(a.session_id.clone()),
                job_id: Some(a.job_id.clone()),
            },
            Event::ApprovalDecided {
                approval_id: a.id.clone(),
            },
        )
        .await;
        tracing::info!(target: "televibe.approvals", approval_id = %a.id, decision = choice.as_str(), actor, "Approval decided");
        self.store()
            .approval(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// A job ended while asking: its requests expire, their buttons go, and the waiting calls answer deny.
    pub async fn end_approvals_of_job(&self, job_id: &str) {
        let waiting: Vec<(String, oneshot::Sender<(Choice, String)>)> = {
            let mut w = self
                .approval_waiters()
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let ids: Vec<String> = w
                .map
                .iter()
                .filter(|(_, (j, _))| j == job_id)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| w.map.remove(&id).map(|(_, tx)| (id, tx)))
                .collect()
        };
        if !waiting.is_empty() {
            tracing::info!(target: "televibe.approvals", job_id, ended = waiting.len(), "Ending the approval requests of a finished job");
        }
        for (id, tx) in waiting {
            if self
                .store()
                .decide_approval(&id, ApprovalState::Expired, "expired", "job ended")
                .await
                .unwrap_or(false)
                && let Ok(Some(a)) = self.store().approval(&id).await
            {
                self.retire_expired(&a).await;
            }
            let _ = tx.send((Choice::Deny, "daemon".into()));
        }
    }

    /// An approval that expired without a person: counted, and its message loses its buttons.
    async fn retire_expired(&self, a: &Approval) {
        self.count(&a.scope, "expired");
        self.emit(
            Scope {
                project_id: None,
                session_id: Some(a.session_id.clone()),
                job_id: Some(a.job_id.clone()),
            },
            Event::ApprovalDecided {
                approval_id: a.id.clone(),
            },
        )
        .await;
    }

    pub async fn list_pending_approvals(&self) -> Result<Vec<Approval>, CoreError> {
        Ok(self.store().pending_approvals().await?)
    }

    /// At boot no waiting call survives: pending approvals expire and their buttons are retired.
    pub async fn expire_orphaned_approvals(&self) {
        match self
            .store()
            .expire_pending_approvals(chrono::Utc::now())
            .await
        {
            Ok(expired) => {
                for a in expired {
                    self.retire_expired(&a).await;
                }
            }
            Err(e) => {
                tracing::error!(target: "televibe.approvals", error = %e, "pending approvals not expired")
            }
        }
    }
}

/// The scope of an approval event: the job, its session, and the project when the session is known.
fn job_scope(job: &Job, session: Option<&Session>) -> Scope {
    Scope {
        project_id: session.map(|s| s.project_id.clone()),
        session_id: Some(job.session_id.clone()),
        job_id: Some(job.id.clone()),
    }
}

/// The command or path a request is about, for audit records and logs: hidden characters made visible, and
/// bounded with the number of characters left out said (Telegram shows the whole input, see
/// `render::approval_view`).
pub fn render_input(tool: &str, input: &Value) -> String {
    use crate::text::{main_field, visible};
    const MAX: usize = 2000;
    let text = match main_field(tool)
        .and_then(|k| input.get(k))
        .and_then(Value::as_str)
    {
        Some(s) => visible(s),
        None => visible(&input.to_string()),
    };
    let len = text.chars().count();
    if len <= MAX {
        text
    } else {
        format!(
            "{}… (+{} characters)",
            text.chars().take(MAX).collect::<String>(),
            len - MAX
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audited_input_is_visible_and_says_what_it_leaves_out() {
        let r = render_input("Bash", &json!({"command": "ls\u{202e}gnp.exe\nrm x"}));
        assert_eq!(r, "ls⟨U+202E⟩gnp.exe\nrm x");
        let long = "y".repeat(2500);
        let r = render_input("Bash", &json!({ "command": long }));
        assert!(r.ends_with("… (+500 characters)"), "{r}");
        let r = render_input("mcp__x__y", &json!({"a": "\u{200b}"}));
        assert_eq!(r, "{\"a\":\"⟨U+200B⟩\"}");
    }
}

//! What a running job's agent says: its events (the conversation, tools, retries, usage limits, the
//! result) turned into job events and the runner's state, and approvals asked on its own output.

use super::*;
use crate::core::jobs::usage;

impl Runner {
    pub(super) async fn on_events(&self, st: &mut RunnerState, events: Vec<AgentEvent>) {
        let core = &self.core;
        for ev in events {
            match ev {
                AgentEvent::Conversation { id, .. } => {
                    // The session keeps the conversation (its row is the session's to write).
                    let agent = st.driver.name();
                    if st.session.conversation(agent) != Some(id.as_str()) {
                        (st.report_to)(Report::Conversation {
                            job_id: st.job.id.clone(),
                            agent,
                            id: id.clone(),
                        });
                        st.session.set_conversation(agent, &id);
                    }
                }
                AgentEvent::ToolUse { id, name, input } => {
                    let target = tool_target(&name, &input);
                    core.events()
                        .emit(
                            Scope::job(&st.job, &st.session),
                            Event::ToolStarted {
                                tool: name.clone(),
                                target: target.clone(),
                                tool_use_id: id.clone(),
                            },
                        )
                        .await;
                    st.tools.insert(id, (name, target));
                }
                AgentEvent::ToolResult {
                    tool_use_id,
                    is_error,
                } => {
                    let (name, target) = st.tools.get(&tool_use_id).cloned().unwrap_or_default();
                    core.events()
                        .emit(
                            Scope::job(&st.job, &st.session),
                            Event::ToolCompleted {
                                tool: name,
                                target,
                                tool_use_id,
                                is_error,
                            },
                        )
                        .await;
                }
                AgentEvent::Text(t) => {
                    st.api_wait_until = None;
                    core.jobs().agent_waits_itself(&st.session.id, None);
                    st.last_text = Some(t)
                }
                AgentEvent::Result(r) => {
                    core.jobs().agent_waits_itself(&st.session.id, None);
                    st.result = Some(r)
                }
                AgentEvent::ApiRetry {
                    attempt,
                    max_retries,
                    error_status,
                    error,
                    retry_delay_ms,
                } => {
                    tracing::warn!(target: "televibe.runner", job_id = %st.job.id, attempt, max_retries, error_status, retry_delay_ms, "Agent retries the model API");
                    // What the agent prints is untrusted: a wait it announces counts up to a bound.
                    if let Some(delay) = retry_delay_ms
                        .filter(|d| *d > 0)
                        .map(|d| d.min(usage::MAX_SELF_WAIT_MS))
                    {
                        // The agent is silent until it retries: that wait is not a hang.
                        st.api_wait_until =
                            Some(Instant::now() + Duration::from_millis(delay as u64));
                        // A rate limit the agent waits out itself: its chat is told once, as for any
                        // usage limit, and its session shows the wait.
                        if error_status == Some(429) && delay >= usage::SELF_WAIT_NOTICE_MS {
                            let until = (now_ms() + delay + 999) / 1000;
                            core.jobs().agent_waits_itself(&st.session.id, Some(until));
                            if !std::mem::replace(&mut st.self_wait_told, true) {
                                core.jobs()
                                    .notify_usage_limit(&st.session, st.driver.name(), until)
                                    .await;
                            }
                        }
                    }
                    // The phone shows it: a job that waits on an overloaded API is not stuck.
                    core.events()
                        .emit(
                            Scope::job(&st.job, &st.session),
                            Event::ApiRetry {
                                attempt,
                                max_retries,
                                error_status,
                                error,
                                retry_delay_ms,
                            },
                        )
                        .await;
                }
                AgentEvent::ConversationLost => {
                    // Believed only when its file is not in the session's agent state either (looked at,
                    // never opened): a conversation that exists is not given up for another failure.
                    let file = st.endpoint.plan.as_ref().and_then(|p| {
                        let id = st.session.conversation(st.driver.name())?;
                        let cwd = std::path::Path::new(&st.session.worktree_path);
                        Some(p.state.join(st.driver.conversation_file(cwd, id)?))
                    });
                    if file.is_some_and(|f| std::fs::symlink_metadata(f).is_ok()) {
                        tracing::warn!(target: "televibe.runner", job_id = %st.job.id, "The agent could not resume a conversation that is still saved; the job ends as the agent left it");
                    } else {
                        tracing::warn!(target: "televibe.runner", job_id = %st.job.id, "The conversation to resume was not found; the job runs again in a new one");
                        st.conversation_lost = true;
                    }
                }
                AgentEvent::Usage(report) => {
                    core.jobs().usage_reported(st.driver.name(), &report);
                    if report.limited {
                        tracing::warn!(target: "televibe.runner", job_id = %st.job.id, resets_at = report.resets_at, "The agent reports a usage limit");
                        st.limit = Some(report.resets_at.or(st.limit.flatten()));
                    }
                }
                AgentEvent::PermissionDenied { tool_name, .. } => {
                    tracing::info!(target: "televibe.runner", job_id = %st.job.id, tool = %tool_name, "Agent was denied a tool");
                }
                AgentEvent::Malformed(_) => {
                    st.malformed += 1;
                    if st.malformed <= 3 {
                        tracing::warn!(target: "televibe.runner", job_id = %st.job.id, "Malformed line from the agent (kept in the job log)");
                    }
                }
                AgentEvent::ApprovalRequest(ask) => self.answer_on_stream(st, ask),
                // The output reader handles these (stdin), and drops what it does not model.
                AgentEvent::Reply(_) | AgentEvent::EndInput | AgentEvent::Unknown(_) => {}
            }
        }
    }

    /// An approval the agent asked on its own output: asked like any other (policy, grants, a person),
    /// off the handler (a person may take minutes); the answer, in the driver's format, goes to stdin.
    fn answer_on_stream(&self, st: &RunnerState, ask: crate::agents::ApprovalAsk) {
        let Some(input) = st.input.clone() else {
            tracing::warn!(target: "televibe.runner", job_id = %st.job.id, "The agent asked for an approval with its input closed");
            return;
        };
        let (core, driver, job_id) = (self.core.clone(), st.driver, st.job.id.clone());
        tokio::spawn(async move {
            let answer = core
                .approvals()
                .request_approval(
                    &job_id,
                    &ask.tool,
                    ask.input.clone(),
                    ask.tool_use_id.clone(),
                )
                .await
                // No decision can be had: deny, so nothing runs unapproved.
                .unwrap_or_else(|e| crate::agents::ApprovalAnswer::Deny {
                    message: e.message,
                    interrupt: false,
                });
            let _ = input.send(start::StdinMsg::Line(driver.approval_answer(&ask, &answer)));
        });
    }
}

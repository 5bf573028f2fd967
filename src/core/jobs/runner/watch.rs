//! Watching a running job: the heartbeat and hang check (CPU progress counts only when busy), the
//! agent's exit, and its end (outcome, changes, the decision for its session). Its events are `events.rs`.

use super::*;

/// CPU is judged over a window of recent checks: half the hang timeout, at most this long.
pub(super) const CPU_WINDOW: Duration = Duration::from_secs(10);

/// CPU ticks a second (of `CLK_TCK` = 100) that count as progress: 5 % of a core. Less is an agent idling on
/// a stalled connection (its timers, file polls and keep-alives tick), which must not keep a hung job alive:
/// Claude Code 2.1.328 idles at 1–4 % of a core on a stalled stream (it polls its state file and the git
/// HEAD every second), which a 2 % threshold took for progress now and then.
pub(super) const BUSY_TICKS_PER_SEC: f64 = 5.0;

/// Records the group's CPU `ticks` at `now`; whether it used at least `BUSY_TICKS_PER_SEC` over the last
/// `window`.
pub(super) fn cpu_busy(
    samples: &mut std::collections::VecDeque<(Instant, u64)>,
    window: Duration,
    now: Instant,
    ticks: u64,
) -> bool {
    samples.push_back((now, ticks));
    while samples.len() > 2 && now.duration_since(samples[1].0) >= window {
        samples.pop_front();
    }
    let (t0, c0) = samples[0];
    let span = now.duration_since(t0).as_secs_f64();
    // Ticks can fall when a process of the group exits: that is no progress.
    let used = ticks.saturating_sub(c0) as f64;
    span > 0.0 && used > 0.0 && used >= span * BUSY_TICKS_PER_SEC
}

/// Longest line kept whole; the rest of a longer line is dropped (the log and parser get the start).
pub(super) const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The next line, lossily decoded (agents may print invalid UTF-8) and capped at `MAX_LINE_BYTES`,
/// so a reader never stops draining the pipe and never holds an unbounded line.
pub(super) async fn read_line_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    buf.clear();
    let mut seen_any = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(seen_any.then(|| {
                String::from_utf8_lossy(buf)
                    .trim_end_matches('\r')
                    .to_string()
            }));
        }
        seen_any = true;
        let (chunk, consumed, done) = match available.iter().position(|b| *b == b'\n') {
            Some(pos) => (&available[..pos], pos + 1, true),
            None => (available, available.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(consumed);
        if done {
            return Ok(Some(
                String::from_utf8_lossy(buf)
                    .trim_end_matches('\r')
                    .to_string(),
            ));
        }
    }
}

impl Runner {
    /// One of the agent's output streams ended; the job is final once both have and the agent exited.
    pub(super) async fn stream_closed(&self, myself: &ActorRef<RunnerMsg>, st: &mut RunnerState) {
        st.streams_open = st.streams_open.saturating_sub(1);
        if st.streams_open == 0 && st.exit.is_some() {
            self.finalize(myself, st).await;
        }
    }

    /// The agent exited: what it left in its group is killed; the outcome waits for its streams (3 s at most).
    pub(super) async fn exited(
        &self,
        myself: &ActorRef<RunnerMsg>,
        st: &mut RunnerState,
        code: Option<i32>,
        signal: Option<i32>,
    ) {
        // Killed by a signal while the daemon stops, unasked (a service manager signalling the whole
        // group): the job is cut, not ended; the next start runs it again.
        if signal.is_some() && st.stop.is_none() && self.core.is_shutting_down() {
            tracing::warn!(target: "televibe.runner", job_id = %st.job.id, signal, "Agent killed while the daemon stops; the job runs again at the next start");
            st.kill();
            return;
        }
        st.exit = Some((code, signal));
        tracing::debug!(target: "televibe.runner", job_id = %st.job.id, code, signal, streams_open = st.streams_open, "Agent exited");
        // Nothing of the job may go on (a detached child in its cgroup included) while its work is read.
        st.kill();
        // Recorded at once: a restart while its work is collected must not run the job again.
        if let Err(e) = self.core.store().job_exited(&st.job.id, code, signal).await {
            tracing::warn!(target: "televibe.runner", job_id = %st.job.id, error = %e, "cannot record that the agent exited");
        }
        if st.streams_open == 0 {
            self.finalize(myself, st).await;
        } else {
            myself.send_after(Duration::from_secs(3), || RunnerMsg::Finalize);
        }
    }

    pub(super) async fn on_tick(&self, myself: &ActorRef<RunnerMsg>, st: &mut RunnerState) {
        let core = &self.core;
        let _ = core.store().job_heartbeat(&st.job.id).await;
        (st.report_to)(Report::Alive {
            job_id: st.job.id.clone(),
        });
        core.metrics().set_log_bytes(&st.job.id, st.log.bytes());
        if st.exit.is_some() || st.stop.is_some() {
            return;
        }
        let now = Instant::now();
        let hang = core.config().jobs.hang_timeout;
        let window = (hang / 2).clamp(Duration::from_secs(1), CPU_WINDOW);
        let ticks = st.cpu_ticks();
        if cpu_busy(&mut st.cpu_samples, window, now, ticks) {
            st.last_cpu_change = now;
        }
        let quiet_output = Duration::from_millis(
            (now_ms() - st.last_output_ms.load(Ordering::Relaxed)).max(0) as u64,
        );
        let quiet = quiet_output.min(st.last_cpu_change.elapsed());
        // Waiting for a person, or for the model API's retry the agent announced, is not a hang.
        let api_wait = st.api_wait_until.is_some_and(|t| now < t);
        if api_wait || core.approvals().job_waits_for_approval(&st.job.id) {
            st.last_cpu_change = Instant::now();
            st.last_output_ms.store(now_ms(), Ordering::Relaxed);
        } else if quiet >= core.config().jobs.hang_timeout {
            begin_stop(myself, st, StopReason::Hung, self.grace());
        }
    }

    /// The process is gone and its output read: take the job's places back, bring in what it
    /// committed and measure the worktree off the handler (git may take a while and heartbeats must go
    /// on), then `Complete`. Everything here reads what the job wrote: through `safe_fs`, on the blocking
    /// pool, under timeouts; a violation fails the job and nothing is taken from it.
    pub(super) async fn finalize(&self, myself: &ActorRef<RunnerMsg>, st: &mut RunnerState) {
        if st.finishing {
            return;
        }
        st.finishing = true;
        let worktree = PathBuf::from(&st.session.worktree_path);
        let base = st.job.base_commit.clone();
        let (core, me) = (self.core.clone(), myself.clone());
        let plan = st.endpoint.plan.clone();
        let (repo, branch, job_id) = (
            PathBuf::from(&st.project.repo_path),
            st.session.branch.clone(),
            st.job.id.clone(),
        );
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let violation = match plan {
                Some(plan) => bring_in(
                    &core,
                    &plan,
                    &repo,
                    &worktree,
                    &branch,
                    base.as_deref(),
                    &job_id,
                )
                .await
                .err(),
                None => None,
            };
            if let Some(v) = &violation {
                tracing::error!(target: "televibe.runner", job_id = %job_id, error = %v, "The job left something the daemon refuses to touch; nothing was taken from it");
            }
            let changes = if worktree.is_dir() {
                core.git().changes(&worktree, base.as_deref()).await.ok()
            } else {
                None
            };
            tracing::debug!(target: "televibe.runner", job_id = %job_id, git_ms = began.elapsed().as_millis() as u64, "Job's git work collected");
            let _ = me.cast(RunnerMsg::Complete(changes, violation));
        });
    }

    pub(super) async fn complete(
        &self,
        st: &mut RunnerState,
        changes: Option<(Vec<String>, Option<String>)>,
        violation: Option<String>,
    ) {
        if st.finished {
            return;
        }
        st.finished = true;
        let core = &self.core;
        let (code, signal) = st.exit.unwrap_or((None, None));
        core.jobs().agent_waits_itself(&st.session.id, None);
        let decide_with = |stop: Option<&StopReason>| {
            decide(
                st.driver,
                Exit { code, signal },
                stop,
                st.result.as_ref(),
                st.log.truncated(),
            )
        };
        let mut outcome = decide_with(st.stop.as_ref());
        // Stopped (canceled, killed, timed out) after the agent exited: a run that would wait for a
        // usage limit, or run again in a new conversation, ends as it was told to instead.
        if (outcome.usage_limited || st.conversation_lost)
            && let Some(late) = st.late_stop.as_ref()
        {
            outcome = decide_with(Some(late));
        }
        if let Some((files, stat)) = changes {
            outcome.outcome.files_changed = files;
            outcome.outcome.diff_stat = stat;
        }
        if outcome.outcome.result_text.is_none() {
            outcome.outcome.result_text = st.last_text.clone();
        }
        outcome.conversation_lost =
            st.conversation_lost && st.stop.is_none() && st.late_stop.is_none();
        // The reset the agent gave for its limit, else the one its model API's 429 named (an API key's
        // limit shows its reset only there).
        let seen = *st
            .endpoint
            .limit_reset
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        outcome.resets_at = st.limit.flatten().or(seen);
        let isolated = st.endpoint.plan.as_ref().is_some_and(|p| p.isolate_network);
        outcome.agent_reset = if isolated { seen } else { outcome.resets_at };
        let oom = st.cgroup.as_ref().map(|c| c.oom_kills()).unwrap_or(0);
        if oom > 0 && outcome.outcome.status != Some(crate::domain::JobStatus::Canceled) {
            outcome.usage_limited = false;
            outcome.outcome.status = Some(crate::domain::JobStatus::Failed);
            outcome.outcome.error_type = Some(crate::domain::ErrorType::AgentError);
            outcome.outcome.error = Some(format!(
                "out of memory: the job used all of jobs.memory_max ({} MiB) and the kernel killed it",
                core.config().jobs.memory_max >> 20
            ));
        } else if let Some(v) = violation
            && (outcome.outcome.status == Some(crate::domain::JobStatus::Done)
                || outcome.usage_limited)
        {
            outcome.usage_limited = false;
            outcome.outcome.status = Some(crate::domain::JobStatus::Failed);
            // The agent misbehaved: the error names what it left and why it was refused.
            outcome.outcome.error_type = Some(crate::domain::ErrorType::AgentError);
            outcome.outcome.error = Some(v);
        }
        let ending = Ending::Decided {
            decision: Box::new(outcome),
            elapsed: st.started.elapsed(),
            breaker: st.breaker.take(),
        };
        // The session ends the job and then stops this runner (a stop first could reach the session
        // before this report and look like a runner that died without an outcome).
        (st.report_to)(Report::Decided {
            job_id: st.job.id.clone(),
            ending,
        });
    }
}

/// How long the daemon's own file work after a job may take (handing places back, checks).
const AFTER_JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// After a sandboxed job: its places back from its user, its git directory checked, HEAD back on the
/// session's branch, its objects imported and its branch moved. The first violation ends this (named
/// with its path and reason); what the job left is then not taken.
async fn bring_in(
    core: &Arc<Core>,
    plan: &SandboxPlan,
    repo: &std::path::Path,
    worktree: &std::path::Path,
    branch: &str,
    base: Option<&str>,
    job_id: &str,
) -> Result<(), String> {
    let blocking = |what: &'static str, f: Box<dyn FnOnce() -> Result<(), String> + Send>| async move {
        crate::safe_fs::blocking(AFTER_JOB_TIMEOUT, what, f)
            .await
            .and_then(|r| r)
    };
    let p = plan.clone();
    blocking(
        "taking the job's places back",
        Box::new(move || p.take_back()),
    )
    .await?;
    let p = plan.clone();
    // What the job left in the worktree's git directory is removed and named, and the rest goes on:
    // HEAD is put back below, so the session stays usable; the job still fails.
    let left = blocking(
        "checking the worktree's git directory",
        Box::new(move || p.check_git_dir()),
    )
    .await
    .err();
    match core.git().reattach_head(repo, worktree, branch).await {
        Ok(true) => {
            tracing::warn!(target: "televibe.runner", job_id = %job_id, branch = %branch, "The job left its session's branch; the worktree's HEAD points at it again (its changes show as uncommitted)");
        }
        Ok(false) => {}
        Err(e @ crate::git::GitError::Unsafe(_)) => return Err(e.to_string()),
        Err(e) => {
            tracing::warn!(target: "televibe.runner", job_id = %job_id, error = %e, "Cannot check the worktree's HEAD");
        }
    }
    let (run_dir, b) = (plan.run_dir.clone(), branch.to_string());
    let after =
        crate::safe_fs::blocking(AFTER_JOB_TIMEOUT, "reading the job's branch", move || {
            sandbox::branch_after(&run_dir, &b)
        })
        .await?
        .map_err(|e| format!("refused a file the job left: {e}"))?
        .filter(|after| Some(after.as_str()) != base);
    if let Some(v) = left {
        return Err(v);
    }
    match core
        .git()
        .import_objects(repo, &sandbox::objects_dir(&plan.run_dir))
        .await
    {
        Ok(_) => {}
        Err(e @ crate::git::GitError::Unsafe(_)) => return Err(e.to_string()),
        Err(e) => {
            tracing::warn!(target: "televibe.runner", job_id = %job_id, error = %e, "The job's new git objects could not be imported");
        }
    }
    // Failure drill (only with debug.test_hooks): the daemon is killed between the import and the branch
    // move. The objects are in the repository, the branch still at its old commit: both consistent.
    if core.config().debug.stop_at.as_deref() == Some("after_import") {
        tracing::warn!(target: "televibe.runner", job_id = %job_id, "stopped at after_import");
        std::future::pending::<()>().await;
    }
    if let Some(after) = after
        && let Err(e) = core.git().adopt_branch(repo, branch, base, &after).await
    {
        tracing::warn!(target: "televibe.runner", job_id = %job_id, error = %e, "The job's commits could not be kept on its branch");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_ticks_are_not_progress_and_real_work_is() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = std::collections::VecDeque::new();
        assert!(
            !cpu_busy(&mut s, CPU_WINDOW, at(0), 100),
            "a first sample proves nothing"
        );
        assert!(
            !cpu_busy(&mut s, CPU_WINDOW, at(5_000), 100),
            "no CPU at all"
        );
        // One tick in five seconds (0.2 % of a core): an idle process's timers.
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(10_000), 101));
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(15_000), 102));
        // A busy second: 50 ticks over the 10 s window is 5 ticks a second.
        assert!(cpu_busy(&mut s, CPU_WINDOW, at(20_000), 152));
        // The window slides: the burst ages out and idling is idling again.
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(35_000), 153));
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(40_000), 154));
        // An idling agent's 3 % of a core is not progress either.
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(45_000), 169));
        // Exactly the threshold counts: 5 ticks a second over 10 s.
        assert!(cpu_busy(&mut s, CPU_WINDOW, at(55_000), 219));
        // A process leaving the group lowers the total: not progress.
        assert!(!cpu_busy(&mut s, CPU_WINDOW, at(60_000), 20));
        assert!(s.len() <= 4, "samples stay bounded: {}", s.len());
    }
}
